//! Per-key retry with exponential backoff, pure (the caller passes the time), and the
//! controller's error policy:
//!
//! | failure | what happens |
//! |---|---|
//! | an API write for a service (status, Service, Endpoints, EndpointSlice, probes) | the service is planned again after a backoff (0.1 s doubling to 30 s, reset on success); a newer decision replaces a queued one |
//! | an address write (pod, VMI, host status, node, probe port) | the address is forgotten and the holder asked again after a backoff |
//! | a create or replace answered 409 | nothing: someone else wrote it, and the watch brings the change that replans it |
//! | an NB transaction | the NB work is kept and retried by the next pass, which comes after a backoff |
//! | an impossible object (a missing VPC, an EIP outside the pool, ...) | a condition and an Event on it; replanned when it or what it names changes |
//! | a watch | kube-runtime's default backoff, then a relist (a full pass) |

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The first retry's delay.
pub const BASE: Duration = Duration::from_millis(100);
/// The longest delay between retries.
pub const MAX: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (1 = the first).
pub fn backoff(attempt: u32) -> Duration {
    BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX)
}

/// Keys that failed, when each is due again and how often each failed in a row.
#[derive(Debug)]
pub struct Retries<K> {
    due: BTreeMap<K, Instant>,
    attempts: BTreeMap<K, u32>,
}

impl<K> Default for Retries<K> {
    fn default() -> Self {
        Retries {
            due: BTreeMap::new(),
            attempts: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Retries<K> {
    /// Records a failure of `key` at `now`; returns when it is due again.
    pub fn failed(&mut self, key: K, now: Instant) -> Instant {
        let n = self.attempts.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let at = now + backoff(*n);
        self.due.insert(key, at);
        at
    }

    /// Records a success: the next failure starts from the first delay again.
    pub fn succeeded(&mut self, key: &K) {
        self.attempts.remove(key);
        self.due.remove(key);
    }

    /// The keys due at `now` (no longer waiting; their failure count is kept).
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let due: Vec<K> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.due.remove(k);
        }
        due
    }

    /// When the next key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Forgets everything (leadership lost).
    pub fn clear(&mut self) {
        self.due.clear();
        self.attempts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_a_tenth_of_a_second_up_to_thirty() {
        let ms: Vec<u128> = (1..=11).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
        assert_eq!(backoff(u32::MAX), MAX);
    }

    #[test]
    fn a_key_is_due_after_its_backoff_and_a_success_resets_it() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        assert_eq!(r.failed("a", t0), t0 + BASE);
        assert_eq!(r.failed("a", t0), t0 + BASE * 2);
        r.failed("b", t0);
        assert_eq!(r.next_due(), Some(t0 + BASE));
        assert_eq!(r.take_due(t0), Vec::<&str>::new());
        assert_eq!(r.take_due(t0 + BASE), ["b"]);
        assert_eq!(r.take_due(t0 + BASE * 2), ["a"]);
        assert_eq!(r.next_due(), None);
        // The count is kept until a success: a third failure waits 0.4 s.
        assert_eq!(r.failed("a", t0), t0 + BASE * 4);
        r.succeeded(&"a");
        assert_eq!(r.failed("a", t0), t0 + BASE);
    }
}
