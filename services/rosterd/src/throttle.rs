//! Login throttling: failed logins limited per workspace and email, and per client address,
//! before any bcrypt work is done (`roster_identity::throttle` has the rules).
//!
//! The counts live in this process's memory: each `rosterd` process allows the limits on its own.

use crate::config::Config;
use crate::metrics::Metrics;
use roster_identity::throttle::{Limit, RetryAfter, Throttle};
use roster_identity::{Email, Slug};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The workspace and email a login names, whether they exist or not.
type Account = (String, String);

struct Throttles {
    accounts: Throttle<Account>,
    addresses: Throttle<IpAddr>,
}

/// The failed-login counts of this process.
pub(crate) struct LoginThrottle {
    inner: Mutex<Throttles>,
    metrics: Arc<Metrics>,
}

impl LoginThrottle {
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let window_ms = i64::try_from(config.login_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let limit = |max_failures| Limit { max_failures, window_ms };
        let inner = Throttles {
            accounts: Throttle::new(limit(config.login_max_failures)),
            addresses: Throttle::new(limit(config.login_max_failures_per_address)),
        };
        Self { inner: Mutex::new(inner), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, Throttles> {
        // The counts stay consistent even if a holder panicked: every update is one call.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a login attempt for the account and the client's address at `now`, or says how
    /// long the client must wait.
    pub(crate) fn begin(
        &self,
        slug: &Slug,
        email: &Email,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt<'_>, RetryAfter> {
        let account = (slug.as_str().to_owned(), email.as_str().to_owned());
        let mut throttles = self.lock();
        if let Err(wait) = throttles.accounts.begin(&account, now) {
            drop(throttles);
            self.metrics.login_throttled("account");
            return Err(wait);
        }
        if let Some(address) = address
            && let Err(wait) = throttles.addresses.begin(&address, now)
        {
            throttles.accounts.abandoned(&account);
            drop(throttles);
            self.metrics.login_throttled("address");
            return Err(wait);
        }
        Ok(Attempt { throttle: self, account, address, ended: false })
    }
}

/// A login attempt that holds its place in the limits until its outcome is known. Dropped without
/// one (an error on the way), it does not count.
pub(crate) struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    account: Account,
    address: Option<IpAddr>,
    ended: bool,
}

impl Attempt<'_> {
    /// The password did not open a session: counts against both limits until `now + window`.
    pub(crate) fn failed(mut self, now: i64) {
        let mut throttles = self.throttle.lock();
        throttles.accounts.failed(&self.account, now);
        if let Some(address) = &self.address {
            throttles.addresses.failed(address, now);
        }
        self.ended = true;
    }

    /// A session was opened: the account's earlier failures are forgotten; the address's are not.
    pub(crate) fn succeeded(mut self) {
        let mut throttles = self.throttle.lock();
        throttles.accounts.succeeded(&self.account, true);
        if let Some(address) = &self.address {
            throttles.addresses.succeeded(address, false);
        }
        self.ended = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut throttles = self.throttle.lock();
        throttles.accounts.abandoned(&self.account);
        if let Some(address) = &self.address {
            throttles.addresses.abandoned(address);
        }
    }
}
