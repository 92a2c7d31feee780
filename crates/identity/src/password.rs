use std::fmt;

/// A password as typed: at least 10 characters and at most 72 bytes, bcrypt's limit. Longer
/// passwords are rejected rather than silently truncated. NUL is rejected because some bcrypt
/// implementations stop at it. `Debug` redacts it; there is no `Display`.
///
/// bcrypt reads 72 bytes: the password and, when it is shorter, a NUL after it. So every byte of a
/// password of up to 72 bytes counts, and two passwords that differ anywhere hash differently.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a string is not an acceptable [`Password`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least 10 characters")]
    TooShort,
    #[error("password must be at most 72 bytes (bcrypt's limit); this one is {bytes}")]
    TooLong { bytes: usize },
    #[error("password must not contain the NUL character")]
    Nul,
}

impl Password {
    /// The fewest characters (Unicode scalar values) accepted.
    pub const MIN_CHARS: usize = 10;
    /// The most bytes bcrypt reads.
    pub const MAX_BYTES: usize = 72;

    /// Checks a new password. Surrounding whitespace is kept: it is part of the secret.
    pub fn parse(input: &str) -> Result<Self, PasswordError> {
        if input.len() > Self::MAX_BYTES {
            return Err(PasswordError::TooLong { bytes: input.len() });
        }
        if input.contains('\0') {
            return Err(PasswordError::Nul);
        }
        if input.chars().count() < Self::MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        Ok(Self(input.to_owned()))
    }

