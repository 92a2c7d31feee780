use std::fmt;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {max} characters")]
    TooLong { max: usize },
    #[error("name must not contain control characters")]
    ControlCharacter,
}

/// Trims and checks a display name: 1..=`max` characters (Unicode scalar values), none of them a
/// control character.
fn parse_name(input: &str, max: usize) -> Result<String, NameError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if trimmed.chars().count() > max {
        return Err(NameError::TooLong { max });
    }
    Ok(trimmed.to_owned())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The most characters allowed.
            pub const MAX_CHARS: usize = $max;

            /// Parses a name, trimming surrounding whitespace.
            pub fn parse(input: &str) -> Result<Self, NameError> {
                parse_name(input, Self::MAX_CHARS).map(Self)
            }

            /// The trimmed name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

name_type!(
    /// A person's full name: 1..200 characters, no control characters, surrounding space trimmed.
    FullName,
    200
);
name_type!(
    /// A workspace's display name: 1..200 characters, no control characters, surrounding space trimmed.
    WorkspaceName,
    200
);

name_type!(
    /// A role's display name: 1..100 characters, no control characters, surrounding space trimmed.
    RoleName,
    100
);

name_type!(
    /// A team's display name: 1..100 characters, no control characters, surrounding space trimmed.
    TeamName,
    100
);

macro_rules! case_insensitive_key {
    ($($name:ident),+) => {$(
        impl $name {
            /// The key names are unique by within a workspace: two names that differ only in case collide.
            pub fn key(&self) -> String {
                self.0.to_lowercase()
            }
        }
    )+};
}

case_insensitive_key!(RoleName, TeamName);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_name_is_trimmed() {
        assert_eq!(FullName::parse("  Maria López ").unwrap().as_str(), "Maria López");
    }

    #[test]
    fn an_empty_or_blank_full_name_is_rejected() {
        assert_eq!(FullName::parse(""), Err(NameError::Empty));
        assert_eq!(FullName::parse(" \t "), Err(NameError::Empty));
    }

    #[test]
    fn a_full_name_of_200_characters_is_accepted_and_201_rejected() {
        let ok = "é".repeat(200);
        assert_eq!(FullName::parse(&ok).unwrap().as_str(), ok);
        assert_eq!(FullName::parse(&"é".repeat(201)), Err(NameError::TooLong { max: 200 }));
    }

    #[test]
    fn a_full_name_with_a_control_character_is_rejected() {
        for bad in ["Maria\u{0}", "Ma\nria", "Maria\u{1b}[31m", "Ma\u{7f}ria"] {
            assert_eq!(FullName::parse(bad), Err(NameError::ControlCharacter), "{bad:?}");
        }
    }

    #[test]
    fn a_workspace_name_follows_the_same_rules() {
        assert_eq!(WorkspaceName::parse(" Acme Support ").unwrap().as_str(), "Acme Support");
        assert_eq!(WorkspaceName::parse(""), Err(NameError::Empty));
    }

    #[test]
    fn role_names_collide_case_insensitively() {
        let a = RoleName::parse(" Billing Team ").unwrap();
        assert_eq!(a.as_str(), "Billing Team");
        assert_eq!(a.key(), RoleName::parse("billing team").unwrap().key());
        assert_eq!(RoleName::parse(&"x".repeat(101)), Err(NameError::TooLong { max: 100 }));
    }

    #[test]
    fn team_names_collide_case_insensitively() {
        assert_eq!(TeamName::parse(" Sales ").unwrap().key(), TeamName::parse("SALES").unwrap().key());
        assert_eq!(TeamName::parse("\t"), Err(NameError::Empty));
        assert_eq!(TeamName::parse(&"x".repeat(101)), Err(NameError::TooLong { max: 100 }));
    }

    proptest! {
        #[test]
        fn accepted_names_are_trimmed_short_and_printable(input in "\\PC{0,250}|.{0,250}") {
            if let Ok(name) = FullName::parse(&input) {
                prop_assert!(!name.as_str().is_empty());
                prop_assert!(name.as_str().chars().count() <= 200);
                prop_assert!(!name.as_str().chars().any(char::is_control));
                prop_assert_eq!(name.as_str(), name.as_str().trim());
            }
        }
    }
}
