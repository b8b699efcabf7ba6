//! Ferry's roles as processes of their own, for `ferry up --role-processes`: the API
//! server, two controller replicas (one leads, one stands by), each node's agent and its
//! cluster DNS server (`ferry dns`) run as
//! child processes of `ferry up`, each restarted [`RESTART_DELAY`] after it dies (what
//! systemd's `Restart=always` or a kubelet does for a static pod), so that `ferry lab
//! faults` can `kill -9` one of them and nothing else. In one process (the default) a
//! kill takes everything down at once.
//!
//! Layout under `DATA/roles/`: `NAME.pid` (the live PID), `NAME.log` (appended across
//! restarts), `NAME.hold` (while it exists the role is not restarted: a fault that must
//! stay down for its measurement). Every start is recorded in the OVN stack's registry
//! (owner [`OWNER`]) so that `ferry lab down` stops leftovers even after `ferry up` itself
//! was killed. This module must not decide anything about faults.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_ovn_stack::Registry;
use ferry_ovn_stack::process::{ProcessRecord, start_time, terminate};

/// The registry owner of role processes.
pub const OWNER: &str = "ferry-role";

/// How long after a role died it is started again: systemd's default `RestartSec`. It was
/// 500 ms, and the API server's outage after a `kill -9` (restart delay plus start-up,
/// ~1.1 s) then outlasted the lab controller's 1.5 s renew deadline once its last renewal
/// was counted: the leader stepped down and its repair pass delayed the next change to
/// ~4.2 s (issue 15's target: 3 s).
pub const RESTART_DELAY: Duration = Duration::from_millis(100);

/// The group ID node agents run with, plus the node's index (1-based): root keeps every
/// capability with another group, and sockets carry it (`meta skgid`), so that a fault can
/// cut one node's agent off the API server with an nftables rule and nothing else.
pub const AGENT_GID_BASE: u32 = 64_000;

/// The directory of role files under a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("roles")
}

/// `DATA/roles/NAME.pid`.
pub fn pidfile(data_dir: &Path, name: &str) -> PathBuf {
    dir(data_dir).join(format!("{name}.pid"))
}

/// `DATA/roles/NAME.hold`.
pub fn hold_file(data_dir: &Path, name: &str) -> PathBuf {
    dir(data_dir).join(format!("{name}.hold"))
}

/// `DATA/roles/NAME.log`.
pub fn log_file(data_dir: &Path, name: &str) -> PathBuf {
    dir(data_dir).join(format!("{name}.log"))
}

/// The role name of the API server.
pub const APISERVER: &str = "apiserver";

/// The role names of the two controller replicas (also their Lease identities).
pub const CONTROLLERS: [&str; 2] = ["controller-a", "controller-b"];

/// The controller replicas' leader Lease in the lab, in seconds: a standby takes over
/// within about this long after the leader's `kill -9` (the production default is 5 s).
pub const LAB_LEASE_S: u64 = 2;

/// The role name of a node's agent.
pub fn agent(node: &str) -> String {
    format!("agent-{node}")
}

/// The role name of a node's cluster DNS server (`ferry dns --node NODE`): a process of
/// its own, so that the agent's `kill -9` leaves the node's DNS answering.
pub fn dns(node: &str) -> String {
    format!("dns-{node}")
}

/// One role: its name and command line (and the group it runs with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub name: String,
    pub argv: Vec<String>,
    pub gid: Option<u32>,
}

struct Slot {
    spec: RoleSpec,
    child: Option<Child>,
    died_at: Option<Instant>,
}

