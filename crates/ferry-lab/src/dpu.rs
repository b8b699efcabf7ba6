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

use serde_json::Value;

use crate::lab::LabDir;
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

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
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
            // `ferry up` runs with the lab's FERRY_SOCKET_LB: the socket LB is the host
            // agent's (it ran twice per node, both on one pin path and node annotation).
            let child = Command::new(&spec.ferry)
                .args(dpu_agent_args(spec, n))
                .env_remove("FERRY_SOCKET_LB")
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
        self.shutdown();
    }

    /// [`DpuSide::stop`]'s work; what is stopped is forgotten, so a second call (the drop
    /// after `stop`) does nothing.
    fn shutdown(&mut self) {
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
        self.agents.clear();
    }
}

/// A start that failed half-way (or a caller that forgot [`DpuSide::stop`]) leaves no
/// agent running.
impl Drop for DpuSide {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `lab down`: removes what the `dpu` agents left (namespaces, processes) and the lab's
/// cgroups; lines for the report.
pub fn down(lab: &LabDir) -> Vec<String> {
    let mut report = Vec::new();
    // A `ferry up` killed outright leaves its `dpu` agents running: stop them (only if the
    // pidfile's process is still this lab's dpu agent).
    for node in topology::NODES {
        let pidfile = dpu_agent_pidfile(&lab.data(), node);
        let Some(pid) = read_pid(&pidfile) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("--mode=dpu") && cmdline.contains(&format!("--node={node}")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            report.push(format!(
                "{node}: stopped the dpu agent left running (pid {pid})"
            ));
        }
    }
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

mod check;
pub use check::{CpuFigure, check, figure, measure_cpu, sides};

#[cfg(test)]
mod tests;
