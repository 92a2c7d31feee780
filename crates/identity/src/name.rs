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
    #[error("name must not contain characters that change the direction of text (U+{0:04X})")]
    DirectionControl(u32),
    #[error("name must have a visible character")]
    Invisible,
}

/// Characters that change the direction in which the text around them is shown: with them, a name
/// can make an audit line or an email read backwards.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing (Unicode's default-ignorable code points): zero-width spaces and
/// joiners, the soft hyphen, variation selectors, fillers, tags. A name of only these and spaces
/// looks blank; a name with them looks like the same name without them.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Trims and checks a display name: 1..=`max` characters (Unicode scalar values), none of them a
/// control character or a direction control, at least one of them visible.
fn parse_name(input: &str, max: usize) -> Result<String, NameError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if let Some(c) = trimmed.chars().find(|c| is_direction_control(*c)) {
        return Err(NameError::DirectionControl(u32::from(c)));
    }
    if trimmed.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(NameError::Invisible);
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
            /// The key names are unique by within a workspace: lower-cased, without the characters
            /// that show nothing, so that two names that look the same collide.
            pub fn key(&self) -> String {
                self.0.chars().filter(|c| !is_invisible(*c)).flat_map(char::to_lowercase).collect()
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

    /// Every name type at its limit, one under and one over, counted in characters whatever their
    /// bytes: one byte (a), two (é), three (€) and four (😀).
    #[test]
    fn every_name_type_takes_its_limit_in_characters_not_bytes() {
        type Parse = fn(&str) -> Result<(), NameError>;
        let limits: [(&str, usize, Parse); 4] = [
            ("full name", FullName::MAX_CHARS, |s| FullName::parse(s).map(drop)),
            ("workspace name", WorkspaceName::MAX_CHARS, |s| WorkspaceName::parse(s).map(drop)),
            ("role name", RoleName::MAX_CHARS, |s| RoleName::parse(s).map(drop)),
            ("team name", TeamName::MAX_CHARS, |s| TeamName::parse(s).map(drop)),
        ];
        for (what, max, parse) in limits {
            for c in ["a", "é", "€", "😀"] {
                assert_eq!(parse(&c.repeat(max - 1)), Ok(()), "{what}: {} × {c}", max - 1);
                assert_eq!(parse(&c.repeat(max)), Ok(()), "{what}: {max} × {c}");
                assert_eq!(parse(&c.repeat(max + 1)), Err(NameError::TooLong { max }), "{what}: {} × {c}", max + 1);
            }
        }
    }

    #[test]
    fn a_name_of_only_invisible_characters_is_rejected() {
        for blank in ["\u{200B}", " \u{200B} \u{FEFF} ", "\u{2060}\u{00AD}", "\u{3164}", "\u{FE0F}"] {
            assert_eq!(FullName::parse(blank), Err(NameError::Invisible), "{blank:?}");
            assert_eq!(TeamName::parse(blank), Err(NameError::Invisible), "{blank:?}");
        }
        // Joiners inside a visible name are part of some scripts and emoji.
        assert!(FullName::parse("Mo\u{200C}hammad 👩\u{200D}💻").is_ok());
    }

    #[test]
    fn a_name_with_a_direction_control_is_rejected() {
        for (bad, code) in [("Maria\u{202E}txt.exe", 0x202E), ("\u{2067}Ana", 0x2067), ("Ken\u{200F}", 0x200F)] {
            assert_eq!(FullName::parse(bad), Err(NameError::DirectionControl(code)), "{bad:?}");
            assert_eq!(RoleName::parse(bad), Err(NameError::DirectionControl(code)), "{bad:?}");
        }
    }

    #[test]
    fn names_that_look_the_same_have_the_same_key() {
        let plain = RoleName::parse("Admin").unwrap().key();
        for lookalike in ["Ad\u{200B}min", "\u{FEFF}ADMIN", "admin\u{FE0F}", "A\u{00AD}dmin"] {
            assert_eq!(RoleName::parse(lookalike).unwrap().key(), plain, "{lookalike:?}");
        }
        assert_eq!(TeamName::parse("Sa\u{2060}les").unwrap().key(), "sales");
    }

    proptest! {
        #[test]
        fn accepted_names_are_trimmed_short_printable_and_visible(input in "\\PC{0,250}|.{0,250}") {
            if let Ok(name) = FullName::parse(&input) {
                prop_assert!(!name.as_str().is_empty());
                prop_assert!(name.as_str().chars().count() <= 200);
                prop_assert!(!name.as_str().chars().any(|c| c.is_control() || is_direction_control(c)));
                prop_assert!(name.as_str().chars().any(|c| !c.is_whitespace() && !is_invisible(c)));
                prop_assert_eq!(name.as_str(), name.as_str().trim());
            }
        }
    }
}
