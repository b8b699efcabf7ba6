//! Ferry's controllers, as plain kube-rs clients of any Kubernetes API server.
//!
//! The service controller turns each YusurService into a headless Service, Endpoints, an
//! EndpointSlice and one NetworkProbe per backend, keeping only healthy backends; IPAM gives
//! workloads, nodes and services their addresses; the network controller (with an OVN
//! Northbound database) programs the topology. Decisions are pure functions in `ipam`,
//! `service` and `leader`; `reconcile` and `run` are the thin I/O around them. This crate
//! must not depend on the embedded API server.

pub mod index;
pub mod ipam;
pub mod leader;
pub mod network;
pub mod reconcile;
pub mod service;
pub mod world;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::BackendKind;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::index::{Changes, Feed, Index};
use crate::ipam::Pool;
use crate::reconcile::{Pending, ServicePools};
use crate::world::Caches;
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
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            service_cidr: "10.96.0.0/16".into(),
            eip_pool: None,
            identity: format!("ferry-controller-{}", std::process::id()),
            resync: Duration::from_secs(3600),
            network: None,
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

/// The watch of one kind: a reflector store, each event recorded in `changes` and a
/// wake-up sent.
#[derive(Clone)]
struct Watches {
    client: Client,
    changes: Arc<Mutex<Changes>>,
    wake: mpsc::Sender<()>,
}

impl Watches {
    fn reflect<K>(&self, feed: Feed, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        self.reflect_api(Api::all(self.client.clone()), feed, config)
    }

    fn reflect_api<K>(&self, api: Api<K>, feed: Feed, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let (changes, wake) = (self.changes.clone(), self.wake.clone());
        tokio::spawn(async move {
            stream
                .for_each(|ev| {
                    match &ev {
                        Ok(ev) => index::record(&changes, feed, ev),
                        Err(e) => tracing::debug!(error = %e, "watch error (retrying)"),
                    }
                    if !matches!(feed, Feed::AgentLease) {
                        let _ = wake.try_send(());
                    }
                    futures::future::ready(())
                })
                .await;
        });
        reader
    }
}

async fn caches(w: &Watches) -> Caches {
    // VMIs are watched only where the KubeVirt API exists (a watch of a missing API would
    // never become ready).
    let vmi_gvk = kube::api::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let vmis = match kube::discovery::pinned_kind(&w.client, &vmi_gvk).await {
        Ok(_) => Some(w.reflect(
            Feed::Workload(BackendKind::VirtualMachineInstance),
            watcher::Config::default(),
        )),
        Err(_) => None,
    };
    let generated = watcher::Config::default().labels(service::SERVICE_LABEL);
    let all = watcher::Config::default();
    Caches {
        services: w.reflect(Feed::Service, all.clone()),
        pods: w.reflect(Feed::Workload(BackendKind::Pod), all.clone()),
        namespaces: w.reflect(Feed::Global, all.clone()),
        nodes: w.reflect(Feed::Global, all.clone()),
        vpcs: w.reflect(Feed::Global, all.clone()),
        subnets: w.reflect(Feed::Global, all.clone()),
        eips: w.reflect(Feed::Global, all.clone()),
        baremetals: w.reflect(Feed::Workload(BackendKind::BareMetal), all.clone()),
        vnicips: w.reflect(Feed::Workload(BackendKind::VNicIP), all.clone()),
        probes: w.reflect(Feed::Probe, generated.clone()),
        k8s_services: w.reflect(Feed::Generated, generated.clone()),
        endpoints: w.reflect(Feed::Generated, generated.clone()),
        slices: w.reflect(Feed::Generated, generated),
        agent_leases: w.reflect_api(
            Api::namespaced(w.client.clone(), ferry_api::AGENT_LEASE_NAMESPACE),
            Feed::AgentLease,
            all,
        ),
        vmis,
    }
}

async fn wait_ready(c: &Caches) {
    let _ = tokio::join!(
        c.services.wait_until_ready(),
        c.pods.wait_until_ready(),
        c.namespaces.wait_until_ready(),
        c.nodes.wait_until_ready(),
        c.vpcs.wait_until_ready(),
        c.subnets.wait_until_ready(),
        c.eips.wait_until_ready(),
        c.baremetals.wait_until_ready(),
        c.vnicips.wait_until_ready(),
        c.probes.wait_until_ready(),
        c.k8s_services.wait_until_ready(),
        c.endpoints.wait_until_ready(),
        c.slices.wait_until_ready(),
        c.agent_leases.wait_until_ready(),
    );
    if let Some(v) = &c.vmis {
        let _ = v.wait_until_ready().await;
    }
}

