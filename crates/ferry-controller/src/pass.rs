//! One pass, the I/O sequence around the pure modules: update the indexes from what changed,
//! give addresses to what lacks one (`allocate`), plan the services concerned (`plan`), send
//! the NB its work (`nb_work`, then `network`), and queue each service's status and objects
//! for the writer (`status`, `writer`). Level-triggered: a pass reads the caches, never the
//! event that woke it. `Pass::plan` is the first half, `Pass::finish` the second; a full
//! plan made off the loop (`crate::full_plan`) is finished by `Pass::adopt`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ferry_api::BackendKind;
use ferry_net::ServiceState;
use k8s_openapi::api::core::v1::Service;
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
    pub awaiting_nb: BTreeMap<String, (u64, ServiceOutcome)>,
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
    pub fn adopt_full(&mut self, done: FullPlan) {
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
        let done: BTreeMap<String, (u64, ServiceOutcome)> = done;
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

impl Planned {
    /// Leaves what the loop planned since this plan's snapshot (`touched`) as the loop
    /// has it: their NB states from `net`, no outcome (their statuses were written).
    fn keep_loop(&mut self, touched: &BTreeSet<String>, net: &BTreeMap<String, ServiceState>) {
        self.outcomes.retain(|o| !touched.contains(&o.key));
        self.states.retain(|k, _| !touched.contains(k));
        self.states.extend(
            touched
                .iter()
                .filter_map(|k| Some((k.clone(), net.get(k)?.clone()))),
        );
        self.kube.retain(|k, _| !touched.contains(k));
        self.lb_ips.retain(|k, _| !touched.contains(k));
    }

    /// Replaces what `newer` planned again (a full plan made off the pass loop, and the
    /// services the loop planned meanwhile): its services' outcomes and states, its
    /// ordinary Services, its port changes.
    fn overlay(&mut self, newer: Planned) {
        let again = newer.only.unwrap_or_default();
        self.outcomes.retain(|o| !again.contains(&o.key));
        self.outcomes.extend(newer.outcomes);
        self.states.retain(|k, _| !again.contains(k));
        self.states.extend(newer.states);
        self.kube.extend(newer.kube);
        self.lb_ips.extend(newer.lb_ips);
        self.ports = newer.ports;
        self.seen = (
            crate::changes::earliest(self.seen.0, newer.seen.0),
            crate::changes::earliest(self.seen.1, newer.seen.1),
        );
    }
}

/// A leader's full pass planned off the pass loop (`crate::full_plan`): the state it
/// rebuilt (`PassState::for_full_shadow`, planned as a standby would, writing nothing),
/// the service addresses pending when it started, and its plan.
pub struct FullPlan {
    pub state: PassState,
    pub pending_before: service_ips::Pending,
    pub planned: Planned,
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
        if let Some(planned) = self.plan(changes, st, false).await {
            self.finish(planned, st, net, writes).await;
        }
    }

    /// Takes in a full pass planned off the loop. The loop kept planning meanwhile, and
    /// what it planned stands: those services (`PassState::planned_since`) keep the loop's
    /// NB states, statuses and claims; every other service takes the full plan's. Its
    /// index replaces the loop's once `since` (the changes the loop planned meanwhile) is
    /// replayed on it. Services the plan gave new addresses (only the loop hands them out)
    /// or whose backends moved since its snapshot are planned again here. The whole is
    /// then sent and written as a full pass.
    pub async fn adopt(
        &self,
        done: FullPlan,
        since: Changes,
        st: &mut PassState,
        net: Option<&mut Network>,
        writes: &Writes,
    ) {
        let FullPlan {
            state,
            pending_before,
            mut planned,
        } = done;
        let touched = st.planned_since.take().unwrap_or_default();
        let t = Instant::now();
        st.index = state.index;
        // Its port changes were sent by the loop's passes.
        let moved = heavy(|| st.index.update(self.c, &since)).services;
        let replay_ms = t.elapsed().as_millis() as u64;
        let (mut claims, again) =
            state
                .claims
                .taken_in(&state.service_pending, &pending_before, touched.clone());
        claims.absorb(&st.claims, &touched);
        st.claims = claims;
        let replan: BTreeSet<String> = again
            .into_iter()
            .chain(moved)
            .filter(|k| !touched.contains(k))
            .collect();
        let (kept_from_loop, planned_again) = (touched.len(), replan.len());
        let planned_ms = planned.started.elapsed().as_millis() as u64;
        planned.keep_loop(&touched, &st.net);
        let replan = Changes {
            services: replan,
            ..Default::default()
        };
        let t = Instant::now();
        if let Some(again) = self.plan(replan, st, true).await {
            planned.overlay(again);
        }
        tracing::info!(
            kept_from_loop,
            planned_again,
            planned_ms,
            replay_ms,
            replan_ms = t.elapsed().as_millis() as u64,
            "full pass planned off the loop taken in"
        );
        planned.only = None;
        planned.full = true;
        self.finish(planned, st, net, writes).await;
    }

    /// Updates the indexes, gives addresses to what lacks one (always when
    /// `allocate_all`) and plans the services concerned; `None` when there is nothing to
    /// do.
    pub(crate) async fn plan(
        &self,
        changes: Changes,
        st: &mut PassState,
        allocate_all: bool,
    ) -> Option<Planned> {
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
            (Some(only), u.ports, u.needs_address || allocate_all)
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

    /// Writes each LoadBalancer Service's address to its status (when it changed), as a
    /// cloud's load-balancer controller does; a Service that cannot have one gets an Event.
    async fn write_lb_ips(
        &self,
        kube: &BTreeMap<String, Option<caches::KubeService>>,
        lb_ips: &BTreeMap<String, Result<Ipv4Addr, crate::problem::Problem>>,
    ) {
        for (k, found) in kube {
            let Some((svc, _)) = found else { continue };
            let Some(r) = lb_ips.get(k) else { continue };
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            match r {
                Ok(ip) if kube_service::lb_ip_in_status(svc) != Some(*ip) => {
                    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}});
                    let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), &ns);
                    if let Err(e) = api
                        .patch_status(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&patch),
                        )
                        .await
                    {
                        tracing::warn!(service = %k, error = %e, "writing the LoadBalancer address failed");
                    }
                }
                Ok(_) => {}
                Err(p) => {
                    tracing::warn!(service = %k, reason = p.reason(), message = %p.message(), "no LoadBalancer address")
                }
            }
        }
    }

    /// Writes the Subnets', Vpcs' and Eips' statuses that changed
    /// ([`crate::network_status`]); a failed write waits for the next pass that changes
    /// addresses or for the next full pass.
    async fn write_network_statuses(&self) {
        use crate::network_status::{differs, eip_status, subnet_statuses, vpc_statuses};
        use ferry_api::{Eip, Subnet, Vpc};
        use kube::ResourceExt;
        let (c, client) = (self.c, self.client);
        let subnets = caches::subnets(c);
        let (held, _) = caches::address_book(c);
        let want = subnet_statuses(&subnets, &held);
        for s in c.subnets.state() {
            if let Some(w) = want.get(&s.name_any())
                && differs(s.status.as_ref(), w)
            {
                patch_status::<Subnet>(client, &s.name_any(), w).await;
            }
        }
        let vpcs = c.vpcs.state();
        let want = vpc_statuses(
            vpcs.iter().filter_map(|v| v.metadata.name.as_deref()),
            &subnets,
        );
        for v in &vpcs {
            if let Some(w) = want.get(&v.name_any())
                && differs(v.status.as_ref(), w)
            {
                patch_status::<Vpc>(client, &v.name_any(), w).await;
            }
        }
        let bound: BTreeMap<Ipv4Addr, String> = c
            .services
            .state()
            .iter()
            .filter_map(|s| {
                let ip = s.status.as_ref()?.eip.as_deref()?.parse().ok()?;
                Some((ip, service_ips::key_of(s)))
            })
            .collect();
        for e in c.eips.state() {
            let w = eip_status(
                e.spec.address.as_deref().and_then(|a| a.parse().ok()),
                &bound,
            );
            if differs(e.status.as_ref(), &w) {
                patch_status::<Eip>(client, &e.name_any(), &w).await;
            }
        }
    }

    /// Gives every holder that lacks an address one, and schedules a retry of those whose
    /// write failed.
    async fn allocate(&self, st: &mut PassState) {
        let subnets = caches::subnets(self.c);
        let (held, requests) = caches::address_book(self.c);
        let mut assignments = Vec::new();
        for (holder, decided) in allocate::plan(&subnets, &held, &requests, &mut st.address_pending)
        {
            match decided {
                Ok(a) => assignments.push(a),
                Err(e) => {
                    tracing::warn!(holder = %holder, reason = %e, "cannot allocate an address")
                }
            }
        }
        if assignments.is_empty() {
            return;
        }
        let written: Vec<Holder> = assignments.iter().map(|a| a.holder.clone()).collect();
        let failed = allocate::write(
            self.client,
            assignments,
            &caches::probe_ports(self.c),
            &mut st.address_pending,
        )
        .await;
        let now = Instant::now();
        for h in written {
            if failed.contains(&h) {
                st.address_retries.failed(h, now);
            } else {
                st.address_retries.succeeded(&h);
            }
        }
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

/// Merge-patches the status of the cluster-scoped object `name`; a failure is logged (the
/// next pass that writes statuses tries again).
async fn patch_status<K>(client: &Client, name: &str, status: &impl serde::Serialize)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch = serde_json::json!({ "status": status });
    let result = kube::Api::<K>::all(client.clone())
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(kind = %K::kind(&()), %name, error = %e, "writing a status failed");
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
mod tests {
    use super::*;

    fn outcome(name: &str) -> ServiceOutcome {
        crate::nb_work::tests::outcome(name, "10.96.0.1")
    }

    fn programmed(writes: &Writes, key: &str) -> Option<(String, String)> {
        let status = writes.queued(key)?;
        let c = status.conditions.iter().find(|c| c.type_ == "Programmed")?;
        Some((c.status.clone(), c.reason.clone()))
    }

    fn planned(only: Option<&[&str]>, outcomes: Vec<ServiceOutcome>) -> Planned {
        Planned {
            full: only.is_none(),
            started: Instant::now(),
            seen: (None, None),
            prepare_ms: 0,
            plan_ms: 0,
            only: only.map(|o| o.iter().map(|k| format!("default/{k}")).collect()),
            ports: Vec::new(),
            states: nb_work::states_of(&outcomes),
            outcomes,
            kube: BTreeMap::new(),
            lb_ips: BTreeMap::new(),
        }
    }

    /// A full plan made off the loop, overlaid with what the loop planned again: a
    /// service planned again takes its new outcome and state, one deleted meanwhile
    /// leaves, the others stay as the full plan had them.
    #[test]
    fn a_full_plan_takes_what_was_planned_again_over_its_own() {
        let mut full = planned(
            None,
            vec![
                crate::nb_work::tests::outcome("kept", "10.96.0.1"),
                crate::nb_work::tests::outcome("moved", "10.96.0.2"),
                crate::nb_work::tests::outcome("gone", "10.96.0.3"),
            ],
        );
        let t = Instant::now();
        let mut again = planned(
            Some(&["moved", "gone"]),
            vec![crate::nb_work::tests::outcome("moved", "10.96.0.9")],
        );
        again.seen = (Some(t), None);
        full.overlay(again);
        let vips: BTreeMap<&str, Option<Ipv4Addr>> = full
            .outcomes
            .iter()
            .map(|o| (o.key.as_str(), o.cluster_ip))
            .collect();
        assert_eq!(
            vips,
            [
                ("default/kept", Some("10.96.0.1".parse().unwrap())),
                ("default/moved", Some("10.96.0.9".parse().unwrap())),
            ]
            .into()
        );
        assert_eq!(
            full.states.keys().collect::<Vec<_>>(),
            ["default/kept", "default/moved"]
        );
        assert_eq!(
            full.states["default/moved"],
            nb_work::states_of(&[crate::nb_work::tests::outcome("moved", "10.96.0.9")])["default/moved"]
        );
        assert_eq!(full.seen, (Some(t), None));
    }

    /// What the loop planned while the full plan was made stays as the loop has it: no
    /// outcome from the plan (its status was written), the loop's NB state; a service the
    /// loop removed meanwhile has none.
    #[test]
    fn a_full_plan_leaves_what_the_loop_planned_meanwhile() {
        let mut full = planned(
            None,
            vec![
                crate::nb_work::tests::outcome("kept", "10.96.0.1"),
                crate::nb_work::tests::outcome("moved", "10.96.0.2"),
                crate::nb_work::tests::outcome("gone", "10.96.0.3"),
            ],
        );
        let loop_net = nb_work::states_of(&[crate::nb_work::tests::outcome("moved", "10.96.0.9")]);
        let touched: BTreeSet<String> = ["default/moved".into(), "default/gone".into()].into();
        full.keep_loop(&touched, &loop_net);
        let keys: Vec<&str> = full.outcomes.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["default/kept"]);
        assert_eq!(
            full.states.keys().collect::<Vec<_>>(),
            ["default/kept", "default/moved"]
        );
        assert_eq!(full.states["default/moved"], loop_net["default/moved"]);
    }

    #[test]
    fn statuses_wait_for_their_convergence_and_a_failure_waits_for_the_next() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let writes = Writes::new(tx);
        let mut st = PassState::default();
        st.awaiting_nb.insert("default/a".into(), (1, outcome("a")));
        st.awaiting_nb.insert("default/b".into(), (2, outcome("b")));
        let t0 = Instant::now();
        st.wait_seen(1, (Some(t0), None));
        // Run 1 fails: a shows it and waits for run 2; b waits for run 2 anyway.
        st.converged(1, &Err("NB down".into()), &writes);
        assert_eq!(
            programmed(&writes, "default/a"),
            Some(("False".into(), "ProgrammingFailed".into()))
        );
        assert_eq!(programmed(&writes, "default/b"), None);
        assert!(st.nb_left.full, "a failed convergence is owed again");
        let waiting: Vec<(&String, u64)> =
            st.awaiting_nb.iter().map(|(k, (r, _))| (k, *r)).collect();
        assert_eq!(
            waiting,
            [(&"default/a".to_string(), 2), (&"default/b".to_string(), 2)]
        );
        // Its changes' first sight waits for run 2 too, to be observed once it commits.
        assert_eq!(st.awaiting_seen.get(&2), Some(&(Some(t0), None)));
        // Run 2 succeeds: both are programmed, nothing waits.
        st.converged(2, &Ok(BTreeMap::new()), &writes);
        for k in ["default/a", "default/b"] {
            assert_eq!(
                programmed(&writes, k),
                Some(("True".into(), "Programmed".into())),
                "{k}"
            );
        }
        assert!(st.awaiting_nb.is_empty());
        assert!(st.awaiting_seen.is_empty());
    }
}
