//! Scenario 4: an EIP in front of backends in several VPCs. The load balancer sits on the
//! `service-gateway` gateway router (`lb_force_snat_ip=router_ip`), which has one transit
//! link per VPC and a /32 route per backend through that VPC's link: after DNAT the
//! packet leaves by the backend's VPC link and is SNATed to service-gateway's address on
//! it, so the reply comes back the same way. `eip-gateway` routes the EIP to
//! service-gateway. Overlapping CIDRs are fine, but two backends with one address in two
//! VPCs cannot both be routed: that is a conflict, never a silent misroute.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::{Links, service_owner};
use crate::model::{Backend, ObjectError, SERVICE_GATEWAY, ServiceState};
use crate::topology::Builder;

/// Each backend address must mean one VPC, within the service and across the multi-VPC
/// services built before it (they share service-gateway's routes).
pub(crate) fn check_backends(svc: &ServiceState, links: &Links) -> Result<(), ObjectError> {
    let mut by_ip: BTreeMap<Ipv4Addr, BTreeSet<&str>> = BTreeMap::new();
    for be in &svc.backends {
        by_ip.entry(be.ip).or_default().insert(&be.vpc);
    }
    for (ip, vs) in &by_ip {
        let mut all: BTreeSet<String> = vs.iter().map(|v| v.to_string()).collect();
        if let Some((other_vpc, _)) = links.sgw_routes.get(ip) {
            all.insert(other_vpc.clone());
        }
        if all.len() > 1 {
            return Err(ObjectError::DuplicateBackendIp {
                service: svc.key.clone(),
                ip: *ip,
                vpcs: all.into_iter().collect(),
            });
        }
    }
    Ok(())
}

pub(crate) fn build(
    b: &mut Builder,
    links: &mut Links,
    svc: &ServiceState,
    vpcs: &[String],
    eip: Ipv4Addr,
) {
    let all: Vec<&Backend> = svc
        .backends
        .iter()
        .filter(|be| vpcs.contains(&be.vpc))
        .collect();
    for proto in super::protocols(svc) {
        let k = super::load_balancer(b, svc, "eip", eip, &proto, &all);
        b.router_lbs
            .entry(SERVICE_GATEWAY.into())
            .or_default()
            .push(k);
    }
    let owner = service_owner(svc);
    for be in &all {
        links
            .sgw_routes
            .entry(be.ip)
            .or_insert_with(|| (be.vpc.clone(), owner.clone()));
    }
    links.sgw_vpcs.extend(vpcs.iter().cloned());
    links
        .eip_routes
        .insert(eip, (SERVICE_GATEWAY.to_string(), owner));
}
