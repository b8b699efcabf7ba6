//! Table tests of the pure part: what each published service means for the maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use ferry_api::YusurService;
use ferry_sock::{Algorithm, Backend, Protocol, ServiceKey, ServiceSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::desired::*;

/// A named case: a service, its slices and what it should program.
type Case<S> = (
    &'static str,
    S,
    Vec<EndpointSlice>,
    Result<Entries, LeftToOvn>,
);

fn ysvc(spec: serde_json::Value, cluster_ip: Option<&str>) -> YusurService {
    let mut v = json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "web", "namespace": "default"}, "spec": spec});
    if let Some(ip) = cluster_ip {
        v["status"] = json!({"clusterIP": ip});
    }
    serde_json::from_value(v).expect("YusurService")
}

fn kube_svc(spec: serde_json::Value, meta: serde_json::Value) -> Service {
    let mut m = json!({"name": "web", "namespace": "default"});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": m, "spec": spec})).expect("Service")
}

/// A slice with `(ip, ready, kind)` endpoints and `(name, port)` ports.
fn slice(eps: &[(&str, Option<bool>, &str)], ports: &[(&str, i32)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": eps.iter().map(|(ip, ready, kind)| {
            let mut e = json!({"addresses": [ip], "targetRef": {"kind": kind, "name": ip, "namespace": "default"}});
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            e
        }).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
    }))
    .expect("EndpointSlice")
}

fn subnets() -> VpcSubnets {
    VpcSubnets::new([
        ("10.16.0.0/16".parse().expect("cidr"), "ovn-cluster".into()),
        ("10.0.1.0/24".parse().expect("cidr"), "vpc1".into()),
        ("10.0.1.0/24".parse().expect("cidr"), "vpc2".into()),
        ("10.0.2.0/24".parse().expect("cidr"), "vpc2".into()),
    ])
}

fn key(vpc: &str, vip: &str, port: u16, protocol: Protocol) -> NamedKey {
    NamedKey {
        vpc: vpc.into(),
        vip: vip.parse().expect("vip"),
        port,
        protocol,
    }
}

fn spec(backends: &[&str], port: u16, affinity_timeout_s: u32) -> ServiceSpec {
    ServiceSpec {
        backends: backends
            .iter()
            .map(|ip| Backend::new(SocketAddrV4::new(ip.parse().expect("ip"), port)))
            .collect(),
        algorithm: Algorithm::Random,
        affinity_timeout_s,
    }
}

