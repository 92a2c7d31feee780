//! Roster's error statuses as a Rust type: the code, the stable reason and the details.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo` domain of every Roster error.
pub const DOMAIN: &str = "roster";

/// Declares [`Reason`] with its wire names once, so that parsing and printing cannot disagree.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Why Roster refused a call: the `reason` of the status's `ErrorInfo` (domain `roster`).
        ///
        /// Every reason in `docs/ERRORS.md` has a variant. The list grows as the server does, so the
        /// enum is `#[non_exhaustive]`, and a reason this version does not know yet parses to
        /// [`Reason::Unknown`] with its name: match the reasons you handle and keep a `_` arm.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
            /// A reason this version of the client does not know, by its wire name.
            Unknown(String),
        }

        impl Reason {
            /// The reason named `name` (`"SLUG_TAKEN"`); [`Reason::Unknown`] when it is not one this
            /// version knows.
            pub fn parse(name: &str) -> Reason {
                match name {
                    $($name => Reason::$variant,)*
                    other => Reason::Unknown(other.to_owned()),
                }
            }

            /// The wire name, as in `docs/ERRORS.md` (`"SLUG_TAKEN"`).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$variant => $name,)*
                    Reason::Unknown(name) => name,
                }
            }
        }
    };
}

reasons! {
    /// INVALID_ARGUMENT: request fields are malformed; see [`Error::field_violations`].
    InvalidField = "INVALID_FIELD",
    /// INVALID_ARGUMENT: a well-formed role id that names no role of the workspace.
    UnknownRole = "UNKNOWN_ROLE",
    /// INVALID_ARGUMENT: `ChangePassword`'s current password does not match.
    CurrentPasswordIncorrect = "CURRENT_PASSWORD_INCORRECT",
    /// UNAUTHENTICATED: no `authorization` header.
    CredentialsMissing = "CREDENTIALS_MISSING",
    /// UNAUTHENTICATED: the `authorization` header is not `Bearer <secret>`.
    CredentialsMalformed = "CREDENTIALS_MALFORMED",
    /// UNAUTHENTICATED: a session token no live session has; log in again.
    SessionInvalid = "SESSION_INVALID",
    /// UNAUTHENTICATED: neither a session token nor a configured service key.
    CredentialsInvalid = "CREDENTIALS_INVALID",
    /// UNAUTHENTICATED: `Login` with a wrong workspace, email or password.
    InvalidCredentials = "INVALID_CREDENTIALS",
    /// RESOURCE_EXHAUSTED: too many failed logins; see [`Error::retry_after`]. Never retried automatically.
    LoginThrottled = "LOGIN_THROTTLED",
    /// RESOURCE_EXHAUSTED: too many password reset requests; see [`Error::retry_after`].
    ResetThrottled = "RESET_THROTTLED",
    /// PERMISSION_DENIED: `Login` of a deactivated user.
    UserDeactivated = "USER_DEACTIVATED",
    /// PERMISSION_DENIED: the caller's role lacks the permission in `metadata("permission")`.
    PermissionDenied = "PERMISSION_DENIED",
    /// PERMISSION_DENIED: the call would give away permissions the caller lacks (`metadata("missing")`).
    Escalation = "ESCALATION",
    /// PERMISSION_DENIED: a person asked a permission question about someone else.
    SelfOnly = "SELF_ONLY",
    /// PERMISSION_DENIED: only service keys may make this call.
    ServiceKeyRequired = "SERVICE_KEY_REQUIRED",
    /// PERMISSION_DENIED: a scoped service key called a method or workspace outside its scope.
    ServiceKeyOutOfScope = "SERVICE_KEY_OUT_OF_SCOPE",
    /// PERMISSION_DENIED: a person named another workspace than their own.
    WorkspaceMismatch = "WORKSPACE_MISMATCH",
    /// PERMISSION_DENIED: only a person (a session) may make this call.
    PersonRequired = "PERSON_REQUIRED",
    /// NOT_FOUND: no such workspace.
    WorkspaceNotFound = "WORKSPACE_NOT_FOUND",
    /// NOT_FOUND: no such user in the workspace.
    UserNotFound = "USER_NOT_FOUND",
    /// NOT_FOUND: no such role in the workspace.
    RoleNotFound = "ROLE_NOT_FOUND",
    /// NOT_FOUND: no such team in the workspace.
    TeamNotFound = "TEAM_NOT_FOUND",
    /// NOT_FOUND: the user is not a member of the team.
    TeamMemberNotFound = "TEAM_MEMBER_NOT_FOUND",
    /// NOT_FOUND: Roster was never asked to assign this conversation.
    ConversationNotFound = "CONVERSATION_NOT_FOUND",
    /// ALREADY_EXISTS: another workspace has the slug.
    SlugTaken = "SLUG_TAKEN",
    /// ALREADY_EXISTS: a user of the workspace has the email.
    EmailTaken = "EMAIL_TAKEN",
    /// ALREADY_EXISTS: another role of the workspace has the name.
    RoleNameTaken = "ROLE_NAME_TAKEN",
    /// ALREADY_EXISTS: another team of the workspace has the name.
    TeamNameTaken = "TEAM_NAME_TAKEN",
    /// ALREADY_EXISTS: the user is already a member of the team.
    AlreadyTeamMember = "ALREADY_TEAM_MEMBER",
    /// FAILED_PRECONDITION: the team still has open conversations.
    TeamHasOpenConversations = "TEAM_HAS_OPEN_CONVERSATIONS",
    /// FAILED_PRECONDITION: the named assignee cannot take the conversation (`metadata("why")`).
    AssigneeNotEligible = "ASSIGNEE_NOT_ELIGIBLE",
    /// FAILED_PRECONDITION: already assigned to someone else; set `transfer` to move it.
    AlreadyAssigned = "ALREADY_ASSIGNED",
    /// FAILED_PRECONDITION: the open conversation belongs to another team; set `transfer` to move it.
    OtherTeam = "OTHER_TEAM",
    /// FAILED_PRECONDITION: the conversation is not waiting in the team's queue.
    NotQueued = "NOT_QUEUED",
    /// FAILED_PRECONDITION: the team's queue is empty.
    QueueEmpty = "QUEUE_EMPTY",
    /// FAILED_PRECONDITION: the conversation is resolved.
    ConversationResolved = "CONVERSATION_RESOLVED",
    /// FAILED_PRECONDITION: the change feed cursor is older than the feed keeps.
    CursorExpired = "CURSOR_EXPIRED",
    /// FAILED_PRECONDITION: the password link was used, replaced, voided or never issued.
    LinkInvalid = "LINK_INVALID",
    /// FAILED_PRECONDITION: the password link is too old.
    LinkExpired = "LINK_EXPIRED",
    /// FAILED_PRECONDITION: the user has a password already.
    NotInvited = "NOT_INVITED",
    /// FAILED_PRECONDITION: the user has not accepted their invitation yet.
    UserInvited = "USER_INVITED",
    /// FAILED_PRECONDITION: not on the caller's own account.
    OwnAccount = "OWN_ACCOUNT",
    /// FAILED_PRECONDITION: the user is deactivated.
    UserNotActive = "USER_NOT_ACTIVE",
    /// FAILED_PRECONDITION: built-in roles cannot be changed or deleted.
    BuiltinRole = "BUILTIN_ROLE",
    /// FAILED_PRECONDITION: users still hold the role (`metadata("users")`).
    RoleInUse = "ROLE_IN_USE",
    /// RESOURCE_EXHAUSTED: every seat of the plan is taken (`metadata("seat_limit")`, `metadata("seats_used")`).
    SeatLimitReached = "SEAT_LIMIT_REACHED",
    /// FAILED_PRECONDITION: the new plan or extra seats would not hold everyone active.
    SeatsInUse = "SEATS_IN_USE",
    /// FAILED_PRECONDITION: the change would leave the workspace without an active admin.
    LastAdmin = "LAST_ADMIN",
    /// ABORTED: the etag is stale (`metadata("current_etag")`); read again and retry.
    EtagMismatch = "ETAG_MISMATCH",
    /// ABORTED: the write collided with a concurrent one; the whole call may be retried.
    ConcurrentUpdate = "CONCURRENT_UPDATE",
    /// UNAVAILABLE: the database cannot be reached right now.
    DatabaseUnavailable = "DATABASE_UNAVAILABLE",
    /// INTERNAL: a bug on the server.
    Internal = "INTERNAL",
    /// UNAVAILABLE: the server is shutting down; a watch resumes from its last cursor elsewhere.
    ShuttingDown = "SHUTTING_DOWN",
    /// DEADLINE_EXCEEDED: the call ran longer than the server's limit.
    RequestTimeout = "REQUEST_TIMEOUT",
    /// INVALID_ARGUMENT: the request body does not decode.
    MalformedRequest = "MALFORMED_REQUEST",
    /// RESOURCE_EXHAUSTED: the request body is larger than the service accepts.
    MessageTooLarge = "MESSAGE_TOO_LARGE",
    /// UNIMPLEMENTED: no such service or method on this server.
    MethodNotFound = "METHOD_NOT_FOUND",
    /// RESOURCE_EXHAUSTED: the server sheds load; see [`Error::retry_after`].
    ServerOverloaded = "SERVER_OVERLOADED",
    /// CANCELLED, answered by the transport.
    Cancelled = "CANCELLED",
    /// DEADLINE_EXCEEDED, answered by the transport.
    DeadlineExceeded = "DEADLINE_EXCEEDED",
    /// Another code answered by the transport rather than by Roster.
    TransportError = "TRANSPORT_ERROR",
}

