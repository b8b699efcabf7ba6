//! [`build_desired`]: the whole Northbound content Ferry owns, from the network state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::model::*;
use crate::names::{link, mac_from, slot_for};

const TRANSIT_DEFAULT: &str = "100.100.0.0/16";

fn set(v: Vec<Value>) -> Value {
    json!(["set", v])
}
fn map(pairs: &[(&str, String)]) -> Value {
    json!([
        "map",
        pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}
fn reference(table: &str, key: &str) -> Value {
    json!(["ref", table, key])
}

/// Collects rows and the pieces routers and switches accumulate from several places.
#[derive(Default)]
struct Builder {
    rows: BTreeMap<(&'static str, String), Row>,
    router_ports: BTreeMap<String, Vec<String>>,
    router_routes: BTreeMap<String, Vec<String>>,
    router_lbs: BTreeMap<String, Vec<String>>,
    router_options: BTreeMap<String, Vec<(&'static str, String)>>,
    switch_ports: BTreeMap<String, Vec<String>>,
    switch_groups: BTreeMap<String, Vec<String>>,
    group_lbs: BTreeMap<String, Vec<String>>,
    errors: Vec<ObjectError>,
}

fn key(table: &str, name: &str) -> String {
    format!("{table}:{name}")
}

impl Builder {
    fn add(
        &mut self,
        table: &'static str,
        name: &str,
        owner: &str,
        mut columns: BTreeMap<String, Value>,
    ) -> String {
        let k = key(table, name);
        if table != "Load_Balancer_Group" {
            columns.insert(
                "external_ids".into(),
                map(&[(KEY, k.clone()), (OWNER, owner.to_string())]),
            );
        }
        self.rows.insert(
            (table, k.clone()),
            Row {
                table,
                key: k.clone(),
                columns,
            },
        );
        k
    }

    fn router(&mut self, name: &str) {
        self.router_ports.entry(name.into()).or_default();
    }

    fn switch(&mut self, name: &str) {
        self.switch_ports.entry(name.into()).or_default();
    }

    /// A router port on `switch` with its peer switch port.
    fn attach(
        &mut self,
        router: &str,
        switch: &str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway_chassis: Option<&str>,
    ) {
        let lrp = format!("{router}-{switch}");
        let lsp = format!("{switch}-{router}");
        let mut cols = BTreeMap::from([
            ("name".to_string(), json!(lrp)),
            ("mac".to_string(), json!(mac_from(&lrp))),
            (
                "networks".to_string(),
                set(vec![json!(format!("{ip}/{prefix}"))]),
            ),
        ]);
        if let Some(ch) = gateway_chassis {
            let gc_name = format!("{lrp}-{ch}");
            let gc = self.add(
                "Gateway_Chassis",
                &gc_name,
                "infra",
                BTreeMap::from([
                    ("name".to_string(), json!(gc_name)),
                    ("chassis_name".to_string(), json!(ch)),
                    ("priority".to_string(), json!(1)),
                ]),
            );
            cols.insert(
                "gateway_chassis".into(),
                set(vec![reference("Gateway_Chassis", &gc)]),
            );
        }
        let lrp_key = self.add("Logical_Router_Port", &lrp, "infra", cols);
        self.router_ports
            .entry(router.into())
            .or_default()
            .push(lrp_key);
        let lsp_key = self.add(
            "Logical_Switch_Port",
            &lsp,
            "infra",
            BTreeMap::from([
                ("name".to_string(), json!(lsp)),
                ("type".to_string(), json!("router")),
                ("addresses".to_string(), set(vec![json!("router")])),
                ("options".to_string(), map(&[("router-port", lrp.clone())])),
            ]),
        );
        self.switch_ports
            .entry(switch.into())
            .or_default()
            .push(lsp_key);
    }

    fn route(&mut self, router: &str, prefix: &str, nexthop: Ipv4Addr, owner: &str) {
        let name = format!("{router}:{prefix}");
        let k = self.add(
            "Logical_Router_Static_Route",
            &name,
            owner,
            BTreeMap::from([
                ("ip_prefix".to_string(), json!(prefix)),
                ("nexthop".to_string(), json!(nexthop.to_string())),
            ]),
        );
        self.router_routes.entry(router.into()).or_default().push(k);
    }

    fn finish(mut self) -> Desired {
        for (router, ports) in std::mem::take(&mut self.router_ports) {
            let mut cols = BTreeMap::from([
                ("name".to_string(), json!(router)),
                (
                    "ports".to_string(),
                    set(ports
                        .iter()
                        .map(|k| reference("Logical_Router_Port", k))
                        .collect()),
                ),
                (
                    "static_routes".to_string(),
                    set(self
                        .router_routes
                        .remove(&router)
                        .unwrap_or_default()
                        .iter()
                        .map(|k| reference("Logical_Router_Static_Route", k))
                        .collect()),
                ),
                (
                    "load_balancer".to_string(),
                    set(self
                        .router_lbs
                        .remove(&router)
                        .unwrap_or_default()
                        .iter()
                        .map(|k| reference("Load_Balancer", k))
                        .collect()),
                ),
            ]);
            let opts = self.router_options.remove(&router).unwrap_or_default();
            cols.insert(
                "options".into(),
                map(&opts
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect::<Vec<_>>()),
            );
            self.add("Logical_Router", &router, "infra", cols);
        }
        for (group, lbs) in std::mem::take(&mut self.group_lbs) {
            self.add(
                "Load_Balancer_Group",
                &group,
                "infra",
                BTreeMap::from([
                    ("name".to_string(), json!(group)),
                    (
                        "load_balancer".to_string(),
                        set(lbs.iter().map(|k| reference("Load_Balancer", k)).collect()),
                    ),
                ]),
            );
        }
        for (switch, ports) in std::mem::take(&mut self.switch_ports) {
            let groups = self.switch_groups.remove(&switch).unwrap_or_default();
            self.add(
                "Logical_Switch",
                &switch,
                "infra",
                BTreeMap::from([
                    ("name".to_string(), json!(switch)),
                    (
                        "ports".to_string(),
                        set(ports
                            .iter()
                            .map(|k| reference("Logical_Switch_Port", k))
                            .collect()),
                    ),
                    (
                        "load_balancer_group".to_string(),
                        set(groups
                            .iter()
                            .map(|g| {
                                reference("Load_Balancer_Group", &key("Load_Balancer_Group", g))
                            })
                            .collect()),
                    ),
                ]),
            );
        }
        Desired {
            rows: self.rows.into_values().collect(),
            errors: self.errors,
        }
    }
}

/// The name of a VPC's load balancer group.
pub fn group_name(vpc: &str) -> String {
    format!("ferry-{vpc}")
}

/// Builds every row Ferry owns. Objects that cannot be programmed are reported in
/// `errors` and left out; everything else is still built.
pub fn build_desired(state: &NetworkState) -> Desired {
    let mut b = Builder::default();
    let transit: Ipv4Net = state
        .transit_cidr
        .unwrap_or_else(|| TRANSIT_DEFAULT.parse().unwrap_or_default());
    let slots = (1u32 << (32 - u32::from(transit.prefix_len()))) / 4;
    let chassis = state.gateway_chassis.as_str();
    let vpcs: BTreeSet<&str> = state.vpcs.iter().map(String::as_str).collect();

    // VPC routers and their subnets.
    let mut subnets_of: BTreeMap<&str, Vec<&SubnetState>> = BTreeMap::new();
    for v in &vpcs {
        b.router(v);
    }
    let mut known_subnets: BTreeMap<&str, &SubnetState> = BTreeMap::new();
    for s in &state.subnets {
        if !vpcs.contains(s.vpc.as_str()) {
            b.errors.push(ObjectError::SubnetUnknownVpc {
                subnet: s.name.clone(),
                vpc: s.vpc.clone(),
            });
            continue;
        }
        if s.cidr.contains(&transit.network()) || transit.contains(&s.cidr.network()) {
            b.errors.push(ObjectError::SubnetOverlapsTransit {
                subnet: s.name.clone(),
                cidr: s.cidr,
                reserved: transit,
            });
            continue;
        }
        b.switch(&s.name);
        b.attach(&s.vpc, &s.name, s.gateway, s.cidr.prefix_len(), None);
        b.switch_groups
            .entry(s.name.clone())
            .or_default()
            .push(group_name(&s.vpc));
        subnets_of.entry(&s.vpc).or_default().push(s);
        known_subnets.insert(&s.name, s);
    }
    for v in &vpcs {
        b.group_lbs.entry(group_name(v)).or_default();
    }

    // The external network and its gateway.
    if let Some(ext) = &state.external {
        b.switch(EXTERNAL_SWITCH);
        b.router(EIP_GATEWAY);
        b.router_options
            .entry(EIP_GATEWAY.into())
            .or_default()
            .push(("chassis", chassis.to_string()));
        b.attach(
            EIP_GATEWAY,
            EXTERNAL_SWITCH,
            ext.gateway,
            ext.cidr.prefix_len(),
            None,
        );
    }

    // Workload ports.
    for p in &state.ports {
        if p.subnet != EXTERNAL_SWITCH && !known_subnets.contains_key(p.subnet.as_str())
            || p.subnet == EXTERNAL_SWITCH && state.external.is_none()
        {
            b.errors.push(ObjectError::PortUnknownSubnet {
                port: p.name.clone(),
                subnet: p.subnet.clone(),
            });
            continue;
        }
        let k = b.add(
            "Logical_Switch_Port",
            &p.name,
            "infra",
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

    // Services.
    let mut vips: BTreeMap<String, String> = BTreeMap::new();
    let mut eips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut eip_vpcs: BTreeSet<String> = BTreeSet::new();
    let mut sgw_vpcs: BTreeSet<String> = BTreeSet::new();
    let mut eip_routes: Vec<(Ipv4Addr, Option<String>, String)> = Vec::new(); // (eip, vpc or None=sgw, owner)
    let mut sgw_routes: BTreeMap<Ipv4Addr, (String, String)> = BTreeMap::new();
    let mut services: Vec<&ServiceState> = state.services.iter().collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    'svc: for svc in services {
        let owner = format!("YusurService/{}/{}", svc.key, svc.uid);
        let svc_vpcs: Vec<String> = match &svc.scope {
            ServiceScope::Vpc(v) => vec![v.clone()],
            ServiceScope::MultiVpc(vs) => vs.clone(),
        };
        for v in &svc_vpcs {
            if !vpcs.contains(v.as_str()) {
                b.errors.push(ObjectError::ServiceUnknownVpc {
                    service: svc.key.clone(),
                    vpc: v.clone(),
                });
                continue 'svc;
            }
        }
        // Checks first, so a refused service writes nothing.
        let mut claimed = Vec::new();
        for addr in svc.cluster_ip.iter().chain(svc.eip.iter()) {
            for p in &svc.ports {
                let vip = format!("{addr}:{}/{}", p.port, p.protocol.as_str());
                if let Some(other) = vips.get(&vip).filter(|o| *o != &svc.key) {
                    b.errors.push(ObjectError::VipClash {
                        service: svc.key.clone(),
                        vip,
                        other: other.clone(),
                    });
                    continue 'svc;
                }
                claimed.push(vip);
            }
        }
        if let Some(eip) = svc.eip {
            let Some(ext) = &state.external else {
                b.errors.push(ObjectError::NoExternalNetwork {
                    service: svc.key.clone(),
                });
                continue 'svc;
            };
            if !(u32::from(ext.pool.0)..=u32::from(ext.pool.1)).contains(&u32::from(eip)) {
                b.errors.push(ObjectError::EipOutOfPool {
                    service: svc.key.clone(),
                    eip,
                });
                continue 'svc;
            }
            if let Some(other) = eips.get(&eip).filter(|o| *o != &svc.key) {
                b.errors.push(ObjectError::EipInUse {
                    service: svc.key.clone(),
                    eip,
                    other: other.clone(),
                });
                continue 'svc;
            }
        }
        let multi = matches!(svc.scope, ServiceScope::MultiVpc(_));
        if multi && svc.eip.is_some() {
            let mut by_ip: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
            for be in &svc.backends {
                by_ip.entry(be.ip).or_default().insert(be.vpc.clone());
            }
            if let Some((ip, vs)) = by_ip.iter().find(|(_, vs)| vs.len() > 1) {
                b.errors.push(ObjectError::DuplicateBackendIp {
                    service: svc.key.clone(),
                    ip: *ip,
                    vpcs: vs.iter().cloned().collect(),
                });
                continue 'svc;
            }
            for (ip, _) in by_ip {
                if let Some((_, other)) = sgw_routes.get(&ip).filter(|(_, o)| o != &owner) {
                    b.errors.push(ObjectError::DuplicateBackendIp {
                        service: svc.key.clone(),
                        ip,
                        vpcs: vec![other.clone()],
                    });
                    continue 'svc;
                }
            }
        }
        for vip in claimed {
            vips.insert(vip, svc.key.clone());
        }
        let protocols: BTreeSet<Protocol> = svc.ports.iter().map(|p| p.protocol.clone()).collect();
        let lb = |b: &mut Builder,
                  role: &str,
                  vip: Ipv4Addr,
                  proto: &Protocol,
                  backends: &[&Backend]|
         -> String {
            let name = format!(
                "ferry-{}-{role}-{}",
                svc.key.replace('/', "-"),
                proto.as_str()
            );
            let mut entries = Vec::new();
            let mut empty = false;
            for p in svc.ports.iter().filter(|p| &p.protocol == proto) {
                let targets: Vec<String> = backends
                    .iter()
                    .map(|be| format!("{}:{}", be.ip, p.target_port))
                    .collect();
                empty |= targets.is_empty();
                entries.push((format!("{vip}:{}", p.port), targets.join(",")));
            }
            let mut options: Vec<(&str, String)> = Vec::new();
            if let Some(t) = svc.affinity_timeout {
                options.push(("affinity_timeout", t.to_string()));
            }
            if empty {
                options.push(("reject", "true".into()));
            }
            b.add(
                "Load_Balancer",
                &name,
                &owner,
                BTreeMap::from([
                    ("name".to_string(), json!(name)),
                    ("protocol".to_string(), set(vec![json!(proto.as_str())])),
                    (
                        "vips".to_string(),
                        json!([
                            "map",
                            entries
                                .iter()
                                .map(|(k, v)| json!([k, v]))
                                .collect::<Vec<_>>()
                        ]),
                    ),
                    ("options".to_string(), map(&options)),
                ]),
            )
        };
        for v in &svc_vpcs {
            let local: Vec<&Backend> = svc.backends.iter().filter(|be| &be.vpc == v).collect();
            if let Some(cip) = svc.cluster_ip {
                for proto in &protocols {
                    let k = lb(&mut b, &format!("cip-{v}"), cip, proto, &local);
                    b.group_lbs.entry(group_name(v)).or_default().push(k);
                }
            }
        }
        if let Some(eip) = svc.eip {
            eips.insert(eip, svc.key.clone());
            if multi {
                let all: Vec<&Backend> = svc.backends.iter().collect();
                for proto in &protocols {
                    let k = lb(&mut b, "eip", eip, proto, &all);
                    b.router_lbs
                        .entry(SERVICE_GATEWAY.into())
                        .or_default()
                        .push(k);
                }
                for be in &svc.backends {
                    sgw_routes.insert(be.ip, (be.vpc.clone(), owner.clone()));
                }
                sgw_vpcs.extend(svc_vpcs.iter().cloned());
                eip_routes.push((eip, None, owner.clone()));
            } else {
                let v = &svc_vpcs[0];
                let local: Vec<&Backend> = svc.backends.iter().filter(|be| &be.vpc == v).collect();
                for proto in &protocols {
                    let k = lb(&mut b, "eip", eip, proto, &local);
                    b.router_lbs.entry(v.clone()).or_default().push(k);
                }
                eip_vpcs.insert(v.clone());
                eip_routes.push((eip, Some(v.clone()), owner.clone()));
            }
        }
    }

    // Transit links: eip-gateway <-> each VPC with EIP services, eip-gateway <-> service-gateway,
    // service-gateway <-> each VPC with multi-VPC backends.
    let mut taken = BTreeSet::from([0u32]);
    let mut vpc_uplink: BTreeMap<String, (Ipv4Addr, Ipv4Addr)> = BTreeMap::new();
    if state.external.is_some() {
        for v in &eip_vpcs {
            let slot = slot_for(&format!("eip/{v}"), &mut taken, slots);
            let Some((gw_ip, vpc_ip)) = link(transit, slot) else {
                continue;
            };
            let sw = format!("transit-{v}");
            b.switch(&sw);
            b.attach(EIP_GATEWAY, &sw, gw_ip, 30, None);
            b.attach(v, &sw, vpc_ip, 30, Some(chassis));
            b.route(v, "0.0.0.0/0", gw_ip, "infra");
            vpc_uplink.insert(v.clone(), (gw_ip, vpc_ip));
        }
        if !sgw_vpcs.is_empty()
            && let Some((gw_ip, sgw_ip)) = link(transit, 0)
        {
            let sw = format!("transit-{SERVICE_GATEWAY}");
            b.switch(&sw);
            b.router(SERVICE_GATEWAY);
            b.router_options
                .entry(SERVICE_GATEWAY.into())
                .or_default()
                .extend([
                    ("chassis", chassis.to_string()),
                    ("lb_force_snat_ip", "router_ip".to_string()),
                ]);
            b.attach(EIP_GATEWAY, &sw, gw_ip, 30, None);
            b.attach(SERVICE_GATEWAY, &sw, sgw_ip, 30, None);
            b.route(SERVICE_GATEWAY, "0.0.0.0/0", gw_ip, "infra");
            let mut vpc_side: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
            for v in &sgw_vpcs {
                let slot = slot_for(&format!("sgw/{v}"), &mut taken, slots);
                let Some((sgw_side, v_side)) = link(transit, slot) else {
                    continue;
                };
                let sw = format!("{SERVICE_GATEWAY}-{v}");
                b.switch(&sw);
                b.attach(SERVICE_GATEWAY, &sw, sgw_side, 30, None);
                b.attach(v, &sw, v_side, 30, None);
                vpc_side.insert(v.clone(), v_side);
            }
            for (ip, (v, owner)) in &sgw_routes {
                if let Some(nh) = vpc_side.get(v) {
                    b.route(SERVICE_GATEWAY, &format!("{ip}/32"), *nh, owner);
                }
            }
            vpc_uplink.insert(SERVICE_GATEWAY.into(), (gw_ip, sgw_ip));
        }
        for (eip, vpc, owner) in &eip_routes {
            let target = vpc.clone().unwrap_or_else(|| SERVICE_GATEWAY.to_string());
            if let Some((_, nh)) = vpc_uplink.get(&target) {
                b.route(EIP_GATEWAY, &format!("{eip}/32"), *nh, owner);
            }
        }
        // The outside resolves EIPs through the gateway's port (ovn.md: a space-separated list).
        let lsp = key(
            "Logical_Switch_Port",
            &format!("{EXTERNAL_SWITCH}-{EIP_GATEWAY}"),
        );
        if let Some(row) = b.rows.get_mut(&("Logical_Switch_Port", lsp))
            && !eips.is_empty()
        {
            let list = eips
                .keys()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            row.columns.insert(
                "options".into(),
                map(&[
                    ("router-port", format!("{EIP_GATEWAY}-{EXTERNAL_SWITCH}")),
                    ("arp_proxy", list),
                ]),
            );
        }
    }
    b.finish()
}
