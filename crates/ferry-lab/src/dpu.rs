//! `ferry lab up --dpu`: the DPU split mode of docs/dpu.md on one machine. Each lab node's
//! chassis (`--chassis-per-node`: its own namespace with `ovs-vswitchd`, the OVS database
//! and `ovn-controller`, `hw-offload=true` set before vswitchd starts) stands for the
//! node's DPU, and a `ferry agent --mode dpu` process per node ([`DpuSide`]) binds the
//! representors there; the agents inside `ferry up` are the hosts' `dpu-host` agents (pods
//! only: the VF's pod end into the pod, the representor into the DPU's namespace, never an
//! OVS call). Every process is put in a cgroup v2 of its side ([`place`]): `host` (`ferry
//! up`: API server, controllers, the host agents and the pods they run), `NODE-dpu` (that
//! DPU's OVS, ovn-controller and `dpu` agent), `infra` (the central OVN and the witness
//! chassis, neither a node's), and in full mode `NODE-ovs` (the node's OVS, on the host).
//!
//! [`check`] adds the DPU rows to `ferry lab check`; [`measure_cpu`] is the seed's
//! CPU-saving figure (cgroup CPU time of each side during iperf3 between pods), in either
//! mode (`ferry lab dpu-cpu`). This module must not touch what the lab did not create: its
//! cgroups are named after the lab's data directory and removed by [`down`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::lab::{CheckRow, LabDir};
use crate::topology;

/// The DPU host role (`deploy/dpu/rbac-dpu-host.yaml`), applied by `lab up --dpu` before
/// any pod: the host agents write the VF annotation with their node identity.
pub const DPU_HOST_RBAC: &str = include_str!("../../../deploy/dpu/rbac-dpu-host.yaml");

/// `other_config` the DPUs' OVS gets before its `ovs-vswitchd` starts.
pub fn hw_offload_config() -> Vec<(String, String)> {
    vec![("hw-offload".into(), "true".into())]
}

/// The objects `lab up --dpu` applies first (the DPU host role and its binding).
pub fn objects() -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(DPU_HOST_RBAC)
        .unwrap_or_default()
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

