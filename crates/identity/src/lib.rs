//! Roster's identity types: who a person is and how they prove it.
//!
//! The main design choice is "parse, don't validate": every value that comes from outside —
//! an email, a full name, a workspace slug, a password, a session token — becomes a newtype with a
//! private field and exactly one fallible constructor. Code that holds an [`Email`] never checks it
//! again. The crate is pure: no I/O, no clock and no random number generator. Salts and token bytes
//! come in as arguments, so every function here is deterministic and tested without a runtime.
//!
//! Secrets ([`Password`], [`PasswordHash`], [`SessionToken`]) redact themselves in `Debug` and do not
//! implement `Display`, so they cannot end up in a log line by accident.

mod email;
mod name;
mod password;
mod slug;
pub mod throttle;
mod token;

pub use email::{Email, EmailError};
pub use name::{FullName, NameError, RoleName, TeamName, WorkspaceName};
pub use password::{BcryptCost, HashError, Password, PasswordError, PasswordHash};
pub use slug::{Slug, SlugError};
pub use token::{LinkToken, SessionToken, TOKEN_BYTES, TokenError, TokenHash};
