//! The DPU split mode with one simulated DPU: ovs-vswitchd runs in a namespace standing
//! for the SmartNIC (with `other_config:hw-offload=true` set before it starts), each pod's
//! "VF" is a veth whose host end (the representor) lives in that namespace. The CNI plugin
//! in `dpu-host` mode plumbs the pods with an OVS database path that does not exist (so
//! any OVS call would fail), refuses a pod while the DPU's Lease is missing or lapsed, and
//! announces each representor; the DPU side ([`ferry_agent::dpu::bind`]) puts them on
//! `br-int` with the pods' `iface-id`s, and TCP flows between the pods through OVN.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::{Value, json};

use ferry_agent::cni::{CniEnv, CniError, ErrorCode, NetConf, PodNetwork, Reply, dispatch};
use ferry_agent::cni_plugin::{AssignmentSource, FerryCni};
use ferry_agent::dpu::{self, DpuOvs};
use ferry_agent::plumb::host_ifname;
use ferry_ovn_stack::{Daemon, default_ovs_other_config};
use ferry_testkit::netns::{Netns, unique};
use ferry_testkit::ovn::{TestOvn, chassis_options};
use ferry_testkit::tool;

const NODE: &str = "n1";

/// The host side's view of the cluster: assignments by container id, the DPU's Lease,
/// and the representors it announced (what the Pod annotation would hold).
struct Host {
    pods: HashMap<String, PodNetwork>,
    dpu_lease: Option<LeaseSpec>,
    announced: BTreeMap<String, Option<String>>,
}

impl AssignmentSource for Host {
    fn pod_network(&mut self, env: &CniEnv, _: &NetConf) -> Result<PodNetwork, CniError> {
        self.pods.get(&env.container_id).cloned().ok_or_else(|| {
            CniError::new(ErrorCode::NoAssignment, "no assignment", &env.container_id)
        })
    }
    fn admit(&mut self, env: &CniEnv, _: &NetConf) -> Result<(), CniError> {
        dpu::admit(NODE, self.dpu_lease.as_ref(), Timestamp::now())
            .map_err(|r| CniError::new(ErrorCode::TryAgainLater, r.to_string(), &env.container_id))
    }
    fn announce_vf(
        &mut self,
        env: &CniEnv,
        _: &NetConf,
        representor: Option<&str>,
    ) -> Result<(), CniError> {
        self.announced
            .insert(env.container_id.clone(), representor.map(str::to_string));
        Ok(())
    }
}

fn invoke(
    plugin: &mut FerryCni<Host>,
    command: &str,
    cid: &str,
    ns: &Netns,
    conf: &Value,
) -> Reply {
    let vars = vec![
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_CONTAINERID".to_string(), cid.to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        ("CNI_NETNS".to_string(), ns.path().display().to_string()),
        (
            "CNI_ARGS".to_string(),
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}"),
        ),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
    ];
    dispatch(vars, conf.to_string().as_bytes(), plugin)
}

fn live_lease(renewed_ago_s: i64) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(format!("{NODE}-dpu")),
        lease_duration_seconds: Some(10),
        renew_time: Some(MicroTime(
            Timestamp::now() - jiff::SignedDuration::from_secs(renewed_ago_s),
        )),
        ..Default::default()
    }
}

