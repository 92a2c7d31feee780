use crate::app::App;
use crate::auth::Caller;
use crate::convert;
use crate::error::{self, invalid, status_with};
use crate::policy::Need;
use roster_authz::{Directory, Grants, Member, MemberRef, Permission, Resource};
use roster_proto::v1::{self as pb, authorization_service_server::AuthorizationService};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

pub(crate) struct AuthorizationApi(pub(crate) Arc<App>);

/// The most checks one CheckPermissions call takes.
pub(crate) const MAX_BATCH: usize = 1000;

/// Why one check cannot be decided: the status it gets as a call of its own, or as an item of a batch.
struct ItemError {
    code: Code,
    reason: &'static str,
    message: String,
    field: &'static str,
}

impl ItemError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        // Clipped as a call's own violation would be: an item may quote a huge request field.
        let message = error::clip(message.into(), error::MAX_TEXT);
        Self { code: Code::InvalidArgument, reason: "INVALID_FIELD", message, field }
    }

    fn into_status(self, prefix: &str) -> Status {
        match self.code {
            Code::InvalidArgument => invalid(&format!("{prefix}{}", self.field), self.message),
            Code::NotFound => {
                let mut details = ErrorDetails::new();
                details.set_resource_info("roster.v1.User", "", "", self.message.clone());
                status_with(self.code, self.reason, self.message, &[], details)
            }
            code => status_with(code, self.reason, self.message, &[], ErrorDetails::new()),
        }
    }

    fn into_result(self) -> pb::CheckResult {
        pb::CheckResult {
            result: Some(pb::check_result::Result::Error(pb::CheckError {
                code: self.code as i32,
                reason: self.reason.to_owned(),
                message: self.message,
                field: self.field.to_owned(),
            })),
        }
    }
}

/// The user a check is about: the one named, or the calling person when none is.
fn subject<'a>(caller: &'a Caller, user_id: &'a str) -> Result<&'a str, ItemError> {
    match (user_id, caller.user()) {
        ("", Some(me)) => Ok(me.id.as_str()),
        ("", None) => Err(ItemError::invalid("user_id", "required when calling with a service key")),
        (id, _) if !super::is_record_id(id) => Err(ItemError::invalid("user_id", "not an id this server issued")),
        (id, Some(me)) if id != me.id => Err(ItemError {
            code: Code::PermissionDenied,
            reason: "SELF_ONLY",
            message: "a person can only check their own permissions; internal services check anyone's".into(),
            field: "user_id",
        }),
        (id, _) => Ok(id),
    }
}

/// The parsed parts of one check, borrowed from the request.
struct Check<'a> {
    user_id: &'a str,
    permission: Permission,
    assignee: Option<Option<&'a str>>,
}

fn parse_check<'a>(
    caller: &'a Caller,
    user_id: &'a str,
    permission: &str,
    resource: Option<&'a pb::Resource>,
) -> Result<Check<'a>, ItemError> {
    let user_id = subject(caller, user_id)?;
    let permission = Permission::parse(permission).map_err(|_| {
        ItemError::invalid("permission", format!("unknown permission {permission:?}; see RoleService.ListPermissions"))
    })?;
    let assignee = match resource {
        None => None,
        Some(r) if r.assignee_user_id.is_empty() => Some(None),
        Some(r) if super::is_record_id(&r.assignee_user_id) => Some(Some(r.assignee_user_id.as_str())),
        Some(_) => return Err(ItemError::invalid("resource.assignee_user_id", "not an id this server issued")),
    };
    Ok(Check { user_id, permission, assignee })
}

fn unknown_user() -> ItemError {
    ItemError { code: Code::NotFound, reason: "USER_NOT_FOUND", message: "user not found".into(), field: "user_id" }
}

/// The decision from the held directory, which reads the member's entry and not their role; `None`
/// for a user it does not hold.
fn decide_held(directory: &Directory, check: &Check) -> Option<pb::Decision> {
    let resource = check.assignee.map(|assignee| Resource { assignee });
    let (decision, role_id) = directory.check_with_role(check.user_id, check.permission, resource.as_ref()).ok()?;
    Some(convert::decision(&decision, role_id))
}

