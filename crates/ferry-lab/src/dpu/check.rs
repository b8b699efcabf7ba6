//! The DPU rows of `ferry lab check` ([`check`]) and the seed's CPU-saving figure
//! ([`measure_cpu`]): each side's cgroup CPU time during iperf3 between two pods, in
//! either mode (`ferry lab dpu-cpu`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::{HOST, LabCgroups, dpu_agent_pidfile, is_dpu, place, read_pid, switch_cgroup};
use crate::lab::{CheckRow, LabDir};
use crate::topology;

// === the CPU figure ===

/// CPU time of each side of the lab over one iperf3 run between two pods.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuFigure {
    pub dpu: bool,
    pub client: String,
    pub server: String,
    pub seconds: f64,
    pub gbits_per_s: f64,
    /// CPU-seconds of the host cgroup (`ferry up`, its agents, the pods: iperf3's server).
    pub host_s: f64,
    /// CPU-seconds of the switching on the host (`NODE-ovs`; none in DPU mode).
    pub host_switching_s: f64,
    /// CPU-seconds of the DPUs (`NODE-dpu`: OVS, ovn-controller, the `dpu` agent).
    pub dpu_s: f64,
    /// Per cgroup, CPU-seconds.
    pub cgroups: BTreeMap<String, f64>,
}

/// The figure from the cgroups' `usage_usec` before and after a run.
pub fn figure(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(n, a)| {
            let b = before.get(n).copied().unwrap_or(0);
            (n.clone(), a.saturating_sub(b) as f64 / 1e6)
        })
        .collect()
}

/// Sums the per-cgroup CPU-seconds into (host, host switching, DPU).
pub fn sides(cgroups: &BTreeMap<String, f64>) -> (f64, f64, f64) {
    // A fold from +0.0: an empty float sum is -0.0.
    let sum = |suffix: &str| {
        cgroups
            .iter()
            .filter(|(n, _)| n.ends_with(suffix))
            .fold(0.0, |a, (_, v)| a + v)
    };
    (
        cgroups.get(HOST).copied().unwrap_or(0.0),
        sum("-ovs"),
        sum("-dpu"),
    )
}

impl CpuFigure {
    /// CPU-seconds spent switching (host and DPUs) per GB the run moved.
    pub fn switching_s_per_gb(&self) -> f64 {
        let gb = self.gbits_per_s * self.seconds / 8.0;
        match gb > 0.0 {
            true => (self.host_switching_s + self.dpu_s) / gb,
            false => 0.0,
        }
    }

    /// One line for the check table and the docs.
    pub fn render(&self) -> String {
        let per: Vec<String> = self
            .cgroups
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        format!(
            "{} mode, iperf3 {}s {} -> {}: {:.2} Gbit/s; host switching {:.2} CPU-s{}, host total {:.2} CPU-s, DPUs {:.2} CPU-s, switching {:.1} CPU-s per GB [{}]",
            if self.dpu { "DPU" } else { "full" },
            self.seconds,
            self.client,
            self.server,
            self.gbits_per_s,
            self.host_switching_s,
            if self.dpu {
                " (no OVS on the host)"
            } else {
                " (OVS on the host)"
            },
            self.host_s,
            self.dpu_s,
            self.switching_s_per_gb(),
            per.join(", ")
        )
    }
}

fn usages(cg: &LabCgroups) -> BTreeMap<String, u64> {
    cg.names()
        .into_iter()
        .filter_map(|n| Some((n.clone(), cg.usage_usec(&n)?)))
        .collect()
}

/// The PID of the lab's `ferry up`.
fn up_pid(lab: &LabDir) -> Option<i32> {
    read_pid(&lab.dir.join("ferry.pid"))
}

