//! Scenario 3: an EIP in front of backends of one VPC. The load balancer sits on the VPC
//! router (distributed, with a gateway port on its transit link to `eip-gateway`);
//! `eip-gateway` routes the EIP (/32) to the VPC's link address, and the VPC router's
//! default route points back to `eip-gateway` so replies are un-DNATed where the request
//! was DNATed.

use std::net::Ipv4Addr;

use super::{Links, service_owner};
use crate::model::{Backend, ServiceState};
use crate::topology::Builder;

pub(crate) fn build(
    b: &mut Builder,
    links: &mut Links,
    svc: &ServiceState,
    vpc: &str,
    eip: Ipv4Addr,
) {
    let local: Vec<&Backend> = svc.backends.iter().filter(|be| be.vpc == vpc).collect();
    for proto in super::protocols(svc) {
        let k = super::load_balancer(b, svc, "eip", eip, &proto, &local);
        b.router_lbs.entry(vpc.to_string()).or_default().push(k);
    }
    links.eip_vpcs.insert(vpc.to_string());
    links
        .eip_routes
        .insert(eip, (vpc.to_string(), service_owner(svc)));
}
