//! The network controller's NB seam: a connection to the OVN Northbound database and
//! `ferry-nb`'s [`Applier`] on it. A pass hands it what changed (the applier's per-service
//! and per-port fast paths) or, when those do not cover it, the cluster's network state: a
//! full convergence (`ferry_net::build_desired`, then the applier's fenced diff and bounded
//! transactions until the NB matches) that runs as a task of its own beside the passes and
//! their fast paths, which it never undoes ([`Network::converge_beside`]). At 10,000
//! services x 20 that convergence takes tens of seconds; no change waits for it. The first
//! pass after start is a full repair: stale rows Ferry owns are removed, rows it does not
//! own are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_nb::{Applier, PortChange};
use ferry_net::{NetworkState, ServiceState};
use ferry_ovsdb::{Client, nb};
use ipnet::Ipv4Net;
use std::future::Future;

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
    /// Full convergences started so far.
    started: u64,
    /// The one running, with its number.
    running: Option<(u64, tokio::task::JoinHandle<Converged>)>,
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
            started: 0,
            running: None,
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The fast path: converges only the load balancers of `changed` (new states) and of
    /// `owners` (every touched service, removed ones included) with one mutate of each
    /// group they are in. `Ok(false)` when it does not apply (an EIP, a group not yet in
    /// the NB, ...): the caller then converges everything ([`Network::converge_beside`]).
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

    /// Starts converging the NB to what `state` builds (a snapshot of now, built off the
    /// async workers: at 10k it reads 200,000 pods) in a task of its own, unless one runs
    /// already (see [`Network::running`]). Fast paths that run meanwhile are left
    /// alone (`ferry_nb::Applier::ensure_fenced`). The task ends when `stop` resolves (the
    /// leadership it was started under is gone) and wakes the pass driver through `wake`
    /// when it ends; [`Network::finished`] then gives its result. Returns the run's number.
    pub fn converge_beside(
        &mut self,
        state: impl FnOnce() -> NetworkState + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
        wake: tokio::sync::mpsc::Sender<()>,
    ) -> u64 {
        let run = self.started + 1;
        if self.running.is_some() {
            return run;
        }
        self.started = run;
        // From the snapshot on: whatever a fast path writes after this is fenced.
        let fence = self.nb.fence_from_now();
        let nb = self.nb.clone();
        let task = tokio::spawn(async move {
            let converge = async {
                let desired =
                    tokio::task::spawn_blocking(move || ferry_net::build_desired(&state()))
                        .await
                        .map_err(|e| e.to_string())?;
                let desired = std::sync::Arc::new(desired);
                nb.ensure_fenced(desired.clone(), fence)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(desired
                    .errors
                    .iter()
                    .map(|e| (e.object().to_string(), e.to_string()))
                    .collect())
            };
            let result = tokio::select! {
                r = converge => r,
                _ = stop => Err("stopped: no longer leading".to_string()),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "NB convergence failed; retrying next pass");
            }
            let _ = wake.try_send(());
            result
        });
        self.running = Some((run, task));
        run
    }

    /// Whether a convergence runs: one asked for meanwhile waits for it to end, and is
    /// given the number [`Network::converge_beside`] would return.
    pub fn running(&self) -> Option<u64> {
        self.running.as_ref().map(|_| self.started + 1)
    }

    /// The number and result of the convergence that ended since the last call: the
    /// model's per-object errors, or why it failed.
    pub fn finished(&mut self) -> Option<(u64, Converged)> {
        if !self.running.as_ref().is_some_and(|(_, t)| t.is_finished()) {
            return None;
        }
        let (run, task) = self.running.take()?;
        let result = futures::FutureExt::now_or_never(task)?
            .unwrap_or_else(|e| Err(format!("the NB convergence task failed: {e}")));
        Some((run, result))
    }

    /// Stops a running convergence (leadership was lost); true if one ran.
    pub fn stop(&mut self) -> bool {
        match self.running.take() {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// What a full convergence ended with: the model's per-object errors (keyed by object),
/// or why it failed.
pub type Converged = Result<BTreeMap<String, String>, String>;
