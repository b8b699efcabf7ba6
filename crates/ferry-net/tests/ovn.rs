//! Against the real thing: ovsdb-server (NB and SB) and ovn-northd started in a temp dir
//! (the test kit's central OVN stack),
//! the plan for the lab (vpc1 and vpc2 both 10.0.1.0/24, one service per scenario) sent
//! with `ovsdb-client transact`, read back with `select`, and the logical pipeline checked
//! with `ovn-trace`. Deliberately not through Ferry's own client and applier (`ferry-nb`,
//! which `real_nb.rs` runs): `diff` must accept rows as a plain `select` returns them,
//! which no mirror has made canonical, and its transactions must stand on their own when
//! sent by another writer. Needs the OVN binaries: `cargo test -p ferry-net -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use ferry_net::*;
use ferry_testkit::ovn::TestOvn;
use serde_json::{Value, json};

/// NB, SB and `ovn-northd` (a central `ferry_ovn_stack::OvnStack` from the test kit),
/// stopped and their directory removed when dropped.
struct Ovn {
    stack: TestOvn,
}

impl Ovn {
    fn start() -> Ovn {
        let ovn = Ovn {
            stack: TestOvn::central().expect("NB, SB and ovn-northd"),
        };
        // Gateway routers and gateway ports need their chassis to exist in the SB.
        run(
            "ovn-sbctl",
            &[&ovn.db("sb"), "chassis-add", "ch1", "geneve", "127.0.0.1"],
        );
        ovn
    }

    fn sock(&self, db: &str) -> PathBuf {
        let p = self.stack.paths();
        if db == "nb" {
            p.nb_sock.clone()
        } else {
            p.sb_sock.clone()
        }
    }

    fn db(&self, db: &str) -> String {
        format!("--db=unix:{}", self.sock(db).display())
    }

    fn transact(&self, ops: &[Value]) -> Vec<Value> {
        let mut txn = vec![json!("OVN_Northbound")];
        txn.extend(ops.iter().cloned());
        let remote = format!("unix:{}", self.sock("nb").display());
        let out = run(
            "ovsdb-client",
            &["transact", &remote, &Value::Array(txn).to_string()],
        );
        let results: Vec<Value> = serde_json::from_str(&out).unwrap();
        for r in &results {
            assert!(
                r.get("error").is_none(),
                "transaction refused: {r}\nops: {}",
                serde_json::to_string_pretty(ops).unwrap()
            );
        }
        results
    }

    /// Every row of the tables Ferry writes, as a monitor mirror would hold them.
    fn current(&self) -> Vec<CurrentRow> {
        let tables: Vec<&str> = ferry_ovsdb::nb::TABLES.iter().map(|t| t.name).collect();
        let ops: Vec<Value> = tables
            .iter()
            .map(|t| json!({"op": "select", "table": t, "where": []}))
            .collect();
        let results = self.transact(&ops);
        let mut rows = Vec::new();
        for (t, r) in tables.iter().zip(results) {
            for mut row in r["rows"].as_array().unwrap().clone() {
                let cols = row.as_object_mut().unwrap();
                let uuid = cols.remove("_uuid").unwrap()[1]
                    .as_str()
                    .unwrap()
                    .to_string();
                cols.remove("_version");
                rows.push(CurrentRow {
                    table: t.to_string(),
                    uuid,
                    columns: cols.clone(),
                });
            }
        }
        rows
    }

