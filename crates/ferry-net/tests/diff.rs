//! The diff's laws, on the pure OVSDB simulator of `common`: every transaction of a plan is
//! valid on its own, diff(A -> B) applied to A gives exactly what B alone gives, a second
//! diff is empty, rows without Ferry's key are never touched, comparison is semantic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_net::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// `diff_fenced` as the applier runs it: on rows holding only the columns
/// `indexed_column` names, each compared row read whole by its uuid.
fn diff_indexed(d: &Desired, current: &[CurrentRow], max: usize, fence: &Fence) -> Plan {
    let indexed: Vec<CurrentRow> = current
        .iter()
        .map(|r| CurrentRow {
            table: r.table.clone(),
            uuid: r.uuid.clone(),
            columns: r
                .columns
                .iter()
                .filter(|(c, _)| indexed_column(&r.table, c))
                .map(|(c, v)| (c.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let whole: BTreeMap<&str, &CurrentRow> = current.iter().map(|r| (r.uuid.as_str(), r)).collect();
    let full: FullRow = &|r| {
        whole
            .get(r.uuid.as_str())
            .map(|w| Cow::Owned(w.columns.clone()))
    };
    diff_fenced_with(d, &indexed, full, max, fence)
}

fn converge(db: &mut Db, d: &Desired, max: usize) -> Plan {
    let p = diff(d, &db.current(), max);
    db.apply(&p).unwrap_or_else(|e| panic!("{e}"));
    let again = diff(d, &db.current(), max);
    assert!(again.is_empty(), "not idempotent: {:?}", again.transactions);
    p
}

fn fresh(d: &Desired) -> Db {
    let mut db = Db::default();
    converge(&mut db, d, usize::MAX);
    db
}

#[test]
fn a_fresh_nb_gets_everything_with_deterministic_uuids_and_then_nothing() {
    let d = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        Some("198.18.0.100"),
        &[("10.0.1.10", "vpc1")],
    )]));
    let p = diff(&d, &[], usize::MAX);
    assert_eq!(p.transactions.len(), 1);
    // Only root rows and their children: inserts carry the uuid derived from their key.
    for op in &p.transactions[0] {
        assert_eq!(op["op"], "insert");
        let key = op["row"]["external_ids"][1]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p[0] == KEY))
            .map(|p| p[1].as_str().unwrap().to_string())
            .unwrap_or_else(|| {
                format!(
                    "Load_Balancer_Group:{}",
                    op["row"]["name"].as_str().unwrap()
                )
            });
        assert_eq!(
            op["uuid"],
            json!(row_uuid(op["table"].as_str().unwrap(), &key, 0))
        );
    }
    assert_eq!(p.op_count(), d.rows.len());
    let mut db = Db::default();
    db.apply(&p).unwrap();
    assert_eq!(db.rows.len(), d.rows.len(), "no row was garbage collected");
    assert!(diff(&d, &db.current(), usize::MAX).is_empty());
}

#[test]
fn bounded_transactions_are_each_valid_and_in_dependency_order() {
    let services: Vec<ServiceState> = (0..30)
        .map(|i| {
            svc(
                &format!("default/s{i}"),
                vpc("vpc1"),
                Some(&format!("10.96.1.{i}")),
                None,
                &[("10.0.1.10", "vpc1")],
            )
        })
        .collect();
    let d = build_desired(&lab(services));
    for max in [1, 2, 7, 25] {
        let p = diff(&d, &[], max);
        // A unit (a root and its children) is never split, others are packed up to max.
        assert!(p.transactions.len() > 1);
        for t in &p.transactions {
            let roots = t
                .iter()
                .filter(|op| {
                    matches!(
                        op["table"].as_str(),
                        Some(
                            "Logical_Switch"
                                | "Logical_Router"
                                | "Load_Balancer"
                                | "Load_Balancer_Group"
                        )
                    )
                })
                .count();
            assert!(
                t.len() <= max || roots == 1,
                "max {max}: {} ops, {roots} roots",
                t.len()
            );
        }
        // The first transactions hold the load balancers alone.
        assert!(
            p.transactions[0]
                .iter()
                .all(|op| op["table"] == "Load_Balancer")
        );
        let mut db = Db::default();
        db.apply(&p).unwrap_or_else(|e| panic!("max {max}: {e}"));
        assert_eq!(db.canonical(), fresh(&d).canonical());
    }
}

#[test]
fn one_changed_backend_is_one_update_of_one_column() {
    let a = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1")],
    )]));
    let b = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    )]));
    let mut db = fresh(&a);
    let p = converge(&mut db, &b, 100);
    assert_eq!(p.transactions.len(), 1);
    let op = &p.transactions[0][0];
    assert_eq!(p.op_count(), 1);
    assert_eq!(op["op"], "update");
    assert_eq!(op["table"], "Load_Balancer");
    assert_eq!(
        op["row"],
        json!({"vips": ["map", [["10.96.0.10:80", "10.0.1.10:8080,10.0.2.10:8080"]]]})
    );
}

