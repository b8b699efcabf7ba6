//! The controller's families: how long a change takes to reach the OVN NB (a service
//! change, a probe result), NB transactions and rows, pass time, and probes by phase.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Table {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassKind {
    pub kind: &'static str,
}

/// Counts of probes by phase, computed at scrape time from the controller's cache.
pub type PhaseSource = Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

/// See the module doc; one per process ([`crate::controller`]).
pub struct ControllerMetrics {
    pub(crate) registry: Registry,
    /// `ferry_service_programming_seconds`: the oldest YusurService/Service change of a pass,
    /// from its watch event to the NB commit of the pass that programmed it.
    pub service_programming_seconds: Histogram,
    /// `ferry_endpoint_flip_seconds`: the oldest probe result (NetworkProbe phase change)
    /// of a pass, from its watch event to the NB commit that added or removed the backend.
    pub endpoint_flip_seconds: Histogram,
    /// `ferry_nb_transaction_seconds`: one OVSDB `transact` to the NB, request to reply.
    pub nb_transaction_seconds: Histogram,
    /// `ferry_nb_rows{table}`: rows of each NB table, as the controller's mirror holds them.
    pub nb_rows: Family<Table, Gauge>,
    /// `ferry_controller_pass_seconds{kind="full"|"incremental"}`.
    pub pass_seconds: Family<PassKind, Histogram, fn() -> Histogram>,
    phases: Arc<Mutex<Option<PhaseSource>>>,
}

impl ControllerMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let phases: Arc<Mutex<Option<PhaseSource>>> = Arc::default();
        let m = ControllerMetrics {
            registry: Registry::default(),
            service_programming_seconds: crate::delay_buckets(),
            endpoint_flip_seconds: crate::delay_buckets(),
            nb_transaction_seconds: crate::latency_buckets(),
            nb_rows: Family::default(),
            pass_seconds: Family::new_with_constructor(crate::latency_buckets),
            phases: phases.clone(),
        };
        registry.register(
            "service_programming_seconds",
            "Time from a YusurService or Service change (watch event) to the NB commit that programs it (the oldest change of each pass)",
            m.service_programming_seconds.clone(),
        );
        registry.register(
            "endpoint_flip_seconds",
            "Time from a probe result (NetworkProbe phase change seen by the controller) to the NB commit that adds or removes the backend",
            m.endpoint_flip_seconds.clone(),
        );
        registry.register(
            "nb_transaction_seconds",
            "Time of one OVN NB transaction, request to reply",
            m.nb_transaction_seconds.clone(),
        );
        registry.register(
            "nb_rows",
            "Rows of each OVN NB table the controller monitors",
            m.nb_rows.clone(),
        );
        registry.register(
            "controller_pass_seconds",
            "Time of one controller pass (plan, NB, status queued), by kind",
            m.pass_seconds.clone(),
        );
        registry.register_collector(Box::new(PhaseCollector(phases)));
        ControllerMetrics { registry, ..m }
    }

    /// Records an NB commit that programmed the changes seen since `services` (service
    /// changes) and `probes` (probe results), the oldest of each kind in the pass.
    pub fn nb_committed(&self, services: Option<Instant>, probes: Option<Instant>) {
        if let Some(t) = services {
            crate::observe_since(&self.service_programming_seconds, t);
        }
        if let Some(t) = probes {
            crate::observe_since(&self.endpoint_flip_seconds, t);
        }
    }

    /// Runs one NB transaction, timing it.
    pub async fn nb_transaction<F: Future>(&self, f: F) -> F::Output {
        let t = Instant::now();
        let out = f.await;
        crate::observe_since(&self.nb_transaction_seconds, t);
        out
    }

    /// Sets the row count of each NB table.
    pub fn set_nb_rows<'a>(&self, tables: impl IntoIterator<Item = (&'a str, usize)>) {
        if !crate::enabled() {
            return;
        }
        for (table, rows) in tables {
            self.nb_rows
                .get_or_create(&Table {
                    table: table.to_string(),
                })
                .set(rows as i64);
        }
    }

    /// Records one pass.
    pub fn pass(&self, full: bool, elapsed: Duration) {
        if !crate::enabled() {
            return;
        }
        let kind = if full { "full" } else { "incremental" };
        self.pass_seconds
            .get_or_create(&PassKind { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// Where `ferry_probes{phase}` comes from: called at each scrape (so counting costs
    /// nothing between scrapes). The last source set wins.
    pub fn probes_from(&self, source: impl Fn() -> Vec<(String, i64)> + Send + Sync + 'static) {
        if let Ok(mut s) = self.phases.lock() {
            *s = Some(Box::new(source));
        }
    }
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics").finish_non_exhaustive()
    }
}

/// Encodes `ferry_probes{phase}` from the current [`PhaseSource`].
struct PhaseCollector(Arc<Mutex<Option<PhaseSource>>>);

impl std::fmt::Debug for PhaseCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseCollector")
    }
}

impl Collector for PhaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = match self.0.lock() {
            Ok(s) => match s.as_ref() {
                Some(f) => f(),
                None => return Ok(()),
            },
            Err(_) => return Ok(()),
        };
        let mut family = encoder.encode_descriptor(
            "probes",
            "NetworkProbes by phase (Healthy, Unhealthy, Unknown)",
            None,
            MetricType::Gauge,
        )?;
        for (phase, n) in counts {
            let labels = [("phase", phase.as_str())];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
