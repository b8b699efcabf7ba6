//! The object store's families: batch commit time, the durable commit (fsync) inside it,
//! and how many writes share one commit.

use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// See the module doc; one per process ([`crate::store`]).
#[derive(Debug)]
pub struct StoreMetrics {
    pub(crate) registry: Registry,
    /// `ferry_store_commit_seconds`: one batch, from the write transaction's start to its
    /// durable commit.
    pub commit_seconds: Histogram,
    /// `ferry_store_fsync_seconds`: the durable commit alone (redb's fsyncs).
    pub fsync_seconds: Histogram,
    /// `ferry_store_batch_writes`: writes committed under one fsync.
    pub batch_writes: Histogram,
}

impl StoreMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry_store");
        let m = StoreMetrics {
            registry: Registry::default(),
            commit_seconds: crate::latency_buckets(),
            fsync_seconds: crate::latency_buckets(),
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        };
        registry.register(
            "commit_seconds",
            "Time to apply and durably commit one batch of writes",
            m.commit_seconds.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Time of the durable commit (fsync) of one batch",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "batch_writes",
            "Writes committed together under one fsync",
            m.batch_writes.clone(),
        );
        StoreMetrics { registry, ..m }
    }

    /// Records one committed batch: its size, total time and fsync time.
    pub fn committed(&self, writes: usize, total: Duration, fsync: Duration) {
        if !crate::enabled() {
            return;
        }
        crate::observe(&self.commit_seconds, total);
        crate::observe(&self.fsync_seconds, fsync);
        self.batch_writes.observe(writes as f64);
    }
}
