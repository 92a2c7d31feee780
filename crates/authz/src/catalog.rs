//! The permission catalog: `feature.action` names, and which of them carry a scope.

use std::fmt;

/// What a permission is about; the admin screen groups toggles by feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    Conversations,
    Contacts,
    Campaigns,
    Templates,
    Settings,
    Analytics,
    Users,
    Roles,
    Teams,
    Billing,
    Audit,
}

impl Feature {
    /// The feature's name on the admin screen.
    pub fn display_name(self) -> &'static str {
        match self {
            Feature::Conversations => "Conversations",
            Feature::Contacts => "Contacts",
            Feature::Campaigns => "Campaigns",
            Feature::Templates => "Templates",
            Feature::Settings => "Settings",
            Feature::Analytics => "Analytics",
            Feature::Users => "Users",
            Feature::Roles => "Roles",
            Feature::Teams => "Teams",
            Feature::Billing => "Billing",
            Feature::Audit => "Audit log",
        }
    }

    /// The feature's name in permission strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Conversations => "conversations",
            Feature::Contacts => "contacts",
            Feature::Campaigns => "campaigns",
            Feature::Templates => "templates",
            Feature::Settings => "settings",
            Feature::Analytics => "analytics",
            Feature::Users => "users",
            Feature::Roles => "roles",
            Feature::Teams => "teams",
            Feature::Billing => "billing",
            Feature::Audit => "audit",
        }
    }
}

