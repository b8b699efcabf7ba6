//! The lab node runtime: what a container runtime and a CNI call would do on a real node,
//! done with namespaces and processes. A Pod bound to this node gets a network namespace
//! plumbed into OVN with its annotated address (a `hostNetwork` Pod stays in the agent's
//! own namespace), its init containers run to completion in order, then each container's
//! `command` + `args` run as a process in it with its `env` and `workingDir` (the image is
//! never pulled: one of the lab's OCI layout runs chrooted into its unpacked root file
//! system with the Pod's volumes, see [`crate::lab_image`]; any other is only recorded),
//! restarts per `restartPolicy` with the kubelet's back-off, readiness probes decide
//! `ready`, liveness probes kill the process (then restarted per the policy), and
//! [`crate::pod_status`] turns what ran into the Pod status a kubelet writes.
//! BareMetal and VNicIP objects bound to this node become hosts the same way; the lab gives
//! them a command in the `lab.ferry.io/command` annotation (a JSON argv).
//!
//! Container processes (start, init, stop, adopt) are in `process`, container probes in
//! `probes`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod probes;
mod process;

use probes::run_probe;
pub use process::work_dir;
use process::{Proc, adoptable, run_init, spawn, stop_child};

use crate::netns::{NetnsSocketFactory, SocketSource};
use crate::netns_admin::{self, Record};
use crate::plumb::{self, PlumbRequest};

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
    /// The network namespace; empty for `hostNetwork` (the agent's own, nothing plumbed).
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
    /// An init container: run to completion before the others start.
    pub init: bool,
    /// Bind mounts (`hostPath` volumes, the ServiceAccount token) of a container that runs
    /// in an image of the lab's layout; ignored otherwise.
    pub mounts: Vec<crate::lab_image::Mount>,
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
    /// `None` for `hostNetwork`.
    plumbed: Option<PlumbRequest>,
}

impl Sandbox {
    /// Creates the namespace, plumbs it and starts the containers.
    pub fn start(
        cfg: &RuntimeConfig,
        w: Workload,
        record: &Arc<Record>,
    ) -> Result<Sandbox, String> {
        if w.netns.is_empty() {
            return Sandbox::start_on_host(cfg, w, record);
        }
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
        if let Err(e) = plumb::ensure(&req) {
            netns_admin::delete(&w.netns, record);
            return Err(format!("plumbing {}: {e}", w.key));
        }
        let sockets = NetnsSocketFactory::open(&path)
            .ok()
            .map(SocketSource::Netns);
        let adopting = w.containers.iter().any(|c| {
            record
                .snapshot()
                .containers
                .contains_key(&format!("{}/{}", w.netns, c.name))
        });
        if !adopting && let Err(e) = run_init(cfg, &w, record) {
            let _ = plumb::del(&req.unplumb());
            netns_admin::delete(&w.netns, record);
            return Err(e);
        }
        let containers = Sandbox::containers(cfg, &w, record)?;
        Ok(Sandbox {
            workload: w,
            started_at: jiff::Timestamp::now(),
            containers,
            sockets,
            plumbed: Some(req),
        })
    }

    /// A `hostNetwork` workload: nothing plumbed, its processes in the agent's namespace.
    fn start_on_host(
        cfg: &RuntimeConfig,
        w: Workload,
        record: &Arc<Record>,
    ) -> Result<Sandbox, String> {
        let adopting = w.containers.iter().any(|c| {
            record
                .snapshot()
                .containers
                .contains_key(&format!("{}/{}", w.netns, c.name))
        });
        if !adopting {
            run_init(cfg, &w, record)?;
        }
        let containers = Sandbox::containers(cfg, &w, record)?;
        Ok(Sandbox {
            workload: w,
            started_at: jiff::Timestamp::now(),
            containers,
            sockets: Some(SocketSource::Host),
            plumbed: None,
        })
    }

    /// Starts (or adopts) the workload's containers, init containers aside.
    fn containers(
        cfg: &RuntimeConfig,
        w: &Workload,
        record: &Record,
    ) -> Result<Vec<Running>, String> {
        let mut containers = Vec::new();
        for c in w.containers.iter().filter(|c| !c.init) {
            // A restarted agent finds its pods running: it takes them over, as a kubelet
            // restart leaves the runtime's containers alone.
            if let Some((proc, run)) = adoptable(cfg, w, c, record) {
                containers.push(Running::started(c, proc, run));
                continue;
            }
            let child = spawn(cfg, w, c, record, 0)
                .map_err(|e| format!("starting {} in {}: {e}", c.name, w.netns))?;
            containers.push(Running::started(c, child, 0));
        }
        Ok(containers)
    }

    /// The host end of the sandbox's interface: in `dpu-host` mode the representor the
    /// DPU binds (announced as [`crate::dpu::ANNOTATION_VF`]).
    pub fn host_end(&self) -> &str {
        self.plumbed.as_ref().map_or("", |p| p.host_ifname.as_str())
    }

    /// The specs of the running containers (init containers aside), in `containers` order.
    fn specs(&self) -> Vec<&ContainerSpec> {
        self.workload
            .containers
            .iter()
            .filter(|c| !c.init)
            .collect()
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
        let specs: Vec<ContainerSpec> = self.specs().into_iter().cloned().collect();
        for (i, c) in self.containers.iter_mut().enumerate() {
            let spec = &specs[i];
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
            let spec = &specs[i];
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
        if let Some(p) = &self.plumbed {
            let _ = plumb::del(&p.unplumb());
            netns_admin::delete(&self.workload.netns, record);
        }
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
                .zip(self.specs())
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
            // A hostNetwork Pod's address is its node's (kubelet).
            pod_ip: match self.plumbed {
                Some(_) => self
                    .workload
                    .ip_cidr
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => host_ip.clone().unwrap_or_default(),
            },
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

pub use crate::pod_spec::{PodFields, PodInputs, containers_of, host_command};
