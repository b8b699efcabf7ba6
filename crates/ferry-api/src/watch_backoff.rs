//! [`WatchBackoff`]: how long a Ferry watch (controller or agent) waits before it tries
//! again after an error, shared so that both follow an API server restart alike.
//!
//! Why not kube-runtime's `default_backoff()` (800 ms doubling to 30 s): an API server
//! that is killed and restarted serves again within about a second, and the watches were
//! retrying at 0.8, 2.4 and 5.6 s, so the next change was programmed only ~4 s after the
//! restart (issue 15's fault campaign; target 3 s). This one starts at 100 ms and doubles
//! to at most 2 s, with each wait drawn between half and all of its step (jitter, so that
//! thousands of agents do not retry in step), and starts over after any success (kube's
//! `StreamBackoff` resets it on every item).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first wait after an error.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX: Duration = Duration::from_secs(2);

/// An exponential backoff with jitter for `WatchStreamExt::backoff`.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    step: Duration,
    /// Seed of the jitter (per instance, so two watches do not draw the same waits).
    seed: u64,
    draws: u64,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            step: FIRST,
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            draws: 0,
        }
    }
}

/// The wait of one step: between half of `step` and `step`, placed by `draw` (any u64).
pub fn jittered(step: Duration, draw: u64) -> Duration {
    let half = step / 2;
    let span = half.as_nanos().max(1) as u64;
    half + Duration::from_nanos(draw % span)
}

/// The step after `step`: doubled, at most [`MAX`].
pub fn next_step(step: Duration) -> Duration {
    (step * 2).min(MAX)
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.seed);
        h.write_u64(self.draws);
        self.draws += 1;
        let wait = jittered(self.step, h.finish());
        self.step = next_step(self.step);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.step = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn steps_double_to_the_cap() {
        let mut step = FIRST;
        let mut steps = vec![step];
        for _ in 0..6 {
            step = next_step(step);
            steps.push(step);
        }
        let ms: Vec<u128> = steps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn jitter_stays_between_half_and_the_step() {
        let step = Duration::from_millis(800);
        for draw in [0, 1, 399_999_999, 400_000_000, u64::MAX] {
            let w = jittered(step, draw);
            assert!(w >= step / 2 && w < step, "{draw}: {w:?}");
        }
    }

    #[test]
    fn waits_follow_the_steps_and_reset_starts_over() {
        let mut b = WatchBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(7).collect();
        let caps = [100, 200, 400, 800, 1600, 2000, 2000];
        for (w, cap) in waits.iter().zip(caps) {
            let cap = Duration::from_millis(cap);
            assert!(*w >= cap / 2 && *w < cap, "{w:?} for step {cap:?}");
        }
        b.reset();
        let first = b.next().expect("never ends");
        assert!(first < FIRST, "{first:?}");
    }
}
