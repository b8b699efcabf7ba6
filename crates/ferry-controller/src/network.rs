//! The network controller's NB seam: a connection to the OVN Northbound database and
//! `ferry-nb`'s [`Applier`] on it. A pass hands it the cluster's network state (a full
//! convergence: `ferry_net::build_desired`, then the applier's diff and bounded
//! transactions until the NB matches) or what changed (the applier's per-service and
//! per-port fast paths). The first pass after start is a full repair: stale rows Ferry
//! owns are removed, rows it does not own are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_nb::{Applier, PortChange};
use ferry_net::{NetworkState, ServiceState};
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
    #[error(transparent)]
    Apply(#[from] ferry_nb::Error),
}

/// A connected network controller.
pub struct Network {
    nb: Applier,
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
        Ok(Network {
            nb: Applier::new(client, config.max_lb_per_txn),
            config,
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
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
        let applied = self.nb.ensure_services(changed, owners).await?;
        Ok(applied.is_some())
    }

    /// The fast path for workload ports: `changes` pairs each changed port's old and new
    /// state. `Ok(false)` when it does not apply (a switch not yet in the NB, ...).
    pub async fn apply_ports(&mut self, changes: &[PortChange]) -> Result<bool, NetworkError> {
        let applied = self.nb.ensure_ports(changes).await?;
        Ok(applied.is_some())
    }

    /// Converges the NB to `state`; returns the per-object errors of the model (keyed by
    /// object) or the transaction error.
    pub async fn apply(
        &mut self,
        state: &NetworkState,
    ) -> Result<BTreeMap<String, String>, NetworkError> {
        let (desired, _) = self.nb.ensure_state(state.clone()).await?;
        Ok(desired
            .errors
            .iter()
            .map(|e| (e.object().to_string(), e.to_string()))
            .collect())
    }
}
