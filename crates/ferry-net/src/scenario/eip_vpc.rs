//! Scenario 3: an EIP in front of backends of one VPC. The load balancer sits on the VPC
//! router (distributed, with a gateway port on its transit link to `eip-gateway`);
//! `eip-gateway` routes the EIP (/32) to the VPC's link address, and the VPC router's
//! default route points back to `eip-gateway` so replies are un-DNATed where the request
//! was DNATed. A Kubernetes Service's `externalIPs` are more EIPs of the same load
//! balancer, and its node ports answer there on every node's external address (routed the
//! same way; with `externalTrafficPolicy: Local` only to that node's backends).

use std::net::Ipv4Addr;

use super::{Links, service_owner};
use crate::model::{Backend, NodeAddresses, ServiceState};
use crate::topology::Builder;

pub(crate) fn build(
    b: &mut Builder,
    links: &mut Links,
    svc: &ServiceState,
    vpc: &str,
    nodes: &[NodeAddresses],
) {
    let eips: Vec<Ipv4Addr> = svc.eip.iter().chain(&svc.external_ips).copied().collect();
    let node_ports = svc.ports.iter().any(|p| p.node_port.is_some())
        && nodes.iter().any(|n| n.external.is_some());
    if eips.is_empty() && !node_ports {
        return;
    }
    let local: Vec<&Backend> = svc.backends.iter().filter(|be| be.vpc == vpc).collect();
    for proto in super::protocols(svc) {
        let mut entries = Vec::new();
        for eip in &eips {
            entries.extend(super::port_entries(svc, *eip, &proto, &local));
        }
        if node_ports {
            entries.extend(super::node_port_entries(
                svc,
                nodes,
                |n| n.external,
                &proto,
                &local,
            ));
        }
        if entries.is_empty() {
            continue;
        }
        let k = super::load_balancer_of(b, svc, "eip", &proto, entries);
        b.router_lbs.entry(vpc.to_string()).or_default().push(k);
    }
    links.eip_vpcs.insert(vpc.to_string());
    for eip in eips {
        links.eips.insert(eip);
        links
            .eip_routes
            .insert(eip, (vpc.to_string(), service_owner(svc)));
    }
    if node_ports {
        links
            .node_eips
            .extend(nodes.iter().filter_map(|n| n.external));
    }
}
