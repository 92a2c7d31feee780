//! Who may call what: the one table of what each RPC needs, decided by `roster_authz`.
//!
//! | RPC | Needs |
//! |---|---|
//! | CreateWorkspace | a service key |
//! | GetWorkspace | membership |
//! | CreateUser | `users.manage`, and the new user's role grants nothing the caller lacks |
//! | GetUser | `users.read`, or the user is the caller |
//! | ListUsers | `users.read` |
//! | UpdateUser | `users.manage`; the target's current and new role grant nothing the caller lacks |
//! | DeactivateUser, ReactivateUser | `users.manage`; the target's role grants nothing the caller lacks |
//! | SetAvailability | the user is the caller, or as DeactivateUser |
//! | ChangePassword, Logout | a person (acts on the caller's own password or session) |
//! | WhoAmI, Login | nothing |
//! | ListAuditEvents | `audit.read` |
//!
//! Service keys may do everything, in any workspace they name. People act only in their own
//! workspace ([`crate::auth::Caller::workspace`]). Only the built-in roles exist so far; a role id
//! that is not built in grants nothing until custom roles land (Authorization issue).

use crate::auth::{Caller, Principal};
use crate::error::{permission_denied, status_with};
use roster_authz::{Permission, Role, RoleKind, Subject, check_grantable, check_manageable, decide};
use roster_identity::RoleId;
use tonic::{Code, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Create workspaces: service keys only.
    ServiceKey,
    /// Read the workspace: any member.
    Member,
    /// Read users (`users.read`); people may always read themselves.
    ReadUsers,
    /// Create, change, deactivate, reactivate users; change others' availability (`users.manage`).
    ManageUsers,
    /// Read the audit trail (`audit.read`).
    ReadAudit,
}

/// The role a role id stands for.
pub(crate) fn role(id: &RoleId) -> Role {
    match id.builtin() {
        Some(builtin) => Role::builtin(builtin),
        None => Role {
            id: id.as_str().to_owned(),
            name: id.as_str().to_owned(),
            kind: RoleKind::Custom,
            grants: roster_authz::Grants::only([]),
        },
    }
}

/// Allows or denies `caller` what `need` names; `subject` is the user the call is about, if any.
pub(crate) fn authorize(caller: &Caller, need: Need, subject: Option<&str>) -> Result<(), Status> {
    let user = match &caller.principal {
        Principal::Service(_) => return Ok(()),
        Principal::User { user, .. } => user,
    };
    let permission = match need {
        Need::ServiceKey => {
            return Err(permission_denied("SERVICE_KEY_REQUIRED", "only internal services may call this"));
        }
        Need::Member => return Ok(()),
        Need::ReadUsers if subject == Some(user.id.as_str()) => return Ok(()),
        Need::ReadUsers => Permission::UsersRead,
        Need::ManageUsers => Permission::UsersManage,
        Need::ReadAudit => Permission::AuditRead,
    };
    let role = role(&user.role);
    let decision = decide(&Subject { user_id: &user.id, active: true, role: &role }, permission, None);
    if decision.allowed {
        return Ok(());
    }
    Err(status_with(
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        decision.reason.to_string(),
        &[("permission", permission.to_string())],
        Default::default(),
    ))
}

/// No escalation: a person may act on a user (change, deactivate, reactivate, set availability)
/// only if that user's role grants nothing the person lacks; admins only by admins.
pub(crate) fn may_act_on(caller: &Caller, target_role: &RoleId) -> Result<(), Status> {
    escalation(caller, |actor| check_manageable(actor, &role(target_role)))
}

/// No escalation: a person may give a role only if it grants nothing the person lacks.
pub(crate) fn may_grant(caller: &Caller, new_role: &RoleId) -> Result<(), Status> {
    escalation(caller, |actor| check_grantable(actor, &role(new_role).grants))
}

fn escalation(
    caller: &Caller,
    check: impl FnOnce(&Role) -> Result<(), roster_authz::Escalation>,
) -> Result<(), Status> {
    let Principal::User { user, .. } = &caller.principal else { return Ok(()) };
    check(&role(&user.role)).map_err(|escalation| {
        let missing: Vec<String> = escalation.missing.iter().map(|(p, _)| p.to_string()).collect();
        status_with(
            Code::PermissionDenied,
            "ESCALATION",
            escalation.to_string(),
            &[("missing", missing.join(",")), ("admin_only", escalation.admin_only.to_string())],
            Default::default(),
        )
    })
}
