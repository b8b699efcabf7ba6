//! Pure resolution of workloads into backends (address, subnet, VPC, node) and of agent
//! Leases into liveness; the caches that feed it are in `caches`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_api::{BackendKind, BareMetal, Subnet, VNicIP};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;

use crate::service::Backend;

/// A subnet as IPAM and backend resolution need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub name: String,
    pub vpc: String,
    pub cidr: String,
    pub gateway: Option<Ipv4Addr>,
    pub exclude: Vec<String>,
    pub namespaces: Vec<String>,
    pub default: bool,
}

impl SubnetInfo {
    /// The gateway, or the subnet's first address when none is set.
    pub fn gateway_or_default(&self) -> Ipv4Addr {
        self.gateway.unwrap_or_else(|| {
            self.cidr
                .parse::<ipnet::Ipv4Net>()
                .map(|n| crate::ipam::default_gateway(&n))
                .unwrap_or(Ipv4Addr::UNSPECIFIED)
        })
    }
}

pub fn subnet_info(s: &Subnet) -> SubnetInfo {
    SubnetInfo {
        name: s.name_any(),
        vpc: if s.spec.vpc.is_empty() {
            ferry_api::DEFAULT_VPC.to_string()
        } else {
            s.spec.vpc.clone()
        },
        cidr: s.spec.cidr_block.clone(),
        gateway: s.spec.gateway.as_deref().and_then(|g| g.parse().ok()),
        exclude: s.spec.exclude_ips.clone(),
        namespaces: s.spec.namespaces.clone(),
        default: s.spec.default,
    }
}

/// The subnet a pod lands in: its annotation, its namespace's annotation, a subnet that
/// claims the namespace, or the default subnet.
pub fn pod_subnet<'a>(
    pod: &Pod,
    namespace: Option<&Namespace>,
    subnets: &'a BTreeMap<String, SubnetInfo>,
) -> Option<&'a SubnetInfo> {
    let ns = pod.namespace().unwrap_or_default();
    let named = pod
        .annotations()
        .get(ferry_api::ANNOTATION_SUBNET)
        .or_else(|| namespace.and_then(|n| n.annotations().get(ferry_api::ANNOTATION_SUBNET)));
    if let Some(name) = named {
        return subnets.get(name);
    }
    subnets
        .values()
        .find(|s| s.namespaces.contains(&ns))
        .or_else(|| subnets.values().find(|s| s.default))
        .or_else(|| subnets.get(ferry_api::DEFAULT_POD_SUBNET))
}

/// The subnet of a VMI, by the same rules as a pod's.
pub fn vmi_subnet<'a>(
    vmi: &ferry_api::VirtualMachineInstance,
    namespace: Option<&Namespace>,
    subnets: &'a BTreeMap<String, SubnetInfo>,
) -> Option<&'a SubnetInfo> {
    let as_pod = Pod {
        metadata: vmi.metadata.clone(),
        ..Default::default()
    };
    pod_subnet(&as_pod, namespace, subnets)
}

fn parse_ip(s: Option<&String>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// The address of a pod: Ferry's annotation first, then `status.podIP`.
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    parse_ip(pod.annotations().get(ferry_api::ANNOTATION_IP)).or_else(|| {
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|s| s.parse().ok())
    })
}

/// Whether a pod is (or will be) on the pod network: not going away, not host-networked.
pub fn on_pod_network(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
}

/// A pod as a backend: running (or pending) on the pod network, with an address.
pub fn pod_backend(
    pod: &Pod,
    namespace: Option<&Namespace>,
    subnets: &BTreeMap<String, SubnetInfo>,
) -> Option<Backend> {
    if !on_pod_network(pod)
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    {
        return None;
    }
    let subnet = pod_subnet(pod, namespace, subnets)?;
    Some(Backend {
        kind: BackendKind::Pod,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        ip: pod_ip(pod)?,
        vpc: subnet.vpc.clone(),
        subnet: subnet.name.clone(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        labels: pod.labels().clone(),
    })
}

/// A KubeVirt VMI as a backend: Ferry's address annotation, else its first interface's.
pub fn vmi_backend(
    vmi: &ferry_api::VirtualMachineInstance,
    namespace: Option<&Namespace>,
    subnets: &BTreeMap<String, SubnetInfo>,
) -> Option<Backend> {
    if vmi.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = vmi.status.clone().unwrap_or_default();
    let ip = parse_ip(vmi.annotations().get(ferry_api::ANNOTATION_IP)).or_else(|| {
        status
            .interfaces
            .first()
            .and_then(|i| i.ip_address.as_deref())
            .and_then(|s| s.parse().ok())
    })?;
    let subnet = vmi_subnet(vmi, namespace, subnets)?;
    Some(Backend {
        kind: BackendKind::VirtualMachineInstance,
        namespace: vmi.namespace().unwrap_or_default(),
        name: vmi.name_any(),
        uid: vmi.uid().unwrap_or_default(),
        ip,
        vpc: subnet.vpc.clone(),
        subnet: subnet.name.clone(),
        node: status.node_name.clone(),
        labels: vmi.labels().clone(),
    })
}

/// A BareMetal host as a backend: the allocated address, else the one its spec names.
pub fn baremetal_backend(
    bm: &BareMetal,
    subnets: &BTreeMap<String, SubnetInfo>,
) -> Option<Backend> {
    let ip = bm
        .status
        .as_ref()
        .and_then(|s| s.ip_address.as_ref())
        .or(bm.spec.ip_address.as_ref());
    host_backend(
        BackendKind::BareMetal,
        &bm.metadata,
        &bm.spec.subnet,
        parse_ip(ip),
        bm.spec.node_name.clone(),
        subnets,
    )
}

/// A VNicIP as a backend, by the same rules as a BareMetal host.
pub fn vnicip_backend(v: &VNicIP, subnets: &BTreeMap<String, SubnetInfo>) -> Option<Backend> {
    let ip = v
        .status
        .as_ref()
        .and_then(|s| s.ip_address.as_ref())
        .or(v.spec.ip_address.as_ref());
    host_backend(
        BackendKind::VNicIP,
        &v.metadata,
        &v.spec.subnet,
        parse_ip(ip),
        v.spec.node_name.clone(),
        subnets,
    )
}

fn host_backend(
    kind: BackendKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    subnet: &str,
    ip: Option<Ipv4Addr>,
    node: Option<String>,
    subnets: &BTreeMap<String, SubnetInfo>,
) -> Option<Backend> {
    let s = subnets.get(subnet)?;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    Some(Backend {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        ip: ip?,
        vpc: s.vpc.clone(),
        subnet: s.name.clone(),
        node,
        labels: meta.labels.clone().unwrap_or_default(),
    })
}

/// The node that probes a backend naming none (bare metal, VNicIPs): one of the ready
/// nodes, by a hash of its name, so the choice is stable while the nodes are.
pub fn assign_node(b: &mut Backend, ready: &[String]) {
    if b.node.is_none() && !ready.is_empty() {
        let h = b
            .name
            .bytes()
            .fold(0usize, |h, x| h.wrapping_mul(31).wrapping_add(x as usize));
        b.node = Some(ready[h % ready.len()].clone());
    }
}

/// Whether a node agent's Lease has lapsed at `now` (renew time + duration passed).
pub fn lease_lapsed(l: &Lease, now: jiff::Timestamp) -> bool {
    let Some(spec) = &l.spec else { return true };
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    renewed.0 + jiff::SignedDuration::from_secs(i64::from(secs)) < now
}
