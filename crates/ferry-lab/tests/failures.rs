//! Failure paths against the real daemons: a second start on a running lab, names that
//! already exist. Needs root and the OVN/OVS packages. (A daemon that cannot start is
//! tested in `ferry-ovn-stack`.)

mod common;

use common::alive;
use ferry_lab::{Error, Host, HostSpec};
use ferry_ovn_stack::netns::netns_exists;
use ferry_ovn_stack::{Daemon, OvnStack};
use ferry_testkit::ovn::{StackDir, chassis_options as options};

/// A second stack on a running lab directory is refused and the first keeps running; a
/// host whose namespace exists but is not the lab's is refused and the namespace kept.
#[test]
#[ignore = "needs root and OVN"]
fn existing_daemons_and_foreign_namespaces_are_not_adopted() -> anyhow::Result<()> {
    let lab = StackDir::new("lab")?;
    let stack = OvnStack::start(lab.path(), options("dup"))?;
    let nb = stack.pid(Daemon::NbDb).expect("nb runs");
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
