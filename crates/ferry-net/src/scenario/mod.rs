//! Services: each is validated as a whole (a refused service writes nothing), then gets one
//! `Load_Balancer` per protocol and placement, per the scenario table of
//! `architecture.md`:
//!
//! - [`cluster_ip`]: scenarios 1 and 2, the VPC's load balancer group on every switch of
//!   the VPC (the default VPC's includes the join switch `subnet0`);
//! - [`eip_vpc`]: scenario 3, an EIP load balancer on the VPC router;
//! - [`eip_multi_vpc`]: scenario 4, an EIP load balancer on `service-gateway` with /32
//!   routes to every backend.

pub mod cluster_ip;
pub mod eip_multi_vpc;
pub mod eip_vpc;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::json;

use crate::model::*;
use crate::topology::{Builder, map, set};

/// What the services need from the transit links, collected while building them.
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// Every allocated EIP (the ARP proxy list).
    pub eips: BTreeSet<Ipv4Addr>,
    /// VPCs with scope-VPC EIP services: they get a link to `eip-gateway`.
    pub eip_vpcs: BTreeSet<String>,
    /// VPCs with backends of multi-VPC EIP services: they get a link to `service-gateway`.
    pub sgw_vpcs: BTreeSet<String>,
    /// EIP -> (the VPC or `service-gateway` it is routed to, the owner of the route).
    pub eip_routes: BTreeMap<Ipv4Addr, (String, String)>,
    /// Backend address -> (its VPC, the owner of the route) on `service-gateway`.
    pub sgw_routes: BTreeMap<Ipv4Addr, (String, String)>,
    /// Nodes' external addresses, answered by `eip-gateway` and routed to the default VPC
    /// while a service has node ports.
    pub node_eips: BTreeSet<Ipv4Addr>,
}

/// The `ferry.io/owner` of a service's rows.
pub fn service_owner(svc: &ServiceState) -> String {
    let kind = match svc.kind {
        ServiceKind::YusurService => "YusurService",
        ServiceKind::Service => "Service",
    };
    format!("{kind}/{}/{}", svc.key, svc.uid)
}

/// One VIP of a load balancer: `ADDR:PORT` and the backends' `IP:PORT`s.
pub(crate) type VipEntry = (String, Vec<String>);

/// The entries of `svc`'s ports of `proto` on `vip`, to `backends`.
pub(crate) fn port_entries(
    svc: &ServiceState,
    vip: Ipv4Addr,
    proto: &Protocol,
    backends: &[&Backend],
) -> Vec<VipEntry> {
    svc.ports
        .iter()
        .filter(|p| &p.protocol == proto)
        .map(|p| {
            (
                format!("{vip}:{}", p.port),
                targets(backends, p.target_port),
            )
        })
        .collect()
}

/// The entries of `svc`'s node ports of `proto` on each node's address (`addr` picks the
/// internal or external one); with `node_local`, each node's entry has its own backends.
pub(crate) fn node_port_entries(
    svc: &ServiceState,
    nodes: &[NodeAddresses],
    addr: impl Fn(&NodeAddresses) -> Option<Ipv4Addr>,
    proto: &Protocol,
    backends: &[&Backend],
) -> Vec<VipEntry> {
    let mut out = Vec::new();
    for n in nodes {
        let Some(ip) = addr(n) else { continue };
        let here: Vec<&Backend> = backends
            .iter()
            .copied()
            .filter(|b| !svc.node_local || b.node.as_deref() == Some(n.name.as_str()))
            .collect();
        for p in svc.ports.iter().filter(|p| &p.protocol == proto) {
            if let Some(np) = p.node_port {
                out.push((format!("{ip}:{np}"), targets(&here, p.target_port)));
            }
        }
    }
    out
}

