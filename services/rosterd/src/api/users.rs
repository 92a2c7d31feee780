use crate::app::App;
use crate::auth::Principal;
use crate::convert;
use crate::error::{self, Violations, checked, invalid, permission_denied};
use crate::policy::Need;
use roster_identity::{Email, FullName, Password, RoleId};
use roster_proto::v1::{self as pb, user_service_server::UserService};
use roster_store::{NewUser, UserChanges, UserFilter};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

pub(crate) struct UserApi(pub(crate) Arc<App>);

const PAGE_KIND: &str = "users";

fn required(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "required");
    }
}

fn user_response(user: &roster_store::User) -> Option<pb::User> {
    Some(convert::user(user))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let workspace_id = caller.workspace(&request.get_ref().workspace_id)?;
        app.authorize(&caller, Need::ManageUsers, None).await?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&req.email));
        let full_name = v.check("full_name", FullName::parse(&req.full_name));
        let password = v.check("password", Password::parse(&req.password));
        let role = v.check("role", RoleId::parse(&req.role));
        let request_id = super::request_id(&mut v, &req.request_id);
        v.finish()?;
        let (email, full_name, role) = (checked(email)?, checked(full_name)?, checked(role)?);
        let actor = app.actor_role(&caller).await?;
        let workspace = app.store.workspace(&workspace_id).await.map_err(error::store)?;
        let password_hash = app.hasher.hash(checked(password)?).await?;
        let welcome = app.welcome(&workspace.slug, &workspace.name, &email, &full_name);
        let new = NewUser { email, full_name, password_hash, role };
        let user = app
            .store
            .create_user(&caller.context(), &workspace_id, new, welcome, request_id, actor.as_deref())
            .await
            .map_err(error::store)?;
        app.outbox.notify_one();
        app.authz.refresh(&workspace_id).await;
        Ok(Response::new(pb::CreateUserResponse { user: user_response(&user) }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        app.authorize(&caller, Need::ReadUsers, Some(&req.user_id)).await?;
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", &req.user_id);
        v.finish()?;
        let user = app.store.user(&workspace_id, &req.user_id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetUserResponse { user: user_response(&user) }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let workspace_id = caller.workspace(&request.get_ref().workspace_id)?;
        app.authorize(&caller, Need::ReadUsers, None).await?;
        app.ensure_workspace(&caller, &workspace_id).await?;
        let req = request.into_inner();
        let limit = convert::page_size(req.page_size)?;
        // The cursor is the last email of the previous page; anything else is not our token.
        let after = convert::decode_page_token(PAGE_KIND, &req.page_token)?
            .map(|cursor| match Email::parse(&cursor) {
                Ok(email) if email.as_str() == cursor => Ok(cursor),
                _ => Err(invalid("page_token", "not a page token of this listing; start again without one")),
            })
            .transpose()?;
        let status = convert::status_filter(req.status)?;
        let role = if req.role.is_empty() {
            None
        } else {
            Some(RoleId::parse(&req.role).map_err(|e| invalid("role", e.to_string()))?)
        };
        let team = if req.team_id.is_empty() {
            None
        } else if super::is_record_id(&req.team_id) {
            Some(req.team_id.clone())
        } else {
            return Err(invalid("team_id", "not an id this server issued"));
        };
        let filter = UserFilter { status, role, team };
        let page = app.store.list_users(&workspace_id, &filter, after.as_deref(), limit).await.map_err(error::store)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.iter().map(convert::user).collect(),
            next_page_token: convert::encode_page_token(PAGE_KIND, page.next),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let workspace_id = caller.workspace(&request.get_ref().workspace_id)?;
        app.authorize(&caller, Need::ManageUsers, None).await?;
        let req = request.into_inner();
        let Some(user) = req.user else { return Err(invalid("user", "required")) };
        let mut v = Violations::new();
        super::record_id(&mut v, "user.id", &user.id);
        let set = [("full_name", !user.full_name.is_empty()), ("role", !user.role.is_empty())];
        let paths = super::mask_paths(&mut v, req.update_mask, &set);
        let mut changes = UserChanges::default();
        for path in &paths {
            match path.as_str() {
                "full_name" => changes.full_name = v.check("user.full_name", FullName::parse(&user.full_name)),
                "role" => changes.role = v.check("user.role", RoleId::parse(&user.role)),
                "status" => v.add("update_mask", "status changes through DeactivateUser and ReactivateUser"),
                "availability" => v.add("update_mask", "availability changes through SetAvailability"),
                other => {
                    v.add("update_mask", format!("unknown or read-only path {other:?}; updatable: full_name, role"))
                }
            }
        }
        let expected_version = super::etag(&mut v, "user.etag", &user.etag);
        v.finish()?;
        let actor = app.actor_role(&caller).await?;
        let role_changes = changes.role.is_some();
        let updated = app
            .store
            .update_user(&caller.context(), &workspace_id, &user.id, changes, expected_version, actor.as_deref())
            .await
            .map_err(|e| error::store_with_role_field(e, "user.role"))?;
        if role_changes {
            app.authz.refresh(&workspace_id).await;
        }
        Ok(Response::new(pb::UpdateUserResponse { user: user_response(&updated) }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        app.authorize(&caller, Need::ManageUsers, None).await?;
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", &req.user_id);
        v.finish()?;
        let actor = app.actor_role(&caller).await?;
        let ctx = caller.context();
        let user = app
            .store
            .deactivate_user(&ctx, &workspace_id, &req.user_id, actor.as_deref())
            .await
            .map_err(error::store)?;
        app.authz.refresh(&workspace_id).await;
        tracing::info!(user_id = %user.id, "user deactivated");
        Ok(Response::new(pb::DeactivateUserResponse { user: user_response(&user) }))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        app.authorize(&caller, Need::ManageUsers, None).await?;
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", &req.user_id);
        super::request_id(&mut v, &req.request_id);
        v.finish()?;
        let actor = app.actor_role(&caller).await?;
        let ctx = caller.context();
        let user = app
            .store
            .reactivate_user(&ctx, &workspace_id, &req.user_id, actor.as_deref())
            .await
            .map_err(error::store)?;
        app.authz.refresh(&workspace_id).await;
        // Back, and still ONLINE: the queues of their teams may go to them.
        app.drain_queues(&ctx, &workspace_id).await;
        Ok(Response::new(pb::ReactivateUserResponse { user: user_response(&user) }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let Principal::User { user, token, .. } = &caller.principal else {
            return Err(permission_denied("PERSON_REQUIRED", "only a person changes their own password"));
        };
        let req = request.get_ref();
        let mut v = Violations::new();
        required(&mut v, "current_password", &req.current_password);
        let new_password = v.check("new_password", Password::parse(&req.new_password));
        v.finish()?;
        let current = app.store.password_hash(&user.workspace_id, &user.id).await.map_err(error::store)?;
        if !app.hasher.verify(Some(current), Password::candidate(&req.current_password)).await? {
            let mut details = tonic_types::ErrorDetails::new();
            details.add_bad_request_violation("current_password", "does not match");
            return Err(error::status_with(
                Code::InvalidArgument,
                "CURRENT_PASSWORD_INCORRECT",
                "current_password: does not match",
                &[("fields", "current_password".to_owned())],
                details,
            ));
        }
        let hash = app.hasher.hash(checked(new_password)?).await?;
        app.store
            .change_password(&caller.context(), &user.workspace_id, &user.id, &hash, Some(token))
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn set_availability(
        &self,
        request: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::SetAvailabilityResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let user_id = match (req.user_id.as_str(), caller.user()) {
            ("", Some(me)) => me.id.clone(),
            ("", None) => {
                v.add("user_id", "required when calling with a service key");
                String::new()
            }
            (id, _) => {
                super::record_id(&mut v, "user_id", id);
                id.to_owned()
            }
        };
        let is_self = caller.user().is_some_and(|me| me.id == user_id);
        if !is_self {
            app.authorize(&caller, Need::ManageUsers, None).await?;
        }
        let availability = v.check("availability", convert::availability_from(req.availability));
        v.finish()?;
        if !is_self {
            let target = app.store.user(&workspace_id, &user_id).await.map_err(error::store)?;
            app.may_act_on(&caller, &target.role).await?;
        }
        let availability = checked(availability)?;
        let ctx = caller.context();
        let user =
            app.store.set_availability(&ctx, &workspace_id, &user_id, availability).await.map_err(error::store)?;
        if availability == roster_store::Availability::Online {
            app.drain_queues(&ctx, &workspace_id).await;
        }
        Ok(Response::new(pb::SetAvailabilityResponse { user: user_response(&user) }))
    }
}
