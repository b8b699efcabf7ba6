//! [`build_desired`]: the whole Northbound content Ferry owns, from the network state.
//!
//! Order of work: VPC routers, subnets (validated against the transit and join ranges and
//! each other), the external network with `eip-gateway`, workload ports, the socket-LB
//! port groups ([`crate::socket_lb`]), services (each
//! validated as a whole before it writes anything, see [`crate::scenario`]), then the
//! transit links the services need, and the ARP proxy list of the EIPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::json;

use crate::model::*;
use crate::names::{link, slot_for};
use crate::scenario::{self, Links};
use crate::topology::{Builder, INFRA_OWNER, map, set};

/// The name of a VPC's load balancer group.
pub fn group_name(vpc: &str) -> String {
    format!("ferry-{vpc}")
}

/// Subnet names Ferry uses for its own switches.
fn reserved_switch(name: &str) -> bool {
    name == EXTERNAL_SWITCH
        || name.starts_with("transit-")
        || name.starts_with(&format!("{SERVICE_GATEWAY}-"))
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Builds every row Ferry owns. Objects that cannot be programmed are reported in
/// `errors` and left out; everything else is still built. Never panics.
pub fn build_desired(state: &NetworkState) -> Desired {
    let mut b = Builder::default();
    let transit: Ipv4Net = state.transit_cidr.unwrap_or_else(|| {
        TRANSIT_CIDR_DEFAULT
            .parse()
            .unwrap_or_else(|_| Ipv4Net::default())
    });
    // Chassis in priority order ("a,b"): with one, gateway routers and gateway ports sit
    // on it; with more, the external gateway and the VPCs' gateway ports are HA over all
    // of them (BFD between them, the first preferred) and the external network attaches
    // through a localnet port on each.
    let chassis_list: Vec<&str> = state
        .gateway_chassis
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let chassis = chassis_list.first().copied().unwrap_or_default();
    let ha = chassis_list.len() > 1;

    // VPC routers (names of Ferry's own routers are reserved).
    let mut vpcs: BTreeSet<&str> = BTreeSet::new();
    for v in &state.vpcs {
        if v == EIP_GATEWAY || v == SERVICE_GATEWAY {
            b.errors.push(ObjectError::NameClash {
                kind: "vpc",
                name: v.clone(),
                ovn_name: v.clone(),
            });
            continue;
        }
        vpcs.insert(v);
        b.router(v);
        b.group_lbs.entry(group_name(v)).or_default();
    }

    // Subnets, in name order so that which of two conflicting subnets wins is stable.
    let join: Ipv4Net = state
        .subnets
        .iter()
        .find(|s| s.name == JOIN_SUBNET && s.vpc == DEFAULT_VPC)
        .map(|s| s.cidr)
        .unwrap_or_else(|| JOIN_CIDR_DEFAULT.parse().unwrap_or_default());
    let mut subnets: Vec<&SubnetState> = state.subnets.iter().collect();
    subnets.sort_by(|a, b| a.name.cmp(&b.name));
    let mut known_subnets: BTreeMap<&str, &SubnetState> = BTreeMap::new();
    for s in subnets {
        let error = if !vpcs.contains(s.vpc.as_str()) {
            Some(ObjectError::SubnetUnknownVpc {
                subnet: s.name.clone(),
                vpc: s.vpc.clone(),
            })
        } else if reserved_switch(&s.name) || known_subnets.contains_key(s.name.as_str()) {
            Some(ObjectError::NameClash {
                kind: "subnet",
                name: s.name.clone(),
                ovn_name: s.name.clone(),
            })
        } else if overlaps(&s.cidr, &transit) {
            Some(ObjectError::SubnetOverlapsTransit {
                subnet: s.name.clone(),
                cidr: s.cidr,
                reserved: transit,
            })
        } else if !(s.name == JOIN_SUBNET && s.vpc == DEFAULT_VPC) && overlaps(&s.cidr, &join) {
            Some(ObjectError::SubnetOverlapsJoin {
                subnet: s.name.clone(),
                cidr: s.cidr,
                join,
            })
        } else {
            known_subnets
                .values()
                .find(|o| o.vpc == s.vpc && overlaps(&o.cidr, &s.cidr))
                .map(|o| ObjectError::SubnetOverlapsSubnet {
                    subnet: s.name.clone(),
                    cidr: s.cidr,
                    other: o.name.clone(),
                })
        };
        if let Some(e) = error {
            b.errors.push(e);
            continue;
        }
        if let Err(ovn_name) = b.attach(&s.vpc, &s.name, s.gateway, s.cidr.prefix_len(), &[]) {
            b.errors.push(ObjectError::NameClash {
                kind: "subnet",
                name: s.name.clone(),
                ovn_name,
            });
            continue;
        }
        b.switch(&s.name);
        b.switch_groups
            .entry(s.name.clone())
            .or_default()
            .push(group_name(&s.vpc));
        known_subnets.insert(&s.name, s);
    }

    // The external network and its gateway.
    if let Some(ext) = &state.external {
        b.switch(EXTERNAL_SWITCH);
        b.router(EIP_GATEWAY);
        if ha {
            // A distributed router whose port on the external network is a gateway port
            // over every chassis: a gateway router (`options:chassis`) cannot fail over.
            let k = b.add(
                "Logical_Switch_Port",
                EXTERNAL_LOCALNET_PORT,
                INFRA_OWNER,
                BTreeMap::from([
                    ("name".to_string(), json!(EXTERNAL_LOCALNET_PORT)),
                    ("type".to_string(), json!("localnet")),
                    ("addresses".to_string(), set(vec![json!("unknown")])),
                    (
                        "options".to_string(),
                        map(&[("network_name", EXTERNAL_PHYSNET.to_string())]),
                    ),
                ]),
            );
            b.switch_ports
                .entry(EXTERNAL_SWITCH.into())
                .or_default()
                .push(k);
        } else {
            b.router_options
                .entry(EIP_GATEWAY.into())
                .or_default()
                .push(("chassis", chassis.to_string()));
        }
        // Both names are reserved above, so this cannot clash.
        let _ = b.attach(
            EIP_GATEWAY,
            EXTERNAL_SWITCH,
            ext.gateway,
            ext.cidr.prefix_len(),
            if ha { &chassis_list } else { &[] },
        );
    }

    // Workload ports.
    for p in &state.ports {
        let on_external = p.subnet == EXTERNAL_SWITCH && state.external.is_some();
        if !on_external && !known_subnets.contains_key(p.subnet.as_str()) {
            b.errors.push(ObjectError::PortUnknownSubnet {
                port: p.name.clone(),
                subnet: p.subnet.clone(),
            });
            continue;
        }
        if b.has("Logical_Switch_Port", &p.name) {
            b.errors.push(ObjectError::NameClash {
                kind: "port",
                name: p.name.clone(),
                ovn_name: p.name.clone(),
            });
            continue;
        }
        let k = b.add(
            "Logical_Switch_Port",
            &p.name,
            INFRA_OWNER,
            BTreeMap::from([
                ("name".to_string(), json!(p.name)),
                (
                    "addresses".to_string(),
                    set(vec![json!(format!("{} {}", p.mac, p.ip))]),
                ),
            ]),
        );
        b.switch_ports.entry(p.subnet.clone()).or_default().push(k);
    }

    // The socket-LB port group of each VPC (members' traffic skips conntrack).
    let vpc_of_subnet: BTreeMap<&str, &str> = known_subnets
        .iter()
        .map(|(name, s)| (*name, s.vpc.as_str()))
        .collect();
    crate::socket_lb::build(&mut b, state, &vpc_of_subnet);

    // Services: load balancers, and what their EIPs need from the transit links.
    let links = scenario::build_services(&mut b, state, &vpcs);

    if state.external.is_some() {
        build_links(&mut b, &links, transit, &chassis_list);
        // The outside resolves EIPs through the gateway's port (ovn.md: a space-separated
        // list; a CIDR or a comma-separated list is not answered in OVN 23.03).
        let lsp = crate::topology::key(
            "Logical_Switch_Port",
            &format!("{EXTERNAL_SWITCH}-{EIP_GATEWAY}"),
        );
        if let Some(row) = b.rows.get_mut(&("Logical_Switch_Port", lsp)) {
            let mut options = vec![("router-port", format!("{EIP_GATEWAY}-{EXTERNAL_SWITCH}"))];
            if !links.eips.is_empty() || !links.node_eips.is_empty() {
                let list: Vec<String> = links
                    .eips
                    .iter()
                    .chain(&links.node_eips)
                    .map(Ipv4Addr::to_string)
                    .collect();
                options.push(("arp_proxy", list.join(" ")));
            }
            row.columns.insert("options".into(), map(&options));
        }
    }
    b.finish()
}

/// Transit links (/30s of the transit range): `eip-gateway` to each VPC with scope-VPC EIP
/// services (the VPC side a distributed gateway port, the VPC's default route back to
/// `eip-gateway`), `eip-gateway` to `service-gateway` (slot 0), and `service-gateway` to
/// each VPC with multi-VPC backends; then the /32 routes of EIPs and multi-VPC backends.
/// `chassis`: the gateway chassis in priority order; `service-gateway` (a gateway router:
/// OVN 23.03 has no `lb_force_snat_ip` on a router with a distributed gateway port) is
/// pinned to the first.
fn build_links(b: &mut Builder, links: &Links, transit: Ipv4Net, chassis: &[&str]) {
    let slots = if transit.prefix_len() <= 30 {
        (1u32 << (32 - u32::from(transit.prefix_len()))) / 4
    } else {
        0
    };
    let full = |b: &mut Builder, vpc: &str| {
        b.errors.push(ObjectError::TransitRangeFull {
            vpc: vpc.to_string(),
            range: transit,
        })
    };
    let mut taken = BTreeSet::from([0u32]);
    // Where eip-gateway sends each EIP: the VPC's (or service-gateway's) link address.
    let mut uplink: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for v in &links.eip_vpcs {
        let Some((gw_ip, vpc_ip)) =
            slot_for(&format!("eip/{v}"), &mut taken, slots).and_then(|s| link(transit, s))
        else {
            full(b, v);
            continue;
        };
        let sw = format!("transit-{v}");
        b.switch(&sw);
        let _ = b.attach(EIP_GATEWAY, &sw, gw_ip, 30, &[]);
        let _ = b.attach(v, &sw, vpc_ip, 30, chassis);
        b.route(v, "0.0.0.0/0", gw_ip, INFRA_OWNER);
        uplink.insert(v.clone(), vpc_ip);
    }
    let sgw_uplink = link(transit, 0);
    if !links.sgw_vpcs.is_empty() && sgw_uplink.is_none() {
        full(b, SERVICE_GATEWAY);
    }
    if !links.sgw_vpcs.is_empty()
        && let Some((gw_ip, sgw_ip)) = sgw_uplink
    {
        let sw = format!("transit-{SERVICE_GATEWAY}");
        b.switch(&sw);
        b.router(SERVICE_GATEWAY);
        b.router_options
            .entry(SERVICE_GATEWAY.into())
            .or_default()
            .extend([
                (
                    "chassis",
                    chassis.first().copied().unwrap_or_default().to_string(),
                ),
                ("lb_force_snat_ip", "router_ip".to_string()),
            ]);
        let _ = b.attach(EIP_GATEWAY, &sw, gw_ip, 30, &[]);
        let _ = b.attach(SERVICE_GATEWAY, &sw, sgw_ip, 30, &[]);
        b.route(SERVICE_GATEWAY, "0.0.0.0/0", gw_ip, INFRA_OWNER);
        let mut vpc_side: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
        for v in &links.sgw_vpcs {
            let Some((sgw_side, v_side)) =
                slot_for(&format!("sgw/{v}"), &mut taken, slots).and_then(|s| link(transit, s))
            else {
                full(b, v);
                continue;
            };
            let sw = format!("{SERVICE_GATEWAY}-{v}");
            b.switch(&sw);
            let _ = b.attach(SERVICE_GATEWAY, &sw, sgw_side, 30, &[]);
            let _ = b.attach(v, &sw, v_side, 30, &[]);
            vpc_side.insert(v, v_side);
        }
        for (ip, (v, owner)) in &links.sgw_routes {
            if let Some(nh) = vpc_side.get(v.as_str()) {
                b.route(SERVICE_GATEWAY, &format!("{ip}/32"), *nh, owner);
            }
        }
        uplink.insert(SERVICE_GATEWAY.into(), sgw_ip);
    }
    for (eip, (target, owner)) in &links.eip_routes {
        if let Some(nh) = uplink.get(target) {
            b.route(EIP_GATEWAY, &format!("{eip}/32"), *nh, owner);
        }
    }
    // Nodes' external addresses lead to the default VPC, where node ports answer.
    if let Some(nh) = uplink.get(DEFAULT_VPC) {
        for ip in &links.node_eips {
            b.route(EIP_GATEWAY, &format!("{ip}/32"), *nh, INFRA_OWNER);
        }
    }
}
