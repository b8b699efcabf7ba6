//! Failure paths against the real daemons: a daemon that cannot start, a second start on
//! a running lab, names that already exist. Needs root and the OVN/OVS packages.

mod common;

use common::{LabDir, alive, options};
use ferry_lab::netns::netns_exists;
use ferry_lab::{Error, Host, HostSpec, OvnStack, Registry};

/// A daemon that exits at start-up yields an error naming it and its log, and the
/// half-started stack is cleaned up.
#[test]
#[ignore = "needs root and OVN"]
fn a_daemon_that_cannot_start_is_named_with_its_log_and_nothing_remains() -> anyhow::Result<()> {
    let lab = LabDir::new();
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

/// A second stack on a running lab directory is refused and the first keeps running; a
/// host whose namespace exists but is not the lab's is refused and the namespace kept.
#[test]
#[ignore = "needs root and OVN"]
fn existing_daemons_and_foreign_namespaces_are_not_adopted() -> anyhow::Result<()> {
    let lab = LabDir::new();
    let stack = OvnStack::start(lab.path(), options("dup"))?;
    let nb = stack.pid(ferry_lab::Daemon::NbDb).expect("nb runs");
    let err = OvnStack::start(lab.path(), options("dup2")).expect_err("second start");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(alive(nb), "the running lab was disturbed");

    let foreign = common::ns("dup", "foreign");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &foreign])
        .output()?;
    assert!(out.status.success());
    let mut spec = HostSpec::new(&foreign, "0a:00:00:fb:09:0a", "10.251.9.10/24", None);
    spec.port = "dup-f".into();
    let err = Host::create(spec, &stack.bridge(), stack.registry()).expect_err("foreign netns");
    let still_there = netns_exists(&foreign);
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &foreign])
        .output();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(
        still_there,
        "a namespace the lab did not create was deleted"
    );
    assert!(!stack.registry().load()?.netns.contains(&foreign));
    stack.stop()?;
    Ok(())
}