/// Runs the controllers until `shutdown` turns true: warm caches at once, writes only while
/// leading, the Lease released on the way out.
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
    let watches = Watches {
        client: client.clone(),
        changes: Arc::new(Mutex::new(Changes::everything())),
        wake: wake_tx,
    };
    let c = caches(&watches).await;
    let lease = leader::LeaderConfig::new(config.identity.clone());
    tokio::select! {
        _ = wait_ready(&c) => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    tracing::info!(identity = %config.identity, "caches warm; waiting for leadership");
    tokio::select! {
        _ = leader::acquire(&client, &lease) => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    tracing::info!(identity = %config.identity, "leading");
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
    let eip_range = config.eip_pool.as_deref().and_then(|p| {
        let (a, b) = p.split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    });
    let mut pending = Pending::default();
    let mut index = Index::default();
    let writes = Writes::default();
    let writer = tokio::spawn(writes.clone().run(client.clone(), c.clone()));
    let mut renewed = Instant::now();
    let mut resync = tokio::time::interval(config.resync);
    resync.tick().await;
    // The first pass is a full one (a repair of everything).
    let mut changes = Changes::everything();
    loop {
        if renewed.elapsed() >= lease.lease_duration / 3 {
            match leader::try_acquire(&client, &lease).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!("lost the leader lease; standing by");
                    writes.clear();
                    tokio::select! {
                        _ = leader::acquire(&client, &lease) => renewed = Instant::now(),
                        _ = stopped(&mut shutdown) => return Ok(()),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed"),
            }
        }
        changes.merge(Changes::take(&watches.changes));
        // An agent whose Lease lapsed (or came back) changes who probes what: a full pass.
        if world::ready_nodes(&c) != index.ready_nodes() {
            changes.all = true;
        }
        let this = std::mem::take(&mut changes);
        let p = Pass {
            client: &client,
            c: &c,
            pools: &pools,
            eip_range,
        };
        p.run(this, &mut pending, &mut index, net.as_mut(), &writes)
            .await;
        tokio::select! {
            _ = wake.recv() => {
                // Coalesce a burst of changes into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while wake.try_recv().is_ok() {}
            }
            _ = resync.tick() => changes.all = true,
            _ = tokio::time::sleep(lease.lease_duration / 3) => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    writer.abort();
    leader::release(&client, &lease).await;
    tracing::info!("released the leader lease");
    Ok(())
}

/// Resolves once shutdown is requested (the guard `wait_for` returns is not `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// What one pass works with.
struct Pass<'a> {
    client: &'a Client,
    c: &'a Caches,
    pools: &'a ServicePools,
    eip_range: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

impl Pass<'_> {
    /// Reconciles what `changes` concern (everything when `changes.all`): IPAM when
    /// something lacks an address, the services concerned, their NB rows (the fast path
    /// when only cluster-IP services' load balancers change, else the whole NB), their
    /// generated objects and status.
    async fn run(
        &self,
        changes: Changes,
        pending: &mut Pending,
        index: &mut Index,
        net: Option<&mut network::Network>,
        writes: &Writes,
    ) {
        let (c, client) = (self.c, self.client);
        let started = Instant::now();
        let full = changes.all;
        let (only, ports, needs_address) = if full {
            index.rebuild(c);
            (None, Vec::new(), true)
        } else {
            let u = index.update(c, &changes);
            let mut only = u.services;
            only.extend(changes.services.iter().cloned());
            (Some(only), u.ports, u.needs_address)
        };
        if only.as_ref().is_some_and(BTreeSet::is_empty)
            && ports.is_empty()
            && !needs_address
            && index.nb_retry.is_empty()
        {
            return;
        }
        if needs_address {
            reconcile::allocate_workloads(client, c, pending).await;
            reconcile::allocate_probe_ports(client, c, pending).await;
        }
        let mut vpcs: BTreeSet<String> = c.vpcs.state().iter().map(|v| v.name_any()).collect();
        vpcs.insert(ferry_api::DEFAULT_VPC.to_string());
        let planning = Instant::now();
        let outcomes =
            reconcile::plan_services(c, self.pools, pending, &vpcs, index, only.as_ref());
        let plan_ms = planning.elapsed().as_millis() as u64;
        let nb_started = Instant::now();
        // What the NB should hold: every service in a full pass, the concerned ones else.
        // NB work a failed transaction left undone is retried with this pass's.
        let mut retry = std::mem::take(&mut index.nb_retry);
        retry.full |= full;
        match &only {
            None => {
                index.net = outcomes
                    .iter()
                    .filter_map(|o| Some((o.key.clone(), network::service_state(o)?)))
                    .collect();
            }
            Some(keys) => {
                // Only the services whose NB state changed go to the fast path.
                let mut now: BTreeMap<&str, _> = outcomes
                    .iter()
                    .filter_map(|o| Some((o.key.as_str(), network::service_state(o)?)))
                    .collect();
                for k in keys {
                    let new = now.remove(k.as_str());
                    if index.net.get(k) == new.as_ref() {
                        continue;
                    }
                    retry
                        .owners
                        .extend(new.iter().map(ferry_net::scenario::service_owner));
                    let old = match new {
                        Some(st) => {
                            retry.services.insert(k.clone());
                            index.net.insert(k.clone(), st)
                        }
                        None => index.net.remove(k),
                    };
                    retry
                        .owners
                        .extend(old.iter().map(ferry_net::scenario::service_owner));
                }
            }
        }
        for (old, new) in ports {
            if let Some(name) = new.as_ref().or(old.as_ref()).map(|p| p.name.clone()) {
                retry
                    .ports
                    .entry(name)
                    .and_modify(|e| e.1 = new.clone())
                    .or_insert((old, new));
            }
        }
        // Programmed is set only after the NB commit that carries the service.
        let programmed: Option<Result<BTreeMap<String, String>, String>> = match net {
            Some(_) if retry.is_empty() => Some(Ok(BTreeMap::new())),
            Some(net) => {
                // Fast paths: the changed ports, then the changed services. One that does
                // not apply means converging everything; one that fails is retried.
                let ports: Vec<_> = retry.ports.values().cloned().collect();
                let changed: Vec<_> = retry
                    .services
                    .iter()
                    .filter_map(|k| index.net.get(k).cloned())
                    .collect();
                let fast = if retry.full {
                    Ok(false)
                } else if ports.is_empty() {
                    Ok(true)
                } else {
                    net.apply_ports(&ports).await
                };
                let fast = match fast {
                    Ok(true) if !retry.owners.is_empty() => {
                        net.apply_services(&changed, &retry.owners).await
                    }
                    other => other,
                };
                match fast {
                    Ok(true) => Some(Ok(BTreeMap::new())),
                    Err(e) => {
                        tracing::warn!(error = %e, "NB fast path failed; retrying next pass");
                        index.nb_retry = retry;
                        Some(Err(e.to_string()))
                    }
                    Ok(false) => {
                        let state = network::network_state(
                            c,
                            index.net.values().cloned().collect(),
                            net.config(),
                            self.eip_range,
                        );
                        let r = net.apply(&state).await.map_err(|e| e.to_string());
                        if r.is_err() {
                            index.nb_retry.full = true;
                        }
                        Some(r)
                    }
                }
            }
            None => None,
        };
        let nb_ms = nb_started.elapsed().as_millis() as u64;
        if full {
            reconcile::mark_orphaned_probes(client, c, &outcomes).await;
        }
        // The NB first (the data plane matters most); status and the Kubernetes objects
        // are written by the writer task.
        let services = outcomes.len();
        for o in outcomes {
            let p = programmed.as_ref().map(|r| match r {
                Ok(errors) => match errors.get(&o.key) {
                    Some(msg) => Err(msg.clone()),
                    None if o
                        .problem
                        .as_ref()
                        .is_some_and(|(reason, _)| reason != "NoBackends") =>
                    {
                        Err("not programmed: see the Ready condition".to_string())
                    }
                    None => Ok(()),
                },
                Err(e) => Err(e.clone()),
            });
            let status = reconcile::desired_status(&o, p);
            writes.push(o, status);
        }
        tracing::debug!(
            full,
            services,
            plan_ms,
            nb_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconcile pass"
        );
    }
}
