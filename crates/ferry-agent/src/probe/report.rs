//! Which probe results the agent must write (again) to the NetworkProbe status.
//!
//! The runner emits transitions only, and the agent used to write each one once. Two
//! things then left a status wrong for good: a write that failed (the API server out of
//! reach), and the controller marking the probes of a node whose agent Lease lapsed
//! `Unknown` (`ferry_controller::writer::mark_orphaned_probes`). After a 10 s partition of
//! node2's agent from the API server (issue 15's fault campaign) the agent's probes were
//! still Healthy in its runner, no transition came, and their status stayed `Unknown`. So
//! the agent keeps the last transition of each scheduled probe ([`Reports`]) and writes
//! it again whenever the status it watches says something else ([`needs_write`]), at most
//! once per [`REWRITE_GAP`] per probe (the watch shows a write a moment after it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_api::NetworkProbeStatus;

use super::state::{Phase, Transition};

/// The shortest time between two writes of one probe's status.
pub const REWRITE_GAP: Duration = Duration::from_secs(3);

/// Whether a status that says `stored` must be written with this node's `own` phase:
/// when it is missing, names another phase, or another prober.
pub fn needs_write(own: Phase, stored: Option<&NetworkProbeStatus>, node: &str) -> bool {
    match stored {
        None => true,
        Some(s) => s.phase != own || s.prober.as_deref() != Some(node),
    }
}

/// Whether a probe last written at `last` may be written at `now`.
pub fn due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|l| now.duration_since(l) >= REWRITE_GAP)
}

/// The agent's own view of its probes: the last transition of each, and when its status
/// was last written.
#[derive(Debug, Default)]
pub struct Reports {
    last: BTreeMap<String, (Transition, Option<Instant>)>,
}

impl Reports {
    /// Records a transition (to be written now).
    pub fn transition(&mut self, id: &str, t: Transition, now: Instant) {
        self.last.insert(id.to_string(), (t, Some(now)));
    }

    /// Forgets a probe no longer scheduled here.
    pub fn forget(&mut self, id: &str) {
        self.last.remove(id);
    }

    /// The transitions to write again at `now`, given each probe's status as watched
    /// (`stored(id)`); each returned one counts as written at `now`.
    pub fn rewrites(
        &mut self,
        node: &str,
        now: Instant,
        stored: impl Fn(&str) -> Option<NetworkProbeStatus>,
    ) -> Vec<(String, Transition)> {
        let mut out = Vec::new();
        for (id, (t, last)) in &mut self.last {
            if due(*last, now) && needs_write(t.to, stored(id).as_ref(), node) {
                *last = Some(now);
                out.push((id.clone(), t.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeResult;
    use std::time::SystemTime;

    fn status(phase: Phase, prober: Option<&str>) -> NetworkProbeStatus {
        NetworkProbeStatus {
            phase,
            prober: prober.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn needs_write_table() {
        use Phase::*;
        let cases = [
            ("the first write failed", Healthy, None, true),
            (
                "written and seen",
                Healthy,
                Some(status(Healthy, Some("node2"))),
                false,
            ),
            (
                "marked Unknown by the controller while the Lease lapsed",
                Healthy,
                Some(status(Unknown, Some("node2"))),
                true,
            ),
            (
                "another node's result",
                Healthy,
                Some(status(Healthy, Some("node1"))),
                true,
            ),
            (
                "Unhealthy here, Healthy there",
                Unhealthy,
                Some(status(Healthy, Some("node2"))),
                true,
            ),
            (
                "back to Unknown here (target changed), written",
                Unknown,
                Some(status(Unknown, Some("node2"))),
                false,
            ),
        ];
        for (what, own, stored, want) in cases {
            assert_eq!(needs_write(own, stored.as_ref(), "node2"), want, "{what}");
        }
    }

    fn healthy() -> Transition {
        Transition {
            from: Phase::Unknown,
            to: Phase::Healthy,
            at: SystemTime::UNIX_EPOCH,
            result: ProbeResult {
                success: true,
                inconclusive: false,
                message: "ok".into(),
                latency: Duration::from_millis(1),
            },
        }
    }

    #[test]
    fn a_status_marked_unknown_is_written_again_once_per_gap() {
        let t0 = Instant::now();
        let mut r = Reports::default();
        r.transition("default/p", healthy(), t0);
        let unknown = |_: &str| Some(status(Phase::Unknown, Some("node2")));
        // Just written: not again before the gap.
        assert_eq!(
            r.rewrites("node2", t0 + Duration::from_secs(1), unknown),
            []
        );
        let later = t0 + REWRITE_GAP;
        assert_eq!(
            r.rewrites("node2", later, unknown),
            [("default/p".to_string(), healthy())]
        );
        assert_eq!(
            r.rewrites("node2", later + Duration::from_secs(1), unknown),
            []
        );
        // Once the status says what the agent saw, nothing more.
        let seen = |_: &str| Some(status(Phase::Healthy, Some("node2")));
        assert_eq!(r.rewrites("node2", later + REWRITE_GAP * 2, seen), []);
        r.forget("default/p");
        assert_eq!(r.rewrites("node2", later + REWRITE_GAP * 4, unknown), []);
    }
}