#[test]
fn the_fast_path_is_one_update_or_one_insert_and_one_group_mutate() {
    let web = |backends: &[(&str, &str)]| {
        svc(
            "default/web",
            vpc("vpc1"),
            Some("10.96.0.10"),
            None,
            backends,
        )
    };
    let owners = |keys: &[&str]| -> std::collections::BTreeSet<String> {
        keys.iter()
            .map(|k| format!("YusurService/{k}/uid-{}", k.replace('/', "-")))
            .collect()
    };
    let mut db = fresh(&build_desired(&lab(vec![web(&[("10.0.1.10", "vpc1")])])));
    // A changed backend: one update of one load balancer.
    let after = web(&[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")]);
    let ops = cluster_ip_delta(
        std::slice::from_ref(&after),
        &owners(&["default/web"]),
        &db.current(),
    )
    .unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["op"], "update");
    db.transact(&ops).unwrap();
    // A new service: its load balancer and one insert into vpc1's group.
    let new = svc("default/api", vpc("vpc1"), Some("10.96.0.11"), None, &[]);
    let ops = cluster_ip_delta(
        std::slice::from_ref(&new),
        &owners(&["default/api"]),
        &db.current(),
    )
    .unwrap();
    let kinds: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["insert", "mutate"]);
    db.transact(&ops).unwrap();
    let both = build_desired(&lab(vec![after.clone(), new.clone()]));
    assert!(diff(&both, &db.current(), 100).is_empty());
    // Removed: the group reference and the row go.
    let ops = cluster_ip_delta(&[], &owners(&["default/api"]), &db.current()).unwrap();
    let kinds: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["mutate", "delete"]);
    db.transact(&ops).unwrap();
    assert!(diff(&build_desired(&lab(vec![after])), &db.current(), 100).is_empty());
    // An EIP service is not for the fast path.
    let eip = svc(
        "default/e",
        vpc("vpc1"),
        Some("10.96.0.12"),
        Some("198.18.0.100"),
        &[],
    );
    assert!(cluster_ip_delta(&[eip], &owners(&["default/e"]), &db.current()).is_none());
}

#[test]
fn a_removed_service_deletes_its_root_rows_and_drops_its_routes_through_the_router() {
    let a = build_desired(&lab(vec![svc(
        "default/m",
        multi(&["vpc1", "vpc2"]),
        None,
        Some("198.18.0.101"),
        &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
    )]));
    let b = build_desired(&lab(vec![]));
    let mut db = fresh(&a);
    let p = converge(&mut db, &b, 100);
    let ops: Vec<&Value> = p.transactions.iter().flatten().collect();
    // Non-root rows (routes, ports) are never deleted directly.
    for op in &ops {
        if op["op"] == "delete" {
            assert!(
                matches!(
                    op["table"].as_str(),
                    Some(
                        "Logical_Switch"
                            | "Logical_Router"
                            | "Load_Balancer"
                            | "Load_Balancer_Group"
                    )
                ),
                "{op}"
            );
        }
    }
    assert!(
        ops.iter()
            .any(|op| op["op"] == "delete" && op["table"] == "Load_Balancer")
    );
    assert_eq!(db.canonical(), fresh(&b).canonical());
}

#[test]
fn a_port_moving_to_another_switch_is_moved_in_one_transaction() {
    let a = lab(vec![]);
    let mut b = a.clone();
    b.ports
        .iter_mut()
        .find(|p| p.name == "default_c13")
        .unwrap()
        .subnet = "vpc1-subnet2".into();
    let (da, db_) = (build_desired(&a), build_desired(&b));
    let mut db = fresh(&da);
    // Even one op per transaction: the two switch updates are one unit.
    let p = converge(&mut db, &db_, 1);
    assert_eq!(p.transactions.len(), 1, "{:?}", p.transactions);
    assert_eq!(db.canonical(), fresh(&db_).canonical());
}

#[test]
fn a_port_moving_from_a_removed_subnet_survives() {
    let a = lab(vec![]);
    let mut b = a.clone();
    b.subnets.retain(|s| s.name != "vpc1-subnet3");
    b.ports
        .iter_mut()
        .find(|p| p.name == "default_c13")
        .unwrap()
        .subnet = "vpc1-subnet2".into();
    let (da, db_) = (build_desired(&a), build_desired(&b));
    let mut db = fresh(&da);
    converge(&mut db, &db_, 1);
    assert_eq!(db.canonical(), fresh(&db_).canonical());
}

#[test]
fn rows_without_the_ferry_key_are_never_touched() {
    let d = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[],
    )]));
    let mut db = Db::default();
    let foreign = json!([
        {"op": "insert", "table": "Logical_Switch", "uuid": "00000000-0000-4000-8000-000000000001",
         "row": {"name": "vpc1-subnet1", "external_ids": ["map", [["owner", "someone"]]]}},
        {"op": "insert", "table": "Load_Balancer", "uuid": "00000000-0000-4000-8000-000000000002",
         "row": {"name": "theirs", "vips": ["map", [["10.96.0.10:80", "1.2.3.4:80"]]]}},
        {"op": "insert", "table": "Load_Balancer_Group", "uuid": "00000000-0000-4000-8000-000000000003",
         "row": {"name": "their-group"}}
    ]);
    db.transact(foreign.as_array().unwrap()).unwrap();
    converge(&mut db, &d, 5);
    converge(&mut db, &build_desired(&NetworkState::default()), 5);
    let left: Vec<&str> = db.rows.keys().map(String::as_str).collect();
    assert_eq!(
        left,
        [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-000000000003"
        ]
    );
}

#[test]
fn a_stale_group_still_used_by_a_foreign_switch_is_left_alone() {
    let d = build_desired(&lab(vec![]));
    let mut db = fresh(&d);
    let group = db
        .rows
        .values()
        .find(|r| r.columns["name"] == "ferry-vpc2")
        .unwrap()
        .uuid
        .clone();
    db.transact(&[json!({"op": "insert", "table": "Logical_Switch", "uuid": "00000000-0000-4000-8000-000000000009",
        "row": {"name": "theirs", "load_balancer_group": ["uuid", group]}})]).unwrap();
    let mut without_vpc2 = lab(vec![]);
    without_vpc2.vpcs.retain(|v| v != "vpc2");
    without_vpc2.subnets.retain(|s| s.vpc != "vpc2");
    without_vpc2.ports.retain(|p| p.subnet != "vpc2-subnet1");
    let p = diff(&build_desired(&without_vpc2), &db.current(), 100);
    db.apply(&p).unwrap();
    assert!(db.rows.contains_key(&group));
}