macro_rules! catalog {
    ($($variant:ident = ($feature:ident, $action:literal, $name:literal)),+ $(,)?) => {
        /// A permission of the catalog. Adding one here adds it everywhere, admins included.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Permission {
            $($variant),+
        }

        impl Permission {
            /// The whole catalog, in display order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),+];

            /// The permission's position in [`Permission::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The feature the permission belongs to.
            pub fn feature(self) -> Feature {
                match self {
                    $(Permission::$variant => Feature::$feature),+
                }
            }

            /// The action within the feature (`read`, `write`, …).
            pub fn action(self) -> &'static str {
                match self {
                    $(Permission::$variant => $action),+
                }
            }

            /// `feature.action`, as the API writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name),+
                }
            }

            /// The permission named `feature.action`.
            fn from_name(name: &str) -> Option<Permission> {
                match name {
                    $($name => Some(Permission::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

catalog! {
    ConversationsRead = (Conversations, "read", "conversations.read"),
    ConversationsReply = (Conversations, "reply", "conversations.reply"),
    ConversationsAssign = (Conversations, "assign", "conversations.assign"),
    ConversationsTake = (Conversations, "take", "conversations.take"),
    ContactsRead = (Contacts, "read", "contacts.read"),
    ContactsWrite = (Contacts, "write", "contacts.write"),
    ContactsDelete = (Contacts, "delete", "contacts.delete"),
    CampaignsRead = (Campaigns, "read", "campaigns.read"),
    CampaignsWrite = (Campaigns, "write", "campaigns.write"),
    TemplatesRead = (Templates, "read", "templates.read"),
    TemplatesWrite = (Templates, "write", "templates.write"),
    SettingsRead = (Settings, "read", "settings.read"),
    SettingsWrite = (Settings, "write", "settings.write"),
    AnalyticsRead = (Analytics, "read", "analytics.read"),
    UsersRead = (Users, "read", "users.read"),
    UsersManage = (Users, "manage", "users.manage"),
    RolesManage = (Roles, "manage", "roles.manage"),
    TeamsManage = (Teams, "manage", "teams.manage"),
    BillingManage = (Billing, "manage", "billing.manage"),
    AuditRead = (Audit, "read", "audit.read"),
}

/// Why a string is not a permission of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("unknown permission {0:?}; permissions look like `contacts.read`")]
    Unknown(String),
}

impl Permission {
    /// Parses `feature.action`.
    pub fn parse(input: &str) -> Result<Self, PermissionError> {
        Permission::from_name(input).ok_or_else(|| PermissionError::Unknown(input.to_owned()))
    }

    /// What the permission allows, in a line.
    pub fn description(self) -> &'static str {
        use Permission::*;
        match self {
            ConversationsRead => "View conversations",
            ConversationsReply => "Reply to conversations",
            ConversationsAssign => "Assign conversations to agents and teams",
            ConversationsTake => "Take queued conversations of one's own teams",
            ContactsRead => "View contacts",
            ContactsWrite => "Create and edit contacts",
            ContactsDelete => "Delete contacts",
            CampaignsRead => "View campaigns",
            CampaignsWrite => "Create and send campaigns",
            TemplatesRead => "Use message templates",
            TemplatesWrite => "Create and edit message templates",
            SettingsRead => "View workspace settings",
            SettingsWrite => "Change workspace settings",
            AnalyticsRead => "View analytics",
            UsersRead => "View team members",
            UsersManage => "Add, change and deactivate team members",
            RolesManage => "Create, change and delete roles",
            TeamsManage => "Create teams and manage their members",
            BillingManage => "Change the plan and seats",
            AuditRead => "View the audit log",
        }
    }

    /// Whether grants of this permission carry a scope: conversations and contacts can be granted
    /// for every resource or only for those assigned to the user. Taking is not: it is only ever
    /// of a queued conversation (nobody's) of the taker's own teams.
    pub fn is_scoped(self) -> bool {
        matches!(self.feature(), Feature::Conversations | Feature::Contacts) && self != Permission::ConversationsTake
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which resources a grant of a scoped permission covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Only resources assigned to the user.
    Assigned,
    /// Every resource of the workspace.
    All,
}

impl Scope {
    /// Whether a grant with this scope covers everything one with `other` does.
    pub fn covers(self, other: Scope) -> bool {
        self >= other
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Assigned => "ASSIGNED",
            Scope::All => "ALL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_its_feature_and_action_and_parses_back() {
        for permission in Permission::ALL {
            let name = format!("{}.{}", permission.feature().as_str(), permission.action());
            assert_eq!(permission.name(), name);
            assert_eq!(Permission::parse(&name), Ok(*permission));
        }
        assert!(Permission::parse("contacts.READ").is_err());
        assert!(Permission::parse("contacts").is_err());
    }

    #[test]
    fn the_catalog_has_the_twenty_permissions_of_the_product() {
        let names: Vec<String> = Permission::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "conversations.read",
                "conversations.reply",
                "conversations.assign",
                "conversations.take",
                "contacts.read",
                "contacts.write",
                "contacts.delete",
                "campaigns.read",
                "campaigns.write",
                "templates.read",
                "templates.write",
                "settings.read",
                "settings.write",
                "analytics.read",
                "users.read",
                "users.manage",
                "roles.manage",
                "teams.manage",
                "billing.manage",
                "audit.read",
            ]
        );
    }

    #[test]
    fn a_permission_index_is_its_position_in_the_catalog() {
        for (i, permission) in Permission::ALL.iter().enumerate() {
            assert_eq!(permission.index(), i);
        }
    }

    #[test]
    fn every_permission_parses_back_from_its_name() {
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(&permission.to_string()), Ok(*permission));
        }
    }

    #[test]
    fn unknown_and_malformed_permissions_are_rejected() {
        for input in ["", "contacts", "contacts.", ".read", "contacts.fly", "Contacts.read", "contacts.read "] {
            assert!(Permission::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn only_conversations_and_contacts_are_scoped() {
        let scoped: Vec<String> = Permission::ALL.iter().filter(|p| p.is_scoped()).map(|p| p.to_string()).collect();
        assert_eq!(
            scoped,
            [
                "conversations.read",
                "conversations.reply",
                "conversations.assign",
                "contacts.read",
                "contacts.write",
                "contacts.delete"
            ]
        );
    }

    #[test]
    fn all_covers_assigned_but_not_the_reverse() {
        assert!(Scope::All.covers(Scope::Assigned));
        assert!(Scope::All.covers(Scope::All));
        assert!(!Scope::Assigned.covers(Scope::All));
    }
}