/// Whether the lab in `lab` runs in DPU mode (`lab.json`).
pub fn is_dpu(lab: &LabDir) -> bool {
    std::fs::read(lab.dir.join("lab.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m["dpu"] == true)
}

// === cgroups ===

/// The cgroup of the host side: `ferry up` and everything it runs that is not a node's
/// switching (pods included: they are the host's workload).
pub const HOST: &str = "host";
/// The central OVN and the witness chassis: the lab's, no node's.
pub const INFRA: &str = "infra";
/// The lab's bare-metal, VM and VNIC hosts, which the `dpu` agents run (they stand for
/// machines of their own, neither a host's pods nor the DPU's work).
pub const LAB_HOSTS: &str = "lab-hosts";

/// The cgroup of node `node`'s switching: its DPU (`NODE-dpu`), or in full mode the host's
/// own (`NODE-ovs`).
pub fn switch_cgroup(node: &str, dpu: bool) -> String {
    format!("{node}-{}", if dpu { "dpu" } else { "ovs" })
}

/// The lab's cgroup directory under the cgroup2 root: `ferry-lab-` and a hash of its data
/// directory, so two labs never share one.
pub fn lab_cgroup_name(data_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ferry-lab-{:08x}", h as u32)
}

/// The cgroup2 mount point from `/proc/self/mountinfo` (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid v1/v2 host).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// `usage_usec` of a `cpu.stat` (present in every cgroup v2 cgroup, controller or not).
pub fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The lab's cgroups (created on first use).
#[derive(Debug, Clone)]
pub struct LabCgroups {
    pub base: PathBuf,
}

impl LabCgroups {
    /// The lab's cgroup directory for the lab data directory `data_dir` (not created).
    pub fn for_data_dir(data_dir: &Path) -> Result<LabCgroups, String> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let root = cgroup2_mount(&mi).ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
        Ok(LabCgroups {
            base: root.join(lab_cgroup_name(data_dir)),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// Moves `pid` (the whole process) into cgroup `name`, creating it.
    pub fn add(&self, name: &str, pid: i32) -> Result<(), String> {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving pid {pid} to {}: {e}", dir.display()))
    }

    /// CPU time used so far by cgroup `name` (µs); `None` if it does not exist.
    pub fn usage_usec(&self, name: &str) -> Option<u64> {
        parse_usage_usec(&std::fs::read_to_string(self.path(name).join("cpu.stat")).ok()?)
    }

    /// The processes in cgroup `name`.
    pub fn pids(&self, name: &str) -> Vec<i32> {
        std::fs::read_to_string(self.path(name).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The cgroups that exist (names).
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.base)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// Removes the (empty) cgroups; a cgroup still holding a process stays and is named.
    pub fn remove(&self) -> Result<(), String> {
        let mut left = Vec::new();
        for n in self.names() {
            if std::fs::remove_dir(self.path(&n)).is_err() {
                left.push(n);
            }
        }
        if self.base.exists() && std::fs::remove_dir(&self.base).is_err() {
            left.push(self.base.display().to_string());
        }
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("cgroups still in use: {left:?}")),
        }
    }
}

/// What runs where, as read from the lab's pidfiles and `/proc`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Processes {
    /// `ferry up`.
    pub host_root: i32,
    /// pid -> parent pid, of every process.
    pub parents: BTreeMap<i32, i32>,
    /// Per node: the OVS database, `ovs-vswitchd` and `ovn-controller` of its chassis.
    pub switching: BTreeMap<String, Vec<i32>>,
    /// Per node: its `ferry agent --mode dpu`.
    pub dpu_agents: BTreeMap<String, i32>,
    /// The central OVN's and the witness chassis' daemons.
    pub infra: Vec<i32>,
}

/// The cgroup of every process of the lab (pid -> cgroup name): a node's switching goes
/// to [`switch_cgroup`] (with its `dpu` agent), the infrastructure to [`INFRA`], what the
/// `dpu` agents run (the lab's non-pod hosts) to [`LAB_HOSTS`], and `ferry up` with every
/// other descendant of it to [`HOST`].
pub fn assign(p: &Processes, dpu: bool) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    for (node, pids) in &p.switching {
        for pid in pids {
            out.insert(*pid, switch_cgroup(node, dpu));
        }
    }
    for (node, pid) in &p.dpu_agents {
        out.insert(*pid, switch_cgroup(node, true));
    }
    for pid in &p.infra {
        out.entry(*pid).or_insert_with(|| INFRA.to_string());
    }
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, ppid) in &p.parents {
        children.entry(*ppid).or_default().push(*pid);
    }
    // Descendants of `roots` not placed above go to `name` (a placed process' children
    // stay with it).
    let descend = |roots: Vec<i32>, name: &str, out: &mut BTreeMap<i32, String>| {
        let mut todo = roots;
        let mut seen = BTreeSet::new();
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) || out.contains_key(&pid) {
                continue;
            }
            out.insert(pid, name.to_string());
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    };
    let hosted: Vec<i32> = p
        .dpu_agents
        .values()
        .flat_map(|a| children.get(a).cloned().unwrap_or_default())
        .collect();
    descend(hosted, LAB_HOSTS, &mut out);
    descend(vec![p.host_root], HOST, &mut out);
    out
}

