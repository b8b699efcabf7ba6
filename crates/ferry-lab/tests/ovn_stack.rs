//! The OVN/OVS stack and lab hosts against the real daemons, with real packets.
//! Needs root and the OVN/OVS packages (`ferry_lab::prerequisites()`). The stack alone is
//! tested in `ferry-ovn-stack`.

mod common;

use std::time::{Duration, Instant};

use common::{alive, curl_until_ok, http_server, two_subnets};
use ferry_lab::Host;
use ferry_ovn_stack::netns::netns_exists;
use ferry_ovn_stack::registry::LinkRecord;
use ferry_ovn_stack::{Daemon, OvnStack, Registry};
use ferry_testkit::eventually;
use ferry_testkit::netns::link_exists as root_link_exists;
use ferry_testkit::ovn::{StackDir, chassis_options as options};

/// TCP between two namespaces in different subnets, routed by an OVN logical router;
/// afterwards nothing the lab created remains.
#[test]
#[ignore = "needs root and OVN"]
fn http_through_ovn_router_then_everything_is_gone() -> anyhow::Result<()> {
    let lab = StackDir::new("lab")?;
    let opts = options("tcp");
    let ovs_ns = opts
        .ovs_netns
        .clone()
        .expect("default puts vswitchd in a namespace");
    let t0 = Instant::now();
    let stack = OvnStack::start(lab.path(), opts)?;
    eprintln!(
        "stack ready in {:?}: {:?}",
        t0.elapsed(),
        stack.startup_times()
    );
    let daemon_pids: Vec<i32> = Daemon::ALL.iter().filter_map(|d| stack.pid(*d)).collect();
    assert_eq!(daemon_pids.len(), 6, "every daemon runs");
    assert!(stack.paths().nb_sock.exists() && stack.paths().sb_sock.exists());
    let br = stack.vsctl(&["get", "Bridge", "br-int", "datapath_type", "fail_mode"])?;
    assert_eq!(
        br.split_whitespace().collect::<Vec<_>>(),
        ["netdev", "secure"]
    );

    let (spec_a, spec_b) = two_subnets(&stack, "t1")?;
    let t1 = Instant::now();
    let a = Host::create(spec_a, &stack.bridge(), stack.registry())?;
    let b = Host::create(spec_b, &stack.bridge(), stack.registry())?;
    eprintln!("two hosts plumbed in {:?}", t1.elapsed());
    let server = http_server(&b, lab.path())?;
    let server_pid = server.pid();
    let state = stack.registry().load()?;
    let rec = state.host(b.name()).expect("host b is recorded");
    assert_eq!(
        (rec.netns.as_str(), rec.iface_id.as_str()),
        (b.netns(), "p2")
    );
    // The logical ports are bound to our chassis and flows installed.
    stack.nbctl(&["--wait=hv", "sync"])?;
    let up = stack.sbctl(&[
        "--bare",
        "--columns=logical_port",
        "find",
        "Port_Binding",
        "up=true",
    ])?;
    assert!(
        up.contains("p1") && up.contains("p2"),
        "ports up in SB: {up}"
    );

    let t2 = Instant::now();
    let body = curl_until_ok(&a, "http://10.251.2.10:8080/", Duration::from_secs(30))?;
    eprintln!("first HTTP answer through OVN after {:?}", t2.elapsed());
    assert_eq!(
        body.trim(),
        b.name(),
        "the answer comes from host b's server"
    );
    // The reverse direction: nothing listens on a:9, so a's kernel answers b's SYN with a
    // RST, which must come back through OVN: curl exit 7 ("couldn't connect"), not a
    // timeout (28).
    let out = b.exec(&["curl", "-s", "-m", "5", "http://10.251.1.10:9/"])?;
    assert_eq!(
        out.status.code(),
        Some(7),
        "b -> a:9 should be refused, got {}",
        out.status
    );

    // Delete the hosts: port, veth and namespace go, and the server with them.
    let (port_a, port_b) = (a.spec().port.clone(), b.spec().port.clone());
    a.delete()?;
    b.delete()?;
    a.delete()?; // idempotent
    let ports = stack.vsctl(&["list-ports", "br-int"])?;
    assert!(
        !ports.contains(&port_a) && !ports.contains(&port_b),
        "ports left: {ports}"
    );
    assert!(!netns_exists(a.netns()) && !netns_exists(b.netns()));
    for p in [&port_a, &port_b] {
        let link = LinkRecord {
            name: p.clone(),
            netns: Some(ovs_ns.clone()),
        };
        assert!(
            !ferry_ovn_stack::netns::link_exists(&link),
            "{p} left in {ovs_ns}"
        );
    }
    assert!(!alive(server_pid), "http server {server_pid} still runs");
    drop(server);

    let registry: Registry = stack.registry().clone();
    stack.stop()?;
    for pid in &daemon_pids {
        assert!(!alive(*pid), "daemon {pid} still runs");
    }
    assert!(
        !netns_exists(&ovs_ns),
        "the vswitchd namespace {ovs_ns} remains"
    );
    // Nothing of ours in the root namespace (the bridge-side ends lived in the lab's).
    assert!(!root_link_exists(&port_a) && !root_link_exists(&port_b));
    let state = registry.load()?;
    assert!(state.is_empty(), "registry still records {state:?}");
    Ok(())
}

