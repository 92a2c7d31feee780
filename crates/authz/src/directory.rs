//! A workspace's roles and members, indexed for answering checks from memory.

use crate::catalog::{Permission, Scope};
use crate::decide::{Decision, Resource, decide_with};
use crate::role::{Grants, Role, RoleKind};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// What a check needs to know about one user.
#[derive(Debug, Clone)]
pub struct Member {
    pub role: Arc<Role>,
    pub active: bool,
}

/// A member as the [`Directory`] holds them, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    pub role: &'a Arc<Role>,
    pub active: bool,
}

impl MemberRef<'_> {
    /// An owned copy, to keep past the directory.
    pub fn to_member(self) -> Member {
        Member { role: Arc::clone(self.role), active: self.active }
    }
}

/// One workspace's roles and members: the built-in roles, its custom roles, and each user's role
/// and status. A check is one hash lookup and [`crate::decide`]; it allocates nothing.
///
/// Members are keyed by their id's 32 bytes, inline in the table: every user id Roster issues is
/// 32 hex digits, and an id of any other length is nobody's. The ids are random and issued by the
/// server, never chosen by a caller, so a multiply-and-fold of their bytes is hash enough.
///
/// Each member's entry also holds a copy of their role's grants and the index of the role's name,
/// so a check reads the entry and a small array of names, never the role itself: with 100,000
/// users and 10,000 roles, the roles no longer fit in a core's cache, and reading one per check
/// was most of what made checks slower in bigger workspaces.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    roles: HashMap<String, Arc<Role>>,
    /// The roles members hold, by the index their entries keep.
    held: Vec<Arc<Role>>,
    /// Their names, by the same index: all a decision's reason reads of the role.
    names: Vec<Box<str>>,
    /// The index of each role in `held`, by its id.
    index: HashMap<String, u32>,
    members: HashMap<IdKey, Entry, BuildHasherDefault<IdHasher>>,
}

/// A member's id, inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdKey([u8; 32]);

impl IdKey {
    fn of(id: &str) -> Option<Self> {
        id.as_bytes().try_into().ok().map(IdKey)
    }
}

impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let fold = self.0.chunks_exact(8).fold(0u64, |hash, chunk| {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
        });
        state.write_u64(fold);
    }
}

/// Passes an [`IdKey`]'s hash through.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // IdKey writes one u64; FNV-1a keeps this correct for anything else.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A member as checks read them.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The role's grants as bit sets over the catalog: granted, and granted with scope ALL.
    granted: u64,
    all: u64,
    /// The role's index in `held` and `names`.
    role: u32,
    active: bool,
}

