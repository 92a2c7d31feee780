//! Roles and their grants; the built-in roles exactly as the product describes them.

use crate::catalog::{Permission, PermissionError, Scope};
use crate::role_id::BuiltinRole;

/// What a role grants. `Copy` and two words wide, so a decision reads it without chasing pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grants {
    /// Every permission with scope ALL, including permissions added to the catalog later (Admin).
    Everything,
    /// These permissions, each with its scope (always ALL for unscoped permissions).
    Only(GrantSet),
}

/// A set of (permission, scope) grants as two bit sets over the catalog's indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrantSet {
    /// Bit `i`: `Permission::ALL[i]` is granted.
    granted: u64,
    /// Bit `i`: it is granted with scope ALL (else ASSIGNED).
    all: u64,
}

// The bit sets hold the whole catalog.
const _: () = assert!(Permission::ALL.len() <= 64);

/// Why a stored or requested grant list is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Permission(#[from] PermissionError),
    #[error("{0} needs a scope: `{0}:ALL` or `{0}:ASSIGNED`")]
    ScopeMissing(Permission),
    #[error("{0} has no scope; write it without one")]
    ScopeNotApplicable(Permission),
    #[error("unknown scope {0:?}; use ALL or ASSIGNED")]
    UnknownScope(String),
}

impl Grants {
    /// Grants from (permission, scope) pairs. The scope of an unscoped permission is ALL whatever
    /// is passed; a permission listed twice keeps its widest scope.
    pub fn only(pairs: impl IntoIterator<Item = (Permission, Scope)>) -> Self {
        let mut set = GrantSet::default();
        for (permission, scope) in pairs {
            let bit = 1u64 << permission.index();
            set.granted |= bit;
            if scope == Scope::All || !permission.is_scoped() {
                set.all |= bit;
            }
        }
        Grants::Only(set)
    }

    /// The grants as two bit sets over the catalog's indexes (granted; granted with scope ALL);
    /// everything is every bit, so permissions added later are covered too.
    pub(crate) fn bits(&self) -> (u64, u64) {
        match self {
            Grants::Everything => (u64::MAX, u64::MAX),
            Grants::Only(set) => (set.granted, set.all),
        }
    }

    /// The scope this grants `permission` with, if at all.
    pub fn scope_of(&self, permission: Permission) -> Option<Scope> {
        match self {
            Grants::Everything => Some(Scope::All),
            Grants::Only(set) => {
                let bit = 1u64 << permission.index();
                match (set.granted & bit != 0, set.all & bit != 0) {
                    (false, _) => None,
                    (true, true) => Some(Scope::All),
                    (true, false) => Some(Scope::Assigned),
                }
            }
        }
    }

    /// Every granted permission with its scope, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = (Permission, Scope)> + '_ {
        Permission::ALL.iter().filter_map(|p| self.scope_of(*p).map(|s| (*p, s)))
    }

    /// Parses the stored form: `*`, or space-separated `permission` / `permission:SCOPE` tokens.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        if text.trim() == "*" {
            return Ok(Grants::Everything);
        }
        let mut pairs = Vec::new();
        for token in text.split_whitespace() {
            let (name, scope) = match token.split_once(':') {
                Some((name, scope)) => (name, Some(scope)),
                None => (token, None),
            };
            let permission = Permission::parse(name)?;
            let scope = match (permission.is_scoped(), scope) {
                (true, Some("ALL")) => Scope::All,
                (true, Some("ASSIGNED")) => Scope::Assigned,
                (true, Some(other)) => return Err(GrantError::UnknownScope(other.to_owned())),
                (true, None) => return Err(GrantError::ScopeMissing(permission)),
                (false, Some(_)) => return Err(GrantError::ScopeNotApplicable(permission)),
                (false, None) => Scope::All,
            };
            pairs.push((permission, scope));
        }
        Ok(Grants::only(pairs))
    }

    /// The stored form, which [`Grants::parse`] reads back.
    pub fn to_stored(&self) -> String {
        match self {
            Grants::Everything => "*".to_owned(),
            Grants::Only(_) => self
                .iter()
                .map(|(p, s)| if p.is_scoped() { format!("{p}:{}", s.as_str()) } else { p.to_string() })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Whether a role is one of the three every workspace has, or defined by the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// Admin, Supervisor or Agent: immutable.
    Builtin(BuiltinRole),
    /// Defined by the workspace's admins.
    Custom,
}

/// A role: its id, display name, kind and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub kind: RoleKind,
    pub grants: Grants,
}

