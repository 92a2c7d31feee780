//! Who is calling: service keys and session tokens resolved into a [`Caller`], and the bcrypt work
//! that logins and new passwords need, kept off the async workers.

use crate::context::Credential;
use crate::error::{self, unauthenticated};
use prometheus_client::metrics::counter::Counter;
use roster_identity::{BcryptCost, Password, PasswordHash, SessionToken, TokenHash};
use roster_store::{Actor, Context, Store, User};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tonic::{Code, Status};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) request_id: String,
}

/// Whom a call acts for.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// An internal service, by the name of its key. May act in any workspace.
    Service(String),
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
            Principal::Service(name) => Actor::Service(name.clone()),
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

    /// The workspace a call addresses: a person's own (when `requested` is empty or names it),
    /// never another; a service key must name one.
    pub(crate) fn workspace(&self, requested: &str) -> Result<String, Status> {
        match &self.principal {
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

/// The configured service keys, held as SHA-256 digests and compared in constant time.
struct ServiceKeys(Vec<(String, [u8; 32])>);

impl ServiceKeys {
    fn find(&self, secret: &str) -> Option<&str> {
        let presented = digest(secret);
        let mut found = None;
        // Compare against every key, without early exit, so timing does not tell which matched.
        for (name, key) in &self.0 {
            let diff = key.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Resolves credentials into callers, for the request-context layer: before a request's body is
/// read, so that nobody unauthenticated makes the server decode anything.
pub(crate) struct Authenticator {
    store: Store,
    keys: ServiceKeys,
    /// The methods that need a caller: every Roster method but Login. Health, reflection and
    /// paths that name no method (answered UNIMPLEMENTED) need none.
    protected: HashSet<String>,
}

impl Authenticator {
    pub(crate) fn new(store: Store, keys: &[crate::config::ServiceKeySpec]) -> Self {
        let keys = ServiceKeys(keys.iter().map(|k| (k.name.clone(), digest(&k.secret))).collect());
        let mut protected: HashSet<String> = crate::metrics::method_paths(roster_proto::FILE_DESCRIPTOR_SET).collect();
        protected.remove("/roster.v1.AuthService/Login");
        Self { store, keys, protected }
    }

    /// Whether a call of `path` needs a caller.
    pub(crate) fn protects(&self, path: &str) -> bool {
        self.protected.contains(path)
    }

    /// The caller `credential` stands for: a live session's person, or a configured service key.
    pub(crate) async fn authenticate(&self, credential: Credential, request_id: String) -> Result<Caller, Status> {
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
            let hash = token.hash();
            return match self.store.session(&hash, now_millis()).await.map_err(error::store)? {
                Some(session) => Ok(Caller {
                    principal: Principal::User { user: session.user, token: hash, expires_at: session.expires_at },
                    request_id,
                }),
                None => Err(unauthenticated(
                    "SESSION_INVALID",
                    "the session token is unknown, expired or revoked: log in again",
                )),
            };
        }
        match self.keys.find(&secret) {
            Some(name) => Ok(Caller { principal: Principal::Service(name.to_owned()), request_id }),
            None => Err(unauthenticated(
                "CREDENTIALS_INVALID",
                "the bearer secret is neither a session token nor a service key",
            )),
        }
    }
}

/// bcrypt on the blocking pool, with a fixed hash at the configured cost to verify against when
/// there is no user, so that an unknown email costs the same work as a wrong password.
pub(crate) struct Hasher {
    cost: BcryptCost,
    dummy: Arc<OnceCell<PasswordHash>>,
    /// How many hashes and verifications were computed (the metrics' counters).
    hashed: Counter,
    verified: Counter,
}

impl Hasher {
    /// A hasher at `cost` that counts its work on `(hashed, verified)`.
    pub(crate) fn new(cost: BcryptCost, (hashed, verified): (Counter, Counter)) -> Self {
        Self { cost, dummy: Arc::new(OnceCell::new()), hashed, verified }
    }

    /// Computes the dummy hash in the background, so that start-up does not wait for it.
    pub(crate) fn warm_up(&self) {
        let dummy = self.dummy.clone();
        let (cost, hashed) = (self.cost, self.hashed.clone());
        tokio::spawn(async move {
            let _ = dummy.get_or_try_init(|| make_dummy(cost, hashed)).await;
        });
    }

    /// Hashes a new password with a fresh salt.
    pub(crate) async fn hash(&self, password: Password) -> Result<PasswordHash, Status> {
        let salt = random_bytes::<16>()?;
        let cost = self.cost;
        self.hashed.inc();
        blocking(move || PasswordHash::new(&password, cost, salt)).await
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is none; with no
    /// hash the answer is always `false`.
    pub(crate) async fn verify(&self, hash: Option<PasswordHash>, password: Option<Password>) -> Result<bool, Status> {
        let dummy = self.dummy.get_or_try_init(|| make_dummy(self.cost, self.hashed.clone())).await?.clone();
        let real = hash.is_some();
        let hash = hash.unwrap_or(dummy);
        // A password bcrypt cannot take (over 72 bytes) is checked as a placeholder of the same
        // work, and fails.
        let usable = password.is_some();
        let password =
            password.unwrap_or_else(|| Password::candidate("placeholder-password").unwrap_or_else(|| unreachable!()));
        self.verified.inc();
        let matched = blocking(move || hash.verify(&password)).await?;
        Ok(real && usable && matched)
    }
}

async fn make_dummy(cost: BcryptCost, hashed: Counter) -> Result<PasswordHash, Status> {
    let salt = random_bytes::<16>()?;
    hashed.inc();
    blocking(move || {
        let password = Password::candidate("no-such-user-password").unwrap_or_else(|| unreachable!());
        PasswordHash::new(&password, cost, salt)
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| error::internal(&e))
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
