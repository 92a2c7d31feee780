//! The one mapping from everything that can go wrong to a gRPC status with google.rpc details.
//!
//! Every status carries `ErrorInfo { reason, domain: "roster" }`; the reasons are listed in
//! `docs/ERRORS.md`. Store errors map exhaustively (no catch-all arm), so a new variant cannot
//! silently become INTERNAL.

use roster_store::{Conflict, Entity, StoreError};
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo` domain of every Roster error.
pub const DOMAIN: &str = "roster";

/// A status with an `ErrorInfo` and nothing else.
pub(crate) fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    status_with(code, reason, message, &[], ErrorDetails::new())
}

/// A status with an `ErrorInfo` carrying `metadata`, plus other `details`.
pub(crate) fn status_with(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: &[(&str, String)],
    mut details: ErrorDetails,
) -> Status {
    let metadata: HashMap<String, String> =
        metadata.iter().map(|(k, v)| ((*k).to_owned(), clip(v.clone(), MAX_MESSAGE))).collect();
    details.set_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, clip(message.into(), MAX_MESSAGE), details)
}

/// The longest status message or `ErrorInfo` metadata value, in bytes. A status travels in HTTP/2 headers, which clients limit
/// (16 KiB by default in hyper): a message quoting a huge request field would break the answer.
const MAX_MESSAGE: usize = 1024;

/// The longest field name or violation description, in bytes.
pub(crate) const MAX_TEXT: usize = 256;

/// The most field violations one answer lists; the message counts the rest.
const MAX_VIOLATIONS: usize = 20;

/// `text` cut to at most `max` bytes, on a character boundary, marked with "…" when cut.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max - '…'.len_utf8()));
        text.push('…');
    }
    text
}

/// Too many failed logins for the account or from the address: RESOURCE_EXHAUSTED with a
/// `RetryInfo` and `retry_after_seconds`. It does not say which limit, nor whether the account exists.
pub(crate) fn login_throttled(wait: roster_identity::throttle::RetryAfter) -> Status {
    throttled("LOGIN_THROTTLED", "too many failed logins for this account or from this address", wait)
}

/// RESOURCE_EXHAUSTED `RESET_THROTTLED`: too many password reset requests, with a `RetryInfo`.
pub(crate) fn reset_throttled(wait: roster_identity::throttle::RetryAfter) -> Status {
    throttled("RESET_THROTTLED", "too many password reset requests for this account or from this address", wait)
}

fn throttled(reason: &str, what: &str, wait: roster_identity::throttle::RetryAfter) -> Status {
    let seconds = wait.seconds();
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(std::time::Duration::from_secs(seconds.unsigned_abs())));
    status_with(
        Code::ResourceExhausted,
        reason,
        format!("{what}: try again in {seconds} s"),
        &[("retry_after_seconds", seconds.to_string())],
        details,
    )
}

/// The server `has` too much to take this call now ("has too many calls in flight"):
/// RESOURCE_EXHAUSTED `SERVER_OVERLOADED` with a `RetryInfo`, retry in a second.
pub(crate) fn overloaded(has: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(std::time::Duration::from_secs(1)));
    status_with(
        Code::ResourceExhausted,
        "SERVER_OVERLOADED",
        format!("the server {has}: retry in a second"),
        &[("retry_after_seconds", "1".to_owned())],
        details,
    )
}

/// This server is shutting down: UNAVAILABLE `SHUTTING_DOWN`; the client goes on with another
/// (a watcher resumes from its last cursor).
pub(crate) fn shutting_down() -> Status {
    status(Code::Unavailable, "SHUTTING_DOWN", "the server is shutting down: continue with another one")
}

pub(crate) fn unauthenticated(reason: &str, message: &str) -> Status {
    status(Code::Unauthenticated, reason, message)
}

pub(crate) fn permission_denied(reason: &str, message: impl Into<String>) -> Status {
    status(Code::PermissionDenied, reason, message)
}

/// Collects field violations, so that one answer names every bad field.
#[derive(Default)]
pub(crate) struct Violations(Vec<(String, String)>);

impl Violations {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records `field` as violated unless `result` is `Ok`.
    pub(crate) fn check<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    /// How many violations so far.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push((field.to_owned(), description.into()));
    }

    /// `Ok` when nothing was violated, else INVALID_ARGUMENT naming each field.
    pub(crate) fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(self.into_status())
    }

    /// INVALID_ARGUMENT naming the first [`MAX_VIOLATIONS`] violations; the message counts the rest.
    pub(crate) fn into_status(self) -> Status {
        let total = self.0.len();
        let listed: Vec<(String, String)> = self
            .0
            .into_iter()
            .take(MAX_VIOLATIONS)
            .map(|(field, description)| (clip(field, MAX_TEXT), clip(description, MAX_TEXT)))
            .collect();
        let fields: Vec<&str> = listed.iter().map(|(f, _)| f.as_str()).collect();
        let listing = listed.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; ");
        let mut message = clip(listing, MAX_MESSAGE - 32);
        if total > listed.len() {
            message.push_str(&format!("; and {} more", total - listed.len()));
        }
        let mut details = ErrorDetails::new();
        for (field, description) in &listed {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        status_with(Code::InvalidArgument, "INVALID_FIELD", message, &[("fields", fields.join(","))], details)
    }
}

/// INVALID_ARGUMENT for one field.
pub(crate) fn invalid(field: &str, description: impl Into<String>) -> Status {
    let mut v = Violations::new();
    v.add(field, description);
    v.into_status()
}

/// Unwraps a value whose violation, if any, was recorded (call after [`Violations::finish`]).
pub(crate) fn checked<T>(value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| status(Code::Internal, "INTERNAL", "internal error"))
}

/// Maps a store error to a status; `role_field` names the request field that held a role id.
pub(crate) fn store(err: StoreError) -> Status {
    store_with_role_field(err, "role")
}

pub(crate) fn store_with_role_field(err: StoreError, role_field: &str) -> Status {
    match err {
        StoreError::NotFound(Entity::Role) => {
            let mut details = ErrorDetails::new();
            details.add_bad_request_violation(role_field, "no role with this id in the workspace");
            status_with(
                Code::InvalidArgument,
                "UNKNOWN_ROLE",
                "unknown role",
                &[("fields", role_field.to_owned())],
                details,
            )
        }
        // The caller's own session, revoked while the call ran.
        StoreError::NotFound(Entity::Session) => {
            unauthenticated("SESSION_INVALID", "the session token is unknown, expired or revoked: log in again")
        }
        StoreError::NotFound(entity) => {
            let (reason, kind) = match entity {
                Entity::Workspace => ("WORKSPACE_NOT_FOUND", "roster.v1.Workspace"),
                Entity::User => ("USER_NOT_FOUND", "roster.v1.User"),
                Entity::Session => ("SESSION_INVALID", "session"),
                Entity::Role => ("ROLE_NOT_FOUND", "role"),
                Entity::Team => ("TEAM_NOT_FOUND", "roster.v1.Team"),
                Entity::TeamMember => ("TEAM_MEMBER_NOT_FOUND", "roster.v1.TeamMember"),
                Entity::Conversation => ("CONVERSATION_NOT_FOUND", "roster.v1.ConversationAssignment"),
            };
            let mut details = ErrorDetails::new();
            details.set_resource_info(kind, "", "", format!("{entity} not found"));
            status_with(Code::NotFound, reason, format!("{entity} not found"), &[], details)
        }
        StoreError::Conflict(conflict) => match conflict {
            Conflict::SlugTaken => already_exists("SLUG_TAKEN", "roster.v1.Workspace", "slug", &conflict),
            Conflict::EmailTaken => already_exists("EMAIL_TAKEN", "roster.v1.User", "email", &conflict),
            Conflict::StaleVersion { current } => status_with(
                Code::Aborted,
                "ETAG_MISMATCH",
                "it changed since it was read: read it again and retry with the new etag",
                &[("current_etag", current.to_string())],
                ErrorDetails::new(),
            ),
            Conflict::Busy | Conflict::Changed => {
                status(Code::Aborted, "CONCURRENT_UPDATE", "a concurrent change won: retry the call")
            }
            Conflict::RoleNameTaken => already_exists("ROLE_NAME_TAKEN", "roster.v1.Role", "name", &conflict),
            Conflict::BuiltinRole => precondition("BUILTIN_ROLE", "roster.v1.Role", &conflict, &[]),
            Conflict::RoleInUse { users } => {
                precondition("ROLE_IN_USE", "roster.v1.Role", &conflict, &[("users", users.to_string())])
            }
            Conflict::LastAdmin(_) => precondition("LAST_ADMIN", "roster.v1.User", &conflict, &[]),
            Conflict::TeamNameTaken => already_exists("TEAM_NAME_TAKEN", "roster.v1.Team", "name", &conflict),
            Conflict::AlreadyMember => {
                already_exists("ALREADY_TEAM_MEMBER", "roster.v1.TeamMember", "user_id", &conflict)
            }
            Conflict::TeamHasOpenConversations { open } => precondition(
                "TEAM_HAS_OPEN_CONVERSATIONS",
                "roster.v1.Team",
                &conflict,
                &[("open_conversations", open.to_string())],
            ),
            Conflict::NotEligible(why) => {
                let code = match why {
                    roster_store::NotEligible::NotAMember => "NOT_A_MEMBER",
                    roster_store::NotEligible::Is(roster_assignment::Ineligible::Deactivated) => "DEACTIVATED",
                    roster_store::NotEligible::Is(roster_assignment::Ineligible::Away) => "AWAY",
                    roster_store::NotEligible::Is(roster_assignment::Ineligible::AtCapacity) => "AT_CAPACITY",
                };
                precondition("ASSIGNEE_NOT_ELIGIBLE", "roster.v1.TeamMember", &conflict, &[("why", code.to_owned())])
            }
            Conflict::AlreadyAssigned => {
                precondition("ALREADY_ASSIGNED", "roster.v1.ConversationAssignment", &conflict, &[])
            }
            Conflict::OtherTeam => precondition("OTHER_TEAM", "roster.v1.ConversationAssignment", &conflict, &[]),
            Conflict::Resolved => {
                precondition("CONVERSATION_RESOLVED", "roster.v1.ConversationAssignment", &conflict, &[])
            }
            Conflict::NotQueued => precondition("NOT_QUEUED", "roster.v1.ConversationAssignment", &conflict, &[]),
            Conflict::QueueEmpty => precondition("QUEUE_EMPTY", "roster.v1.Team", &conflict, &[]),
            Conflict::CursorExpired => precondition("CURSOR_EXPIRED", "roster.v1.Event", &conflict, &[]),
            Conflict::LinkInvalid => precondition("LINK_INVALID", "token", &conflict, &[]),
            Conflict::LinkExpired => precondition("LINK_EXPIRED", "token", &conflict, &[]),
            Conflict::NotInvited => precondition("NOT_INVITED", "roster.v1.User", &conflict, &[]),
            Conflict::UserInvited => precondition("USER_INVITED", "roster.v1.User", &conflict, &[]),
            Conflict::UserDeactivated => precondition("USER_NOT_ACTIVE", "roster.v1.User", &conflict, &[]),
            Conflict::OwnAccount => precondition("OWN_ACCOUNT", "roster.v1.User", &conflict, &[]),
            Conflict::SeatLimit { workspace_id, refused } => {
                let mut details = ErrorDetails::new();
                details.add_quota_failure_violation(format!("workspace:{workspace_id}"), refused.to_string());
                status_with(
                    Code::ResourceExhausted,
                    "SEAT_LIMIT_REACHED",
                    format!("{refused}: deactivate a user, upgrade the plan or contact support for more seats"),
                    &seat_numbers(&refused.seats),
                    details,
                )
            }
            Conflict::TooManyInUse(refused) => {
                let mut metadata = seat_numbers(&refused.seats);
                metadata.push(("must_deactivate", refused.seats.over().to_string()));
                precondition("SEATS_IN_USE", "roster.v1.Subscription", &conflict, &metadata)
            }
        },
        StoreError::Refused(rule) => escalation(&rule),
        StoreError::Unavailable(source) => {
            tracing::warn!(error = %error_chain(&source), "database unavailable");
            status(Code::Unavailable, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later")
        }
        StoreError::Database(source) => internal(&source),
        StoreError::Corrupt(what) => {
            tracing::error!(what, "stored data is corrupt");
            status(Code::Internal, "INTERNAL", "internal error")
        }
    }
}

/// A seat decision's numbers, as `ErrorInfo` metadata.
fn seat_numbers(seats: &roster_store::Seats) -> Vec<(&'static str, String)> {
    vec![
        ("plan", seats.plan.as_str().to_owned()),
        ("seat_limit", seats.limit.to_string()),
        ("seats_used", seats.used.to_string()),
    ]
}

/// PERMISSION_DENIED `ESCALATION`: what the caller would need and lacks.
pub(crate) fn escalation(rule: &roster_authz::Escalation) -> Status {
    let missing: Vec<String> = rule.missing.iter().map(|(p, s)| format!("{p}:{}", s.as_str())).collect();
    status_with(
        Code::PermissionDenied,
        "ESCALATION",
        rule.to_string(),
        &[("missing", missing.join(",")), ("admin_only", rule.admin_only.to_string())],
        ErrorDetails::new(),
    )
}

/// FAILED_PRECONDITION with a PreconditionFailure violation of type `reason` on `subject`.
fn precondition(reason: &str, subject: &str, conflict: &Conflict, metadata: &[(&str, String)]) -> Status {
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(reason, subject, conflict.to_string());
    status_with(Code::FailedPrecondition, reason, conflict.to_string(), metadata, details)
}

fn already_exists(reason: &str, kind: &str, field: &str, conflict: &Conflict) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(kind, "", "", conflict.to_string());
    status_with(Code::AlreadyExists, reason, conflict.to_string(), &[("field", field.to_owned())], details)
}

/// Logs a bug with its whole cause chain and answers a generic INTERNAL.
pub(crate) fn internal(err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %error_chain(err), "internal error");
    status(Code::Internal, "INTERNAL", "internal error")
}

/// An error and its causes on one line: `err: cause: cause …`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lists_twenty_violations_and_counts_the_rest() {
        let mut v = Violations::new();
        for i in 0..1001 {
            v.add(&format!("update_mask.paths[{i}]"), "unknown or read-only path");
        }
        let status = v.into_status();
        let details = status.get_error_details();
        assert_eq!(details.bad_request().expect("BadRequest").field_violations.len(), 20);
        assert!(status.message().ends_with("; and 981 more"), "{}", status.message());
        let fields = &details.error_info().expect("ErrorInfo").metadata["fields"];
        assert_eq!(fields.split(',').count(), 20);
    }

    #[test]
    fn quoted_request_text_is_clipped_so_the_status_fits_in_headers() {
        let huge = "é".repeat(50_000);
        let status = invalid("name", format!("{huge:?} is taken"));
        assert!(status.message().len() <= MAX_MESSAGE, "{}", status.message().len());
        let details = status.get_error_details();
        let violation = &details.bad_request().expect("BadRequest").field_violations[0];
        assert!(violation.description.len() <= MAX_TEXT && violation.description.ends_with('…'));
        let plain = status_with(Code::NotFound, "X", huge.clone(), &[("value", huge)], ErrorDetails::new());
        assert!(plain.message().len() <= MAX_MESSAGE);
        assert!(plain.get_error_details().error_info().expect("info").metadata["value"].len() <= MAX_MESSAGE);
        assert_eq!(clip("short".into(), 10), "short");
    }
}
