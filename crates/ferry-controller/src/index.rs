//! What changed since the last pass ([`Changes`], recorded from the watch events) and the
//! indexes that let a pass touch only the services a change concerns ([`Index`]): backends
//! by label, each service's probes, each workload's NB port, and what the NB holds per
//! service. A change to one service, one probe or one pod costs work in proportion to what
//! it concerns, not to the size of the cluster; a change to a VPC, subnet, node, namespace
//! or EIP, or a watch that restarted, still means a full pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ferry_api::{BackendKind, YusurService};
use ferry_net::{PortState, ServiceState};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

use crate::network;
use crate::service::{self, Backend, SERVICE_LABEL};
use crate::world::{self, Caches, SubnetInfo};

/// A workload that may back a service: its kind and `namespace/name`.
pub type WorkloadRef = (BackendKind, String);

/// What a watch feeds into [`Changes`].
#[derive(Debug, Clone, Copy)]
pub enum Feed {
    /// Anything else may depend on it (VPCs, subnets, nodes, namespaces, EIPs).
    Global,
    /// A YusurService.
    Service,
    /// An object the service controller writes, labelled with its service.
    Generated,
    /// A NetworkProbe (also generated, and its phase decides readiness).
    Probe,
    /// A workload of this kind.
    Workload(BackendKind),
    /// A node agent's Lease: read by time, not by event (renewals change nothing).
    AgentLease,
}

/// Changes seen since the last pass.
#[derive(Debug, Default)]
pub struct Changes {
    /// A full pass is needed.
    pub all: bool,
    /// `namespace/name` of services to reconcile.
    pub services: BTreeSet<String>,
    pub workloads: BTreeSet<WorkloadRef>,
    /// (probe `namespace/name`, its service `namespace/name`).
    pub probes: BTreeSet<(String, String)>,
}

impl Changes {
    /// Everything recorded so far, leaving `shared` empty.
    pub fn take(shared: &Mutex<Changes>) -> Changes {
        shared
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_else(|p| std::mem::take(&mut *p.into_inner()))
    }

    /// Adds `other` to these changes.
    pub fn merge(&mut self, other: Changes) {
        self.all |= other.all;
        self.services.extend(other.services);
        self.workloads.extend(other.workloads);
        self.probes.extend(other.probes);
    }

    /// A full pass from now on (at start and on resync).
    pub fn everything() -> Changes {
        Changes {
            all: true,
            ..Default::default()
        }
    }
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

/// Records one watch event. A completed (re)list means events may have been missed.
pub fn record<K: Resource>(shared: &Mutex<Changes>, feed: Feed, ev: &Event<K>) {
    let obj = match ev {
        Event::Apply(o) | Event::Delete(o) => o,
        Event::InitDone => {
            if let Ok(mut c) = shared.lock() {
                c.all = true;
            }
            return;
        }
        Event::Init | Event::InitApply(_) => return,
    };
    let Ok(mut c) = shared.lock() else { return };
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let owner = || {
        obj.meta()
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_LABEL))
            .map(|s| format!("{ns}/{s}"))
    };
    match feed {
        Feed::Global => c.all = true,
        Feed::Service => {
            c.services.insert(key_of(obj));
        }
        Feed::Generated => {
            if let Some(s) = owner() {
                c.services.insert(s);
            }
        }
        Feed::Probe => {
            if let Some(s) = owner() {
                c.probes.insert((key_of(obj), s.clone()));
                c.services.insert(s);
            }
        }
        Feed::Workload(kind) => {
            c.workloads.insert((kind, key_of(obj)));
        }
        Feed::AgentLease => {}
    }
}

/// What [`Index::update`] found.
#[derive(Debug, Default)]
pub struct Update {
    /// Services whose backends changed.
    pub services: BTreeSet<String>,
    /// Workload NB ports that appeared, changed or went: (before, after).
    pub ports: Vec<(Option<PortState>, Option<PortState>)>,
    /// A workload still needs an address.
    pub needs_address: bool,
}

