//! The model's decisions, table-driven, and the diff's laws checked on a small pure
//! simulator of OVSDB (insert with uuid-name, update, delete, garbage collection of
//! unreferenced non-root rows).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_net::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn lab(services: Vec<ServiceState>) -> NetworkState {
    let subnet = |name: &str, vpc: &str, cidr: &str, gw: &str| SubnetState {
        name: name.into(),
        vpc: vpc.into(),
        cidr: cidr.parse().unwrap(),
        gateway: ip(gw),
    };
    NetworkState {
        gateway_chassis: "ch1".into(),
        transit_cidr: None,
        vpcs: vec!["ovn-cluster".into(), "vpc1".into(), "vpc2".into()],
        subnets: vec![
            subnet("subnet0", "ovn-cluster", "100.64.0.0/16", "100.64.0.1"),
            subnet("ovn-default", "ovn-cluster", "10.16.0.0/16", "10.16.0.1"),
            subnet("vpc1-subnet1", "vpc1", "10.0.1.0/24", "10.0.1.1"),
            subnet("vpc1-subnet2", "vpc1", "10.0.2.0/24", "10.0.2.1"),
            subnet("vpc2-subnet1", "vpc2", "10.0.1.0/24", "10.0.1.1"),
        ],
        ports: vec![
            PortState {
                name: "default_a".into(),
                subnet: "vpc1-subnet1".into(),
                mac: "0a:00:00:00:01:0a".into(),
                ip: ip("10.0.1.10"),
            },
            PortState {
                name: "default_b".into(),
                subnet: "vpc2-subnet1".into(),
                mac: "0a:00:00:00:02:0a".into(),
                ip: ip("10.0.1.10"),
            },
            PortState {
                name: "ext_client".into(),
                subnet: EXTERNAL_SWITCH.into(),
                mac: "0a:00:00:ee:00:fa".into(),
                ip: ip("198.18.0.250"),
            },
        ],
        external: Some(ExternalNetwork {
            cidr: "198.18.0.0/24".parse().unwrap(),
            gateway: ip("198.18.0.1"),
            pool: (ip("198.18.0.100"), ip("198.18.0.199")),
        }),
        services,
    }
}

fn svc(
    key: &str,
    scope: ServiceScope,
    cip: Option<&str>,
    eip: Option<&str>,
    backends: &[(&str, &str)],
) -> ServiceState {
    ServiceState {
        key: key.into(),
        uid: format!("uid-{key}"),
        scope,
        cluster_ip: cip.map(ip),
        eip: eip.map(ip),
        ports: vec![ServicePort {
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
        }],
        affinity_timeout: None,
        backends: backends
            .iter()
            .map(|(i, v)| Backend {
                ip: ip(i),
                vpc: v.to_string(),
            })
            .collect(),
    }
}

fn row<'a>(d: &'a Desired, table: &str, name: &str) -> &'a Row {
    d.rows
        .iter()
        .find(|r| r.table == table && r.key == format!("{table}:{name}"))
        .unwrap_or_else(|| panic!("no {table} {name}"))
}

