//! Throttling password guesses, before any bcrypt work is done (`roster_identity::throttle` has
//! the rule): failed logins, and wrong current passwords in ChangePassword.
//!
//! The attempts live in the database (`roster_store`'s login attempts), so the limits hold for
//! every `rosterd` process sharing it together, not for each on its own. Attempts on one key are
//! judged one at a time, each counting every attempt before it: however many run at once, on
//! however many processes, exactly the limit go on to bcrypt.
//!
//! A login counts against three keys, so that a stranger's guesses lock out nobody but themselves:
//!
//! - the account from this client address (`ROSTER_LOGIN_MAX_FAILURES`, 5): someone guessing an
//!   admin's password from one address is stopped there, while the admin logging in from
//!   elsewhere is not;
//! - the client address, whatever account (`ROSTER_LOGIN_MAX_FAILURES_PER_ADDRESS`, 50);
//! - the account from anywhere (`ROSTER_LOGIN_MAX_FAILURES_PER_ACCOUNT`, 100): a cap on guessing
//!   spread over many addresses. Only such a spread attack can lock the owner out, for the rest
//!   of the window.
//!
//! A success forgets the account's failures (from this address and in all), not the address's.
//!
//! Password reset requests are counted the same way, every request as a failure, per workspace
//! and email (`ROSTER_RESET_MAX_PER_ACCOUNT`, 3) and per client address
//! (`ROSTER_RESET_MAX_PER_ADDRESS`, 20), whether or not the account exists: the refusal tells
//! nothing about it.
//! This follows OWASP's advice to throttle rather than lock accounts, as Kratos and Zitadel do.
//!
//! The client address is the TCP peer's, or, when the peer is a configured trusted proxy (a load
//! balancer), the last address in `x-forwarded-for` that is not itself a trusted proxy. The keys
//! are digests: the table holds neither emails nor addresses.

use crate::config::{Cidr, Config};
use crate::error;
use crate::metrics::Metrics;
use roster_identity::throttle::{IN_PROGRESS_EXPIRY_MS, Limit, RetryAfter};
use roster_identity::{Email, Slug};
use roster_store::{Admission, Store};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// What the limits are named in the metrics, by the index of their key.
const LOGIN_LIMITS: [&str; 3] = ["account", "address", "account_total"];