#[test]
fn yusur_services_give_each_vpc_its_ready_backends() {
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                       {"name": "dns", "port": 53, "protocol": "UDP"},
                       {"name": "s", "port": 9, "protocol": "SCTP"}]);
    let ready = slice(
        &[
            ("10.0.1.5", Some(true), "Pod"),
            ("10.0.1.6", None, "BareMetal"),
            ("10.0.1.7", Some(false), "Pod"),
        ],
        &[],
    );
    let cases: Vec<Case<YusurService>> = vec![
        (
            "scope vpc: every port but SCTP, not-ready endpoints left out",
            ysvc(
                json!({"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1", "ports": ports, "selector": {}}),
                Some("10.96.0.10"),
            ),
            vec![ready.clone()],
            Ok(BTreeMap::from([
                (
                    key("vpc1", "10.96.0.10", 80, Protocol::Tcp),
                    spec(&["10.0.1.5", "10.0.1.6"], 8080, 0),
                ),
                (
                    key("vpc1", "10.96.0.10", 53, Protocol::Udp),
                    spec(&["10.0.1.5", "10.0.1.6"], 53, 0),
                ),
            ])),
        ),
        (
            "no cluster IP yet: nothing",
            ysvc(
                json!({"type": "ClusterIP", "vpc": "vpc1", "ports": ports, "selector": {}}),
                None,
            ),
            vec![ready.clone()],
            Ok(BTreeMap::new()),
        ),
        (
            "no vpc: the default VPC; ClientIP affinity with the default timeout",
            ysvc(
                json!({"type": "ClusterIP", "ports": [{"port": 80}], "selector": {}, "sessionAffinity": "ClientIP"}),
                Some("10.96.0.11"),
            ),
            vec![slice(&[("10.16.0.9", None, "Pod")], &[])],
            Ok(BTreeMap::from([(
                key("ovn-cluster", "10.96.0.11", 80, Protocol::Tcp),
                spec(&["10.16.0.9"], 80, 10800),
            )])),
        ),
        (
            "multi-vpc: backends split by their subnets' VPC; a VPC without one gets nothing",
            ysvc(
                json!({"type": "ClusterIP", "scope": "multi-vpc", "vpcs": ["vpc2", "ovn-cluster", "vpc9"],
                       "ports": [{"port": 80, "targetPort": 8080}], "selector": {},
                       "sessionAffinity": "ClientIP", "sessionAffinityTimeoutSeconds": 60}),
                Some("10.96.0.12"),
            ),
            vec![slice(
                &[("10.0.2.4", None, "Pod"), ("10.16.0.4", None, "VNicIP")],
                &[],
            )],
            Ok(BTreeMap::from([
                (
                    key("vpc2", "10.96.0.12", 80, Protocol::Tcp),
                    spec(&["10.0.2.4"], 8080, 60),
                ),
                (
                    key("ovn-cluster", "10.96.0.12", 80, Protocol::Tcp),
                    spec(&["10.16.0.4"], 8080, 60),
                ),
            ])),
        ),
        (
            "multi-vpc over overlapping CIDRs: left to OVN",
            ysvc(
                json!({"type": "ClusterIP", "scope": "multi-vpc", "vpcs": ["vpc1", "vpc2"],
                       "ports": [{"port": 80}], "selector": {}}),
                Some("10.96.0.13"),
            ),
            vec![slice(&[("10.0.1.5", None, "Pod")], &[])],
            Err(LeftToOvn::BackendVpcUnknown {
                ip: Ipv4Addr::new(10, 0, 1, 5),
            }),
        ),
    ];
    for (name, svc, slices, want) in cases {
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        assert_eq!(yusur_entries(&svc, &refs, &subnets()), want, "{name}");
    }
}

