//! What changed since the last pass, recorded from the watch events: which services,
//! probes and workloads, or that a full pass is needed (a change to a VPC, subnet, node,
//! namespace or EIP, or a watch that restarted).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use std::any::Any;

use ferry_api::{BackendKind, NetworkProbe, ProbePhase, SERVICE_LABEL, YusurService};
use kube::Resource;
use kube::runtime::watcher::Event;

use crate::cached::CachedProbe;

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
    /// A Kubernetes Service or EndpointSlice: generated for a YusurService (labelled with
    /// it), or an ordinary Service's own.
    Kube(KubeObject),
}

/// The Kubernetes objects that make an ordinary Service.
#[derive(Debug, Clone, Copy)]
pub enum KubeObject {
    Service,
    EndpointSlice,
}

/// Changes seen since the last pass.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// A full pass is needed.
    pub all: bool,
    /// `namespace/name` of services to reconcile.
    pub services: BTreeSet<String>,
    pub workloads: BTreeSet<WorkloadRef>,
    /// (probe `namespace/name`, its service `namespace/name`).
    pub probes: BTreeSet<(String, String)>,
    /// Ordinary Kubernetes Services to reconcile, by `kube_service::key`.
    pub kube_services: BTreeSet<String>,
    /// When the oldest service change (YusurService or Service) of these was seen, for
    /// `ferry_service_programming_seconds`.
    pub service_seen: Option<Instant>,
    /// When the oldest probe result of these was seen, for `ferry_endpoint_flip_seconds`.
    pub probe_seen: Option<Instant>,
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
        self.kube_services.extend(other.kube_services);
        self.service_seen = earliest(self.service_seen, other.service_seen);
        self.probe_seen = earliest(self.probe_seen, other.probe_seen);
    }

    /// A full pass from now on (at start and on resync).
    pub fn everything() -> Changes {
        Changes {
            all: true,
            ..Default::default()
        }
    }
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `obj`, a YusurService, has a spec its status has not caught up with (its own
/// status writes are not changes to time).
fn unprogrammed<K: 'static>(obj: &K) -> bool {
    match (obj as &dyn Any).downcast_ref::<YusurService>() {
        Some(y) => y.status.as_ref().and_then(|s| s.observed_generation) != y.metadata.generation,
        None => true,
    }
}

/// Whether `obj`, a NetworkProbe (full or as cached), carries a probe result (a phase an
/// agent wrote).
fn probe_result<K: 'static>(obj: &K) -> bool {
    let any = obj as &dyn Any;
    if let Some(p) = any.downcast_ref::<CachedProbe>() {
        return p.phase != ProbePhase::Unknown;
    }
    match any.downcast_ref::<NetworkProbe>() {
        Some(p) => p
            .status
            .as_ref()
            .is_some_and(|s| s.phase != ProbePhase::Unknown),
        None => true,
    }
}

/// The service label of `obj`; a cached probe keeps it in a field of its own.
fn service_label<K: Resource + 'static>(obj: &K) -> Option<&str> {
    match (obj as &dyn Any).downcast_ref::<CachedProbe>() {
        Some(p) => p.service.as_deref(),
        None => obj
            .meta()
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_LABEL))
            .map(String::as_str),
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
pub fn record<K: Resource + 'static>(shared: &Mutex<Changes>, feed: Feed, ev: &Event<K>) {
    let (obj, deleted) = match ev {
        Event::Apply(o) => (o, false),
        Event::Delete(o) => (o, true),
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
    let owner = || service_label(obj).map(|s| format!("{ns}/{s}"));
    match feed {
        Feed::Global => c.all = true,
        Feed::Service => {
            c.services.insert(key_of(obj));
            if deleted || unprogrammed(obj) {
                c.service_seen.get_or_insert_with(Instant::now);
            }
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
                if !deleted && probe_result(obj) {
                    c.probe_seen.get_or_insert_with(Instant::now);
                }
            }
        }
        Feed::Workload(kind) => {
            c.workloads.insert((kind, key_of(obj)));
        }
        Feed::AgentLease => {}
        Feed::Kube(kind) => match (owner(), kind) {
            (Some(s), _) => {
                c.services.insert(s);
            }
            (None, KubeObject::Service) => {
                c.kube_services.insert(format!("svc/{}", key_of(obj)));
                c.service_seen.get_or_insert_with(Instant::now);
            }
            (None, KubeObject::EndpointSlice) => {
                let labels = obj.meta().labels.as_ref();
                if let Some(name) =
                    labels.and_then(|l| l.get(crate::kube_service::SERVICE_NAME_LABEL))
                {
                    c.kube_services.insert(format!("svc/{ns}/{name}"));
                }
            }
        },
    }
}
