//! The indexes that let a pass touch only the services a change concerns: backends by
//! label, each service's probes and each workload's NB port. A change to one service, one
//! probe or one pod costs work in proportion to what it concerns, not to the size of the
//! cluster. Plain data: built from the caches ([`Index::rebuild`], [`Index::update`]) or,
//! in tests, from backends ([`Index::from_backends`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ferry_api::{BackendKind, YusurService};
use ferry_net::PortState;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::caches::{self, Caches};
use crate::changes::{Changes, WorkloadRef};
use crate::net_model;
use crate::service::{self, Backend};
use crate::world::{self, SubnetInfo};

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
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
                world::pod_backend(&p, caches::namespace(c, ns).as_deref(), subnets),
                net_model::pod_port(&p),
                world::on_pod_network(&p) && !p.annotations.contains_key(ferry_api::ANNOTATION_MAC),
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
                    world::vmi_backend(&v, caches::namespace(c, ns).as_deref(), subnets),
                    net_model::vmi_port(&v),
                    lacks(&v.metadata),
                ),
                None => (None, None, false),
            }
        }
        BackendKind::BareMetal => match c.baremetals.get(&ObjectRef::new(name).within(ns)) {
            Some(h) => (
                world::baremetal_backend(&h, subnets),
                net_model::baremetal_port(&h),
                h.status.as_ref().is_none_or(|s| s.mac_address.is_none()),
            ),
            None => (None, None, false),
        },
        BackendKind::VNicIP => match c.vnicips.get(&ObjectRef::new(name).within(ns)) {
            Some(h) => (
                world::vnicip_backend(&h, subnets),
                net_model::vnicip_port(&h),
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
        *self = Index {
            ready_nodes: caches::ready_nodes(c).into_iter().collect(),
            ..Default::default()
        };
        let subnets = caches::subnets(c);
        for w in all_workloads(c) {
            let (b, p, _) = resolve(c, &subnets, &w);
            self.put(w, b, p);
        }
        for p in c.probes.state() {
            if let Some(s) = &p.service {
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
            for (k, v) in b.labels.iter() {
                self.by_label
                    .entry((b.namespace.clone(), k.to_string(), v.to_string()))
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
            for (k, v) in b.labels.iter() {
                let label = (b.namespace.clone(), k.to_string(), v.to_string());
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
        let subnets = caches::subnets(c);
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
            for (k, v) in b.labels.iter() {
                let Some(svcs) =
                    by_selector.get(&(b.namespace.clone(), k.to_string(), v.to_string()))
                else {
                    continue;
                };
                for s in svcs {
                    if service::selects(s, b) {
                        out.services.insert(key_of(s.as_ref()));
                    }
                }
            }
        }
        out
    }

    /// An index of `backends` alone (tests of planning).
    pub fn from_backends(backends: Vec<Backend>) -> Index {
        let mut index = Index::default();
        for b in backends {
            let w = (b.kind, format!("{}/{}", b.namespace, b.name));
            index.put(w, Some(b), None);
        }
        index
    }

    /// The VPC of a workload, once it resolved to a backend.
    pub fn vpc_of(&self, kind: BackendKind, key: &str) -> Option<String> {
        self.backends
            .get(&(kind, key.to_string()))
            .map(|b| b.vpc.clone())
    }

    /// Backends in `namespace` labelled `label=value`.
    pub fn candidates(&self, namespace: &str, label: &str, value: &str) -> Vec<&Backend> {
        self.by_label
            .get(&(namespace.to_string(), label.to_string(), value.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|w| self.backends.get(w))
            .collect()
    }

    /// The NB port of a workload, as last resolved.
    pub fn port(&self, w: &WorkloadRef) -> Option<&PortState> {
        self.ports.get(w)
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
