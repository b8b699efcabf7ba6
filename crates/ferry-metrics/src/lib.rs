//! Ferry's Prometheus metrics: the families of every component (API server and its store,
//! controller, node agent) as typed handles, their exposition in the Prometheus/OpenMetrics
//! text format, and a small HTTP endpoint that serves it (`/metrics`, optionally behind a
//! bearer token, with room for extra routes such as the web page).
//!
//! Why one process-wide set per component (`apiserver()`, `controller()`, `agent()`,
//! `store()`): the hooks sit deep in hot paths (a controller pass, a store commit, a probe
//! result) owned by other crates; a static handle keeps each hook one line, with no handle
//! threaded through their structs. Each component still has its own explicit
//! `prometheus_client` registry (no global default registry), so each listener exposes
//! only its own component. Several agents in one process (`ferry up`) share the agent
//! families, which carry a `node` label where a value is per node.
//!
//! This crate must stay cheap on the hot path: recording is a few atomics and, for
//! labelled families, one read-locked map lookup. `FERRY_METRICS=off` turns every hook into
//! a no-op (used to measure what metrics cost).

mod agent;
mod apiserver;
mod controller;
pub mod http;
pub mod labels;
mod store;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub use agent::AgentMetrics;
pub use apiserver::{ApiServerMetrics, RequestTimer};
pub use controller::ControllerMetrics;
pub use store::StoreMetrics;

static ENABLED: LazyLock<AtomicBool> = LazyLock::new(|| {
    let off = std::env::var("FERRY_METRICS")
        .map(|v| matches!(v.trim(), "off" | "0" | "false"))
        .unwrap_or(false);
    AtomicBool::new(!off)
});
static APISERVER: LazyLock<ApiServerMetrics> = LazyLock::new(ApiServerMetrics::new);
static STORE: LazyLock<StoreMetrics> = LazyLock::new(StoreMetrics::new);
static CONTROLLER: LazyLock<ControllerMetrics> = LazyLock::new(ControllerMetrics::new);
static AGENT: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

/// Whether hooks record anything (`FERRY_METRICS=off` at start, or [`set_enabled`]).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns recording on or off for the whole process (benchmarks compare both).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The API server's families (requests, watchers, in-flight, rejections, cache).
pub fn apiserver() -> &'static ApiServerMetrics {
    &APISERVER
}

/// The object store's families (commit and fsync time, batch sizes).
pub fn store() -> &'static StoreMetrics {
    &STORE
}

/// The controller's families (programming delay, NB transactions and rows, probes).
pub fn controller() -> &'static ControllerMetrics {
    &CONTROLLER
}

/// The node agent's families (probe results and latency, plumbed ports).
pub fn agent() -> &'static AgentMetrics {
    &AGENT
}

/// A component whose families an endpoint exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The API server and its store.
    ApiServer,
    Controller,
    Agent,
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text exposition of `components`, in order, ending with `# EOF`.
pub fn encode(components: &[Component]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for c in components {
        let r = match c {
            Component::ApiServer => text::encode_registry(&mut out, &APISERVER.registry)
                .and_then(|()| text::encode_registry(&mut out, &STORE.registry)),
            Component::Controller => text::encode_registry(&mut out, &CONTROLLER.registry),
            Component::Agent => text::encode_registry(&mut out, &AGENT.registry),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
    }
    let _ = text::encode_eof(&mut out);
    out
}

/// Buckets for latencies from 0.5 ms to about 16 s (doubling).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Buckets for end-to-end delays from 1 ms to about 65 s (doubling).
fn delay_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Observes the seconds since `since` on `h` (when recording is on).
#[inline]
fn observe_since(h: &Histogram, since: Instant) {
    if enabled() {
        h.observe(since.elapsed().as_secs_f64());
    }
}

#[inline]
fn observe(h: &Histogram, d: Duration) {
    if enabled() {
        h.observe(d.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
