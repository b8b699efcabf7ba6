//! One pass, the I/O sequence around the pure modules: update the indexes from what changed,
//! give addresses to what lacks one (`allocate`), plan the services concerned (`plan`), send
//! the NB its work (`nb_work`, then `network`), and queue each service's status and objects
//! for the writer (`status`, `writer`). Level-triggered: a pass reads the caches, never the
//! event that woke it. `Pass::plan` is the first half, `Pass::finish` the second; a full
//! plan made off the loop (`crate::full_plan`) is finished by `Pass::adopt`. Taking a plan
//! in (`adopt`), the address and status writes (`writes`) and the tests live beside; this
//! file keeps the sequence itself whole, ~600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ferry_api::BackendKind;
use ferry_net::ServiceState;
use kube::Client;
use kube::runtime::reflector::Store;

use crate::allocate::{self, Holder};
use crate::cached::CachedProbe;
use crate::caches::{self, Caches, cached};
use crate::changes::Changes;
use crate::index::Index;
use crate::kube_service;
use crate::nb_work::{self, NbWork};
use crate::network::Converged;
use crate::network::Network;
use crate::plan::ServiceOutcome;
use crate::plan::{self, PlanInput, ProbeView};
use crate::retry::Retries;
use crate::service_ips::{self, Claims, ServicePools};
use crate::status::{self, NbResult};
use crate::writer::{self, Writes};

mod adopt;
mod writes;
pub(crate) use adopt::FullPlan;
pub(crate) use writes::{StatusPatch, status_patches};

impl ProbeView for Store<CachedProbe> {
    fn probe(&self, namespace: &str, name: &str) -> Option<Arc<CachedProbe>> {
        cached(self, namespace, name)
    }
}

/// What passes keep from one to the next.
#[derive(Debug, Default)]
pub struct PassState {
    pub index: Index,
    pub claims: Claims,
    pub service_pending: service_ips::Pending,
    pub address_pending: allocate::Pending,
    /// What the NB should hold for each programmable service, as last planned.
    pub net: BTreeMap<String, ServiceState>,
    /// NB work a failed transaction left undone.
    pub nb_left: NbWork,
    /// Holders whose address write failed, asked again with backoff.
    pub address_retries: Retries<Holder>,
    /// Services whose Programmed condition waits for a full convergence running beside
    /// the passes: its number, and the outcome to write once it ends.
    pub awaiting_nb: BTreeMap<String, (u64, Arc<ServiceOutcome>)>,
    /// When the changes a full convergence carries were first seen (services, probes), by
    /// its number: the programming and flip metrics are observed once it ends.
    pub awaiting_seen: BTreeMap<u64, (Option<Instant>, Option<Instant>)>,
    /// While a full pass is planned off the loop: every service (and ordinary Service)
    /// the loop planned since it started (`Pass::adopt`).
    pub planned_since: Option<BTreeSet<String>>,
}

impl PassState {
    /// Adds the retries that are due to `changes`.
    pub fn due_retries(&mut self, changes: &mut Changes, writes: &Writes, now: Instant) {
        for h in self.address_retries.take_due(now) {
            let workload = |kind: BackendKind, ns: &str, name: &str| (kind, format!("{ns}/{name}"));
            match &h {
                Holder::Pod { namespace, name } => {
                    changes
                        .workloads
                        .insert(workload(BackendKind::Pod, namespace, name));
                }
                Holder::Vmi { namespace, name } => {
                    changes.workloads.insert(workload(
                        BackendKind::VirtualMachineInstance,
                        namespace,
                        name,
                    ));
                }
                Holder::BareMetal { namespace, name } => {
                    changes
                        .workloads
                        .insert(workload(BackendKind::BareMetal, namespace, name));
                }
                Holder::VNicIP { namespace, name } => {
                    changes
                        .workloads
                        .insert(workload(BackendKind::VNicIP, namespace, name));
                }
                Holder::Node(_) | Holder::ProbePort { .. } => changes.all = true,
            }
        }
        if let Ok(mut r) = writes.retries.lock() {
            changes.services.extend(r.take_due(now));
        }
    }