/// The controller's indexes, kept across passes.
#[derive(Debug, Default)]
pub struct Index {
    backends: HashMap<WorkloadRef, Backend>,
    by_label: HashMap<(String, String, String), BTreeSet<WorkloadRef>>,
    ports: HashMap<WorkloadRef, PortState>,
    probes: HashMap<String, BTreeSet<String>>,
    ready_nodes: Vec<String>,
    /// What the NB should hold for each programmable service, as last planned.
    pub net: BTreeMap<String, ServiceState>,
    /// NB work a failed transaction left undone.
    pub nb_retry: NbRetry,
    /// ClusterIPs and EIPs held, by service.
    pub claims: crate::reconcile::Claims,
}

/// NB work for the next pass: what failed, merged with what comes next.
#[derive(Debug, Default)]
pub struct NbRetry {
    /// Converge everything.
    pub full: bool,
    /// Workload ports by name: (state the NB may hold, state wanted).
    pub ports: BTreeMap<String, (Option<PortState>, Option<PortState>)>,
    /// Services whose load balancers to converge, and the owners of their rows (old
    /// owners of removed or re-created services included).
    pub services: BTreeSet<String>,
    pub owners: BTreeSet<String>,
}

impl NbRetry {
    pub fn is_empty(&self) -> bool {
        !self.full && self.ports.is_empty() && self.owners.is_empty()
    }
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// A workload as a backend, as an NB port, and whether it still lacks an address.
fn resolve(
    c: &Caches,
    subnets: &BTreeMap<String, SubnetInfo>,
    (kind, key): &WorkloadRef,
) -> (Option<Backend>, Option<PortState>, bool) {
    let (ns, name) = split(key);
    let lacks = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.deletion_timestamp.is_none()
            && !m
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ferry_api::ANNOTATION_MAC))
    };
    match kind {
        BackendKind::Pod => match c.pods.get(&ObjectRef::new(name).within(ns)) {
            Some(p) => (
                world::pod_backend(&p, world::namespace(c, ns).as_deref(), subnets),
                network::pod_port(&p),
                world::on_pod_network(&p) && lacks(&p.metadata),
            ),
            None => (None, None, false),
        },
        BackendKind::VirtualMachineInstance => {
            match c
                .vmis
                .as_ref()
                .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
            {
                Some(v) => (
                    world::vmi_backend(&v, world::namespace(c, ns).as_deref(), subnets),
                    network::vmi_port(&v),
                    lacks(&v.metadata),
                ),
                None => (None, None, false),
            }
        }
        BackendKind::BareMetal => match c.baremetals.get(&ObjectRef::new(name).within(ns)) {
            Some(h) => (
                world::baremetal_backend(&h, subnets),
                network::baremetal_port(&h),
                h.status.as_ref().is_none_or(|s| s.mac_address.is_none()),
            ),
            None => (None, None, false),
        },
        BackendKind::VNicIP => match c.vnicips.get(&ObjectRef::new(name).within(ns)) {
            Some(h) => (
                world::vnicip_backend(&h, subnets),
                network::vnicip_port(&h),
                h.status.as_ref().is_none_or(|s| s.mac_address.is_none()),
            ),
            None => (None, None, false),
        },
    }
}

fn all_workloads(c: &Caches) -> Vec<WorkloadRef> {
    let mut out: Vec<WorkloadRef> = c
        .pods
        .state()
        .iter()
        .map(|p| (BackendKind::Pod, key_of(p.as_ref())))
        .collect();
    out.extend(
        c.vmis
            .iter()
            .flat_map(|s| s.state())
            .map(|v| (BackendKind::VirtualMachineInstance, key_of(v.as_ref()))),
    );
    out.extend(
        c.baremetals
            .state()
            .iter()
            .map(|h| (BackendKind::BareMetal, key_of(h.as_ref()))),
    );
    out.extend(
        c.vnicips
            .state()
            .iter()
            .map(|h| (BackendKind::VNicIP, key_of(h.as_ref()))),
    );
    out
}

