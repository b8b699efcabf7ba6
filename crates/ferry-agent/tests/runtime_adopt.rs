//! Issue 15: a lab agent's death must not break its pods. A pod's container writes its
//! output to files itself, so it runs on (and keeps writing) while no agent runs; the next
//! agent adopts it from the record instead of starting it again, goes on writing its log,
//! and stops it when the pod goes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use ferry_agent::container_log::{Stream, raw_path, run_path};
use ferry_agent::netns_admin::{self, Record};
use ferry_agent::runtime::{ContainerSpec, RestartPolicy, RuntimeConfig, Sandbox, Workload};
use ferry_ovn_stack::OvnOptions;
use ferry_testkit::netns::unique;
use ferry_testkit::ovn::{TestOvn, chassis_options, unique_bridge};
use ferry_testkit::wait::eventually;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Removes whatever the record still lists if the test fails half-way.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        netns_admin::cleanup(self.0);
    }
}

#[test]
#[ignore = "needs root, netns and OVS"]
fn a_pod_outlives_its_agent_and_is_adopted() -> Result<()> {
    let bridge = unique_bridge("ad");
    let stack = TestOvn::start(OvnOptions {
        bridge: bridge.clone(),
        ovs_netns: None,
        ..chassis_options("adopt")
    })?;
    let dir = tempfile::tempdir()?;
    let record_path = dir.path().join("agent-test.json");
    let _cleanup = Cleanup(&record_path);
    let cfg = RuntimeConfig {
        ovs_db: stack.paths().ovs_sock.clone(),
        bridge,
        ovs_netns: None,
        port_type: String::new(),
        log_dir: dir.path().join("logs"),
    };
    let w = Workload {
        key: "pod/default/adopt".into(),
        uid: "uid-1".into(),
        netns: unique("adopt"),
        iface_id: "adopt-port".into(),
        mac: "0a:00:00:fd:00:0a".into(),
        ip_cidr: "10.253.0.10/24".into(),
        gateway: "10.253.0.1".into(),
        routes: vec![],
        containers: vec![ContainerSpec {
            name: "c".into(),
            argv: [
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo out-$i; echo err-$i >&2; sleep 0.05; done",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        }],
        restart: RestartPolicy::Always,
    };
    let key = format!("{}/c", w.netns);
    let log = run_path(&cfg.log_dir, &w.netns, "c", 0);
    let raw = raw_path(&log, Stream::Stderr);
    let wait = Duration::from_secs(30);

    let record = std::sync::Arc::new(Record::open(record_path.clone()));
    let first = Sandbox::start(&cfg, w.clone(), &record).map_err(anyhow::Error::msg)?;
    eventually("the first agent logs", wait, || {
        read(&log)
            .contains("stderr F err-3\n")
            .then_some(())
            .context("no err-3 yet")
    })?;
    let pid = record.snapshot().containers[&key].pid;

    // The agent dies: its sandbox is dropped without stopping anything.
    drop(first);
    drop(record);
    let raw_then = read(&raw).len();
    eventually("the container writes on", wait, || {
        (read(&raw).len() > raw_then + 100)
            .then_some(())
            .context("raw output not growing")
    })?;
    assert!(
        netns_admin::start_time(pid).is_some(),
        "the container outlived the agent"
    );

    // The next agent adopts it: same process, no restart, its log goes on.
    let record = std::sync::Arc::new(Record::open(record_path.clone()));
    let second = Sandbox::start(&cfg, w.clone(), &record).map_err(anyhow::Error::msg)?;
    let c = &second.containers[0];
    assert!(c.running());
    assert_eq!(c.restarts, 0);
    assert_eq!(record.snapshot().containers[&key].pid, pid);
    let last: usize = read(&raw)
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("err-"))
        .and_then(|n| n.parse().ok())
        .context("a last err line")?;
    let want = format!("stderr F err-{}\n", last + 5);
    eventually("the second agent logs", wait, || {
        read(&log)
            .contains(&want)
            .then_some(())
            .context("not logged yet")
    })?;
    let text = read(&log);
    for i in 1..=last {
        assert_eq!(
            text.matches(&format!(" F err-{i}\n")).count(),
            1,
            "err-{i} once"
        );
    }

    // Stopping the pod stops the adopted process and forgets it.
    second.stop(&record);
    // It ended (the test process started it, so it reaps it here, as init would).
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Signaled(..)),
        "{status:?}"
    );
    let left = record.snapshot();
    assert!(left.processes.is_empty() && left.containers.is_empty() && left.netns.is_empty());
    Ok(())
}
