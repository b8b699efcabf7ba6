//! The lab node runtime: what a container runtime and a CNI call would do on a real node,
//! done with namespaces and processes. A Pod bound to this node gets a network namespace
//! plumbed into OVN with its annotated address, each container's `command` + `args` run as
//! a process in it with its `env` and `workingDir` (the image is recorded, never pulled),
//! restarts per `restartPolicy` with the kubelet's back-off, readiness probes decide
//! `ready`, liveness probes kill the process (then restarted per the policy), and
//! [`crate::pod_status`] turns what ran into the Pod status a kubelet writes.
//! BareMetal and VNicIP objects bound to this node become hosts the same way; the lab gives
//! them a command in the `lab.ferry.io/command` annotation (a JSON argv).
//!
//! Over 600 lines: sandbox plumbing and container supervision share the Sandbox type;
//! container supervision is the seam to split along next.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{NetnsSocketFactory, SocketSource};
use crate::netns_admin::{self, Record};
use crate::plumb::{self, PlumbRequest};
use crate::probe::{self, ProbeKind, ProbeTarget};

/// Annotation with the argv a BareMetal or VNicIP host runs in the lab.
pub const COMMAND_ANNOTATION: &str = "lab.ferry.io/command";

/// Where the bridge is and where logs go.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub ovs_db: PathBuf,
    pub bridge: String,
    pub ovs_netns: Option<PathBuf>,
    pub port_type: String,
    pub log_dir: PathBuf,
}

/// A workload to run: a pod or a host, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `pod/ns/name`, `bm/ns/name`, ...
    pub key: String,
    /// The object's uid (empty for the node's own and probe ports): an object deleted and
    /// created again under the same name between two passes is a new workload, so its
    /// sandbox is started afresh and its status written again.
    pub uid: String,
    pub netns: String,
    pub iface_id: String,
    pub mac: String,
    pub ip_cidr: String,
    pub gateway: String,
    /// Extra routes inside the namespace: `(destination CIDR, via)`.
    pub routes: Vec<(String, String)>,
    pub containers: Vec<ContainerSpec>,
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    pub name: String,
    /// Recorded in the status; nothing is pulled.
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Used when it exists on the host; else the workload's own work directory.
    pub working_dir: Option<String>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

/// A container probe as the kubelet runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    /// A command run in the workload's namespace; exit 0 is success.
    Exec {
        command: Vec<String>,
    },
}

/// Consecutive results of one probe and when it runs next.
#[derive(Debug, Clone, Copy)]
struct ProbeState {
    next: Instant,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    fn new(p: &Probe) -> ProbeState {
        ProbeState {
            next: Instant::now() + p.initial_delay,
            successes: 0,
            failures: 0,
        }
    }
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    /// `Completed`, `Error`, or why it was killed.
    pub reason: String,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// A container's process: started by this agent, or adopted from the agent before it
/// (which died or restarted: the process writes its output to files, so it ran on).
#[derive(Debug)]
enum Proc {
    Owned(Child),
    /// Not our child: only its PID can be watched, and its exit code is unknown.
    Adopted {
        pid: i32,
        start: u64,
    },
}

/// The exit code reported for an adopted process that ended (its parent, not us, saw the
/// real one): 137, as the kubelet reports a container whose status it lost.
const UNKNOWN_EXIT: i32 = 137;

/// True while `pid` is the process that started at `start` and is not a zombie.
fn alive(pid: i32, start: u64) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, after)| after.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    !zombie && netns_admin::start_time(pid) == Some(start)
}

impl Proc {
    fn id(&self) -> i32 {
        match self {
            Proc::Owned(c) => c.id() as i32,
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// The exit status once the process ended.
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Proc::Owned(c) => c.try_wait().ok().flatten(),
            Proc::Adopted { pid, start } => (!alive(*pid, *start))
                .then(|| std::process::ExitStatus::from_raw(UNKNOWN_EXIT << 8)),
        }
    }
}

/// One container: its process, if running, and what the status shows of it.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    child: Option<Proc>,
    /// The thread copying the run's output into its log.
    tail: Option<crate::container_log::Tail>,
    pub restarts: i32,
    pub started_at: jiff::Timestamp,
    pub exit_code: Option<i32>,
    pub ready: bool,
    /// The run that ended last (the status's `lastState`, or `state` while not restarted).
    pub last: Option<Terminated>,
    /// Waiting out the restart back-off.
    pub backing_off: bool,
    next_restart: Option<Instant>,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    /// Set when a liveness probe failed: the reason of the run it ends.
    killed: Option<String>,
}

