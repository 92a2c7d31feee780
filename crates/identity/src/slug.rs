use std::fmt;

/// A workspace slug, typed at login: 3..=63 characters of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`. Input is trimmed and lower-cased, so `Acme` and `acme` are one workspace.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

/// Why a string is not a [`Slug`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("slug must be 3 to 63 characters")]
    Length,
    #[error("slug may contain only a-z, 0-9 and '-'")]
    ForbiddenCharacter,
    #[error("slug must not start or end with '-'")]
    EdgeHyphen,
}

impl Slug {
    /// Parses a slug.
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        let slug = input.trim().to_ascii_lowercase();
        if !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(SlugError::ForbiddenCharacter);
        }
        if !(3..=63).contains(&slug.len()) {
            return Err(SlugError::Length);
        }
        if slug.starts_with('-') || slug.ends_with('-') {
            return Err(SlugError::EdgeHyphen);
        }
        Ok(Self(slug))
    }

    /// The normalised slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_slug_is_trimmed_and_lower_cased() {
        assert_eq!(Slug::parse(" Acme-Support ").unwrap().as_str(), "acme-support");
    }

    #[test]
    fn malformed_slugs_are_rejected_with_the_reason() {
        let cases = [
            ("", SlugError::Length),
            ("ab", SlugError::Length),
            (&*"a".repeat(64), SlugError::Length),
            ("acme support", SlugError::ForbiddenCharacter),
            ("acme_support", SlugError::ForbiddenCharacter),
            ("açme", SlugError::ForbiddenCharacter),
            ("-acme", SlugError::EdgeHyphen),
            ("acme-", SlugError::EdgeHyphen),
        ];
        for (input, expected) in cases {
            assert_eq!(Slug::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn slugs_of_3_and_63_characters_are_accepted() {
        assert!(Slug::parse("abc").is_ok());
        assert!(Slug::parse(&"a".repeat(63)).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_slugs_are_canonical(input in ".{0,70}") {
            if let Ok(slug) = Slug::parse(&input) {
                prop_assert!((3..=63).contains(&slug.as_str().len()));
                prop_assert!(slug.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert_eq!(Slug::parse(slug.as_str()), Ok(slug.clone()));
            }
        }
    }
}
