//! The network model's inputs, pure: a workload's NB port, a planned service's NB state,
//! and the whole [`NetworkState`] that `ferry-net` turns into Northbound rows. The
//! YusurService -> NB path: `plan` decides a service, [`service_state`] makes it a
//! `ServiceState`, `ferry-net` builds its rows and `network` writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_api::{BareMetal, Protocol as ApiProtocol, Scope, SessionAffinity, StrLookup, VNicIP};
use ferry_net::{
    ExternalNetwork, NetworkState, PortKind, PortState, ServicePort, ServiceScope, ServiceState,
    SubnetState,
};
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::network::NetworkConfig;
use crate::plan::ServiceOutcome;
use crate::world::SubnetInfo;

/// A node as the network model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    /// Its `ExternalIP` address (status.addresses), where NodePorts answer from outside.
    pub external: Option<Ipv4Addr>,
}

/// The objects the network is made of, as read from the caches.
#[derive(Debug, Clone, Default)]
pub struct NetObjects {
    pub vpcs: Vec<String>,
    pub subnets: BTreeMap<String, SubnetInfo>,
    /// Workload ports (pods, VMIs, hosts); node and probe ports come from `nodes`.
    pub ports: Vec<PortState>,
    pub nodes: Vec<NodeInfo>,
    /// Workload ports in their VPC's socket-LB port group ([`socket_lb_nodes`]).
    pub socket_lb_ports: BTreeSet<String>,
}

/// The nodes whose pods join their VPC's socket-LB port group (traffic between members
/// skips conntrack, `ferry_net`'s `socket_lb` module): the agent announces its socket LB
/// ([`ferry_api::ANNOTATION_SOCKET_LB`] `"true"`) and is alive (`live`: its Lease renewed
/// in time). An agent that died leaves the group with its Lease, so its pods fall back to
/// OVN's load balancers, which then need conntrack again.
pub fn socket_lb_nodes(nodes: &[NodeInfo], live: &BTreeSet<String>) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| {
            n.annotations
                .get(ferry_api::ANNOTATION_SOCKET_LB)
                .is_some_and(|v| v == "true")
                && live.contains(&n.name)
        })
        .map(|n| n.name.clone())
        .collect()
}

fn protocol(p: ApiProtocol) -> ferry_net::Protocol {
    match p {
        ApiProtocol::TCP => ferry_net::Protocol::Tcp,
        ApiProtocol::UDP => ferry_net::Protocol::Udp,
        ApiProtocol::SCTP => ferry_net::Protocol::Sctp,
    }
}