    /// What a full shadow pass starts from: a full pass rebuilds the index, the claims and
    /// the planned NB states from the caches, so only the service addresses handed out
    /// and not yet seen are carried (no copy of the 200,000-workload index: at 10k that
    /// took seconds on a loaded machine, and delayed noticing a win by as much).
    pub fn for_full_shadow(&self) -> PassState {
        PassState {
            service_pending: self.service_pending.clone(),
            ..Default::default()
        }
    }

    /// Takes what a full shadow pass planned off the loop (`crate::full_plan`) rebuilt:
    /// a standby's whole state.
    pub(crate) fn adopt_full(&mut self, done: FullPlan) {
        self.index = done.state.index;
        self.claims = done.state.claims;
        self.service_pending = done.state.service_pending;
        self.net = done.planned.states;
    }

    /// Writes the statuses that waited for full convergence `run`, now ended with
    /// `result`. A failed one is owed again, and its services wait for the next one as
    /// well: their failure is shown meanwhile, and a success clears it.
    pub fn converged(&mut self, run: u64, result: &Converged, writes: &Writes) {
        let failed = result.is_err();
        if failed {
            self.nb_left.full = true;
        }
        for (r, seen) in std::mem::take(&mut self.awaiting_seen) {
            if r > run {
                self.awaiting_seen.insert(r, seen);
            } else if failed {
                self.wait_seen(run + 1, seen);
            } else {
                ferry_metrics::controller().nb_committed(seen.0, seen.1);
            }
        }
        let now = jiff::Timestamp::now();
        let (done, waiting) = std::mem::take(&mut self.awaiting_nb)
            .into_iter()
            .partition(|(_, (r, _))| *r <= run);
        self.awaiting_nb = waiting;
        let done: BTreeMap<String, (u64, Arc<ServiceOutcome>)> = done;
        for (key, (_, o)) in done {
            let status = status::desired_status(&o, status::programmed(&o, Some(result)), now);
            if failed {
                self.awaiting_nb.insert(key, (run + 1, o.clone()));
            }
            writes.push(o, status);
        }
    }

    /// Records that changes first seen at `seen` wait for full convergence `run`.
    fn wait_seen(&mut self, run: u64, seen: (Option<Instant>, Option<Instant>)) {
        use crate::changes::earliest;
        let e = self.awaiting_seen.entry(run).or_default();
        *e = (earliest(e.0, seen.0), earliest(e.1, seen.1));
    }

    /// When the next retry is due.
    pub fn next_retry(&self, writes: &Writes) -> Option<Instant> {
        let services = writes.retries.lock().ok().and_then(|r| r.next_due());
        [self.address_retries.next_due(), services]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What one pass works with.
pub struct Pass<'a> {
    pub client: &'a Client,
    pub c: &'a Caches,
    pub pools: &'a ServicePools,
    pub eip_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The cluster DNS address, programmed in every VPC.
    pub cluster_dns: Option<Ipv4Addr>,
    /// A standby's pass: plans and keeps `PassState` warm, writes nothing (no address,
    /// no NB transaction, no status); see `leader`.
    pub shadow: bool,
    /// How a full convergence this pass starts stops and reports (a leader's passes).
    pub beside: Option<&'a Beside>,
}

/// What a full convergence started by a pass runs under: the leadership it stops with,
/// and the pass driver's wake-up.
#[derive(Clone)]
pub struct Beside {
    pub leading: tokio::sync::watch::Receiver<crate::leader::Leadership>,
    pub term: crate::leader::Leadership,
    pub wake: tokio::sync::mpsc::Sender<()>,
}

impl Beside {
    /// Resolves once the leadership is no longer `term`.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mut rx, term) = (self.leading.clone(), self.term.clone());
        async move {
            let _ = rx.wait_for(|l| *l != term).await.map(|_| ());
        }
    }
}

/// What became of a pass's NB work: the fast paths' result, and the full convergence that
/// carries the rest, if any.
struct Sent {
    now: NbResult,
    /// Services the service fast path programmed.
    carried: BTreeSet<String>,
    /// The convergence's number: the statuses of services it carries wait for it.
    beside: Option<u64>,
}

