use sha2::{Digest, Sha256};
use std::fmt;

/// How many random bytes a session token carries: 256 bits, well above the 128 required.
pub const TOKEN_BYTES: usize = 32;

const PREFIX: &str = "rst_";

const LINK_PREFIX: &str = "rpl_";

/// `prefix` followed by 64 lower-case hex digits.
fn well_formed(input: &str, prefix: &str) -> bool {
    input.strip_prefix(prefix).is_some_and(|digits| {
        digits.len() == TOKEN_BYTES * 2 && digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn sha256_hex(input: &str) -> TokenHash {
    TokenHash(hex(&Sha256::digest(input.as_bytes())))
}

/// An opaque session token as the client holds it: `rst_` followed by 64 hex digits of random
/// bytes. The server stores only its [`TokenHash`]. `Debug` redacts it; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

/// Why a bearer string is not a session token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a session token")]
    Malformed,
    #[error("not a token of a link this server sent")]
    MalformedLink,
}

impl SessionToken {
    /// Makes a token from bytes drawn by the caller from a cryptographic random number generator.
    pub fn from_random(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(format!("{PREFIX}{}", hex(&bytes)))
    }

    /// Parses a bearer string; only the shape is checked, not whether a session exists.
    pub fn parse(input: &str) -> Result<Self, TokenError> {
        if !well_formed(input, PREFIX) {
            return Err(TokenError::Malformed);
        }
        Ok(Self(input.to_owned()))
    }

    /// The token to hand to the client, once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token: what the store keeps and looks sessions up by. A fast hash is
    /// right here because the token has 256 bits of entropy; nothing is left to brute-force.
    pub fn hash(&self) -> TokenHash {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// The secret of a single-use password link (an invitation or a password reset): `rpl_`
/// followed by 64 hex digits of random bytes, sent only in the email that carries the link. The
/// server stores only its [`TokenHash`]. `Debug` redacts it; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkToken(String);

impl LinkToken {
    /// Makes a token from bytes drawn by the caller from a cryptographic random number generator.
    pub fn from_random(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(format!("{LINK_PREFIX}{}", hex(&bytes)))
    }

    /// Parses a token as a link carried it; only the shape is checked, not whether it is valid.
    pub fn parse(input: &str) -> Result<Self, TokenError> {
        if !well_formed(input, LINK_PREFIX) {
            return Err(TokenError::MalformedLink);
        }
        Ok(Self(input.to_owned()))
    }

    /// The token, to write into the link, once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token, what the store keeps (256 random bits: a fast hash suffices).
    pub fn hash(&self) -> TokenHash {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken(<redacted>)")
    }
}

/// The stored form of a [`SessionToken`]: 64 hex digits of SHA-256.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// Wraps a hash read back from the store.
    pub fn from_stored(hash: String) -> Self {
        Self(hash)
    }

    /// The text to store.
    pub fn as_stored(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_carries_all_its_random_bytes_and_parses_back() {
        let token = SessionToken::from_random([0xab; TOKEN_BYTES]);
        assert_eq!(token.reveal(), format!("rst_{}", "ab".repeat(32)));
        assert_eq!(SessionToken::parse(token.reveal()), Ok(token));
    }

    #[test]
    fn the_hash_is_sha256_hex_and_differs_from_the_token() {
        let token = SessionToken::from_random([1; TOKEN_BYTES]);
        let hash = token.hash();
        assert_eq!(hash.as_stored().len(), 64);
        assert!(!hash.as_stored().contains(&token.reveal()[4..]));
        assert_eq!(hash, SessionToken::from_random([1; TOKEN_BYTES]).hash());
        assert_ne!(hash, SessionToken::from_random([2; TOKEN_BYTES]).hash());
    }

    #[test]
    fn tokens_and_hashes_are_redacted_in_debug() {
        let token = SessionToken::from_random([1; TOKEN_BYTES]);
        assert_eq!(format!("{token:?}"), "SessionToken(<redacted>)");
        assert_eq!(format!("{:?}", token.hash()), "TokenHash(<redacted>)");
    }

    #[test]
    fn malformed_bearer_strings_are_rejected() {
        for bad in ["", "rst_", "rst_abc", &format!("xyz_{}", "a".repeat(64)), &format!("rst_{}", "A".repeat(64))] {
            assert_eq!(SessionToken::parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn link_tokens_are_not_session_tokens_and_redact_themselves() {
        let link = LinkToken::from_random([0xcd; TOKEN_BYTES]);
        assert_eq!(link.reveal(), format!("rpl_{}", "cd".repeat(32)));
        assert_eq!(LinkToken::parse(link.reveal()), Ok(link.clone()));
        assert_eq!(SessionToken::parse(link.reveal()), Err(TokenError::Malformed));
        let session = SessionToken::from_random([0xcd; TOKEN_BYTES]);
        assert_eq!(LinkToken::parse(session.reveal()), Err(TokenError::MalformedLink));
        assert_ne!(link.hash(), session.hash());
        assert_eq!(format!("{link:?}"), "LinkToken(<redacted>)");
        for bad in ["", "rpl_", &format!("rpl_{}", "a".repeat(63)), &format!("rpl_{}", "a".repeat(65))] {
            assert_eq!(LinkToken::parse(bad), Err(TokenError::MalformedLink), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(bytes in proptest::array::uniform32(any::<u8>()), noise in ".{0,80}") {
            let token = SessionToken::from_random(bytes);
            prop_assert_eq!(SessionToken::parse(token.reveal()), Ok(token));
            let _ = SessionToken::parse(&noise);
        }
    }
}
