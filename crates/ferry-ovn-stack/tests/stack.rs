//! The stack against the real daemons: the central part without root, supervision
//! (a killed daemon comes back and does its job), a failed start that names the daemon
//! and leaves nothing. Lab hosts on a stack are tested in `ferry-lab`.

use std::time::{Duration, Instant};

use ferry_ovn_stack::netns::netns_exists;
use ferry_ovn_stack::process::is_gone;
use ferry_ovn_stack::{Daemon, Error, OvnOptions, OvnStack, Registry, stop_from_dir};
use ferry_testkit::eventually;
use ferry_testkit::ovn::{StackDir, chassis_options as options};

fn alive(pid: i32) -> bool {
    !is_gone(pid)
}

/// The central part (what `ferry bench control-plane` and the NB tests run): NB, SB and
/// `ovn-northd` only, no root and no namespace; a logical switch written to the NB
/// reaches the SB through northd; stopping it ends exactly those three and forgets them.
#[test]
#[ignore = "needs OVN binaries"]
fn central_stack_translates_nb_to_sb_and_stops_clean() -> anyhow::Result<()> {
    let lab = StackDir::new("stack")?;
    let stack = OvnStack::start(lab.path(), OvnOptions::central())?;
    let running: Vec<Daemon> = Daemon::ALL
        .iter()
        .copied()
        .filter(|d| stack.pid(*d).is_some())
        .collect();
    assert_eq!(running, [Daemon::NbDb, Daemon::SbDb, Daemon::Northd]);
    assert!(!lab.path().join("db/conf.db").exists(), "no OVS database");
    stack.nbctl(&["--wait=sb", "ls-add", "central"])?;
    let dp = stack.sbctl(&[
        "--bare",
        "--columns=external_ids",
        "list",
        "Datapath_Binding",
    ])?;
    assert!(dp.contains("name=central"), "SB datapaths: {dp}");
    let pids: Vec<i32> = running.iter().filter_map(|d| stack.pid(*d)).collect();
    let registry = stack.registry().clone();
    stack.stop()?;
    for pid in pids {
        assert!(!alive(pid), "daemon {pid} still runs");
    }
    assert!(registry.load()?.is_empty());
    assert_eq!(stop_from_dir(lab.path())?, Default::default());
    Ok(())
}

/// A daemon that dies is restarted, and the restarted `ovn-northd` does its job.
#[test]
#[ignore = "needs root and OVN"]
fn killed_northd_is_restarted_and_keeps_translating() -> anyhow::Result<()> {
    let lab = StackDir::new("stack")?;
    let stack = OvnStack::start(lab.path(), options("rst"))?;
    stack.nbctl(&["--wait=sb", "ls-add", "before"])?;
    let old = stack.pid(Daemon::Northd).expect("northd runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let t0 = Instant::now();
    let new = eventually("northd restarted", Duration::from_secs(10), || match stack
        .pid(Daemon::Northd)
    {
        Some(p) if p != old && alive(p) => Ok(p),
        other => Err(format!("northd pid {other:?}")),
    })?;
    eprintln!(
        "northd restarted after {:?} (pid {old} -> {new})",
        t0.elapsed()
    );
    assert_eq!(stack.restarts(Daemon::Northd), 1);
    assert!(!alive(old));
    // The registry and pidfile follow the new PID (what `ferry lab down` will read).
    let state = stack.registry().load()?;
    let rec = state
        .processes
        .iter()
        .find(|p| p.name == "ovn-northd")
        .expect("record");
    assert_eq!(rec.pid, new);
    let pidfile = std::fs::read_to_string(stack.paths().pidfile(Daemon::Northd))?;
    assert_eq!(pidfile.trim(), new.to_string());
    // NB changes still reach the SB: --wait=sb returns only once northd has processed it.
    stack.nbctl(&["--wait=sb", "ls-add", "after-restart"])?;
    let dp = stack.sbctl(&[
        "--bare",
        "--columns=external_ids",
        "list",
        "Datapath_Binding",
    ])?;
    assert!(dp.contains("name=after-restart"), "SB datapaths: {dp}");
    assert!(dp.contains("name=before"));
    // Other daemons untouched.
    assert_eq!(stack.restarts(Daemon::NbDb), 0);
    stack.stop()?;
    assert!(!alive(new));
    Ok(())
}

/// A daemon that exits at start-up yields an error naming it and its log, and the
/// half-started stack is cleaned up.
#[test]
#[ignore = "needs root and OVN"]
fn a_daemon_that_cannot_start_is_named_with_its_log_and_nothing_remains() -> anyhow::Result<()> {
    let lab = StackDir::new("stack")?;
    let opts = options("bad");
    let ovs_ns = opts.ovs_netns.clone().expect("namespace");
    // A corrupt OVS database: NB, SB and northd start, then the OVS ovsdb-server fails.
    std::fs::create_dir_all(lab.path().join("db"))?;
    std::fs::write(lab.path().join("db/conf.db"), "this is not an ovsdb file\n")?;
    let err = OvnStack::start(lab.path(), opts).expect_err("must fail");
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        Error::Exited { process, log, .. } => {
            assert_eq!(process, "ovs-ovsdb");
            assert!(log.ends_with("logs/ovs-ovsdb.log"), "{}", log.display());
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(
        msg.contains("ovs-ovsdb.log"),
        "the message names the log: {msg}"
    );
    let state = Registry::open(lab.path())?.load()?;
    assert!(state.is_empty(), "a failed start leaves records: {state:?}");
    assert!(!netns_exists(&ovs_ns));
    Ok(())
}
