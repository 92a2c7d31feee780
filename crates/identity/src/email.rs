use std::fmt;

/// A login email: trimmed, lower-cased, at most 254 bytes, one `@` between a non-empty local part
/// and a domain of non-empty dot-separated labels. Emails compare case-insensitively because they
/// are stored lower-cased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is longer than 254 bytes")]
    TooLong,
    #[error("email must contain exactly one '@' with text on both sides")]
    MissingAt,
    #[error("email must not contain spaces or control characters")]
    ForbiddenCharacter,
    #[error("email domain must be dot-separated labels, like example.com")]
    BadDomain,
}

impl Email {
    /// The longest address SMTP can carry (RFC 5321 path limit less the angle brackets).
    pub const MAX_BYTES: usize = 254;

    /// Parses a login email. The limits apply to the address as it is stored, lower-cased:
    /// lower-casing can lengthen it ('İ', two bytes, becomes "i̇", three).
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim().to_lowercase();
        let trimmed = trimmed.as_str();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > Self::MAX_BYTES {
            return Err(EmailError::TooLong);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')) {
            return Err(EmailError::ForbiddenCharacter);
        }
        let (local, domain) = match trimmed.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
                (local, domain)
            }
            _ => return Err(EmailError::MissingAt),
        };
        if local.len() > 64 {
            return Err(EmailError::TooLong);
        }
        if !domain.contains('.')
            || domain.split('.').any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
        {
            return Err(EmailError::BadDomain);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<&str, EmailError>) {
        assert_eq!(Email::parse(input).as_ref().map(Email::as_str), expected.as_ref().map(|s| *s), "{input:?}");
    }

    #[test]
    fn an_email_is_trimmed_and_lower_cased() {
        check("  Maria.Lopez@Example.COM \n", Ok("maria.lopez@example.com"));
    }

    #[test]
    fn malformed_emails_are_rejected_with_the_reason() {
        check("", Err(EmailError::Empty));
        check("   ", Err(EmailError::Empty));
        check("maria", Err(EmailError::MissingAt));
        check("@example.com", Err(EmailError::MissingAt));
        check("maria@", Err(EmailError::MissingAt));
        check("a@b@example.com", Err(EmailError::MissingAt));
        check("maria lopez@example.com", Err(EmailError::ForbiddenCharacter));
        check("maria\u{0}@example.com", Err(EmailError::ForbiddenCharacter));
        check("maria@localhost", Err(EmailError::BadDomain));
        check("maria@example..com", Err(EmailError::BadDomain));
        check("maria@-example.com", Err(EmailError::BadDomain));
    }

    #[test]
    fn an_email_over_254_bytes_is_rejected() {
        let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        check(&long, Err(EmailError::TooLong));
        check(&format!("{}@example.com", "a".repeat(65)), Err(EmailError::TooLong));
    }

    /// An address of `bytes` bytes: a local part of 64 (the most) and a long domain.
    fn of_bytes(bytes: usize) -> String {
        format!("{}@{}.com", "l".repeat(64), "d".repeat(bytes - 64 - 1 - ".com".len()))
    }

    #[test]
    fn the_limits_are_on_the_stored_lower_cased_bytes() {
        for bytes in [253, 254] {
            let email = of_bytes(bytes);
            assert_eq!(email.len(), bytes);
            assert_eq!(Email::parse(&email).map(|e| e.as_str().len()), Ok(bytes));
            assert_eq!(Email::parse(&email.to_uppercase()).map(|e| e.as_str().len()), Ok(bytes));
        }
        check(&of_bytes(255), Err(EmailError::TooLong));
        // 'İ' is two bytes and lower-cases to three ("i̇"): what is stored is what counts.
        let grows = format!("{}@example.com", "İ".repeat(30));
        assert_eq!(grows.split('@').next().map(str::len), Some(60));
        check(&grows, Err(EmailError::TooLong));
        let fits = format!("{}@example.com", "İ".repeat(21));
        assert_eq!(Email::parse(&fits).map(|e| e.as_str().split('@').next().map(str::len)), Ok(Some(63)));
        let total = format!("{}@{}.com", "l".repeat(60), "İ".repeat(70));
        assert!(total.len() <= 254 && total.to_lowercase().len() > 254);
        check(&total, Err(EmailError::TooLong));
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_accepted_emails_are_normal(input in ".{0,300}") {
            if let Ok(email) = Email::parse(&input) {
                prop_assert!(email.as_str().len() <= Email::MAX_BYTES);
                prop_assert_eq!(email.as_str(), email.as_str().to_lowercase());
                prop_assert_eq!(email.as_str(), email.as_str().trim());
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            }
        }

        #[test]
        fn emails_differing_only_in_case_are_equal(local in "[a-zA-Z0-9._]{1,20}", domain in "[a-zA-Z0-9]{1,20}\\.[a-zA-Z]{2,6}") {
            let lower = Email::parse(&format!("{local}@{domain}").to_lowercase()).unwrap();
            let upper = Email::parse(&format!("{local}@{domain}").to_uppercase()).unwrap();
            prop_assert_eq!(lower, upper);
        }
    }
}
