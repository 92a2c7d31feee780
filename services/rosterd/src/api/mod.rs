//! The gRPC handlers, one module per service. A handler authenticates, resolves the workspace,
//! authorizes, parses, calls the store once and converts the answer.

mod assignments;
mod audit;
mod auth;
mod authorization;
mod billing;
mod events;
mod roles;
mod teams;
mod users;
mod workspaces;

pub(crate) use assignments::AssignmentApi;
pub(crate) use audit::AuditApi;
pub(crate) use auth::AuthApi;
pub(crate) use authorization::AuthorizationApi;
pub(crate) use billing::BillingApi;
pub(crate) use events::EventApi;
pub(crate) use roles::RoleApi;
pub(crate) use teams::TeamApi;
pub(crate) use users::UserApi;
pub(crate) use workspaces::WorkspaceApi;

use crate::auth::Caller;
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

/// Record ids are 32 lower-case hex digits; anything else cannot name a record. Checking the
/// shape first keeps arbitrary bytes (a NUL, say) away from the database.
pub(crate) fn is_record_id(value: &str) -> bool {
    let Ok(bytes) = <&[u8; 32]>::try_from(value.as_bytes()) else { return false };
    // Every byte, without an early exit, so the compiler checks the 32 at once (every item of a
    // CheckPermissions batch has one or two ids to check).
    bytes.iter().fold(true, |ok, &b| ok & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6)))
}

/// The user a call is about: the one named, or the calling person when none is. Otherwise the
/// violation of `user_id`.
pub(crate) fn about<'a>(caller: &'a Caller, user_id: &'a str) -> Result<&'a str, &'static str> {
    match (user_id, caller.user()) {
        ("", Some(me)) => Ok(me.id.as_str()),
        ("", None) => Err("required when calling with a service key"),
        (id, _) if is_record_id(id) => Ok(id),
        _ => Err("not an id this server issued"),
    }
}

/// A required record id field.
pub(crate) fn record_id(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "required");
    } else if !is_record_id(value) {
        v.add(field, "not an id this server issued");
    }
}

/// An optional etag: the record version this server issued, or `None` when empty.
pub(crate) fn etag(v: &mut Violations, field: &str, value: &str) -> Option<i64> {
    if value.is_empty() {
        return None;
    }
    v.check(field, value.parse::<i64>().map_err(|_| "not an etag this server issued"))
}

/// An optional exact-match filter: at most 300 characters, no control characters.
pub(crate) fn filter<'a>(v: &mut Violations, field: &str, value: &'a str) -> Option<&'a str> {
    if value.is_empty() {
        return None;
    }
    if value.chars().count() > 300 || value.chars().any(char::is_control) {
        v.add(field, "at most 300 characters, no control characters");
        return None;
    }
    Some(value)
}

/// The paths an update changes: the mask's, or without one every updatable field that is set
/// (AIP-134). `set` lists each updatable path and whether the request sets it.
pub(crate) fn mask_paths(
    v: &mut Violations,
    mask: Option<prost_types::FieldMask>,
    set: &[(&str, bool)],
) -> Vec<String> {
    let paths: Vec<String> = match mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths,
        _ => set.iter().filter(|(_, set)| *set).map(|(path, _)| (*path).to_owned()).collect(),
    };
    if paths.is_empty() {
        let names: Vec<&str> = set.iter().map(|(path, _)| *path).collect();
        v.add("update_mask", format!("name at least one of: {}", names.join(", ")));
    }
    paths
}

/// The most open conversations a capacity may name.
const MAX_CAPACITY: i32 = 100_000;

/// An optional capacity (most open conversations an agent takes; 0 = unlimited).
pub(crate) fn capacity(v: &mut Violations, field: &str, value: Option<i32>) -> Option<roster_assignment::Capacity> {
    match value {
        None => None,
        Some(n) if (0..=MAX_CAPACITY).contains(&n) => Some(roster_assignment::Capacity::new(n as u32)),
        Some(_) => {
            v.add(field, format!("0 (unlimited) to {MAX_CAPACITY}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_record_id;

    #[test]
    fn a_record_id_is_32_lower_case_hex_digits() {
        assert!(is_record_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdeg0123456789abcdef",
            // The neighbours of the ranges: '/' and ':' around the digits, '`' and 'g' around a-f.
            "/123456789abcdef0123456789abcdef",
            ":123456789abcdef0123456789abcdef",
            "`123456789abcdef0123456789abcdef",
            // 32 bytes, the last two one character.
            "0123456789abcdef0123456789abcd\u{e9}",
        ] {
            assert!(!is_record_id(bad), "{bad:?}");
        }
    }
}