fn refs(v: &Value) -> Vec<String> {
    v[1].as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn scenario_1_cluster_ip_lb_is_in_the_vpc_group_on_every_vpc_switch() {
    let d = build_desired(&lab(vec![svc(
        "default/web",
        ServiceScope::Vpc("vpc1".into()),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    )]));
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let lb = row(&d, "Load_Balancer", "ferry-default-web-cip-vpc1-tcp");
    assert_eq!(
        lb.columns["vips"],
        json!(["map", [["10.96.0.10:80", "10.0.1.10:8080,10.0.2.10:8080"]]])
    );
    assert_eq!(
        refs(&row(&d, "Load_Balancer_Group", "ferry-vpc1").columns["load_balancer"]),
        ["Load_Balancer:ferry-default-web-cip-vpc1-tcp"]
    );
    for sw in ["vpc1-subnet1", "vpc1-subnet2"] {
        assert_eq!(
            refs(&row(&d, "Logical_Switch", sw).columns["load_balancer_group"]),
            ["Load_Balancer_Group:ferry-vpc1"]
        );
    }
    assert_eq!(
        refs(&row(&d, "Logical_Switch", "vpc2-subnet1").columns["load_balancer_group"]),
        ["Load_Balancer_Group:ferry-vpc2"]
    );
}

#[test]
fn scenario_2_default_vpc_group_is_also_on_the_join_switch() {
    let d = build_desired(&lab(vec![svc(
        "default/d",
        ServiceScope::Vpc("ovn-cluster".into()),
        Some("10.96.0.20"),
        None,
        &[("10.16.0.10", "ovn-cluster")],
    )]));
    assert_eq!(
        refs(&row(&d, "Logical_Switch", "subnet0").columns["load_balancer_group"]),
        ["Load_Balancer_Group:ferry-ovn-cluster"]
    );
    assert_eq!(
        refs(&row(&d, "Load_Balancer_Group", "ferry-ovn-cluster").columns["load_balancer"]),
        ["Load_Balancer:ferry-default-d-cip-ovn-cluster-tcp"]
    );
}

#[test]
fn scenario_3_eip_lb_on_the_vpc_router_with_a_gateway_port_and_routes() {
    let d = build_desired(&lab(vec![svc(
        "default/e",
        ServiceScope::Vpc("vpc1".into()),
        Some("10.96.0.30"),
        Some("198.18.0.100"),
        &[("10.0.1.10", "vpc1")],
    )]));
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let vpc1 = row(&d, "Logical_Router", "vpc1");
    assert_eq!(
        refs(&vpc1.columns["load_balancer"]),
        ["Load_Balancer:ferry-default-e-eip-tcp"]
    );
    let dgp = row(&d, "Logical_Router_Port", "vpc1-transit-vpc1");
    assert_eq!(refs(&dgp.columns["gateway_chassis"]).len(), 1);
    assert!(
        d.rows
            .iter()
            .any(|r| r.table == "Logical_Router_Static_Route"
                && r.key == "Logical_Router_Static_Route:eip-gateway:198.18.0.100/32")
    );
    assert!(
        d.rows
            .iter()
            .any(|r| r.table == "Logical_Router_Static_Route"
                && r.key == "Logical_Router_Static_Route:vpc1:0.0.0.0/0")
    );
    assert_eq!(
        row(&d, "Logical_Router", EIP_GATEWAY).columns["options"],
        json!(["map", [["chassis", "ch1"]]])
    );
    let ext_port = row(&d, "Logical_Switch_Port", "external-eip-gateway");
    assert_eq!(
        ext_port.columns["options"][1][0],
        json!(["router-port", "eip-gateway-external"])
    );
    assert_eq!(
        ext_port.columns["options"][1][1],
        json!(["arp_proxy", "198.18.0.100"])
    );
    // vpc2 gets no uplink: it stays unreachable from outside.
    assert!(
        !d.rows
            .iter()
            .any(|r| r.key == "Logical_Switch:transit-vpc2")
    );
}

#[test]
fn scenario_4_multi_vpc_lb_on_service_gateway_with_snat_and_host_routes() {
    let d = build_desired(&lab(vec![svc(
        "default/m",
        ServiceScope::MultiVpc(vec!["vpc1".into(), "vpc2".into()]),
        None,
        Some("198.18.0.101"),
        &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
    )]));
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let sgw = row(&d, "Logical_Router", SERVICE_GATEWAY);
    assert_eq!(
        sgw.columns["options"],
        json!([
            "map",
            [["chassis", "ch1"], ["lb_force_snat_ip", "router_ip"]]
        ])
    );
    assert_eq!(
        refs(&sgw.columns["load_balancer"]),
        ["Load_Balancer:ferry-default-m-eip-tcp"]
    );
    let routes: Vec<&str> = d
        .rows
        .iter()
        .filter(|r| {
            r.key
                .starts_with("Logical_Router_Static_Route:service-gateway:")
        })
        .map(|r| r.key.as_str())
        .collect();
    assert!(
        routes.contains(&"Logical_Router_Static_Route:service-gateway:10.0.1.10/32")
            && routes.contains(&"Logical_Router_Static_Route:service-gateway:10.0.1.20/32"),
        "{routes:?}"
    );
}

#[test]
fn conflicts_are_typed_per_object_and_the_rest_is_built() {
    let mut state = lab(vec![
        svc(
            "default/out",
            ServiceScope::Vpc("vpc1".into()),
            None,
            Some("198.18.1.5"),
            &[],
        ),
        svc(
            "default/dup",
            ServiceScope::MultiVpc(vec!["vpc1".into(), "vpc2".into()]),
            None,
            Some("198.18.0.102"),
            &[("10.0.1.10", "vpc1"), ("10.0.1.10", "vpc2")],
        ),
        svc(
            "default/novpc",
            ServiceScope::Vpc("nope".into()),
            Some("10.96.0.1"),
            None,
            &[],
        ),
        svc(
            "default/a",
            ServiceScope::Vpc("vpc1".into()),
            Some("10.96.0.5"),
            None,
            &[],
        ),
        svc(
            "default/b",
            ServiceScope::Vpc("vpc1".into()),
            Some("10.96.0.5"),
            None,
            &[],
        ),
        svc(
            "default/ok",
            ServiceScope::Vpc("vpc1".into()),
            Some("10.96.0.6"),
            None,
            &[("10.0.1.10", "vpc1")],
        ),
    ]);
    state.subnets.push(SubnetState {
        name: "bad".into(),
        vpc: "vpc1".into(),
        cidr: "100.100.8.0/24".parse().unwrap(),
        gateway: ip("100.100.8.1"),
    });
    let d = build_desired(&state);
    let objects: Vec<&str> = d.errors.iter().map(|e| e.object()).collect();
    assert_eq!(
        objects,
        [
            "bad",
            "default/b",
            "default/dup",
            "default/novpc",
            "default/out"
        ]
    );
    assert!(matches!(d.errors[1], ObjectError::VipClash { .. }));
    assert!(matches!(
        d.errors[2],
        ObjectError::DuplicateBackendIp { .. }
    ));
    assert!(matches!(d.errors[4], ObjectError::EipOutOfPool { .. }));
    row(&d, "Load_Balancer", "ferry-default-ok-cip-vpc1-tcp");
    row(&d, "Load_Balancer", "ferry-default-a-cip-vpc1-tcp");
    assert!(!d.rows.iter().any(|r| r.key.contains("default-b-")
        || r.key.contains("default-dup")
        || r.key == "Logical_Switch:bad"));
}

#[test]
fn no_ready_backend_means_reject() {
    let d = build_desired(&lab(vec![svc(
        "default/e",
        ServiceScope::Vpc("vpc1".into()),
        Some("10.96.0.30"),
        None,
        &[],
    )]));
    let lb = row(&d, "Load_Balancer", "ferry-default-e-cip-vpc1-tcp");
    assert_eq!(lb.columns["options"], json!(["map", [["reject", "true"]]]));
    assert_eq!(lb.columns["vips"], json!(["map", [["10.96.0.30:80", ""]]]));
}

// === a pure OVSDB simulator ===

const ROOT: &[&str] = &[
    "Logical_Switch",
    "Logical_Router",
    "Load_Balancer",
    "Load_Balancer_Group",
];

fn apply(db: &mut Vec<CurrentRow>, ops: &[Value], next: &mut u64) {
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for op in ops {
        if op["op"] == "insert" {
            *next += 1;
            named.insert(op["uuid-name"].as_str().unwrap().into(), format!("u{next}"));
        }
    }
    fn sub(v: &Value, named: &BTreeMap<String, String>) -> Value {
        match v {
            Value::Array(a) if a.len() == 2 && a[0] == "named-uuid" => {
                json!(["uuid", named[a[1].as_str().unwrap()]])
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| sub(x, named)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), sub(x, named))).collect())
            }
            o => o.clone(),
        }
    }
    for op in ops {
        let uuid_of = |op: &Value| op["where"][0][2][1].as_str().unwrap().to_string();
        match op["op"].as_str().unwrap() {
            "insert" => db.push(CurrentRow {
                table: op["table"].as_str().unwrap().into(),
                uuid: named[op["uuid-name"].as_str().unwrap()].clone(),
                columns: sub(&op["row"], &named).as_object().unwrap().clone(),
            }),
            "update" => {
                let u = uuid_of(op);
                let r = db
                    .iter_mut()
                    .find(|r| r.uuid == u)
                    .expect("update of a missing row");
                for (c, v) in op["row"].as_object().unwrap() {
                    r.columns.insert(c.clone(), sub(v, &named));
                }
            }
            "delete" => {
                let u = uuid_of(op);
                db.retain(|r| r.uuid != u);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    // Garbage-collect unreferenced non-root rows, as ovsdb-server does.
    loop {
        let text: String = db
            .iter()
            .map(|r| Value::Object(r.columns.clone()).to_string())
            .collect();
        let before = db.len();
        db.retain(|r| {
            ROOT.contains(&r.table.as_str()) || text.contains(&format!("\"{}\"", r.uuid))
        });
        if db.len() == before {
            break;
        }
    }
}

fn converge(db: &mut Vec<CurrentRow>, d: &Desired, next: &mut u64) -> usize {
    let mut txns = 0;
    loop {
        let ops = plan(d, db, 3);
        if ops.is_empty() {
            return txns;
        }
        txns += 1;
        assert!(
            txns < 100,
            "no convergence: {}",
            serde_json::to_string(&ops[..ops.len().min(2)]).unwrap()
        );
        apply(db, &ops, next);
    }
}

fn arb_state() -> impl Strategy<Value = NetworkState> {
    let svc_strategy = (
        0u8..6,
        0u8..3,
        proptest::collection::vec((0u8..4, 0u8..2), 0..4),
        any::<bool>(),
        any::<bool>(),
    );
    proptest::collection::vec(svc_strategy, 0..6).prop_map(|svcs| {
        let services = svcs
            .into_iter()
            .enumerate()
            .map(|(i, (n, vpc, backends, eip, multi))| {
                let vpcs = ["vpc1", "vpc2", "ovn-cluster"];
                let scope = if multi {
                    ServiceScope::MultiVpc(vec!["vpc1".into(), "vpc2".into()])
                } else {
                    ServiceScope::Vpc(vpcs[vpc as usize].into())
                };
                ServiceState {
                    key: format!("default/s{i}-{n}"),
                    uid: format!("u{i}"),
                    scope,
                    cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10 + i as u8)),
                    eip: eip.then(|| Ipv4Addr::new(198, 18, 0, 100 + i as u8)),
                    ports: vec![ServicePort {
                        port: 80,
                        target_port: 8080,
                        protocol: Protocol::Tcp,
                    }],
                    affinity_timeout: None,
                    backends: backends
                        .into_iter()
                        .map(|(b, v)| Backend {
                            ip: Ipv4Addr::new(10, 0, 1, 10 + b + 10 * v),
                            vpc: ["vpc1", "vpc2"][v as usize].into(),
                        })
                        .collect(),
                }
            })
            .collect();
        lab(services)
    })
}