fn targets(backends: &[&Backend], port: u16) -> Vec<String> {
    let mut t: Vec<String> = backends
        .iter()
        .map(|be| format!("{}:{port}", be.ip))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// The name of one of a service's load balancers, e.g. `ferry-default-web-cip-vpc1-tcp`
/// (readable, not unique: the row's key is).
pub fn lb_name(svc: &ServiceState, role: &str, proto: &Protocol) -> String {
    format!(
        "ferry-{}-{role}-{}",
        svc.key.replace('/', "-"),
        proto.as_str()
    )
}

/// Writes one load balancer of `svc` for `vip` and `proto` to `backends`; returns its key.
pub(crate) fn load_balancer(
    b: &mut Builder,
    svc: &ServiceState,
    role: &str,
    vip: Ipv4Addr,
    proto: &Protocol,
    backends: &[&Backend],
) -> String {
    let entries = port_entries(svc, vip, proto, backends);
    load_balancer_of(b, svc, role, proto, entries)
}

/// Writes one load balancer of `svc` with `entries` for `proto`; returns its key. A VIP
/// with no backend rejects (`reject=true`); ClientIP affinity hashes the source address.
pub(crate) fn load_balancer_of(
    b: &mut Builder,
    svc: &ServiceState,
    role: &str,
    proto: &Protocol,
    entries: Vec<VipEntry>,
) -> String {
    // Sorted: the same service always writes the same map.
    let mut options: Vec<(&str, String)> = Vec::new();
    // ClientIP affinity: the backend is chosen by a hash of the client's address, not by
    // OVN's `affinity_timeout` (learned flows), which in OVN 23.03 with the userspace
    // datapath loses the first connection of every new client (seen in the lab: its SYN
    // and retransmissions go unanswered, later connections stick). A hash sticks without
    // expiry: stronger than Kubernetes' timeoutSeconds, and it moves a client only when
    // the backends change.
    let selection: Vec<serde_json::Value> = svc
        .affinity_timeout
        .map(|_| json!("ip_src"))
        .into_iter()
        .collect();
    if entries.iter().any(|(_, t)| t.is_empty()) {
        options.push(("reject", "true".into()));
    }
    let mut entries = entries;
    entries.sort();
    let vips: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(vip, t)| json!([vip, t.join(",")]))
        .collect();
    let name = lb_name(svc, role, proto);
    b.add(
        "Load_Balancer",
        &format!("{}/{role}/{}", svc.key, proto.as_str()),
        &service_owner(svc),
        BTreeMap::from([
            ("name".to_string(), json!(name)),
            ("protocol".to_string(), set(vec![json!(proto.as_str())])),
            ("vips".to_string(), json!(["map", vips])),
            ("options".to_string(), map(&options)),
            ("selection_fields".to_string(), set(selection)),
        ]),
    )
}

/// The VPCs a service's backends may live in.
pub(crate) fn scope_vpcs(svc: &ServiceState) -> Vec<String> {
    match &svc.scope {
        ServiceScope::Vpc(v) => vec![v.clone()],
        ServiceScope::MultiVpc(vs) => {
            let mut vs = vs.clone();
            vs.sort();
            vs.dedup();
            vs
        }
    }
}

/// Claims taken by services built so far.
#[derive(Default)]
struct Claims {
    /// `VIP:PORT/PROTO` -> service key.
    vips: BTreeMap<String, String>,
    /// EIP -> service key.
    eips: BTreeMap<Ipv4Addr, String>,
}

