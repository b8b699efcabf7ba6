//! The kit's own promises: what a fixture starts is gone when it drops (by PID, by name),
//! and a restarted NB server keeps its database.

use std::path::Path;
use std::process::Command;

use ferry_ovn_stack::Daemon;
use ferry_ovn_stack::process::is_gone;
use ferry_testkit::netns::{ChildGuard, Netns, unique};
use ferry_testkit::ovn::TestOvn;
use ferry_testkit::ovsdb::NbServer;

#[test]
#[ignore = "needs OVN binaries"]
fn nb_server_restarts_on_its_database_and_is_killed_on_drop() {
    let mut nb = NbServer::standalone();
    nb.nbctl(&["ls-add", "kept"]);
    let first = nb.pid().expect("running") as i32;
    nb.kill();
    assert!(is_gone(first), "the killed server {first} still runs");
    assert_eq!(nb.pid(), None);
    nb.start();
    assert_eq!(
        nb.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"]),
        "kept"
    );
    let second = nb.pid().expect("running again") as i32;
    let dir = nb.dir.path().to_path_buf();
    drop(nb);
    assert!(is_gone(second), "the server {second} outlived its fixture");
    assert!(!dir.exists(), "{} remains", dir.display());
}

#[test]
#[ignore = "needs OVN binaries"]
fn central_ovn_stops_every_daemon_and_removes_its_dir_on_drop() -> anyhow::Result<()> {
    let ovn = TestOvn::central()?;
    ovn.nbctl(&["--wait=sb", "ls-add", "sw"])?;
    let pids: Vec<i32> = Daemon::ALL.iter().filter_map(|d| ovn.pid(*d)).collect();
    assert_eq!(pids.len(), 3, "NB, SB and northd");
    let dir = ovn.dir().to_path_buf();
    drop(ovn);
    for pid in pids {
        assert!(is_gone(pid), "daemon {pid} outlived its fixture");
    }
    assert!(!dir.exists(), "{} remains", dir.display());
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn netns_and_child_guards_remove_what_they_hold() -> anyhow::Result<()> {
    let ns = Netns::add(&unique("kit"))?;
    let path = ns.path();
    assert!(path.exists());
    let child = ns.spawn(&["sleep", "60"], None)?;
    let pid = child.0.id() as i32;
    drop(child);
    assert!(is_gone(pid), "sleep {pid} outlived its guard");
    drop(ns);
    assert!(!Path::new(&path).exists(), "{} remains", path.display());
    Ok(())
}

#[test]
fn child_guard_kills_by_pid() -> anyhow::Result<()> {
    let child = ChildGuard(Command::new("sleep").arg("60").spawn()?);
    let pid = child.0.id() as i32;
    assert!(!is_gone(pid));
    drop(child);
    assert!(is_gone(pid), "sleep {pid} outlived its guard");
    Ok(())
}
