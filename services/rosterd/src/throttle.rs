//! Login throttling: failed logins limited per workspace and email, and per client address,
//! before any bcrypt work is done (`roster_identity::throttle` has the rule).
//!
//! The attempts live in the database (`roster_store`'s login attempts), so the limits hold for
//! every `rosterd` process sharing it together, not for each on its own. Attempts on one key are
//! judged one at a time, each counting every attempt before it: however many run at once, on
//! however many processes, exactly the limit go on to bcrypt.
//!
//! The keys are digests of the workspace slug and email, and of the address: the table holds
//! neither emails nor addresses.

use crate::config::Config;
use crate::error;
use crate::metrics::Metrics;
use roster_identity::throttle::{IN_PROGRESS_EXPIRY_MS, Limit};
use roster_identity::{Email, Slug};
use roster_store::{Admission, Store};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tonic::Status;

/// The failed-login limits, shared through the database.
pub(crate) struct LoginThrottle {
    store: Store,
    accounts: Limit,
    addresses: Limit,
    metrics: Arc<Metrics>,
    /// When to delete the attempts that no longer count next.
    next_purge: AtomicI64,
}

/// A key of the limits: the digest of what it stands for, with its kind.
fn key(kind: &str, parts: &[&str]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let hex: String = digest.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{kind}:{hex}")
}

impl LoginThrottle {
    pub(crate) fn new(config: &Config, store: Store, metrics: Arc<Metrics>) -> Self {
        let window_ms = i64::try_from(config.login_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let limit = |max_failures| Limit { max_failures, window_ms };
        Self {
            store,
            accounts: limit(config.login_max_failures),
            addresses: limit(config.login_max_failures_per_address),
            metrics,
            next_purge: AtomicI64::new(0),
        }
    }

    /// Records a login attempt for the account and the client's address at `now`, or refuses it
    /// with LOGIN_THROTTLED and how long the client must wait.
    pub(crate) async fn begin(
        &self,
        slug: &Slug,
        email: &Email,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt, Status> {
        self.purge_now_and_then(now);
        let account = key("account", &[slug.as_str(), email.as_str()]);
        let address = address.map(|address| key("address", &[&address.to_string()]));
        let mut keys = vec![(account.as_str(), self.accounts)];
        keys.extend(address.as_deref().map(|address| (address, self.addresses)));
        match self.store.begin_login_attempt(&keys, now).await.map_err(error::store)? {
            Admission::Begun(ids) => Ok(Attempt { store: self.store.clone(), ids, account, ended: false }),
            Admission::Refused { key, wait } => {
                self.metrics.login_throttled(if key == 0 { "account" } else { "address" });
                Err(error::login_throttled(wait))
            }
        }
    }

    /// At most once per quarter window, deletes in the background the attempts that no longer
    /// count, so the table holds about one window of attempts.
    fn purge_now_and_then(&self, now: i64) {
        let due = self.next_purge.load(Ordering::Relaxed);
        let window_ms = self.accounts.window_ms.max(self.addresses.window_ms);
        let next = now.saturating_add((window_ms / 4).max(1000));
        if now < due || self.next_purge.compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let store = self.store.clone();
        let before = now.saturating_sub(window_ms).saturating_sub(IN_PROGRESS_EXPIRY_MS);
        tokio::spawn(async move {
            if let Err(err) = store.purge_login_attempts(before).await {
                tracing::warn!(error = %err, "could not delete old login attempts");
            }
        });
    }
}

/// A login attempt that holds its place in the limits until its outcome is known. Dropped without
/// one (an error on the way), it is deleted and does not count.
pub(crate) struct Attempt {
    store: Store,
    ids: Vec<String>,
    account: String,
    ended: bool,
}

impl Attempt {
    /// The password did not open a session: counts against both limits until `now + window`.
    pub(crate) async fn failed(mut self, now: i64) {
        self.ended = true;
        if let Err(err) = self.store.fail_login_attempt(&self.ids, now).await {
            // It stays in progress, and so still counts for a minute.
            tracing::warn!(error = %err, "could not record a failed login attempt");
        }
    }

    /// A session was opened: the account's earlier failures are forgotten; the address's are not.
    pub(crate) async fn succeeded(mut self) {
        self.ended = true;
        if let Err(err) = self.store.end_login_attempt(&self.ids, Some(&self.account)).await {
            tracing::warn!(error = %err, "could not forget the account's failed logins");
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (store, ids) = (self.store.clone(), std::mem::take(&mut self.ids));
        tokio::spawn(async move {
            if let Err(err) = store.end_login_attempt(&ids, None).await {
                tracing::warn!(error = %err, "could not delete an abandoned login attempt");
            }
        });
    }
}
