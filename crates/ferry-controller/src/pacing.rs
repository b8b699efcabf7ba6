//! When a full pass may run (pure; the caller passes the time). A full pass rebuilds the
//! indexes and re-plans every service (a warm leader plans it off the pass loop,
//! `full_plan`, and its NB convergence runs beside the passes, `network`): at 10,000
//! services x 20 backends that still takes ~10 s of CPU, which changes share the two
//! cores with. Only the first one cannot wait; those asked for by
//! a change to a global object (a Node, a VPC, a subnet, a namespace, an EIP), by a watch
//! that restarted, by an agent Lease that lapsed or by a takeover (the repair) can: they
//! are held back until the last full pass has been over for
//! [`SPACING`] times as long as it took, so that changes get at least that share of the
//! time. At 10,000 joining nodes (each Node written as its probe port is given, each one
//! an event) back-to-back full passes otherwise leave no time to anything else.

use std::time::{Duration, Instant};

/// Time between two deferrable full passes, in multiples of the last one's duration.
pub const SPACING: u32 = 2;
/// The shortest time between two deferrable full passes.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// The last full pass, and whether one is owed.
#[derive(Debug, Clone, Default)]
pub struct FullPasses {
    /// When the last full pass ended and how long it took.
    last: Option<(Instant, Duration)>,
    /// A deferrable full pass was asked for and has not run yet.
    owed: bool,
}

impl FullPasses {
    /// Records that a full pass ended at `end` after `took`.
    pub fn ran(&mut self, end: Instant, took: Duration) {
        self.last = Some((end, took));
        self.owed = false;
    }

    /// When a deferrable full pass may start: at once if none ran yet.
    pub fn allowed_at(&self) -> Option<Instant> {
        self.last
            .map(|(end, took)| end + took.saturating_mul(SPACING).max(MIN_GAP))
    }

    /// Whether the next pass is full, given that one is `asked` for (deferrable) at `now`;
    /// a request that must wait is remembered and granted once its time comes.
    pub fn decide(&mut self, asked: bool, now: Instant) -> bool {
        self.owed |= asked;
        let due = self.allowed_at().is_none_or(|at| now >= at);
        self.owed && due
    }

    /// When the pass driver should wake for an owed full pass.
    pub fn wake_at(&self) -> Option<Instant> {
        if self.owed { self.allowed_at() } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pass_waits_twice_as_long_as_the_last_one_took() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = FullPasses::default();
        // None ran yet: at once.
        assert!(f.decide(true, t0));
        f.ran(t0 + s(10), s(10));
        assert_eq!(f.allowed_at(), Some(t0 + s(30)));
        // Asked for 5 s after: owed, not yet.
        assert!(!f.decide(true, t0 + s(15)));
        assert_eq!(f.wake_at(), Some(t0 + s(30)));
        // Not asked again, but owed: granted once due.
        assert!(!f.decide(false, t0 + s(29)));
        assert!(f.decide(false, t0 + s(30)));
        f.ran(t0 + s(31), s(1));
        assert_eq!(f.wake_at(), None);
        // Nothing asked: no full pass.
        assert!(!f.decide(false, t0 + s(100)));
        // Short passes still leave MIN_GAP.
        f.ran(t0 + s(100), Duration::from_millis(10));
        assert_eq!(f.allowed_at(), Some(t0 + s(101)));
        assert!(!f.decide(true, t0 + s(100)));
        assert!(f.decide(false, t0 + s(101)));
    }
}