/// What a pass planned, before the NB and the writer are given it.
pub struct Planned {
    full: bool,
    started: Instant,
    /// When the changes planned were first seen (services, probes).
    seen: (Option<Instant>, Option<Instant>),
    prepare_ms: u64,
    plan_ms: u64,
    /// The services planned (`None`: every one).
    only: Option<BTreeSet<String>>,
    ports: Vec<nb_work::PortChange>,
    outcomes: Vec<ServiceOutcome>,
    states: BTreeMap<String, ServiceState>,
    kube: BTreeMap<String, Option<caches::KubeService>>,
    lb_ips: BTreeMap<String, Result<Ipv4Addr, crate::problem::Problem>>,
}

impl Pass<'_> {
    /// Reconciles what `changes` concern (everything when `changes.all`).
    pub async fn run(
        &self,
        changes: Changes,
        st: &mut PassState,
        net: Option<&mut Network>,
        writes: &Writes,
    ) {
        if let Some(planned) = self.plan(changes, st).await {
            self.finish(planned, st, net, writes).await;
        }
    }

    /// Updates the indexes, gives addresses to what lacks one and plans the services
    /// concerned; `None` when there is nothing to do.
    pub(crate) async fn plan(&self, changes: Changes, st: &mut PassState) -> Option<Planned> {
        let c = self.c;
        let started = Instant::now();
        let full = changes.all;
        let seen = (changes.service_seen, changes.probe_seen);
        let (only, ports, needs_address) = if full {
            heavy(|| st.index.rebuild(c));
            (None, Vec::new(), true)
        } else {
            let u = st.index.update(c, &changes);
            let mut only = u.services;
            only.extend(changes.services.iter().cloned());
            (Some(only), u.ports, u.needs_address)
        };
        // Between the steps of a pass, whatever waits for this worker runs, and a pass
        // raced against leadership (`crate::run`) can stop.
        tokio::task::yield_now().await;
        if only.as_ref().is_some_and(BTreeSet::is_empty)
            && changes.kube_services.is_empty()
            && ports.is_empty()
            && !needs_address
            && st.nb_left.is_empty()
        {
            return None;
        }
        if needs_address && !self.shadow {
            self.allocate(st).await;
            self.write_network_statuses().await;
        }
        let services = match &only {
            None => c.services.state(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| {
                    let (ns, name) = k.split_once('/')?;
                    cached(&c.services, ns, name)
                })
                .collect(),
        };
        let planning = Instant::now();
        let prepare_ms = planning.duration_since(started).as_millis() as u64;
        if full {
            st.claims = Claims::default();
        }
        // Ordinary Services: their held LoadBalancer addresses are claimed before any
        // YusurService gets a new EIP.
        let kube = caches::kube_services(
            c,
            if full {
                None
            } else {
                Some(&changes.kube_services)
            },
        );
        let kube_svcs: Vec<&k8s_openapi::api::core::v1::Service> =
            kube.values().flatten().map(|(s, _)| s.as_ref()).collect();
        if !full {
            st.claims.release(&kube.keys().cloned().collect());
        }
        // Their cluster IPs are taken: a YusurService must not be given one.
        for s in &kube_svcs {
            for ip in kube_service::cluster_ips(s) {
                st.claims.claim_vip(ip, &kube_service::key(s));
            }
        }
        let held: Vec<&k8s_openapi::api::core::v1::Service> = kube_svcs
            .iter()
            .copied()
            .filter(|s| kube_service::lb_ip_in_status(s).is_some())
            .collect();
        let mut lb_ips = kube_service::lb_ips(&held, self.pools.eips.as_ref(), &mut st.claims);
        let input = PlanInput {
            services,
            full,
            eips: caches::eip_addresses(c),
            vpcs: caches::vpcs(c),
            probes: &c.probes,
        };
        let outcomes = heavy_if(full, || {
            plan::plan_services(
                &input,
                self.pools,
                &mut st.service_pending,
                &mut st.claims,
                &st.index,
            )
        });
        for m in st.service_pending.take_moved() {
            if !self.shadow {
                tracing::warn!(service = %m.service, address = %m.address, holder = ?m.holder,
                    "a {} handed out twice: this service gets a new one", m.kind);
            }
        }
        tokio::task::yield_now().await;
        lb_ips.extend(kube_service::lb_ips(
            &kube_svcs,
            self.pools.eips.as_ref(),
            &mut st.claims,
        ));
        let mut states = nb_work::states_of(&outcomes);
        for (k, found) in &kube {
            let Some((svc, slices)) = found else { continue };
            let slices: Vec<&k8s_openapi::api::discovery::v1::EndpointSlice> =
                slices.iter().map(|s| s.as_ref()).collect();
            let lb = lb_ips.get(k).and_then(|r| r.as_ref().ok()).copied();
            let index = &st.index;
            let pod_vpc =
                |ns: &str, name: &str| index.vpc_of(BackendKind::Pod, &format!("{ns}/{name}"));
            if let Some(state) = kube_service::service_state(svc, &slices, lb, pod_vpc) {
                states.insert(k.clone(), state);
            }
        }
        // The cluster DNS follows nodes and VPCs, whose changes make a full pass.
        if let (true, Some(ip)) = (full, self.cluster_dns) {
            states.extend(crate::cluster_dns::states(
                ip,
                &caches::vpcs(c),
                &caches::probe_ports(c),
                &st.index.ready_nodes(),
            ));
        }
        let mut only = only;
        if let Some(o) = only.as_mut() {
            o.extend(kube.keys().cloned());
        }
        if let (Some(since), Some(o)) = (st.planned_since.as_mut(), &only) {
            since.extend(o.iter().cloned());
        }
        let plan_ms = planning.elapsed().as_millis() as u64;
        Some(Planned {
            full,
            started,
            seen,
            prepare_ms,
            plan_ms,
            only,
            ports,
            outcomes,
            states,
            kube,
            lb_ips,
        })
    }

    /// Sends the NB what `planned` changes and queues each service's status and objects
    /// for the writer (a shadow pass only keeps its state).
    async fn finish(
        &self,
        planned: Planned,
        st: &mut PassState,
        net: Option<&mut Network>,
        writes: &Writes,
    ) {
        let Planned {
            full,
            started,
            seen,
            prepare_ms,
            plan_ms,
            only,
            ports,
            outcomes,
            states,
            kube,
            lb_ips,
        } = planned;
        let finishing = Instant::now();
        let (c, client) = (self.c, self.client);
        // Services whose NB state this pass changes: if a full convergence carries them,
        // their Programmed condition waits for it.
        let changed: BTreeSet<String> = match self.shadow {
            true => BTreeSet::new(),
            false => heavy_if(full, || {
                outcomes
                    .iter()
                    .filter(|o| st.net.get(&o.key) != states.get(&o.key))
                    .map(|o| o.key.clone())
                    .collect()
            }),
        };
        let nb_started = Instant::now();
        // A shadow pass sends nothing and leaves the work a paused leader had left over
        // (`crate::leadership`).
        let mut work = if self.shadow {
            NbWork::default()
        } else {
            std::mem::take(&mut st.nb_left)
        };
        heavy_if(full, || {
            nb_work::add_pass(&mut work, &mut st.net, states, only.as_ref(), ports)
        });
        tokio::task::yield_now().await;
        let nb: Option<Sent> = match net {
            Some(net) if !self.shadow => Some(self.send(net, work, st).await),
            _ => None,
        };
        // Committed: all of it, not only what the fast paths carried; else once the
        // convergence that carries the rest has ended (`PassState::converged`).
        match &nb {
            Some(Sent {
                now: Ok(_),
                beside: None,
                ..
            }) => ferry_metrics::controller().nb_committed(seen.0, seen.1),
            Some(Sent {
                now: Ok(_),
                beside: Some(run),
                ..
            }) => st.wait_seen(*run, seen),
            _ => {}
        }
        let nb_ms = nb_started.elapsed().as_millis() as u64;
        if self.shadow {
            return;
        }
        if full {
            let lapsed = caches::lapsed_agents(c);
            if !lapsed.is_empty() {
                writer::mark_orphaned_probes(client, c, &outcomes, &lapsed).await;
            }
        }
        // The NB first (the data plane matters most); status and the Kubernetes objects
        // are written by the writer task.
        self.write_lb_ips(&kube, &lb_ips).await;
        let services = outcomes.len();
        let now = jiff::Timestamp::now();
        for o in outcomes {
            // Shared with the writer and `awaiting_nb`, not copied: an outcome holds every
            // backend of its service, and a full pass carries thousands.
            let o = Arc::new(o);
            let status = match &nb {
                Some(Sent {
                    beside: Some(run),
                    carried,
                    ..
                }) if o.programmable()
                    && !carried.contains(&o.key)
                    && !status::programmed_now(&o, changed.contains(&o.key)) =>
                {
                    // Carried by the convergence: its Programmed condition stays as it
                    // was until that ends (`PassState::converged`).
                    let mut s = status::desired_status(&o, None, now);
                    status::keep_programmed(&mut s, &o.service);
                    st.awaiting_nb.insert(o.key.clone(), (*run, o.clone()));
                    s
                }
                Some(sent) => {
                    st.awaiting_nb.remove(&o.key);
                    status::desired_status(&o, status::programmed(&o, Some(&sent.now)), now)
                }
                None => status::desired_status(&o, None, now),
            };
            writes.push(o, status);
        }
        ferry_metrics::controller().pass(full, started.elapsed());
        tracing::debug!(
            full,
            services,
            prepare_ms,
            plan_ms,
            nb_ms,
            finish_ms = finishing.elapsed().as_millis() as u64,
            // Fractional: `ferry bench metrics-cost` reads pass times from this line, which
            // is written whether metrics are on or off.
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "reconcile pass"
        );
    }

    /// Sends the NB its work: the fast paths (changed ports, then changed services), and,
    /// when everything must converge (asked, or a fast path does not apply), a full
    /// convergence beside the passes (`network`); one that runs already is followed by
    /// another. Work that failed is kept in `st`.
    async fn send(&self, net: &mut Network, work: NbWork, st: &mut PassState) -> Sent {
        let done = |now| Sent {
            now,
            carried: BTreeSet::new(),
            beside: None,
        };
        if work.is_empty() {
            return done(Ok(BTreeMap::new()));
        }
        let ports: Vec<_> = work.ports.values().cloned().collect();
        let changed: Vec<_> = work
            .services
            .iter()
            .filter_map(|k| st.net.get(k).cloned())
            .collect();
        let fast = if ports.is_empty() {
            Ok(true)
        } else {
            net.apply_ports(&ports).await
        };
        let mut carried = BTreeSet::new();
        let fast = match fast {
            Ok(true) if !work.owners.is_empty() => {
                let r = net.apply_services(&changed, &work.owners).await;
                if let Ok(true) = r {
                    carried.clone_from(&work.services);
                }
                r
            }
            other => other,
        };
        match fast {
            Ok(true) if !work.full => done(Ok(BTreeMap::new())),
            Err(e) => {
                tracing::warn!(error = %e, "NB fast path failed; retrying next pass");
                let msg = e.to_string();
                st.nb_left = work;
                done(Err(msg))
            }
            Ok(_) => {
                let beside = match (net.running(), self.beside) {
                    (Some(next), _) => {
                        // After the one running, from a newer snapshot.
                        st.nb_left.full = true;
                        next
                    }
                    (None, Some(b)) => {
                        let (c, config, eips) =
                            (self.c.clone(), net.config().clone(), self.eip_range);
                        let services: Vec<ServiceState> = st.net.values().cloned().collect();
                        let state = move || {
                            let objects = caches::net_objects(&c);
                            crate::net_model::network_state(objects, services, &config, eips)
                        };
                        net.converge_beside(state, b.stopped(), b.wake.clone())
                    }
                    (None, None) => {
                        st.nb_left.full = true;
                        return done(Err("no full convergence outside leadership".into()));
                    }
                };
                Sent {
                    now: Ok(BTreeMap::new()),
                    carried,
                    beside: Some(beside),
                }
            }
        }
    }
}

/// Runs seconds of CPU (a full pass's index rebuild or planning: 5-15 s each at 10,000
/// services x 20) without holding an async worker: on a multi-thread runtime the worker's
/// other tasks (the NB client's reader, the watches) move to another thread meanwhile. At
/// 10k a standby whose worker was held ~30 s dropped a healthy NB connection and noticed
/// its win 10 s late.
fn heavy<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// [`heavy`] when `full`, else in place (a few services take microseconds, less than
/// moving the worker's tasks would).
fn heavy_if<R>(full: bool, f: impl FnOnce() -> R) -> R {
    if full { heavy(f) } else { f() }
}

#[cfg(test)]
mod tests;