impl Entry {
    fn scope_of(&self, permission: Permission) -> Option<Scope> {
        let bit = 1u64 << permission.index();
        match (self.granted & bit != 0, self.all & bit != 0) {
            (false, _) => None,
            (true, true) => Some(Scope::All),
            (true, false) => Some(Scope::Assigned),
        }
    }
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
        let mut directory = Self { roles, ..Self::default() };
        let members = members.into_iter();
        directory.members.reserve(members.size_hint().0);
        for (user_id, role_id, active) in members {
            directory.set_member(&user_id, role_id, active);
        }
        directory
    }

    /// Adds a member, or changes their role or status, in place: what applying a change read
    /// since the directory was built takes. A role the directory does not know grants nothing, as
    /// in [`Directory::new`]. An id that is not 32 bytes long is nobody's, and is left out.
    pub fn set_member(&mut self, user_id: &str, role_id: &str, active: bool) {
        let Some(key) = IdKey::of(user_id) else { return };
        let role = self.role_index(role_id);
        let (granted, all) = self.held[role as usize].grants.bits();
        self.members.insert(key, Entry { granted, all, role, active });
    }

    /// The index in `held` of the role `role_id`, adding it on first use.
    fn role_index(&mut self, role_id: &str) -> u32 {
        if let Some(&i) = self.index.get(role_id) {
            return i;
        }
        let role = self.roles.get(role_id).cloned().unwrap_or_else(|| Arc::new(Role::missing(role_id)));
        let i = u32::try_from(self.held.len()).expect("fewer than 4 billion roles");
        self.names.push(role.name.as_str().into());
        self.held.push(role);
        self.index.insert(role_id.to_owned(), i);
        i
    }

    /// A role of the workspace (built-in or custom).
    pub fn role(&self, id: &str) -> Option<&Arc<Role>> {
        self.roles.get(id)
    }

    fn entry(&self, user_id: &str) -> Option<&Entry> {
        self.members.get(&IdKey::of(user_id)?)
    }

    /// A member of the workspace.
    pub fn member(&self, user_id: &str) -> Option<MemberRef<'_>> {
        self.entry(user_id).map(|entry| MemberRef { role: &self.held[entry.role as usize], active: entry.active })
    }

    /// How many users and roles it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.members.len(), self.roles.len())
    }

    /// May `user_id` use `permission` (on `resource`)? The same answer as [`crate::decide`] with
    /// the member's role.
    pub fn check(
        &self,
        user_id: &str,
        permission: Permission,
        resource: Option<&Resource<'_>>,
    ) -> Result<Decision<'_>, UnknownUser> {
        self.decide(user_id, permission, resource).map(|(decision, _)| decision)
    }

    /// [`Directory::check`], with the id of the member's role.
    pub fn check_with_role(
        &self,
        user_id: &str,
        permission: Permission,
        resource: Option<&Resource<'_>>,
    ) -> Result<(Decision<'_>, &str), UnknownUser> {
        let (decision, index) = self.decide(user_id, permission, resource)?;
        Ok((decision, &self.held[index].id))
    }

    /// The decision and the index of the member's role; reads the entry and the role's name only.
    fn decide(
        &self,
        user_id: &str,
        permission: Permission,
        resource: Option<&Resource<'_>>,
    ) -> Result<(Decision<'_>, usize), UnknownUser> {
        let entry = self.entry(user_id).ok_or(UnknownUser)?;
        let index = entry.role as usize;
        let decision =
            decide_with(user_id, entry.active, &self.names[index], entry.scope_of(permission), permission, resource);
        Ok((decision, index))
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
    use crate::role_id::BuiltinRole;

    const MARIA: &str = "0123456789abcdef0123456789abcdef";
    const ADA: &str = "a0000000000000000000000000000000";
    const BILL: &str = "b0000000000000000000000000000000";
    const GONE: &str = "c0000000000000000000000000000000";
    const ORPHAN: &str = "d0000000000000000000000000000000";

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
                (ADA.to_owned(), "admin", true),
                (MARIA.to_owned(), "agent", true),
                (BILL.to_owned(), "r1", true),
                (GONE.to_owned(), "admin", false),
                (ORPHAN.to_owned(), "deleted-role", true),
            ],
        )
    }

    #[test]
    fn checks_find_the_member_and_decide_with_their_role() {
        let dir = directory();
        assert!(dir.check(BILL, Permission::BillingManage, None).unwrap().allowed);
        assert!(!dir.check(BILL, Permission::UsersRead, None).unwrap().allowed);
        assert!(dir.check(ADA, Permission::AuditRead, None).unwrap().allowed);
        let mine = Resource { assignee: Some(MARIA) };
        assert!(dir.check(MARIA, Permission::ContactsRead, Some(&mine)).unwrap().allowed);
        assert_eq!(dir.check(GONE, Permission::AuditRead, None).unwrap().reason, Reason::Deactivated);
        assert_eq!(dir.check("fedcba9876543210fedcba9876543210", Permission::AuditRead, None), Err(UnknownUser));
        // An id differing in case or length is another id.
        assert!(dir.check("0123456789abcdef0123456789abcdeX", Permission::TemplatesRead, None).is_err());
        assert_eq!(dir.check(&MARIA.to_uppercase(), Permission::TemplatesRead, None), Err(UnknownUser));
        assert_eq!(dir.check(&MARIA[1..], Permission::TemplatesRead, None), Err(UnknownUser));
    }

    /// The directory's copy of each role's grants answers exactly as the role does.
    #[test]
    fn checks_answer_as_deciding_with_the_members_role() {
        use crate::decide::{Subject, decide};
        let dir = directory();
        let mine = Resource { assignee: Some(MARIA) };
        let theirs = Resource { assignee: Some("sam") };
        for user in [ADA, MARIA, BILL, GONE, ORPHAN] {
            let member = dir.member(user).expect("member");
            for permission in Permission::ALL {
                for resource in [None, Some(&mine), Some(&theirs)] {
                    let subject = Subject { user_id: user, active: member.active, role: member.role };
                    let expected = decide(&subject, *permission, resource);
                    assert_eq!(dir.check(user, *permission, resource), Ok(expected), "{user} {permission}");
                    let with_role = dir.check_with_role(user, *permission, resource);
                    assert_eq!(with_role, Ok((expected, member.role.id.as_str())), "{user} {permission}");
                }
            }
        }
    }

    #[test]
    fn set_member_adds_and_changes_members_in_place() {
        let mut dir = directory();
        let sam = "fedcba9876543210fedcba9876543210";
        assert_eq!(dir.check(sam, Permission::BillingManage, None), Err(UnknownUser));
        dir.set_member(sam, "r1", true);
        assert!(dir.check(sam, Permission::BillingManage, None).unwrap().allowed);
        assert_eq!(dir.check_with_role(sam, Permission::UsersRead, None).unwrap().1, "r1");
        // A role change and a deactivation replace the entry.
        dir.set_member(sam, "agent", true);
        assert!(!dir.check(sam, Permission::BillingManage, None).unwrap().allowed);
        assert!(dir.check(sam, Permission::TemplatesRead, None).unwrap().allowed);
        dir.set_member(sam, "agent", false);
        assert_eq!(dir.check(sam, Permission::TemplatesRead, None).unwrap().reason, Reason::Deactivated);
        dir.set_member(BILL, "admin", true);
        assert!(dir.check(BILL, Permission::AuditRead, None).unwrap().allowed);
        // A role it does not know grants nothing.
        dir.set_member(MARIA, "created-since", true);
        assert!(!dir.check(MARIA, Permission::TemplatesRead, None).unwrap().allowed);
        assert_eq!(dir.len(), (6, 3));
    }

    #[test]
    fn an_id_of_another_length_is_nobody() {
        let mut dir = directory();
        dir.set_member("ada", "admin", true);
        dir.set_member(&format!("{MARIA}0"), "admin", true);
        assert_eq!(dir.len(), (5, 3));
        assert_eq!(dir.check("ada", Permission::AuditRead, None), Err(UnknownUser));
        assert_eq!(dir.check("", Permission::AuditRead, None), Err(UnknownUser));
    }

    #[test]
    fn a_member_whose_role_vanished_is_granted_nothing() {
        let dir = directory();
        for permission in Permission::ALL {
            assert!(!dir.check(ORPHAN, *permission, None).unwrap().allowed);
        }
        assert_eq!(dir.len(), (5, 3));
    }
}
