//! What the pass driver does when the leadership the Lease task publishes changes (pure).
//!
//! A leader that misses its renew deadline stops writing at once, but on a loaded API
//! server it usually wins the same Lease back a moment later, nobody else having held it.
//! Dropping its writer's queue then (thousands of statuses and Endpoints at 10k services)
//! and repairing everything with a full pass cost the fifth 10k-node run every service:
//! 30 such losses in 15 minutes, each followed by a ~30 s full pass. So leadership
//! *pauses* on a loss, and a win in the same [`Term`] *resumes* it with everything kept;
//! only a win in a new term (someone else held the Lease, and may have written) starts
//! over.

use std::time::Duration;

use crate::leader::Term;

/// What changed, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Nothing.
    Same,
    /// No longer leading: the writer stops writing and keeps its queue; passes plan in
    /// shadow (they write nothing).
    Paused,
    /// Leading again in the term it paused in: the queue, the NB work left over and the
    /// writer's memory of its own writes are still right. Only what shadow passes planned
    /// meanwhile is programmed again, and a repair (a paced full pass) follows only when
    /// the pause outlasted what the driver remembers of them (`repair`).
    Resumed { repair: bool },
    /// Leading in a new term: start over (a fresh writer with an empty queue, the NB work
    /// left over dropped, what shadow passes planned programmed again, then a repair).
    TookOver,
}

/// The edge from `acting` (the term the driver writes in, `None` while paused) to
/// `published`; `last` is the term it last led in and `paused` how long ago it stopped;
/// shadow passes are remembered for `remembered`.
pub fn edge(
    acting: Option<&Term>,
    last: Option<&Term>,
    published: Option<&Term>,
    paused: Duration,
    remembered: Duration,
) -> Edge {
    match (acting, published) {
        (a, p) if a == p => Edge::Same,
        (Some(_), None) => Edge::Paused,
        (None, Some(p)) if last == Some(p) => Edge::Resumed {
            repair: paused >= remembered,
        },
        _ => Edge::TookOver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(uid: &str, transitions: i32) -> Term {
        Term {
            lease_uid: uid.into(),
            transitions,
        }
    }

    #[test]
    fn a_win_in_the_same_term_resumes_and_any_other_starts_over() {
        let s = Duration::from_secs;
        let (t1, t2, other_lease) = (term("u", 1), term("u", 2), term("v", 1));
        let window = s(10);
        let table = [
            // (acting, last, published, paused for, edge)
            (None, None, None, s(0), Edge::Same),
            (Some(&t1), Some(&t1), Some(&t1), s(0), Edge::Same),
            // The first win.
            (None, None, Some(&t1), s(0), Edge::TookOver),
            (Some(&t1), Some(&t1), None, s(0), Edge::Paused),
            // Back in the same term: nobody held it in between.
            (
                None,
                Some(&t1),
                Some(&t1),
                s(3),
                Edge::Resumed { repair: false },
            ),
            // Paused longer than shadow passes are remembered: a repair follows.
            (
                None,
                Some(&t1),
                Some(&t1),
                s(10),
                Edge::Resumed { repair: true },
            ),
            // Someone else held it in between (a transition), or the Lease was re-created.
            (None, Some(&t1), Some(&t2), s(1), Edge::TookOver),
            (None, Some(&t1), Some(&other_lease), s(1), Edge::TookOver),
            // Taken back from another holder without a pause being published.
            (Some(&t1), Some(&t1), Some(&t2), s(0), Edge::TookOver),
        ];
        for (acting, last, published, paused, want) in table {
            assert_eq!(
                edge(acting, last, published, paused, window),
                want,
                "{acting:?} {last:?} {published:?} {paused:?}"
            );
        }
    }
}