    fn nbctl(&self, args: &[&str]) -> String {
        let mut a = vec![self.db("nb")];
        a.extend(args.iter().map(|s| s.to_string()));
        run(
            "ovn-nbctl",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    fn trace(&self, datapath: &str, flow: &str, lb_dst: Option<&str>) -> String {
        let mut a = vec![self.db("sb"), "--ct=new".to_string()];
        if let Some(d) = lb_dst {
            a.push(format!("--lb-dst={d}"));
        }
        a.push(datapath.to_string());
        a.push(flow.to_string());
        run(
            "ovn-trace",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }
}

fn tcp_flow(
    inport: &str,
    src_mac: &str,
    dst_mac: &str,
    src: &str,
    dst: &str,
    dport: u16,
) -> String {
    format!(
        "inport == \"{inport}\" && eth.src == {src_mac} && eth.dst == {dst_mac} && ip4.src == {src} && \
         ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.src == 33333 && tcp.dst == {dport}"
    )
}

/// The address of a router port in the desired state.
fn lrp_ip(d: &Desired, lrp: &str) -> String {
    let nets = &row(d, "Logical_Router_Port", lrp).columns["networks"];
    nets[1][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Delivered to `port`: the trace ends with an output to it.
fn delivered(trace: &str, port: &str) -> bool {
    trace.contains(&format!("output to \"{port}\""))
}

#[test]
#[ignore = "needs OVN binaries"]
fn the_four_scenarios_in_a_real_nb_traced_by_ovn_trace() {
    let state = lab(scenario_services());
    let d = build_desired(&state);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let ovn = Ovn::start();

    // Apply in small transactions, each sent on its own with no re-read in between.
    let p = diff(&d, &ovn.current(), 10);
    assert!(
        p.transactions.len() > 2,
        "bounded: {} transactions",
        p.transactions.len()
    );
    for t in &p.transactions {
        ovn.transact(t);
    }
    let again = diff(&d, &ovn.current(), 40);
    assert!(
        again.is_empty(),
        "second plan not empty: {:?}",
        again.transactions
    );
    assert_eq!(
        ovn.current()
            .iter()
            .filter(|r| owned_key(&r.table, &r.columns).is_some())
            .count(),
        d.rows.len(),
        "every desired row is in the NB, nothing was garbage collected"
    );

    let show = ovn.nbctl(&["show"]);
    for name in [
        "vpc1",
        "vpc2",
        "ovn-cluster",
        EIP_GATEWAY,
        SERVICE_GATEWAY,
        "vpc1-subnet1",
        "vpc2-subnet1",
        "subnet0",
        "external",
        "default_b21",
        "node_node1",
    ] {
        assert!(show.contains(name), "ovn-nbctl show lacks {name}:\n{show}");
    }
    let lbs = ovn.nbctl(&["lb-list"]);
    for vip in [
        "10.96.0.10:80",
        "10.96.0.20:80",
        "198.18.0.100:80",
        "198.18.0.101:80",
    ] {
        assert!(lbs.contains(vip), "lb-list lacks {vip}:\n{lbs}");
    }
    assert_eq!(
        ovn.nbctl(&[
            "get",
            "Logical_Router",
            SERVICE_GATEWAY,
            "options:lb_force_snat_ip"
        ])
        .trim(),
        "router_ip"
    );
    let lrp = ovn.nbctl(&["lrp-get-gateway-chassis", "vpc1-transit-vpc1"]);
    assert!(lrp.contains("ch1"), "{lrp}");
    ovn.nbctl(&["--wait=sb", "--timeout=30", "sync"]);

    let gw_mac = |lrp: &str| mac_from(lrp);
    // Scenario 1: a client in vpc1's third subnet to the cluster IP, load-balanced to b11.
    let t = ovn.trace(
        "vpc1-subnet3",
        &tcp_flow(
            "default_c13",
            "0a:00:00:01:03:0a",
            &gw_mac("vpc1-vpc1-subnet3"),
            "10.0.3.10",
            "10.96.0.10",
            80,
        ),
        Some("10.0.1.10:8080"),
    );
    assert!(
        delivered(&t, "default_b11") && t.contains("ct_lb"),
        "scenario 1:\n{t}"
    );
    let t = ovn.trace(
        "vpc1-subnet3",
        &tcp_flow(
            "default_c13",
            "0a:00:00:01:03:0a",
            &gw_mac("vpc1-vpc1-subnet3"),
            "10.0.3.10",
            "10.96.0.10",
            80,
        ),
        Some("10.0.2.10:8080"),
    );
    assert!(
        delivered(&t, "default_b12"),
        "scenario 1, second backend:\n{t}"
    );

    // Scenario 2: the node's interface on the join switch to the default VPC's service.
    let t = ovn.trace(
        "subnet0",
        &tcp_flow(
            "node_node1",
            "0a:00:00:64:00:02",
            &gw_mac("ovn-cluster-subnet0"),
            "100.64.0.2",
            "10.96.0.20",
            80,
        ),
        Some("10.16.0.10:8080"),
    );
    assert!(delivered(&t, "default_bd1"), "scenario 2:\n{t}");

    // Scenario 3: the outside client to the EIP, through eip-gateway into vpc1.
    let ext_mac = gw_mac("eip-gateway-external");
    let t = ovn.trace(
        "external",
        &tcp_flow(
            "ext_client",
            "0a:00:00:ee:00:fa",
            &ext_mac,
            "198.18.0.250",
            "198.18.0.100",
            80,
        ),
        Some("10.0.1.10:8080"),
    );
    assert!(delivered(&t, "default_b11"), "scenario 3:\n{t}");

    // Scenario 4: the outside client to the multi-VPC EIP reaches backends in both VPCs
    // (same subnet CIDR), the source rewritten to service-gateway's link in that VPC.
    for (backend, port, link) in [
        (
            "10.0.1.10:8080",
            "default_b11",
            "service-gateway-service-gateway-vpc1",
        ),
        (
            "10.0.1.20:8080",
            "default_b21",
            "service-gateway-service-gateway-vpc2",
        ),
    ] {
        let t = ovn.trace(
            "external",
            &tcp_flow(
                "ext_client",
                "0a:00:00:ee:00:fa",
                &ext_mac,
                "198.18.0.250",
                "198.18.0.101",
                80,
            ),
            Some(backend),
        );
        assert!(delivered(&t, port), "scenario 4 to {port}:\n{t}");
        // The packet leaves service-gateway by the backend's VPC link...
        assert!(
            t.contains(&format!("outport=\"{link}\"")),
            "scenario 4 via {link}:\n{t}"
        );
        // ...where the source becomes service-gateway's address on that link. ovn-trace
        // 23.03 drops `flags.force_snat_for_lb` across its emulated ct_lb, so it never
        // shows the SNAT stage: the logical flows that do it are checked instead.
        let snat = lrp_ip(&d, link);
        let lflows = run("ovn-sbctl", &[&ovn.db("sb"), "lflow-list", SERVICE_GATEWAY]);
        assert!(
            lflows.lines().any(|l| l.contains("lr_out_snat")
                && l.contains(&format!(
                    "flags.force_snat_for_lb == 1 && ip4 && outport == \"{link}\""
                ))
                && l.contains(&format!("ct_snat({snat})"))),
            "no SNAT to {snat} on {link}:\n{lflows}"
        );
        assert!(
            lflows.lines().any(|l| l.contains("lr_in_dnat")
                && l.contains("ip4.dst == 198.18.0.101")
                && l.contains("flags.force_snat_for_lb = 1; ct_lb")),
            "the EIP's DNAT does not force SNAT:\n{lflows}"
        );
    }

    // Isolation: vpc2's host cannot reach an address that exists only in vpc1.
    let t = ovn.trace(
        "vpc2-subnet1",
        &tcp_flow(
            "default_b21",
            "0a:00:00:02:01:14",
            &gw_mac("vpc2-vpc2-subnet1"),
            "10.0.1.20",
            "10.0.2.10",
            8080,
        ),
        None,
    );
    assert!(
        !delivered(&t, "default_b12")
            && !t.contains("dp=\"vpc1")
            && t.trim_end().ends_with("drop;"),
        "isolation:\n{t}"
    );

    // Removing the services converges back, and again to nothing to do.
    let bare = build_desired(&lab(vec![]));
    for t in diff(&bare, &ovn.current(), 40).transactions {
        ovn.transact(&t);
    }
    assert!(diff(&bare, &ovn.current(), 40).is_empty());
    let lbs = ovn.nbctl(&["lb-list"]);
    assert!(lbs.trim().is_empty(), "load balancers left: {lbs}");
    assert!(!ovn.nbctl(&["show"]).contains(SERVICE_GATEWAY));
}