impl Running {
    fn started(
        spec: &ContainerSpec,
        (child, tail): (Proc, Option<crate::container_log::Tail>),
        restarts: i32,
    ) -> Running {
        Running {
            name: spec.name.clone(),
            child: Some(child),
            tail,
            restarts,
            started_at: jiff::Timestamp::now(),
            exit_code: None,
            ready: spec.readiness.is_none(),
            last: None,
            backing_off: false,
            next_restart: None,
            readiness: spec.readiness.as_ref().map(ProbeState::new),
            liveness: spec.liveness.as_ref().map(ProbeState::new),
            killed: None,
        }
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// One plumbed workload and its processes.
#[derive(Debug)]
pub struct Sandbox {
    pub workload: Workload,
    /// When the sandbox started (the Pod's `startTime`).
    pub started_at: jiff::Timestamp,
    pub containers: Vec<Running>,
    sockets: Option<SocketSource>,
    plumbed: PlumbRequest,
}

/// The directory a container's process starts in: its `workingDir` when that exists on
/// the host, else the workload's own work directory (lab backends write files there).
pub fn work_dir(cfg: &RuntimeConfig, w: &Workload, c: &ContainerSpec) -> PathBuf {
    match c.working_dir.as_deref().map(std::path::Path::new) {
        Some(d) if d.is_absolute() && d.is_dir() => d.to_path_buf(),
        _ => cfg.log_dir.join("work").join(&w.netns),
    }
}

/// Starts run `run` of a container; its output goes to the run's log file
/// ([`crate::container_log`]), of which the previous run's is kept. The process writes
/// its output to files itself, so it outlives the agent (see [`Sandbox::start`]).
fn spawn(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    record: &Record,
    run: i32,
) -> std::io::Result<(Proc, Option<crate::container_log::Tail>)> {
    let argv = if c.argv.is_empty() {
        vec!["sleep".to_string(), "infinity".to_string()]
    } else {
        c.argv.clone()
    };
    let log = crate::container_log::run_path(&cfg.log_dir, &w.netns, &c.name, run);
    // A run's files start empty (a reused run number after a pod's recreation).
    for s in [
        crate::container_log::Stream::Stdout,
        crate::container_log::Stream::Stderr,
    ] {
        let raw = crate::container_log::raw_path(&log, s);
        let _ = std::fs::remove_file(format!("{}.pos", raw.display()));
        let _ = std::fs::remove_file(raw);
    }
    let (out, err) = crate::container_log::open_outputs(&log)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &w.netns])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let work = work_dir(cfg, w, c);
    let _ = std::fs::create_dir_all(&work);
    cmd.current_dir(&work);
    cmd.envs(c.env.iter().map(|(k, v)| (k, v)));
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    record.add_process(pid);
    record.set_container(&format!("{}/{}", w.netns, c.name), &w.uid, pid, run);
    let tail = crate::container_log::follow(&log)
        .inspect_err(|e| tracing::warn!(workload = %w.key, container = %c.name, error = %e, "following the container's output failed"))
        .ok();
    crate::container_log::prune(&cfg.log_dir, &w.netns, &c.name, run - 1);
    Ok((Proc::Owned(child), tail))
}

fn stop_child(child: &mut Proc, record: &Record) {
    let pid = child.id();
    let group = nix::unistd::Pid::from_raw(-pid);
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    if let Proc::Owned(c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    record.remove_process(pid);
}

/// The container process a previous agent left running for this workload, if it is
/// still the same pod's; one of another pod of the same name is killed.
fn adoptable(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    record: &Record,
) -> Option<((Proc, Option<crate::container_log::Tail>), i32)> {
    let key = format!("{}/{}", w.netns, c.name);
    let r = record.snapshot().containers.get(&key)?.clone();
    if !alive(r.pid, r.start) {
        record.remove_process(r.pid);
        return None;
    }
    if r.uid != w.uid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-r.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        record.remove_process(r.pid);
        return None;
    }
    let log = crate::container_log::run_path(&cfg.log_dir, &w.netns, &c.name, r.run);
    let tail = crate::container_log::follow(&log).ok();
    tracing::info!(workload = %w.key, container = %c.name, pid = r.pid, "adopted the running container");
    Some((
        (
            Proc::Adopted {
                pid: r.pid,
                start: r.start,
            },
            tail,
        ),
        r.run,
    ))
}

