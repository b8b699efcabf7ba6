//! The controller's view of the cluster: reflector caches of every kind it reads, and the
//! pure resolution of workloads into backends (address, subnet, VPC, node).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_api::{BackendKind, BareMetal, Eip, NetworkProbe, Subnet, VNicIP, Vpc, YusurService};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::service::Backend;

/// Annotation on a Node naming the address of its interface on the join subnet.
pub const NODE_IP_ANNOTATION: &str = ferry_api::ANNOTATION_IP;

/// The reflector stores the controller reads from.
#[derive(Clone)]
pub struct Caches {
    pub services: Store<YusurService>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub nodes: Store<Node>,
    pub vpcs: Store<Vpc>,
    pub subnets: Store<Subnet>,
    pub eips: Store<Eip>,
    pub baremetals: Store<BareMetal>,
    pub vnicips: Store<VNicIP>,
    pub probes: Store<NetworkProbe>,
    pub k8s_services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    pub slices: Store<EndpointSlice>,
    /// KubeVirt VMIs, when that API exists.
    pub vmis: Option<Store<ferry_api::VirtualMachineInstance>>,
}

/// A subnet as IPAM and backend resolution need it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetInfo {
    pub name: String,
    pub vpc: String,
    pub cidr: String,
    pub gateway: Option<Ipv4Addr>,
    pub exclude: Vec<String>,
    pub namespaces: Vec<String>,
    pub default: bool,
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
        .or_else(|| subnets.get("ovn-default"))
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

/// Every workload that could back a service, resolved to an address and a VPC.
pub fn backends(c: &Caches, subnets: &BTreeMap<String, SubnetInfo>) -> Vec<Backend> {
    let namespaces: BTreeMap<String, _> = c
        .namespaces
        .state()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let mut out = Vec::new();
    for pod in c.pods.state() {
        if pod.metadata.deletion_timestamp.is_some()
            || pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false)
            || matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let (Some(subnet), Some(ip)) = (
            pod_subnet(&pod, namespaces.get(&ns).map(|n| n.as_ref()), subnets),
            pod_ip(&pod),
        ) else {
            continue;
        };
        out.push(Backend {
            kind: BackendKind::Pod,
            namespace: ns,
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            ip,
            vpc: subnet.vpc.clone(),
            subnet: subnet.name.clone(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            labels: pod.labels().clone(),
        });
    }
    for vmi in c.vmis.iter().flat_map(|s| s.state()) {
        if vmi.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = vmi.namespace().unwrap_or_default();
        let status = vmi.status.clone().unwrap_or_default();
        let ip = parse_ip(vmi.annotations().get(ferry_api::ANNOTATION_IP)).or_else(|| {
            status
                .interfaces
                .first()
                .and_then(|i| i.ip_address.as_deref())
                .and_then(|s| s.parse().ok())
        });
        let subnet = vmi_subnet(&vmi, namespaces.get(&ns).map(|n| n.as_ref()), subnets);
        let (Some(subnet), Some(ip)) = (subnet, ip) else {
            continue;
        };
        out.push(Backend {
            kind: BackendKind::VirtualMachineInstance,
            namespace: ns,
            name: vmi.name_any(),
            uid: vmi.uid().unwrap_or_default(),
            ip,
            vpc: subnet.vpc.clone(),
            subnet: subnet.name.clone(),
            node: status.node_name.clone(),
            labels: vmi.labels().clone(),
        });
    }
    let mut push = |kind,
                    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    subnet: &str,
                    ip: Option<Ipv4Addr>,
                    node: Option<String>| {
        let (Some(s), Some(ip)) = (subnets.get(subnet), ip) else {
            return;
        };
        if meta.deletion_timestamp.is_some() {
            return;
        }
        out.push(Backend {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            ip,
            vpc: s.vpc.clone(),
            subnet: s.name.clone(),
            node,
            labels: meta.labels.clone().unwrap_or_default(),
        });
    };
    for bm in c.baremetals.state() {
        let ip = bm
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .or(bm.spec.ip_address.as_ref());
        push(
            BackendKind::BareMetal,
            &bm.metadata,
            &bm.spec.subnet,
            parse_ip(ip),
            bm.spec.node_name.clone(),
        );
    }
    for v in c.vnicips.state() {
        let ip = v
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .or(v.spec.ip_address.as_ref());
        push(
            BackendKind::VNicIP,
            &v.metadata,
            &v.spec.subnet,
            parse_ip(ip),
            v.spec.node_name.clone(),
        );
    }
    out.sort();
    out
}

/// Ready nodes, for assigning probes of backends that name none.
pub fn ready_nodes(c: &Caches) -> BTreeSet<String> {
    c.nodes
        .state()
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none_or(|cs| {
                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True") || cs.is_empty()
                })
        })
        .map(|n| n.name_any())
        .collect()
}
