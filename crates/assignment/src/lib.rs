//! Roster's routing model: which agent of a team gets a new conversation, and why.
//!
//! The main design choice is that a pick is a pure function of a snapshot: the team's strategy,
//! its members in their stable order with their status, availability, open conversations and
//! capacity, and the member round robin served last. [`pick`] reads no clock and no database, so
//! the store can call it inside the transaction that holds the team's lock, and every process
//! picks the same way. Every outcome carries its reason, which the API shows to people:
//! "round robin: after Maria", "load balanced: 2 open, fewest", "queued: 3 members away, 1 at capacity".
//!
//! What a call does to a conversation — assign, transfer, reopen, leave it, refuse — is decided the
//! same way: [`decide`] is a pure function of the conversation as the call finds it and what the
//! call asks, and returns a [`Plan`] for the store to carry out in its transaction.

mod conversation;
mod names;
mod pick;

pub use conversation::{Action, Conversation, Kind, Plan, Refusal, Route, Seen, Target, Then, decide};
pub use names::{ConversationId, ConversationIdError};
pub use pick::{Capacity, Ineligible, Member, Pick, Queued, Strategy, Why, pick};
