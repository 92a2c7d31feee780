//! The decision: may this user do this, to this resource — and why.

use crate::catalog::{Permission, Scope};
use crate::role::Role;
use std::fmt;

/// Who asks: a user's id, whether they are active, and their role.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'u, 'r> {
    pub user_id: &'u str,
    pub active: bool,
    pub role: &'r Role,
}

/// The conversation or contact a check is about: who it is assigned to, if anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub assignee: Option<&'a str>,
}

/// An answer and its reason. It borrows the role's name from the [`Subject`], so deciding
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub reason: Reason<'a>,
}

/// Why a decision came out as it did; `role` is the role's display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    /// The role grants the permission with this scope (and, for ASSIGNED, the resource is the user's).
    Granted { role: &'a str, permission: Permission, scope: Scope },
    /// Deactivated users are denied everything.
    Deactivated,
    /// The role does not grant the permission at all.
    NotGranted { role: &'a str, permission: Permission },
    /// The role grants it only for resources assigned to the user, and this one is not.
    NotAssigned { role: &'a str, permission: Permission },
    /// The role grants it only for assigned resources, and the check named no resource.
    ResourceRequired { role: &'a str, permission: Permission },
}

impl Reason<'_> {
    /// The reason in words: "role Agent grants contacts.read with scope ASSIGNED", in one
    /// allocation of its exact size (a batch of checks writes one per item).
    pub fn explanation(&self) -> String {
        let pieces = self.pieces();
        let mut text = String::with_capacity(pieces.iter().map(|piece| piece.len()).sum());
        pieces.iter().for_each(|piece| text.push_str(piece));
        text
    }

    /// The explanation's pieces, in order.
    fn pieces(&self) -> [&str; 5] {
        match *self {
            Reason::Granted { role, permission, scope } => [
                "role ",
                role,
                " grants ",
                permission.name(),
                if scope == Scope::All { " with scope ALL" } else { " with scope ASSIGNED" },
            ],
            Reason::Deactivated => ["the user is deactivated", "", "", "", ""],
            Reason::NotGranted { role, permission } => ["role ", role, " does not grant ", permission.name(), ""],
            Reason::NotAssigned { role, permission } => [
                "role ",
                role,
                " grants ",
                permission.name(),
                " only for resources assigned to the user; this one is not",
            ],
            Reason::ResourceRequired { role, permission } => [
                "role ",
                role,
                " grants ",
                permission.name(),
                " only for resources assigned to the user; name the resource's assignee",
            ],
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces().iter().try_for_each(|piece| f.write_str(piece))
    }
}

/// Decides whether `subject` may use `permission`, on `resource` when the check is about one.
pub fn decide<'r>(subject: &Subject<'_, 'r>, permission: Permission, resource: Option<&Resource<'_>>) -> Decision<'r> {
    let scope = subject.role.grants.scope_of(permission);
    decide_with(subject.user_id, subject.active, &subject.role.name, scope, permission, resource)
}

/// [`decide`] from its parts: the user, whether they are active, their role's name and the scope
/// the role grants `permission` with, if at all. The [`crate::Directory`] keeps these parts next to
/// each member, so that a check reads one entry and not the role.
pub(crate) fn decide_with<'r>(
    user_id: &str,
    active: bool,
    role: &'r str,
    scope: Option<Scope>,
    permission: Permission,
    resource: Option<&Resource<'_>>,
) -> Decision<'r> {
    if !active {
        return Decision { allowed: false, reason: Reason::Deactivated };
    }
    let Some(scope) = scope else {
        return Decision { allowed: false, reason: Reason::NotGranted { role, permission } };
    };
    let granted = Reason::Granted { role, permission, scope };
    match (scope, resource) {
        (Scope::All, _) => Decision { allowed: true, reason: granted },
        (Scope::Assigned, None) => Decision { allowed: false, reason: Reason::ResourceRequired { role, permission } },
        (Scope::Assigned, Some(resource)) if resource.assignee == Some(user_id) => {
            Decision { allowed: true, reason: granted }
        }
        (Scope::Assigned, Some(_)) => Decision { allowed: false, reason: Reason::NotAssigned { role, permission } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{Grants, RoleKind};
    use crate::role_id::BuiltinRole;
    use proptest::prelude::*;

    fn subject(role: &Role) -> Subject<'_, '_> {
        Subject { user_id: "maria", active: true, role }
    }

    #[test]
    fn an_agent_reads_a_contact_assigned_to_them_not_one_assigned_to_someone_else() {
        let agent = Role::builtin(BuiltinRole::Agent);
        let mine = Resource { assignee: Some("maria") };
        let theirs = Resource { assignee: Some("sam") };
        let nobodys = Resource { assignee: None };

        let allowed = decide(&subject(&agent), Permission::ContactsRead, Some(&mine));
        assert!(allowed.allowed);
        assert_eq!(allowed.reason.to_string(), "role Agent grants contacts.read with scope ASSIGNED");
        for other in [&theirs, &nobodys] {
            let denied = decide(&subject(&agent), Permission::ContactsRead, Some(other));
            assert_eq!(denied.reason, Reason::NotAssigned { role: "Agent", permission: Permission::ContactsRead });
        }
        let unnamed = decide(&subject(&agent), Permission::ContactsRead, None);
        assert!(!unnamed.allowed);
        assert!(matches!(unnamed.reason, Reason::ResourceRequired { .. }));
    }

    #[test]
    fn a_missing_grant_is_named() {
        let agent = Role::builtin(BuiltinRole::Agent);
        let denied = decide(&subject(&agent), Permission::UsersManage, None);
        assert!(!denied.allowed);
        assert_eq!(denied.reason.to_string(), "role Agent does not grant users.manage");
    }

    #[test]
    fn a_deactivated_admin_is_denied_everything() {
        let admin = Role::builtin(BuiltinRole::Admin);
        let deactivated = Subject { user_id: "ada", active: false, role: &admin };
        for permission in Permission::ALL {
            assert_eq!(decide(&deactivated, *permission, None).reason, Reason::Deactivated);
        }
    }

    #[test]
    fn scope_all_allows_whoever_the_resource_is_assigned_to() {
        let supervisor = Role::builtin(BuiltinRole::Supervisor);
        let theirs = Resource { assignee: Some("sam") };
        assert!(decide(&subject(&supervisor), Permission::ConversationsRead, Some(&theirs)).allowed);
        assert!(decide(&subject(&supervisor), Permission::ConversationsRead, None).allowed);
    }

    /// The reference model: the rule written as plainly as possible, to check `decide` against.
    fn reference(
        active: bool,
        grants: &[(Permission, Scope)],
        everything: bool,
        asked: Permission,
        resource: Option<Option<bool>>,
    ) -> bool {
        if !active {
            return false;
        }
        if everything {
            return true;
        }
        let widest =
            grants.iter().filter(|(p, _)| *p == asked).map(|(p, s)| if p.is_scoped() { *s } else { Scope::All }).max();
        match widest {
            None => false,
            Some(Scope::All) => true,
            Some(Scope::Assigned) => resource == Some(Some(true)),
        }
    }

    proptest! {
        #[test]
        fn decide_agrees_with_the_reference_model(
            active in any::<bool>(),
            everything in proptest::bool::weighted(0.1),
            grants in proptest::collection::vec((0..Permission::ALL.len(), any::<bool>()), 0..10),
            asked in 0..Permission::ALL.len(),
            // None: no resource; Some(None): unassigned; Some(Some(mine)).
            resource in proptest::option::of(proptest::option::of(any::<bool>())),
        ) {
            let grants: Vec<(Permission, Scope)> = grants
                .into_iter()
                .map(|(i, all)| (Permission::ALL[i], if all { Scope::All } else { Scope::Assigned }))
                .collect();
            let role = Role {
                id: "custom".into(),
                name: "Custom".into(),
                kind: RoleKind::Custom,
                grants: if everything { Grants::Everything } else { Grants::only(grants.clone()) },
            };
            let assignee = resource.map(|r| r.map(|mine| if mine { "maria" } else { "sam" }));
            let resource_value = assignee.map(|assignee| Resource { assignee });
            let subject = Subject { user_id: "maria", active, role: &role };
            let asked = Permission::ALL[asked];

            let decision = decide(&subject, asked, resource_value.as_ref());

            prop_assert_eq!(decision.allowed, reference(active, &grants, everything, asked, resource));
            prop_assert_eq!(decision.allowed, matches!(decision.reason, Reason::Granted { .. }));
        }
    }
}
