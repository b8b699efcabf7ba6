//! The network controller: the cluster's network state read from the caches, turned into
//! the desired Northbound rows by `ferry-net`, written through `ferry-ovsdb` in bounded
//! transactions until the NB matches. The first pass after start is a full repair: stale
//! rows Ferry owns are removed, rows it does not own are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ferry_net::{CurrentRow, NetworkState, PortState, ServiceState};
use ferry_ovsdb::{Client, nb};
use ipnet::Ipv4Net;

/// TLS material for `ssl:` NB remotes (re-exported so the binary needs no OVSDB import).
pub use ferry_ovsdb::TlsConfig;

/// The external network as configured on the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalConfig {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// Where and how to program OVN.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// NB remotes (`unix:/path`, `tcp:host:port` or `ssl:host:port`), several for a RAFT
    /// cluster.
    pub remotes: Vec<String>,
    /// Private key, certificate and CA certificate for `ssl:` remotes (OVN's PKI).
    pub tls: Option<TlsConfig>,
    /// The chassis that hosts the gateway routers and gateway ports.
    pub gateway_chassis: String,
    pub external: Option<ExternalConfig>,
    /// Load balancers written per transaction at most.
    pub max_lb_per_txn: usize,
}

/// Errors reaching the NB.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("connecting to the OVN Northbound database {remotes:?}: {source}")]
    Connect {
        remotes: Vec<String>,
        source: ferry_ovsdb::Error,
    },
    #[error("NB transaction failed: {0}")]
    Transact(ferry_ovsdb::Error),
    #[error("planning the NB rows failed: {0}")]
    Plan(String),
}

/// Workload ports written per fast-path transaction at most.
const PORTS_PER_TXN: usize = 1000;

/// A connected network controller.
pub struct Network {
    client: Client,
    config: NetworkConfig,
}

