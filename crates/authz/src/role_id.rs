//! How roles are named: the ids users refer to them by, and the three built-in roles.

use std::fmt;

/// The identifier of a role: a built-in role's well-known id (`admin`, `supervisor`, `agent`) or
/// a custom role's generated id. 1..=64 characters of ASCII letters, digits, `-` and `_`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoleId(String);

/// Why a string is not a [`RoleId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleIdError {
    #[error("role is empty")]
    Empty,
    #[error("role id must be at most 64 characters of a-z, A-Z, 0-9, '-' and '_'")]
    Malformed,
}

impl RoleId {
    /// Parses a role id.
    pub fn parse(input: &str) -> Result<Self, RoleIdError> {
        let id = input.trim();
        if id.is_empty() {
            return Err(RoleIdError::Empty);
        }
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(RoleIdError::Malformed);
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The built-in role this id names, if any.
    pub fn builtin(&self) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|role| role.id() == self.0)
    }
}

impl From<BuiltinRole> for RoleId {
    fn from(role: BuiltinRole) -> Self {
        Self(role.id().to_owned())
    }
}

impl fmt::Display for RoleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleId({})", self.0)
    }
}

/// The three roles every workspace has. They are stored as rows like custom roles, so that users
/// reference every role the same way; their ids are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Everything.
    Admin,
    /// All conversations, agents, analytics.
    Supervisor,
    /// Assigned conversations and contacts, templates.
    Agent,
}

impl BuiltinRole {
    /// Every built-in role, most powerful first.
    pub const ALL: [BuiltinRole; 3] = [BuiltinRole::Admin, BuiltinRole::Supervisor, BuiltinRole::Agent];

    /// The role's fixed id.
    pub fn id(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "admin",
            BuiltinRole::Supervisor => "supervisor",
            BuiltinRole::Agent => "agent",
        }
    }

    /// The role's display name.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "Admin",
            BuiltinRole::Supervisor => "Supervisor",
            BuiltinRole::Agent => "Agent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_role_ids_parse_back_to_their_role() {
        for role in BuiltinRole::ALL {
            assert_eq!(RoleId::parse(role.id()).unwrap().builtin(), Some(role));
        }
        assert_eq!(RoleId::parse("sales-agent").unwrap().builtin(), None);
    }

    #[test]
    fn malformed_role_ids_are_rejected() {
        assert_eq!(RoleId::parse(" "), Err(RoleIdError::Empty));
        assert_eq!(RoleId::parse("sales agent"), Err(RoleIdError::Malformed));
        assert_eq!(RoleId::parse(&"a".repeat(65)), Err(RoleIdError::Malformed));
    }
}
