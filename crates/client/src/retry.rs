//! Sending a call again, only when that cannot do a thing twice.
//!
//! Two questions decide a retry, and both must answer yes:
//!
//! 1. Is the request safe to send twice? That is a property of the request, known before it is sent:
//!    [`RetrySafe`], implemented only for the request messages where a second copy changes nothing
//!    the first did not. A request type without it does not compile with [`retry`].
//! 2. Did the attempt fail in a way that a later attempt may not? That is [`Error::is_transient`]:
//!    UNAVAILABLE, or RESOURCE_EXHAUSTED `SERVER_OVERLOADED`. Everything else is final
//!    (PERMISSION_DENIED, INVALID_ARGUMENT, a throttled login, a seat limit…).
//!
//! UNAVAILABLE does not say whether the server acted before the connection broke, which is why the
//! first question matters even for a transient failure.

use crate::Error;
use roster_proto::v1;
use std::future::Future;
use std::time::Duration;
use tonic::Status;

/// How often and how far apart a retry-safe call is tried.
///
/// The wait after the n-th failed attempt is drawn between half and all of
/// `first_delay × 2ⁿ⁻¹` (at most `max_delay`), so that many clients failing together do not come back
/// together; never less than the server's `RetryInfo` asked for. Each attempt has the client's
/// deadline of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    max_attempts: u32,
    first_delay: Duration,
    max_delay: Duration,
}

impl Retry {
    /// Up to `max_attempts` attempts in all (at least one), 100 ms then doubling up to 2 s apart.
    pub const fn new(max_attempts: u32) -> Self {
        Retry {
            max_attempts: if max_attempts == 0 { 1 } else { max_attempts },
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    /// One attempt: no retry at all.
    pub const fn never() -> Self {
        Retry::new(1)
    }

    /// The same attempts, waiting `first` after the first failure, doubling up to `max`.
    pub const fn with_delays(self, first: Duration, max: Duration) -> Self {
        Retry { first_delay: first, max_delay: max, ..self }
    }

    /// The most attempts a call gets, the first included.
    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long to wait after failed attempt number `attempt` (from 1), given what the server asked
    /// for and `random`, a number in `[0, 1]` that spreads clients apart.
    pub fn delay(&self, attempt: u32, server_asked: Option<Duration>, random: f64) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let ceiling = self.first_delay.saturating_mul(factor).min(self.max_delay);
        let jittered = ceiling.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0));
        jittered.max(server_asked.unwrap_or_default())
    }
}

