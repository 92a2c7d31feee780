//! Who is calling: service keys and session tokens resolved into a [`Caller`], and the bcrypt work
//! that logins and new passwords need, kept off the async workers.

use crate::context::Credential;
use crate::error::{self, unauthenticated};
use crate::keys::{self, Beyond, Keys, ServiceKey};
use prometheus_client::metrics::counter::Counter;
use roster_identity::{BcryptCost, Password, PasswordHash, SessionToken, TokenHash};
use roster_store::{Actor, Context, Store, User};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OnceCell, Semaphore};
use tonic::{Code, Status};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) request_id: String,
    /// The method called, as its path (`/roster.v1.UserService/CreateUser`).
    pub(crate) method: Arc<str>,
}

/// Whom a call acts for.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// An internal service, by its key: any workspace it names, unless the key is bound to one.
    Service(Arc<ServiceKey>),
    /// A person, through a session.
    User { user: User, token: TokenHash, expires_at: i64 },
}

impl Caller {
    /// The audit facts of a change made now by this caller.
    pub(crate) fn context(&self) -> Context {
        Context { actor: self.actor(), request_id: self.request_id.clone(), now: now_millis() }
    }

    fn actor(&self) -> Actor {
        match &self.principal {
            Principal::Service(key) => Actor::Service(key.name.clone()),
            Principal::User { user, .. } => Actor::User(user.id.clone()),
        }
    }

    /// The signed-in user, if a person is calling.
    pub(crate) fn user(&self) -> Option<&User> {
        match &self.principal {
            Principal::User { user, .. } => Some(user),
            Principal::Service(_) => None,
        }
    }

    /// The service key calling, if a service is.
    pub(crate) fn service_key(&self) -> Option<&ServiceKey> {
        match &self.principal {
            Principal::Service(key) => Some(key),
            Principal::User { .. } => None,
        }
    }

