//! Pure resolution of workloads into backends (address, subnet, VPC, node) and of agent
//! Leases into liveness; the caches that feed it are in `caches`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_api::{BackendKind, BareMetal, Subnet, VNicIP};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeStatus};

use crate::cached::CachedPod;
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
    pod: &CachedPod,
    namespace: Option<&Namespace>,
    subnets: &'a BTreeMap<String, SubnetInfo>,
) -> Option<&'a SubnetInfo> {
    let ns = pod.namespace().unwrap_or_default();
    let named = pod
        .annotations
        .get(ferry_api::ANNOTATION_SUBNET)
        .or_else(|| {
            namespace.and_then(|n| {
                n.annotations()
                    .get(ferry_api::ANNOTATION_SUBNET)
                    .map(String::as_str)
            })
        });
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
    let as_pod = CachedPod::from_metadata(vmi.metadata.clone());
    pod_subnet(&as_pod, namespace, subnets)
}

fn parse_ip(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// The annotation `kubectl apply` leaves: a copy of the whole object, read by nothing here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Keeps of a Node what the controller reads (metadata, `status.conditions`,
/// `status.addresses`; see `caches::ready_nodes`, `caches::net_objects`): a real node's
/// status also lists every image it holds.
pub fn project_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(a) = node.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    node.spec = None;
    node.status = node.status.take().map(|s| NodeStatus {
        conditions: s.conditions,
        addresses: s.addresses,
        ..Default::default()
    });
}

/// The address of a pod: Ferry's annotation first, then `status.podIP`.
pub fn pod_ip(pod: &CachedPod) -> Option<Ipv4Addr> {
    parse_ip(pod.annotations.get(ferry_api::ANNOTATION_IP)).or_else(|| {
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|s| s.parse().ok())
    })
}

/// Whether a pod is (or will be) on the pod network: not going away, not host-networked.
pub fn on_pod_network(pod: &CachedPod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
}

/// A pod as a backend: running (or pending) on the pod network, with an address.
pub fn pod_backend(
    pod: &CachedPod,
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
        labels: pod.labels.clone(),
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
    let ip = parse_ip(
        vmi.annotations()
            .get(ferry_api::ANNOTATION_IP)
            .map(String::as_str),
    )
    .or_else(|| {
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
        labels: vmi.labels().clone().into(),
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
        parse_ip(ip.map(String::as_str)),
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
        parse_ip(ip.map(String::as_str)),
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
        labels: meta.labels.clone().unwrap_or_default().into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn subnets() -> BTreeMap<String, SubnetInfo> {
        let s = SubnetInfo {
            name: "s1".into(),
            vpc: "vpc1".into(),
            cidr: "10.1.0.0/16".into(),
            gateway: None,
            exclude: Vec::new(),
            namespaces: Vec::new(),
            default: true,
        };
        [(s.name.clone(), s)].into_iter().collect()
    }

    #[test]
    fn a_cached_pod_resolves_to_its_backend_and_port() {
        let full: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "a"},
                "annotations": {"iaas.yusur.io/subnet": "s1", "iaas.yusur.io/ip_address": "10.1.0.5",
                    "iaas.yusur.io/mac_address": "0a:00:00:00:00:05", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "hostNetwork": false,
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let cached = CachedPod::from(full.clone());
        let subnets = subnets();
        assert_eq!(
            pod_backend(&cached, None, &subnets),
            Some(Backend {
                kind: BackendKind::Pod,
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u1".into(),
                ip: "10.1.0.5".parse().unwrap(),
                vpc: "vpc1".into(),
                subnet: "s1".into(),
                node: Some("n1".into()),
                labels: [("app", "a")].into_iter().collect(),
            })
        );
        assert!(crate::net_model::pod_port(&cached).is_some());
        assert!(on_pod_network(&cached));
        // Host-networked pods stay off the pod network once cached.
        let mut host = full;
        host.spec.as_mut().unwrap().host_network = Some(true);
        assert!(!on_pod_network(&CachedPod::from(host)));
    }

    #[test]
    fn a_projected_node_keeps_its_conditions_addresses_and_annotations() {
        let full: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {"iaas.yusur.io/probe-ports": "{}"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "ExternalIP", "address": "198.18.0.11"}],
                "images": [{"names": ["registry/image:1"], "sizeBytes": 1000}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}}
        }))
        .unwrap();
        let mut projected = full.clone();
        project_node(&mut projected);
        let want: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {"iaas.yusur.io/probe-ports": "{}"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "ExternalIP", "address": "198.18.0.11"}]}
        }))
        .unwrap();
        assert_eq!(projected, want);
    }
}