/// Four attempts, 100 ms then doubling up to 2 s apart: about 1.5 s at most before the last one
/// (longer only when the server asks for it).
impl Default for Retry {
    fn default() -> Self {
        Retry::new(4)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A request message that may be sent more than once with the effect of sending it once.
///
/// Implemented (and sealed: the list is this crate's to keep honest) for:
///
/// - reads, always: every `Get*`, `List*` and `Check*` request, `WhoAmI`, `WatchEvents` (opening
///   the stream; reading it is the caller's loop) — including `ListPermissions`, `ListPlans` and
///   `GetSubscription`. A read changes nothing, so a second one can only see newer data.
/// - creates that carry an idempotency key, only when `request_id` is set: `CreateWorkspace`,
///   `CreateUser` and `ReactivateUser`. The server answers a repeated key with the first answer
///   instead of acting again. Without a key the call is tried once.
///
/// Not implemented, so never retried: every other write. `CreateTeam`, `CreateRole` and
/// `AssignConversation` have no `request_id`: a second attempt after a lost answer could create a
/// second team or role, or reopen a conversation resolved in between and report `changed: false`
/// for an assignment that did happen. Logins and password resets count every attempt against their
/// throttles, and updates are guarded by etags that the caller, not a retry loop, must refresh.
pub trait RetrySafe: sealed::Sealed {
    /// Whether this request, as filled in, is safe to send again.
    fn retry_safe(&self) -> bool;
}

macro_rules! retry_safe {
    (reads: $($read:ident),+; keyed: $($keyed:ident),+ $(,)?) => {
        $(
            impl sealed::Sealed for v1::$read {}
            impl RetrySafe for v1::$read {
                fn retry_safe(&self) -> bool {
                    true
                }
            }
        )+
        $(
            impl sealed::Sealed for v1::$keyed {}
            impl RetrySafe for v1::$keyed {
                fn retry_safe(&self) -> bool {
                    !self.request_id.is_empty()
                }
            }
        )+
        /// The request messages safe to send again, by name, for the test that compares them with the protos.
        #[cfg(test)]
        const READS: &[&str] = &[$(stringify!($read)),+];
        #[cfg(test)]
        const KEYED: &[&str] = &[$(stringify!($keyed)),+];
    };
}

retry_safe! {
    reads:
        GetWorkspaceRequest,
        GetUserRequest, ListUsersRequest,
        ListPermissionsRequest, GetRoleRequest, ListRolesRequest,
        GetTeamRequest, ListTeamsRequest, ListTeamMembersRequest,
        GetConversationAssignmentRequest, ListConversationAssignmentsRequest,
        CheckPermissionRequest, CheckPermissionsRequest, ListEffectivePermissionsRequest,
        WhoAmIRequest,
        ListEventsRequest, WatchEventsRequest,
        ListPlansRequest, GetSubscriptionRequest,
        ListAuditEventsRequest;
    keyed:
        CreateWorkspaceRequest, CreateUserRequest, ReactivateUserRequest,
}

/// Sends `request` through `call` until it succeeds, fails for good, or `policy`'s attempts are used up.
///
/// `call` gets a fresh copy of the request for each attempt and makes one gRPC call with it. Only
/// [`RetrySafe`] requests are accepted, and one that is not safe as filled in (a create without
/// `request_id`) gets a single attempt. Only transient failures ([`Error::is_transient`]) are
/// retried.
///
/// ```no_run
/// # async fn example(client: roster_client::Client, workspace_id: String, user_id: String) -> Result<(), roster_client::Error> {
/// use roster_client::{Retry, proto::v1::GetUserRequest};
///
/// let users = client.users();
/// let request = GetUserRequest { workspace_id, user_id };
/// let user = roster_client::retry(&Retry::default(), request, |request| {
///     let mut users = users.clone();
///     async move { users.get_user(request).await }
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// A request that is not safe to repeat does not compile:
///
/// ```compile_fail
/// # async fn example(client: roster_client::Client) {
/// use roster_client::{Retry, proto::v1::CreateTeamRequest};
///
/// let teams = client.teams();
/// let _ = roster_client::retry(&Retry::default(), CreateTeamRequest::default(), |request| {
///     let mut teams = teams.clone();
///     async move { teams.create_team(request).await }
/// })
/// .await;
/// # }
/// ```
pub async fn retry<M, T, F, Fut>(policy: &Retry, request: M, mut call: F) -> Result<T, Error>
where
    M: RetrySafe + Clone,
    F: FnMut(M) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let attempts = if request.retry_safe() { policy.max_attempts } else { 1 };
    let mut attempt = 1;
    loop {
        let error = match call(request.clone()).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => Error::from(status),
        };
        if attempt >= attempts || !error.is_transient() {
            return Err(error);
        }
        let wait = policy.delay(attempt, error.retry_after(), random_unit());
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, %error, "retrying a Roster call");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// A number in `[0, 1)` for jitter. Each `RandomState` is keyed differently (randomly seeded per
/// thread, then counted up), which is plenty to spread retries apart without a dependency on a
/// random number generator.
fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::BTreeSet;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_wait_doubles_up_to_the_maximum_and_jitter_keeps_at_least_half() {
        let policy = Retry::new(10).with_delays(100 * MS, 1000 * MS);
        assert_eq!(policy.delay(1, None, 1.0), 100 * MS);
        assert_eq!(policy.delay(1, None, 0.0), 50 * MS);
        assert_eq!(policy.delay(2, None, 1.0), 200 * MS);
        assert_eq!(policy.delay(3, None, 1.0), 400 * MS);
        assert_eq!(policy.delay(5, None, 1.0), 1000 * MS);
        assert_eq!(policy.delay(u32::MAX, None, 1.0), 1000 * MS);
        assert_eq!(policy.delay(u32::MAX, None, 0.0), 500 * MS);
    }

    #[test]
    fn the_wait_is_never_shorter_than_the_server_asked() {
        let policy = Retry::default();
        assert_eq!(policy.delay(1, Some(Duration::from_secs(1)), 0.3), Duration::from_secs(1));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(30)), 1.0), Duration::from_secs(30));
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(Retry::new(0).max_attempts(), 1);
        assert_eq!(Retry::never().max_attempts(), 1);
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }

    /// The protos decide what is safe: every read RPC, and every other RPC whose request carries a
    /// `request_id` idempotency key. When a proto gains a read or a key, this fails until the list
    /// above follows.
    #[test]
    fn the_retry_safe_requests_are_the_reads_and_the_keyed_creates_of_the_protos() {
        let set = prost_types::FileDescriptorSet::decode(roster_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let messages: Vec<_> = set.file.iter().flat_map(|file| &file.message_type).collect();
        let has_request_id =
            |name: &str| messages.iter().any(|m| m.name() == name && m.field.iter().any(|f| f.name() == "request_id"));
        let (mut reads, mut keyed) = (BTreeSet::new(), BTreeSet::new());
        for method in set.file.iter().flat_map(|file| &file.service).flat_map(|service| &service.method) {
            let input = method.input_type().trim_start_matches(".roster.v1.");
            let name = method.name();
            if ["Get", "List", "Check", "Watch"].iter().any(|verb| name.starts_with(verb)) || name == "WhoAmI" {
                reads.insert(input);
            } else if has_request_id(input) {
                keyed.insert(input);
            }
        }
        assert_eq!(READS.iter().copied().collect::<BTreeSet<_>>(), reads);
        assert_eq!(KEYED.iter().copied().collect::<BTreeSet<_>>(), keyed);
    }
}
