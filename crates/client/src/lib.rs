//! A Rust client for Roster's `roster.v1` gRPC API.
//!
//! The main design choice: tonic's generated clients stay the API, and this crate adds only what
//! every caller would otherwise get wrong by hand. A [`Client`] attaches the [`Credential`] and a
//! default deadline to every call through one interceptor ([`Auth`]); [`retry`] repeats a call only
//! when the request is known safe to send twice ([`RetrySafe`], checked at compile time) and the
//! failure was transient; [`Error`] decodes the status once into a [`Reason`] to match on.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use roster_client::{Client, Credential, Reason, proto::v1};
//!
//! let client = Client::connect("http://127.0.0.1:50051", Credential::service_key("dev-only-secret-change-me")?).await?;
//! let request = v1::CheckPermissionRequest {
//!     workspace_id: "…".into(),
//!     user_id: "…".into(),
//!     permission: "conversations.reply".into(),
//!     resource: None,
//! };
//! match client.check_permission(request).await {
//!     Ok(answer) => println!("allowed: {}", answer.decision.is_some_and(|d| d.allowed)),
//!     Err(error) if error.reason() == Some(&Reason::UserNotFound) => println!("no such user"),
//!     Err(error) => return Err(error.into()),
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod error;
mod retry;

pub use client::{Auth, AuthChannel, Client, ClientBuilder, Credential, InvalidCredential};
pub use error::{DOMAIN, Error, Reason};
pub use retry::{Retry, RetrySafe, retry};
/// The generated `roster.v1` messages and clients this crate is built on.
pub use roster_proto as proto;
/// TLS settings for [`ClientBuilder::tls`]: `ClientTlsConfig`, `Certificate` (a CA to trust),
/// `Identity` (a client certificate and key).
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
