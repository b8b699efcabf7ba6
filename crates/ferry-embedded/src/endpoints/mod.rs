//! The Endpoints and EndpointSlices of a selector `v1 Service`, as kube-controller-manager's
//! endpoints and endpointslice controllers write them: the Service's namespace's Pods that
//! match its selector and have an address, ready per their `Ready` condition, named target
//! ports resolved from each Pod's container ports. Pure: [`plan`] takes a Service and Pods
//! and returns the objects; the controller writes them.
//!
//! Services this must leave alone: those without a selector (their Endpoints are the
//! user's), ExternalName Services, and the Services Ferry's controller generates for
//! YusurServices (label `iaas.yusur.io/service`; that controller writes their Endpoints).

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Who manages what this controller writes (the value of both managed-by labels).
pub const MANAGER: &str = "ferry-embedded";
/// Label on EndpointSlices naming their manager (`discovery.k8s.io` well-known label).
pub const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Label on Endpoints naming their manager (`endpoints.kubernetes.io/managed-by`).
pub const ENDPOINTS_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Label on EndpointSlices naming their Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label of the Services Ferry's controller generates for YusurServices
/// (`ferry_controller::service::SERVICE_LABEL`): never touched here.
pub const FERRY_SERVICE: &str = "iaas.yusur.io/service";
/// The address Ferry's controller gives a Pod, used when its status has no `podIP` yet.
pub const IP_ANNOTATION: &str = "iaas.yusur.io/ip_address";
/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const MAX_PER_SLICE: usize = 100;
/// Label kube-controller-manager puts on the Endpoints and slices of headless Services.
const HEADLESS: &str = "service.kubernetes.io/headless";

/// What one Service should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub endpoints: Endpoints,
    /// Sorted by name.
    pub slices: Vec<EndpointSlice>,
}

/// Whether this controller must never write anything for `svc` (Ferry's generated ones).
pub fn hands_off(svc: &Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(FERRY_SERVICE))
}

/// Whether `svc` gets Endpoints from this controller (and not from its user).
pub fn manages(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    !hands_off(svc)
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
        && spec.type_.as_deref() != Some("ExternalName")
}

/// One Pod as an endpoint of one Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Member {
    ip: String,
    name: String,
    uid: String,
    node: Option<String>,
    hostname: Option<String>,
    /// The Pod's `Ready` condition.
    pod_ready: bool,
    terminating: bool,
    /// Resolved ports, in the Service's order.
    ports: Vec<Resolved>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Resolved {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

/// The address of a Pod: `status.podIP`, else the address Ferry's controller assigned.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IP_ANNOTATION).cloned())
                .filter(|ip| !ip.is_empty())
        })
}

/// The Pod's `Ready` condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// `podutil.FindPort`: a number, or the container port of that name and protocol.
fn resolve(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(p) = name.parse::<i32>() {
                return Some(p);
            }
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

fn member(svc: &Service, pod: &Pod) -> Option<Member> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = pod_ip(pod)?;
    let spec = svc.spec.as_ref()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            Some(Resolved {
                name: sp.name.clone().unwrap_or_default(),
                port: resolve(sp, pod)?,
                protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    let pspec = pod.spec.as_ref();
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    Some(Member {
        ip,
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: pspec.and_then(|s| s.node_name.clone()),
        hostname: pspec
            .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
            .and_then(|s| s.hostname.clone()),
        pod_ready: pod_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ports,
    })
}

/// A stable short name for a set of ports (FNV-1a), so a slice keeps its name.
fn ports_hash(ports: &[Resolved]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in ports {
        let s = format!("{}/{}/{}/{:?};", p.name, p.port, p.protocol, p.app_protocol);
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:08x}", h as u32)
}

fn target_ref(ns: &str, m: &Member) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(ns.to_string()),
        name: Some(m.name.clone()),
        uid: Some(m.uid.clone()).filter(|u| !u.is_empty()),
        ..Default::default()
    }
}

fn meta(svc: &Service, name: String, extra: [(&str, String); 2]) -> ObjectMeta {
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS.into(), String::new());
    }
    for (k, v) in extra {
        labels.insert(k.into(), v);
    }
    ObjectMeta {
        name: Some(name),
        namespace: svc.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    }
}

/// The Endpoints and EndpointSlices `svc` should have given the `pods` (any namespace;
/// only its own count). `None`: this controller does not manage `svc` (see [`manages`]);
/// whatever it wrote for it before should go.
pub fn plan(svc: &Service, pods: &[&Pod]) -> Option<Desired> {
    if !manages(svc) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.clone().unwrap_or_default();
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses == Some(true);
    let has_ports = spec.ports.as_ref().is_some_and(|p| !p.is_empty());
    let mut members: Vec<Member> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && selects(&selector, p))
        .filter_map(|p| member(svc, p))
        .collect();
    members.sort();

    // Endpoints: one subset per distinct set of resolved ports; a terminating Pod is left
    // out unless not-ready addresses are published.
    let mut subsets: BTreeMap<Vec<Resolved>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for m in &members {
        if m.terminating && !publish || has_ports && m.ports.is_empty() {
            continue;
        }
        let addr = EndpointAddress {
            ip: m.ip.clone(),
            hostname: m.hostname.clone(),
            node_name: m.node.clone(),
            target_ref: Some(target_ref(&ns, m)),
        };
        let entry = subsets.entry(m.ports.clone()).or_default();
        if publish || m.pod_ready {
            entry.0.push(addr);
        } else {
            entry.1.push(addr);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect()
            }),
        })
        .collect();
    let endpoints = Endpoints {
        metadata: meta(
            svc,
            name.clone(),
            [
                (ENDPOINTS_MANAGED_BY, MANAGER.into()),
                (SERVICE_NAME, name.clone()),
            ],
        ),
        subsets: (!subsets.is_empty()).then_some(subsets),
    };

    // EndpointSlices: one per distinct set of resolved ports (at most MAX_PER_SLICE
    // endpoints each), terminating Pods included with their conditions.
    let mut groups: BTreeMap<Vec<Resolved>, Vec<&Member>> = BTreeMap::new();
    for m in &members {
        groups.entry(m.ports.clone()).or_default().push(m);
    }
    if groups.is_empty() {
        // A Service with no endpoints still has one slice (kube-controller-manager's
        // placeholder: no endpoints, no ports).
        groups.insert(Vec::new(), Vec::new());
    }
    let mut slices = Vec::new();
    for (ports, ms) in groups {
        let base = format!("{name}-{}", ports_hash(&ports));
        let chunks: Vec<&[&Member]> = if ms.is_empty() {
            vec![&[]]
        } else {
            ms.chunks(MAX_PER_SLICE).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let slice_name = if i == 0 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            slices.push(EndpointSlice {
                metadata: meta(
                    svc,
                    slice_name,
                    [
                        (SLICE_MANAGED_BY, MANAGER.into()),
                        (SERVICE_NAME, name.clone()),
                    ],
                ),
                address_type: "IPv4".into(),
                endpoints: chunk
                    .iter()
                    .map(|m| Endpoint {
                        addresses: vec![m.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(publish || m.pod_ready && !m.terminating),
                            serving: Some(m.pod_ready),
                            terminating: Some(m.terminating),
                        }),
                        hostname: m.hostname.clone(),
                        node_name: m.node.clone(),
                        target_ref: Some(target_ref(&ns, m)),
                        ..Default::default()
                    })
                    .collect(),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| SlicePort {
                            name: Some(p.name.clone()),
                            port: Some(p.port),
                            protocol: Some(p.protocol.clone()),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
            });
        }
    }
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Some(Desired { endpoints, slices })
}
