//! Who may call what: the Foundation's rule, in one place.
//!
//! Until the permission evaluator of the Authorization issue replaces it, the rule is: service keys
//! may do everything; people act only in their own workspace (see [`crate::auth::Caller::workspace`]),
//! Admins manage users and read the audit trail, Admins and Supervisors read users, everyone reads
//! their own workspace and their own user, and sets their own availability.

use crate::auth::{Caller, Principal};
use crate::error::permission_denied;
use roster_identity::BuiltinRole;
use tonic::Status;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Create workspaces: service keys only.
    ServiceKey,
    /// Read the workspace: any member.
    Member,
    /// Read users: Admins and Supervisors.
    ReadUsers,
    /// Create, change, deactivate, reactivate users; change others' availability.
    ManageUsers,
    /// Read the audit trail.
    ReadAudit,
}

/// Allows or denies `caller` what `need` names; `subject` is the user the call is about, if any,
/// so that people may always read and set availability for themselves.
pub(crate) fn authorize(caller: &Caller, need: Need, subject: Option<&str>) -> Result<(), Status> {
    let user = match &caller.principal {
        Principal::Service(_) => return Ok(()),
        Principal::User { user, .. } => user,
    };
    let role = user.role.builtin();
    let allowed = match need {
        Need::ServiceKey => false,
        Need::Member => true,
        Need::ReadUsers => {
            subject == Some(user.id.as_str()) || matches!(role, Some(BuiltinRole::Admin | BuiltinRole::Supervisor))
        }
        Need::ManageUsers | Need::ReadAudit => role == Some(BuiltinRole::Admin),
    };
    if allowed {
        return Ok(());
    }
    Err(match need {
        Need::ServiceKey => permission_denied("SERVICE_KEY_REQUIRED", "only internal services may call this"),
        Need::Member => permission_denied("PERMISSION_DENIED", "not allowed"),
        Need::ReadUsers => permission_denied("PERMISSION_DENIED", "reading users needs the Admin or Supervisor role"),
        Need::ManageUsers => permission_denied("PERMISSION_DENIED", "managing users needs the Admin role"),
        Need::ReadAudit => permission_denied("PERMISSION_DENIED", "reading the audit trail needs the Admin role"),
    })
}
