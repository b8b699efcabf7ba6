//! The probe state machine: Kubernetes-style success and failure thresholds, reporting
//! only phase transitions (so status is written only when it changes). Pure.

use std::time::{Duration, SystemTime};

pub use ferry_api::ProbePhase as Phase;

/// Consecutive results needed to change phase (`successThreshold`, `failureThreshold`);
/// zero counts as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub success: u32,
    pub failure: u32,
}

impl Default for Thresholds {
    /// Kubernetes' defaults: 1 success, 3 failures.
    fn default() -> Thresholds {
        Thresholds {
            success: 1,
            failure: 3,
        }
    }
}

/// One probe attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub success: bool,
    /// Nothing was heard that decides either way (a silent UDP port): the phase becomes
    /// Unknown and the streaks start over.
    pub inconclusive: bool,
    /// From the start of the attempt to its outcome.
    pub latency: Duration,
    /// What happened, for status (`connected`, `HTTP 500`, `connection refused`, ...).
    pub message: String,
}

/// A phase change, with the result that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub at: SystemTime,
    pub result: ProbeResult,
}

/// Thresholded health of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    phase: Phase,
    successes: u32,
    failures: u32,
    thresholds: Thresholds,
}

impl ProbeState {
    /// A new target: [`Phase::Unknown`], no results.
    pub fn new(thresholds: Thresholds) -> ProbeState {
        ProbeState {
            phase: Phase::Unknown,
            successes: 0,
            failures: 0,
            thresholds,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Consecutive successes and failures so far (one of them is zero).
    pub fn streak(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Changes the thresholds, keeping the phase and the current streak (the next result
    /// is judged against the new ones).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    /// Records one result; returns the transition if the phase changed.
    pub fn observe(&mut self, result: &ProbeResult, now: SystemTime) -> Option<Transition> {
        let from = self.phase;
        if result.inconclusive {
            self.successes = 0;
            self.failures = 0;
            self.phase = Phase::Unknown;
        } else if result.success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.thresholds.success.max(1) {
                self.phase = Phase::Healthy;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.thresholds.failure.max(1) {
                self.phase = Phase::Unhealthy;
            }
        }
        (self.phase != from).then(|| Transition {
            from,
            to: self.phase,
            at: now,
            result: result.clone(),
        })
    }

    /// Forgets all results (the target changed): back to [`Phase::Unknown`]. Returns the
    /// transition if the phase was known.
    pub fn reset(&mut self, now: SystemTime, reason: &str) -> Option<Transition> {
        let from = self.phase;
        *self = ProbeState::new(self.thresholds);
        (from != Phase::Unknown).then(|| Transition {
            from,
            to: Phase::Unknown,
            at: now,
            result: ProbeResult {
                success: false,
                inconclusive: false,
                latency: Duration::ZERO,
                message: reason.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(success: bool) -> ProbeResult {
        ProbeResult {
            success,
            inconclusive: false,
            latency: Duration::from_millis(1),
            message: String::new(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Feeds `outcomes` (`'s'`/`'f'`) and returns the `(step, from, to)` transitions.
    fn run(th: Thresholds, outcomes: &str) -> (Vec<(usize, Phase, Phase)>, Phase) {
        let mut st = ProbeState::new(th);
        let mut out = Vec::new();
        for (i, c) in outcomes.chars().enumerate() {
            if let Some(tr) = st.observe(&r(c == 's'), t(i as u64)) {
                assert_eq!(tr.at, t(i as u64));
                assert_eq!(tr.result.success, c == 's');
                out.push((i, tr.from, tr.to));
            }
        }
        (out, st.phase())
    }

    #[test]
    fn thresholds_table() {
        use Phase::*;
        let th = |success, failure| Thresholds { success, failure };
        type Case = (
            &'static str,
            Thresholds,
            &'static str,
            Vec<(usize, Phase, Phase)>,
            Phase,
        );
        let cases: Vec<Case> = vec![
            ("no results", th(1, 3), "", vec![], Unknown),
            (
                "first success, threshold 1",
                th(1, 3),
                "s",
                vec![(0, Unknown, Healthy)],
                Healthy,
            ),
            (
                "failures below threshold stay Unknown",
                th(1, 3),
                "ff",
                vec![],
                Unknown,
            ),
            (
                "three failures",
                th(1, 3),
                "fff",
                vec![(2, Unknown, Unhealthy)],
                Unhealthy,
            ),
            (
                "healthy then three failures",
                th(1, 3),
                "sfff",
                vec![(0, Unknown, Healthy), (3, Healthy, Unhealthy)],
                Unhealthy,
            ),
            (
                "a success resets the failure streak",
                th(1, 3),
                "sffsff",
                vec![(0, Unknown, Healthy)],
                Healthy,
            ),
            (
                "success threshold 2 needs two in a row",
                th(2, 1),
                "fsfss",
                vec![(0, Unknown, Unhealthy), (4, Unhealthy, Healthy)],
                Healthy,
            ),
            (
                "flapping never reaches 2",
                th(2, 2),
                "sfsfsf",
                vec![],
                Unknown,
            ),
            (
                "no repeated transitions while staying healthy",
                th(1, 1),
                "sssss",
                vec![(0, Unknown, Healthy)],
                Healthy,
            ),
            (
                "zero thresholds count as one",
                th(0, 0),
                "sf",
                vec![(0, Unknown, Healthy), (1, Healthy, Unhealthy)],
                Unhealthy,
            ),
        ];
        for (name, thresholds, outcomes, want, want_phase) in cases {
            let got = run(thresholds, outcomes);
            assert_eq!(got, (want, want_phase), "case {name}");
        }
    }

    #[test]
    fn reset_and_threshold_change() {
        let mut st = ProbeState::new(Thresholds {
            success: 1,
            failure: 3,
        });
        assert!(
            st.reset(t(0), "target changed").is_none(),
            "Unknown -> Unknown is no transition"
        );
        st.observe(&r(true), t(1));
        let tr = st.reset(t(2), "target changed").expect("transition");
        assert_eq!(
            (tr.from, tr.to, tr.result.message.as_str()),
            (Phase::Healthy, Phase::Unknown, "target changed")
        );
        st.observe(&r(false), t(3));
        st.set_thresholds(Thresholds {
            success: 1,
            failure: 2,
        });
        let tr = st
            .observe(&r(false), t(4))
            .expect("second failure now crosses 2");
        assert_eq!(tr.to, Phase::Unhealthy);
    }

    proptest! {
        #[test]
        fn transitions_follow_thresholds(
            s in 1u32..5,
            f in 1u32..5,
            outcomes in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let mut st = ProbeState::new(Thresholds { success: s, failure: f });
            let mut last_to = Phase::Unknown;
            let mut reached = false;
            for (i, &ok) in outcomes.iter().enumerate() {
                let before = st.phase();
                let tr = st.observe(&r(ok), t(i as u64));
                let after = st.phase();
                // A transition is reported exactly when the phase changes.
                prop_assert_eq!(tr.is_some(), before != after);
                if let Some(tr) = &tr {
                    prop_assert_eq!((tr.from, tr.to), (before, after));
                    prop_assert_eq!(tr.from, last_to);
                    last_to = tr.to;
                    // It is caused by a full streak of the matching outcome.
                    let need = if after == Phase::Healthy { s } else { f } as usize;
                    prop_assert!(i + 1 >= need);
                    let want_ok = after == Phase::Healthy;
                    prop_assert!(outcomes[i + 1 - need..=i].iter().all(|&o| o == want_ok));
                }
                // A full streak always decides the phase.
                let trailing = outcomes[..=i].iter().rev().take_while(|&&o| o == ok).count();
                if ok && trailing >= s as usize {
                    prop_assert_eq!(after, Phase::Healthy);
                }
                if !ok && trailing >= f as usize {
                    prop_assert_eq!(after, Phase::Unhealthy);
                }
                reached |= trailing >= if ok { s } else { f } as usize;
                // Unknown until some streak reached its threshold, never again after.
                prop_assert_eq!(after == Phase::Unknown, !reached);
            }
        }
    }
}
