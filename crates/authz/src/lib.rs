//! Roster's permission model: who may do what, and why.
//!
//! The main design choice is that a decision is a pure function of plain data: the user's status
//! and role, the permission asked for, and — for conversations and contacts — who the resource is
//! assigned to. [`decide`] never looks anything up, so it is as cheap as a map lookup, the same on
//! every process, and testable against a reference model. Every answer carries its [`Reason`]:
//! which role granted it, or which grant or scope was missing.
//!
//! The Admin role is "everything", not a list, so permissions added to the catalog later are
//! granted to admins without a data migration.

mod catalog;
mod decide;
mod directory;
mod role;
mod role_id;
mod rules;

pub use catalog::{Feature, Permission, PermissionError, Scope};
pub use decide::{Decision, Reason, Resource, Subject, decide};
pub use directory::{Directory, Member, MemberRef, UnknownUser};
pub use role::{GrantError, GrantSet, Grants, Role, RoleKind};
pub use role_id::{BuiltinRole, RoleId, RoleIdError};
pub use rules::{Escalation, LastAdmin, check_grantable, check_last_admin, check_manageable};
