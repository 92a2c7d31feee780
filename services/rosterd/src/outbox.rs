//! The outbox worker: delivers queued emails over SMTP, with retries, backoff and an abandoned state.
//!
//! Exactly-once matters more than speed here. A message is claimed with a lease before it is sent,
//! so two workers (or two processes) never send it at the same time. When the SMTP server accepted
//! a message but recording that failed (the database blinked), the worker keeps the message id in
//! memory and retries only the bookkeeping, never the send. Every message also carries a stable
//! `Message-ID` (`<outbox id@roster>`), so the rare resend after a crash between send and
//! bookkeeping can be recognized downstream.

use crate::auth::now_millis;
use crate::config::SmtpUrl;
use crate::error::error_chain;
use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use roster_store::{OutboxMail, Store};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How the worker retries.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) max_attempts: i32,
    pub(crate) first_retry: Duration,
    pub(crate) poll: Duration,
    pub(crate) lease: Duration,
}

impl Policy {
    /// When to retry after `attempts` failed attempts, or `None` to abandon.
    fn retry_at(&self, attempts: i32, now: i64) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
        let delay = self.first_retry.saturating_mul(1 << exponent).min(Duration::from_secs(600));
        Some(now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
    }
}

/// An SMTP connection target and the sender.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub(crate) fn new(url: &SmtpUrl, from: &str) -> Result<Self, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("--mail-from {from:?}: {e}"))?;
        // Plain SMTP to a relay the operator runs (no TLS, no credentials): the URL says where.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.as_str())
            .port(url.port)
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Self { transport, from })
    }

    async fn send(&self, mail: &OutboxMail) -> Result<(), SendError> {
        let to: Mailbox = mail.recipient.parse().map_err(|e| SendError::Permanent(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@roster>", mail.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(error_chain(&e))),
            Err(e) => Err(SendError::Transient(error_chain(&e))),
        }
    }
}

enum SendError {
    /// The server refused for good (5xx) or the message cannot be built: abandon now.
    Permanent(String),
    /// Anything else: retry later.
    Transient(String),
}

/// Runs until `stop` turns true. Without a mailer, says once that delivery is off and waits.
pub(crate) async fn run(
    store: Store,
    mailer: Option<Mailer>,
    policy: Policy,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mailer) = mailer else {
        match store.outbox_pending().await {
            Ok(n) => tracing::warn!(
                pending = n,
                "email delivery is off (no SMTP URL configured): welcome emails wait in the outbox until it is"
            ),
            Err(e) => tracing::warn!(error = %e, "email delivery is off (no SMTP URL configured)"),
        }
        return;
    };
    // Sent, but not yet recorded as sent.
    let mut unrecorded: HashSet<String> = HashSet::new();
    loop {
        if *stop.borrow() {
            return;
        }
        unrecorded = record_sent(&store, unrecorded).await;
        let lease = i64::try_from(policy.lease.as_millis()).unwrap_or(60_000);
        match store.claim_outbox(now_millis(), lease, 16).await {
            Ok(batch) => {
                for mail in batch {
                    deliver(&store, &mailer, &policy, &mut unrecorded, mail).await;
                    if *stop.borrow() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "could not read the outbox; retrying"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(policy.poll) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn deliver(store: &Store, mailer: &Mailer, policy: &Policy, unrecorded: &mut HashSet<String>, mail: OutboxMail) {
    if unrecorded.contains(&mail.id) {
        // Already accepted by the SMTP server; only the bookkeeping is missing.
        return;
    }
    match mailer.send(&mail).await {
        Ok(()) => {
            tracing::info!(outbox_id = %mail.id, attempts = mail.attempts, "email delivered");
            if let Err(e) = store.mark_outbox_sent(&mail.id, now_millis()).await {
                tracing::warn!(outbox_id = %mail.id, error = %error_chain(&e), "email delivered but not yet recorded; will record it, not resend it");
                unrecorded.insert(mail.id);
            }
        }
        Err(failure) => {
            let (error, retry_at) = match failure {
                SendError::Permanent(error) => (error, None),
                SendError::Transient(error) => {
                    let at = policy.retry_at(mail.attempts, now_millis());
                    (error, at)
                }
            };
            match retry_at {
                Some(_) => {
                    tracing::warn!(outbox_id = %mail.id, attempts = mail.attempts, %error, "email delivery failed; will retry")
                }
                None => {
                    tracing::error!(outbox_id = %mail.id, attempts = mail.attempts, %error, "email delivery failed; abandoned")
                }
            }
            if let Err(e) = store.mark_outbox_failed(&mail.id, mail.lease_until, &error, retry_at).await {
                // The lease runs out and the message is claimed again: nothing is lost.
                tracing::warn!(outbox_id = %mail.id, error = %error_chain(&e), "could not record a failed delivery");
            }
        }
    }
}

async fn record_sent(store: &Store, unrecorded: HashSet<String>) -> HashSet<String> {
    let mut left = HashSet::new();
    for id in unrecorded {
        if store.mark_outbox_sent(&id, now_millis()).await.is_err() {
            left.insert(id);
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_attempts: 4,
            first_retry: Duration::from_secs(1),
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
        }
    }

    #[test]
    fn retries_back_off_exponentially_then_give_up() {
        let p = policy();
        assert_eq!(p.retry_at(1, 0), Some(1_000));
        assert_eq!(p.retry_at(2, 0), Some(2_000));
        assert_eq!(p.retry_at(3, 0), Some(4_000));
        assert_eq!(p.retry_at(4, 0), None);
    }

    #[test]
    fn backoff_is_capped_at_ten_minutes() {
        let p = Policy { max_attempts: 100, ..policy() };
        assert_eq!(p.retry_at(60, 0), Some(600_000));
    }
}
