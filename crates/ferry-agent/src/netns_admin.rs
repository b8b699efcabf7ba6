//! Named network namespaces the agent creates and removes (`ip netns`), and the record of
//! everything it created, so a crashed agent's leftovers can be removed exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, run};
use crate::plumb::{self, UnplumbRequest};

/// Path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// What the agent created, persisted after every change.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Created {
    pub netns: BTreeSet<String>,
    /// `(pid, start time in clock ticks)` of processes it started.
    pub processes: BTreeSet<(i32, u64)>,
    /// Ports plumbed outside any namespace of its own (the node interface on a real node).
    #[serde(default)]
    pub ports: BTreeSet<CreatedPort>,
    /// The running container processes by `NETNS/CONTAINER`, so a restarted agent adopts
    /// them instead of starting them again (their output goes to files, not to the agent).
    #[serde(default)]
    pub containers: BTreeMap<String, RecordedContainer>,
}

/// A container process the agent started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordedContainer {
    /// The workload's uid: a pod created again under the same name is not adopted.
    pub uid: String,
    pub pid: i32,
    /// Start time in clock ticks, to tell the process from a reused PID.
    pub start: u64,
    /// The run (restart count) it is.
    pub run: i32,
}

/// A veth whose host end is a port of an OVS bridge; deleting the host end removes its
/// peer (e.g. `ferry0` in the host's namespace) too.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CreatedPort {
    pub host_ifname: String,
    /// The namespace the host end lives in (where `ovs-vswitchd` runs); `None` = the
    /// agent's own.
    pub ovs_netns: Option<PathBuf>,
    pub bridge: String,
    pub ovs_db: PathBuf,
}

impl CreatedPort {
    /// The removal request: OVS port and host end (the peer goes with it).
    pub fn unplumb(&self) -> UnplumbRequest {
        UnplumbRequest {
            netns_path: None,
            ifname: String::new(),
            host_ifname: self.host_ifname.clone(),
            bridge: self.bridge.clone(),
            ovs_db: self.ovs_db.clone(),
            ovs_netns: self.ovs_netns.clone(),
        }
    }
}

/// The on-disk record (`<state_dir>/agent-<node>.json`).
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    created: Mutex<Created>,
}

impl Record {
    pub fn open(path: PathBuf) -> Record {
        let created = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Record {
            path,
            created: Mutex::new(created),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Created)) {
        let mut c = self.created.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_vec_pretty(&*c).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }

    pub fn add_netns(&self, name: &str) {
        self.update(|c| {
            c.netns.insert(name.to_string());
        });
    }
    pub fn remove_netns(&self, name: &str) {
        self.update(|c| {
            c.netns.remove(name);
        });
    }
    pub fn add_process(&self, pid: i32) {
        let start = start_time(pid).unwrap_or(0);
        self.update(|c| {
            c.processes.insert((pid, start));
        });
    }
    pub fn remove_process(&self, pid: i32) {
        self.update(|c| {
            c.processes.retain(|(p, _)| *p != pid);
            c.containers.retain(|_, r| r.pid != pid);
        });
    }
    /// Records a container process (after [`Record::add_process`]).
    pub fn set_container(&self, key: &str, uid: &str, pid: i32, run: i32) {
        let start = start_time(pid).unwrap_or(0);
        self.update(|c| {
            c.containers.insert(
                key.to_string(),
                RecordedContainer {
                    uid: uid.to_string(),
                    pid,
                    start,
                    run,
                },
            );
        });
    }
    pub fn add_port(&self, port: &CreatedPort) {
        self.update(|c| {
            c.ports.insert(port.clone());
        });
    }
    pub fn remove_port(&self, port: &CreatedPort) {
        self.update(|c| {
            c.ports.remove(port);
        });
    }
    pub fn snapshot(&self) -> Created {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell it from a reused PID.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Creates a named namespace with `lo` up, or reuses an existing one. A name whose file
/// is no longer a namespace (its mount was lost with the private mount namespace of a
/// crashed agent) is removed and created afresh.
pub fn create(name: &str, record: &Record) -> Result<PathBuf, CommandError> {
    let path = netns_path(name);
    if path.exists() && !is_netns(&path) {
        tracing::info!(netns = name, "replacing a stale namespace file");
        let _ = run("ip", &["netns", "del", name]);
    }
    if !path.exists() {
        record.add_netns(name);
        run("ip", &["netns", "add", name])?;
    }
    let _ = run("ip", &["-n", name, "link", "set", "lo", "up"]);
    Ok(path)
}

/// True when `path` is a mounted network namespace (a file of the `nsfs` pseudo file
/// system, like our own `/proc/self/ns/net`), not a plain file left behind.
pub fn is_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        (Ok(file), Ok(own)) => file.dev() == own.dev(),
        _ => false,
    }
}

pub fn delete(name: &str, record: &Record) {
    if netns_path(name).exists() {
        let _ = run("ip", &["netns", "del", name]);
    }
    record.remove_netns(name);
}

/// Removes what a record lists: processes (only if the PID still has the recorded start
/// time), then namespaces, then ports (OVS port and veth). Safe to run twice. Returns the
/// processes killed and the namespaces removed.
pub fn cleanup(path: &Path) -> (usize, usize) {
    let record = Record::open(path.to_path_buf());
    let created = record.snapshot();
    let mut killed = 0;
    for (pid, start) in &created.processes {
        if start_time(*pid) == Some(*start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
        record.remove_process(*pid);
    }
    let mut removed = 0;
    for ns in &created.netns {
        if netns_path(ns).exists() {
            let _ = run("ip", &["netns", "del", ns]);
            removed += 1;
        }
        record.remove_netns(ns);
    }
    for port in &created.ports {
        if let Err(e) = plumb::del(&port.unplumb()) {
            tracing::warn!(port = %port.host_ifname, error = %e, "removing a recorded port failed");
            continue;
        }
        record.remove_port(port);
    }
    (killed, removed)
}
