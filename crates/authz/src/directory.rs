//! A workspace's roles and members, indexed for answering checks from memory.

use crate::catalog::Permission;
use crate::decide::{Decision, Resource, Subject, decide};
use crate::role::{Grants, Role, RoleKind};
use std::collections::HashMap;
use std::sync::Arc;

/// What a check needs to know about one user.
#[derive(Debug, Clone)]
pub struct Member {
    pub role: Arc<Role>,
    pub active: bool,
}

/// One workspace's roles and members: the built-in roles, its custom roles, and each user's role
/// and status. A check is two hash lookups and [`decide`].
#[derive(Debug, Clone, Default)]
pub struct Directory {
    roles: HashMap<String, Arc<Role>>,
    members: HashMap<String, Member>,
}

/// The user a check names is not a member of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such user in the workspace")]
pub struct UnknownUser;

impl Directory {
    /// Indexes `roles` and `members` (user id, role id, active). A member whose role is not among
    /// `roles` — it was deleted while the data was read — holds a role that grants nothing.
    pub fn new<'a>(roles: Vec<Role>, members: impl IntoIterator<Item = (String, &'a str, bool)>) -> Self {
        let roles: HashMap<String, Arc<Role>> =
            roles.into_iter().map(|role| (role.id.clone(), Arc::new(role))).collect();
        let members = members
            .into_iter()
            .map(|(user_id, role_id, active)| {
                let role = roles.get(role_id).cloned().unwrap_or_else(|| Arc::new(Role::missing(role_id)));
                (user_id, Member { role, active })
            })
            .collect();
        Self { roles, members }
    }

    /// A role of the workspace (built-in or custom).
    pub fn role(&self, id: &str) -> Option<&Arc<Role>> {
        self.roles.get(id)
    }

    /// A member of the workspace.
    pub fn member(&self, user_id: &str) -> Option<&Member> {
        self.members.get(user_id)
    }

    /// How many users and roles it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.members.len(), self.roles.len())
    }

    /// Whether it holds no users.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// May `user_id` use `permission` (on `resource`)?
    pub fn check(
        &self,
        user_id: &str,
        permission: Permission,
        resource: Option<&Resource<'_>>,
    ) -> Result<Decision, UnknownUser> {
        let member = self.members.get(user_id).ok_or(UnknownUser)?;
        Ok(decide(&Subject { user_id, active: member.active, role: &member.role }, permission, resource))
    }
}

impl Role {
    /// A stand-in for a role that no longer exists: it grants nothing.
    pub fn missing(id: &str) -> Self {
        Role { id: id.to_owned(), name: id.to_owned(), kind: RoleKind::Custom, grants: Grants::only([]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Scope;
    use crate::decide::Reason;
    use roster_identity::BuiltinRole;

    fn directory() -> Directory {
        let billing = Role {
            id: "r1".into(),
            name: "Billing".into(),
            kind: RoleKind::Custom,
            grants: Grants::only([(Permission::BillingManage, Scope::All)]),
        };
        let roles = vec![Role::builtin(BuiltinRole::Admin), Role::builtin(BuiltinRole::Agent), billing];
        Directory::new(
            roles,
            [
                ("ada".to_owned(), "admin", true),
                ("maria".to_owned(), "agent", true),
                ("bill".to_owned(), "r1", true),
                ("gone".to_owned(), "admin", false),
                ("orphan".to_owned(), "deleted-role", true),
            ],
        )
    }

    #[test]
    fn checks_find_the_member_and_decide_with_their_role() {
        let dir = directory();
        assert!(dir.check("bill", Permission::BillingManage, None).unwrap().allowed);
        assert!(!dir.check("bill", Permission::UsersRead, None).unwrap().allowed);
        assert!(dir.check("ada", Permission::AuditRead, None).unwrap().allowed);
        let mine = Resource { assignee: Some("maria") };
        assert!(dir.check("maria", Permission::ContactsRead, Some(&mine)).unwrap().allowed);
        assert_eq!(dir.check("gone", Permission::AuditRead, None).unwrap().reason, Reason::Deactivated);
        assert_eq!(dir.check("nobody", Permission::AuditRead, None), Err(UnknownUser));
    }

    #[test]
    fn a_member_whose_role_vanished_is_granted_nothing() {
        let dir = directory();
        for permission in Permission::ALL {
            assert!(!dir.check("orphan", *permission, None).unwrap().allowed);
        }
        assert_eq!(dir.len(), (5, 3));
    }
}
