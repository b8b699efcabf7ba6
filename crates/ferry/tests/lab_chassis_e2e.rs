//! The lab's other chassis mode, end to end, with the socket LB off: `ferry lab up
//! --single-chassis --socket-lb=false` (both nodes on one chassis, what benches and the
//! members of a federation lab run; pods reach services through OVN's load balancers only,
//! where `lab_e2e.rs` has the socket LB on) passes every `ferry lab check` row, each scenario's chassis row showing client and backends on that one
//! chassis; the SB lists one chassis; it keeps userspace TSO on (no tunnel to drop its
//! segments); `ferry lab down` leaves nothing. The default lab (a chassis per node, Geneve,
//! gateway failover) is `lab_e2e.rs`. Run it inside `scripts/lab-isolated.sh` when another
//! lab runs on the machine (lab names are fixed).

mod common;

use common::lab::{Lab, failed_rows, lab_namespaces};

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn single_chassis_lab_with_the_socket_lb_off_passes_every_check() {
    let lab = Lab::up(&["--single-chassis", "--socket-lb=false"]);
    let check = lab.is_up().then(|| lab.check());
    let sb = lab.sb_show();
    let tso = lab.userspace_tso(&lab.ovn());
    let node_chassis = std::path::Path::new(&lab.ovn())
        .join("chassis-node1")
        .exists();
    let up_ok = lab.is_up();
    let down = lab.down();
    assert!(up_ok, "lab up --single-chassis failed");
    let check = check.expect("check ran");
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "lab check failed; rows that failed: {:#?}\nits stderr: {}\n{table}",
        failed_rows(&table),
        String::from_utf8_lossy(&check.stderr)
    );
    for row in [
        "1 chassis",
        "2 chassis",
        "3 chassis",
        "4 chassis",
        "seed ysvc1",
        "isolation: vpc2 -> vpc1 VIP (socket LB off)",
        "(OVN hash of the client)",
    ] {
        assert!(table.contains(row), "missing row {row}:\n{table}");
    }
    // Each scenario's 20 answers, none from another chassis, no end on a node's own one.
    assert_eq!(
        table.matches(" 0/20 answers from another chassis").count(),
        4,
        "every end on the one chassis:\n{table}"
    );
    assert!(!table.contains("@node1"), "{table}");
    assert_eq!(sb.matches("Chassis ").count(), 1, "one chassis:\n{sb}");
    assert!(!node_chassis, "no chassis of its own for node1");
    assert_eq!(tso, "true", "userspace TSO on the single chassis");
    if let Err(e) = down {
        panic!("{e}");
    }
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
}