/// Everything that makes `svc` impossible to program, given the services before it.
fn check(
    svc: &ServiceState,
    state: &NetworkState,
    vpcs: &BTreeSet<&str>,
    claims: &Claims,
    links: &Links,
) -> Result<Vec<String>, ObjectError> {
    let service = || svc.key.clone();
    for v in scope_vpcs(svc) {
        if !vpcs.contains(v.as_str()) {
            return Err(ObjectError::ServiceUnknownVpc {
                service: service(),
                vpc: v,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for p in &svc.ports {
        if !seen.insert((p.port, p.protocol.clone())) {
            return Err(ObjectError::DuplicateServicePort {
                service: service(),
                port: p.port,
                protocol: p.protocol.as_str(),
            });
        }
    }
    if let Some(eip) = svc.eip {
        let Some(ext) = &state.external else {
            return Err(ObjectError::NoExternalNetwork { service: service() });
        };
        if !(u32::from(ext.pool.0)..=u32::from(ext.pool.1)).contains(&u32::from(eip)) {
            return Err(ObjectError::EipOutOfPool {
                service: service(),
                eip,
            });
        }
        if let Some(other) = claims.eips.get(&eip) {
            return Err(ObjectError::EipInUse {
                service: service(),
                eip,
                other: other.clone(),
            });
        }
        if matches!(svc.scope, ServiceScope::MultiVpc(_)) {
            eip_multi_vpc::check_backends(svc, links)?;
        }
    }
    let has_node_ports = svc.ports.iter().any(|p| p.node_port.is_some());
    if has_node_ports && svc.scope != ServiceScope::Vpc(DEFAULT_VPC.into()) {
        return Err(ObjectError::NodePortOutsideDefaultVpc { service: service() });
    }
    for ip in svc.eip.iter().chain(&svc.external_ips) {
        if let Some(n) = state.nodes.iter().find(|n| n.external == Some(*ip)) {
            return Err(ObjectError::EipInUse {
                service: service(),
                eip: *ip,
                other: format!("node {}", n.name),
            });
        }
    }
    if !svc.external_ips.is_empty() {
        let Some(ext) = &state.external else {
            return Err(ObjectError::NoExternalNetwork { service: service() });
        };
        if let Some(ip) = svc.external_ips.iter().find(|ip| !ext.cidr.contains(*ip)) {
            return Err(ObjectError::ExternalIpOutsideNetwork {
                service: service(),
                ip: *ip,
                cidr: ext.cidr,
            });
        }
    }
    let mut claimed = Vec::new();
    for n in state.nodes.iter().filter(|_| has_node_ports) {
        for addr in n.external.iter() {
            for p in &svc.ports {
                let Some(np) = p.node_port else { continue };
                let vip = format!("{addr}:{np}/{}", p.protocol.as_str());
                if let Some(other) = claims.vips.get(&vip) {
                    return Err(ObjectError::VipClash {
                        service: service(),
                        vip,
                        other: other.clone(),
                    });
                }
                claimed.push(vip);
            }
        }
    }
    // A cluster IP lives in its VPCs' groups only: the same address may serve another
    // VPC (the cluster DNS does, in every VPC). EIPs and external IPs are one network's.
    let mut vips: Vec<(String, Ipv4Addr)> = Vec::new();
    for v in scope_vpcs(svc) {
        vips.extend(svc.cluster_ip.iter().map(|ip| (format!(" in {v}"), *ip)));
    }
    vips.extend(
        svc.eip
            .iter()
            .chain(svc.external_ips.iter())
            .map(|ip| (String::new(), *ip)),
    );
    for (scope, addr) in vips {
        for p in &svc.ports {
            let bare = format!("{addr}:{}/{}", p.port, p.protocol.as_str());
            let vip = format!("{bare}{scope}");
            // A scoped VIP clashes with itself and with the same unscoped one; an unscoped
            // VIP with itself and with every scoped one.
            let other = claims
                .vips
                .get(&vip)
                .or(claims.vips.get(&bare))
                .or_else(|| {
                    scope.is_empty().then(|| {
                        claims
                            .vips
                            .range(format!("{bare} in ")..)
                            .take_while(|(k, _)| k.starts_with(&format!("{bare} in ")))
                            .map(|(_, v)| v)
                            .next()
                    })?
                });
            if let Some(other) = other {
                return Err(ObjectError::VipClash {
                    service: service(),
                    vip,
                    other: other.clone(),
                });
            }
            claimed.push(vip);
        }
    }
    Ok(claimed)
}

/// Builds the load balancers of every service that can be programmed (in key order, so
/// the first of two clashing services keeps its claim) and returns what the links need.
pub(crate) fn build_services(
    b: &mut Builder,
    state: &NetworkState,
    vpcs: &BTreeSet<&str>,
) -> Links {
    let mut links = Links::default();
    let mut claims = Claims::default();
    let mut services: Vec<&ServiceState> = state.services.iter().collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    for svc in services {
        let claimed = match check(svc, state, vpcs, &claims, &links) {
            Ok(c) => c,
            Err(e) => {
                b.errors.push(e);
                continue;
            }
        };
        for vip in claimed {
            claims.vips.insert(vip, svc.key.clone());
        }
        let svc_vpcs = scope_vpcs(svc);
        cluster_ip::build(b, svc, &svc_vpcs);
        if let Some(eip) = svc.eip {
            claims.eips.insert(eip, svc.key.clone());
        }
        match &svc.scope {
            ServiceScope::Vpc(v) => eip_vpc::build(b, &mut links, svc, v, &state.nodes),
            ServiceScope::MultiVpc(_) => {
                if let Some(eip) = svc.eip {
                    links.eips.insert(eip);
                    eip_multi_vpc::build(b, &mut links, svc, &svc_vpcs, eip)
                }
            }
        }
    }
    links
}

/// Protocols of a service, each one load balancer per placement.
fn protocols(svc: &ServiceState) -> BTreeSet<Protocol> {
    svc.ports.iter().map(|p| p.protocol.clone()).collect()
}