/// utime + stime of a process, in seconds (`/proc/PID/stat`, clock ticks of 1/100 s).
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[test]
#[ignore = "needs root, netns and OVN/OVS"]
fn dpu_host_plumbs_and_dpu_binds_the_representor() -> Result<()> {
    let pid = std::process::id();
    let mut opts = chassis_options("dpu");
    opts.bridge = format!("fdp{pid}");
    opts.bridge.truncate(15);
    opts.ovs_other_config = default_ovs_other_config();
    opts.ovs_other_config
        .push(("hw-offload".into(), "true".into()));
    let Some(dpu_ns) = opts.ovs_netns.clone() else {
        bail!("chassis options put OVS in no namespace");
    };
    let bridge = opts.bridge.clone();
    let stack = TestOvn::start(opts)?;
    let dpu_ns_path = PathBuf::from(format!("/var/run/netns/{dpu_ns}"));

    // --hw-offload: set before vswitchd started, and it reads back.
    let hw = stack.vsctl(&["get", "Open_vSwitch", ".", "other_config:hw-offload"])?;
    assert_eq!(hw.trim(), "\"true\"", "hw-offload reads back");
    assert!(dpu::hw_offload_on(&hw));
    // What the agent's --hw-offload does on a running vswitchd: set, read back.
    dpu::enable_hw_offload(&stack.paths().ovs_sock)?;

    let subnets = [
        ("s1", "0a:00:00:fd:01:01", "10.251.1.1/24"),
        ("s2", "0a:00:00:fd:02:01", "10.251.2.1/24"),
    ];
    let pods = [
        (
            "s1",
            "pod-a.default",
            "0a:00:00:fd:01:0a",
            "10.251.1.10/24",
            "10.251.1.1",
        ),
        (
            "s2",
            "pod-b.default",
            "0a:00:00:fd:02:0a",
            "10.251.2.10/24",
            "10.251.2.1",
        ),
    ];
    ferry_testkit::ovn::vpc_with_ports(&stack, &subnets, &pods)?;

    let ns_a = Netns::add(&unique("da"))?;
    let ns_b = Netns::add(&unique("db"))?;
    let cid_a = format!("fdp{pid}containera");
    let cid_b = format!("fdp{pid}containerb");
    let mut table = HashMap::new();
    for (cid, (_, lsp, mac, cidr, gw)) in [(&cid_a, pods[0]), (&cid_b, pods[1])] {
        table.insert(
            cid.clone(),
            PodNetwork {
                ip: cidr.parse()?,
                mac: mac.parse()?,
                gateway: gw.parse()?,
                iface_id: lsp.to_string(),
            },
        );
    }
    let mut plugin = FerryCni {
        assignments: Host {
            pods: table,
            dpu_lease: None,
            announced: BTreeMap::new(),
        },
    };
    // The host has no OVS: any ovs-vsctl call of the plugin would fail on this path.
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ferry", "type": "ferry", "mode": "dpu-host",
        "ovsDbSock": "/nonexistent/ferry-dpu-host/db.sock", "bridge": bridge,
        "ovsNetns": dpu_ns_path.display().to_string(),
    });

    // No DPU Lease, then a lapsed one: ADD is refused with the reason, nothing is made.
    for (lease, want) in [
        (
            None,
            format!("no DPU agent for this node: Lease ferry-dpu-{NODE} does not exist"),
        ),
        (
            Some(live_lease(60)),
            format!(
                "the DPU agent's Lease ferry-dpu-{NODE} has lapsed (60 s since renewal, lasts 10 s)"
            ),
        ),
    ] {
        plugin.assignments.dpu_lease = lease;
        let reply = invoke(&mut plugin, "ADD", &cid_a, &ns_a, &conf);
        assert_eq!(reply.exit_code, 1, "{}", reply.stdout);
        let err: Value = serde_json::from_str(&reply.stdout)?;
        assert_eq!(err["code"], 11, "{err}");
        assert_eq!(err["msg"], want.as_str());
        assert!(
            ns_a.ip(&["link", "show", "eth0"]).is_err(),
            "refused ADD plumbed eth0"
        );
        println!("ADD refused: {}", reply.stdout);
    }

    // The DPU's Lease is live: ADD plumbs both pods, OVS untouched.
    plugin.assignments.dpu_lease = Some(live_lease(1));
    for (cid, ns, (_, _, mac, cidr, _)) in [(&cid_a, &ns_a, pods[0]), (&cid_b, &ns_b, pods[1])] {
        let reply = invoke(&mut plugin, "ADD", cid, ns, &conf);
        assert_eq!(reply.exit_code, 0, "ADD {cid}: {}", reply.stdout);
        let addrs = ns.ip(&["-br", "addr", "show", "eth0"])?;
        assert!(addrs.contains(cidr), "{addrs}");
        let link = ns.ip(&["-br", "link", "show", "eth0"])?;
        assert!(link.contains(mac), "{link}");
        // The representor sits in the DPU's namespace, not on the host.
        let rep = host_ifname(cid, "eth0");
        tool("ip", &["-n", &dpu_ns, "link", "show", &rep])?;
        assert!(
            tool("ip", &["link", "show", &rep]).is_err(),
            "{rep} on the host"
        );
    }
    let ports = stack.vsctl(&["list-ports", &bridge])?;
    assert_eq!(ports.trim(), "", "the host side added OVS ports: {ports}");
    let announced = plugin.assignments.announced.clone();
    assert_eq!(
        announced,
        BTreeMap::from([
            (cid_a.clone(), Some(host_ifname(&cid_a, "eth0"))),
            (cid_b.clone(), Some(host_ifname(&cid_b, "eth0"))),
        ])
    );

    // The DPU binds what the host announced, with the pods' iface-ids.
    let ovs = DpuOvs {
        db: &stack.paths().ovs_sock,
        bridge: &bridge,
        netns: Some(&dpu_ns_path),
    };
    let desired: BTreeMap<String, String> = [(&cid_a, pods[0].1), (&cid_b, pods[1].1)]
        .into_iter()
        .map(|(cid, lsp)| (host_ifname(cid, "eth0"), lsp.to_string()))
        .collect();
    let plan = dpu::plan(&desired, &BTreeMap::new());
    assert_eq!(plan.bind.len(), 2);
    for (rep, iface_id) in &plan.bind {
        dpu::bind(&ovs, rep, iface_id)?;
        dpu::bind(&ovs, rep, iface_id)?; // idempotent
    }
    stack.wait_bound("pod-a.default")?;
    stack.wait_bound("pod-b.default")?;

    let _server = ns_b.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.251.2.10",
        ],
        None,
    )?;
    let started = Instant::now();
    let body = loop {
        match ns_a.exec(&["curl", "-s", "-m", "2", "http://10.251.2.10:8080/"]) {
            Ok(body) if !body.is_empty() => break body,
            _ if started.elapsed() > Duration::from_secs(30) => bail!(
                "no TCP between the pods through the DPU's OVN after 30 s\novn-controller:\n{}\nvswitchd:\n{}",
                stack.log_tail(Daemon::Controller),
                stack.log_tail(Daemon::Vswitchd)
            ),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    assert!(body.contains("Directory listing"), "{body}");
    println!(
        "TCP pod a -> pod b through the DPU's OVS after {:?}",
        started.elapsed()
    );

    // The switching work the DPU takes off the host: vswitchd's CPU time (in the DPU's
    // namespace here; on real hardware on the DPU's cores) during 5 s of iperf3 between
    // the pods. Printed, not asserted.
    let _iperf = ns_b.spawn(&["iperf3", "-s", "-1", "-B", "10.251.2.10"], None)?;
    std::thread::sleep(Duration::from_millis(500));
    let vswitchd = stack.pid(Daemon::Vswitchd);
    let cpu_before = vswitchd.and_then(cpu_seconds);
    let out = ns_a.exec(&["iperf3", "-c", "10.251.2.10", "-t", "5", "-J"])?;
    let cpu_after = vswitchd.and_then(cpu_seconds);
    let report: Value = serde_json::from_str(&out)?;
    let bytes = report["end"]["sum_received"]["bytes"]
        .as_f64()
        .unwrap_or(0.0);
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bytes > 0.0, "iperf3 moved nothing: {out}");
    if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
        println!(
            "iperf3 pod a -> pod b through the DPU's vswitchd: {:.2} Gbit/s, {:.2} GB; vswitchd CPU {:.2} s ({:.2} CPU-s per GB) - off the host in DPU mode",
            bps / 1e9,
            bytes / 1e9,
            a - b,
            (a - b) / (bytes / 1e9)
        );
    }

    // What vswitchd made of hw-offload (evidence for docs/dpu.md).
    let log = std::fs::read_to_string(stack.paths().log(Daemon::Vswitchd)).unwrap_or_default();
    for line in log.lines().filter(|l| l.to_lowercase().contains("offload")) {
        println!("vswitchd: {line}");
    }

    // CHECK on the host passes without OVS.
    let reply = invoke(&mut plugin, "CHECK", &cid_a, &ns_a, &conf);
    assert_eq!(reply.exit_code, 0, "CHECK: {}", reply.stdout);

    // DEL on the host withdraws the VF; the DPU unbinds it.
    let reply = invoke(&mut plugin, "DEL", &cid_a, &ns_a, &conf);
    assert_eq!(reply.exit_code, 0, "DEL: {}", reply.stdout);
    assert_eq!(plugin.assignments.announced.get(&cid_a), Some(&None));
    let desired_after: BTreeMap<String, String> = desired
        .iter()
        .filter(|(rep, _)| **rep != host_ifname(&cid_a, "eth0"))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    let plan = dpu::plan(&desired_after, &desired);
    assert_eq!(plan.unbind, vec![host_ifname(&cid_a, "eth0")]);
    for rep in &plan.unbind {
        dpu::unbind(&ovs, rep)?;
    }
    let ports = stack.vsctl(&["list-ports", &bridge])?;
    assert_eq!(ports.trim(), host_ifname(&cid_b, "eth0"));
    let reply = invoke(&mut plugin, "DEL", &cid_b, &ns_b, &conf);
    assert_eq!(reply.exit_code, 0, "DEL b: {}", reply.stdout);
    dpu::unbind(&ovs, &host_ifname(&cid_b, "eth0"))?;
    Ok(())
}