impl Sandbox {
    /// Creates the namespace, plumbs it and starts the containers.
    pub fn start(
        cfg: &RuntimeConfig,
        w: Workload,
        record: &Arc<Record>,
    ) -> Result<Sandbox, String> {
        let path = netns_admin::create(&w.netns, record).map_err(|e| e.to_string())?;
        let req = PlumbRequest {
            netns_path: path.clone(),
            ifname: "eth0".into(),
            host_ifname: plumb::host_ifname(&w.key, "eth0"),
            mac: w.mac.parse().map_err(|e| format!("MAC {}: {e:?}", w.mac))?,
            ip_cidr: w
                .ip_cidr
                .parse()
                .map_err(|e| format!("address {}: {e}", w.ip_cidr))?,
            gateway: w
                .gateway
                .parse()
                .map_err(|e| format!("gateway {}: {e}", w.gateway))?,
            default_route: true,
            routes: w
                .routes
                .iter()
                .map(|(dst, via)| {
                    Ok((
                        dst.parse().map_err(|e| format!("route {dst}: {e}"))?,
                        via.parse().map_err(|e| format!("route via {via}: {e}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            iface_id: w.iface_id.clone(),
            bridge: cfg.bridge.clone(),
            ovs_db: cfg.ovs_db.clone(),
            port_type: cfg.port_type.clone(),
            ovs_netns: cfg.ovs_netns.clone(),
        };
        if let Err(e) = plumb::add(&req) {
            netns_admin::delete(&w.netns, record);
            return Err(format!("plumbing {}: {e}", w.key));
        }
        let sockets = NetnsSocketFactory::open(&path)
            .ok()
            .map(SocketSource::Netns);
        let mut containers = Vec::new();
        for c in &w.containers {
            // A restarted agent finds its pods running: it takes them over, as a kubelet
            // restart leaves the runtime's containers alone.
            if let Some((proc, run)) = adoptable(cfg, &w, c, record) {
                containers.push(Running::started(c, proc, run));
                continue;
            }
            let child = spawn(cfg, &w, c, record, 0)
                .map_err(|e| format!("starting {} in {}: {e}", c.name, w.netns))?;
            containers.push(Running::started(c, child, 0));
        }
        Ok(Sandbox {
            workload: w,
            started_at: jiff::Timestamp::now(),
            containers,
            sockets,
            plumbed: req,
        })
    }

    /// The host end of the sandbox's interface: in `dpu-host` mode the representor the
    /// DPU binds (announced as [`crate::dpu::ANNOTATION_VF`]).
    pub fn host_end(&self) -> &str {
        &self.plumbed.host_ifname
    }

    /// Restarts exited containers per the policy (back-off 1, 2, 4, 8, 16 s), runs the
    /// probes that are due (concurrently), kills containers whose liveness probe failed
    /// `failureThreshold` times in a row; true if anything a status shows changed.
    pub async fn tick(&mut self, cfg: &RuntimeConfig, record: &Record) -> bool {
        let mut changed = false;
        let ip: Option<IpAddr> = self
            .workload
            .ip_cidr
            .split('/')
            .next()
            .and_then(|s| s.parse().ok());
        let now = Instant::now();
        for (i, c) in self.containers.iter_mut().enumerate() {
            let spec = &self.workload.containers[i];
            if let Some(child) = c.child.as_mut()
                && let Some(status) = child.try_wait()
            {
                record.remove_process(child.id());
                c.child = None;
                if let Some(t) = c.tail.take() {
                    t.finish();
                }
                // A signal (say the liveness kill) reads as 128 + signal, as runtimes report it.
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
                });
                c.exit_code = Some(code);
                c.ready = false;
                c.last = Some(Terminated {
                    exit_code: code,
                    reason: c.killed.take().unwrap_or_else(|| {
                        if code == 0 { "Completed" } else { "Error" }.to_string()
                    }),
                    started_at: c.started_at,
                    finished_at: jiff::Timestamp::now(),
                });
                changed = true;
                let restart = match self.workload.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => code != 0,
                    RestartPolicy::Never => false,
                };
                let backoff = Duration::from_secs(1 << c.restarts.clamp(0, 4));
                c.next_restart = restart.then(|| now + backoff);
                c.backing_off = restart;
            }
            if c.child.is_none()
                && c.next_restart.is_some_and(|t| now >= t)
                && let Ok(child) = spawn(cfg, &self.workload, spec, record, c.restarts + 1)
            {
                let last = c.last.take();
                *c = Running::started(spec, child, c.restarts + 1);
                c.last = last;
                changed = true;
            }
        }
        // Due probes, all at once.
        let mut due = Vec::new();
        for (i, c) in self.containers.iter().enumerate() {
            if c.child.is_none() {
                continue;
            }
            let spec = &self.workload.containers[i];
            for (live, probe, state) in [
                (false, &spec.readiness, c.readiness),
                (true, &spec.liveness, c.liveness),
            ] {
                if let (Some(p), Some(st)) = (probe, state)
                    && now >= st.next
                {
                    due.push((i, live, p.clone()));
                }
            }
        }
        if due.is_empty() {
            return changed;
        }
        let netns = self.workload.netns.clone();
        let sockets = &self.sockets;
        let results = futures::future::join_all(
            due.iter()
                .map(|(_, _, p)| run_probe(p, ip, sockets.as_ref(), &netns)),
        )
        .await;
        for ((i, live, p), ok) in due.into_iter().zip(results) {
            let c = &mut self.containers[i];
            let state = if live {
                c.liveness.as_mut()
            } else {
                c.readiness.as_mut()
            };
            let Some(st) = state else { continue };
            st.next = Instant::now() + p.period;
            if ok {
                st.successes += 1;
                st.failures = 0;
            } else {
                st.failures += 1;
                st.successes = 0;
            }
            if live {
                if st.failures >= p.failure_threshold
                    && let Some(child) = c.child.as_ref()
                {
                    // The kubelet kills the container; the restart policy brings it back.
                    let group = nix::unistd::Pid::from_raw(-child.id());
                    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                    c.killed = Some("Error".into());
                    st.failures = 0;
                    tracing::info!(workload = %self.workload.key, container = %c.name,
                        "liveness probe failed; container killed");
                }
            } else {
                let ready = if st.successes >= p.success_threshold {
                    true
                } else if st.failures >= p.failure_threshold {
                    false
                } else {
                    c.ready
                };
                if ready != c.ready {
                    c.ready = ready;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Stops the processes and removes the namespace and its port.
    pub fn stop(mut self, record: &Record) {
        for c in &mut self.containers {
            if let Some(child) = c.child.as_mut() {
                stop_child(child, record);
            }
            if let Some(t) = c.tail.take() {
                t.finish();
            }
        }
        let _ = plumb::del(&self.plumbed.unplumb());
        netns_admin::delete(&self.workload.netns, record);
    }

    /// Removes the workload's container logs (the kubelet removes a deleted pod's logs).
    pub fn remove_logs(&self, cfg: &RuntimeConfig) {
        let _ = std::fs::remove_dir_all(crate::container_log::workload_dir(
            &cfg.log_dir,
            &self.workload.netns,
        ));
    }

    pub fn all_ready(&self) -> bool {
        self.containers.iter().all(|c| c.ready)
    }

    /// What a Pod status is made of ([`crate::pod_status::status`]).
    pub fn observed(&self, host_ip: Option<String>) -> crate::pod_status::PodRun {
        crate::pod_status::PodRun {
            containers: self
                .containers
                .iter()
                .zip(&self.workload.containers)
                .map(|(c, spec)| crate::pod_status::ContainerRun {
                    name: c.name.clone(),
                    image: spec.image.clone(),
                    running: c.running(),
                    ready: c.ready,
                    started_at: c.started_at,
                    restarts: c.restarts,
                    backing_off: c.backing_off,
                    last: c.last.clone(),
                })
                .collect(),
            restart: self.workload.restart,
            pod_ip: self
                .workload
                .ip_cidr
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            host_ip,
            start_time: self.started_at,
        }
    }
}

/// The namespace name of a workload: `ferry-NAME` in the default namespace.
pub fn netns_name(namespace: &str, name: &str) -> String {
    if namespace == "default" {
        format!("ferry-{name}")
    } else {
        format!("ferry-{namespace}-{name}")
    }
}

/// Runs one probe; false on failure or timeout.
async fn run_probe(
    p: &Probe,
    ip: Option<IpAddr>,
    sockets: Option<&SocketSource>,
    netns: &str,
) -> bool {
    match &p.action {
        ProbeAction::Exec { command } => {
            let mut cmd = tokio::process::Command::new("ip");
            cmd.args(["netns", "exec", netns])
                .args(command)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            matches!(
                tokio::time::timeout(p.timeout, cmd.status()).await,
                Ok(Ok(s)) if s.success()
            )
        }
        ProbeAction::Http { port, path } => {
            socket_probe(
                ProbeKind::Http { path: path.clone() },
                *port,
                p,
                ip,
                sockets,
            )
            .await
        }
        ProbeAction::Tcp { port } => socket_probe(ProbeKind::Tcp, *port, p, ip, sockets).await,
    }
}

/// An HTTP or TCP probe from inside the workload's namespace to its own address.
async fn socket_probe(
    kind: ProbeKind,
    port: u16,
    p: &Probe,
    ip: Option<IpAddr>,
    sockets: Option<&SocketSource>,
) -> bool {
    let (Some(ip), Some(sockets)) = (ip, sockets) else {
        return false;
    };
    probe::execute(sockets, &ProbeTarget { kind, ip, port }, p.timeout)
        .await
        .success
}

/// What a container's `env` may read through `valueFrom.fieldRef` (the downward API).
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub pod_ip: String,
    pub service_account: String,
}

/// Resolves the containers of a pod: argv from `command` + `args`, `env` (values and the
/// downward API's fieldRefs; other sources are left out), `workingDir`, the image, and
/// readiness and liveness probes with named ports resolved against the container's ports.
pub fn containers_of(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    fields: &PodFields,
) -> Vec<ContainerSpec> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    pod.containers
        .iter()
        .map(|c| {
            let mut argv = c.command.clone().unwrap_or_default();
            argv.extend(c.args.clone().unwrap_or_default());
            let port = |p: &IntOrString| match p {
                IntOrString::Int(i) => u16::try_from(*i).ok(),
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .and_then(|cp| u16::try_from(cp.container_port).ok()),
            };
            let probe = |p: &k8s_openapi::api::core::v1::Probe| {
                let action = if let Some(h) = &p.http_get {
                    ProbeAction::Http {
                        port: port(&h.port)?,
                        path: h.path.clone().unwrap_or_else(|| "/".into()),
                    }
                } else if let Some(t) = &p.tcp_socket {
                    ProbeAction::Tcp {
                        port: port(&t.port)?,
                    }
                } else if let Some(e) = &p.exec {
                    ProbeAction::Exec {
                        command: e.command.clone().unwrap_or_default(),
                    }
                } else {
                    return None;
                };
                let secs = |v: Option<i32>, d: i32| {
                    Duration::from_secs(u64::try_from(v.unwrap_or(d).max(0)).unwrap_or(0))
                };
                let count =
                    |v: Option<i32>, d: i32| u32::try_from(v.unwrap_or(d).max(1)).unwrap_or(1);
                Some(Probe {
                    action,
                    initial_delay: secs(p.initial_delay_seconds, 0),
                    period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
                    timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
                    success_threshold: count(p.success_threshold, 1),
                    failure_threshold: count(p.failure_threshold, 3),
                })
            };
            let env = c
                .env
                .iter()
                .flatten()
                .filter_map(|e| {
                    if let Some(v) = &e.value {
                        return Some((e.name.clone(), v.clone()));
                    }
                    let path = e
                        .value_from
                        .as_ref()?
                        .field_ref
                        .as_ref()?
                        .field_path
                        .clone();
                    let v = match path.as_str() {
                        "metadata.name" => fields.name.clone(),
                        "metadata.namespace" => fields.namespace.clone(),
                        "metadata.uid" => fields.uid.clone(),
                        "spec.nodeName" => fields.node_name.clone(),
                        "spec.serviceAccountName" => fields.service_account.clone(),
                        "status.podIP" => fields.pod_ip.clone(),
                        _ => return None,
                    };
                    Some((e.name.clone(), v))
                })
                .collect();
            ContainerSpec {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                argv,
                env,
                working_dir: c.working_dir.clone(),
                readiness: c.readiness_probe.as_ref().and_then(probe),
                liveness: c.liveness_probe.as_ref().and_then(probe),
            }
        })
        .collect()
}

/// The argv of a host from its annotation.
pub fn host_command(annotations: &BTreeMap<String, String>) -> Vec<ContainerSpec> {
    let argv: Vec<String> = annotations
        .get(COMMAND_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    vec![ContainerSpec {
        name: "host".into(),
        argv,
        ..Default::default()
    }]
}
