//! Ferry's controllers, as plain kube-rs clients of any Kubernetes API server. This crate
//! must not depend on the embedded API server.
//!
//! The service controller turns each YusurService into a headless Service, Endpoints, an
//! EndpointSlice and one NetworkProbe per backend, keeping only healthy backends; IPAM gives
//! workloads, nodes and services their addresses; the network controller (with an OVN
//! Northbound database) programs the topology. One module per job; decisions are pure
//! (no client, cache or clock in their signatures) and table-tested beside them:
//!
//! | module | job | pure |
//! |---|---|---|
//! | `caches` | reflector stores, watches, readers that turn them into plain data | - |
//! | `cached` | what the probe store keeps of a NetworkProbe (a projection) | yes |
//! | `changes` | what the watch events say changed | yes |
//! | `index` | backends by label, probes per service, NB ports per workload | yes |
//! | `allocate` (+ `ipam`) | workload, node and probe-port addresses | yes, `write` aside |
//! | `service_ips` | ClusterIPs and EIPs of services | yes |
//! | `plan` (+ `service`, `world`, `problem`) | what each service resolves to | yes |
//! | `cluster_dns` | the cluster DNS address in every VPC, backed by the nodes' resolvers | yes |
//! | `kube_service` | ordinary `v1 Service`s: NB state from EndpointSlices, LoadBalancer addresses | yes |
//! | `status` | conditions and Events | yes |
//! | `nb_work`, `net_model` | what the NB must do, the network model's input | yes |
//! | `network` | the NB seam: the connection and `ferry_nb::Applier`, the one NB applier | - |
//! | `writer` | status and generated objects, off the planning loop | - |
//! | `pass`, [`run`] | the pass driver, leadership, retries (`retry`: the error policy) | - |
//! | `leader`, `leadership` | the Lease task; what a lost or won leadership changes | `leadership`: yes |
//! | `pacing` | when a full pass may run (spaced by its own duration) | yes |
//! | `full_plan` | full passes planned off the pass loop (a standby's; a warm leader's, taken in when done) | - |
//!
//! **A probe result to Endpoints:** the agent patches a NetworkProbe's status -> the probe
//! watch records its service (`changes`) -> `pass` plans that service -> `plan` reads the
//! probe's phase and `service::ready` keeps only Healthy backends -> `nb_work` sees the
//! service's NB state change -> `network::Network::apply_services` ->
//! `ferry_nb::Applier::ensure_services` rewrites its load balancers -> `writer` writes
//! Endpoints, the EndpointSlice and the status (a service's results within
//! `writer::SETTLE` of its previous write are written together).
//!
//! **A YusurService to the NB:** the service watch records it -> `plan` gives it addresses
//! (`service_ips`) and backends -> `net_model::service_state` -> `nb_work` -> `network` ->
//! the `ferry-nb` crate's `Applier` (`ensure_services`, the fast path for ClusterIP
//! services; for everything else a full convergence in a task of its own,
//! `network::Network::converge_beside`: `ferry_net::build_desired`, then
//! `ferry_net::diff_fenced` against the NB mirror, sent in bounded transactions, leaving
//! what the fast paths wrote meanwhile) -> Programmed in its status once the NB committed
//! (for a service the convergence carries, once it ended: `PassState::converged`). The
//! bench, `ferry-net`'s real-NB tests and its `nb_scale` example write the NB through the
//! same `Applier`.

pub mod allocate;
pub mod cached;
pub mod caches;
pub mod changes;
pub mod cluster_dns;
mod converge;
mod full_plan;
pub mod index;
pub mod ipam;
pub mod kube_service;
pub mod leader;
pub mod leadership;
pub mod nb_work;
pub mod net_model;
pub mod network;
pub mod network_status;
pub mod pacing;
pub mod pass;
pub mod plan;
pub mod problem;
pub mod retry;
pub mod service;
pub mod service_ips;
pub mod status;
pub mod world;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::{mpsc, watch};

