//! The gRPC handlers, one module per service. A handler authenticates, resolves the workspace,
//! authorizes, parses, calls the store once and converts the answer.

mod audit;
mod auth;
mod users;
mod workspaces;

pub(crate) use audit::AuditApi;
pub(crate) use auth::AuthApi;
pub(crate) use users::UserApi;
pub(crate) use workspaces::WorkspaceApi;

use crate::error::Violations;

/// An optional idempotency key (AIP-155): up to 128 visible ASCII characters.
pub(crate) fn request_id<'a>(v: &mut Violations, value: &'a str) -> Option<&'a str> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        v.add("request_id", "at most 128 visible ASCII characters");
        return None;
    }
    Some(value)
}
