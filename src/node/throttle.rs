//! Backoff for failed credentials (pure; `now` is an argument).
//!
//! Each key — a client address, a charge point id — may fail [`FREE_FAILURES`] times in a
//! row; after that it must wait before it is heard again, twice as long per further
//! failure, up to [`BACKOFF_MAX_MILLIS`]. A success clears the key; a key not heard from
//! for [`FORGET_AFTER_MILLIS`] is forgotten. So a guesser gets a handful of tries and then
//! one per minute, and a legitimate station locked out by someone guessing its password
//! gets in at most a minute after the guessing stops. The table holds at most
//! `keys_max` keys (the least recently failed is dropped first), so a flood of
//! addresses cannot grow it without bound.

use std::collections::BTreeMap;

/// Failures in a row a key may have before it waits.
pub const FREE_FAILURES: u32 = 5;
/// The first wait, doubled per further failure.
pub const BACKOFF_BASE_MILLIS: u64 = 1_000;
/// The longest wait.
pub const BACKOFF_MAX_MILLIS: u64 = 60_000;
/// A key with no failure for this long starts afresh.
pub const FORGET_AFTER_MILLIS: u64 = 10 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    failures: u32,
    last_failure_millis: u64,
}

impl Entry {
    /// Until when the key must wait, if it must.
    fn blocked_until(&self) -> Option<u64> {
        let over = self.failures.checked_sub(FREE_FAILURES)?;
        let wait = BACKOFF_BASE_MILLIS
            .saturating_mul(1u64 << over.min(32))
            .min(BACKOFF_MAX_MILLIS);
        Some(self.last_failure_millis.saturating_add(wait))
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct FailureBackoff {
    entries: BTreeMap<String, Entry>,
    keys_max: usize,
}

impl FailureBackoff {
    pub fn new(keys_max: usize) -> FailureBackoff {
        FailureBackoff {
            entries: BTreeMap::new(),
            keys_max: keys_max.max(1),
        }
    }

    /// `Err(retry_after_millis)` when any of `keys` must still wait at `now`.
    pub fn check(&self, keys: &[&str], now_millis: u64) -> Result<(), u64> {
        let wait = keys
            .iter()
            .filter_map(|key| self.entries.get(*key))
            .filter(|entry| now_millis < entry.last_failure_millis + FORGET_AFTER_MILLIS)
            .filter_map(Entry::blocked_until)
            .filter(|until| *until > now_millis)
            .map(|until| until - now_millis)
            .max();
        match wait {
            Some(millis) => Err(millis),
            None => Ok(()),
        }
    }

    /// Counts a failure against each of `keys`.
    pub fn failed(&mut self, keys: &[&str], now_millis: u64) {
        for key in keys {
            let fresh = Entry {
                failures: 0,
                last_failure_millis: now_millis,
            };
            let entry = self.entries.entry((*key).to_owned()).or_insert(fresh);
            if now_millis >= entry.last_failure_millis + FORGET_AFTER_MILLIS {
                *entry = fresh;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure_millis = now_millis;
        }
        self.evict(now_millis);
    }

    /// Clears `keys`: they got in.
    pub fn succeeded(&mut self, keys: &[&str]) {
        for key in keys {
            self.entries.remove(*key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops forgotten keys, then the least recently failed ones past `keys_max`.
    fn evict(&mut self, now_millis: u64) {
        if self.entries.len() <= self.keys_max {
            return;
        }
        self.entries
            .retain(|_, entry| now_millis < entry.last_failure_millis + FORGET_AFTER_MILLIS);
        while self.entries.len() > self.keys_max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(key, entry)| (entry.last_failure_millis, (*key).clone()))
                .map(|(key, _)| key.clone())
                .expect("more entries than the bound, so at least one");
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five free failures, then waits of 1, 2, 4 … s up to a minute; a success clears the
    /// key, and a key left alone long enough starts afresh.
    #[test]
    fn failures_back_off_exponentially_and_a_success_clears_them() {
        let mut backoff = FailureBackoff::new(100);
        let key = ["addr:10.0.0.1"];
        for n in 0..FREE_FAILURES {
            assert_eq!(backoff.check(&key, 0), Ok(()), "failure {n} is free");
            backoff.failed(&key, 0);
        }
        assert_eq!(backoff.check(&key, 0), Err(1_000));
        assert_eq!(backoff.check(&key, 1_000), Ok(()));
        backoff.failed(&key, 1_000);
        assert_eq!(backoff.check(&key, 1_000), Err(2_000));
        for _ in 0..20 {
            backoff.failed(&key, 5_000);
        }
        assert_eq!(backoff.check(&key, 5_000), Err(BACKOFF_MAX_MILLIS));
        assert_eq!(backoff.check(&key, 5_000 + BACKOFF_MAX_MILLIS), Ok(()));
        assert_eq!(
            backoff.check(&["addr:10.0.0.2"], 5_000),
            Ok(()),
            "other keys are not held back"
        );
        backoff.succeeded(&key);
        assert_eq!(backoff.check(&key, 5_000), Ok(()));
        for _ in 0..10 {
            backoff.failed(&key, 10_000);
        }
        assert_eq!(backoff.check(&key, 10_000 + FORGET_AFTER_MILLIS), Ok(()));
        backoff.failed(&key, 10_000 + FORGET_AFTER_MILLIS);
        assert_eq!(
            backoff.check(&key, 10_000 + FORGET_AFTER_MILLIS),
            Ok(()),
            "a forgotten key starts afresh"
        );
    }

    /// A flood of distinct keys keeps the table at its bound, dropping the least recently
    /// failed first.
    #[test]
    fn the_table_stays_bounded() {
        let mut backoff = FailureBackoff::new(3);
        for n in 0..10u64 {
            backoff.failed(&[&format!("addr:{n}")], n);
        }
        assert_eq!(backoff.len(), 3);
        assert!(backoff.entries.contains_key("addr:9"));
        assert!(!backoff.entries.contains_key("addr:0"));
    }
}
