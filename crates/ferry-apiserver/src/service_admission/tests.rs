use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::ServiceSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::alloc::next_ip;
use super::*;

/// A small network so that cases can name every address: 10.96.0.0/28 has no static band
/// (fewer than 16 addresses), so seed 0 gives the lowest free address from 10.96.0.2.
fn net() -> ServiceNetwork {
    ServiceNetwork {
        cidr: "10.96.0.0/28".parse().unwrap(),
        node_ports: (30000, 30009),
    }
}

struct Sets {
    ips: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

impl Taken for Sets {
    fn ip(&self, ip: Ipv4Addr) -> bool {
        self.ips.contains(&ip)
    }
    fn port(&self, p: u16) -> bool {
        self.ports.contains(&p)
    }
}

fn run(spec: Value, old: Option<Value>, ips: &[&str], ports: &[u16]) -> Result<Value, Vec<Cause>> {
    let mut s: ServiceSpec = serde_json::from_value(spec).unwrap();
    let old: Option<ServiceSpec> = old.map(|o| serde_json::from_value(o).unwrap());
    let taken = Sets {
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        ports: ports.iter().copied().collect(),
    };
    admit(&mut s, old.as_ref(), &net(), &taken, 0)?;
    Ok(serde_json::to_value(s).unwrap())
}

fn fields(r: Result<Value, Vec<Cause>>) -> Vec<String> {
    match r {
        Ok(v) => panic!("admitted: {v}"),
        Err(c) => c.into_iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    }
}

#[test]
fn defaults_and_allocations_follow_kube_apiserver() {
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "ClusterIP from a bare port",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
            json!({"type": "ClusterIP", "selector": {"app": "web"}, "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "NodePort gets a node port and externalTrafficPolicy",
            json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]}),
            json!({"type": "NodePort", "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30000}],
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"], "externalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "LoadBalancer Local also gets a health check node port",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 443, "targetPort": "https"}]}),
            json!({"type": "LoadBalancer", "sessionAffinity": "None", "allocateLoadBalancerNodePorts": true,
                "ports": [{"port": 443, "protocol": "TCP", "targetPort": "https", "nodePort": 30000}],
                "healthCheckNodePort": 30001,
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"], "externalTrafficPolicy": "Local",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "LoadBalancer without node port allocation keeps requested ones only",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2, "nodePort": 30007}]}),
            json!({"type": "LoadBalancer", "sessionAffinity": "None", "allocateLoadBalancerNodePorts": false,
                "ports": [{"name": "a", "port": 1, "protocol": "TCP", "targetPort": 1},
                          {"name": "b", "port": 2, "protocol": "TCP", "targetPort": 2, "nodePort": 30007}],
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"], "externalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "ClientIP affinity gets the default timeout",
            json!({"sessionAffinity": "ClientIP", "ports": [{"port": 53, "protocol": "UDP"}]}),
            json!({"type": "ClusterIP", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "ports": [{"port": 53, "protocol": "UDP", "targetPort": 53}],
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "headless with a selector: no address, single stack",
            json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}),
            json!({"type": "ClusterIP", "sessionAffinity": "None", "selector": {"app": "db"},
                "ports": [{"port": 5432, "protocol": "TCP", "targetPort": 5432}],
                "clusterIP": "None", "clusterIPs": ["None"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "headless without selector or ports: both families, as kube-apiserver answers",
            json!({"clusterIP": "None"}),
            json!({"type": "ClusterIP", "sessionAffinity": "None",
                "clusterIP": "None", "clusterIPs": ["None"],
                "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "ExternalName: no address, no families, no traffic policy",
            json!({"type": "ExternalName", "externalName": "example.com"}),
            json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"}),
        ),
        (
            "a requested free address is honoured",
            json!({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}),
            json!({"type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "clusterIPs alone names the address",
            json!({"clusterIPs": ["10.96.0.1"], "ports": [{"port": 443}]}),
            json!({"type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"port": 443, "protocol": "TCP", "targetPort": 443}],
                "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
        (
            "TCP and UDP of one port share one node port (a DNS NodePort)",
            json!({"type": "NodePort", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
            json!({"type": "NodePort", "sessionAffinity": "None",
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53, "nodePort": 30000},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53, "nodePort": 30000}],
                "clusterIP": "10.96.0.2", "clusterIPs": ["10.96.0.2"], "externalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}),
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(run(input, None, &[], &[]).unwrap(), want, "{name}");
    }
}

#[test]
fn dynamic_picks_skip_what_others_hold() {
    let got = run(
        json!({"type": "NodePort", "ports": [{"port": 80}]}),
        None,
        &["10.96.0.2", "10.96.0.3"],
        &[30000],
    )
    .unwrap();
    assert_eq!(got["clusterIP"], "10.96.0.4");
    assert_eq!(got["ports"][0]["nodePort"], 30001);
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    // (name, spec, addresses others hold, node ports others hold, the causes)
    type Case = (
        &'static str,
        Value,
        &'static [&'static str],
        &'static [u16],
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "nodePort out of range",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
            &[],
            &[],
            vec![
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30009",
            ],
        ),
        (
            "nodePort held by another Service",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30004}]}),
            &[],
            &[30004],
            vec![
                "spec.ports[0].nodePort: Invalid value: 30004: provided port is already allocated",
            ],
        ),
        (
            "clusterIP held by another Service",
            json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}),
            &["10.96.0.5"],
            &[],
            vec![
                "spec.clusterIPs: Invalid value: [\"10.96.0.5\"]: failed to allocate IP 10.96.0.5: provided IP is already allocated",
            ],
        ),
        (
            "clusterIP outside the CIDR",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.clusterIPs: Invalid value: [\"10.0.0.1\"]: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/28",
            ],
        ),
        (
            "the network address is outside the range",
            json!({"clusterIP": "10.96.0.0", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.clusterIPs: Invalid value: [\"10.96.0.0\"]: failed to allocate IP 10.96.0.0: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/28",
            ],
        ),
        (
            "not an IP",
            json!({"clusterIP": "10.96.0", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.clusterIPs[0]: Invalid value: \"10.96.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ],
        ),
        (
            "duplicate port",
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80, "targetPort": 81}]}),
            &[],
            &[],
            vec!["spec.ports[1]: Duplicate value: {\"port\": 80, \"protocol\": \"TCP\"}"],
        ),
        (
            "port out of range and unnamed ports",
            json!({"ports": [{"port": 0}, {"port": 70000}]}),
            &[],
            &[],
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            "no ports",
            json!({"selector": {"a": "b"}}),
            &[],
            &[],
            vec!["spec.ports: Required value"],
        ),
        (
            "ExternalName without a name",
            json!({"type": "ExternalName"}),
            &[],
            &[],
            vec!["spec.externalName: Required value"],
        ),
        (
            "nodePort on a ClusterIP Service",
            json!({"ports": [{"port": 80, "nodePort": 30001}]}),
            &[],
            &[],
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
        ),
        (
            "headless NodePort",
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
            ],
        ),
        (
            "unknown type and protocol",
            json!({"type": "Magic", "ports": [{"port": 80, "protocol": "ICMP"}]}),
            &[],
            &[],
            vec![
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ],
        ),
        (
            "affinity timeout too long",
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}, "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400",
            ],
        ),
        (
            "an IPv6 cluster IP on this IPv4 cluster",
            json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.clusterIPs[0]: Invalid value: [\"fd00::1\"]: IPv6 is not configured on this cluster",
            ],
        ),
        (
            "a bad external IP",
            json!({"externalIPs": ["1.2.3"], "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.externalIPs[0]: Invalid value: \"1.2.3\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ],
        ),
        (
            "externalTrafficPolicy on an internal Service",
            json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            &[],
            &[],
            vec![
                "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
            ],
        ),
    ];
    for (name, input, ips, ports, want) in cases {
        assert_eq!(fields(run(input, None, ips, ports)), want, "{name}");
    }
}

#[test]
fn updates_keep_what_was_allocated_and_drop_what_the_type_no_longer_uses() {
    let stored = run(
        json!({"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "web"}}),
        None,
        &["10.96.0.2"],
        &[30000],
    )
    .unwrap();
    assert_eq!(stored["clusterIP"], "10.96.0.3");
    assert_eq!(stored["ports"][0]["nodePort"], 30001);
    // A replace with the original manifest (no clusterIP, no nodePort) keeps both, even
    // with everything else taken.
    let again = run(
        json!({"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "web"}}),
        Some(stored.clone()),
        &["10.96.0.2"],
        &[30000],
    )
    .unwrap();
    assert_eq!(again, stored);
    // The primary address never changes.
    let mut moved = stored.clone();
    moved["clusterIP"] = json!("10.96.0.9");
    moved["clusterIPs"] = json!(["10.96.0.9"]);
    assert_eq!(
        fields(run(moved, Some(stored.clone()), &[], &[])),
        vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.9\": may not change once set"]
    );
    // NodePort -> ClusterIP: the node port the client carried over is dropped.
    let mut to_cluster_ip = stored.clone();
    to_cluster_ip["type"] = json!("ClusterIP");
    to_cluster_ip
        .as_object_mut()
        .unwrap()
        .remove("externalTrafficPolicy");
    let got = run(to_cluster_ip, Some(stored.clone()), &[], &[]).unwrap();
    assert_eq!(got["ports"][0].get("nodePort"), None);
    assert_eq!(got["clusterIP"], "10.96.0.3");
    // -> ExternalName: the address goes too.
    let mut to_external = stored.clone();
    to_external["type"] = json!("ExternalName");
    to_external["externalName"] = json!("example.com");
    to_external
        .as_object_mut()
        .unwrap()
        .remove("externalTrafficPolicy");
    let got = run(to_external, Some(stored), &[], &[]).unwrap();
    assert_eq!(
        got,
        json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None",
            "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "internalTrafficPolicy": "Cluster"})
    );
}

#[test]
fn held_addresses_are_read_from_stored_objects() {
    let svc = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
        "ports": [{"port": 80, "nodePort": 30080}], "healthCheckNodePort": 30081}});
    assert_eq!(
        held_by_service(&serde_json::to_vec(&svc).unwrap()),
        Held {
            ips: ["10.96.0.7".parse().unwrap()].into(),
            node_ports: [30080, 30081].into(),
        }
    );
    let headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
    assert_eq!(
        held_by_service(&serde_json::to_vec(&headless).unwrap()),
        Held::default()
    );
    let ysvc = json!({"spec": {"clusterIP": "10.96.0.9"}, "status": {"clusterIP": "10.96.0.9"}});
    assert_eq!(
        held_by_yusur_service(&serde_json::to_vec(&ysvc).unwrap()).ips,
        ["10.96.0.9".parse().unwrap()].into()
    );
    assert_eq!(
        owner_of("/registry/core/services/default/web"),
        "default/web"
    );
}

#[test]
fn the_ledger_follows_puts_and_deletes_and_a_service_and_its_yusur_service_are_one_holder() {
    let a = ServiceAdmission::new(net());
    let svc = |ip: &str| serde_json::to_vec(&json!({"spec": {"clusterIP": ip}})).unwrap();
    a.reset([("/registry/core/services/default/web", &svc("10.96.0.4")[..])]);
    a.observe(
        "/registry/iaas.yusur.io/yusurservices/default/ysvc1",
        Some(&serde_json::to_vec(&json!({"status": {"clusterIP": "10.96.0.5"}})).unwrap()),
    );
    let l = a.ledger_copy();
    assert_eq!(
        l.ip_holder("10.96.0.4".parse().unwrap(), "default/other"),
        Some("/registry/core/services/default/web")
    );
    assert_eq!(
        l.ip_holder("10.96.0.5".parse().unwrap(), "default/ysvc1"),
        None
    );
    assert!(
        l.ip_holder("10.96.0.5".parse().unwrap(), "default/web")
            .is_some()
    );
    a.observe("/registry/core/services/default/web", None);
    assert_eq!(a.ledger_copy().ips().len(), 1);
    // A YusurService may not take what a Service of another name holds.
    a.observe(
        "/registry/core/services/default/web",
        Some(&svc("10.96.0.4")),
    );
    let ysvc = json!({"spec": {}, "status": {"clusterIP": "10.96.0.4"}});
    assert_eq!(
        a.admit_yusur_service(
            "/registry/iaas.yusur.io/yusurservices/default/ysvc2",
            &ysvc,
            None
        )
        .map(|r| r.is_some()),
        Err(vec![(
            "status.clusterIP".to_string(),
            "Invalid value: \"10.96.0.4\": provided IP is already allocated to Service default/web"
                .to_string()
        )])
    );
    // ... but the Service Ferry's controller generates for it (same name) is the same holder.
    assert!(
        a.admit_yusur_service(
            "/registry/iaas.yusur.io/yusurservices/default/web",
            &ysvc,
            None
        )
        .is_ok()
    );
}

#[test]
fn writes_in_flight_reserve_their_addresses_until_released() {
    let a = ServiceAdmission::new(net());
    let mut one =
        json!({"metadata": {"name": "one"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let mut two =
        json!({"metadata": {"name": "two"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let r1 = a
        .admit_service("/registry/core/services/default/one", &mut one, None)
        .unwrap();
    let r2 = a
        .admit_service("/registry/core/services/default/two", &mut two, None)
        .unwrap();
    assert_ne!(one["spec"]["clusterIP"], two["spec"]["clusterIP"]);
    assert_ne!(
        one["spec"]["ports"][0]["nodePort"],
        two["spec"]["ports"][0]["nodePort"]
    );
    // A YusurService cannot take a reserved Service address either.
    let ip = one["spec"]["clusterIP"].as_str().unwrap().to_string();
    let y = json!({"status": {"clusterIP": ip}});
    assert!(
        a.admit_yusur_service("/registry/iaas.yusur.io/yusurservices/default/y", &y, None)
            .is_err()
    );
    // Released (the write failed, say): the address can be asked for.
    drop(r1);
    drop(r2);
    let mut three =
        json!({"metadata": {"name": "three"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    assert!(
        a.admit_service("/registry/core/services/default/three", &mut three, None)
            .is_ok()
    );
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: u8,
        node_port: bool,
        ask_ip: Option<u8>,
        ask_port: Option<u16>,
    },
    Delete {
        name: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, any::<bool>(), proptest::option::of(0u8..16), proptest::option::of(29995u16..30012), any::<u64>())
            .prop_map(|(name, node_port, ask_ip, ask_port, _)| Op::Create { name, node_port, ask_ip, ask_port }),
        1 => (0u8..24).prop_map(|name| Op::Delete { name }),
    ]
}

proptest! {
    /// Whatever the order of creates (with or without requests) and deletes, no cluster IP
    /// and no node port is ever held by two Services, and every one is inside its range.
    #[test]
    fn no_address_or_node_port_is_handed_out_twice(ops in proptest::collection::vec((op(), any::<u64>()), 1..80)) {
        let n = net();
        let mut ledger = Ledger::default();
        for (op, seed) in ops {
            match op {
                Op::Delete { name } => ledger.set(&format!("/registry/core/services/default/s{name}"), Held::default()),
                Op::Create { name, node_port, ask_ip, ask_port } => {
                    let key = format!("/registry/core/services/default/s{name}");
                    if ledger.held(&key).is_some() { continue; }
                    let mut spec = json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "protocol": "UDP"}]});
                    if node_port { spec["type"] = json!("NodePort"); }
                    if let Some(i) = ask_ip { spec["clusterIP"] = json!(format!("10.96.0.{i}")); }
                    if let (Some(p), true) = (ask_port, node_port) { spec["ports"][0]["nodePort"] = json!(p); }
                    let mut s: ServiceSpec = serde_json::from_value(spec).unwrap();
                    let owner = owner_of(&key);
                    let ok = admit(&mut s, None, &n, &TakenFor { ledger: &ledger, owner: &owner }, seed).is_ok();
                    if ok {
                        let stored = serde_json::to_vec(&json!({"spec": s})).unwrap();
                        let held = held_by_service(&stored);
                        for ip in &held.ips { prop_assert!(n.contains_ip(*ip), "{ip} outside"); }
                        for p in &held.node_ports { prop_assert!(n.contains_port(i32::from(*p)), "{p} outside"); }
                        ledger.set(&key, held);
                    }
                }
            }
            for (ip, holders) in ledger.ips() { prop_assert_eq!(holders.len(), 1, "{} held by {:?}", ip, holders); }
            for (p, holders) in ledger.node_ports() { prop_assert_eq!(holders.len(), 1, "{} held by {:?}", p, holders); }
        }
    }
}

#[derive(Debug, Clone)]
enum Flight {
    /// A create decided and reserved (not stored yet).
    Admit {
        name: u8,
        node_port: bool,
    },
    /// The oldest write in flight lands in the store (then its reservation ends).
    Commit,
    /// The oldest write in flight fails (its reservation ends, nothing stored).
    Fail,
    Delete {
        name: u8,
    },
}

fn flight() -> impl Strategy<Value = Flight> {
    prop_oneof![
        3 => (0u8..20, any::<bool>()).prop_map(|(name, node_port)| Flight::Admit { name, node_port }),
        2 => Just(Flight::Commit),
        1 => Just(Flight::Fail),
        1 => (0u8..20).prop_map(|name| Flight::Delete { name }),
    ]
}

proptest! {
    /// Writes in flight (decided and reserved, not yet stored) and stored objects together
    /// never hold one address or node port twice, whatever lands or fails in between.
    #[test]
    fn reservations_and_stored_objects_never_overlap(ops in proptest::collection::vec(flight(), 1..120)) {
        let a = ServiceAdmission::new(net());
        let mut in_flight: std::collections::VecDeque<(String, Value, Reservation<'_>)> = Default::default();
        for op in ops {
            match op {
                Flight::Admit { name, node_port } => {
                    let key = format!("/registry/core/services/default/s{name}");
                    if a.ledger_copy().held(&key).is_some() || in_flight.iter().any(|(k, _, _)| *k == key) {
                        continue;
                    }
                    let mut obj = json!({"spec": {"ports": [{"port": 80}]}});
                    if node_port { obj["spec"]["type"] = json!("NodePort"); }
                    if let Ok(r) = a.admit_service(&key, &mut obj, None) {
                        in_flight.push_back((key, obj, r));
                    }
                }
                Flight::Commit => {
                    if let Some((key, obj, r)) = in_flight.pop_front() {
                        a.observe(&key, Some(&serde_json::to_vec(&obj).unwrap()));
                        drop(r);
                    }
                }
                Flight::Fail => { in_flight.pop_front(); }
                Flight::Delete { name } => a.observe(&format!("/registry/core/services/default/s{name}"), None),
            }
            let l = a.ledger_copy();
            let mut ips: std::collections::BTreeMap<Ipv4Addr, String> = Default::default();
            let mut ports: std::collections::BTreeMap<u16, String> = Default::default();
            let stored = l.ips().into_iter().flat_map(|(ip, ks)| ks.into_iter().map(move |k| (ip, k)));
            let pending = l.pending.values().flat_map(|(k, h)| h.ips.iter().map(move |ip| (*ip, k.clone())));
            for (ip, k) in stored.chain(pending) {
                let prev = ips.insert(ip, k.clone());
                prop_assert!(prev.is_none() || prev.as_ref() == Some(&k), "{} held by {:?} and {}", ip, prev, k);
            }
            let stored = l.node_ports().into_iter().flat_map(|(p, ks)| ks.into_iter().map(move |k| (p, k)));
            let pending = l.pending.values().flat_map(|(k, h)| h.node_ports.iter().map(move |p| (*p, k.clone())));
            for (p, k) in stored.chain(pending) {
                let prev = ports.insert(p, k.clone());
                prop_assert!(prev.is_none() || prev.as_ref() == Some(&k), "{} held by {:?} and {}", p, prev, k);
            }
        }
    }
}

#[test]
fn next_ip_prefers_the_upper_band_and_never_the_first_address() {
    let n = ServiceNetwork::default();
    // A /16 keeps 256 addresses for static requests: dynamic picks start above them.
    for seed in [0, 1, 65000, u64::MAX] {
        let ip = next_ip(&n, seed, |_| false).unwrap();
        assert!(ip >= Ipv4Addr::new(10, 96, 1, 1), "{ip}");
    }
    // Full upper band: falls back to the lower one, skipping 10.96.0.1.
    let ip = next_ip(&n, 7, |ip| ip >= Ipv4Addr::new(10, 96, 1, 1)).unwrap();
    assert!(
        ip >= Ipv4Addr::new(10, 96, 0, 2) && ip < Ipv4Addr::new(10, 96, 1, 1),
        "{ip}"
    );
    assert_eq!(next_ip(&n, 7, |_| true), None);
}