fn decide(member: MemberRef<'_>, check: &Check) -> pb::Decision {
    let resource = check.assignee.map(|assignee| Resource { assignee });
    let decision = roster_authz::decide(
        &roster_authz::Subject { user_id: check.user_id, active: member.active, role: member.role },
        check.permission,
        resource.as_ref(),
    );
    convert::decision(&decision, &member.role.id)
}

fn borrowed(member: &Member) -> MemberRef<'_> {
    MemberRef { role: &member.role, active: member.active }
}

#[tonic::async_trait]
impl AuthorizationService for AuthorizationApi {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        app.authorize(&caller, Need::CheckPermissions, Some(&req.user_id)).await?;
        let check = parse_check(&caller, &req.user_id, &req.permission, req.resource.as_ref())
            .map_err(|e| e.into_status(""))?;
        // The common case answers from the held copy without cloning anything out of it.
        let snapshot = app.authz.snapshot(&workspace_id).await.map_err(error::store)?;
        let held = decide_held(&snapshot.directory, &check);
        // Let go of the copy before the cache may catch up, so that it can update it in place.
        drop(snapshot);
        let decision = match held {
            Some(decision) => decision,
            None => {
                let member = app
                    .authz
                    .member(&workspace_id, check.user_id)
                    .await
                    .map_err(error::store)?
                    .ok_or_else(|| unknown_user().into_status(""))?;
                decide(borrowed(&member), &check)
            }
        };
        Ok(Response::new(pb::CheckPermissionResponse { decision: Some(decision) }))
    }

    async fn check_permissions(
        &self,
        request: Request<pb::CheckPermissionsRequest>,
    ) -> Result<Response<pb::CheckPermissionsResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        if req.checks.is_empty() || req.checks.len() > MAX_BATCH {
            return Err(invalid("checks", format!("1..{MAX_BATCH} checks, got {}", req.checks.len())));
        }
        // A person may ask only about themselves: items about others get SELF_ONLY each.
        app.authorize(&caller, Need::CheckPermissions, None).await?;
        let mut snapshot = app.authz.snapshot(&workspace_id).await.map_err(error::store)?;
        let mut results = Vec::with_capacity(req.checks.len());
        for item in &req.checks {
            let check = match parse_check(&caller, &item.user_id, &item.permission, item.resource.as_ref()) {
                Ok(check) => check,
                Err(e) => {
                    results.push(e.into_result());
                    continue;
                }
            };
            let decision = match decide_held(&snapshot.directory, &check) {
                Some(decision) => Some(decision),
                None => {
                    // Let go of the copy while the cache catches up, so that it can update it in place.
                    drop(snapshot);
                    let member = app.authz.member(&workspace_id, check.user_id).await.map_err(error::store)?;
                    snapshot = app.authz.snapshot(&workspace_id).await.map_err(error::store)?;
                    member.map(|member| decide(borrowed(&member), &check))
                }
            };
            results.push(match decision {
                Some(decision) => pb::CheckResult { result: Some(pb::check_result::Result::Decision(decision)) },
                None => unknown_user().into_result(),
            });
        }
        Ok(Response::new(pb::CheckPermissionsResponse { results }))
    }

    async fn list_effective_permissions(
        &self,
        request: Request<pb::ListEffectivePermissionsRequest>,
    ) -> Result<Response<pb::ListEffectivePermissionsResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        app.authorize(&caller, Need::CheckPermissions, Some(&req.user_id)).await?;
        let user_id = subject(&caller, &req.user_id).map_err(|e| e.into_status(""))?;
        let member = app
            .authz
            .member(&workspace_id, user_id)
            .await
            .map_err(error::store)?
            .ok_or_else(|| unknown_user().into_status(""))?;
        let (all_permissions, grants) = if member.active {
            (member.role.grants == Grants::Everything, convert::grants(&member.role.grants))
        } else {
            (false, Vec::new())
        };
        Ok(Response::new(pb::ListEffectivePermissionsResponse {
            role_id: member.role.id.clone(),
            active: member.active,
            all_permissions,
            grants,
        }))
    }
}