    /// Wraps a password offered at login or as a current password without the strength rules,
    /// so that a wrong guess costs the same bcrypt work as a right one. Returns `None` only when
    /// bcrypt could not hash the input at all (over 72 bytes), which can never match.
    pub fn candidate(input: &str) -> Option<Self> {
        (input.len() <= Self::MAX_BYTES).then(|| Self(input.to_owned()))
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A bcrypt work factor, 4..=31; each step doubles the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BcryptCost(u32);

impl BcryptCost {
    /// Parses a cost, refusing what bcrypt refuses.
    pub fn new(cost: u32) -> Option<Self> {
        (4..=31).contains(&cost).then_some(Self(cost))
    }

    /// The work factor.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for BcryptCost {
    fn default() -> Self {
        Self(bcrypt::DEFAULT_COST)
    }
}

/// bcrypt could not hash: only a cost outside its range, which [`BcryptCost`] rules out.
#[derive(Debug, thiserror::Error)]
#[error("bcrypt could not hash: {0}")]
pub struct HashError(bcrypt::BcryptError);

/// A bcrypt hash (`$2b$…`). It never leaves the service: `Debug` redacts it and there is no
/// `Display`; [`PasswordHash::as_stored`] is for the store alone.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes a password. The salt comes from the caller's random number generator.
    /// This is slow on purpose: run it on a blocking thread.
    ///
    /// bcrypt's "truncating" functions are the right ones for a [`Password`]: they cut only past
    /// 72 bytes, which a password never reaches, and a password of exactly 72 bytes leaves out only
    /// the NUL after it. (The "non-truncating" ones refuse 72 bytes, one short of the limit this
    /// type promises.) bcrypt's only error is a cost out of range, which [`BcryptCost`] rules out;
    /// it is still returned, not unwrapped.
    pub fn new(password: &Password, cost: BcryptCost, salt: [u8; 16]) -> Result<Self, HashError> {
        let parts = bcrypt::hash_with_salt(password.expose(), cost.get(), salt).map_err(HashError)?;
        Ok(Self(parts.format_for_version(bcrypt::Version::TwoB)))
    }

    /// Wraps a hash read back from the store.
    pub fn from_stored(hash: String) -> Self {
        Self(hash)
    }

    /// The text to store.
    pub fn as_stored(&self) -> &str {
        &self.0
    }

    /// Whether `password` matches, in time independent of where they differ.
    /// A corrupt stored hash matches nothing. Slow on purpose: run it on a blocking thread.
    pub fn verify(&self, password: &Password) -> bool {
        bcrypt::verify(password.expose(), &self.0).unwrap_or(false)
    }

    /// The cost this hash was made with, if it is well formed.
    pub fn cost(&self) -> Option<u32> {
        self.0.parse::<bcrypt::HashParts>().ok().map(|parts| parts.get_cost())
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SALT: [u8; 16] = [7; 16];
    const FAST: BcryptCost = BcryptCost(4);

    #[test]
    fn a_password_of_9_characters_is_rejected_and_10_accepted() {
        assert_eq!(Password::parse("123456789"), Err(PasswordError::TooShort));
        assert!(Password::parse("1234567890").is_ok());
    }

    #[test]
    fn length_is_counted_in_characters_for_the_minimum() {
        // Nine two-byte characters are 18 bytes but still nine characters.
        assert_eq!(Password::parse(&"é".repeat(9)), Err(PasswordError::TooShort));
        assert!(Password::parse(&"é".repeat(10)).is_ok());
    }

    #[test]
    fn a_password_of_71_72_bytes_is_accepted_hashed_and_verified_and_73_rejected() {
        for password in ["a".repeat(71), "a".repeat(72), "é".repeat(36), format!("{}€", "é".repeat(34))] {
            let parsed = Password::parse(&password).expect(&password);
            let hash = PasswordHash::new(&parsed, FAST, SALT).expect("hashed");
            assert!(hash.verify(&parsed), "{} bytes", password.len());
            assert!(hash.verify(&Password::candidate(&password).expect("candidate")));
        }
        assert_eq!(Password::parse(&"a".repeat(73)), Err(PasswordError::TooLong { bytes: 73 }));
    }

    #[test]
    fn every_byte_of_a_72_byte_password_counts() {
        let password = Password::parse(&"a".repeat(72)).unwrap();
        let hash = PasswordHash::new(&password, FAST, SALT).unwrap();
        let last_differs = format!("{}b", "a".repeat(71));
        assert!(!hash.verify(&Password::candidate(&last_differs).unwrap()));
        assert!(!hash.verify(&Password::candidate(&"a".repeat(71)).unwrap()));
    }

    /// Hashes made before, with bcrypt's non-truncating function (up to 71 bytes), still verify.
    #[test]
    fn hashes_of_the_non_truncating_function_still_verify() {
        let password = Password::parse(&"p".repeat(71)).unwrap();
        let old = bcrypt::non_truncating_hash_with_salt(password.expose(), 4, SALT).unwrap();
        let old = PasswordHash::from_stored(old.format_for_version(bcrypt::Version::TwoB));
        assert!(old.verify(&password));
        assert_eq!(old, PasswordHash::new(&password, FAST, SALT).unwrap());
    }

    #[test]
    fn a_password_over_72_bytes_is_rejected() {
        assert_eq!(Password::parse(&"a".repeat(73)), Err(PasswordError::TooLong { bytes: 73 }));
        // 37 two-byte characters: 74 bytes, although only 37 characters.
        assert_eq!(Password::parse(&"é".repeat(37)), Err(PasswordError::TooLong { bytes: 74 }));
    }

    #[test]
    fn a_password_with_nul_is_rejected() {
        assert_eq!(Password::parse("correct\0horse"), Err(PasswordError::Nul));
    }

    #[test]
    fn passwords_and_hashes_are_redacted_in_debug() {
        let password = Password::parse("correct horse battery").unwrap();
        let hash = PasswordHash::new(&password, FAST, SALT).unwrap();
        assert_eq!(format!("{password:?}"), "Password(<redacted>)");
        assert_eq!(format!("{hash:?}"), "PasswordHash(<redacted>)");
    }

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let password = Password::parse("correct horse battery").unwrap();
        let hash = PasswordHash::new(&password, FAST, SALT).unwrap();
        assert!(hash.as_stored().starts_with("$2b$04$"));
        assert_eq!(hash.cost(), Some(4));
        assert!(hash.verify(&password));
        assert!(!hash.verify(&Password::candidate("correct horse batterY").unwrap()));
        assert!(!hash.verify(&Password::candidate("").unwrap()));
    }

    #[test]
    fn passwords_differing_only_after_byte_72_cannot_exist() {
        // bcrypt ignores bytes past 72; rejecting them means two distinct accepted passwords never share a hash.
        assert!(Password::candidate(&"a".repeat(73)).is_none());
    }

    #[test]
    fn a_corrupt_stored_hash_matches_nothing() {
        let password = Password::parse("correct horse battery").unwrap();
        assert!(!PasswordHash::from_stored("not a hash".into()).verify(&password));
    }

    #[test]
    fn costs_outside_bcrypts_range_are_refused() {
        assert_eq!(BcryptCost::new(3), None);
        assert_eq!(BcryptCost::new(32), None);
        assert_eq!(BcryptCost::new(12).map(BcryptCost::get), Some(12));
        assert_eq!(BcryptCost::default().get(), 12);
    }

    proptest! {
        #[test]
        fn accepted_passwords_respect_both_limits(input in ".{0,80}") {
            match Password::parse(&input) {
                Ok(_) => {
                    prop_assert!(input.chars().count() >= 10);
                    prop_assert!(input.len() <= 72);
                }
                Err(PasswordError::TooShort) => prop_assert!(input.chars().count() < 10),
                Err(PasswordError::TooLong { bytes }) => prop_assert!(bytes > 72),
                Err(PasswordError::Nul) => prop_assert!(input.contains('\0')),
            }
        }
    }
}