/// After a crash (the stack detached, hosts and servers left running), `stop_from_dir`
/// removes everything recorded, kills nothing that merely reuses a recorded PID, and is
/// safe to run twice.
#[test]
#[ignore = "needs root and OVN"]
fn stop_from_dir_cleans_up_after_a_crash() -> anyhow::Result<()> {
    let lab = StackDir::new("lab")?;
    let opts = options("crash");
    let ovs_ns = opts.ovs_netns.clone().expect("vswitchd namespace");
    let stack = OvnStack::start(lab.path(), opts)?;
    let (spec_a, spec_b) = two_subnets(&stack, "t3")?;
    let a = Host::create(spec_a, &stack.bridge(), stack.registry())?;
    let b = Host::create(spec_b, &stack.bridge(), stack.registry())?;
    let server = http_server(&b, lab.path())?;
    stack.nbctl(&["--wait=hv", "sync"])?;
    let body = curl_until_ok(&a, "http://10.251.2.10:8080/", Duration::from_secs(30))?;
    assert_eq!(body.trim(), b.name());

    // An unrelated process whose PID we pretend was recorded with another command line
    // (PID reuse): teardown must leave it alone.
    let mut bystander = std::process::Command::new("sleep").arg("120").spawn()?;
    let bystander_pid = bystander.id() as i32;
    stack
        .registry()
        .put_process(&ferry_ovn_stack::process::ProcessRecord {
            name: "impostor".into(),
            owner: "host:impostor".into(),
            pid: bystander_pid,
            argv: vec!["python3".into(), "-m".into(), "http.server".into()],
            start_time: None,
        })?;

    let mut pids: Vec<i32> = Daemon::ALL.iter().filter_map(|d| stack.pid(*d)).collect();
    pids.push(server.pid());
    let names = [a.netns().to_owned(), b.netns().to_owned(), ovs_ns.clone()];
    // "Crash": nobody stops anything.
    stack.detach();
    drop((a, b, server));
    for pid in &pids {
        assert!(alive(*pid), "{pid} should survive the crash");
    }

    let t0 = Instant::now();
    let report = ferry_ovn_stack::stop_from_dir(lab.path())?;
    eprintln!("stop_from_dir took {:?}: {report:?}", t0.elapsed());
    assert_eq!(
        report.stopped.len(),
        7,
        "6 daemons and 1 server: {report:?}"
    );
    for pid in &pids {
        assert!(!alive(*pid), "{pid} still runs after stop_from_dir");
    }
    for ns in &names {
        assert!(!netns_exists(ns), "namespace {ns} remains");
    }
    assert!(
        matches!(bystander.try_wait(), Ok(None)),
        "a bystander with a reused PID was killed"
    );
    bystander.kill()?;
    bystander.wait()?;
    assert!(Registry::open(lab.path())?.load()?.is_empty());

    // Twice is fine, and the files go too.
    let again = ferry_ovn_stack::stop_from_dir(lab.path())?;
    assert_eq!(again, ferry_ovn_stack::Teardown::default());
    ferry_ovn_stack::purge_dir(lab.path())?;
    for gone in ["db", "run", "logs", "state.json", "state.lock"] {
        assert!(
            !lab.path().join(gone).exists(),
            "{gone} remains after purge_dir"
        );
    }
    // The test's own files (the web root) are not the lab's: they stay, and so does the dir.
    assert!(lab.path().join(format!("www-{}", names[1])).exists());
    Ok(())
}

