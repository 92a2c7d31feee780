//! Failed-login throttling: at most so many failures per key within a sliding window.
//!
//! An attempt is recorded as begun before its password is checked, and counts against the limit
//! until its outcome is known. So concurrent attempts cannot overshoot the limit: with a limit of
//! 5, fifty parallel guesses cost five bcrypt verifications, and the other 45 are refused without
//! any. A success does not count, and forgets the key's failures when the caller asks (an
//! account); an attempt that ends without an outcome (a server error) does not count either.
//!
//! [`admit`] is the rule; where the attempts are kept (the database, so that every process shares
//! them) is the caller's business. Time comes in as milliseconds; nothing here keeps a clock.

/// How many failures a key may have within how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures (and attempts in progress) allowed within the window; at least 1.
    pub max_failures: u32,
    /// The window's length in milliseconds.
    pub window_ms: i64,
}

/// Why an attempt may not start: the earliest time another one may, in milliseconds from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub millis: i64,
}

impl RetryAfter {
    /// Whole seconds, rounded up: what a client is told to wait.
    pub fn seconds(self) -> i64 {
        (self.millis + 999) / 1000
    }
}

/// While only attempts in progress fill the limit: how long a client should wait, about one
/// bcrypt verification.
pub const IN_PROGRESS_RETRY_MS: i64 = 1000;

/// An attempt begun this long ago and still without an outcome no longer counts: its process
/// died. No login takes this long.
pub const IN_PROGRESS_EXPIRY_MS: i64 = 60_000;

/// Whether a new attempt for a key may go on at `now`, given the key's other attempts: the times
/// of its failures (any order; those out of the window are ignored) and how many are in progress.
///
/// An attempt that records itself before it asks, and asks about every attempt recorded before
/// it, is admitted only if fewer than `max_failures` came first: however many run at once, at most
/// the limit go on.
pub fn admit(limit: Limit, now: i64, failures: &[i64], in_progress: u32) -> Result<(), RetryAfter> {
    let Limit { window_ms, .. } = limit;
    let max_failures = limit.max_failures.max(1) as usize;
    let mut recent: Vec<i64> = failures.iter().copied().filter(|&at| at > now - window_ms).collect();
    if recent.len() >= max_failures {
        // The failure that must expire for one more to fit.
        recent.sort_unstable();
        // A failure may be stamped after `now` (another process's clock, or an attempt that
        // waited for its turn): the wait is never longer than the window.
        let expires = recent[recent.len() - max_failures] + window_ms;
        return Err(RetryAfter { millis: (expires - now).clamp(1, window_ms.max(1)) });
    }
    if recent.len() + in_progress as usize >= max_failures {
        return Err(RetryAfter { millis: IN_PROGRESS_RETRY_MS.min(window_ms).max(1) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: Limit = Limit { max_failures: 3, window_ms: 1000 };

    /// One key's attempts, kept as a caller keeps them: begun before asking, then failed,
    /// succeeded (forgetting the failures or not) or abandoned.
    #[derive(Default)]
    struct Key {
        failures: Vec<i64>,
        in_progress: u32,
    }

    impl Key {
        fn begin(&mut self, now: i64) -> Result<(), RetryAfter> {
            admit(LIMIT, now, &self.failures, self.in_progress)?;
            self.in_progress += 1;
            Ok(())
        }

        fn end(&mut self, failed_at: Option<i64>) {
            self.in_progress -= 1;
            self.failures.extend(failed_at);
        }
    }

    #[test]
    fn failures_up_to_the_limit_then_a_wait_until_the_oldest_expires() {
        let mut ada = Key::default();
        for at in [0, 100, 200] {
            ada.begin(at).expect("allowed");
            ada.end(Some(at));
        }
        assert_eq!(ada.begin(300), Err(RetryAfter { millis: 700 }));
        assert_eq!(RetryAfter { millis: 700 }.seconds(), 1);
        // The first failure expires at 1000.
        assert_eq!(ada.begin(999), Err(RetryAfter { millis: 1 }));
        assert_eq!(ada.begin(1000), Ok(()));
        // Failures stamped later than `now` wait the window at most.
        assert_eq!(admit(LIMIT, 0, &[50, 60, 70], 0), Err(RetryAfter { millis: 1000 }));
        // Failures in any order; more than the limit waits for the one that makes room.
        assert_eq!(admit(LIMIT, 500, &[400, 0, 300, 100, 200], 0), Err(RetryAfter { millis: 700 }));
    }

    #[test]
    fn attempts_in_progress_count_so_parallel_guesses_cannot_overshoot() {
        let mut ada = Key::default();
        let begun = (0..50).filter(|_| ada.begin(0).is_ok()).count();
        assert_eq!(begun, 3);
        assert_eq!(ada.begin(0), Err(RetryAfter { millis: 1000 }));
        // One ends without an outcome (a server error): a slot is free again.
        ada.end(None);
        assert_eq!(ada.begin(0), Ok(()));
    }

    #[test]
    fn a_success_does_not_count_and_forgetting_frees_the_key() {
        let mut ada = Key::default();
        for _ in 0..2 {
            ada.begin(0).expect("allowed");
            ada.end(Some(0));
        }
        ada.begin(0).expect("allowed");
        ada.end(None);
        ada.begin(0).expect("a success left the slot free");
        ada.end(None);
        ada.failures.clear();
        for _ in 0..3 {
            ada.begin(0).expect("the failures were forgotten");
            ada.end(Some(0));
        }
        assert!(ada.begin(0).is_err());
    }

    #[test]
    fn a_limit_of_zero_is_taken_as_one() {
        let limit = Limit { max_failures: 0, window_ms: 1000 };
        assert_eq!(admit(limit, 0, &[], 0), Ok(()));
        assert!(admit(limit, 0, &[], 1).is_err());
    }

    proptest! {
        /// However attempts interleave, no key ever has more failures within one window than
        /// the limit, and every refusal's wait is at most the window.
        #[test]
        fn failures_within_any_window_never_exceed_the_limit(
            steps in proptest::collection::vec((0u8..3, 0i64..400, any::<bool>()), 1..200),
        ) {
            let mut key = Key::default();
            let mut now = 0;
            for (action, advance, fail) in steps {
                now += advance;
                match action {
                    0 => if let Err(wait) = key.begin(now) {
                        prop_assert!(wait.millis >= 1 && wait.millis <= LIMIT.window_ms);
                    },
                    _ if key.in_progress > 0 => key.end(fail.then_some(now)),
                    _ => {}
                }
                let recent = key.failures.iter().filter(|&&at| at > now - LIMIT.window_ms).count() as u32;
                prop_assert!(recent <= LIMIT.max_failures, "{recent} failures in the window at {now}");
            }
        }

        /// Attempts that each record themselves, then ask about all recorded before them, admit
        /// at most the limit, in any order of recording.
        #[test]
        fn recorded_then_asked_attempts_admit_at_most_the_limit(failures in 0u32..5, attempts in 1u32..60) {
            let past: Vec<i64> = (0..failures).map(i64::from).collect();
            let admitted = (0..attempts).filter(|&earlier| admit(LIMIT, 10, &past, earlier).is_ok()).count() as u32;
            prop_assert_eq!(admitted, LIMIT.max_failures.saturating_sub(failures).min(attempts));
        }
    }
}
