//! The rules that guard role management: no escalation, and the last admin stays.

use crate::catalog::{Permission, Scope};
use crate::role::{Grants, Role};
use std::fmt;

/// An attempt to grant, or to act on someone holding, more than the actor holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Escalation {
    /// What the actor would need and lacks, with the scope needed.
    pub missing: Vec<(Permission, Scope)>,
    /// The target is the Admin role, which only admins may give, change or act on.
    pub admin_only: bool,
}

impl fmt::Display for Escalation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.admin_only {
            f.write_str("only admins create, change or deactivate admins")?;
            if self.missing.is_empty() {
                return Ok(());
            }
            f.write_str("; ")?;
        }
        let missing: Vec<String> = self.missing.iter().map(|(p, s)| format!("{p} ({})", s.as_str())).collect();
        write!(f, "you do not hold {}", missing.join(", "))
    }
}

/// Checks that `actor` holds everything `wanted` grants, each with at least its scope, so that
/// giving `wanted` (creating or editing a role, assigning a role) escalates nothing.
pub fn check_grantable(actor: &Role, wanted: &Grants) -> Result<(), Escalation> {
    if actor.is_admin() {
        return Ok(());
    }
    let admin_only = matches!(wanted, Grants::Everything);
    let missing: Vec<(Permission, Scope)> = wanted
        .iter()
        .filter(|(permission, scope)| !actor.grants.scope_of(*permission).is_some_and(|held| held.covers(*scope)))
        .collect();
    if missing.is_empty() && !admin_only { Ok(()) } else { Err(Escalation { missing, admin_only }) }
}

/// Checks that `actor` may act on a user holding `target` (change their role, deactivate or
/// reactivate them): the target's role grants nothing the actor lacks, and admins are handled by
/// admins only.
pub fn check_manageable(actor: &Role, target: &Role) -> Result<(), Escalation> {
    if target.is_admin() && !actor.is_admin() {
        let missing = match check_grantable(actor, &target.grants) {
            Ok(()) => Vec::new(),
            Err(escalation) => escalation.missing,
        };
        return Err(Escalation { missing, admin_only: true });
    }
    check_grantable(actor, &target.grants)
}

/// A change that would leave a workspace without an active admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this is the workspace's last active admin: make someone else an admin first")]
pub struct LastAdmin;

/// Checks a change to one user against the lock-out guard: `active_admins` counts the workspace's
/// active admins now (the target included); the change is refused if it takes the last one away.
pub fn check_last_admin(
    active_admins: u64,
    target_is_active_admin: bool,
    stays_active_admin: bool,
) -> Result<(), LastAdmin> {
    if target_is_active_admin && !stays_active_admin && active_admins <= 1 { Err(LastAdmin) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::RoleKind;
    use crate::role_id::BuiltinRole;

    fn custom(grants: &[(Permission, Scope)]) -> Role {
        Role {
            id: "custom".into(),
            name: "Custom".into(),
            kind: RoleKind::Custom,
            grants: Grants::only(grants.iter().copied()),
        }
    }

    #[test]
    fn admins_may_grant_anything() {
        let admin = Role::builtin(BuiltinRole::Admin);
        assert_eq!(check_grantable(&admin, &Grants::Everything), Ok(()));
        assert_eq!(check_manageable(&admin, &admin), Ok(()));
    }

    #[test]
    fn a_supervisor_cannot_grant_a_permission_they_do_not_hold() {
        let supervisor = Role::builtin(BuiltinRole::Supervisor);
        let wanted = Grants::only([(Permission::ContactsRead, Scope::All), (Permission::BillingManage, Scope::All)]);
        let refused = check_grantable(&supervisor, &wanted).expect_err("escalation");
        assert_eq!(refused.missing, [(Permission::BillingManage, Scope::All)]);
        assert_eq!(refused.to_string(), "you do not hold billing.manage (ALL)");
    }

    #[test]
    fn a_narrower_scope_does_not_cover_a_wider_one() {
        let agent = Role::builtin(BuiltinRole::Agent);
        let wider = Grants::only([(Permission::ContactsRead, Scope::All)]);
        let same = Grants::only([(Permission::ContactsRead, Scope::Assigned)]);
        assert_eq!(
            check_grantable(&agent, &wider).map_err(|e| e.missing),
            Err(vec![(Permission::ContactsRead, Scope::All)])
        );
        assert_eq!(check_grantable(&agent, &same), Ok(()));
    }

    #[test]
    fn supervisors_manage_agents_but_not_admins_or_their_peers_with_more() {
        let supervisor = Role::builtin(BuiltinRole::Supervisor);
        assert_eq!(check_manageable(&supervisor, &Role::builtin(BuiltinRole::Agent)), Ok(()));
        assert_eq!(check_manageable(&supervisor, &Role::builtin(BuiltinRole::Supervisor)), Ok(()));
        let admin = check_manageable(&supervisor, &Role::builtin(BuiltinRole::Admin)).expect_err("admin");
        assert!(admin.admin_only);
        let billing = custom(&[(Permission::BillingManage, Scope::All)]);
        assert!(check_manageable(&supervisor, &billing).is_err());
    }

    #[test]
    fn a_custom_role_with_every_permission_still_cannot_make_admins() {
        let everything: Vec<(Permission, Scope)> = Permission::ALL.iter().map(|p| (*p, Scope::All)).collect();
        let almost = custom(&everything);
        let refused = check_grantable(&almost, &Grants::Everything).expect_err("admin only");
        assert!(refused.admin_only && refused.missing.is_empty());
        assert_eq!(refused.to_string(), "only admins create, change or deactivate admins");
    }

    #[test]
    fn the_last_active_admin_can_be_neither_deactivated_nor_demoted() {
        assert_eq!(check_last_admin(1, true, false), Err(LastAdmin));
        assert_eq!(check_last_admin(2, true, false), Ok(()));
        assert_eq!(check_last_admin(1, true, true), Ok(()), "renaming the last admin is fine");
        assert_eq!(check_last_admin(1, false, false), Ok(()), "the target is not an admin");
    }
}