#[test]
fn comparison_is_semantic_one_element_sets_order_of_sets_and_maps() {
    let d = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1")],
    )]));
    let mut db = fresh(&d);
    // Rewrite every row as another writer (or the mirror) might: bare atoms for
    // one-element sets, reversed sets and maps, absent empty columns.
    for r in db.rows.values_mut() {
        let cols: Map<String, Value> = r
            .columns
            .iter()
            .filter_map(|(c, v)| {
                let items = v.get(1).and_then(Value::as_array);
                match (v.get(0).and_then(Value::as_str), items) {
                    (Some("set" | "map"), Some(items)) if items.is_empty() => None,
                    (Some("set"), Some(items)) if items.len() == 1 => {
                        Some((c.clone(), items[0].clone()))
                    }
                    (Some(t @ ("set" | "map")), Some(items)) => {
                        let mut rev = items.clone();
                        rev.reverse();
                        Some((c.clone(), json!([t, rev])))
                    }
                    _ => Some((c.clone(), v.clone())),
                }
            })
            .collect();
        r.columns = cols;
    }
    assert!(diff(&d, &db.current(), 10).is_empty());
}

#[test]
fn duplicate_owned_rows_are_reduced_to_one() {
    let d = build_desired(&lab(vec![svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[],
    )]));
    let mut db = fresh(&d);
    let lb = db
        .rows
        .values()
        .find(|r| r.table == "Load_Balancer")
        .unwrap()
        .clone();
    db.transact(&[json!({"op": "insert", "table": "Load_Balancer", "uuid": "ffffffff-0000-4000-8000-000000000000", "row": lb.columns})]).unwrap();
    converge(&mut db, &d, 10);
    assert_eq!(
        db.rows
            .values()
            .filter(|r| r.table == "Load_Balancer")
            .count(),
        1
    );
}

#[test]
fn plan_returns_the_first_transaction_for_callers_that_re_read() {
    let services: Vec<ServiceState> = (0..20)
        .map(|i| {
            svc(
                &format!("default/s{i}"),
                vpc("vpc2"),
                Some(&format!("10.96.2.{i}")),
                None,
                &[],
            )
        })
        .collect();
    let d = build_desired(&lab(services));
    let mut db = Db::default();
    let mut rounds = 0;
    loop {
        let ops = plan(&d, &db.current(), 8);
        if ops.is_empty() {
            break;
        }
        assert!(ops.len() <= 8 || rounds > 2, "LB transactions are bounded");
        db.transact(&ops).unwrap();
        rounds += 1;
        assert!(rounds < 50);
    }
    assert_eq!(db.canonical(), fresh(&d).canonical());
}

// === properties ===

/// Random fast-path changes to services (`(index, what, n)`: remove, truncate backends,
/// add a UDP port, add a new service): the keys of the services touched.
fn change_services(b: &mut NetworkState, changes: &[(usize, u8, u8)]) -> BTreeSet<String> {
    let mut touched = BTreeSet::new();
    for &(i, what, n) in changes {
        match what {
            0 if i < b.services.len() => {
                touched.insert(b.services.remove(i).key);
            }
            1 if i < b.services.len() => {
                b.services[i].backends.truncate(n as usize);
                touched.insert(b.services[i].key.clone());
            }
            2 if i < b.services.len() => {
                b.services[i].ports.push(ServicePort {
                    node_port: None,
                    port: 8000 + u16::from(n),
                    target_port: 80,
                    protocol: Protocol::Udp,
                });
                touched.insert(b.services[i].key.clone());
            }
            _ => {
                let mut s = svc(
                    &format!("default/new-{i}-{n}"),
                    vpc(["vpc1", "vpc2", "ovn-cluster", "vpc1"][n as usize]),
                    Some(&format!("10.96.1.{}", i * 4 + n as usize)),
                    None,
                    &[],
                );
                s.backends = vec![Backend {
                    node: None,
                    ip: std::net::Ipv4Addr::new(10, 0, 1, 50 + n),
                    vpc: "vpc1".into(),
                }];
                touched.insert(s.key.clone());
                b.services.retain(|x| x.key != s.key);
                b.services.push(s);
            }
        }
    }
    touched
}

/// Random fast-path changes to workload ports (`(index, what, n)`: remove, move, new MAC,
/// add a new port): the names of the ports touched.
fn change_ports(b: &mut NetworkState, changes: &[(usize, u8, u8)]) -> BTreeSet<String> {
    let subnets = [
        "vpc1-subnet1",
        "vpc1-subnet2",
        "vpc2-subnet1",
        "ovn-default",
    ];
    let mut touched = BTreeSet::new();
    for &(i, what, n) in changes {
        match what {
            0 if i < b.ports.len() => {
                touched.insert(b.ports.remove(i).name);
            }
            1 if i < b.ports.len() => {
                b.ports[i].subnet = subnets[n as usize].into();
                touched.insert(b.ports[i].name.clone());
            }
            2 if i < b.ports.len() => {
                b.ports[i].mac = format!("0a:00:00:00:00:{n:02x}");
                touched.insert(b.ports[i].name.clone());
            }
            _ => {
                let name = format!("default_new-{i}-{n}");
                b.ports.retain(|p| p.name != name);
                b.ports.push(port(
                    &name,
                    subnets[n as usize],
                    &format!("0a:00:00:00:01:{i:02x}"),
                    &format!("10.0.1.{}", 100 + i),
                ));
                touched.insert(name);
            }
        }
    }
    touched
}

/// `port_delta`'s input: each touched port's state in `a` and in `b`.
fn port_pairs(
    a: &NetworkState,
    b: &NetworkState,
    touched: &BTreeSet<String>,
) -> Vec<(Option<PortState>, Option<PortState>)> {
    let find = |st: &NetworkState, n: &String| st.ports.iter().find(|p| &p.name == n).cloned();
    touched.iter().map(|n| (find(a, n), find(b, n))).collect()
}

