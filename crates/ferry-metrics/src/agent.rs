//! The node agent's families: probe results by type and outcome, probe latency, and what
//! each node has plumbed.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeResult {
    #[prometheus(flatten)]
    pub kind: ProbeType,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeType {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Node {
    pub node: String,
}

/// See the module doc; one per process ([`crate::agent`]).
#[derive(Debug)]
pub struct AgentMetrics {
    pub(crate) registry: Registry,
    /// `ferry_probe_results_total{type,result="success"|"failure"}`.
    pub probe_results: Family<TypeResult, Counter>,
    /// `ferry_probe_latency_seconds{type}`: time of each probe (success or not).
    pub probe_latency_seconds: Family<ProbeType, Histogram, fn() -> Histogram>,
    /// `ferry_agent_plumbed_ports{node}`: workload and node ports this node's agent plumbed.
    pub plumbed_ports: Family<Node, Gauge>,
    /// `ferry_agent_probes_running{node}`: probes this node's agent runs.
    pub probes_running: Family<Node, Gauge>,
}

impl AgentMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = AgentMetrics {
            registry: Registry::default(),
            probe_results: Family::default(),
            probe_latency_seconds: Family::new_with_constructor(crate::latency_buckets),
            plumbed_ports: Family::default(),
            probes_running: Family::default(),
        };
        registry.register(
            "probe_results",
            "Probe results by probe type (TCP, HTTP, UDP, ICMP) and result",
            m.probe_results.clone(),
        );
        registry.register(
            "probe_latency_seconds",
            "Time each probe took, by probe type",
            m.probe_latency_seconds.clone(),
        );
        registry.register(
            "agent_plumbed_ports",
            "Ports (workloads and the node interface) the node's agent has plumbed",
            m.plumbed_ports.clone(),
        );
        registry.register(
            "agent_probes_running",
            "Probes the node's agent runs",
            m.probes_running.clone(),
        );
        AgentMetrics { registry, ..m }
    }

    /// Records one probe: its type (`TCP`, `HTTP`, ...), outcome and time.
    pub fn probe_result(&self, type_: &'static str, success: bool, latency: Duration) {
        if !crate::enabled() {
            return;
        }
        let kind = ProbeType { r#type: type_ };
        self.probe_latency_seconds
            .get_or_create(&kind)
            .observe(latency.as_secs_f64());
        let result = if success { "success" } else { "failure" };
        self.probe_results
            .get_or_create(&TypeResult { kind, result })
            .inc();
    }

    /// Sets what one node's agent holds: plumbed ports and running probes.
    pub fn node_state(&self, node: &str, plumbed_ports: usize, probes_running: usize) {
        if !crate::enabled() {
            return;
        }
        let n = Node {
            node: node.to_string(),
        };
        self.plumbed_ports
            .get_or_create(&n)
            .set(plumbed_ports as i64);
        self.probes_running
            .get_or_create(&n)
            .set(probes_running as i64);
    }
}