/// The guessing limits, shared through the database.
pub(crate) struct LoginThrottle {
    store: Store,
    /// Per account from one address; also per person for their current password.
    accounts: Limit,
    addresses: Limit,
    account_totals: Limit,
    reset_accounts: Limit,
    reset_addresses: Limit,
    trusted_proxies: Vec<Cidr>,
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
            account_totals: limit(config.login_max_failures_per_account),
            reset_accounts: limit(config.reset_max_per_account),
            reset_addresses: limit(config.reset_max_per_address),
            trusted_proxies: config.trusted_proxies.clone(),
            metrics,
            next_purge: AtomicI64::new(0),
        }
    }

    /// The client's address: the peer's, or, from a trusted proxy, the last one `x-forwarded-for`
    /// names that is not a trusted proxy itself (proxies append the address they were called from).
    pub(crate) fn client_address(&self, peer: Option<SocketAddr>, headers: &MetadataMap) -> Option<IpAddr> {
        Some(client_address(&self.trusted_proxies, peer?.ip(), headers))
    }

    /// Records a login attempt at `now`, or refuses it with LOGIN_THROTTLED and how long the
    /// client must wait.
    pub(crate) async fn begin_login(
        &self,
        slug: &Slug,
        email: &Email,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt, Status> {
        let address = address.map_or_else(|| "unknown".to_owned(), |address| address.to_string());
        let keys = [
            (key("account", &[slug.as_str(), email.as_str(), &address]), self.accounts),
            (key("address", &[&address]), self.addresses),
            (key("account-total", &[slug.as_str(), email.as_str()]), self.account_totals),
        ];
        // A success forgets the account's failures, from this address and in all.
        self.begin(&keys, &[0, 2], &LOGIN_LIMITS, now, error::login_throttled).await
    }

    /// Counts a password reset request at `now`, or refuses it with RESET_THROTTLED and how long
    /// the client must wait.
    pub(crate) async fn count_reset_request(
        &self,
        slug: &Slug,
        email: &Email,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(), Status> {
        let address = address.map_or_else(|| "unknown".to_owned(), |address| address.to_string());
        let keys = [
            (key("reset", &[slug.as_str(), email.as_str()]), self.reset_accounts),
            (key("reset-address", &[&address]), self.reset_addresses),
        ];
        let names = ["reset_account", "reset_address"];
        self.begin(&keys, &[], &names, now, error::reset_throttled).await?.failed(now).await;
        Ok(())
    }

    /// Records a check of a person's current password (ChangePassword) at `now`, or refuses it:
    /// someone holding a stolen session cannot guess the password it was opened with either.
    pub(crate) async fn begin_password_check(&self, user_id: &str, now: i64) -> Result<Attempt, Status> {
        let keys = [(key("password", &[user_id]), self.accounts)];
        self.begin(&keys, &[0], &["password"], now, error::login_throttled).await
    }

    /// Begins an attempt under `keys` (named `names` in the metrics), or answers `refuse`; a
    /// success forgets the failures of the keys at `forget`.
    async fn begin(
        &self,
        keys: &[(String, Limit)],
        forget: &[usize],
        names: &[&'static str],
        now: i64,
        refuse: fn(RetryAfter) -> Status,
    ) -> Result<Attempt, Status> {
        self.purge_now_and_then(now);
        let refs: Vec<(&str, Limit)> = keys.iter().map(|(key, limit)| (key.as_str(), *limit)).collect();
        match self.store.begin_login_attempt(&refs, now).await.map_err(error::store)? {
            Admission::Begun(ids) => {
                let forget = forget.iter().filter_map(|&i| keys.get(i)).map(|(key, _)| key.clone()).collect();
                Ok(Attempt { store: self.store.clone(), ids, forget, ended: false })
            }
            Admission::Refused { key, wait } => {
                self.metrics.login_throttled(names.get(key).copied().unwrap_or("unknown"));
                Err(refuse(wait))
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

/// An attempt that holds its place in the limits until its outcome is known. Dropped without
/// one (an error on the way), it is deleted and does not count.
pub(crate) struct Attempt {
    store: Store,
    ids: Vec<String>,
    /// The keys whose failures a success forgets.
    forget: Vec<String>,
    ended: bool,
}

impl Attempt {
    /// The password was wrong: counts against every key until `now + window`.
    pub(crate) async fn failed(mut self, now: i64) {
        self.ended = true;
        if let Err(err) = self.store.fail_login_attempt(&self.ids, now).await {
            // It stays in progress, and so still counts for a minute.
            tracing::warn!(error = %err, "could not record a failed attempt");
        }
    }

    /// The password was right: the account's earlier failures are forgotten; the address's are not.
    pub(crate) async fn succeeded(mut self) {
        self.ended = true;
        let forget: Vec<&str> = self.forget.iter().map(String::as_str).collect();
        if let Err(err) = self.store.end_login_attempt(&self.ids, &forget).await {
            tracing::warn!(error = %err, "could not forget the account's failed attempts");
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
            if let Err(err) = store.end_login_attempt(&ids, &[]).await {
                tracing::warn!(error = %err, "could not delete an abandoned attempt");
            }
        });
    }
}

/// The peer's address, or, when the peer is one of `trusted`, the last address `x-forwarded-for`
/// names that is not itself trusted.
fn client_address(trusted_proxies: &[Cidr], peer: IpAddr, headers: &MetadataMap) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|cidr| cidr.contains(*ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    // From the right, the hops are what trusted proxies saw; left of the first untrusted one,
    // anything the client chose to send.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(trusted: &[&str], peer: &str, forwarded: &[&str]) -> IpAddr {
        let trusted: Vec<Cidr> = trusted.iter().map(|cidr| cidr.parse().expect("cidr")).collect();
        let mut headers = MetadataMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().expect("header"));
        }
        client_address(&trusted, peer.parse().expect("peer"), &headers)
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop_and_only_behind_a_trusted_peer() {
        let lb = ["10.0.0.0/8"];
        assert_eq!(address(&[], "10.0.0.1", &["203.0.113.9"]), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(address(&lb, "192.0.2.1", &["203.0.113.9"]), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(address(&lb, "10.0.0.1", &["203.0.113.9"]), "203.0.113.9".parse::<IpAddr>().unwrap());
        // What the client wrote itself sits left of what the balancer appended.
        assert_eq!(address(&lb, "10.0.0.1", &["1.1.1.1, 203.0.113.9"]), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            address(&lb, "10.0.0.1", &["1.1.1.1", "203.0.113.9, 10.0.0.2"]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage the client wrote cannot make its guesses count against the balancer.
        assert_eq!(address(&lb, "10.0.0.1", &["nonsense, 203.0.113.9"]), "203.0.113.9".parse::<IpAddr>().unwrap());
        // No header, or only proxies: the address nearest the client.
        assert_eq!(address(&lb, "10.0.0.1", &[]), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(address(&lb, "10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3".parse::<IpAddr>().unwrap());
    }
}