fn ip(s: Option<&String>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// The NB port of a pod, once the controller has written its address.
pub fn pod_port(pod: &crate::cached::CachedPod) -> Option<PortState> {
    annotated_port(PortKind::Pod, &pod.metadata, &pod.annotations)
}

/// The NB port of a VMI, once the controller has written its address.
pub fn vmi_port(vmi: &ferry_api::VirtualMachineInstance) -> Option<PortState> {
    annotated_port(
        PortKind::Vmi,
        &vmi.metadata,
        vmi.metadata.annotations.as_ref()?,
    )
}

/// The port of a workload whose name is in `meta`, from the address annotations in `a`.
fn annotated_port(kind: PortKind, meta: &ObjectMeta, a: &impl StrLookup) -> Option<PortState> {
    Some(PortState {
        name: ferry_net::port_name(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        ),
        subnet: a.lookup(ferry_api::ANNOTATION_SUBNET)?.to_string(),
        mac: a.lookup(ferry_api::ANNOTATION_MAC)?.to_string(),
        ip: a.lookup(ferry_api::ANNOTATION_IP)?.parse().ok()?,
    })
}

/// The NB port of a BareMetal host, once it has an address.
pub fn baremetal_port(bm: &BareMetal) -> Option<PortState> {
    let st = bm.status.clone().unwrap_or_default();
    Some(PortState {
        name: ferry_net::port_name(
            PortKind::BareMetal,
            &bm.namespace().unwrap_or_default(),
            &bm.name_any(),
        ),
        subnet: bm.spec.subnet.clone(),
        mac: st.mac_address?,
        ip: ip(st.ip_address.as_ref())?,
    })
}

/// The NB port of a VNicIP: on the external network it names its own address, elsewhere
/// it has the one the controller allocated.
pub fn vnicip_port(v: &VNicIP) -> Option<PortState> {
    let (addr, mac) = if v.spec.subnet == ferry_net::EXTERNAL_SWITCH {
        (ip(v.spec.ip_address.as_ref()), v.spec.mac_address.clone())
    } else {
        let st = v.status.clone().unwrap_or_default();
        (ip(st.ip_address.as_ref()), st.mac_address)
    };
    Some(PortState {
        name: ferry_net::port_name(
            PortKind::VNicIP,
            &v.namespace().unwrap_or_default(),
            &v.name_any(),
        ),
        subnet: v.spec.subnet.clone(),
        mac: mac?,
        ip: addr?,
    })
}

/// What the NB holds for one service, or `None` when it cannot be programmed (a service
/// with no backend still gets load balancers, which reject).
pub fn service_state(o: &ServiceOutcome) -> Option<ServiceState> {
    if !o.programmable() {
        return None;
    }
    let s = &o.service;
    Some(ServiceState {
        external_ips: vec![],
        kind: Default::default(),
        node_local: false,
        key: o.key.clone(),
        uid: s.uid().unwrap_or_default(),
        scope: match s.spec.scope {
            Scope::Vpc => ServiceScope::Vpc(crate::service::service_vpcs(s)[0].clone()),
            Scope::MultiVpc => ServiceScope::MultiVpc(crate::service::service_vpcs(s)),
        },
        cluster_ip: o.cluster_ip,
        eip: o.eip,
        ports: s
            .spec
            .ports
            .iter()
            .map(|p| ServicePort {
                node_port: None,
                port: p.port as u16,
                target_port: p.target_port.unwrap_or(p.port) as u16,
                protocol: protocol(p.protocol),
            })
            .collect(),
        affinity_timeout: (s.spec.session_affinity == Some(SessionAffinity::ClientIP))
            .then(|| s.spec.session_affinity_timeout_seconds.unwrap_or(10800) as u32),
        backends: o
            .ready
            .iter()
            .map(|b| ferry_net::Backend {
                node: None,
                ip: b.ip,
                vpc: b.vpc.clone(),
            })
            .collect(),
    })
}

/// The network state the given objects and the services' NB states describe.
pub fn network_state(
    objects: NetObjects,
    services: Vec<ServiceState>,
    config: &NetworkConfig,
    eip_pool: Option<(Ipv4Addr, Ipv4Addr)>,
) -> NetworkState {
    let NetObjects {
        mut vpcs,
        subnets: subnet_infos,
        mut ports,
        nodes,
        socket_lb_ports,
    } = objects;
    if !vpcs.iter().any(|v| v == ferry_api::DEFAULT_VPC) {
        vpcs.push(ferry_api::DEFAULT_VPC.into());
    }
    vpcs.sort();
    let subnets = subnet_infos
        .values()
        .filter_map(|s| {
            let cidr: Ipv4Net = s.cidr.parse().ok()?;
            Some(SubnetState {
                name: s.name.clone(),
                vpc: s.vpc.clone(),
                cidr,
                gateway: s.gateway_or_default(),
            })
        })
        .collect();
    for n in &nodes {
        if subnet_infos.contains_key(ferry_api::JOIN_SUBNET)
            && let (Some(ipv4), Some(mac)) = (
                ip(n.annotations.get(ferry_api::ANNOTATION_IP)),
                n.annotations.get(ferry_api::ANNOTATION_MAC),
            )
        {
            ports.push(PortState {
                name: ferry_net::port_name(PortKind::Node, "", &n.name),
                subnet: ferry_api::JOIN_SUBNET.into(),
                mac: mac.clone(),
                ip: ipv4,
            });
        }
        for (vpc, p) in ferry_api::probe_ports(&n.annotations) {
            if let (Ok(ipv4), true) = (p.ip.parse(), subnet_infos.contains_key(&p.subnet)) {
                ports.push(PortState {
                    name: ferry_net::port_name(PortKind::Probe, &vpc, &n.name),
                    subnet: p.subnet.clone(),
                    mac: p.mac.clone(),
                    ip: ipv4,
                });
            }
        }
    }
    let external = config.external.as_ref().map(|e| ExternalNetwork {
        cidr: e.cidr,
        gateway: e.gateway,
        pool: eip_pool.unwrap_or((Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED)),
    });
    let nodes = nodes
        .iter()
        .map(|n| ferry_net::NodeAddresses {
            name: n.name.clone(),
            internal: ip(n.annotations.get(ferry_api::ANNOTATION_IP)),
            external: n.external,
        })
        .collect();
    NetworkState {
        nodes,
        socket_lb_ports,
        gateway_chassis: config.gateway_chassis.clone(),
        transit_cidr: None,
        vpcs,
        subnets,
        ports,
        external,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, socket_lb: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            annotations: socket_lb
                .map(|v| (ferry_api::ANNOTATION_SOCKET_LB.to_string(), v.to_string()))
                .into_iter()
                .collect(),
            external: None,
        }
    }

    #[test]
    fn socket_lb_nodes_are_announced_and_alive() {
        let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        let nodes = vec![
            node("on", Some("true")),
            node("lapsed", Some("true")),
            node("off", None),
            node("false", Some("false")),
        ];
        let cases = [
            (
                "announced and live; a lapsed agent's socket LB may be detached: not in",
                set(&["on", "off", "false"]),
                set(&["on"]),
            ),
            (
                "both announced nodes live",
                set(&["on", "lapsed", "off"]),
                set(&["on", "lapsed"]),
            ),
            ("nobody live", set(&[]), set(&[])),
        ];
        for (name, live, want) in cases {
            assert_eq!(socket_lb_nodes(&nodes, &live), want, "{name}");
        }
    }
}