fn arb_state() -> impl Strategy<Value = NetworkState> {
    let svc_strategy = (
        0u8..6,
        0u8..3,
        proptest::collection::vec((0u8..4, 0u8..2), 0..4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    (
        proptest::collection::vec(svc_strategy, 0..6),
        proptest::collection::vec(0u8..4, 3),
        any::<bool>(),
        any::<bool>(),
        0u8..128,
    )
        .prop_map(|(svcs, port_subnets, drop_subnet3, drop_vpc2, socket_lb)| {
            let services = svcs
                .into_iter()
                .enumerate()
                .map(|(i, (n, v, backends, eip, is_multi, affinity))| {
                    let scope = if is_multi {
                        multi(&["vpc1", "vpc2"])
                    } else {
                        vpc(["vpc1", "vpc2", "ovn-cluster"][v as usize])
                    };
                    let mut s = svc(
                        &format!("default/s{i}-{n}"),
                        scope,
                        Some(&format!("10.96.0.{}", 10 + i)),
                        eip.then(|| format!("198.18.0.{}", 100 + i)).as_deref(),
                        &[],
                    );
                    s.affinity_timeout = affinity.then_some(30);
                    s.backends = backends
                        .into_iter()
                        .map(|(b, v)| Backend {
                            node: None,
                            ip: std::net::Ipv4Addr::new(10, 0, 1, 10 + b + 10 * v),
                            vpc: ["vpc1", "vpc2"][v as usize].into(),
                        })
                        .collect();
                    s
                })
                .collect();
            let mut state = lab(services);
            let subnets = ["vpc1-subnet1", "vpc1-subnet2", "vpc1-subnet3", "nowhere"];
            for (p, s) in state.ports.iter_mut().skip(2).zip(port_subnets) {
                p.subnet = subnets[s as usize].into();
            }
            if drop_subnet3 {
                state.subnets.retain(|s| s.name != "vpc1-subnet3");
            }
            if drop_vpc2 {
                state.vpcs.retain(|v| v != "vpc2");
            }
            // Any subset of the ports in the socket-LB port groups (the external client's
            // and the unknown subnet's included: the builder must leave them out).
            state.socket_lb_ports = state
                .ports
                .iter()
                .enumerate()
                .filter(|(i, _)| socket_lb & (1 << i) != 0)
                .map(|(_, p)| p.name.clone())
                .collect();
            state
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// diff(A -> B) applied to A gives what B alone gives, every transaction valid on its
    /// own whatever the bound, and a second diff is empty.
    #[test]
    fn diff_from_a_to_b_gives_b_and_is_idempotent(a in arb_state(), b in arb_state(), max in 1usize..40) {
        let (da, db_) = (build_desired(&a), build_desired(&b));
        let mut via_a = Db::default();
        via_a.apply(&diff(&da, &[], max)).map_err(TestCaseError::fail)?;
        prop_assert!(diff(&da, &via_a.current(), max).is_empty());
        // What the applier plans from indexed rows is what whole rows plan.
        let cur = via_a.current();
        prop_assert_eq!(diff_indexed(&db_, &cur, max, &Fence::default()), diff(&db_, &cur, max));
        via_a.apply(&diff(&db_, &via_a.current(), max)).map_err(TestCaseError::fail)?;
        prop_assert!(diff(&db_, &via_a.current(), max).is_empty());
        let mut direct = Db::default();
        direct.apply(&diff(&db_, &[], usize::MAX)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(via_a.canonical(), direct.canonical());
    }

    /// The builder never panics and never produces a dangling reference or two rows with
    /// one key, whatever the input.
    #[test]
    fn desired_rows_are_consistent(a in arb_state()) {
        let d = build_desired(&a);
        let keys: std::collections::BTreeSet<(&str, &str)> = d.rows.iter().map(|r| (r.table, r.key.as_str())).collect();
        prop_assert_eq!(keys.len(), d.rows.len());
        for r in &d.rows {
            for v in r.columns.values() {
                let text = v.to_string();
                for (t, k) in keys.iter() {
                    let _ = (t, k);
                }
                if text.contains("\"ref\"") {
                    for item in v[1].as_array().into_iter().flatten().chain(std::iter::once(v)) {
                        if item.get(0) == Some(&json!("ref")) {
                            let target = (item[1].as_str().unwrap(), item[2].as_str().unwrap());
                            prop_assert!(keys.contains(&target), "dangling {:?}", target);
                        }
                    }
                }
            }
        }
    }

    /// The fast path: converging a few changed cluster-IP services with
    /// `cluster_ip_delta` on top of A gives exactly what a full diff to B gives.
    #[test]
    fn cluster_ip_delta_on_a_gives_b(a in arb_state(), changes in proptest::collection::vec((0usize..8, 0u8..4, 0u8..4), 1..4)) {
        let mut b = a.clone();
        let touched = change_services(&mut b, &changes);
        // Only services with no EIP before or after take the fast path.
        let eip = |st: &NetworkState, k: &String| st.services.iter().any(|s| &s.key == k && s.eip.is_some());
        prop_assume!(touched.iter().all(|k| !eip(&a, k) && !eip(&b, k)));
        let owners: std::collections::BTreeSet<String> = a.services.iter().chain(&b.services)
            .filter(|s| touched.contains(&s.key))
            .map(|s| format!("YusurService/{}/{}", s.key, s.uid))
            .collect();
        let changed: Vec<ServiceState> = b.services.iter().filter(|s| touched.contains(&s.key)).cloned().collect();
        let mut db = fresh(&build_desired(&a));
        let Some(ops) = cluster_ip_delta(&changed, &owners, &db.current()) else {
            // Refused: a VPC without a group in the NB, or a service the full build refuses.
            let refused = build_desired(&b).errors;
            let unknown_vpc = |s: &ServiceState| match &s.scope {
                ServiceScope::Vpc(v) => !a.vpcs.contains(v),
                ServiceScope::MultiVpc(vs) => vs.iter().any(|v| !a.vpcs.contains(v)),
            };
            let explained = changed.iter().any(|s| unknown_vpc(s) || refused.iter().any(|e| e.object() == s.key));
            prop_assert!(explained, "fast path refused without a reason");
            return Ok(());
        };
        db.transact(&ops).map_err(TestCaseError::fail)?;
        let rest = diff(&build_desired(&b), &db.current(), usize::MAX);
        prop_assert!(rest.is_empty(), "left after the delta: {:?}", rest.transactions);
    }

    /// The ports' fast path: adding, removing, moving and readdressing workload ports with
    /// `port_delta` on top of A gives exactly what a full diff to B gives.
    #[test]
    fn port_delta_on_a_gives_b(a in arb_state(), changes in proptest::collection::vec((0usize..8, 0u8..4, 0u8..4), 1..5)) {
        let mut b = a.clone();
        let touched = change_ports(&mut b, &changes);
        let pairs = port_pairs(&a, &b, &touched);
        let mut db = fresh(&build_desired(&a));
        let Some(ops) = port_delta(&pairs, &db.current()) else {
            // Refused: a port on a switch the NB does not have.
            let built: Vec<String> = db.current().iter().filter(|r| r.table == "Logical_Switch")
                .filter_map(|r| r.columns.get("name")?.as_str().map(String::from)).collect();
            prop_assert!(pairs.iter().any(|(_, new)| new.as_ref().is_some_and(|p| !built.contains(&p.subnet))));
            return Ok(());
        };
        db.transact(&ops).map_err(TestCaseError::fail)?;
        // The socket-LB port groups follow full convergences only (the controller's
        // design: a lagging member keeps conntrack, which is always correct).
        let rest: Vec<_> = diff(&build_desired(&b), &db.current(), usize::MAX)
            .transactions
            .into_iter()
            .flatten()
            .filter(|op| op["table"] != "Port_Group" && op["table"] != "ACL")
            .collect();
        prop_assert!(rest.is_empty(), "left after the delta: {:?}", rest);
    }
}

/// A pod joining the socket-LB group gets its port and its membership even at one
/// operation per transaction: the group's update comes after the switch holds the port
/// (a weak reference to a port not yet inserted would be dropped), and a member that goes
/// leaves the group with its port.
#[test]
fn a_socket_lb_member_joins_after_its_port_exists_and_leaves_with_it() {
    let mut a = lab(vec![]);
    a.socket_lb_ports = ["default_b11".to_string()].into();
    let mut b = a.clone();
    b.ports.push(port(
        "default_new",
        "vpc1-subnet2",
        "0a:00:00:01:02:0b",
        "10.0.2.11",
    ));
    b.socket_lb_ports.insert("default_new".into());
    let (da, db_) = (build_desired(&a), build_desired(&b));
    let mut db = fresh(&da);
    let p = converge(&mut db, &db_, 1);
    assert_eq!(db.canonical(), fresh(&db_).canonical());
    let tables: Vec<Vec<&str>> = p
        .transactions
        .iter()
        .map(|t| {
            let mut ts: Vec<&str> = t.iter().map(|op| op["table"].as_str().unwrap()).collect();
            ts.sort();
            ts
        })
        .collect();
    assert_eq!(
        tables,
        [
            vec!["Logical_Switch", "Logical_Switch_Port"],
            vec!["Port_Group"]
        ],
        "{:?}",
        p.transactions
    );
    // The port goes: its switch's transaction alone already takes it out of the group
    // (a weak reference), before the group's own update.
    let p = diff(&da, &db.current(), 1);
    let new_uuid = db
        .current()
        .into_iter()
        .find(|r| r.columns.get("name") == Some(&json!("default_new")))
        .unwrap()
        .uuid;
    db.transact(&p.transactions[0]).unwrap();
    let group = db
        .current()
        .into_iter()
        .find(|r| r.table == "Port_Group")
        .unwrap();
    assert!(
        !group.columns["ports"].to_string().contains(&new_uuid),
        "{:?}",
        group.columns
    );
    converge(&mut db, &da, 1);
    assert_eq!(db.canonical(), fresh(&da).canonical());
}

// === the fence: fast paths' rows survive a diff from an older snapshot ===

/// The `ferry.io/owner` of a service's rows.
fn owner(s: &ServiceState) -> String {
    scenario::service_owner(s)
}

/// The rows of `db` a fence covers by their own `external_ids`, by uuid.
fn fenced_rows(db: &Db, fence: &Fence) -> BTreeSet<String> {
    let id = |r: &CurrentRow, k: &str| -> Option<String> {
        r.columns
            .get("external_ids")?
            .get(1)?
            .as_array()?
            .iter()
            .find(|p| p[0] == k)
            .and_then(|p| p[1].as_str().map(String::from))
    };
    db.rows
        .values()
        .filter(|r| {
            id(r, OWNER).is_some_and(|o| fence.owners.contains(&o))
                || id(r, KEY).is_some_and(|k| fence.keys.contains(&k))
        })
        .map(|r| r.uuid.clone())
        .collect()
}

/// Every (referrer, column, fenced row) reference in `db`.
fn memberships(db: &Db, fenced: &BTreeSet<String>) -> BTreeSet<(String, String, String)> {
    fn uuids(v: &Value, out: &mut Vec<String>) {
        match v.as_array().map(Vec::as_slice) {
            Some([t, Value::String(u)]) if t == "uuid" => out.push(u.clone()),
            Some(items) => items.iter().for_each(|x| uuids(x, out)),
            None => {}
        }
    }
    let mut out = BTreeSet::new();
    for r in db.rows.values() {
        for (c, v) in &r.columns {
            let mut us = Vec::new();
            uuids(v, &mut us);
            for u in us.into_iter().filter(|u| fenced.contains(u)) {
                out.insert((r.uuid.clone(), c.clone(), u));
            }
        }
    }
    out
}

/// What a fenced plan must leave: every fenced row of `before` byte for byte in `after`,
/// no fenced row more, and every reference to a fenced row as it was, except in rows the
/// plan inserted, which reference a fenced row only where `d` does.
fn check_fenced(before: &Db, after: &Db, fence: &Fence, d: &Desired) -> Result<(), String> {
    let fenced = fenced_rows(before, fence);
    for u in &fenced {
        if after.rows.get(u) != before.rows.get(u) {
            return Err(format!("fenced row {u} changed: {:?}", after.rows.get(u)));
        }
    }
    if fenced_rows(after, fence) != fenced {
        return Err("a fenced row came or went".into());
    }
    let (was, is) = (memberships(before, &fenced), memberships(after, &fenced));
    if let Some(lost) = was.difference(&is).next() {
        return Err(format!("membership lost: {lost:?}"));
    }
    let key = |db: &Db, u: &str| db.rows.get(u).and_then(|r| owned_key(&r.table, &r.columns));
    for (r, c, u) in is.difference(&was) {
        if before.rows.contains_key(r) {
            return Err(format!("membership gained by an existing row: {r} {c} {u}"));
        }
        let (Some(rk), Some(uk)) = (key(after, r), key(before, u)) else {
            return Err(format!("unkeyed membership {r} {c} {u}"));
        };
        let table = &after.rows[u].table;
        let wanted = d.rows.iter().any(|row| {
            row.key == rk
                && row.columns.get(c).is_some_and(|v| {
                    v.to_string()
                        .contains(&json!(["ref", table, uk]).to_string())
                })
        });
        if !wanted {
            return Err(format!(
                "new row {rk} references fenced {uk} in {c} unasked"
            ));
        }
    }
    Ok(())
}

/// Applies `diff_fenced` (every transaction on its own), checks [`check_fenced`] and that a
/// second call is empty; the plan.
fn converge_fenced(db: &mut Db, d: &Desired, max: usize, fence: &Fence) -> Plan {
    let before = db.clone();
    let p = diff_fenced(d, &db.current(), max, fence);
    assert_eq!(
        diff_indexed(d, &db.current(), max, fence),
        p,
        "indexed rows"
    );
    db.apply(&p).unwrap_or_else(|e| panic!("{e}"));
    check_fenced(&before, db, fence, d).unwrap_or_else(|e| panic!("{e}"));
    let again = diff_fenced(d, &db.current(), max, fence);
    assert!(again.is_empty(), "not idempotent: {:?}", again.transactions);
    p
}

fn all_ops(p: &Plan) -> Vec<&Value> {
    p.transactions.iter().flatten().collect()
}

/// Services owners for `cluster_ip_delta`.
fn owners_of(services: &[&ServiceState]) -> BTreeSet<String> {
    services.iter().map(|s| owner(s)).collect()
}

/// The snapshot's network: `web` and `api` in vpc1, and a change the NB does not have yet
/// (api's second backend, port `default_c13` moved to subnet2).
fn snapshot_parts() -> (ServiceState, ServiceState) {
    let web = svc(
        "default/web",
        vpc("vpc1"),
        Some("10.96.0.10"),
        None,
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    );
    let api = svc(
        "default/api",
        vpc("vpc1"),
        Some("10.96.0.11"),
        None,
        &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
    );
    (web, api)
}

/// The NB before the full pass: `snapshot` without its pending changes (api with one
/// backend, `default_c13` still on subnet3).
fn nb_before(snapshot: &NetworkState) -> Db {
    let mut old = snapshot.clone();
    for s in &mut old.services {
        if s.key == "default/api" {
            s.backends.truncate(1);
        }
    }
    for p in &mut old.ports {
        if p.name == "default_c13" {
            p.subnet = "vpc1-subnet3".into();
        }
    }
    fresh(&build_desired(&old))
}

fn with_pending(mut st: NetworkState) -> NetworkState {
    st.ports
        .iter_mut()
        .find(|p| p.name == "default_c13")
        .unwrap()
        .subnet = "vpc1-subnet2".into();
    st
}

#[test]
fn fence_a_service_changed_by_a_fast_path_keeps_its_new_backends() {
    let (web, api) = snapshot_parts();
    let snapshot = with_pending(lab(vec![web.clone(), api.clone()]));
    let mut db = nb_before(&snapshot);
    // After the snapshot: web's second backend dies, the fast path writes it.
    let mut web_now = web.clone();
    web_now.backends.truncate(1);
    let ops = cluster_ip_delta(
        std::slice::from_ref(&web_now),
        &owners_of(&[&web]),
        &db.current(),
    )
    .unwrap();
    db.transact(&ops).unwrap();
    let fence = Fence {
        owners: owners_of(&[&web]),
        ..Fence::default()
    };
    let d = build_desired(&snapshot);
    // Without the fence the dead backend would be put back.
    assert!(all_ops(&diff(&d, &db.current(), 100)).iter().any(|op| {
        op["op"] == "update"
            && op["row"]["vips"]
                .to_string()
                .contains("10.0.1.10:8080,10.0.2.10:8080")
            && op["row"]["vips"].to_string().contains("10.96.0.10")
    }));
    let p = converge_fenced(&mut db, &d, 100, &fence);
    // The rest converged in the same plan: api's backend and c13's move.
    assert_eq!(p.transactions.len(), 1);
    let expected = with_pending(lab(vec![web_now, api]));
    assert_eq!(db.canonical(), fresh(&build_desired(&expected)).canonical());
}

#[test]
fn fence_a_service_added_by_a_fast_path_keeps_its_lb_and_group_membership() {
    let (web, api) = snapshot_parts();
    let snapshot = with_pending(lab(vec![web.clone(), api.clone()]));
    let mut db = nb_before(&snapshot);
    let new = svc(
        "default/new",
        vpc("vpc1"),
        Some("10.96.0.12"),
        None,
        &[("10.0.1.10", "vpc1")],
    );
    let ops = cluster_ip_delta(
        std::slice::from_ref(&new),
        &owners_of(&[&new]),
        &db.current(),
    )
    .unwrap();
    db.transact(&ops).unwrap();
    let fence = Fence {
        owners: owners_of(&[&new]),
        ..Fence::default()
    };
    let d = build_desired(&snapshot);
    // Without the fence the new service's LB would go.
    assert!(
        all_ops(&diff(&d, &db.current(), 100))
            .iter()
            .any(|op| op["op"] == "delete" && op["table"] == "Load_Balancer")
    );
    let p = converge_fenced(&mut db, &d, 100, &fence);
    // The group differs only by the fenced LB: no operation on it.
    assert!(
        all_ops(&p)
            .iter()
            .all(|op| op["table"] != "Load_Balancer_Group" && op["op"] != "delete"),
        "{:?}",
        p.transactions
    );
    let expected = with_pending(lab(vec![web, api, new]));
    assert_eq!(db.canonical(), fresh(&build_desired(&expected)).canonical());
}

#[test]
fn fence_a_service_removed_by_a_fast_path_is_not_recreated_nor_put_back_in_its_group() {
    let (web, api) = snapshot_parts();
    let snapshot = with_pending(lab(vec![web.clone(), api.clone()]));
    let mut db = nb_before(&snapshot);
    let ops = cluster_ip_delta(&[], &owners_of(&[&web]), &db.current()).unwrap();
    db.transact(&ops).unwrap();
    let fence = Fence {
        owners: owners_of(&[&web]),
        ..Fence::default()
    };
    let d = build_desired(&snapshot);
    assert!(
        all_ops(&diff(&d, &db.current(), 100))
            .iter()
            .any(|op| op["op"] == "insert" && op["table"] == "Load_Balancer")
    );
    let p = converge_fenced(&mut db, &d, 100, &fence);
    assert!(
        all_ops(&p)
            .iter()
            .all(|op| op["table"] != "Load_Balancer_Group" && op["op"] != "insert"),
        "{:?}",
        p.transactions
    );
    let expected = with_pending(lab(vec![api]));
    assert_eq!(db.canonical(), fresh(&build_desired(&expected)).canonical());
}

#[test]
fn fence_pod_ports_added_removed_or_moved_by_the_port_fast_path_stay_as_the_nb_has_them() {
    let (web, api) = snapshot_parts();
    let mut snapshot = with_pending(lab(vec![web, api]));
    // default_b12 is in the socket-LB group in the snapshot: its removal must not bring
    // it back there either.
    snapshot.socket_lb_ports = ["default_b11".to_string(), "default_b12".to_string()].into();
    let mut db = nb_before(&snapshot);
    let mut now = snapshot.clone();
    now.ports.retain(|p| p.name != "default_b12");
    now.ports.push(port(
        "default_new",
        "vpc1-subnet1",
        "0a:00:00:01:01:0b",
        "10.0.1.11",
    ));
    now.ports
        .iter_mut()
        .find(|p| p.name == "default_b21")
        .unwrap()
        .subnet = "ovn-default".into();
    let touched: BTreeSet<String> = ["default_b12", "default_new", "default_b21"]
        .map(String::from)
        .into();
    let ops = port_delta(&port_pairs(&snapshot, &now, &touched), &db.current()).unwrap();
    db.transact(&ops).unwrap();
    let fence = Fence {
        keys: touched.iter().map(|n| port_key(n)).collect(),
        ..Fence::default()
    };
    let d = build_desired(&snapshot);
    let plain = diff(&d, &db.current(), 1);
    assert!(
        all_ops(&plain)
            .iter()
            .any(|op| op["table"] == "Logical_Switch_Port" && op["op"] == "insert")
    );
    let p = converge_fenced(&mut db, &d, 1, &fence);
    assert!(
        all_ops(&p)
            .iter()
            .all(|op| op["table"] != "Logical_Switch_Port"),
        "{:?}",
        p.transactions
    );
    // c13 still moved (a unit of two switches even at one op per transaction).
    assert_eq!(db.canonical(), fresh(&build_desired(&now)).canonical());
}

#[test]
fn fence_a_new_switch_references_a_fenced_port_only_if_the_nb_has_it() {
    let mut nb_state = lab(vec![]);
    nb_state.ports.push(port(
        "default_kept",
        "vpc1-subnet2",
        "0a:00:00:01:02:0c",
        "10.0.2.12",
    ));
    let mut db = fresh(&build_desired(&nb_state));
    // The snapshot has a new subnet with two ports the fast path wrote elsewhere or removed.
    let mut snapshot = nb_state.clone();
    snapshot
        .subnets
        .push(subnet("vpc1-subnet4", "vpc1", "10.0.4.0/24", "10.0.4.1"));
    snapshot
        .ports
        .retain(|p| p.name != "default_kept" && p.name != "default_b12");
    snapshot.ports.push(port(
        "default_kept",
        "vpc1-subnet4",
        "0a:00:00:01:04:0c",
        "10.0.4.12",
    ));
    snapshot.ports.push(port(
        "default_b12",
        "vpc1-subnet4",
        "0a:00:00:01:04:0d",
        "10.0.4.13",
    ));
    let ops = port_delta(
        &[(
            nb_state
                .ports
                .iter()
                .find(|p| p.name == "default_b12")
                .cloned(),
            None,
        )],
        &db.current(),
    )
    .unwrap();
    db.transact(&ops).unwrap();
    let kept = db
        .rows
        .values()
        .find(|r| r.columns.get("name") == Some(&json!("default_kept")))
        .unwrap()
        .uuid
        .clone();
    let fence = Fence {
        keys: [port_key("default_kept"), port_key("default_b12")].into(),
        ..Fence::default()
    };
    let p = converge_fenced(&mut db, &build_desired(&snapshot), 100, &fence);
    let insert = all_ops(&p)
        .into_iter()
        .find(|op| op["op"] == "insert" && op["row"]["name"] == "vpc1-subnet4")
        .unwrap();
    let ports = insert["row"]["ports"].to_string();
    assert!(ports.contains(&kept), "{ports}");
    // Only the router's peer port is new, with the existing fenced port.
    assert_eq!(insert["row"]["ports"][1].as_array().unwrap().len(), 2);
    assert!(
        all_ops(&p)
            .iter()
            .all(|op| op["row"]["name"] != "default_b12" && op["row"]["name"] != "default_kept")
    );
}

#[test]
fn fence_a_stale_group_holding_a_fast_path_service_stays() {
    // The snapshot no longer has vpc2; a fast path added a service there since.
    let nb_state = lab(vec![]);
    let mut db = fresh(&build_desired(&nb_state));
    let new = svc(
        "default/in-vpc2",
        vpc("vpc2"),
        Some("10.96.0.13"),
        None,
        &[("10.0.1.20", "vpc2")],
    );
    let ops = cluster_ip_delta(
        std::slice::from_ref(&new),
        &owners_of(&[&new]),
        &db.current(),
    )
    .unwrap();
    db.transact(&ops).unwrap();
    let mut snapshot = nb_state.clone();
    snapshot.vpcs.retain(|v| v != "vpc2");
    snapshot.subnets.retain(|s| s.vpc != "vpc2");
    snapshot.ports.retain(|p| p.subnet != "vpc2-subnet1");
    let fence = Fence {
        owners: owners_of(&[&new]),
        ..Fence::default()
    };
    converge_fenced(&mut db, &build_desired(&snapshot), 3, &fence);
    let names: Vec<&Value> = db
        .rows
        .values()
        .filter(|r| r.table == "Load_Balancer_Group" || r.table == "Logical_Switch")
        .map(|r| &r.columns["name"])
        .collect();
    assert!(names.contains(&&json!("ferry-vpc2")), "{names:?}");
    assert!(!names.contains(&&json!("vpc2-subnet1")), "{names:?}");
}

#[test]
fn fence_that_covers_nothing_is_the_plain_diff() {
    let (web, api) = snapshot_parts();
    let snapshot = with_pending(lab(vec![web, api]));
    let db = nb_before(&snapshot);
    let d = build_desired(&snapshot);
    let fence = Fence {
        owners: ["YusurService/default/gone/uid".to_string()].into(),
        keys: [
            port_key("default_gone"),
            "Load_Balancer_Group:ferry-vpc1".into(),
        ]
        .into(),
    };
    assert!(!fence.is_empty());
    assert_eq!(
        diff_fenced(&d, &db.current(), 4, &fence),
        diff(&d, &db.current(), 4)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A full diff to a snapshot A over an NB that fast paths changed after it (from B)
    /// leaves every row they wrote byte for byte, and their membership in every reference
    /// column; a second diff with the same fence is empty; a fence covering nothing the
    /// fast paths wrote gives the plain diff.
    #[test]
    fn diff_fenced_leaves_what_fast_paths_wrote(
        a in arb_state(),
        b in arb_state(),
        svc_changes in proptest::collection::vec((0usize..8, 0u8..4, 0u8..4), 1..4),
        port_changes in proptest::collection::vec((0usize..8, 0u8..4, 0u8..4), 1..4),
        max in 1usize..40,
    ) {
        let mut db = fresh(&build_desired(&b));
        let mut fence = Fence::default();
        let mut b2 = b.clone();
        let touched = change_services(&mut b2, &svc_changes);
        let eip = |st: &NetworkState, k: &String| st.services.iter().any(|s| &s.key == k && s.eip.is_some());
        if touched.iter().all(|k| !eip(&b, k) && !eip(&b2, k)) {
            let owners: BTreeSet<String> = b.services.iter().chain(&b2.services)
                .filter(|s| touched.contains(&s.key))
                .map(owner)
                .collect();
            let changed: Vec<ServiceState> = b2.services.iter().filter(|s| touched.contains(&s.key)).cloned().collect();
            if let Some(ops) = cluster_ip_delta(&changed, &owners, &db.current()) {
                db.transact(&ops).map_err(TestCaseError::fail)?;
                fence.owners = owners;
            }
        }
        let mut b3 = b2.clone();
        let touched = change_ports(&mut b3, &port_changes);
        if let Some(ops) = port_delta(&port_pairs(&b2, &b3, &touched), &db.current()) {
            db.transact(&ops).map_err(TestCaseError::fail)?;
            fence.keys = touched.iter().map(|n| port_key(n)).collect();
        }
        let da = build_desired(&a);

        let before = db.clone();
        db.apply(&diff_fenced(&da, &db.current(), max, &fence)).map_err(TestCaseError::fail)?;
        check_fenced(&before, &db, &fence, &da).map_err(TestCaseError::fail)?;
        let again = diff_fenced(&da, &db.current(), max, &fence);
        prop_assert!(again.is_empty(), "not idempotent: {:?}", again.transactions);

        let elsewhere = Fence {
            owners: ["YusurService/default/elsewhere/uid".to_string()].into(),
            keys: [port_key("default_elsewhere")].into(),
        };
        prop_assert_eq!(diff_fenced(&da, &before.current(), max, &elsewhere), diff(&da, &before.current(), max));
    }
}