impl Network {
    pub async fn connect(config: NetworkConfig) -> Result<Network, NetworkError> {
        // A large NB (hundreds of thousands of rows) keeps ovsdb-server busy for seconds
        // at a time: allow it before calling the connection dead or a transaction lost.
        let mut c = nb::config(config.remotes.clone());
        c.tls = config.tls.clone();
        c.echo_interval = std::time::Duration::from_secs(15);
        c.request_timeout = std::time::Duration::from_secs(120);
        let client = Client::connect(c)
            .await
            .map_err(|source| NetworkError::Connect {
                remotes: config.remotes.clone(),
                source,
            })?;
        Ok(Network { client, config })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Every row of the tables Ferry writes, as the mirror holds them.
    fn current(client: &Client) -> Vec<CurrentRow> {
        client.with_mirror(|m| {
            let mut rows = Vec::new();
            for t in nb::TABLES {
                for (uuid, cols) in m.table(t.name).into_iter().flatten() {
                    rows.push(CurrentRow {
                        table: t.name.to_string(),
                        uuid: uuid.clone(),
                        columns: cols.clone(),
                    });
                }
            }
            rows
        })
    }

    /// The fast path: converges only the load balancers of `changed` (new states) and of
    /// `owners` (every touched service, removed ones included) with one mutate of each
    /// group they are in. `Ok(false)` when it does not apply (an EIP, a group not yet in
    /// the NB, ...): the caller then converges everything with [`Network::apply`].
    pub async fn apply_services(
        &mut self,
        changed: &[ServiceState],
        owners: &BTreeSet<String>,
    ) -> Result<bool, NetworkError> {
        let current: Vec<CurrentRow> = self.client.with_mirror(|m| {
            let mut rows = Vec::new();
            for t in ["Load_Balancer", "Load_Balancer_Group"] {
                for (uuid, cols) in m.table(t).into_iter().flatten() {
                    if ferry_net::delta_input(t, cols, owners) {
                        rows.push(CurrentRow {
                            table: t.to_string(),
                            uuid: uuid.clone(),
                            columns: cols.clone(),
                        });
                    }
                }
            }
            rows
        });
        // Chunks of services with their owners; owners of removed services go last.
        let mut deltas = Vec::new();
        let mut left = owners.clone();
        for chunk in changed.chunks(self.config.max_lb_per_txn.max(1)) {
            let mine: BTreeSet<String> = chunk
                .iter()
                .map(ferry_net::scenario::service_owner)
                .filter(|o| left.remove(o))
                .collect();
            match ferry_net::cluster_ip_delta(chunk, &mine, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        if !left.is_empty() {
            match ferry_net::cluster_ip_delta(&[], &left, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        self.send_deltas(deltas).await
    }

    /// Sets `ferry_nb_rows{table}` from the mirror.
    fn record_rows(&self) {
        self.client.with_mirror(|m| {
            ferry_metrics::controller()
                .set_nb_rows(m.tables().iter().map(|(t, rows)| (t.as_str(), rows.len())))
        });
    }

    /// Sends a fast path's transactions in order.
    async fn send_deltas(
        &mut self,
        deltas: Vec<Vec<serde_json::Value>>,
    ) -> Result<bool, NetworkError> {
        for ops in deltas.into_iter().filter(|o| !o.is_empty()) {
            ferry_metrics::controller()
                .nb_transaction(self.client.transact(nb::DATABASE, ops))
                .await
                .map_err(NetworkError::Transact)?;
        }
        self.record_rows();
        Ok(true)
    }

    /// The fast path for workload ports: `changes` pairs each changed port's old and new
    /// state. `Ok(false)` when it does not apply (a switch not yet in the NB, ...).
    pub async fn apply_ports(
        &mut self,
        changes: &[(Option<PortState>, Option<PortState>)],
    ) -> Result<bool, NetworkError> {
        let current = self.client.with_mirror(|m| {
            ferry_net::port_delta_current(
                changes,
                m.table("Logical_Switch_Port").into_iter().flatten(),
                m.table("Logical_Switch").into_iter().flatten(),
            )
        });
        // Bounded transactions keep ovsdb-server responsive. Chunks touch distinct ports,
        // so all are planned from this one read; nothing is sent unless all apply.
        let mut deltas = Vec::new();
        for chunk in changes.chunks(PORTS_PER_TXN) {
            match ferry_net::port_delta(chunk, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        self.send_deltas(deltas).await
    }

    /// Converges the NB to `state`; returns the per-object errors of the model (keyed by
    /// object) or the transaction error.
    pub async fn apply(
        &mut self,
        state: &NetworkState,
    ) -> Result<BTreeMap<String, String>, NetworkError> {
        let started = Instant::now();
        // Building and diffing a large network takes seconds of CPU: off the async threads,
        // so the OVSDB connection keeps answering meanwhile.
        let state = state.clone();
        let desired = Arc::new(
            tokio::task::spawn_blocking(move || ferry_net::build_desired(&state))
                .await
                .map_err(|e| NetworkError::Plan(e.to_string()))?,
        );
        let mut txns = 0;
        let mut ops_total = 0;
        // One plan, its bounded transactions sent in order (each stands alone; inserts carry
        // deterministic uuids, so a replay after a lost reply fails instead of duplicating),
        // then a check from the mirror; re-planning only if something else moved meanwhile.
        for _ in 0..3 {
            let (client, d, max) = (
                self.client.clone(),
                desired.clone(),
                self.config.max_lb_per_txn,
            );
            let plan = tokio::task::spawn_blocking(move || {
                ferry_net::diff(&d, &Network::current(&client), max)
            })
            .await
            .map_err(|e| NetworkError::Plan(e.to_string()))?;
            if plan.is_empty() {
                break;
            }
            for ops in plan.transactions {
                ops_total += ops.len();
                txns += 1;
                ferry_metrics::controller()
                    .nb_transaction(self.client.transact(nb::DATABASE, ops))
                    .await
                    .map_err(NetworkError::Transact)?;
            }
        }
        self.record_rows();
        if txns > 0 {
            tracing::info!(
                txns,
                ops = ops_total,
                rows = desired.rows.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "NB converged"
            );
        }
        Ok(desired
            .errors
            .iter()
            .map(|e| (e.object().to_string(), e.to_string()))
            .collect())
    }
}
