use crate::app::{App, Call};
use crate::auth::Caller;
use crate::authz_cache::Snapshot;
use crate::convert;
use crate::error::{self, invalid, status_with};
use crate::policy::Need;
use roster_authz::{Directory, Grants, Permission, Resource};
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

    /// The answer to an item of a batch.
    fn into_result(self) -> pb::check_result::Result {
        pb::check_result::Result::Error(pb::CheckError {
            code: self.code as i32,
            reason: self.reason.to_owned(),
            message: self.message,
            field: self.field.to_owned(),
        })
    }
}

/// The user a check is about: the one named, or the calling person when none is. A person may
/// ask only about themselves; a service key about anyone (the rule of `policy`'s table).
fn subject<'a>(caller: &'a Caller, user_id: &'a str) -> Result<&'a str, ItemError> {
    match caller.user() {
        Some(me) if !user_id.is_empty() && user_id != me.id => Err(ItemError {
            code: Code::PermissionDenied,
            reason: "SELF_ONLY",
            message: "a person can only check their own permissions; internal services check anyone's".into(),
            field: "user_id",
        }),
        _ => super::about(caller, user_id).map_err(|e| ItemError::invalid("user_id", e)),
    }
}

/// The parsed parts of one check, borrowed from the request.
struct Check<'a> {
    user_id: &'a str,
    permission: Permission,
    resource: Option<Resource<'a>>,
}

/// `resource_assignee` is the resource's `assignee_user_id` when the check names a resource.
fn parse_check<'a>(
    caller: &'a Caller,
    user_id: &'a str,
    permission: &str,
    resource_assignee: Option<&'a str>,
) -> Result<Check<'a>, ItemError> {
    let user_id = subject(caller, user_id)?;
    let permission = Permission::parse(permission).map_err(|_| {
        ItemError::invalid("permission", format!("unknown permission {permission:?}; see RoleService.ListPermissions"))
    })?;
    let resource = match resource_assignee {
        None => None,
        Some("") => Some(Resource { assignee: None }),
        Some(id) if super::is_record_id(id) => Some(Resource { assignee: Some(id) }),
        Some(_) => return Err(ItemError::invalid("resource.assignee_user_id", "not an id this server issued")),
    };
    Ok(Check { user_id, permission, resource })
}

fn unknown_user() -> ItemError {
    ItemError { code: Code::NotFound, reason: "USER_NOT_FOUND", message: "user not found".into(), field: "user_id" }
}

/// The decision from the held directory, which reads the member's entry and not their role;
/// `None` for a user it does not hold.
fn decide_held(directory: &Directory, check: &Check) -> Option<pb::Decision> {
    let (decision, role_id) =
        directory.check_with_role(check.user_id, check.permission, check.resource.as_ref()).ok()?;
    Some(convert::decision(&decision, role_id))
}

/// Decides checks from the workspace's held copy. A user the copy does not know (created on
/// another process since it was read) makes it catch up with the database once per call, however
/// many such users a batch names; a user still unknown then does not exist.
struct Checker<'a> {
    app: &'a App,
    workspace_id: &'a str,
    snapshot: Option<Arc<Snapshot>>,
    caught_up: bool,
}

impl<'a> Checker<'a> {
    async fn new(app: &'a App, workspace_id: &'a str) -> Result<Self, Status> {
        let snapshot = app.authz.snapshot(workspace_id).await.map_err(error::store)?;
        Ok(Self { app, workspace_id, snapshot: Some(snapshot), caught_up: false })
    }

    /// The decision on `check`, `None` when the user is not a member of the workspace.
    async fn decide(&mut self, check: &Check<'_>) -> Result<Option<pb::Decision>, Status> {
        if let Some(decision) = self.snapshot.as_deref().and_then(|held| decide_held(&held.directory, check)) {
            return Ok(Some(decision));
        }
        if self.caught_up {
            return Ok(None);
        }
        // Let go of the copy first, so that the cache can bring it up to date in place.
        self.snapshot = None;
        self.snapshot = Some(self.app.authz.catch_up(self.workspace_id).await.map_err(error::store)?);
        self.caught_up = true;
        Ok(self.snapshot.as_deref().and_then(|held| decide_held(&held.directory, check)))
    }
}

#[tonic::async_trait]
impl AuthorizationService for AuthorizationApi {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let app = &self.0;
        let Call { caller, workspace_id, .. } = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
        let assignee = req.resource.as_ref().map(|r| r.assignee_user_id.as_str());
        let check = parse_check(&caller, &req.user_id, &req.permission, assignee).map_err(|e| e.into_status(""))?;
        let mut checker = Checker::new(app, &workspace_id).await?;
        let decision = checker.decide(&check).await?.ok_or_else(|| unknown_user().into_status(""))?;
        Ok(Response::new(pb::CheckPermissionResponse { decision: Some(decision) }))
    }

    async fn check_permissions(
        &self,
        request: Request<pb::CheckPermissionsRequest>,
    ) -> Result<Response<pb::CheckPermissionsResponse>, Status> {
        let app = &self.0;
        let Call { caller, workspace_id, .. } = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
        if req.checks.is_empty() || req.checks.len() > MAX_BATCH {
            return Err(invalid("checks", format!("1..{MAX_BATCH} checks, got {}", req.checks.len())));
        }
        // A person may ask only about themselves: items about others get SELF_ONLY each.
        let mut checker = Checker::new(app, &workspace_id).await?;
        let mut results = Vec::with_capacity(req.checks.len());
        for item in &req.checks {
            let assignee = item.resource.as_ref().map(|r| r.assignee_user_id.as_str());
            let result = match parse_check(&caller, &item.user_id, &item.permission, assignee) {
                Err(e) => e.into_result(),
                Ok(check) => match checker.decide(&check).await? {
                    Some(decision) => pb::check_result::Result::Decision(decision),
                    None => unknown_user().into_result(),
                },
            };
            results.push(pb::CheckResult { result: Some(result) });
        }
        Ok(Response::new(pb::CheckPermissionsResponse { results }))
    }

    async fn list_effective_permissions(
        &self,
        request: Request<pb::ListEffectivePermissionsRequest>,
    ) -> Result<Response<pb::ListEffectivePermissionsResponse>, Status> {
        let app = &self.0;
        let Call { caller, workspace_id, .. } = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
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
