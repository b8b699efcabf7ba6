//! The builder's decisions as tables: each case names an input (the lab of
//! `interfaces.md` plus services or changes) and what must come out: precise columns of
//! precise rows, references by name, absent rows, and the whole list of errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_net::*;
use serde_json::{Value, json};

/// One expectation about the desired state.
enum Want {
    /// The column of the row (by name, or key for routes) equals this wire value.
    Col(&'static str, &'static str, &'static str, Value),
    /// The reference column points to exactly these rows (by name or key).
    Refs(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    ),
    /// No such row.
    Absent(&'static str, &'static str),
    /// The static route `ROUTER:PREFIX` goes to the address of router port `LRP`.
    RouteVia(&'static str, &'static str),
}
use Want::*;

struct Case {
    name: &'static str,
    input: NetworkState,
    errors: Vec<ObjectError>,
    want: Vec<Want>,
}

fn lrp_ip(d: &Desired, lrp: &str) -> String {
    let nets = &row(d, "Logical_Router_Port", lrp).columns["networks"];
    let net = nets[1][0].as_str().unwrap();
    net.split('/').next().unwrap().to_string()
}

fn check(case: &Case) {
    let d = build_desired(&case.input);
    assert_eq!(d.errors, case.errors, "{}: errors", case.name);
    for w in &case.want {
        match w {
            Col(t, n, c, v) => {
                let r = find(&d, t, n).unwrap_or_else(|| panic!("{}: no {t} {n}", case.name));
                assert_eq!(r.columns.get(*c), Some(v), "{}: {t} {n} {c}", case.name);
            }
            Refs(t, n, c, names) => {
                let r = find(&d, t, n).unwrap_or_else(|| panic!("{}: no {t} {n}", case.name));
                assert_eq!(
                    ref_names(&d, &r.columns[*c]),
                    names.to_vec(),
                    "{}: {t} {n} {c}",
                    case.name
                );
            }
            Absent(t, n) => assert!(find(&d, t, n).is_none(), "{}: {t} {n} exists", case.name),
            RouteVia(route, lrp) => {
                let r = find(&d, "Logical_Router_Static_Route", route)
                    .unwrap_or_else(|| panic!("{}: no route {route}", case.name));
                assert_eq!(
                    r.columns["nexthop"],
                    json!(lrp_ip(&d, lrp)),
                    "{}: {route}",
                    case.name
                );
            }
        }
    }
}

fn with(mut s: NetworkState, f: impl FnOnce(&mut NetworkState)) -> NetworkState {
    f(&mut s);
    s
}

const NO_ROUTERS_LBS: &[&str] = &[];

#[test]
fn scenarios() {
    let s1 = svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    );
    let s2 = svc(
        "default/dflt",
        vpc("ovn-cluster"),
        Some("10.96.0.20"),
        None,
        &[("10.16.0.10", "ovn-cluster")],
    );
    let s3 = svc(
        "default/eip",
        vpc("vpc1"),
        Some("10.96.0.30"),
        Some("198.18.0.100"),
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    );
    let s4 = svc(
        "default/multi",
        multi(&["vpc1", "vpc2"]),
        Some("10.96.0.40"),
        Some("198.18.0.101"),
        &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
    );
    let cases = vec![
        Case {
            name: "the bare lab: routers, switches with gateways, ports, groups, no links",
            input: lab(vec![]),
            errors: vec![],
            want: vec![
                Refs(
                    "Logical_Router",
                    "vpc1",
                    "ports",
                    &[
                        "vpc1-vpc1-subnet1",
                        "vpc1-vpc1-subnet2",
                        "vpc1-vpc1-subnet3",
                    ],
                ),
                Col("Logical_Router", "vpc1", "options", json!(["map", []])),
                Col(
                    "Logical_Router_Port",
                    "vpc2-vpc2-subnet1",
                    "networks",
                    json!(["set", ["10.0.1.1/24"]]),
                ),
                Col(
                    "Logical_Router_Port",
                    "vpc1-vpc1-subnet1",
                    "networks",
                    json!(["set", ["10.0.1.1/24"]]),
                ),
                Col(
                    "Logical_Router_Port",
                    "vpc1-vpc1-subnet1",
                    "mac",
                    json!(mac_from("vpc1-vpc1-subnet1")),
                ),
                Col(
                    "Logical_Switch_Port",
                    "vpc1-subnet1-vpc1",
                    "type",
                    json!("router"),
                ),
                Col(
                    "Logical_Switch_Port",
                    "vpc1-subnet1-vpc1",
                    "options",
                    json!(["map", [["router-port", "vpc1-vpc1-subnet1"]]]),
                ),
                Refs(
                    "Logical_Switch",
                    "subnet0",
                    "ports",
                    &["node_node1", "subnet0-ovn-cluster"],
                ),
                Col(
                    "Logical_Switch_Port",
                    "node_node1",
                    "addresses",
                    json!(["set", ["0a:00:00:64:00:02 100.64.0.2"]]),
                ),
                Col(
                    "Logical_Switch_Port",
                    "node_node1",
                    "external_ids",
                    json!([
                        "map",
                        [
                            [KEY, "Logical_Switch_Port:node_node1"],
                            [OWNER, INFRA_OWNER]
                        ]
                    ]),
                ),
                Refs(
                    "Logical_Switch",
                    "external",
                    "ports",
                    &["ext_client", "external-eip-gateway"],
                ),
                Col(
                    "Logical_Router",
                    "eip-gateway",
                    "options",
                    json!(["map", [["chassis", "ch1"]]]),
                ),
                Col(
                    "Logical_Switch_Port",
                    "external-eip-gateway",
                    "options",
                    json!(["map", [["router-port", "eip-gateway-external"]]]),
                ),
                Refs("Load_Balancer_Group", "ferry-vpc1", "load_balancer", &[]),
                Absent("Logical_Router", SERVICE_GATEWAY),
                Absent("Logical_Switch", "transit-vpc1"),
            ],
        },
        Case {
            name: "scenario 1: cluster IP in the VPC group on every switch of the VPC",
            input: lab(vec![s1.clone()]),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-web-cip-vpc1-tcp",
                    "vips",
                    json!(["map", [["10.96.0.10:80", "10.0.1.10:8080,10.0.2.10:8080"]]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-web-cip-vpc1-tcp",
                    "protocol",
                    json!(["set", ["tcp"]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-web-cip-vpc1-tcp",
                    "options",
                    json!(["map", []]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-web-cip-vpc1-tcp",
                    "external_ids",
                    json!([
                        "map",
                        [
                            [KEY, "Load_Balancer:default/web/cip-vpc1/tcp"],
                            [OWNER, "YusurService/default/web/uid-default-web"]
                        ]
                    ]),
                ),
                Refs(
                    "Load_Balancer_Group",
                    "ferry-vpc1",
                    "load_balancer",
                    &["ferry-default-web-cip-vpc1-tcp"],
                ),
                Refs(
                    "Logical_Switch",
                    "vpc1-subnet1",
                    "load_balancer_group",
                    &["ferry-vpc1"],
                ),
                Refs(
                    "Logical_Switch",
                    "vpc1-subnet2",
                    "load_balancer_group",
                    &["ferry-vpc1"],
                ),
                Refs(
                    "Logical_Switch",
                    "vpc1-subnet3",
                    "load_balancer_group",
                    &["ferry-vpc1"],
                ),
                Refs(
                    "Logical_Switch",
                    "vpc2-subnet1",
                    "load_balancer_group",
                    &["ferry-vpc2"],
                ),
                Refs("Load_Balancer_Group", "ferry-vpc2", "load_balancer", &[]),
                Refs("Logical_Router", "vpc1", "load_balancer", NO_ROUTERS_LBS),
            ],
        },
        Case {
            name: "scenario 2: the default VPC's group is on the join switch too",
            input: lab(vec![s2.clone()]),
            errors: vec![],
            want: vec![
                Refs(
                    "Load_Balancer_Group",
                    "ferry-ovn-cluster",
                    "load_balancer",
                    &["ferry-default-dflt-cip-ovn-cluster-tcp"],
                ),
                Refs(
                    "Logical_Switch",
                    "subnet0",
                    "load_balancer_group",
                    &["ferry-ovn-cluster"],
                ),
                Refs(
                    "Logical_Switch",
                    "ovn-default",
                    "load_balancer_group",
                    &["ferry-ovn-cluster"],
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-dflt-cip-ovn-cluster-tcp",
                    "vips",
                    json!(["map", [["10.96.0.20:80", "10.16.0.10:8080"]]]),
                ),
            ],
        },
        Case {
            name: "scenario 3: EIP on the VPC router, gateway port, routes both ways, ARP proxy",
            input: lab(vec![s3.clone()]),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-eip-eip-tcp",
                    "vips",
                    json!([
                        "map",
                        [["198.18.0.100:80", "10.0.1.10:8080,10.0.2.10:8080"]]
                    ]),
                ),
                Refs(
                    "Logical_Router",
                    "vpc1",
                    "load_balancer",
                    &["ferry-default-eip-eip-tcp"],
                ),
                Refs(
                    "Load_Balancer_Group",
                    "ferry-vpc1",
                    "load_balancer",
                    &["ferry-default-eip-cip-vpc1-tcp"],
                ),
                Refs(
                    "Logical_Router_Port",
                    "vpc1-transit-vpc1",
                    "gateway_chassis",
                    &["vpc1-transit-vpc1-ch1"],
                ),
                Col(
                    "Gateway_Chassis",
                    "vpc1-transit-vpc1-ch1",
                    "chassis_name",
                    json!("ch1"),
                ),
                Refs(
                    "Logical_Router_Port",
                    "eip-gateway-transit-vpc1",
                    "gateway_chassis",
                    &[],
                ),
                RouteVia("eip-gateway:198.18.0.100/32", "vpc1-transit-vpc1"),
                RouteVia("vpc1:0.0.0.0/0", "eip-gateway-transit-vpc1"),
                Col(
                    "Logical_Router_Static_Route",
                    "eip-gateway:198.18.0.100/32",
                    "external_ids",
                    json!([
                        "map",
                        [
                            [
                                KEY,
                                "Logical_Router_Static_Route:eip-gateway:198.18.0.100/32"
                            ],
                            [OWNER, "YusurService/default/eip/uid-default-eip"]
                        ]
                    ]),
                ),
                Col(
                    "Logical_Switch_Port",
                    "external-eip-gateway",
                    "options",
                    json!([
                        "map",
                        [
                            ["router-port", "eip-gateway-external"],
                            ["arp_proxy", "198.18.0.100"]
                        ]
                    ]),
                ),
                Absent("Logical_Switch", "transit-vpc2"),
                Absent("Logical_Router", SERVICE_GATEWAY),
            ],
        },
        Case {
            name: "scenario 4: EIP on service-gateway with SNAT, a link per VPC, /32 per backend",
            input: lab(vec![s4.clone()]),
            errors: vec![],
            want: vec![
                Col(
                    "Logical_Router",
                    SERVICE_GATEWAY,
                    "options",
                    json!([
                        "map",
                        [["chassis", "ch1"], ["lb_force_snat_ip", "router_ip"]]
                    ]),
                ),
                Refs(
                    "Logical_Router",
                    SERVICE_GATEWAY,
                    "load_balancer",
                    &["ferry-default-multi-eip-tcp"],
                ),
                Refs(
                    "Logical_Router",
                    SERVICE_GATEWAY,
                    "ports",
                    &[
                        "service-gateway-service-gateway-vpc1",
                        "service-gateway-service-gateway-vpc2",
                        "service-gateway-transit-service-gateway",
                    ],
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-multi-eip-tcp",
                    "vips",
                    json!([
                        "map",
                        [["198.18.0.101:80", "10.0.1.10:8080,10.0.1.20:8080"]]
                    ]),
                ),
                RouteVia("service-gateway:10.0.1.10/32", "vpc1-service-gateway-vpc1"),
                RouteVia("service-gateway:10.0.1.20/32", "vpc2-service-gateway-vpc2"),
                RouteVia(
                    "service-gateway:0.0.0.0/0",
                    "eip-gateway-transit-service-gateway",
                ),
                RouteVia(
                    "eip-gateway:198.18.0.101/32",
                    "service-gateway-transit-service-gateway",
                ),
                Col(
                    "Logical_Router_Port",
                    "service-gateway-transit-service-gateway",
                    "networks",
                    json!(["set", ["100.100.0.2/30"]]),
                ),
                Col(
                    "Logical_Router_Port",
                    "eip-gateway-transit-service-gateway",
                    "networks",
                    json!(["set", ["100.100.0.1/30"]]),
                ),
                // The multi-VPC cluster IP: one LB per VPC, each to that VPC's backends.
                Col(
                    "Load_Balancer",
                    "ferry-default-multi-cip-vpc1-tcp",
                    "vips",
                    json!(["map", [["10.96.0.40:80", "10.0.1.10:8080"]]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-multi-cip-vpc2-tcp",
                    "vips",
                    json!(["map", [["10.96.0.40:80", "10.0.1.20:8080"]]]),
                ),
                Refs("Logical_Router", "vpc1", "load_balancer", NO_ROUTERS_LBS),
                Absent("Logical_Switch", "transit-vpc1"),
                Col(
                    "Logical_Switch_Port",
                    "external-eip-gateway",
                    "options",
                    json!([
                        "map",
                        [
                            ["router-port", "eip-gateway-external"],
                            ["arp_proxy", "198.18.0.101"]
                        ]
                    ]),
                ),
            ],
        },
        Case {
            name: "all four at once, sharing backends: ARP proxy lists every EIP, space separated",
            input: lab(vec![s1.clone(), s2.clone(), s3.clone(), s4.clone()]),
            errors: vec![],
            want: vec![
                Col(
                    "Logical_Switch_Port",
                    "external-eip-gateway",
                    "options",
                    json!([
                        "map",
                        [
                            ["router-port", "eip-gateway-external"],
                            ["arp_proxy", "198.18.0.100 198.18.0.101"]
                        ]
                    ]),
                ),
                Refs(
                    "Load_Balancer_Group",
                    "ferry-vpc1",
                    "load_balancer",
                    &[
                        "ferry-default-eip-cip-vpc1-tcp",
                        "ferry-default-multi-cip-vpc1-tcp",
                        "ferry-default-web-cip-vpc1-tcp",
                    ],
                ),
                Refs(
                    "Logical_Router",
                    "vpc1",
                    "ports",
                    &[
                        "vpc1-service-gateway-vpc1",
                        "vpc1-transit-vpc1",
                        "vpc1-vpc1-subnet1",
                        "vpc1-vpc1-subnet2",
                        "vpc1-vpc1-subnet3",
                    ],
                ),
            ],
        },
        Case {
            name: "no ready backend: the VIP rejects",
            input: lab(vec![svc(
                "default/none",
                vpc("vpc1"),
                Some("10.96.0.50"),
                None,
                &[],
            )]),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-none-cip-vpc1-tcp",
                    "options",
                    json!(["map", [["reject", "true"]]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-none-cip-vpc1-tcp",
                    "vips",
                    json!(["map", [["10.96.0.50:80", ""]]]),
                ),
            ],
        },
        Case {
            name: "ClientIP affinity and two protocols: one LB per protocol, the backend chosen by \
                   a hash of the client's address",
            input: lab(vec![{
                let mut s = svc(
                    "default/dns",
                    vpc("vpc1"),
                    Some("10.96.0.53"),
                    None,
                    &[("10.0.1.10", "vpc1")],
                );
                s.affinity_timeout = Some(600);
                s.ports = vec![
                    ServicePort {
                        node_port: None,
                        port: 53,
                        target_port: 5353,
                        protocol: Protocol::Udp,
                    },
                    ServicePort {
                        node_port: None,
                        port: 53,
                        target_port: 5353,
                        protocol: Protocol::Tcp,
                    },
                    ServicePort {
                        node_port: None,
                        port: 9153,
                        target_port: 9153,
                        protocol: Protocol::Tcp,
                    },
                ];
                s
            }]),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-dns-cip-vpc1-udp",
                    "vips",
                    json!(["map", [["10.96.0.53:53", "10.0.1.10:5353"]]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-dns-cip-vpc1-udp",
                    "protocol",
                    json!(["set", ["udp"]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-dns-cip-vpc1-tcp",
                    "vips",
                    json!([
                        "map",
                        [
                            ["10.96.0.53:53", "10.0.1.10:5353"],
                            ["10.96.0.53:9153", "10.0.1.10:9153"]
                        ]
                    ]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-dns-cip-vpc1-tcp",
                    "options",
                    json!(["map", []]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-dns-cip-vpc1-tcp",
                    "selection_fields",
                    json!(["set", ["ip_src"]]),
                ),
            ],
        },
        Case {
            name: "two multi-VPC services sharing a backend in the same VPC share its route",
            input: lab(vec![
                svc(
                    "default/m1",
                    multi(&["vpc1", "vpc2"]),
                    None,
                    Some("198.18.0.110"),
                    &[("10.0.1.10", "vpc1")],
                ),
                svc(
                    "default/m2",
                    multi(&["vpc1", "vpc2"]),
                    None,
                    Some("198.18.0.111"),
                    &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
                ),
            ]),
            errors: vec![],
            want: vec![
                RouteVia("service-gateway:10.0.1.10/32", "vpc1-service-gateway-vpc1"),
                RouteVia("service-gateway:10.0.1.20/32", "vpc2-service-gateway-vpc2"),
                Refs(
                    "Logical_Router",
                    SERVICE_GATEWAY,
                    "load_balancer",
                    &["ferry-default-m1-eip-tcp", "ferry-default-m2-eip-tcp"],
                ),
            ],
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn conflicts() {
    let ok = svc(
        "default/ok",
        vpc("vpc1"),
        Some("10.96.0.6"),
        None,
        &[("10.0.1.10", "vpc1")],
    );
    let cases = vec![
        Case {
            name: "EIP outside the pool",
            input: lab(vec![
                ok.clone(),
                svc("default/out", vpc("vpc1"), None, Some("198.18.1.5"), &[]),
            ]),
            errors: vec![ObjectError::EipOutOfPool {
                service: "default/out".into(),
                eip: ip("198.18.1.5"),
            }],
            want: vec![
                Absent("Load_Balancer", "ferry-default-out-eip-tcp"),
                Col(
                    "Logical_Switch_Port",
                    "external-eip-gateway",
                    "options",
                    json!(["map", [["router-port", "eip-gateway-external"]]]),
                ),
            ],
        },
        Case {
            name: "EIP used twice: the first service (by key) keeps it",
            input: lab(vec![
                svc("default/b", vpc("vpc2"), None, Some("198.18.0.120"), &[]),
                svc("default/a", vpc("vpc1"), None, Some("198.18.0.120"), &[]),
            ]),
            errors: vec![ObjectError::EipInUse {
                service: "default/b".into(),
                eip: ip("198.18.0.120"),
                other: "default/a".into(),
            }],
            want: vec![
                RouteVia("eip-gateway:198.18.0.120/32", "vpc1-transit-vpc1"),
                Absent("Logical_Switch", "transit-vpc2"),
            ],
        },
        Case {
            name: "EIP without an external network",
            input: with(
                lab(vec![svc(
                    "default/e",
                    vpc("vpc1"),
                    None,
                    Some("198.18.0.100"),
                    &[],
                )]),
                |s| {
                    s.external = None;
                    s.ports.retain(|p| p.subnet != EXTERNAL_SWITCH);
                },
            ),
            errors: vec![ObjectError::NoExternalNetwork {
                service: "default/e".into(),
            }],
            want: vec![Absent("Logical_Router", EIP_GATEWAY)],
        },
        Case {
            name: "two backends of one multi-VPC service with one address in two VPCs",
            input: lab(vec![
                ok.clone(),
                svc(
                    "default/dup",
                    multi(&["vpc1", "vpc2"]),
                    Some("10.96.0.7"),
                    Some("198.18.0.102"),
                    &[("10.0.1.10", "vpc1"), ("10.0.1.10", "vpc2")],
                ),
            ]),
            errors: vec![ObjectError::DuplicateBackendIp {
                service: "default/dup".into(),
                ip: ip("10.0.1.10"),
                vpcs: vec!["vpc1".into(), "vpc2".into()],
            }],
            want: vec![
                Absent("Load_Balancer", "ferry-default-dup-eip-tcp"),
                Absent("Load_Balancer", "ferry-default-dup-cip-vpc1-tcp"),
                Absent("Logical_Router", SERVICE_GATEWAY),
            ],
        },
        Case {
            name: "one address in two VPCs across two multi-VPC services: the second is refused",
            input: lab(vec![
                svc(
                    "default/m1",
                    multi(&["vpc1", "vpc2"]),
                    None,
                    Some("198.18.0.110"),
                    &[("10.0.1.10", "vpc1")],
                ),
                svc(
                    "default/m2",
                    multi(&["vpc1", "vpc2"]),
                    None,
                    Some("198.18.0.111"),
                    &[("10.0.1.10", "vpc2")],
                ),
            ]),
            errors: vec![ObjectError::DuplicateBackendIp {
                service: "default/m2".into(),
                ip: ip("10.0.1.10"),
                vpcs: vec!["vpc1".into(), "vpc2".into()],
            }],
            want: vec![
                RouteVia("service-gateway:10.0.1.10/32", "vpc1-service-gateway-vpc1"),
                Absent("Load_Balancer", "ferry-default-m2-eip-tcp"),
            ],
        },
        Case {
            name: "a multi-VPC cluster IP alone may have one address in two VPCs (no shared route)",
            input: lab(vec![svc(
                "default/c",
                multi(&["vpc1", "vpc2"]),
                Some("10.96.0.8"),
                None,
                &[("10.0.1.10", "vpc1"), ("10.0.1.10", "vpc2")],
            )]),
            errors: vec![],
            want: vec![Col(
                "Load_Balancer",
                "ferry-default-c-cip-vpc2-tcp",
                "vips",
                json!(["map", [["10.96.0.8:80", "10.0.1.10:8080"]]]),
            )],
        },
        Case {
            name: "subnet overlapping the transit range",
            input: with(lab(vec![]), |s| {
                s.subnets
                    .push(subnet("bad", "vpc1", "100.100.8.0/24", "100.100.8.1"))
            }),
            errors: vec![ObjectError::SubnetOverlapsTransit {
                subnet: "bad".into(),
                cidr: "100.100.8.0/24".parse().unwrap(),
                reserved: "100.100.0.0/16".parse().unwrap(),
            }],
            want: vec![
                Absent("Logical_Switch", "bad"),
                Absent("Logical_Router_Port", "vpc1-bad"),
            ],
        },
        Case {
            name: "subnet overlapping the join subnet, in any VPC",
            input: with(lab(vec![]), |s| {
                s.subnets
                    .push(subnet("bad", "vpc2", "100.64.3.0/24", "100.64.3.1"))
            }),
            errors: vec![ObjectError::SubnetOverlapsJoin {
                subnet: "bad".into(),
                cidr: "100.64.3.0/24".parse().unwrap(),
                join: "100.64.0.0/16".parse().unwrap(),
            }],
            want: vec![Absent("Logical_Switch", "bad")],
        },
        Case {
            name: "subnets overlapping inside one VPC (across VPCs is fine)",
            input: with(lab(vec![]), |s| {
                s.subnets
                    .push(subnet("vpc1-wide", "vpc1", "10.0.0.0/16", "10.0.0.1"))
            }),
            errors: vec![ObjectError::SubnetOverlapsSubnet {
                subnet: "vpc1-wide".into(),
                cidr: "10.0.0.0/16".parse().unwrap(),
                other: "vpc1-subnet1".into(),
            }],
            want: vec![
                Absent("Logical_Switch", "vpc1-wide"),
                Refs(
                    "Logical_Switch",
                    "vpc2-subnet1",
                    "load_balancer_group",
                    &["ferry-vpc2"],
                ),
            ],
        },
        Case {
            name: "subnet in an unknown VPC, and its ports",
            input: with(lab(vec![]), |s| {
                s.subnets
                    .push(subnet("lost", "vpc9", "10.9.0.0/24", "10.9.0.1"));
                s.ports.push(port(
                    "default_lost",
                    "lost",
                    "0a:00:00:09:00:0a",
                    "10.9.0.10",
                ));
            }),
            errors: vec![
                ObjectError::SubnetUnknownVpc {
                    subnet: "lost".into(),
                    vpc: "vpc9".into(),
                },
                ObjectError::PortUnknownSubnet {
                    port: "default_lost".into(),
                    subnet: "lost".into(),
                },
            ],
            want: vec![
                Absent("Logical_Switch", "lost"),
                Absent("Logical_Switch_Port", "default_lost"),
            ],
        },
        Case {
            name: "service naming an unknown VPC",
            input: lab(vec![
                ok.clone(),
                svc(
                    "default/novpc",
                    multi(&["vpc1", "nope"]),
                    Some("10.96.0.1"),
                    None,
                    &[],
                ),
            ]),
            errors: vec![ObjectError::ServiceUnknownVpc {
                service: "default/novpc".into(),
                vpc: "nope".into(),
            }],
            want: vec![
                Absent("Load_Balancer", "ferry-default-novpc-cip-vpc1-tcp"),
                Refs(
                    "Load_Balancer_Group",
                    "ferry-vpc1",
                    "load_balancer",
                    &["ferry-default-ok-cip-vpc1-tcp"],
                ),
            ],
        },
        Case {
            name: "VIP:port clash in one VPC (the first by key keeps it; another protocol is \
                   no clash; the same address in another VPC is no clash either)",
            input: lab(vec![
                svc("default/a", vpc("vpc1"), Some("10.96.0.5"), None, &[]),
                svc("default/b", vpc("vpc1"), Some("10.96.0.5"), None, &[]),
                {
                    let mut u = svc("default/u", vpc("vpc1"), Some("10.96.0.5"), None, &[]);
                    u.ports[0].protocol = Protocol::Udp;
                    u
                },
                svc("default/v", vpc("vpc2"), Some("10.96.0.5"), None, &[]),
            ]),
            errors: vec![ObjectError::VipClash {
                service: "default/b".into(),
                vip: "10.96.0.5:80/tcp in vpc1".into(),
                other: "default/a".into(),
            }],
            want: vec![
                Absent("Load_Balancer", "ferry-default-b-cip-vpc1-tcp"),
                Refs(
                    "Load_Balancer_Group",
                    "ferry-vpc2",
                    "load_balancer",
                    &["ferry-default-v-cip-vpc2-tcp"],
                ),
            ],
        },
        Case {
            name: "a cluster IP clashing with another service's EIP",
            input: lab(vec![
                svc("default/a", vpc("vpc1"), None, Some("198.18.0.150"), &[]),
                svc("default/b", vpc("vpc1"), Some("198.18.0.150"), None, &[]),
            ]),
            errors: vec![ObjectError::VipClash {
                service: "default/b".into(),
                vip: "198.18.0.150:80/tcp in vpc1".into(),
                other: "default/a".into(),
            }],
            want: vec![],
        },
        Case {
            name: "one port listed twice in a service",
            input: lab(vec![{
                let mut s = svc("default/twice", vpc("vpc1"), Some("10.96.0.9"), None, &[]);
                s.ports.push(s.ports[0].clone());
                s
            }]),
            errors: vec![ObjectError::DuplicateServicePort {
                service: "default/twice".into(),
                port: 80,
                protocol: "tcp",
            }],
            want: vec![Absent("Load_Balancer", "ferry-default-twice-cip-vpc1-tcp")],
        },
        Case {
            name: "reserved and clashing names",
            input: with(lab(vec![]), |s| {
                s.vpcs.push(EIP_GATEWAY.into());
                s.vpcs.extend(["a".into(), "a-b".into()]);
                s.subnets
                    .push(subnet(EXTERNAL_SWITCH, "vpc1", "10.0.9.0/24", "10.0.9.1"));
                s.subnets
                    .push(subnet("transit-x", "vpc1", "10.0.8.0/24", "10.0.8.1"));
                s.subnets
                    .push(subnet("b-c", "a", "10.0.1.0/24", "10.0.1.1"));
                s.subnets
                    .push(subnet("c", "a-b", "10.0.1.0/24", "10.0.1.1"));
                s.ports.push(port(
                    "default_b11",
                    "vpc1-subnet2",
                    "0a:00:00:01:01:0b",
                    "10.0.2.11",
                ));
            }),
            errors: vec![
                ObjectError::NameClash {
                    kind: "vpc",
                    name: EIP_GATEWAY.into(),
                    ovn_name: EIP_GATEWAY.into(),
                },
                ObjectError::NameClash {
                    kind: "subnet",
                    name: "c".into(),
                    ovn_name: "a-b-c".into(),
                },
                ObjectError::NameClash {
                    kind: "subnet",
                    name: EXTERNAL_SWITCH.into(),
                    ovn_name: EXTERNAL_SWITCH.into(),
                },
                ObjectError::NameClash {
                    kind: "subnet",
                    name: "transit-x".into(),
                    ovn_name: "transit-x".into(),
                },
                ObjectError::NameClash {
                    kind: "port",
                    name: "default_b11".into(),
                    ovn_name: "default_b11".into(),
                },
            ],
            want: vec![
                Refs("Logical_Router", "a", "ports", &["a-b-c"]),
                Refs("Logical_Router", "a-b", "ports", &[]),
                Col(
                    "Logical_Switch_Port",
                    "default_b11",
                    "addresses",
                    json!(["set", ["0a:00:00:01:01:0a 10.0.1.10"]]),
                ),
                Refs(
                    "Logical_Switch",
                    "external",
                    "ports",
                    &["ext_client", "external-eip-gateway"],
                ),
            ],
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn errors_name_their_object() {
    let e = ObjectError::EipInUse {
        service: "default/b".into(),
        eip: ip("198.18.0.120"),
        other: "default/a".into(),
    };
    assert_eq!(e.object(), "default/b");
    assert_eq!(
        e.to_string(),
        "service default/b: EIP 198.18.0.120 is already used by default/a"
    );
}

#[test]
fn the_network_state_is_plain_serde_data() {
    let s = lab(vec![svc(
        "default/m",
        multi(&["vpc1", "vpc2"]),
        Some("10.96.0.40"),
        Some("198.18.0.101"),
        &[("10.0.1.10", "vpc1")],
    )]);
    let text = serde_json::to_string(&s).unwrap();
    assert!(
        text.contains("\"multiVpc\":[\"vpc1\",\"vpc2\"]") && text.contains("\"protocol\":\"TCP\""),
        "{text}"
    );
    let back: NetworkState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_tiny_transit_range_runs_out_of_links_without_hanging() {
    let mut s = lab((0..3)
        .map(|i| {
            svc(
                &format!("default/e{i}"),
                vpc(["vpc1", "vpc2", "ovn-cluster"][i]),
                None,
                Some(&format!("198.18.0.{}", 100 + i)),
                &[],
            )
        })
        .collect());
    s.transit_cidr = Some("100.100.0.0/29".parse().unwrap());
    let d = build_desired(&s);
    let full: Vec<&str> = d.errors.iter().map(ObjectError::object).collect();
    assert_eq!(full.len(), 2, "{:?}", d.errors);
    assert!(
        d.errors
            .iter()
            .all(|e| matches!(e, ObjectError::TransitRangeFull { .. }))
    );
    let links = d
        .rows
        .iter()
        .filter(|r| r.table == "Logical_Switch" && r.key.starts_with("Logical_Switch:transit-"))
        .count();
    assert_eq!(
        links, 1,
        "a /29 holds slot 0 (service-gateway) and one VPC link"
    );
}

/// A Kubernetes NodePort Service of the default VPC on two nodes with external addresses.
fn node_port_svc(local: bool, external_ips: &[&str]) -> ServiceState {
    let mut s = svc(
        "default/np",
        vpc("ovn-cluster"),
        Some("10.96.0.50"),
        None,
        &[("10.16.0.10", "ovn-cluster"), ("10.16.0.11", "ovn-cluster")],
    );
    s.kind = ServiceKind::Service;
    s.node_local = local;
    s.ports[0].node_port = Some(30080);
    s.backends[0].node = Some("node1".into());
    s.backends[1].node = Some("node2".into());
    s.external_ips = external_ips.iter().map(|i| ip(i)).collect();
    s
}

fn two_nodes(mut s: NetworkState) -> NetworkState {
    s.nodes = vec![
        NodeAddresses {
            name: "node1".into(),
            internal: Some(ip("100.64.0.2")),
            external: Some(ip("198.18.0.11")),
        },
        NodeAddresses {
            name: "node2".into(),
            internal: Some(ip("100.64.0.3")),
            external: Some(ip("198.18.0.12")),
        },
    ];
    s
}

#[test]
fn kubernetes_services() {
    let both = "10.16.0.10:8080,10.16.0.11:8080";
    let cases = vec![
        Case {
            name: "NodePort: the cluster IP on the default VPC's load balancer (join addresses are \
                   the agents'), every node's external address on its router, routed and \
                   answered by eip-gateway; rows owned by the Service",
            input: two_nodes(lab(vec![node_port_svc(false, &[])])),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-np-cip-ovn-cluster-tcp",
                    "vips",
                    json!(["map", [["10.96.0.50:80", both]]]),
                ),
                Col(
                    "Load_Balancer",
                    "ferry-default-np-eip-tcp",
                    "vips",
                    json!([
                        "map",
                        [["198.18.0.11:30080", both], ["198.18.0.12:30080", both]]
                    ]),
                ),
                Refs(
                    "Logical_Router",
                    "ovn-cluster",
                    "load_balancer",
                    &["ferry-default-np-eip-tcp"],
                ),
                RouteVia(
                    "eip-gateway:198.18.0.11/32",
                    "ovn-cluster-transit-ovn-cluster",
                ),
                RouteVia(
                    "eip-gateway:198.18.0.12/32",
                    "ovn-cluster-transit-ovn-cluster",
                ),
            ],
        },
        Case {
            name: "externalTrafficPolicy Local: each node's entries lead to its own backends",
            input: two_nodes(lab(vec![node_port_svc(true, &[])])),
            errors: vec![],
            want: vec![Col(
                "Load_Balancer",
                "ferry-default-np-eip-tcp",
                "vips",
                json!([
                    "map",
                    [
                        ["198.18.0.11:30080", "10.16.0.10:8080"],
                        ["198.18.0.12:30080", "10.16.0.11:8080"]
                    ]
                ]),
            )],
        },
        Case {
            name: "externalIPs answer like an EIP",
            input: two_nodes(lab(vec![node_port_svc(false, &["198.18.0.77"])])),
            errors: vec![],
            want: vec![
                Col(
                    "Load_Balancer",
                    "ferry-default-np-eip-tcp",
                    "vips",
                    json!([
                        "map",
                        [
                            ["198.18.0.11:30080", both],
                            ["198.18.0.12:30080", both],
                            ["198.18.0.77:80", both]
                        ]
                    ]),
                ),
                RouteVia(
                    "eip-gateway:198.18.0.77/32",
                    "ovn-cluster-transit-ovn-cluster",
                ),
            ],
        },
        Case {
            name: "an external IP off the external network is refused, nothing written",
            input: two_nodes(lab(vec![node_port_svc(false, &["192.0.2.7"])])),
            errors: vec![ObjectError::ExternalIpOutsideNetwork {
                service: "default/np".into(),
                ip: ip("192.0.2.7"),
                cidr: "198.18.0.0/24".parse().unwrap(),
            }],
            want: vec![
                Absent("Load_Balancer", "ferry-default-np-eip-tcp"),
                Absent("Load_Balancer", "ferry-default-np-cip-ovn-cluster-tcp"),
            ],
        },
        Case {
            name: "node ports outside the default VPC are refused",
            input: two_nodes(lab(vec![with_scope(
                node_port_svc(false, &[]),
                vpc("vpc1"),
            )])),
            errors: vec![ObjectError::NodePortOutsideDefaultVpc {
                service: "default/np".into(),
            }],
            want: vec![Absent("Load_Balancer", "ferry-default-np-cip-vpc1-tcp")],
        },
    ];
    for c in &cases {
        check(c);
    }
    // A Service's rows are owned as a Service, not a YusurService.
    let d = build_desired(&two_nodes(lab(vec![node_port_svc(false, &[])])));
    let lb = find(&d, "Load_Balancer", "ferry-default-np-eip-tcp").unwrap();
    assert_eq!(
        lb.columns["external_ids"][1]
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv[0] == OWNER)
            .map(|kv| kv[1].clone()),
        Some(json!("Service/default/np/uid-default-np"))
    );
}

fn with_scope(mut s: ServiceState, scope: ServiceScope) -> ServiceState {
    s.scope = scope;
    s
}

#[test]
fn one_cluster_ip_may_serve_several_vpcs_but_not_twice_in_one() {
    let dns = |key: &str, v: &str| {
        let mut s = svc(key, vpc(v), Some("10.96.0.53"), None, &[]);
        s.ports[0].port = 53;
        s
    };
    let d = build_desired(&lab(vec![
        dns("dns/ovn-cluster", "ovn-cluster"),
        dns("dns/vpc1", "vpc1"),
        dns("dns/vpc2", "vpc2"),
    ]));
    assert_eq!(d.errors, vec![]);
    for v in ["ovn-cluster", "vpc1", "vpc2"] {
        let name = format!("ferry-dns-{v}-cip-{v}-tcp");
        assert!(find(&d, "Load_Balancer", &name).is_some(), "{name}");
    }
    let d = build_desired(&lab(vec![dns("dns/a", "vpc1"), dns("dns/b", "vpc1")]));
    assert_eq!(
        d.errors,
        vec![ObjectError::VipClash {
            service: "dns/b".into(),
            vip: "10.96.0.53:53/tcp in vpc1".into(),
            other: "dns/a".into(),
        }]
    );
}

fn socket_lb(mut s: NetworkState, ports: &[&str]) -> NetworkState {
    s.socket_lb_ports = ports.iter().map(|p| p.to_string()).collect();
    s
}

/// The socket-LB port groups: one per VPC with members, the members only (never a port
/// that was not built or sits on the external network), and the two stateless ACLs whose
/// matches need both ends in the group.
#[test]
fn socket_lb_port_groups() {
    let g1 = "ferry_socklb_vpc1";
    let cases = vec![
        Case {
            name: "no socket-LB node: no group, no ACL",
            input: lab(vec![]),
            errors: vec![],
            want: vec![
                Absent("Port_Group", g1),
                Absent("Port_Group", "ferry_socklb_vpc2"),
                Absent("ACL", "ferry_socklb_vpc1/from-lport"),
            ],
        },
        Case {
            name: "members of two VPCs: a group each, across the VPC's subnets",
            input: socket_lb(
                lab(vec![]),
                &["default_b11", "default_c13", "default_b21", "ext_client"],
            ),
            errors: vec![],
            want: vec![
                Refs("Port_Group", g1, "ports", &["default_b11", "default_c13"]),
                Refs("Port_Group", "ferry_socklb_vpc2", "ports", &["default_b21"]),
                Refs(
                    "Port_Group",
                    g1,
                    "acls",
                    &[
                        "ACL:ferry_socklb_vpc1/from-lport",
                        "ACL:ferry_socklb_vpc1/to-lport",
                    ],
                ),
                Col(
                    "Port_Group",
                    g1,
                    "external_ids",
                    json!([
                        "map",
                        [[KEY, "Port_Group:ferry_socklb_vpc1"], [OWNER, INFRA_OWNER]]
                    ]),
                ),
                Col(
                    "ACL",
                    "ferry_socklb_vpc1/from-lport",
                    "match",
                    json!("inport == @ferry_socklb_vpc1 && ip4.dst == $ferry_socklb_vpc1_ip4"),
                ),
                Col(
                    "ACL",
                    "ferry_socklb_vpc1/from-lport",
                    "direction",
                    json!("from-lport"),
                ),
                Col(
                    "ACL",
                    "ferry_socklb_vpc1/to-lport",
                    "match",
                    json!("outport == @ferry_socklb_vpc1 && ip4.src == $ferry_socklb_vpc1_ip4"),
                ),
                Col(
                    "ACL",
                    "ferry_socklb_vpc1/to-lport",
                    "action",
                    json!("allow-stateless"),
                ),
                Col("ACL", "ferry_socklb_vpc1/to-lport", "priority", json!(1)),
                Col(
                    "ACL",
                    "ferry_socklb_vpc2/to-lport",
                    "match",
                    json!("outport == @ferry_socklb_vpc2 && ip4.src == $ferry_socklb_vpc2_ip4"),
                ),
                // The external client is no member of anything.
                Absent("Port_Group", "ferry_socklb_external"),
                Absent("Port_Group", "ferry_socklb_ovn_cluster"),
            ],
        },
        Case {
            name: "a VPC name with dashes gives an identifier OVN's match language accepts",
            input: socket_lb(lab(vec![]), &["default_bd1"]),
            errors: vec![],
            want: vec![
                Refs(
                    "Port_Group",
                    "ferry_socklb_ovn_cluster",
                    "ports",
                    &["default_bd1"],
                ),
                Col(
                    "ACL",
                    "ferry_socklb_ovn_cluster/from-lport",
                    "match",
                    json!(
                        "inport == @ferry_socklb_ovn_cluster && ip4.dst == $ferry_socklb_ovn_cluster_ip4"
                    ),
                ),
            ],
        },
        Case {
            name: "a member whose port cannot be built is left out; a VPC left empty has no group",
            input: with(
                socket_lb(lab(vec![]), &["default_b21", "default_b11"]),
                |s| {
                    s.ports
                        .iter_mut()
                        .find(|p| p.name == "default_b21")
                        .unwrap()
                        .subnet = "nowhere".into();
                },
            ),
            errors: vec![ObjectError::PortUnknownSubnet {
                port: "default_b21".into(),
                subnet: "nowhere".into(),
            }],
            want: vec![
                Refs("Port_Group", g1, "ports", &["default_b11"]),
                Absent("Port_Group", "ferry_socklb_vpc2"),
            ],
        },
        Case {
            name: "a name that is not a port of the state joins nothing",
            input: socket_lb(lab(vec![]), &["default_gone"]),
            errors: vec![],
            want: vec![Absent("Port_Group", g1)],
        },
    ];
    for c in &cases {
        check(c);
    }
    assert_eq!(socket_lb_group("a-b.c"), "ferry_socklb_a_b.c");
}