impl Reason {
    /// The reason of a Roster status: `None` when it carries no `ErrorInfo` of the `roster` domain,
    /// as when the client itself failed (no connection, the client's deadline passed).
    pub fn from_status(status: &Status) -> Option<Reason> {
        reason_of(&status.get_error_details())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn reason_of(details: &ErrorDetails) -> Option<Reason> {
    details.error_info().filter(|info| info.domain == DOMAIN).map(|info| Reason::parse(&info.reason))
}

/// A failed Roster call: the gRPC status, with its reason and details decoded once.
///
/// Match on [`Error::code`] and [`Error::reason`]; the message is for people and may change.
pub struct Error(Box<Inner>);

struct Inner {
    status: Status,
    reason: Option<Reason>,
    details: ErrorDetails,
}

impl Error {
    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.0.status.code()
    }

    /// The reason, when the status came from Roster (see [`Reason::from_status`]).
    pub fn reason(&self) -> Option<&Reason> {
        self.0.reason.as_ref()
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        self.0.status.message()
    }

    /// A value of the `ErrorInfo` metadata: `metadata("seat_limit")`, `metadata("permission")`…
    /// (`docs/ERRORS.md` lists them per reason).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.error_metadata()?.get(key).map(String::as_str)
    }

    /// The bad request fields of an `INVALID_FIELD` (or `UNKNOWN_ROLE`, `CURRENT_PASSWORD_INCORRECT`) answer.
    pub fn field_violations(&self) -> &[FieldViolation] {
        self.0.details.bad_request().map_or(&[], |bad| bad.field_violations.as_slice())
    }

