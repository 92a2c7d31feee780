//! How Roster knows a conversation: by the inbox's own id.

use std::fmt;

/// The inbox's id of a conversation: 1..=128 visible ASCII characters (no spaces). Roster does not
/// issue these; it only tracks the assignment of what the inbox names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(String);

/// Why a text is not a conversation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationIdError {
    #[error("conversation id is empty")]
    Empty,
    #[error("conversation id is longer than {} characters", ConversationId::MAX_LEN)]
    TooLong,
    #[error("conversation id must be visible ASCII characters without spaces")]
    NotVisibleAscii,
}

impl ConversationId {
    /// The longest id accepted, in bytes (= characters, being ASCII).
    pub const MAX_LEN: usize = 128;

    /// Checks an id exactly as given: it is the inbox's key, so nothing is trimmed or folded.
    pub fn parse(input: &str) -> Result<Self, ConversationIdError> {
        if input.is_empty() {
            return Err(ConversationIdError::Empty);
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConversationIdError::NotVisibleAscii);
        }
        if input.len() > Self::MAX_LEN {
            return Err(ConversationIdError::TooLong);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_ids_are_kept_exactly() {
        assert_eq!(ConversationId::parse("wa:+15551234567:42").unwrap().as_str(), "wa:+15551234567:42");
        assert_eq!(ConversationId::parse(&"a".repeat(128)).unwrap().as_str().len(), 128);
    }

    #[test]
    fn empty_long_spaced_or_non_ascii_ids_are_refused() {
        assert_eq!(ConversationId::parse(""), Err(ConversationIdError::Empty));
        assert_eq!(ConversationId::parse(&"a".repeat(129)), Err(ConversationIdError::TooLong));
        for bad in [" a", "a b", "a\u{0}", "é", "a\n"] {
            assert_eq!(ConversationId::parse(bad), Err(ConversationIdError::NotVisibleAscii), "{bad:?}");
        }
    }
}