/// The running roles and the thread that restarts them.
pub struct Roles {
    data_dir: PathBuf,
    registry: Option<Registry>,
    slots: Arc<Mutex<Vec<Slot>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roles")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn spawn(data_dir: &Path, registry: Option<&Registry>, spec: &RoleSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(data_dir, &spec.name))?;
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(g) = spec.gid {
        cmd.gid(g);
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    std::fs::write(pidfile(data_dir, &spec.name), format!("{pid}\n"))?;
    if let Some(r) = registry {
        let rec = ProcessRecord {
            name: format!("role:{}", spec.name),
            owner: OWNER.into(),
            pid,
            argv: spec.argv.clone(),
            start_time: start_time(pid),
        };
        if let Err(e) = r.put_process(&rec) {
            tracing::warn!(role = spec.name, error = %e, "recording a role process");
        }
    }
    tracing::info!(role = spec.name, pid, "role started");
    Ok(child)
}

impl Roles {
    /// Starts every role and the thread that restarts them.
    pub fn start(
        data_dir: &Path,
        registry: Option<Registry>,
        specs: Vec<RoleSpec>,
    ) -> std::io::Result<Roles> {
        std::fs::create_dir_all(dir(data_dir))?;
        let mut slots = Vec::new();
        for spec in specs {
            let _ = std::fs::remove_file(hold_file(data_dir, &spec.name));
            let child = spawn(data_dir, registry.as_ref(), &spec)?;
            slots.push(Slot {
                spec,
                child: Some(child),
                died_at: None,
            });
        }
        let slots = Arc::new(Mutex::new(slots));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (slots, stop, data_dir) = (slots.clone(), stop.clone(), data_dir.to_path_buf());
            let registry = registry.clone();
            std::thread::Builder::new()
                .name("ferry-roles".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        supervise_once(&data_dir, registry.as_ref(), &slots);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })?
        };
        Ok(Roles {
            data_dir: data_dir.to_path_buf(),
            registry,
            slots,
            stop,
            thread: Some(thread),
        })
    }

    /// Starts one more role (supervised like the others).
    pub fn add(&self, spec: RoleSpec) -> std::io::Result<()> {
        let _ = std::fs::remove_file(hold_file(&self.data_dir, &spec.name));
        let child = spawn(&self.data_dir, self.registry.as_ref(), &spec)?;
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Slot {
                spec,
                child: Some(child),
                died_at: None,
            });
        Ok(())
    }

    /// Stops the restart thread, then every role (SIGTERM, SIGKILL after 20 s).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Agents first (they clean up their pods), the API server last.
        for slot in slots.iter_mut().rev() {
            if let Some(mut child) = slot.child.take() {
                let pid = child.id() as i32;
                let r = terminate(&slot.spec.name, pid, Duration::from_secs(20), || {
                    matches!(child.try_wait(), Ok(Some(_)) | Err(_))
                });
                if let Err(e) = r {
                    tracing::error!(role = slot.spec.name, error = %e, "stopping a role");
                }
            }
            let _ = std::fs::remove_file(pidfile(&self.data_dir, &slot.spec.name));
        }
    }
}

fn supervise_once(data_dir: &Path, registry: Option<&Registry>, slots: &Mutex<Vec<Slot>>) {
    let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    for slot in slots.iter_mut() {
        if let Some(child) = slot.child.as_mut() {
            match child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => {
                    tracing::warn!(role = slot.spec.name, %status, "role died; restarting")
                }
                Err(e) => tracing::warn!(role = slot.spec.name, error = %e, "cannot wait for role"),
            }
            slot.child = None;
            slot.died_at = Some(now);
        }
        let due = slot
            .died_at
            .is_some_and(|t| now.duration_since(t) >= RESTART_DELAY);
        if due && !hold_file(data_dir, &slot.spec.name).exists() {
            match spawn(data_dir, registry, &slot.spec) {
                Ok(child) => {
                    slot.child = Some(child);
                    slot.died_at = None;
                }
                Err(e) => {
                    tracing::error!(role = slot.spec.name, error = %e, "restarting a role");
                    slot.died_at = Some(now);
                }
            }
        }
    }
}

/// The live PID of a role, from its pidfile, if `/proc/PID/cmdline` still runs `ferry`
/// with the role's subcommand (never signal a recycled PID).
pub fn live_pid(data_dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile(data_dir, name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
    let sub = name.split('-').next().unwrap_or(name);
    (!zombie && text.contains(&format!(" {sub} "))).then_some(pid)
}