    /// How long the server asked to wait before trying again (`RetryInfo`), on `SERVER_OVERLOADED`,
    /// `LOGIN_THROTTLED` and `RESET_THROTTLED`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.details.retry_info().and_then(|info| info.retry_delay)
    }

    /// The `x-request-id` the server answered with: quote it when asking about a call.
    pub fn request_id(&self) -> Option<&str> {
        self.0.status.metadata().get("x-request-id").and_then(|value| value.to_str().ok())
    }

    /// Whether the same call may succeed if sent again unchanged: UNAVAILABLE (the database, the
    /// server or the connection is down for a moment) or RESOURCE_EXHAUSTED `SERVER_OVERLOADED`
    /// (load shedding). Only calls that are safe to repeat should be (see [`crate::RetrySafe`]).
    pub fn is_transient(&self) -> bool {
        match self.code() {
            Code::Unavailable => true,
            Code::ResourceExhausted => self.reason() == Some(&Reason::ServerOverloaded),
            _ => false,
        }
    }

    /// The whole decoded details (`ResourceInfo`, `QuotaFailure`, `PreconditionFailure`…).
    pub fn details(&self) -> &ErrorDetails {
        &self.0.details
    }

    /// The status as received.
    pub fn status(&self) -> &Status {
        &self.0.status
    }

    /// The status as received, for code that works with tonic's type.
    pub fn into_status(self) -> Status {
        self.0.status
    }

    fn error_metadata(&self) -> Option<&HashMap<String, String>> {
        self.0.details.error_info().filter(|info| info.domain == DOMAIN).map(|info| &info.metadata)
    }
}