fn pids_in(run_dir: &Path) -> Vec<i32> {
    std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.trim().parse().ok())
        .filter(|pid: &i32| Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

fn parents() -> BTreeMap<i32, i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // comm may hold spaces and parentheses: the fields after the last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// The pidfile of node `node`'s `dpu` agent.
pub fn dpu_agent_pidfile(data_dir: &Path, node: &str) -> PathBuf {
    data_dir.join("dpu").join(format!("{node}.pid"))
}

fn read_pid(path: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Reads what runs in the lab under `data_dir` (`DIR/ferry`) for `nodes`.
pub fn processes(data_dir: &Path, nodes: &[&str], host_root: i32) -> Processes {
    let ovn = data_dir.join("ovn");
    let mut p = Processes {
        host_root,
        parents: parents(),
        ..Default::default()
    };
    let mut per_node = false;
    for node in nodes {
        let dir = ferry_ovn_stack::fabric::node_chassis_dir(&ovn, node);
        if dir.exists() {
            per_node = true;
            p.switching
                .insert(node.to_string(), pids_in(&dir.join("run")));
        }
        if let Some(pid) = read_pid(&dpu_agent_pidfile(data_dir, node)) {
            p.dpu_agents.insert(node.to_string(), pid);
        }
    }
    let central = ferry_ovn_stack::LabPaths::new(&ovn);
    if per_node {
        p.infra = pids_in(&central.run_dir);
        p.infra.extend(pids_in(
            &ferry_ovn_stack::fabric::node_chassis_dir(&ovn, ferry_ovn_stack::fabric::WITNESS)
                .join("run"),
        ));
    } else {
        // One chassis shared by the nodes (full mode without --chassis-per-node): its OVS
        // is the hosts' switching, the rest is infrastructure.
        use ferry_ovn_stack::Daemon;
        let switching: Vec<i32> = [Daemon::OvsDb, Daemon::Vswitchd, Daemon::Controller]
            .into_iter()
            .filter_map(|d| read_pid(&central.pidfile(d)))
            .collect();
        p.infra = pids_in(&central.run_dir)
            .into_iter()
            .filter(|pid| !switching.contains(pid))
            .collect();
        p.switching.insert("nodes".into(), switching);
    }
    p
}

/// Puts every process of the lab in its cgroup ([`assign`]); how many moved.
pub fn place(data_dir: &Path, nodes: &[&str], dpu: bool, host_root: i32) -> Result<usize, String> {
    let cg = LabCgroups::for_data_dir(data_dir)?;
    let procs = processes(data_dir, nodes, host_root);
    let mut current: BTreeMap<i32, String> = BTreeMap::new();
    for n in cg.names() {
        for pid in cg.pids(&n) {
            current.insert(pid, n.clone());
        }
    }
    let mut moved = 0;
    for (pid, name) in assign(&procs, dpu) {
        if current.get(&pid) == Some(&name) {
            continue;
        }
        // A process gone meanwhile is fine.
        if cg.add(&name, pid).is_ok() {
            moved += 1;
        }
    }
    Ok(moved)
}

// === the DPU side of `ferry up --dpu` ===

/// One node's DPU: where its OVS is and the node's identity.
#[derive(Debug, Clone)]
pub struct DpuNode {
    pub node: String,
    pub kubeconfig: PathBuf,
    pub ovs_db: PathBuf,
    /// The DPU's namespace (the chassis' `ovs-vswitchd` namespace).
    pub ovs_netns: String,
    pub external_ip: Option<std::net::Ipv4Addr>,
}

/// What `ferry up --dpu` gives its DPU agents.
#[derive(Debug, Clone)]
pub struct DpuSpec {
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// `ferry up`'s data directory.
    pub data_dir: PathBuf,
    pub service_cidr: String,
    /// `--cluster-dns` (empty: none).
    pub cluster_dns: String,
    pub nodes: Vec<DpuNode>,
}

/// The command line of node `n`'s `dpu` agent: lab mode (the node's namespace, its probes,
/// the lab hosts that sit on OVS), OVS in the DPU's namespace, `--hw-offload` (read back).
pub fn dpu_agent_args(spec: &DpuSpec, n: &DpuNode) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "agent".into(),
        "--mode=dpu".into(),
        "--lab".into(),
        "--hw-offload".into(),
        format!("--node={}", n.node),
        format!("--kubeconfig={}", n.kubeconfig.display()),
        format!("--ovs-db={}", n.ovs_db.display()),
        format!("--ovs-netns={}", n.ovs_netns),
        format!("--state-dir={}", spec.data_dir.join("agent-dpu").display()),
        format!("--service-cidr={}", spec.service_cidr),
        format!("--cluster-dns={}", spec.cluster_dns),
    ];
    if let Some(ip) = n.external_ip {
        a.push(format!("--external-ip={ip}"));
    }
    a
}

/// How often [`DpuSide`] puts processes back in their cgroup: OVS 3.1's userspace
/// conntrack aborts `ovs-vswitchd` now and then, and its supervisor (in `ferry up`) starts
/// the new one in `ferry up`'s own cgroup, the host's.
const KEEP_PLACED: Duration = Duration::from_secs(1);