/// `ovs-vswitchd` killed with SIGKILL is restarted in its namespace, and TCP between the
/// hosts works again (its taps and the veth ends survived in the lab namespace).
#[test]
#[ignore = "needs root and OVN"]
fn killed_vswitchd_is_restarted_and_traffic_resumes() -> anyhow::Result<()> {
    let lab = StackDir::new("lab")?;
    let stack = OvnStack::start(lab.path(), options("vsw"))?;
    let (spec_a, spec_b) = two_subnets(&stack, "t4")?;
    let a = Host::create(spec_a, &stack.bridge(), stack.registry())?;
    let b = Host::create(spec_b, &stack.bridge(), stack.registry())?;
    let _server = http_server(&b, lab.path())?;
    stack.nbctl(&["--wait=hv", "sync"])?;
    curl_until_ok(&a, "http://10.251.2.10:8080/", Duration::from_secs(30))?;

    let old = stack.pid(Daemon::Vswitchd).expect("vswitchd runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let t0 = Instant::now();
    let new = eventually(
        "vswitchd restarted",
        Duration::from_secs(10),
        || match stack.pid(Daemon::Vswitchd) {
            Some(p) if p != old && alive(p) => Ok(p),
            other => Err(format!("vswitchd pid {other:?}")),
        },
    )?;
    let body = curl_until_ok(&a, "http://10.251.2.10:8080/", Duration::from_secs(30))?;
    eprintln!(
        "vswitchd {old} -> {new}; traffic back after {:?}",
        t0.elapsed()
    );
    assert_eq!(body.trim(), b.name());
    assert_eq!(stack.restarts(Daemon::Vswitchd), 1);
    Ok(()) // StackDir and the stack's Drop tear everything down
}

/// Ports of type `afxdp-nonpmd` (native XDP on the veth) carry TCP as well.
#[test]
#[ignore = "needs root and OVN"]
fn afxdp_nonpmd_ports_carry_tcp() -> anyhow::Result<()> {
    let lab = StackDir::new("lab")?;
    let stack = OvnStack::start(lab.path(), options("xdp"))?;
    let (mut spec_a, mut spec_b) = two_subnets(&stack, "t5")?;
    spec_a.port_type = ferry_lab::PortType::AfxdpNonPmd;
    spec_b.port_type = ferry_lab::PortType::AfxdpNonPmd;
    let a = Host::create(spec_a, &stack.bridge(), stack.registry())?;
    let b = Host::create(spec_b, &stack.bridge(), stack.registry())?;
    let ty = stack.vsctl(&[
        "get",
        "Interface",
        &a.spec().port,
        "type",
        "options:xdp-mode",
    ])?;
    assert_eq!(
        ty.split_whitespace().collect::<Vec<_>>(),
        ["afxdp-nonpmd", "native"]
    );
    let _server = http_server(&b, lab.path())?;
    stack.nbctl(&["--wait=hv", "sync"])?;
    let body = curl_until_ok(&a, "http://10.251.2.10:8080/", Duration::from_secs(30))?;
    assert_eq!(body.trim(), b.name());
    Ok(())
}