use crate::caches::Watches;
use crate::changes::Changes;
use crate::ipam::Pool;
use crate::leader::Leadership;
use crate::leadership::Edge;
use crate::pass::{Pass, PassState};
use crate::service_ips::ServicePools;
use crate::writer::Writes;

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where ClusterIPs come from.
    pub service_cidr: String,
    /// EIPs for LoadBalancer services, `a.b.c.d-e.f.g.h`.
    pub eip_pool: Option<String>,
    /// This replica's name in the leader Lease.
    pub identity: String,
    /// A full pass at least this often, even with no change seen: a safety net, since
    /// passes follow watch events (a full pass over 10,000 x 20 takes 35-55 s here).
    pub resync: Duration,
    /// Program OVN (the network controller); `None` runs only the service controller.
    pub network: Option<network::NetworkConfig>,
    /// The cluster DNS address, programmed in every VPC (`cluster_dns`); `None`: none.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The leader Lease's duration (`leader::LeaderConfig::with_lease`); `None`: 5 s.
    pub lease_duration: Option<Duration>,
    /// The API server's client configuration, so the Lease task renews over connections
    /// of its own (`leader`); `None` shares `run`'s client.
    pub lease_client: Option<kube::Config>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            service_cidr: "10.96.0.0/16".into(),
            eip_pool: None,
            identity: format!("ferry-controller-{}", std::process::id()),
            resync: Duration::from_secs(3600),
            network: None,
            cluster_dns: None,
            lease_duration: None,
            lease_client: None,
        }
    }
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("--service-cidr {0:?} is not an IPv4 CIDR")]
    ServiceCidr(String),
    #[error("--eip-pool {0:?} is not a range such as 198.18.0.100-198.18.0.199")]
    EipPool(String),
}