/// The `dpu` agents of a running `ferry up --dpu`, one process per node.
#[derive(Debug)]
pub struct DpuSide {
    data_dir: PathBuf,
    agents: Vec<(String, Child)>,
    keeper: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl DpuSide {
    /// Starts each node's `dpu` agent (log `DIR/dpu/NODE.log`) and places every process
    /// of the lab in its cgroup ([`place`], `ferry up` being this process).
    pub fn start(spec: &DpuSpec) -> Result<DpuSide, String> {
        let dir = spec.data_dir.join("dpu");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut side = DpuSide {
            data_dir: spec.data_dir.clone(),
            agents: Vec::new(),
            keeper: None,
        };
        let cg = LabCgroups::for_data_dir(&spec.data_dir)?;
        for n in &spec.nodes {
            let log_path = dir.join(format!("{}.log", n.node));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(&spec.ferry)
                .args(dpu_agent_args(spec, n))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting node {}'s dpu agent: {e}", n.node))?;
            let pid = child.id() as i32;
            std::fs::write(dpu_agent_pidfile(&spec.data_dir, &n.node), pid.to_string())
                .map_err(|e| e.to_string())?;
            cg.add(&switch_cgroup(&n.node, true), pid)?;
            tracing::info!(node = %n.node, pid, log = %log_path.display(), "dpu agent started");
            side.agents.push((n.node.clone(), child));
        }
        let nodes: Vec<String> = spec.nodes.iter().map(|n| n.node.clone()).collect();
        let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
        place(&spec.data_dir, &refs, true, std::process::id() as i32)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, data_dir) = (stop.clone(), spec.data_dir.clone());
        let keeper = std::thread::Builder::new()
            .name("ferry-dpu-cgroups".into())
            .spawn(move || {
                let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(KEEP_PLACED);
                    match place(&data_dir, &refs, true, std::process::id() as i32) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(moved = n, "processes put back in their cgroup"),
                        Err(e) => tracing::warn!(error = %e, "placing the lab's processes"),
                    }
                }
            })
            .map_err(|e| format!("starting the cgroup keeper: {e}"))?;
        side.keeper = Some((stop, keeper));
        Ok(side)
    }

    /// Stops the agents (SIGTERM, then SIGKILL after 20 s): each removes what it plumbed.
    pub fn stop(mut self) {
        if let Some((stop, keeper)) = self.keeper.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = keeper.join();
        }
        for (_, c) in &self.agents {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (node, c) in &mut self.agents {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(c.try_wait(), Ok(None)) {
                tracing::warn!(%node, "dpu agent did not stop; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_file(dpu_agent_pidfile(&self.data_dir, node));
        }
    }
}

/// `lab down`: removes what the `dpu` agents left (namespaces, processes) and the lab's
/// cgroups; lines for the report.
pub fn down(lab: &LabDir) -> Vec<String> {
    let mut report = Vec::new();
    for node in topology::NODES {
        let (killed, netns) = ferry_agent::netns_admin::cleanup(&ferry_agent::node::record_path(
            &lab.data().join("agent-dpu"),
            node,
        ));
        if killed + netns > 0 {
            report.push(format!(
                "{node} DPU: removed {netns} namespaces, {killed} processes left by the dpu agent"
            ));
        }
    }
    if let Ok(cg) = LabCgroups::for_data_dir(&lab.data())
        && cg.base.exists()
    {
        match cg.remove() {
            Ok(()) => report.push(format!("removed cgroup {}", cg.base.display())),
            Err(e) => report.push(e),
        }
    }
    report
}

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
    /// One line for the check table and the docs.
    pub fn render(&self) -> String {
        let per: Vec<String> = self
            .cgroups
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        format!(
            "{} mode, iperf3 {}s {} -> {}: {:.2} Gbit/s; host switching {:.2} CPU-s{}, host total {:.2} CPU-s, DPUs {:.2} CPU-s [{}]",
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
    let before = usages(&cg);
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("ferry-{client}"), "iperf3", "-c"])
        .arg(&ip)
        .args(["-p", "5001", "-t", &seconds.to_string(), "-J"])
        .output()
        .map_err(|e| format!("iperf3: {e}"))?;
    let elapsed = t.elapsed().as_secs_f64();
    let after = usages(&cg);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| {
            format!(
                "iperf3 {client} -> {server} ({ip}): {}",
                v["error"].as_str().unwrap_or("no result")
            )
        })?;
    let cgroups = figure(&before, &after);
    let (host_s, host_switching_s, dpu_s) = sides(&cgroups);
    Ok(CpuFigure {
        dpu,
        client: client.into(),
        server: server.into(),
        seconds: (elapsed * 10.0).round() / 10.0,
        gbits_per_s: bps / 1e9,
        host_s,
        host_switching_s,
        dpu_s,
        cgroups,
    })
}

// === the DPU rows of `ferry lab check` ===

const OVS_PROGRAMS: [&str; 3] = ["ovs-vswitchd", "ovsdb-server", "ovn-controller"];

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
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
        .map(comm)
        .filter(|c| OVS_PROGRAMS.contains(&c.as_str()))
        .collect();
    let host_n = cg.pids(HOST).len();
    let mut problems = Vec::new();
    let mut per_dpu = Vec::new();
    for node in topology::NODES {
        let name = switch_cgroup(node, true);
        let comms: BTreeSet<String> = cg.pids(&name).into_iter().map(comm).collect();
        for want in OVS_PROGRAMS.iter().chain(&["ferry"]) {
            if !comms.contains(*want) {
                problems.push(format!("{name} has no {want}"));
            }
        }
        // The DPU runs its switching and its agent, no workload.
        for other in comms.iter().filter(|c| {
            !OVS_PROGRAMS.contains(&c.as_str())
                && !["ferry", "ovs-vsctl", "ip"].contains(&c.as_str())
        }) {
            problems.push(format!("{name} runs {other}"));
        }
        per_dpu.push(format!(
            "{name}: {}",
            comms.into_iter().collect::<Vec<_>>().join(" ")
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

#[cfg(test)]
mod tests;