impl Index {
    /// Rebuilds every index from the caches (a full pass).
    pub fn rebuild(&mut self, c: &Caches) {
        let (net, nb_retry) = (
            std::mem::take(&mut self.net),
            std::mem::take(&mut self.nb_retry),
        );
        *self = Index {
            ready_nodes: world::ready_nodes(c).into_iter().collect(),
            net,
            nb_retry,
            ..Default::default()
        };
        let subnets = world::subnets(c);
        for w in all_workloads(c) {
            let (b, p, _) = resolve(c, &subnets, &w);
            self.put(w, b, p);
        }
        for p in c.probes.state() {
            if let Some(s) = p.labels().get(SERVICE_LABEL) {
                self.probes
                    .entry(format!("{}/{s}", p.namespace().unwrap_or_default()))
                    .or_default()
                    .insert(p.name_any());
            }
        }
    }

    fn put(&mut self, w: WorkloadRef, b: Option<Backend>, p: Option<PortState>) {
        if let Some(mut b) = b {
            world::assign_node(&mut b, &self.ready_nodes);
            for (k, v) in &b.labels {
                self.by_label
                    .entry((b.namespace.clone(), k.clone(), v.clone()))
                    .or_default()
                    .insert(w.clone());
            }
            self.backends.insert(w.clone(), b);
        }
        if let Some(p) = p {
            self.ports.insert(w, p);
        }
    }

    fn forget(&mut self, w: &WorkloadRef) -> (Option<Backend>, Option<PortState>) {
        let b = self.backends.remove(w);
        if let Some(b) = &b {
            for (k, v) in &b.labels {
                let label = (b.namespace.clone(), k.clone(), v.clone());
                if let Some(set) = self.by_label.get_mut(&label) {
                    set.remove(w);
                    if set.is_empty() {
                        self.by_label.remove(&label);
                    }
                }
            }
        }
        (b, self.ports.remove(w))
    }

    /// Applies the changed workloads and probes; returns what they concern.
    pub fn update(&mut self, c: &Caches, changes: &Changes) -> Update {
        let mut out = Update::default();
        for (probe, svc) in &changes.probes {
            let (ns, name) = split(probe);
            let set = self.probes.entry(svc.clone()).or_default();
            if c.probes.get(&ObjectRef::new(name).within(ns)).is_some() {
                set.insert(name.to_string());
            } else {
                set.remove(name);
            }
        }
        if changes.workloads.is_empty() {
            return out;
        }
        let subnets = world::subnets(c);
        let mut moved: Vec<Backend> = Vec::new();
        for w in &changes.workloads {
            let (old_b, old_p) = self.forget(w);
            let (new_b, new_p, lacks) = resolve(c, &subnets, w);
            out.needs_address |= lacks;
            if old_p != new_p {
                out.ports.push((old_p, new_p.clone()));
            }
            self.put(w.clone(), new_b, new_p);
            let new_b = self.backends.get(w).cloned();
            if old_b != new_b {
                moved.extend(old_b.into_iter().chain(new_b));
            }
        }
        if moved.is_empty() {
            return out;
        }
        // Services whose selector may pick a moved backend (old or new state).
        let mut by_selector: HashMap<(String, String, String), Vec<Arc<YusurService>>> =
            HashMap::new();
        for s in c.services.state() {
            if let Some((k, v)) = s.spec.selector.iter().next() {
                by_selector
                    .entry((s.namespace().unwrap_or_default(), k.clone(), v.clone()))
                    .or_default()
                    .push(s);
            }
        }
        for b in &moved {
            for (k, v) in &b.labels {
                let Some(svcs) = by_selector.get(&(b.namespace.clone(), k.clone(), v.clone()))
                else {
                    continue;
                };
                for s in svcs {
                    if !service::select_backends(s, std::slice::from_ref(b)).is_empty() {
                        out.services.insert(key_of(s.as_ref()));
                    }
                }
            }
        }
        out
    }

    /// Backends in `namespace` labelled `label=value`.
    pub fn candidates(&self, namespace: &str, label: &str, value: &str) -> Vec<Backend> {
        self.by_label
            .get(&(namespace.to_string(), label.to_string(), value.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|w| self.backends.get(w).cloned())
            .collect()
    }

    /// The nodes the last full pass gave probes to.
    pub fn ready_nodes(&self) -> BTreeSet<String> {
        self.ready_nodes.iter().cloned().collect()
    }

    /// Names of the probes a service has now.
    pub fn probes_of(&self, service: &str) -> impl Iterator<Item = &String> {
        self.probes.get(service).into_iter().flatten()
    }
}
