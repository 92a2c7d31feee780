//! What the operations share: loading and locking rows, and turning rows into records.
//!
//! These are leaf modules. They use the entities, the audit trail and each other in one
//! direction (`link`, `workspace` ← `role` ← `user` ← `team` ← `conversation`), never an operation
//! module, so the store's modules form one graph: entities → rows → routing → operations.

pub(crate) mod conversation;
pub(crate) mod link;
pub(crate) mod role;
pub(crate) mod team;
pub(crate) mod user;
pub(crate) mod workspace;
