//! What changed since the last pass, recorded from the watch events: which services,
//! probes and workloads, or that a full pass is needed (a change to a VPC, subnet, node,
//! namespace or EIP, or a watch that restarted).

use std::collections::BTreeSet;
use std::sync::Mutex;

use ferry_api::{BackendKind, SERVICE_LABEL};
use kube::Resource;
use kube::runtime::watcher::Event;

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
#[derive(Debug, Default)]
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
        Feed::Kube(kind) => match (owner(), kind) {
            (Some(s), _) => {
                c.services.insert(s);
            }
            (None, KubeObject::Service) => {
                c.kube_services.insert(format!("svc/{}", key_of(obj)));
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