#[test]
fn kube_services_are_default_vpc_cluster_ips_with_resolved_target_ports() {
    let named = json!({"clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "raw", "port": 81, "targetPort": 9000, "protocol": "UDP"},
        {"name": "unresolved", "port": 82, "targetPort": "nope"}]});
    let cases: Vec<Case<Service>> = vec![
        (
            "named target ports from the slices; Pods of other VPCs left out",
            kube_svc(named.clone(), json!({})),
            vec![slice(
                &[
                    ("10.16.0.5", None, "Pod"),
                    ("10.0.2.5", None, "Pod"),
                    ("192.0.2.1", None, "Node"),
                ],
                &[("http", 8080)],
            )],
            Ok(BTreeMap::from([
                (
                    key("ovn-cluster", "10.96.1.1", 80, Protocol::Tcp),
                    spec(&["10.16.0.5", "192.0.2.1"], 8080, 0),
                ),
                (
                    key("ovn-cluster", "10.96.1.1", 81, Protocol::Udp),
                    spec(&["10.16.0.5", "192.0.2.1"], 9000, 0),
                ),
            ])),
        ),
        (
            "ClientIP affinity timeout from sessionAffinityConfig",
            kube_svc(
                json!({"clusterIP": "10.96.1.2", "ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
                json!({}),
            ),
            vec![slice(&[("10.16.0.5", None, "Pod")], &[])],
            Ok(BTreeMap::from([(
                key("ovn-cluster", "10.96.1.2", 80, Protocol::Tcp),
                spec(&["10.16.0.5"], 80, 30),
            )])),
        ),
        (
            "headless: nothing",
            kube_svc(
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
                json!({}),
            ),
            vec![slice(&[("10.16.0.5", None, "Pod")], &[])],
            Ok(BTreeMap::new()),
        ),
        (
            "a YusurService's generated Service: nothing (the YusurService programs it)",
            kube_svc(
                json!({"clusterIP": "10.96.1.3", "ports": [{"port": 80}]}),
                json!({"labels": {"iaas.yusur.io/service": "web"}}),
            ),
            vec![slice(&[("10.16.0.5", None, "Pod")], &[])],
            Ok(BTreeMap::new()),
        ),
        (
            "the cluster DNS: nothing (the controller programs it to the probe ports)",
            kube_svc(
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
                json!({"annotations": {"iaas.yusur.io/cluster-dns": "true"}}),
            ),
            vec![slice(&[("10.16.0.5", None, "Pod")], &[])],
            Ok(BTreeMap::new()),
        ),
        (
            "no ready endpoint: nothing (OVN rejects, as for every client)",
            kube_svc(
                json!({"clusterIP": "10.96.1.4", "ports": [{"port": 80}]}),
                json!({}),
            ),
            vec![slice(&[("10.16.0.5", Some(false), "Pod")], &[])],
            Ok(BTreeMap::new()),
        ),
        (
            "a Pod of other VPCs only: nothing",
            kube_svc(
                json!({"clusterIP": "10.96.1.5", "ports": [{"port": 80}]}),
                json!({}),
            ),
            vec![slice(&[("10.0.1.9", None, "Pod")], &[])],
            Ok(BTreeMap::new()),
        ),
    ];
    for (name, svc, slices, want) in cases {
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        assert_eq!(service_entries(&svc, &refs, &subnets()), want, "{name}");
    }
    // With the default VPC overlapping vpc1, the last case is ambiguous.
    let overlap = VpcSubnets::new([
        ("10.0.0.0/16".parse().expect("cidr"), "ovn-cluster".into()),
        ("10.0.1.0/24".parse().expect("cidr"), "vpc1".into()),
    ]);
    let s = slice(&[("10.0.1.9", None, "Pod")], &[]);
    assert_eq!(
        service_entries(
            &kube_svc(
                json!({"clusterIP": "10.96.1.5", "ports": [{"port": 80}]}),
                json!({})
            ),
            &[&s],
            &overlap
        ),
        Err(LeftToOvn::PodVpcAmbiguous {
            ip: Ipv4Addr::new(10, 0, 1, 9)
        })
    );
}

#[test]
fn vpc_numbers_are_stable_distinct_and_only_numbered_vpcs_are_programmed() {
    let mut ids = VpcIds::default();
    assert_eq!(ids.assign("vpc1"), 1);
    assert_eq!(ids.assign("vpc2"), 2);
    assert_eq!(ids.assign("vpc1"), 1);
    assert_eq!(ids.get("vpc3"), None);
    let entries = BTreeMap::from([
        (
            key("vpc1", "10.96.0.1", 80, Protocol::Tcp),
            spec(&["10.0.1.5"], 80, 0),
        ),
        (
            key("vpc3", "10.96.0.1", 80, Protocol::Tcp),
            spec(&["10.0.1.5"], 80, 0),
        ),
    ]);
    let k1 = ServiceKey {
        vpc: 1,
        vip: Ipv4Addr::new(10, 96, 0, 1),
        port: 80,
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        keyed(&entries, &ids),
        BTreeMap::from([(k1, spec(&["10.0.1.5"], 80, 0))])
    );
    // A backend gone from a service that also lost a port: one update, one removal.
    let k2 = ServiceKey { port: 81, ..k1 };
    let after = BTreeMap::from([(k1, spec(&["10.0.1.6"], 80, 0))]);
    assert_eq!(
        changes(&BTreeSet::from([k1, k2]), &after),
        BTreeMap::from([(k1, Some(spec(&["10.0.1.6"], 80, 0))), (k2, None)])
    );
}

#[test]
fn a_restarted_agent_keeps_the_vpc_numbers_of_adopted_namespaces() {
    // The adopted maps hold namespaces of numbers 1 and 3 (vpc "b" and "a" before).
    let mut ids = VpcIds::default();
    ids.reserve([1, 3]);
    // A new VPC registers first: it gets a number no adopted namespace carries.
    assert_eq!(ids.assign("new"), 2);
    // Sandboxes of the adopted VPCs register again and claim their numbers.
    assert_eq!(ids.adopt("a", 3), 3);
    assert_eq!(ids.adopt("b", 1), 1);
    // A VPC already numbered keeps its number; a number taken is never shared.
    assert_eq!(ids.adopt("a", 1), 3);
    assert_eq!(ids.adopt("c", 2), 4);
    assert_eq!(ids.assign("d"), 5);
}