/// The rows of `db` in a comparable form: keys instead of uuids.
fn canonical(db: &[CurrentRow]) -> BTreeMap<String, BTreeMap<String, String>> {
    let ident = |r: &CurrentRow| -> String {
        let key = r
            .columns
            .get("external_ids")
            .and_then(|e| e[1].as_array())
            .and_then(|pairs| pairs.iter().find(|p| p[0] == KEY))
            .and_then(|p| p[1].as_str());
        key.map(String::from).unwrap_or_else(|| {
            format!(
                "{}:{}",
                r.table,
                r.columns.get("name").and_then(Value::as_str).unwrap_or("?")
            )
        })
    };
    let key_of: BTreeMap<String, String> = db.iter().map(|r| (r.uuid.clone(), ident(r))).collect();
    db.iter()
        .map(|r| {
            let cols = r.columns.iter().map(|(c, v)| {
                let mut s = v.to_string();
                for (u, k) in &key_of {
                    s = s.replace(&format!("\"{u}\""), &format!("\"{k}\""));
                }
                (c.clone(), s)
            });
            (ident(r), cols.collect())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// diff(A -> B) applied to A gives what B alone gives, and applying twice changes nothing.
    #[test]
    fn plan_from_a_to_b_equals_b_and_is_idempotent(a in arb_state(), b in arb_state()) {
        let (da, db_) = (build_desired(&a), build_desired(&b));
        let mut next = 0;
        let mut via_a = Vec::new();
        converge(&mut via_a, &da, &mut next);
        prop_assert!(plan(&da, &via_a, 3).is_empty());
        converge(&mut via_a, &db_, &mut next);
        prop_assert!(plan(&db_, &via_a, usize::MAX).is_empty());
        let mut direct = Vec::new();
        converge(&mut direct, &db_, &mut next);
        prop_assert_eq!(canonical(&via_a), canonical(&direct));
    }
}

#[test]
fn rows_ferry_does_not_own_are_never_touched() {
    let d = build_desired(&lab(vec![]));
    let mut db = vec![CurrentRow {
        table: "Logical_Switch".into(),
        uuid: "foreign".into(),
        columns: Map::from_iter([("name".to_string(), json!("someone-elses"))]),
    }];
    let mut next = 0;
    converge(&mut db, &d, &mut next);
    assert!(db.iter().any(|r| r.uuid == "foreign"));
    let empty = build_desired(&NetworkState::default());
    converge(&mut db, &empty, &mut next);
    assert_eq!(db.len(), 1, "only the foreign row remains");
}