impl Role {
    /// A built-in role, exactly as PRODUCT.md describes it.
    pub fn builtin(role: BuiltinRole) -> Self {
        use Permission::*;
        let grants = match role {
            BuiltinRole::Admin => Grants::Everything,
            BuiltinRole::Supervisor => Grants::only([
                (ConversationsRead, Scope::All),
                (ConversationsReply, Scope::All),
                (ConversationsAssign, Scope::All),
                (ConversationsTake, Scope::All),
                (ContactsRead, Scope::All),
                (ContactsWrite, Scope::All),
                (TemplatesRead, Scope::All),
                (AnalyticsRead, Scope::All),
                (UsersRead, Scope::All),
                (UsersManage, Scope::All),
                (TeamsManage, Scope::All),
            ]),
            BuiltinRole::Agent => Grants::only([
                (ConversationsRead, Scope::Assigned),
                (ConversationsReply, Scope::Assigned),
                (ConversationsTake, Scope::All),
                (ContactsRead, Scope::Assigned),
                (TemplatesRead, Scope::All),
            ]),
        };
        Role { id: role.id().to_owned(), name: role.name().to_owned(), kind: RoleKind::Builtin(role), grants }
    }

    /// Whether this is the built-in Admin role.
    pub fn is_admin(&self) -> bool {
        self.kind == RoleKind::Builtin(BuiltinRole::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admins_hold_every_permission_with_scope_all() {
        let admin = Role::builtin(BuiltinRole::Admin);
        for permission in Permission::ALL {
            assert_eq!(admin.grants.scope_of(*permission), Some(Scope::All));
        }
    }

    #[test]
    fn agents_see_only_what_is_assigned_to_them_take_queued_work_and_use_templates() {
        let agent = Role::builtin(BuiltinRole::Agent);
        assert_eq!(
            agent.grants.to_stored(),
            "conversations.read:ASSIGNED conversations.reply:ASSIGNED conversations.take contacts.read:ASSIGNED templates.read"
        );
        assert_eq!(agent.grants.scope_of(Permission::ConversationsAssign), None);
    }

    #[test]
    fn supervisors_manage_agents_but_not_roles_billing_or_settings() {
        let supervisor = Role::builtin(BuiltinRole::Supervisor);
        for held in [
            Permission::UsersManage,
            Permission::TeamsManage,
            Permission::ConversationsAssign,
            Permission::AnalyticsRead,
        ] {
            assert_eq!(supervisor.grants.scope_of(held), Some(Scope::All), "{held}");
        }
        for missing in [
            Permission::RolesManage,
            Permission::BillingManage,
            Permission::SettingsWrite,
            Permission::ContactsDelete,
            Permission::AuditRead,
        ] {
            assert_eq!(supervisor.grants.scope_of(missing), None, "{missing}");
        }
    }

    #[test]
    fn the_stored_built_in_grants_match_the_seeded_rows() {
        // crates/store/src/migration.rs seeds these strings (m0009 the current ones); they must parse
        // to the same roles.
        let seeded = [
            (BuiltinRole::Admin, "*"),
            (
                BuiltinRole::Supervisor,
                "conversations.read:ALL conversations.reply:ALL conversations.assign:ALL conversations.take contacts.read:ALL contacts.write:ALL templates.read analytics.read users.read users.manage teams.manage",
            ),
            (
                BuiltinRole::Agent,
                "conversations.read:ASSIGNED conversations.reply:ASSIGNED conversations.take contacts.read:ASSIGNED templates.read",
            ),
        ];
        for (role, text) in seeded {
            assert_eq!(Grants::parse(text), Ok(Role::builtin(role).grants), "{role:?}");
        }
    }

    #[test]
    fn malformed_grant_lists_name_the_problem() {
        assert_eq!(Grants::parse("contacts.read"), Err(GrantError::ScopeMissing(Permission::ContactsRead)));
        assert_eq!(Grants::parse("templates.read:ALL"), Err(GrantError::ScopeNotApplicable(Permission::TemplatesRead)));
        assert_eq!(Grants::parse("contacts.read:MINE"), Err(GrantError::UnknownScope("MINE".into())));
        assert!(matches!(Grants::parse("contacts.fly:ALL"), Err(GrantError::Permission(_))));
    }

    #[test]
    fn a_permission_listed_twice_keeps_its_widest_scope() {
        let grants =
            Grants::only([(Permission::ContactsRead, Scope::Assigned), (Permission::ContactsRead, Scope::All)]);
        assert_eq!(grants.scope_of(Permission::ContactsRead), Some(Scope::All));
    }

    fn any_grants() -> impl Strategy<Value = Grants> {
        let pair = (0..Permission::ALL.len(), any::<bool>())
            .prop_map(|(i, all)| (Permission::ALL[i], if all { Scope::All } else { Scope::Assigned }));
        prop_oneof![Just(Grants::Everything), proptest::collection::vec(pair, 0..12).prop_map(Grants::only)]
    }

    proptest! {
        #[test]
        fn stored_grants_parse_back_to_themselves(grants in any_grants()) {
            prop_assert_eq!(Grants::parse(&grants.to_stored()), Ok(grants));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = Grants::parse(&text);
        }
    }
}