/// Runs iperf3 for `seconds` from pod `client` to pod `server` (its iperf3 on 5001) and
/// reads every cgroup's CPU time around it, after re-placing the lab's processes (a
/// daemon the supervisor restarted starts in `ferry up`'s cgroup).
pub async fn measure_cpu(
    lab: &LabDir,
    c: &Client,
    client: &str,
    server: &str,
    seconds: u32,
) -> Result<CpuFigure, String> {
    let dpu = is_dpu(lab);
    let host = up_pid(lab).ok_or("the lab's ferry up is not running")?;
    place(&lab.data(), &topology::NODES, dpu, host)?;
    let cg = LabCgroups::for_data_dir(&lab.data())?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let ip = pods
        .get(server)
        .await
        .map_err(|e| format!("pod {server}: {e}"))?
        .annotations()
        .get(ferry_api::ANNOTATION_IP)
        .cloned()
        .ok_or(format!("pod {server} has no address"))?;
    // A try can meet the server still busy with the seed check's last test, or an
    // `ovs-vswitchd` restart (OVS 3.1.0's conntrack aborts, docs/resilience.md): each try
    // is bounded, and the figure is taken from the first that measured something.
    let mut last_error = String::from("no result");
    for _ in 0..IPERF_TRIES {
        let before = usages(&cg);
        let t = Instant::now();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("ferry-{client}"),
                "timeout",
                "-k",
                "2",
            ])
            .arg((seconds + 10).to_string())
            .args(["iperf3", "-c"])
            .arg(&ip)
            .args(["-p", "5001", "-t", &seconds.to_string(), "-J"])
            .output()
            .map_err(|e| format!("iperf3: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        let after = usages(&cg);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(bps) = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .filter(|b| *b > 0.0)
        else {
            last_error = v["error"].as_str().unwrap_or("no result").to_owned();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let cgroups = figure(&before, &after);
        let (host_s, host_switching_s, dpu_s) = sides(&cgroups);
        return Ok(CpuFigure {
            dpu,
            client: client.into(),
            server: server.into(),
            seconds: (elapsed * 10.0).round() / 10.0,
            gbits_per_s: bps / 1e9,
            host_s,
            host_switching_s,
            dpu_s,
            cgroups,
        });
    }
    Err(format!(
        "iperf3 {client} -> {server} ({ip}): {last_error} ({IPERF_TRIES} tries)"
    ))
}

/// How many times [`measure_cpu`] runs iperf3 before it gives up.
const IPERF_TRIES: usize = 4;

// === the DPU rows of `ferry lab check` ===

const OVS_PROGRAMS: [&str; 3] = ["ovs-vswitchd", "ovsdb-server", "ovn-controller"];

/// The program a process runs: its executable's file name, else its `comm`. Not `comm`
/// alone: a child the agent has forked but not yet exec'd is named after the forking
/// thread ("tokio-rt-worker") while it still runs the agent's own binary.
fn program(pid: i32) -> String {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    match exe.as_ref().and_then(|e| e.file_name()) {
        Some(name) => name
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn row(check: &str, client: &str, target: &str, result: String, pass: bool) -> CheckRow {
    CheckRow {
        check: check.into(),
        client: client.into(),
        target: target.into(),
        result,
        pass,
    }
}

fn chassis_paths(lab: &LabDir, node: &str) -> ferry_ovn_stack::LabPaths {
    ferry_ovn_stack::LabPaths::new(&ferry_ovn_stack::fabric::node_chassis_dir(
        &lab.data().join("ovn"),
        node,
    ))
}

/// The DPU's namespace: the node chassis' `ovs-vswitchd` namespace (`OvnOptions::new`
/// names it `SYSTEM_ID-ovs`).
fn chassis_netns(node: &str) -> String {
    format!("{}-ovs", ferry_ovn_stack::fabric::node_chassis_name(node))
}

fn vsctl(db: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .arg("--timeout=10")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// Row: the host side runs no OVS, each DPU cgroup holds its OVS, ovn-controller and `dpu`
/// agent.
fn sides_row(lab: &LabDir) -> CheckRow {
    let cg = match LabCgroups::for_data_dir(&lab.data()) {
        Ok(c) => c,
        Err(e) => return row("dpu: processes per side", "-", "-", e, false),
    };
    let host_ovs: Vec<String> = cg
        .pids(HOST)
        .into_iter()
        .map(program)
        .filter(|c| OVS_PROGRAMS.contains(&c.as_str()))
        .collect();
    let host_n = cg.pids(HOST).len();
    let mut problems = Vec::new();
    let mut per_dpu = Vec::new();
    for node in topology::NODES {
        let name = switch_cgroup(node, true);
        let programs: BTreeSet<String> = cg.pids(&name).into_iter().map(program).collect();
        for want in OVS_PROGRAMS.iter().chain(&["ferry"]) {
            if !programs.contains(*want) {
                problems.push(format!("{name} has no {want}"));
            }
        }
        // The DPU runs its switching and its agent, no workload.
        for other in programs.iter().filter(|c| {
            !OVS_PROGRAMS.contains(&c.as_str())
                && !["ferry", "ovs-vsctl", "ip"].contains(&c.as_str())
        }) {
            problems.push(format!("{name} runs {other}"));
        }
        per_dpu.push(format!(
            "{name}: {}",
            programs.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
    if !host_ovs.is_empty() {
        problems.push(format!("host runs {host_ovs:?}"));
    }
    let pass = problems.is_empty();
    row(
        "dpu: processes per side",
        "cgroups",
        &cg.base.display().to_string(),
        format!(
            "host: {host_n} processes, no OVS/OVN daemon; {}{}",
            per_dpu.join("; "),
            if pass {
                String::new()
            } else {
                format!("; PROBLEMS: {}", problems.join(", "))
            }
        ),
        pass,
    )
}

/// Row: every pod's port on its node's DPU is the representor the host announced, with the
/// pod's `iface-id`, and the representor lives in the DPU's namespace.
async fn bindings_row(lab: &LabDir, c: &Client) -> CheckRow {
    let pods: Api<Pod> = Api::all(c.clone());
    let list = match pods.list(&Default::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            return row(
                "dpu: pods bound through representors",
                "-",
                "-",
                e.to_string(),
                false,
            );
        }
    };
    let mut counts = Vec::new();
    let mut problems = Vec::new();
    for node in topology::NODES {
        let present = vsctl(
            &chassis_paths(lab, node).ovs_sock,
            &[
                "--format=json",
                "--columns=name,external_ids",
                "find",
                "Interface",
                &format!("external_ids:{}=true", ferry_agent::dpu::EXTERNAL_ID_VF),
            ],
        )
        .and_then(|j| ferry_agent::dpu_agent::parse_present(&j));
        let present = match present {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{node}: {e}"));
                continue;
            }
        };
        let desired = ferry_agent::dpu::desired_bindings(&list, node);
        let on_node = list
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .count();
        if desired.len() != on_node {
            problems.push(format!(
                "{node}: {} of {on_node} pods announced a VF",
                desired.len()
            ));
        }
        for (rep, id) in &desired {
            if present.get(rep) != Some(id) {
                problems.push(format!("{node}: {rep} not bound to {id}"));
            }
            let in_dpu = Command::new("ip")
                .args(["-n", &chassis_netns(node), "link", "show", rep])
                .output()
                .is_ok_and(|o| o.status.success());
            if !in_dpu {
                problems.push(format!("{node}: {rep} not in {}", chassis_netns(node)));
            }
        }
        counts.push(format!("{node} {}/{on_node}", desired.len()));
    }
    let pass = problems.is_empty();
    row(
        "dpu: pods bound through representors",
        "host -> DPU",
        "br-int",
        format!(
            "pods bound by their DPU ({}), each representor in its DPU's namespace, iface-id = the pod's port{}",
            counts.join(", "),
            if pass {
                String::new()
            } else {
                format!("; PROBLEMS: {}", problems.join(", "))
            }
        ),
        pass,
    )
}

/// What this kernel says when asked for a tc-flower filter (in a scratch namespace).
fn tc_flower_probe() -> String {
    let ns = "ferry-dpu-tcprobe";
    let ip = |args: &[&str]| Command::new("ip").args(args).output();
    let _ = ip(&["netns", "add", ns]);
    let _ = ip(&[
        "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    let _ = Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", "v0", "ingress",
        ])
        .output();
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "filter", "add", "dev", "v0", "ingress", "protocol", "ip",
            "flower", "dst_ip", "10.0.0.1", "action", "drop",
        ])
        .output();
    let _ = ip(&["netns", "del", ns]);
    match out {
        Ok(o) if o.status.success() => "tc-flower available".into(),
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("tc filter failed")
            .trim()
            .to_string(),
        Err(e) => format!("tc: {e}"),
    }
}

/// Row: `hw-offload` set before vswitchd started and read back, vswitchd's flow API on,
/// and how many flows are offloaded (none without tc-flower: the evidence is named).
fn hw_offload_row(lab: &LabDir) -> CheckRow {
    let tc = tc_flower_probe();
    let mut parts = Vec::new();
    let mut pass = true;
    for node in topology::NODES {
        let p = chassis_paths(lab, node);
        let got = vsctl(
            &p.ovs_sock,
            &["get", "Open_vSwitch", ".", "other_config:hw-offload"],
        )
        .unwrap_or_else(|e| e);
        let on = ferry_agent::dpu::hw_offload_on(&got);
        let log =
            std::fs::read_to_string(p.log(ferry_ovn_stack::Daemon::Vswitchd)).unwrap_or_default();
        let flow_api = log.contains("Flow API Enabled");
        let offloaded = Command::new("ovs-appctl")
            .arg("-t")
            .arg(p.ctl(ferry_ovn_stack::Daemon::Vswitchd))
            .args(["dpctl/dump-flows", "type=offloaded"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
            .unwrap_or(0);
        pass &= on && flow_api;
        parts.push(format!(
            "{node}: hw-offload={} (read back), flow API {}, {offloaded} flows offloaded",
            got.trim(),
            if flow_api { "enabled" } else { "NOT enabled" }
        ));
    }
    let why = match tc.as_str() {
        "tc-flower available" => "tc-flower is available, but veths have no eswitch".into(),
        e => format!("this kernel has no tc-flower ('{e}'), so nothing can be offloaded"),
    };
    row(
        "dpu: hw-offload",
        "DPU OVS",
        "other_config",
        format!("{}; {why}", parts.join("; ")),
        pass,
    )
}

/// Row: with node2's `dpu` agent stopped (SIGSTOP) until its Lease lapses, the host does
/// not plumb a new pod; once it runs again (SIGCONT) the pod is plumbed and bound.
async fn lapsed_lease_row(lab: &LabDir, c: &Client) -> CheckRow {
    let node = topology::NODES[1];
    let name = "dpu-late";
    let check = "dpu: host refuses pods while its DPU's Lease lapsed";
    let Some(pid) = read_pid(&dpu_agent_pidfile(&lab.data(), node)) else {
        return row(check, node, name, "no dpu agent running".into(), false);
    };
    let agent = nix::unistd::Pid::from_raw(pid);
    let leases: Api<Lease> = Api::namespaced(c.clone(), ferry_agent::dpu::DPU_LEASE_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let _ = nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP);
    let result = async {
        // Wait for the Lease to lapse (10 s after its last renewal).
        let t = Instant::now();
        let refusal = loop {
            let l = leases
                .get_opt(&ferry_agent::dpu::dpu_lease_name(node))
                .await
                .map_err(|e| e.to_string())?;
            if let Err(r) = ferry_agent::dpu::admit(
                node,
                l.and_then(|l| l.spec).as_ref(),
                jiff::Timestamp::now(),
            ) {
                break r.to_string();
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err("the Lease never lapsed".to_string());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "annotations": {"iaas.yusur.io/subnet": "vpc1-subnet3"}},
            "spec": {"nodeName": node, "restartPolicy": "Always",
                "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"]}]}});
        pods.patch(name, &PatchParams::apply("ferry-lab").force(), &Patch::Apply(&pod))
            .await
            .map_err(|e| e.to_string())?;
        // Once the controller gave it an address the host would plumb it: give the host
        // agent a few passes (every 0.5 s).
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            if p.annotations().contains_key(ferry_api::ANNOTATION_IP) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let plumbed = Path::new("/var/run/netns")
            .join(format!("ferry-{name}"))
            .exists()
            || p.annotations().contains_key(ferry_agent::dpu::ANNOTATION_VF);
        Ok::<_, String>((refusal, phase, plumbed))
    }
    .await;
    let _ = nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT);
    let resumed = Instant::now();
    let (refusal, phase, plumbed) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = pods.delete(name, &DeleteParams::default()).await;
            return row(check, node, name, e, false);
        }
    };
    // Resumed: the Lease is renewed within 3 s and the host plumbs the pod, the DPU binds it.
    let mut bound = None;
    while resumed.elapsed() < Duration::from_secs(40) {
        let p = pods.get(name).await.ok();
        let running = p
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Running");
        let vf = p.as_ref().and_then(|p| {
            p.annotations()
                .get(ferry_agent::dpu::ANNOTATION_VF)
                .cloned()
        });
        if let (true, Some(rep)) = (running, vf) {
            let on_dpu = vsctl(
                &chassis_paths(lab, node).ovs_sock,
                &["get", "Interface", &rep, "external_ids:iface-id"],
            )
            .is_ok();
            if on_dpu {
                bound = Some((rep, resumed.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = pods.delete(name, &DeleteParams::default()).await;
    let refused = phase != "Running" && !plumbed;
    row(
        check,
        &format!("{node} (dpu agent SIGSTOP)"),
        &format!("pod {name}"),
        format!(
            "while stopped: {refusal}; pod {phase}, {}; after SIGCONT: {}",
            if plumbed { "PLUMBED" } else { "not plumbed" },
            match &bound {
                Some((rep, d)) => format!("Running and {rep} bound after {:.1}s", d.as_secs_f64()),
                None => "NOT running/bound after 40 s".into(),
            }
        ),
        refused && bound.is_some(),
    )
}

/// The DPU rows of `ferry lab check` (a lab up with `--dpu`).
pub async fn check(lab: &LabDir, c: &Client) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    // First re-place: a daemon restarted by its supervisor starts in ferry up's cgroup.
    let replaced = up_pid(lab)
        .map(|pid| place(&lab.data(), &topology::NODES, true, pid))
        .unwrap_or(Ok(0));
    if let Ok(n) = replaced
        && n > 0
    {
        eprintln!("note: {n} restarted process(es) were put back in their cgroup");
    }
    rows.push(sides_row(lab));
    rows.push(bindings_row(lab, c).await);
    rows.push(hw_offload_row(lab));
    let cpu = measure_cpu(lab, c, "client-vpc1", "svc1-ep-2", 5).await;
    rows.push(match cpu {
        Ok(f) => {
            let pass = f.gbits_per_s > 0.0 && f.host_switching_s == 0.0 && f.dpu_s > 0.0;
            row(
                "dpu: CPU spent switching (iperf3 pod to pod)",
                "client-vpc1",
                "svc1-ep-2:5001",
                f.render(),
                pass,
            )
        }
        Err(e) => row(
            "dpu: CPU spent switching (iperf3 pod to pod)",
            "client-vpc1",
            "svc1-ep-2:5001",
            e,
            false,
        ),
    });
    rows.push(lapsed_lease_row(lab, c).await);
    rows
}
