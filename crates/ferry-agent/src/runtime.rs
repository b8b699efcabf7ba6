//! The lab node runtime: what a container runtime and a CNI call would do on a real node,
//! done with namespaces and processes. A Pod bound to this node gets a network namespace
//! plumbed into OVN with its annotated address, each container's `command` + `args` run as
//! a process in it (the image is ignored), restarts per `restartPolicy`, and a status.
//! BareMetal and VNicIP objects bound to this node become hosts the same way; the lab gives
//! them a command in the `lab.ferry.io/command` annotation (a JSON argv).

use std::collections::BTreeMap;
use std::fs::File;
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

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub argv: Vec<String>,
    /// TCP port or HTTP path+port that decides readiness.
    pub readiness: Option<(u16, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// One running container.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    child: Option<Child>,
    pub restarts: i32,
    pub started_at: jiff::Timestamp,
    pub exit_code: Option<i32>,
    pub ready: bool,
    next_restart: Option<Instant>,
}

/// One plumbed workload and its processes.
#[derive(Debug)]
pub struct Sandbox {
    pub workload: Workload,
    pub containers: Vec<Running>,
    sockets: Option<SocketSource>,
    plumbed: PlumbRequest,
}

fn spawn(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    record: &Record,
) -> std::io::Result<Child> {
    let _ = std::fs::create_dir_all(&cfg.log_dir);
    let log = File::options()
        .create(true)
        .append(true)
        .open(cfg.log_dir.join(format!("{}-{}.log", w.netns, c.name)))?;
    let argv = if c.argv.is_empty() {
        vec!["sleep".to_string(), "infinity".to_string()]
    } else {
        c.argv.clone()
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &w.netns])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    // Lab backends write files relative to their working directory.
    let work = cfg.log_dir.join("work").join(&w.netns);
    let _ = std::fs::create_dir_all(&work);
    cmd.current_dir(&work);
    let child = cmd.spawn()?;
    record.add_process(child.id() as i32);
    Ok(child)
}

fn stop_child(child: &mut Child, record: &Record) {
    let pid = child.id() as i32;
    let group = nix::unistd::Pid::from_raw(-pid);
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
    record.remove_process(pid);
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
            let child = spawn(cfg, &w, c, record)
                .map_err(|e| format!("starting {} in {}: {e}", c.name, w.netns))?;
            containers.push(Running {
                name: c.name.clone(),
                child: Some(child),
                restarts: 0,
                started_at: jiff::Timestamp::now(),
                exit_code: None,
                ready: c.readiness.is_none(),
                next_restart: None,
            });
        }
        Ok(Sandbox {
            workload: w,
            containers,
            sockets,
            plumbed: req,
        })
    }

    /// Restarts exited containers per the policy and re-evaluates readiness; true if
    /// anything a status shows changed.
    pub async fn tick(&mut self, cfg: &RuntimeConfig, record: &Record) -> bool {
        let mut changed = false;
        let ip: Option<IpAddr> = self
            .workload
            .ip_cidr
            .split('/')
            .next()
            .and_then(|s| s.parse().ok());
        for (i, c) in self.containers.iter_mut().enumerate() {
            let spec = &self.workload.containers[i];
            if let Some(child) = c.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                record.remove_process(child.id() as i32);
                c.child = None;
                c.exit_code = status.code();
                c.ready = false;
                changed = true;
                let restart = match self.workload.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !status.success(),
                    RestartPolicy::Never => false,
                };
                let backoff = Duration::from_secs(1 << c.restarts.clamp(0, 4));
                c.next_restart = restart.then(|| Instant::now() + backoff);
            }
            if c.child.is_none()
                && c.next_restart.is_some_and(|t| Instant::now() >= t)
                && let Ok(child) = spawn(cfg, &self.workload, spec, record)
            {
                c.child = Some(child);
                c.restarts += 1;
                c.started_at = jiff::Timestamp::now();
                c.exit_code = None;
                c.next_restart = None;
                c.ready = spec.readiness.is_none();
                changed = true;
            }
            if let (Some((port, path)), Some(ip), Some(sockets), true) =
                (&spec.readiness, ip, &self.sockets, c.child.is_some())
            {
                let kind = match path {
                    Some(p) => ProbeKind::Http { path: p.clone() },
                    None => ProbeKind::Tcp,
                };
                let r = probe::execute(
                    sockets,
                    &ProbeTarget {
                        kind,
                        ip,
                        port: *port,
                    },
                    Duration::from_secs(1),
                )
                .await;
                if r.success != c.ready {
                    c.ready = r.success;
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
        }
        let _ = plumb::del(&self.plumbed.unplumb());
        netns_admin::delete(&self.workload.netns, record);
    }

    pub fn all_ready(&self) -> bool {
        self.containers.iter().all(|c| c.ready)
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

/// Resolves the containers of a pod spec.
pub fn containers_of(pod: &k8s_openapi::api::core::v1::PodSpec) -> Vec<ContainerSpec> {
    pod.containers
        .iter()
        .map(|c| {
            let mut argv = c.command.clone().unwrap_or_default();
            argv.extend(c.args.clone().unwrap_or_default());
            let readiness = c.readiness_probe.as_ref().and_then(|p| {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                let port = |p: &IntOrString| match p {
                    IntOrString::Int(i) => Some(*i as u16),
                    IntOrString::String(_) => None,
                };
                if let Some(h) = &p.http_get {
                    return Some((
                        port(&h.port)?,
                        Some(h.path.clone().unwrap_or_else(|| "/".into())),
                    ));
                }
                p.tcp_socket
                    .as_ref()
                    .and_then(|t| Some((port(&t.port)?, None)))
            });
            ContainerSpec {
                name: c.name.clone(),
                argv,
                readiness,
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
        readiness: None,
    }]
}
