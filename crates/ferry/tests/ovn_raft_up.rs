//! `ferry up --ovn-raft 3`: NB and SB run as 3-member RAFT clusters, ovn-northd and
//! ovn-controller are given every member, and Ferry's controller keeps programming the NB
//! after `kill -9` of the NB leader (a Subnet created afterwards becomes a logical switch).

mod common;
use common::{create_subnet_and_list_switches, ferry_up_logged, nb_switches, wait};

use std::path::Path;
use std::process::Command;

use ferry_ovn_stack::Daemon;

/// How many times the controller logged a new NB connection, and the last remote.
fn nb_connections(log: &Path) -> (usize, String) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("OVSDB connected") && l.contains("OVN_Northbound"))
        .collect();
    let last = lines
        .last()
        .and_then(|l| l.find("unix:").map(|at| &l[at..]))
        .map(|r| {
            r.split(|c: char| c.is_whitespace() || c == '\u{1b}')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    (lines.len(), last)
}

#[test]
#[ignore = "needs root and OVN"]
fn ferry_up_with_ovn_raft_follows_the_nb_leader_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ovn = data.join("ovn");
    let log_path = dir.path().join("up.log");
    let chassis = format!("raft{}", std::process::id());
    let _up = ferry_up_logged(
        dir.path(),
        &["--ovn-raft", "3", "--gateway-chassis", &chassis],
    );

    wait("the controller's NB connection", &log_path, || {
        (nb_connections(&log_path).0 >= 1).then_some(())
    });
    let nb = ferry_ovn_stack::raft::remotes_in(&ovn, Daemon::NbDb);
    let sb = ferry_ovn_stack::raft::remotes_in(&ovn, Daemon::SbDb);
    assert_eq!(nb.split(',').count(), 3, "{nb}");
    assert_eq!(sb.split(',').count(), 3, "{sb}");
    let northd = std::fs::read_to_string(ovn.join("run/ovn-northd.pid"))
        .ok()
        .and_then(|p| std::fs::read(format!("/proc/{}/cmdline", p.trim())).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    // northd reaches the members through the stack's leader proxies (ovsdb-idl's own
    // backoff kept it off a new leader for seconds, docs/resilience.md).
    let proxy = |name: &str| format!("unix:{}", ovn.join("run").join(name).display());
    assert!(
        northd.contains(&format!("--ovnnb-db={}", proxy("nb-leader.sock")))
            && northd.contains(&format!("--ovnsb-db={}", proxy("sb-leader.sock"))),
        "northd is given the leader proxies: {northd}"
    );
    let ovn_remote = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", ovn.join("run/db.sock").display()))
        .args(["get", "Open_vSwitch", ".", "external_ids:ovn-remote"])
        .output()
        .expect("ovs-vsctl");
    assert!(
        String::from_utf8_lossy(&ovn_remote.stdout).contains(&sb),
        "ovn-controller is given every SB member: {ovn_remote:?}"
    );

    // kill -9 of the NB leader: the controller moves to the new leader. The supervisor
    // would restart the killed member within 200 ms, and the controller could then meet it
    // again before it learns it is no longer the leader: it is held down here.
    let (leader, pid) = ferry_ovn_stack::raft::leader(&ovn, Daemon::NbDb, 3).expect("an NB leader");
    let hold = ferry_ovn_stack::LabPaths::new(&ovn).hold_file(Daemon::NbDb);
    std::fs::write(&hold, b"").expect("holding the NB members down");
    let (connects, first) = nb_connections(&log_path);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the NB leader");
    let moved_to = wait("the controller on another NB member", &log_path, || {
        let (n, remote) = nb_connections(&log_path);
        (n > connects).then_some(remote)
    });
    assert_ne!(moved_to, first, "left the killed leader {}", leader.name);
    std::fs::remove_file(&hold).expect("releasing the hold");

    // A Subnet created now reaches the NB through the new leader.
    create_subnet_and_list_switches(&data, &log_path, || nb_switches(&nb));
}
