//! [`ProbeRunner`]: one tokio task per probe target, each with its own interval timer,
//! sockets from a shared per-namespace [`NetnsSocketFactory`], and phase transitions sent
//! on a channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use super::exec::execute;
use super::state::{ProbeState, Transition};
use super::target::ProbeSpec;
use crate::netns::{NetnsError, NetnsSocketFactory, SocketSource};

/// A phase change of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub id: String,
    pub transition: Transition,
}

/// Why a probe could not be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("probe {id}: {source}")]
    Netns {
        id: String,
        #[source]
        source: NetnsError,
    },
    #[error("probe {id}: period must be positive")]
    ZeroPeriod { id: String },
}

struct Scheduled {
    spec: watch::Sender<ProbeSpec>,
    task: JoinHandle<()>,
    netns: Option<PathBuf>,
}

/// Schedules probes on the current tokio runtime.
///
/// Must be created and used inside a runtime. Dropping it stops every probe.
pub struct ProbeRunner {
    probes: HashMap<String, Scheduled>,
    factories: HashMap<PathBuf, (NetnsSocketFactory, usize)>,
    events: mpsc::Sender<ProbeEvent>,
}

impl std::fmt::Debug for ProbeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeRunner")
            .field("probes", &self.probes.len())
            .field("namespaces", &self.factories.len())
            .finish()
    }
}

impl ProbeRunner {
    /// A runner and the receiving end of its transitions. When the receiver is full,
    /// probes wait (transitions are never dropped).
    pub fn new(capacity: usize) -> (ProbeRunner, mpsc::Receiver<ProbeEvent>) {
        let (events, rx) = mpsc::channel(capacity.max(1));
        (
            ProbeRunner {
                probes: HashMap::new(),
                factories: HashMap::new(),
                events,
            },
            rx,
        )
    }

    /// Adds a probe, or updates it in place. A changed target (kind, address, port, path)
    /// starts over from Unknown (reporting that as a transition if the phase was known);
    /// changed timings or thresholds keep the phase. A changed namespace is a new probe.
    pub fn upsert(&mut self, spec: ProbeSpec) -> Result<(), RunnerError> {
        if spec.period.is_zero() {
            return Err(RunnerError::ZeroPeriod { id: spec.id });
        }
        if let Some(existing) = self.probes.get(&spec.id) {
            if existing.netns == spec.netns && !existing.task.is_finished() {
                existing.spec.send_if_modified(|cur| {
                    let changed = *cur != spec;
                    *cur = spec;
                    changed
                });
                return Ok(());
            }
            self.remove(&spec.id.clone());
        }
        let sockets = match &spec.netns {
            None => SocketSource::Host,
            Some(path) => SocketSource::Netns(self.factory(&spec.id, path)?),
        };
        let (tx, rx) = watch::channel(spec.clone());
        let task = tokio::spawn(run_probe(rx, sockets, self.events.clone()));
        self.probes.insert(
            spec.id.clone(),
            Scheduled {
                spec: tx,
                task,
                netns: spec.netns,
            },
        );
        Ok(())
    }

    /// Stops a probe; true if it existed. A namespace's socket thread ends with its last
    /// probe.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(s) = self.probes.remove(id) else {
            return false;
        };
        s.task.abort();
        if let Some(path) = s.netns
            && let Some((_, users)) = self.factories.get_mut(&path)
        {
            *users -= 1;
            if *users == 0 {
                self.factories.remove(&path);
            }
        }
        true
    }

    /// Number of scheduled probes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Namespaces with a socket thread.
    pub fn namespaces(&self) -> usize {
        self.factories.len()
    }

    fn factory(&mut self, id: &str, path: &PathBuf) -> Result<NetnsSocketFactory, RunnerError> {
        if let Some((f, users)) = self.factories.get_mut(path) {
            *users += 1;
            return Ok(f.clone());
        }
        let f = NetnsSocketFactory::open(path).map_err(|source| RunnerError::Netns {
            id: id.to_string(),
            source,
        })?;
        self.factories.insert(path.clone(), (f.clone(), 1));
        Ok(f)
    }
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        for s in self.probes.values() {
            s.task.abort();
        }
    }
}

/// Spreads the first attempts of many probes over one period (stable per id).
fn first_delay(id: &str, period: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let nanos = period.as_nanos().max(1) as u64;
    Duration::from_nanos(h % nanos)
}

/// The `type` label of a probe's results (as NetworkProbe's `spec.type` names it).
#[allow(clippy::unneeded_struct_pattern)] // `Udp { .. }` matches the unit and the struct form
fn kind_label(kind: &super::target::ProbeKind) -> &'static str {
    use super::target::ProbeKind;
    match kind {
        ProbeKind::Tcp => "TCP",
        ProbeKind::Http { .. } => "HTTP",
        ProbeKind::Udp { .. } => "UDP",
        ProbeKind::Icmp => "ICMP",
    }
}

async fn run_probe(
    mut specs: watch::Receiver<ProbeSpec>,
    sockets: SocketSource,
    events: mpsc::Sender<ProbeEvent>,
) {
    let mut spec = specs.borrow_and_update().clone();
    let mut state = ProbeState::new(spec.thresholds);
    let new_ticker = |start: Instant, period: Duration| {
        let mut t = interval_at(start, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    };
    let mut ticker = new_ticker(
        Instant::now() + first_delay(&spec.id, spec.period),
        spec.period,
    );
    loop {
        let transition = tokio::select! {
            _ = ticker.tick() => {
                let result = execute(&sockets, &spec.target, spec.timeout).await;
                ferry_metrics::agent().probe_result(kind_label(&spec.target.kind), result.success, result.latency);
                tracing::trace!(probe = %spec.id, success = result.success, message = %result.message, "probe");
                state.observe(&result, SystemTime::now())
            }
            changed = specs.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = specs.borrow_and_update().clone();
                state.set_thresholds(new.thresholds);
                let t = if new.target != spec.target {
                    state.reset(SystemTime::now(), "probe target changed")
                } else {
                    None
                };
                if new.period != spec.period || new.target != spec.target {
                    ticker = new_ticker(Instant::now(), new.period);
                }
                spec = new;
                t
            }
        };
        if let Some(transition) = transition {
            tracing::debug!(probe = %spec.id, from = transition.from.as_str(), to = transition.to.as_str(), message = %transition.result.message, "probe transition");
            let event = ProbeEvent {
                id: spec.id.clone(),
                transition,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_delay_is_within_period_and_spread() {
        let p = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..1000)
            .map(|i| first_delay(&format!("ns/probe-{i}"), p))
            .collect();
        assert!(delays.iter().all(|d| *d < p));
        assert_eq!(first_delay("a", p), first_delay("a", p));
        // Spread: each tenth of the period gets some probes.
        for tenth in 0..10 {
            let lo = p / 10 * tenth;
            let hi = p / 10 * (tenth + 1);
            assert!(
                delays.iter().any(|d| *d >= lo && *d < hi),
                "no probe in tenth {tenth}"
            );
        }
    }
}