    /// The workspace a call addresses: a person's own (when `requested` is empty or names it),
    /// never another; a service key must name one, unless it is bound to one (then that one).
    /// Whether a bound key may reach `requested` is decided before, by [`ServiceKey::reaches`].
    pub(crate) fn workspace(&self, requested: &str) -> Result<String, Status> {
        match &self.principal {
            Principal::Service(key) if requested.is_empty() && key.workspace_id().is_some() => {
                Ok(key.workspace_id().unwrap_or_default().to_owned())
            }
            Principal::Service(_) if requested.is_empty() => {
                Err(error::invalid("workspace_id", "required when calling with a service key"))
            }
            Principal::Service(_) if !crate::api::is_record_id(requested) => {
                Err(error::invalid("workspace_id", "not an id this server issued"))
            }
            Principal::Service(_) => Ok(requested.to_owned()),
            Principal::User { user, .. } if requested.is_empty() || requested == user.workspace_id => {
                Ok(user.workspace_id.clone())
            }
            Principal::User { .. } => {
                Err(error::permission_denied("WORKSPACE_MISMATCH", "a person can only reach their own workspace"))
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Roster methods that need no caller: they take what a person without a session has.
const OPEN: [&str; 3] = [
    "/roster.v1.AuthService/Login",
    "/roster.v1.AuthService/RequestPasswordReset",
    "/roster.v1.AuthService/SetPasswordWithToken",
];

/// Resolves credentials into callers, for the request-context layer: before a request's body is
/// read, so that nobody unauthenticated makes the server decode anything.
pub(crate) struct Authenticator {
    store: Store,
    keys: Arc<Keys>,
    /// The methods that need a caller: every Roster method but the [`OPEN`] ones. Health, reflection and
    /// paths that name no method (answered UNIMPLEMENTED) need none.
    protected: HashSet<Arc<str>>,
}

impl Authenticator {
    pub(crate) fn new(store: Store, keys: Arc<Keys>) -> Self {
        let protected = crate::metrics::method_paths(roster_proto::FILE_DESCRIPTOR_SET)
            .filter(|path| !OPEN.contains(&path.as_str()))
            .map(Arc::from)
            .collect();
        Self { store, keys, protected }
    }

    /// Whether `path` is a Roster method without a caller (Login and its kin).
    pub(crate) fn is_open(&self, path: &str) -> bool {
        OPEN.contains(&path)
    }

    /// The method at `path` when a call of it needs a caller.
    pub(crate) fn protects(&self, path: &str) -> Option<Arc<str>> {
        self.protected.get(path).cloned()
    }

    /// The caller `credential` stands for: a live session's person, or a configured service key
    /// that may call `method`.
    pub(crate) async fn authenticate(
        &self,
        credential: Credential,
        request_id: String,
        method: Arc<str>,
    ) -> Result<Caller, Status> {
        let secret = match credential {
            Credential::Missing => {
                return Err(unauthenticated(
                    "CREDENTIALS_MISSING",
                    "send `authorization: Bearer <session token or service key>`",
                ));
            }
            Credential::Malformed => {
                return Err(unauthenticated(
                    "CREDENTIALS_MALFORMED",
                    "the authorization header must be `Bearer <secret>`",
                ));
            }
            Credential::Bearer(secret) => secret,
        };
        if let Ok(token) = SessionToken::parse(&secret) {
            return session_caller(&self.store, token.hash(), request_id, method).await;
        }
        match self.keys.current().find(&secret) {
            Some(key) if !key.allows(&method) => {
                let caller = Caller { principal: Principal::Service(key.clone()), request_id, method };
                Err(keys::refuse(&self.store, &key, &caller.context(), &caller.method, Beyond::Method).await)
            }
            Some(key) => Ok(Caller { principal: Principal::Service(key), request_id, method }),
            None => Err(unauthenticated(
                "CREDENTIALS_INVALID",
                "the bearer secret is neither a session token nor a service key",
            )),
        }
    }
}

/// The person a session token's hash stands for, as they are now: refused if the session is
/// unknown, expired or revoked.
pub(crate) async fn session_caller(
    store: &Store,
    token: TokenHash,
    request_id: String,
    method: Arc<str>,
) -> Result<Caller, Status> {
    match store.session(&token, now_millis()).await.map_err(error::store)? {
        Some(session) => Ok(Caller {
            principal: Principal::User { user: session.user, token, expires_at: session.expires_at },
            request_id,
            method,
        }),
        None => {
            Err(unauthenticated("SESSION_INVALID", "the session token is unknown, expired or revoked: log in again"))
        }
    }
}

/// What a bcrypt computation is for. Logins have a queue of their own, so that a flood of other
/// password work (new users, password changes) cannot starve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Login,
    Account,
}

/// bcrypt, off the async workers, at most one computation per core at a time: more would only
/// queue in the operating system while holding blocking threads. Calls wait for a core in a
/// queue of bounded length per [`Lane`]; past it they are refused at once with RESOURCE_EXHAUSTED
/// `SERVER_OVERLOADED` and a `RetryInfo`, instead of piling up. A fixed hash at the configured
/// cost stands in when there is no user, so that an unknown email costs the same work as a wrong
/// password.
pub(crate) struct Hasher {
    cost: BcryptCost,
    dummy: Arc<OnceCell<PasswordHash>>,
    /// How many hashes and verifications were computed (the metrics' counters).
    hashed: Counter,
    verified: Counter,
    cores: Arc<Semaphore>,
    /// Calls waiting for a core, per lane, and how many may wait.
    waiting: Arc<[AtomicUsize; 2]>,
    queue: usize,
}

/// A place in a lane's queue, given back however the wait ends (a cancelled call included).
struct Waiting(Arc<[AtomicUsize; 2]>, usize);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hasher {
    /// A hasher at `cost`, running on `cores` cores with `queue` calls waiting per lane, that
    /// counts its work on `(hashed, verified)`.
    pub(crate) fn new(cost: BcryptCost, cores: usize, queue: usize, (hashed, verified): (Counter, Counter)) -> Self {
        Self {
            cost,
            dummy: Arc::new(OnceCell::new()),
            hashed,
            verified,
            cores: Arc::new(Semaphore::new(cores.max(1))),
            waiting: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
            queue,
        }
    }

    /// The cost new hashes are made at.
    pub(crate) fn cost(&self) -> BcryptCost {
        self.cost
    }

    /// Computes the dummy hash in the background, so that start-up does not wait for it.
    pub(crate) fn warm_up(self: &Arc<Self>) {
        let hasher = self.clone();
        tokio::spawn(async move {
            let _ = hasher.dummy().await;
        });
    }

    async fn dummy(&self) -> Result<PasswordHash, Status> {
        let make = || async {
            let password = Password::candidate("no-such-user-password").ok_or_else(placeholder_refused)?;
            self.hash(Lane::Login, password).await
        };
        self.dummy.get_or_try_init(make).await.cloned()
    }

    /// Runs `work` on a core once one is free, waiting in `lane`'s queue.
    async fn run<T: Send + 'static>(&self, lane: Lane, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
        let index = lane as usize;
        let waiting = Waiting(self.waiting.clone(), index);
        if self.waiting[index].fetch_add(1, Ordering::AcqRel) >= self.queue {
            return Err(error::overloaded("has too much password work queued"));
        }
        let core = self.cores.clone().acquire_owned().await.map_err(|e| error::internal(&e))?;
        drop(waiting);
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(core);
            result
        })
        .await
        .map_err(|e| error::internal(&e))
    }

    /// Hashes a new password with a fresh salt.
    pub(crate) async fn hash(&self, lane: Lane, password: Password) -> Result<PasswordHash, Status> {
        let salt = random_bytes::<16>()?;
        let cost = self.cost;
        self.hashed.inc();
        self.run(lane, move || PasswordHash::new(&password, cost, salt)).await?.map_err(|e| error::internal(&e))
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is none; with no
    /// hash the answer is always `false`.
    pub(crate) async fn verify(
        &self,
        lane: Lane,
        hash: Option<PasswordHash>,
        password: Option<Password>,
    ) -> Result<bool, Status> {
        let real = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => self.dummy().await?,
        };
        // A password bcrypt cannot take (over 72 bytes) is checked as a placeholder of the same
        // work, and fails.
        let usable = password.is_some();
        let password = match password {
            Some(password) => password,
            None => Password::candidate("placeholder-password").ok_or_else(placeholder_refused)?,
        };
        self.verified.inc();
        let matched = self.run(lane, move || hash.verify(&password)).await?;
        Ok(real && usable && matched)
    }
}

/// A fixed placeholder password is a candidate by construction; were it not, this is a bug.
fn placeholder_refused() -> Status {
    error::internal(&std::io::Error::other("a placeholder password is not a candidate"))
}

/// Bytes from the operating system's random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Status> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the operating system's random number generator failed");
        error::status(Code::Internal, "INTERNAL", "internal error")
    })?;
    Ok(bytes)
}
