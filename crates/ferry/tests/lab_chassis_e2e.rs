//! End to end with one chassis per node (`ferry lab up --chassis-per-node`): every
//! `ferry lab check` row passes with node1's and node2's pods on their own chassis and
//! Geneve between them (each scenario has answers from another chassis than its client's);
//! the SB lists the three chassis (two nodes and the witness) with Geneve encaps; node1's
//! userspace datapath encapsulates by itself (`tnl_push`); `ferry lab gateway-failover`
//! kills the active gateway chassis' daemons and the EIP answers through the other; then
//! `ferry lab down` leaves nothing. Run it inside `scripts/lab-isolated.sh` when another lab
//! runs on the machine (lab names are fixed).

use std::process::Command;

use serde_json::Value;

fn ferry(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run ferry");
    eprintln!(
        "$ ferry {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ferry-"))
        .map(String::from)
        .collect()
}

fn text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn chassis_per_node_check_and_gateway_failover() {
    assert!(
        lab_namespaces().is_empty(),
        "another lab runs on this machine: {:?}",
        lab_namespaces()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("lab");
    let lab = lab.to_str().expect("utf-8 path");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let up = ferry(&[
        "lab",
        "up",
        "--dir",
        lab,
        "--listen",
        &listen,
        "--chassis-per-node",
    ]);
    let ovn = format!("{lab}/ferry/ovn");
    let (check, sb, flows, failover) = if up.status.success() {
        let check = ferry(&["lab", "check", "--dir", lab]);
        let sb = text(
            "ovn-sbctl",
            &[&format!("--db=unix:{ovn}/run/sb.sock"), "show"],
        );
        let flows = text(
            "ovs-appctl",
            &[
                "-t",
                &format!("{ovn}/chassis-node1/run/ovs-vswitchd.ctl"),
                "dpctl/dump-flows",
            ],
        );
        let failover = ferry(&["lab", "gateway-failover", "--dir", lab, "-o", "json"]);
        (Some(check), sb, flows, Some(failover))
    } else {
        (None, String::new(), String::new(), None)
    };
    let down = ferry(&["lab", "down", "--dir", lab]);
    assert!(up.status.success(), "lab up --chassis-per-node failed");
    let check = check.expect("check ran");
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "lab check failed:\n{table}");
    for row in ["1 chassis", "2 chassis", "3 chassis", "4 chassis"] {
        assert!(table.contains(row), "missing row {row}:\n{table}");
    }
    assert!(
        table.contains("client-vpc1@node1") && table.contains("via gateway @node1"),
        "placement shown:\n{table}"
    );
    for chassis in ["ferry-node1", "ferry-node2", "ferry-witness"] {
        assert!(
            sb.contains(&format!("Chassis {chassis}")),
            "{chassis} in ovn-sbctl show:\n{sb}"
        );
    }
    assert_eq!(sb.matches("Encap geneve").count(), 3, "{sb}");
    assert!(flows.contains("tnl_push"), "no tnl_push on node1:\n{flows}");
    let failover = failover.expect("failover ran");
    let f: Value = serde_json::from_slice(&failover.stdout).unwrap_or_default();
    assert!(failover.status.success(), "gateway-failover failed: {f}");
    assert_eq!((&f["from"], &f["to"]), (&"node1".into(), &"node2".into()));
    assert!(f["firstAnswerS"].is_number(), "{f}");
    // Back on node1 once its daemons restart: node1's tunnels work again, which needs the
    // underlay route re-added to the restarted ovs-vswitchd (fabric::keep_underlay_route).
    assert!(f["failbackS"].is_number(), "{f}");
    assert!(down.status.success(), "down");
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
}