/// Runs the controllers until `shutdown` turns true. Every replica warms up the same way
/// (caches, the NB mirror, and passes in shadow mode that keep indexes, address claims and
/// the planned NB state current without writing); the Lease task (`leader::spawn`) decides
/// which one writes, and a replica stops writing on the edge of its leadership: its pass
/// is dropped and its writer pauses. Winning back the Lease in the same term resumes where
/// it stopped; taking over in a new term starts a fresh writer, and a full pass repairs
/// everything (`leadership`). Either way the first pass programs what shadow passes
/// planned lately (the old leader, or this one paused, may not have).
pub async fn run(
    client: Client,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    let pools = ServicePools {
        cluster_ips: Pool::subnet(&config.service_cidr, None, &[])
            .map_err(|_| ControllerError::ServiceCidr(config.service_cidr.clone()))?,
        eips: match &config.eip_pool {
            Some(p) => {
                Some(Pool::parse_range(p).ok_or_else(|| ControllerError::EipPool(p.clone()))?)
            }
            None => None,
        },
    };
    let (wake_tx, mut wake) = mpsc::channel(1);
    let converged_tx = wake_tx.clone();
    let watches = Watches {
        client: client.clone(),
        changes: Arc::new(Mutex::new(Changes::everything())),
        wake: wake_tx.clone(),
    };
    let c = caches::caches(&watches).await;
    tokio::select! {
        _ = caches::wait_ready(&c) => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    // The NB mirror is warmed before leading too: a standby that wins programs at once.
    let mut net = match &config.network {
        Some(nc) => loop {
            match network::Network::connect(nc.clone()).await {
                Ok(n) => break Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the OVN Northbound database");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut shutdown) => return Ok(()),
                    }
                }
            }
        },
        None => None,
    };
    tracing::info!(identity = %config.identity, "caches and NB mirror warm; standing by");
    let mut lease = leader::LeaderConfig::new(config.identity.clone());
    if let Some(d) = config.lease_duration {
        lease = lease.with_lease(d);
    }
    lease.own_client = config.lease_client.clone();
    let (mut leading, lease_task) = leader::spawn(client.clone(), lease.clone(), shutdown.clone());
    let eip_range = config.eip_pool.as_deref().and_then(|p| {
        let (a, b) = p.split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    });
    let mut st = PassState::default();
    let writes = Writes::new(wake_tx);
    let mut writer: Option<tokio::task::JoinHandle<()>> = None;
    // The term the driver writes in (`None`: standing by), the last one it led in, and
    // since when it stands by.
    let mut acting: Option<leader::Term> = None;
    let mut last_term: Option<leader::Term> = None;
    let mut paused_at = Instant::now();
    // A replica that wins at once (the only one) skips the shadow pass.
    let _ = tokio::time::timeout(lease.retry * 2, won(&mut leading)).await;
    let mut resync = tokio::time::interval(config.resync);
    resync.tick().await;
    // What shadow passes saw lately: on taking over, the old leader may not have
    // programmed it.
    let mut recent = Recent::default();
    let mut repair = false;
    let mut nodes_checked = Instant::now();
    // The first pass is a full one (a repair of everything).
    let mut changes = Changes::everything();
    // Only the first full pass cannot wait; the others are paced (`pacing`).
    let mut urgent = true;
    let mut full_passes = pacing::FullPasses::default();
    // A full pass completed: the indexes and claims are whole.
    let mut warm = false;
    // A warm leader's full pass planned off the loop (`full_plan`), and whether another
    // was asked for meanwhile (one at a time).
    let mut background: Option<full_plan::Background> = None;
    let mut full_asked_meanwhile = false;
    let off_loop = full_plan::OffLoop {
        client: client.clone(),
        c: c.clone(),
        pools: pools.clone(),
        eip_range,
        cluster_dns: config.cluster_dns,
    };
    loop {
        let published = leading.borrow_and_update().clone();
        let edge = leadership::edge(
            acting.as_ref(),
            last_term.as_ref(),
            published.as_ref(),
            paused_at.elapsed(),
            Recent::WINDOW,
        );
        if !matches!(edge, Edge::Same) {
            // Planned for a leadership that moved: stopped and dropped.
            background = None;
            st.planned_since = None;
        }
        match edge {
            Edge::Same => {}
            Edge::Paused => {
                // The writer saw it too and stopped; what it holds waits for the verdict.
                tracing::warn!(identity = %config.identity, "lost leadership; standing by");
                paused_at = Instant::now();
                // A full convergence stopped on the same edge; it is owed again.
                if net.as_mut().is_some_and(network::Network::stop) {
                    st.nb_left.full = true;
                }
            }
            Edge::TookOver => {
                tracing::info!(identity = %config.identity, term = ?published, "taking over");
                if let Some(w) = writer.take() {
                    w.abort();
                }
                writes.clear();
                if let Some(n) = net.as_mut() {
                    n.stop();
                }
                st.nb_left = Default::default();
                st.awaiting_nb.clear();
                repair = true;
            }
            Edge::Resumed { repair: owed } => {
                tracing::info!(identity = %config.identity, "leading again in the same term; nothing dropped");
                repair |= owed;
            }
        }
        if matches!(edge, Edge::TookOver | Edge::Resumed { .. }) {
            // A resumed leader kept its writer; a new term has none.
            if let (None, Some(term)) = (&writer, &published) {
                let run =
                    writes
                        .clone()
                        .run(client.clone(), c.clone(), leading.clone(), term.clone());
                writer = Some(tokio::spawn(run));
            }
            recent.program_again(&mut st, &mut changes);
            last_term.clone_from(&published);
        }
        acting = published;
        let is_leading = acting.is_some();
        changes.merge(Changes::take(&watches.changes));
        if is_leading {
            st.due_retries(&mut changes, &writes, Instant::now());
            if let Some((run, result)) = net.as_mut().and_then(network::Network::finished) {
                st.converged(run, &result, &writes);
            }
        }
        // An agent whose Lease lapsed (or came back) changes who probes what: a full pass.
        // Lapsing is a matter of time, not of events (10k agents renew ~3k times a
        // second), and the scan costs milliseconds at 10k nodes: once a second at most.
        if nodes_checked.elapsed() >= Duration::from_secs(1) {
            nodes_checked = Instant::now();
            if caches::ready_nodes(&c) != st.index.ready_nodes() {
                changes.all = true;
            }
        }
        let asked = std::mem::take(&mut changes.all);
        // A leader's full pass planned off the loop, ready to be taken in.
        let adopted = match background.as_mut().map(full_plan::Background::take_done) {
            Some(Some(done)) => background.take().map(|b| (done, b)),
            _ => None,
        };
        if background.is_some() || adopted.is_some() {
            // One at a time: asked for again meanwhile, it waits for this one.
            full_asked_meanwhile |= asked;
        } else {
            let asked = asked || std::mem::take(&mut full_asked_meanwhile);
            changes.all = std::mem::take(&mut urgent) || full_passes.decide(asked, Instant::now());
        }
        let this = std::mem::take(&mut changes);
        let (full, started) = (this.all, Instant::now());
        if !is_leading {
            recent.record(&this, Instant::now());
        }
        let beside = acting.as_ref().map(|_| pass::Beside {
            leading: leading.clone(),
            term: acting.clone(),
            wake: converged_tx.clone(),
        });
        let p = Pass {
            client: &client,
            c: &c,
            pools: &pools,
            eip_range,
            cluster_dns: config.cluster_dns,
            shadow: !is_leading,
            beside: beside.as_ref(),
        };
        if let Some((done, b)) = adopted {
            // Taken in (`Pass::adopt`); these changes go to the next pass, at once.
            changes.merge(this);
            full_passes.ran(Instant::now(), b.started.elapsed());
            let Some(done) = done else {
                // Failed (logged): owed again, paced.
                st.planned_since = None;
                full_asked_meanwhile = true;
                continue;
            };
            let since = b.take_since();
            tokio::select! {
                _ = p.adopt(done, since, &mut st, net.as_mut(), &writes) => {}
                _ = moved_from(&mut leading, &acting) => {
                    changes.all = true;
                    warm = false;
                }
            }
            continue;
        } else if is_leading && full && warm {
            // The indexes and claims are whole: the full pass is planned off the loop,
            // and the rest of these changes (and the next ones) go through meanwhile.
            let mut rest = this;
            rest.all = false;
            let b = full_plan::Background::start(
                off_loop.clone(),
                Changes::everything(),
                &st,
                converged_tx.clone(),
            );
            b.record(&rest);
            background = Some(b);
            st.planned_since = Some(Default::default());
            // It is the repair a takeover owes, if one does.
            repair = false;
            let again = rest.clone();
            tokio::select! {
                _ = p.run(rest, &mut st, net.as_mut(), &writes) => {}
                _ = moved_from(&mut leading, &acting) => {
                    background = None;
                    st.planned_since = None;
                    changes.merge(again);
                    changes.all = true;
                    warm = false;
                    continue;
                }
            }
        } else if is_leading {
            // The pass stops the moment leadership does (nothing more is written); what
            // it was given is kept for the next one (a full pass may wait, see `pacing`).
            if let Some(b) = &background {
                b.record(&this);
            }
            let again = this.clone();
            tokio::select! {
                _ = p.run(this, &mut st, net.as_mut(), &writes) => {}
                _ = moved_from(&mut leading, &acting) => {
                    changes.merge(again);
                    changes.all = true;
                    // The state may be half-updated: only a completed full pass makes it
                    // whole again.
                    warm = false;
                    // Spaced like one that ran: a full pass cut short again and again
                    // (a lease lost every half minute) must not start over back to back.
                    if full {
                        full_passes.ran(Instant::now(), started.elapsed());
                    }
                    continue;
                }
            }
            if full {
                full_passes.ran(Instant::now(), started.elapsed());
                warm = true;
            }
            // The repair after a takeover is paced too: a leadership that changes hands
            // often (a loaded API server) still gets its incremental passes through.
            if std::mem::take(&mut repair) {
                changes.all = true;
                continue;
            }
        } else if full {
            // A full shadow pass takes tens of seconds at 10k: it rebuilds the state off
            // the async workers, and a win abandons it (`full_plan`).
            let again = this.clone();
            let shadow = full_plan::plan(off_loop.clone(), this, st.for_full_shadow(), None);
            tokio::select! {
                done = shadow => {
                    if let Some(done) = done {
                        st.adopt_full(done);
                        warm = true;
                    }
                    full_passes.ran(Instant::now(), started.elapsed());
                }
                _ = won(&mut leading) => {
                    tracing::info!("won the lease during a full shadow pass; abandoning it");
                    changes.merge(again);
                    // The state is the last pass's, whole: the first pass as leader is
                    // incremental unless no full pass ever completed, and the full pass
                    // follows it as a repair. Owed to pacing instead, it came first: at
                    // 10k a change waited 35 s behind it after a crash failover.
                    changes.all = !warm;
                    urgent |= !warm;
                    repair = true;
                    continue;
                }
                _ = stopped(&mut shutdown) => break,
            }
        } else {
            p.run(this, &mut st, None, &writes).await;
        }
        // Wake for the next retry or for NB work left undone.
        let mut idle = Duration::from_secs(1);
        if let Some(at) = st.next_retry(&writes).filter(|_| is_leading) {
            idle = idle.min(at.saturating_duration_since(Instant::now()));
        }
        // (Not while one is planned off the loop: the one owed is that one.)
        if let Some(at) = full_passes.wake_at().filter(|_| background.is_none()) {
            idle = idle.min(at.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = wake.recv() => {
                // Coalesce a burst of changes into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while wake.try_recv().is_ok() {}
            }
            _ = leading.changed() => {}
            _ = resync.tick() => changes.all = true,
            _ = tokio::time::sleep(idle) => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    if let Some(w) = writer {
        w.abort();
    }
    if let Some(n) = net.as_mut() {
        n.stop();
    }
    // The Lease task saw `shutdown` too and releases the Lease if it held it.
    let _ = lease_task.await;
    Ok(())
}

/// Services and workloads that shadow passes planned lately, with when.
#[derive(Debug, Default)]
struct Recent(
    std::collections::BTreeMap<String, Instant>,
    std::collections::BTreeMap<changes::WorkloadRef, Instant>,
);

impl Recent {
    /// Older than this, the old leader had its chance (and the repair pass follows).
    const WINDOW: Duration = Duration::from_secs(10);

    fn record(&mut self, changes: &Changes, now: Instant) {
        let keys = changes
            .services
            .iter()
            .cloned()
            .chain(changes.probes.iter().map(|(_, s)| s.clone()));
        for k in keys {
            self.0.insert(k, now);
        }
        for w in &changes.workloads {
            self.1.insert(w.clone(), now);
        }
        self.0
            .retain(|_, at| now.duration_since(*at) < Self::WINDOW);
        self.1
            .retain(|_, at| now.duration_since(*at) < Self::WINDOW);
    }

    /// Has the next pass program what shadow passes planned within the window: their
    /// services are planned again as if new to the NB, their workloads' ports sent again
    /// (the port fast path plans from the NB mirror, so a port already there costs
    /// nothing). The old leader, or this one while paused, may not have written them.
    fn program_again(&mut self, st: &mut PassState, changes: &mut Changes) {
        let (keys, workloads) = self.take(Instant::now());
        for k in &keys {
            st.net.remove(k);
        }
        changes.services.extend(keys);
        for w in &workloads {
            if let Some(p) = st.index.port(w) {
                st.nb_left
                    .ports
                    .insert(p.name.clone(), (None, Some(p.clone())));
            }
        }
    }

    /// The services and the workloads seen within the window before `now`.
    fn take(&mut self, now: Instant) -> (Vec<String>, Vec<changes::WorkloadRef>) {
        let fresh = |at: &Instant| now.duration_since(*at) < Self::WINDOW;
        let services = std::mem::take(&mut self.0)
            .into_iter()
            .filter(|(_, at)| fresh(at))
            .map(|(k, _)| k)
            .collect();
        let workloads = std::mem::take(&mut self.1)
            .into_iter()
            .filter(|(_, at)| fresh(at))
            .map(|(k, _)| k)
            .collect();
        (services, workloads)
    }
}

/// Resolves once this replica leads.
async fn won(rx: &mut watch::Receiver<Leadership>) {
    let _ = rx.wait_for(Option::is_some).await.map(|_| ());
}

/// Resolves once the published leadership is no longer `acting` (lost, or a new term).
async fn moved_from(rx: &mut watch::Receiver<Leadership>, acting: &Leadership) {
    let _ = rx.wait_for(|l| l != acting).await.map(|_| ());
}

/// Resolves once shutdown is requested (the guard `wait_for` returns is not `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::BackendKind;

    #[test]
    fn recent_keeps_the_services_and_workloads_of_the_last_window() {
        let t0 = Instant::now();
        let pod = |n: &str| (BackendKind::Pod, format!("default/{n}"));
        // A service change, and a probe result of another service.
        let seen = |svc: &str, w: &str| Changes {
            services: [format!("default/{svc}")].into(),
            workloads: [pod(w)].into(),
            probes: [(format!("default/{svc}p-0"), format!("default/{svc}p"))].into(),
            ..Default::default()
        };
        let mut r = Recent::default();
        r.record(&seen("old", "b-old"), t0);
        r.record(&seen("new", "b-new"), t0 + Duration::from_secs(5));
        // 12 s after the first: only what came 5 s later is left.
        assert_eq!(
            r.take(t0 + Duration::from_secs(12)),
            (
                vec!["default/new".to_string(), "default/newp".to_string()],
                vec![pod("b-new")]
            )
        );
        assert_eq!(r.take(t0 + Duration::from_secs(12)), (vec![], vec![]));
    }
}
