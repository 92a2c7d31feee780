//! Failed-login throttling: at most so many failures per key within a sliding window.
//!
//! An attempt is reserved before its password is checked and counts against the limit until its
//! outcome is known. So concurrent attempts cannot overshoot the limit: with a limit of 5, fifty
//! parallel guesses cost five bcrypt verifications, and the other 45 are refused without any.
//! A success does not count, and forgets the key's failures when the caller asks (an account);
//! an attempt that ends without an outcome (a server error) does not count either.
//!
//! Time comes in as milliseconds; the type keeps no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

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
const IN_PROGRESS_RETRY_MS: i64 = 1000;

#[derive(Debug, Default)]
struct Record {
    /// Times of the failures still within the window, oldest first.
    failures: VecDeque<i64>,
    /// Attempts begun and not yet ended.
    in_progress: u32,
}

impl Record {
    fn expire(&mut self, now: i64, window_ms: i64) {
        while self.failures.front().is_some_and(|&at| at <= now - window_ms) {
            self.failures.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.in_progress == 0
    }
}

/// Failures per key; see the module documentation.
#[derive(Debug)]
pub struct Throttle<K> {
    limit: Limit,
    records: HashMap<K, Record>,
    /// When to drop the keys whose failures have all expired.
    next_prune: i64,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(limit: Limit) -> Self {
        Self {
            limit: Limit { max_failures: limit.max_failures.max(1), ..limit },
            records: HashMap::new(),
            next_prune: 0,
        }
    }

    /// Reserves an attempt for `key` at `now`, or says how long until one may start.
    pub fn begin(&mut self, key: &K, now: i64) -> Result<(), RetryAfter> {
        self.prune(now);
        let Limit { max_failures, window_ms } = self.limit;
        let record = self.records.entry(key.clone()).or_default();
        record.expire(now, window_ms);
        let failures = u32::try_from(record.failures.len()).unwrap_or(u32::MAX);
        if failures >= max_failures {
            // The oldest failure that must expire for one more to fit.
            let index = (failures - max_failures) as usize;
            let expires = record.failures[index] + window_ms;
            return Err(RetryAfter { millis: (expires - now).max(1) });
        }
        if failures + record.in_progress >= max_failures {
            return Err(RetryAfter { millis: IN_PROGRESS_RETRY_MS.min(window_ms).max(1) });
        }
        record.in_progress += 1;
        Ok(())
    }

    /// The attempt begun for `key` failed at `now`: it counts until `now + window`.
    pub fn failed(&mut self, key: &K, now: i64) {
        if let Some(record) = self.end(key) {
            record.failures.push_back(now);
        }
    }

    /// The attempt begun for `key` succeeded; with `forget`, the key's failures are forgotten too.
    pub fn succeeded(&mut self, key: &K, forget: bool) {
        if let Some(record) = self.end(key)
            && forget
        {
            record.failures.clear();
        }
    }

    /// The attempt begun for `key` ended without an outcome: it does not count.
    pub fn abandoned(&mut self, key: &K) {
        self.end(key);
    }

    /// How many keys are held (those with failures in the window or attempts in progress, and
    /// not yet pruned others).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn end(&mut self, key: &K) -> Option<&mut Record> {
        let record = self.records.get_mut(key)?;
        record.in_progress = record.in_progress.saturating_sub(1);
        Some(record)
    }

    /// At most once per quarter window, drops the keys with nothing left in the window, so that
    /// memory follows the failures of the last window only.
    fn prune(&mut self, now: i64) {
        if now < self.next_prune {
            return;
        }
        let window_ms = self.limit.window_ms;
        self.records.retain(|_, record| {
            record.expire(now, window_ms);
            !record.is_empty()
        });
        self.next_prune = now + (window_ms / 4).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: Limit = Limit { max_failures: 3, window_ms: 1000 };

    #[test]
    fn failures_up_to_the_limit_then_a_wait_until_the_oldest_expires() {
        let mut t = Throttle::new(LIMIT);
        for at in [0, 100, 200] {
            t.begin(&"ada", at).expect("allowed");
            t.failed(&"ada", at);
        }
        assert_eq!(t.begin(&"ada", 300), Err(RetryAfter { millis: 700 }));
        assert_eq!(RetryAfter { millis: 700 }.seconds(), 1);
        // Another key is unaffected.
        assert_eq!(t.begin(&"bob", 300), Ok(()));
        // The first failure expires at 1000.
        assert_eq!(t.begin(&"ada", 999), Err(RetryAfter { millis: 1 }));
        assert_eq!(t.begin(&"ada", 1000), Ok(()));
    }

    #[test]
    fn attempts_in_progress_count_so_parallel_guesses_cannot_overshoot() {
        let mut t = Throttle::new(LIMIT);
        let begun = (0..50).filter(|_| t.begin(&"ada", 0).is_ok()).count();
        assert_eq!(begun, 3);
        assert_eq!(t.begin(&"ada", 0), Err(RetryAfter { millis: 1000 }));
        // One ends without an outcome (a server error): a slot is free again.
        t.abandoned(&"ada");
        assert_eq!(t.begin(&"ada", 0), Ok(()));
    }

    #[test]
    fn a_success_does_not_count_and_may_forget_the_failures() {
        let mut t = Throttle::new(LIMIT);
        for _ in 0..2 {
            t.begin(&"ada", 0).expect("allowed");
            t.failed(&"ada", 0);
        }
        t.begin(&"ada", 0).expect("allowed");
        t.succeeded(&"ada", false);
        t.begin(&"ada", 0).expect("a success left the slot free");
        t.succeeded(&"ada", true);
        for _ in 0..3 {
            t.begin(&"ada", 0).expect("the failures were forgotten");
            t.failed(&"ada", 0);
        }
        assert!(t.begin(&"ada", 0).is_err());
    }

    #[test]
    fn keys_with_nothing_in_the_window_are_dropped() {
        let mut t = Throttle::new(LIMIT);
        for key in 0..100 {
            t.begin(&key, 0).expect("allowed");
            t.failed(&key, 0);
        }
        assert_eq!(t.len(), 100);
        t.begin(&1000, 2000).expect("allowed");
        assert_eq!(t.len(), 1, "only the attempt in progress is left");
    }

    proptest! {
        /// However attempts interleave, no key ever has more failures within one window than
        /// the limit, and every refusal's wait ends when an attempt is allowed again.
        #[test]
        fn failures_within_any_window_never_exceed_the_limit(
            steps in proptest::collection::vec((0u8..3, 0i64..400, any::<bool>()), 1..200),
        ) {
            let mut t = Throttle::new(LIMIT);
            let mut now = 0;
            let mut open = 0u32;
            let mut failures: Vec<i64> = Vec::new();
            for (action, advance, fail) in steps {
                now += advance;
                match action {
                    0 => match t.begin(&"k", now) {
                        Ok(()) => open += 1,
                        Err(wait) => {
                            prop_assert!(wait.millis >= 1 && wait.millis <= LIMIT.window_ms);
                        }
                    },
                    _ if open > 0 => {
                        open -= 1;
                        if fail {
                            t.failed(&"k", now);
                            failures.push(now);
                        } else {
                            t.abandoned(&"k");
                        }
                    }
                    _ => {}
                }
                let recent = failures.iter().filter(|&&at| at > now - LIMIT.window_ms).count() as u32;
                prop_assert!(recent <= LIMIT.max_failures, "{recent} failures in the window at {now}");
            }
        }
    }
}