/// `InvalidArgument INVALID_FIELD: slug: slug must be 3 to 63 characters`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{:?} {reason}: {}", self.code(), self.message()),
            None => write!(f, "{:?}: {}", self.code(), self.message()),
        }
    }
}

impl std::error::Error for Error {}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let reason = reason_of(&details);
        Error(Box::new(Inner { status, reason, details }))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code())
            .field("reason", &self.reason())
            .field("message", &self.message())
            .field("details", &self.0.details)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster_status(code: Code, reason: &str, metadata: &[(&str, &str)], mut details: ErrorDetails) -> Status {
        let metadata = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>();
        details.set_error_info(reason, DOMAIN, metadata);
        Status::with_error_details(code, "refused", details)
    }

    #[test]
    fn every_reason_prints_as_it_parses() {
        for name in ["SLUG_TAKEN", "SERVICE_KEY_OUT_OF_SCOPE", "TRANSPORT_ERROR", "NOT_YET_INVENTED"] {
            assert_eq!(Reason::parse(name).as_str(), name);
        }
        assert_eq!(Reason::parse("NOT_YET_INVENTED"), Reason::Unknown("NOT_YET_INVENTED".to_owned()));
    }

    #[test]
    fn a_status_without_roster_error_info_has_no_reason() {
        assert_eq!(Reason::from_status(&Status::unavailable("tcp connect error")), None);
        let mut details = ErrorDetails::new();
        details.set_error_info("SLUG_TAKEN", "example.com", HashMap::new());
        let foreign = Status::with_error_details(Code::AlreadyExists, "taken", details);
        assert_eq!(Reason::from_status(&foreign), None);
    }

    #[test]
    fn an_error_exposes_its_reason_metadata_and_details() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("slug", "slug must be 3 to 63 characters");
        let error = Error::from(roster_status(Code::InvalidArgument, "INVALID_FIELD", &[("fields", "slug")], details));
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.reason(), Some(&Reason::InvalidField));
        assert_eq!(error.metadata("fields"), Some("slug"));
        assert_eq!(error.metadata("absent"), None);
        assert_eq!(error.field_violations().len(), 1);
        assert_eq!(error.field_violations()[0].field, "slug");
        assert_eq!(error.retry_after(), None);
        assert_eq!(error.to_string(), "InvalidArgument INVALID_FIELD: refused");
        assert!(!error.is_transient());
    }

    #[test]
    fn only_unavailable_and_load_shedding_are_transient() {
        let overloaded = Error::from(roster_status(
            Code::ResourceExhausted,
            "SERVER_OVERLOADED",
            &[("retry_after_seconds", "1")],
            ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
        ));
        assert!(overloaded.is_transient());
        assert_eq!(overloaded.retry_after(), Some(Duration::from_secs(1)));
        let cases = [
            (Code::Unavailable, "DATABASE_UNAVAILABLE", true),
            (Code::Unavailable, "SHUTTING_DOWN", true),
            (Code::ResourceExhausted, "LOGIN_THROTTLED", false),
            (Code::ResourceExhausted, "RESET_THROTTLED", false),
            (Code::ResourceExhausted, "SEAT_LIMIT_REACHED", false),
            (Code::PermissionDenied, "PERMISSION_DENIED", false),
            (Code::InvalidArgument, "INVALID_FIELD", false),
            (Code::Aborted, "CONCURRENT_UPDATE", false),
            (Code::DeadlineExceeded, "REQUEST_TIMEOUT", false),
        ];
        for (code, reason, transient) in cases {
            let error = Error::from(roster_status(code, reason, &[], ErrorDetails::new()));
            assert_eq!(error.is_transient(), transient, "{reason}");
        }
        assert!(Error::from(Status::unavailable("tcp connect error")).is_transient());
    }
}
