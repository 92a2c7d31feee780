use crate::app::App;
use crate::convert;
use crate::error::{self, Violations, checked, invalid, status_with};
use crate::policy::Need;
use roster_authz::RoleId;
use roster_authz::{Feature, Permission};
use roster_identity::RoleName;
use roster_proto::v1::{self as pb, role_service_server::RoleService};
use roster_store::{Entity, NewRole, RoleChanges, StoreError};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

pub(crate) struct RoleApi(pub(crate) Arc<App>);

/// The longest role description accepted.
const DESCRIPTION_MAX_CHARS: usize = 500;

/// What page tokens of ListRoles are bound to.
const ROLES_PAGE: &str = "roles";

fn description(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    let value = value.trim();
    if value.chars().count() > DESCRIPTION_MAX_CHARS || value.chars().any(|c| c.is_control() && c != '\n') {
        v.add(field, format!("at most {DESCRIPTION_MAX_CHARS} characters, no control characters but new lines"));
        return None;
    }
    Some(value.to_owned())
}

/// A role name, also refusing the built-in roles' names so that "Admin" always means the real one,
/// whatever its case and whatever invisible characters it hides ([`RoleName::key`]).
fn role_name(v: &mut Violations, field: &str, value: &str) -> Option<RoleName> {
    let name = v.check(field, RoleName::parse(value))?;
    if roster_authz::BuiltinRole::ALL.iter().any(|b| b.name().to_lowercase() == name.key()) {
        v.add(field, format!("{:?} is a built-in role's name", name.key()));
        return None;
    }
    Some(name)
}

fn role_id(v: &mut Violations, field: &str, value: &str) -> Option<RoleId> {
    v.check(field, RoleId::parse(value))
}

/// NOT_FOUND for the role a call is about; `UNKNOWN_ROLE` on `field` for a role it names.
fn role_error(err: StoreError, field: &str) -> Status {
    match err {
        StoreError::NotFound(Entity::Role) if field.is_empty() => {
            let mut details = ErrorDetails::new();
            details.set_resource_info("roster.v1.Role", "", "", "role not found");
            status_with(Code::NotFound, "ROLE_NOT_FOUND", "role not found", &[], details)
        }
        err => error::store_with_role_field(err, field),
    }
}

#[tonic::async_trait]
impl RoleService for RoleApi {
    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let app = &self.0;
        app.authorize(&App::caller(&request)?, Need::Member).await?;
        let mut groups: Vec<pb::PermissionGroup> = Vec::new();
        for permission in Permission::ALL {
            let feature: Feature = permission.feature();
            if groups.last().is_none_or(|g| g.feature != feature.as_str()) {
                groups.push(pb::PermissionGroup {
                    feature: feature.as_str().to_owned(),
                    display_name: feature.display_name().to_owned(),
                    permissions: Vec::new(),
                });
            }
            if let Some(group) = groups.last_mut() {
                group.permissions.push(pb::PermissionInfo {
                    name: permission.to_string(),
                    action: permission.action().to_owned(),
                    scoped: permission.is_scoped(),
                    description: permission.description().to_owned(),
                });
            }
        }
        Ok(Response::new(pb::ListPermissionsResponse { groups }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageRoles).await?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let name = role_name(&mut v, "name", &req.name);
        let description = description(&mut v, "description", &req.description);
        let grants = convert::grants_from(&mut v, "grants", &req.grants);
        v.finish()?;
        let new = NewRole { name: checked(name)?, description: checked(description)?, grants: checked(grants)? };
        let changed = app.store.create_role(&call.ctx, &call.workspace_id, new).await.map_err(error::store)?;
        let role = app.settle(&call, changed).await;
        Ok(Response::new(pb::CreateRoleResponse { role: Some(convert::role(&role)) }))
    }

    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Result<Response<pb::GetRoleResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ReadRoles).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = role_id(&mut v, "role_id", &req.role_id);
        v.finish()?;
        app.ensure_workspace(&call).await?;
        let role = app.store.role(&call.workspace_id, checked(id)?.as_str()).await.map_err(|e| role_error(e, ""))?;
        Ok(Response::new(pb::GetRoleResponse { role: Some(convert::role(&role)) }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ReadRoles).await?;
        app.ensure_workspace(&call).await?;
        let req = request.get_ref();
        let limit = convert::page_size(req.page_size)?;
        let token = convert::decode_page_token(ROLES_PAGE, &req.page_token)?;
        let after =
            match token.as_deref() {
                None => None,
                Some(cursor) => Some(roster_store::parse_role_cursor(cursor).ok_or_else(|| {
                    invalid("page_token", "not a page token of this listing; start again without one")
                })?),
            };
        let page = app.store.list_roles(&call.workspace_id, req.builtin, after, limit).await.map_err(error::store)?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: page.items.iter().map(convert::role).collect(),
            next_page_token: convert::encode_page_token(ROLES_PAGE, page.next),
        }))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageRoles).await?;
        let req = request.into_inner();
        let Some(role) = req.role else { return Err(invalid("role", "required")) };
        let mut v = Violations::new();
        let id = role_id(&mut v, "role.id", &role.id);
        let set = [
            ("name", !role.name.is_empty()),
            ("description", !role.description.is_empty()),
            ("grants", !role.grants.is_empty()),
        ];
        let paths = super::mask_paths(&mut v, req.update_mask, &set);
        let mut changes = RoleChanges::default();
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = role_name(&mut v, "role.name", &role.name),
                "description" => changes.description = description(&mut v, "role.description", &role.description),
                "grants" => changes.grants = convert::grants_from(&mut v, "role.grants", &role.grants),
                other => v.add(
                    "update_mask",
                    format!("unknown or read-only path {other:?}; updatable: name, description, grants"),
                ),
            }
        }
        let expected_version = super::etag(&mut v, "role.etag", &role.etag);
        v.finish()?;
        let changed = app
            .store
            .update_role(&call.ctx, &call.workspace_id, checked(id)?.as_str(), changes, expected_version)
            .await
            .map_err(|e| role_error(e, ""))?;
        let updated = app.settle(&call, changed).await;
        Ok(Response::new(pb::UpdateRoleResponse { role: Some(convert::role(&updated)) }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageRoles).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = role_id(&mut v, "role_id", &req.role_id);
        let move_to = if req.move_to_role_id.is_empty() {
            None
        } else {
            role_id(&mut v, "move_to_role_id", &req.move_to_role_id)
        };
        if move_to.is_some() && move_to == id {
            v.add("move_to_role_id", "must differ from the role being deleted");
        }
        let expected_version = super::etag(&mut v, "etag", &req.etag);
        v.finish()?;
        let id = checked(id)?;
        let deleted =
            app.store.delete_role(&call.ctx, &call.workspace_id, id.as_str(), move_to.as_ref(), expected_version).await;
        let changed = match deleted {
            Ok(changed) => changed,
            // A missing role is either the one to delete or the one to move its users to.
            Err(StoreError::NotFound(Entity::Role)) if move_to.is_some() => {
                let field = match app.store.role(&call.workspace_id, id.as_str()).await {
                    Ok(_) => "move_to_role_id",
                    Err(_) => "",
                };
                return Err(role_error(StoreError::NotFound(Entity::Role), field));
            }
            Err(err) => return Err(role_error(err, "")),
        };
        let moved = app.settle(&call, changed).await;
        Ok(Response::new(pb::DeleteRoleResponse { users_moved: i32::try_from(moved).unwrap_or(i32::MAX) }))
    }
}
