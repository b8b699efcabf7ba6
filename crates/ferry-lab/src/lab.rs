//! `ferry lab up / status / check / exec / down`: the whole seed system on one machine.
//! `up` starts `ferry up` (which runs the API server, controllers, OVN/OVS and two lab node
//! agents) in the background and creates the topology of [`crate::topology`] through the
//! API; `check` proves every scenario, isolation and failover with real packets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, YusurService};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::topology::{self, Scenario};

/// A step of the lab that failed, with the log to read.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{step}: {message}{}", log.as_ref().map(|l| format!("\n  see {}", l.display())).unwrap_or_default())]
    Step {
        step: String,
        message: String,
        log: Option<PathBuf>,
    },
}

fn fail(step: &str, message: impl std::fmt::Display, log: Option<&Path>) -> LabError {
    LabError::Step {
        step: step.into(),
        message: message.to_string(),
        log: log.map(Path::to_path_buf),
    }
}

/// Files of a lab directory.
#[derive(Debug, Clone)]
pub struct LabDir {
    pub dir: PathBuf,
}

impl LabDir {
    pub fn new(dir: &Path) -> LabDir {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        LabDir { dir }
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("ferry")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("ferry.log")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("ferry.pid")
    }
    fn marker(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
}

/// How `lab up` runs Ferry.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub listen: SocketAddr,
    /// The `ferry` binary to run in the background.
    pub ferry: PathBuf,
    /// OVS port type of lab workloads ("" = veth).
    pub ovs_port_type: String,
    pub timeout: Duration,
    /// NB and SB on mutual TLS (`ferry up --ovn-tls`).
    pub ovn_tls: bool,
    /// Pods use the agents' socket-level load balancer (`ferry up --socket-lb`).
    pub socket_lb: bool,
    /// NB and SB as RAFT clusters of this many members (`ferry up --ovn-raft`; 1 = standalone).
    pub ovn_raft: usize,
    /// Each node its own chassis, Geneve between them, gateways HA on both
    /// (`ferry up --chassis-per-node`): what `ferry lab up` does unless `--single-chassis`
    /// ([`crate::chassis::per_node`]).
    pub chassis_per_node: bool,
    /// DPU split mode (`ferry up --dpu`, implies a chassis per node): see [`crate::dpu`].
    pub dpu: bool,
}

fn step(n: usize, total: usize, what: &str) -> crate::progress::Step {
    crate::progress::step(n, total, what)
}

fn done(t: crate::progress::Step) {
    t.done()
}

/// Where `ferry up` serves the controller's and agents' metrics and the web page: a free
/// port on the API's address (recorded in `lab.json` as `metricsListen`), else the API
/// port plus one.
fn pick_metrics_listen(listen: SocketAddr) -> SocketAddr {
    std::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::new(listen.ip(), listen.port().wrapping_add(1)))
}

/// The metrics URLs and the signed-in web page URL of a lab (`ui` and `metrics` of
/// `ferry lab status -o json`): the API on `listen`, the rest on `m`.
fn observability(lab: &LabDir, listen: SocketAddr, m: SocketAddr) -> (Value, Option<String>) {
    let agents: serde_json::Map<String, Value> = topology::NODES
        .iter()
        .map(|n| (n.to_string(), json!(format!("http://{m}/metrics/agent"))))
        .collect();
    let metrics = json!({"apiserver": format!("https://{listen}/metrics"),
        "controller": format!("http://{m}/metrics/controller"), "agents": agents});
    let admin = std::fs::read(lab.data().join("tokens.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|t| t["admin"].as_str().map(String::from));
    (metrics, admin.map(|t| format!("http://{m}/ui/#token={t}")))
}

/// The PID of the lab's `ferry up`, if it still runs (checked against its command line).
fn running_pid(lab: &LabDir) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(lab.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (text.contains(" up ") && text.contains(&lab.data().display().to_string())).then_some(pid)
}

pub async fn client(lab: &LabDir) -> Result<Client, LabError> {
    let kc = kube::config::Kubeconfig::read_from(lab.kubeconfig())
        .map_err(|e| fail("kubeconfig", e, None))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| fail("kubeconfig", e, None))?;
    Client::try_from(cfg).map_err(|e| fail("kubeconfig", e, None))
}

async fn apply(client: &Client, obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{kind}: {e}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj["metadata"]["namespace"].as_str().unwrap_or("default"),
            &ar,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply("ferry-lab").force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| format!("{kind} {name}: {e}"))?;
    Ok(())
}

async fn wait_for<T>(
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("timed out after {}s: {last}", timeout.as_secs()))
}

/// Brings the lab up; returns once every scenario's backends are ready.
pub async fn up(lab: &LabDir, opts: &UpOptions) -> Result<(), LabError> {
    let total = 6;
    let started = Instant::now();
    let t = step(1, total, "checking prerequisites");
    let missing = crate::prerequisites();
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|p| format!("{} (apt-get install {})", p.binary, p.package))
            .collect();
        return Err(fail(
            "prerequisites",
            format!("missing: {}", list.join(", ")),
            None,
        ));
    }
    if let Some(pid) = running_pid(lab) {
        return Err(fail(
            "prerequisites",
            format!(
                "a lab already runs in {} (pid {pid}); run `ferry lab down --dir {}` first",
                lab.dir.display(),
                lab.dir.display()
            ),
            None,
        ));
    }
    done(t);

    let t = step(
        2,
        total,
        "starting OVN/OVS, the API server, controllers and two node agents",
    );
    std::fs::create_dir_all(&lab.dir).map_err(|e| fail("lab dir", e, None))?;
    let metrics_listen = pick_metrics_listen(opts.listen);
    std::fs::write(
        lab.marker(),
        json!({"dir": lab.dir, "listen": opts.listen.to_string(), "socketLb": opts.socket_lb,
            "chassisPerNode": opts.chassis_per_node || opts.dpu, "dpu": opts.dpu,
            "metricsListen": metrics_listen.to_string()})
        .to_string(),
    )
    .map_err(|e| fail("lab dir", e, None))?;
    let log = std::fs::File::create(lab.log()).map_err(|e| fail("lab dir", e, None))?;
    let _ = std::fs::remove_file(lab.kubeconfig());
    let mut cmd = Command::new(&opts.ferry);
    cmd.args(["up", "--data-dir"])
        .arg(lab.data())
        .args([
            "--listen",
            &opts.listen.to_string(),
            "--nodes",
            &topology::NODES.join(","),
            "--eip-pool",
            topology::EIP_POOL,
        ])
        .arg("--metrics-listen")
        .arg(metrics_listen.to_string())
        .args([
            "--external-cidr",
            topology::EXTERNAL_CIDR,
            "--external-gateway",
            topology::EXTERNAL_GATEWAY,
            "--service-cidr",
            topology::SERVICE_CIDR,
            "--node-external-ips",
            &crate::services::node_external_ips_flag(),
            "--cluster-dns",
            crate::services::CLUSTER_DNS,
        ])
        .args(opts.ovn_tls.then_some("--ovn-tls"))
        .args((opts.ovn_raft > 1).then(|| format!("--ovn-raft={}", opts.ovn_raft)))
        .args(opts.chassis_per_node.then_some("--chassis-per-node"))
        .args(opts.dpu.then_some("--dpu"))
        .env("FERRY_OVS_PORT_TYPE", &opts.ovs_port_type)
        .env("FERRY_SOCKET_LB", opts.socket_lb.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| fail("lab dir", e, None))?)
        .stderr(log)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| fail("starting ferry up", e, Some(&lab.log())))?;
    std::fs::write(lab.pid_file(), child.id().to_string()).map_err(|e| fail("lab dir", e, None))?;
    let kubeconfig = lab.kubeconfig();
    wait_for(Duration::from_secs(60), async || {
        if kubeconfig.exists() {
            Ok(())
        } else {
            Err("no kubeconfig yet".into())
        }
    })
    .await
    .map_err(|e| fail("starting ferry up", e, Some(&lab.log())))?;
    let c = client(lab).await?;
    wait_for(Duration::from_secs(60), async || {
        c.apiserver_version()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| fail("waiting for the API server", e, Some(&lab.log())))?;
    done(t);

    let t = step(
        3,
        total,
        "creating VPCs, subnets, backends, clients and services through the API",
    );
    // DPU mode: the DPU host role first, before any pod needs it.
    let mut objects = match opts.dpu {
        true => crate::dpu::objects(),
        false => Vec::new(),
    };
    objects.extend(topology::objects());
    objects.extend(crate::services::objects());
    let mut seed: Value =
        serde_saphyr::from_str(topology::SEED).map_err(|e| fail("seed manifest", e, None))?;
    seed["metadata"]["namespace"] = json!("default");
    objects.push(seed);
    for obj in &objects {
        let c2 = c.clone();
        wait_for(Duration::from_secs(30), async || apply(&c2, obj).await)
            .await
            .map_err(|e| fail("creating objects", e, Some(&lab.log())))?;
    }
    done(t);

    let t = step(4, total, "waiting for pods to run and hosts to be plumbed");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    wait_for(opts.timeout, async || {
        let list = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
            .map(|p| p.name_any())
            .collect();
        let missing_ns: Vec<String> = topology::hosts()
            .into_iter()
            .filter(|h| !Path::new("/var/run/netns").join(&h.netns).exists())
            .map(|h| h.name)
            .collect();
        if waiting.is_empty() && missing_ns.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not running: {waiting:?}, not plumbed: {missing_ns:?}"
            ))
        }
    })
    .await
    .map_err(|e| fail("pods and hosts", e, Some(&lab.log())))?;
    done(t);

    let t = step(
        5,
        total,
        "waiting for every scenario's backends to be healthy and programmed",
    );
    let ysvcs: Api<YusurService> = Api::namespaced(c.clone(), "default");
    let mut want: Vec<(String, usize)> = topology::scenarios()
        .into_iter()
        .map(|s| {
            (
                s.service.trim_start_matches("default/").to_string(),
                s.backends.len(),
            )
        })
        .collect();
    want.push(("ysvc1".into(), 5));
    wait_for(opts.timeout, async || {
        let mut pending = Vec::new();
        for (name, n) in &want {
            let s = ysvcs.get(name).await.map_err(|e| e.to_string())?;
            let st = s.status.unwrap_or_default();
            let programmed = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status == "True");
            if st.ready_endpoints as usize != *n || !programmed {
                pending.push(format!(
                    "{name} {}/{n}{}",
                    st.ready_endpoints,
                    if programmed { "" } else { " not programmed" }
                ));
            }
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(pending.join(", "))
        }
    })
    .await
    .map_err(|e| fail("scenario backends", e, Some(&lab.log())))?;
    done(t);

    let t = step(6, total, "waiting for the first answer in every scenario");
    let status = status(lab).await?;
    for sc in status["scenarios"].as_array().into_iter().flatten() {
        let (client, target) = (
            sc["client"].as_str().unwrap_or_default().to_string(),
            sc["target"].as_str().unwrap_or_default().to_string(),
        );
        wait_for(Duration::from_secs(30), async || {
            request(&client, &target).map(|_| ())
        })
        .await
        .map_err(|e| fail(&format!("scenario {}", sc["name"]), e, Some(&lab.log())))?;
    }
    crate::services::wait_ready(&c, Duration::from_secs(60))
        .await
        .map_err(|e| fail("Kubernetes Services", e, Some(&lab.log())))?;
    done(t);
    eprintln!("lab up in {:.1}s", started.elapsed().as_secs_f64());
    if let (_, Some(ui)) = observability(lab, opts.listen, metrics_listen) {
        eprintln!("web page (signed in): {ui}");
    }
    Ok(())
}

/// The lab as JSON (`ferry lab status -o json`).
pub async fn status(lab: &LabDir) -> Result<Value, LabError> {
    if !lab.marker().exists() {
        return Err(fail(
            "status",
            format!("no lab in {} (run `ferry lab up`)", lab.dir.display()),
            None,
        ));
    }
    let c = client(lab).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let nodes: Api<Node> = Api::all(c.clone());
    let bms: Api<ferry_api::BareMetal> = Api::namespaced(c.clone(), "default");
    let vnics: Api<ferry_api::VNicIP> = Api::namespaced(c.clone(), "default");
    let ysvcs: Api<YusurService> = Api::namespaced(c.clone(), "default");
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    for p in pods
        .list(&Default::default())
        .await
        .map_err(|e| fail("status", e, None))?
        .items
    {
        if let Some(ip) = p.annotations().get(ferry_api::ANNOTATION_IP) {
            ips.insert(p.name_any(), ip.clone());
        }
    }
    for n in nodes
        .list(&Default::default())
        .await
        .map_err(|e| fail("status", e, None))?
        .items
    {
        if let Some(ip) = n.annotations().get(ferry_api::ANNOTATION_IP) {
            ips.insert(n.name_any(), ip.clone());
        }
    }
    for b in bms
        .list(&Default::default())
        .await
        .map_err(|e| fail("status", e, None))?
        .items
    {
        if let Some(ip) = b.status.and_then(|s| s.ip_address) {
            ips.insert(b.metadata.name.unwrap_or_default(), ip);
        }
    }
    for v in vnics
        .list(&Default::default())
        .await
        .map_err(|e| fail("status", e, None))?
        .items
    {
        if let Some(ip) = v.status.and_then(|s| s.ip_address).or(v.spec.ip_address) {
            ips.insert(v.metadata.name.unwrap_or_default(), ip);
        }
    }
    let vmis: Api<ferry_api::VirtualMachineInstance> = Api::namespaced(c.clone(), "default");
    for v in vmis
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if let Some(ip) = v.annotations().get(ferry_api::ANNOTATION_IP) {
            ips.insert(v.name_any(), ip.clone());
        }
    }
    let hosts: Vec<Value> = topology::hosts().into_iter().map(|h| json!({"name": h.name, "kind": h.kind, "netns": h.netns, "vpc": h.vpc, "ip": ips.get(&h.name)})).collect();
    let mut scenarios = Vec::new();
    for s in topology::scenarios() {
        let name = s.service.trim_start_matches("default/");
        let st = ysvcs
            .get(name)
            .await
            .ok()
            .and_then(|y| y.status)
            .unwrap_or_default();
        let addr = if s.use_eip { st.eip } else { st.cluster_ip };
        scenarios.push(
            json!({"id": s.id, "name": s.name, "service": s.service, "client": s.client,
            "target": addr.map(|a| format!("{a}:{}", s.port)), "backends": s.backends}),
        );
    }
    let seed = ysvcs
        .get("ysvc1")
        .await
        .ok()
        .and_then(|y| y.status)
        .and_then(|s| s.cluster_ip);
    let marker = std::fs::read(lab.marker())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or_default();
    let addr = |k: &str| {
        marker[k]
            .as_str()
            .and_then(|l| l.parse::<SocketAddr>().ok())
    };
    let (metrics, ui) = match (addr("listen"), addr("metricsListen")) {
        (Some(l), Some(m)) => observability(lab, l, m),
        _ => (Value::Null, None),
    };
    Ok(
        json!({"dir": lab.dir, "kubeconfig": lab.kubeconfig(), "log": lab.log(), "hosts": hosts, "scenarios": scenarios,
        "metrics": metrics, "ui": ui,
        "nodes": crate::services::NODE_EXTERNAL_IPS.iter().map(|(n, ext)| json!({"name": n, "netns": format!("ferry-{n}"),
            "internalIP": ips.get(*n), "externalIP": ext})).collect::<Vec<_>>(),
        "dns": crate::services::CLUSTER_DNS, "services": crate::services::status(&c).await,
        "seed": {"service": "default/ysvc1", "client": "client-vpc1", "target": seed.map(|a| format!("{a}:5001"))}}),
    )
}

/// The first line of `GET http://target/` from a host, with the time it took.
pub(crate) fn request(host: &str, target: &str) -> Result<(String, f64), String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("ferry-{host}"),
            "curl",
            "-s",
            "-m",
            "2",
            "-w",
            "\n%{time_total}",
            &format!("http://{target}/"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "curl from {host} to {target} failed (exit {})",
            out.status.code().unwrap_or(-1)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    let secs: f64 = lines.pop().and_then(|l| l.parse().ok()).unwrap_or(0.0);
    Ok((lines.first().unwrap_or(&"").trim().to_string(), secs))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One row of the check table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRow {
    pub check: String,
    pub client: String,
    pub target: String,
    pub result: String,
    pub pass: bool,
}

fn run_scenario(s: &Scenario, target: &str, n: usize) -> (CheckRow, BTreeMap<String, usize>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut lat = Vec::new();
    let mut answers = 0;
    let before = crate::services::retries();
    for _ in 0..n {
        if let Ok((who, t)) = crate::services::retried(|| request(&s.client, target)) {
            answers += 1;
            *seen.entry(who).or_default() += 1;
            lat.push(t * 1000.0);
        }
    }
    let allowed: BTreeSet<&String> = s.backends.iter().collect();
    let strangers: Vec<&String> = seen.keys().filter(|k| !allowed.contains(k)).collect();
    let need = s.backends.len().min(2);
    let pass = answers == n && strangers.is_empty() && seen.len() >= need;
    let row = CheckRow {
        check: format!("{} {}", s.id, s.name),
        client: s.client.clone(),
        target: target.into(),
        result: format!(
            "{answers}/{n} answers, {} distinct of {} [{}], p50 {:.1} ms, p99 {:.1} ms{}{}",
            seen.len(),
            s.backends.len(),
            seen.iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" "),
            percentile(&mut lat.clone(), 0.5),
            percentile(&mut lat, 0.99),
            if strangers.is_empty() {
                String::new()
            } else {
                format!(", UNEXPECTED {strangers:?}")
            },
            match crate::services::retries() - before {
                0 => String::new(),
                r => format!(" ({r} retried after a data-plane outage)"),
            }
        ),
        pass,
    };
    (row, seen)
}

/// Whether the lab runs a chassis per node (`lab.json`).
pub fn chassis_per_node(lab: &LabDir) -> bool {
    std::fs::read(lab.marker())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m["chassisPerNode"] == true)
}

fn isolation(name: &str, client: &str, target: &str) -> CheckRow {
    let r = request(client, target);
    CheckRow {
        check: format!("isolation: {name}"),
        client: client.into(),
        target: target.into(),
        result: match &r {
            Ok((who, _)) => format!("REACHED {who}"),
            Err(_) => "no answer (isolated)".into(),
        },
        pass: r.is_err(),
    }
}

/// Runs every check; the rows and whether all passed.
pub async fn check(lab: &LabDir, requests: usize) -> Result<(Vec<CheckRow>, bool), LabError> {
    let st = status(lab).await?;
    let c = client(lab).await?;
    let mut rows = Vec::new();
    let scenarios = topology::scenarios();
    let t = step(1, 4, "requests in each scenario");
    let placement = crate::chassis::Placement::read(&lab.data().join("ovn"), chassis_per_node(lab));
    for (s, sj) in scenarios
        .iter()
        .zip(st["scenarios"].as_array().cloned().unwrap_or_default())
    {
        let target = sj["target"].as_str().unwrap_or_default().to_string();
        let (row, seen) = run_scenario(s, &target, requests);
        rows.push(row);
        rows.push(crate::chassis::scenario_row(&placement, s, &seen));
    }
    done(t);
    let t = step(2, 4, "iperf3 to the seed service ysvc1");
    // The seed check: iperf3 to ysvc1's ClusterIP.
    let seed_target = st["seed"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (seed_ip, _) = seed_target.split_once(':').unwrap_or_default();
    // iperf3 opens a control and a data connection; with several backends and no session
    // affinity (the seed manifest sets none, and is applied verbatim) a per-connection load
    // balancer sends them to different servers about (n-1)/n of the time and the test
    // aborts at once, or (seen through OVN's load balancer) both ends wait for each other
    // forever: each try is bounded by `timeout`. So the check retries until both land on
    // one backend, and says how many tries it took.
    let mut gbps = None;
    let mut tries = 0;
    let mut why = String::from("iperf3 failed");
    let mut server = None;
    while gbps.is_none() && tries < 25 {
        tries += 1;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                "ferry-client-vpc1",
                "timeout",
                "-k",
                "2",
                "20",
                "iperf3",
                "-c",
                seed_ip,
                "-p",
                "5001",
                "-t",
                "3",
                "-J",
                "--get-server-output",
            ])
            .output();
        let v = out
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
        // Nothing received (a try that met an `ovs-vswitchd` restart) is tried again too.
        gbps = v
            .as_ref()
            .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64())
            .filter(|b| *b > 0.0)
            .map(|b| b / 1e9);
        if let Some(e) = v.as_ref().and_then(|v| v["error"].as_str()) {
            why = format!("iperf3: {e} ({tries} tries)");
        }
        // Which backend served it (the seed's backends are vpc1's), for its chassis.
        server = v
            .as_ref()
            .and_then(|v| v["server_output_text"].as_str())
            .and_then(crate::chassis::iperf_server_ip)
            .and_then(|ip| {
                st["hosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|h| h["vpc"] == "vpc1" && h["ip"] == ip)
            })
            .and_then(|h| h["name"].as_str())
            .map(String::from);
    }
    let iperf = crate::chassis::Iperf {
        server,
        gbps,
        tries,
        error: why,
    };
    rows.push(crate::chassis::iperf_row(
        &placement,
        "client-vpc1",
        &seed_target,
        &iperf,
    ));
    done(t);
    let t = step(3, 4, "isolation between VPCs and from outside");
    // Isolation.
    let ip_of = |name: &str| -> String {
        st["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"] == name)
            .and_then(|h| h["ip"].as_str())
            .unwrap_or("0.0.0.0")
            .to_string()
    };
    rows.push(isolation(
        "vpc2 -> vpc1",
        "client-vpc2",
        &format!("{}:8080", ip_of("svc1-ep-2")),
    ));
    rows.push(isolation(
        "vpc1 -> vpc2",
        "client-vpc1",
        &format!("{}:8080", ip_of("vpc2-ep-1")),
    ));
    // vpc2's pod dialing vpc1's ClusterIP: with the socket LB its netns is vpc2's, so no
    // translation; the VIP then meets vpc2's fabric, which has no such load balancer.
    let socket_lb = std::fs::read(lab.marker())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m["socketLb"] == true);
    rows.push(isolation(
        &format!(
            "vpc2 -> vpc1 VIP (socket LB {})",
            if socket_lb { "on" } else { "off" }
        ),
        "client-vpc2",
        st["scenarios"][0]["target"].as_str().unwrap_or_default(),
    ));
    rows.push(isolation(
        "outside -> backend",
        "ext-client",
        &format!("{}:8080", ip_of("svc1-ep-1")),
    ));
    done(t);
    let t = step(4, 4, "failover and Kubernetes Services");
    // Failover: block one backend's port; it must leave rotation and get no request.
    rows.extend(
        failover(
            &c,
            &scenarios[0],
            st["scenarios"][0]["target"].as_str().unwrap_or_default(),
            &ip_of("svc1-ep-2"),
            requests,
            &ferry_ovn_stack::LabPaths::new(&lab.data().join("ovn")).nb_sock,
            || vswitchd_aborts(&lab.data()),
        )
        .await,
    );
    rows.extend(
        crate::services::check(
            &c,
            requests,
            &ferry_ovn_stack::LabPaths::new(&lab.data().join("ovn")).nb_sock,
            socket_lb,
        )
        .await,
    );
    done(t);
    // OVS 3.1's userspace conntrack aborts ovs-vswitchd now and then (its supervisor
    // restarts it); requests that met such an outage were retried, and this says so.
    let aborts = vswitchd_aborts(&lab.data());
    if aborts > 0 || crate::services::retries() > 0 {
        eprintln!(
            "note: ovs-vswitchd aborted {aborts} time(s) in this lab (lib/conntrack.c:1063: assertion \
             conn->conn_type == CT_CONN_TYPE_DEFAULT, OVS 3.1 userspace conntrack); {} request(s) \
             were retried after such an outage",
            crate::services::retries()
        );
    }
    if crate::dpu::is_dpu(lab) {
        rows.extend(crate::dpu::check(lab, &c).await);
    }
    let all = rows.iter().all(|r| r.pass);
    Ok((rows, all))
}

/// How many times OVS 3.1's userspace conntrack has aborted the lab's ovs-vswitchd so far
/// (each abort logs its assertion twice).
/// With a chassis per node, every chassis' log counts.
pub fn vswitchd_aborts(lab_data: &std::path::Path) -> usize {
    let ovn = lab_data.join("ovn");
    let count = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("logs/ovs-vswitchd.log"))
            .map(|l| l.matches("assertion conn->conn_type").count() / 2)
            .unwrap_or(0)
    };
    count(&ovn)
        + ferry_ovn_stack::fabric::chassis_nodes(&topology::NODES)
            .iter()
            .map(|n| count(&ferry_ovn_stack::fabric::node_chassis_dir(&ovn, n)))
            .sum::<usize>()
}

/// Blocks one backend of `s` and checks it leaves rotation, then unblocks it. `aborts`
/// counts vswitchd aborts: a request that fails while one happens is tried once more (and
/// said so); any other failure counts, since it may be a request sent to the dead backend.
async fn failover(
    c: &Client,
    s: &Scenario,
    target: &str,
    victim_ip: &str,
    n: usize,
    nb_sock: &std::path::Path,
    aborts: impl Fn() -> usize,
) -> Vec<CheckRow> {
    let victim = "svc1-ep-2";
    let probes: Api<NetworkProbe> = Api::namespaced(c.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    let probe = format!("web-vpc1-pod-{victim}");
    let in_endpoints = async || -> bool {
        eps.get("web-vpc1")
            .await
            .ok()
            .and_then(|e| e.subsets)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .any(|a| a.ip == victim_ip)
    };
    let iptables = |op: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("ferry-{victim}"),
                "iptables",
                op,
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-j",
                "REJECT",
            ])
            .status()
    };
    let mut rows = Vec::new();
    if !matches!(iptables("-I"), Ok(s) if s.success()) {
        return vec![CheckRow {
            check: "failover".into(),
            client: s.client.clone(),
            target: target.into(),
            result: "could not block the port".into(),
            pass: false,
        }];
    }
    let t0 = Instant::now();
    let mut left = None;
    while t0.elapsed() < Duration::from_secs(15) {
        if !in_endpoints().await {
            left = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Endpoints follow the NB commit; the requests wait for the chassis to apply it too
    // (ovn-controller's flows), as `--wait=hv` reports.
    let synced = Instant::now();
    let _ = Command::new("ovn-nbctl")
        .arg(format!(
            "--db={}",
            ferry_ovn_stack::raft::remotes_beside(nb_sock)
        ))
        .args(["--timeout=10", "--wait=hv", "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let synced = synced.elapsed();
    let phase = probes
        .get(&probe)
        .await
        .ok()
        .and_then(|p| p.status)
        .map(|s| format!("{:?}", s.phase))
        .unwrap_or_default();
    let mut from_victim = 0;
    let mut answers = 0;
    let mut outage_retries = 0;
    for _ in 0..n {
        let before = aborts();
        let mut answer = request(&s.client, target);
        if answer.is_err() && aborts() > before {
            outage_retries += 1;
            std::thread::sleep(Duration::from_secs(1));
            answer = request(&s.client, target);
        }
        if let Ok((who, _)) = answer {
            answers += 1;
            if who == victim {
                from_victim += 1;
            }
        }
    }
    // failureThreshold x periodSeconds (3 x 1 s here) + 2 s for the status write, the pass
    // and the Endpoints write: 1 s of slack failed one run in four on a loaded 2-core
    // machine (2.5-4.06 s measured).
    let ok_leave = left.is_some_and(|d| d <= Duration::from_millis(5000));
    rows.push(CheckRow {
        check: format!("failover: {victim} blocked"),
        client: s.client.clone(),
        target: target.into(),
        result: format!("left rotation after {} (flows +{:.2}s), probe {phase}; then {answers}/{n} answers, {from_victim} from {victim}{}", left.map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_else(|| "never".into()), synced.as_secs_f64(),
            if outage_retries > 0 { format!(" ({outage_retries} retried: ovs-vswitchd aborted under them)") } else { String::new() }),
        pass: ok_leave && from_victim == 0 && answers == n,
    });
    let _ = iptables("-D");
    let t1 = Instant::now();
    let mut back = None;
    while t1.elapsed() < Duration::from_secs(15) {
        if in_endpoints().await {
            back = Some(t1.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rows.push(CheckRow {
        check: format!("failover: {victim} unblocked"),
        client: s.client.clone(),
        target: target.into(),
        result: format!(
            "back in rotation after {}",
            back.map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into())
        ),
        pass: back.is_some(),
    });
    rows
}

/// Prints the check table.
pub fn print_check(rows: &[CheckRow]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(["CHECK", "CLIENT", "TARGET", "RESULT", "PASS"]);
    for r in rows {
        t.add_row([
            r.check.as_str(),
            r.client.as_str(),
            r.target.as_str(),
            r.result.as_str(),
            if r.pass { "yes" } else { "NO" },
        ]);
    }
    println!("{t}");
}

/// Runs a command in a lab host's namespace; returns its exit code.
pub fn exec(lab: &LabDir, name: &str, argv: &[String]) -> Result<i32, LabError> {
    let netns = format!("ferry-{name}");
    if !Path::new("/var/run/netns").join(&netns).exists() {
        let names: Vec<String> = topology::hosts().into_iter().map(|h| h.name).collect();
        return Err(fail(
            "exec",
            format!(
                "no lab host {name:?} in {} (hosts: {})",
                lab.dir.display(),
                names.join(", ")
            ),
            None,
        ));
    }
    let status = Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(argv)
        .status()
        .map_err(|e| fail("exec", e, None))?;
    Ok(status.code().unwrap_or(1))
}

/// Stops everything the lab started and removes what it created; safe to run twice and
/// after a crashed `up`.
pub fn down(lab: &LabDir) -> Result<Vec<String>, LabError> {
    let mut report = Vec::new();
    if let Some(pid) = running_pid(lab) {
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(40)
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        }
        report.push(format!("stopped ferry up (pid {pid})"));
    }
    for node in topology::NODES {
        let (killed, netns) = ferry_agent::netns_admin::cleanup(&ferry_agent::node::record_path(
            &lab.data().join("agent"),
            node,
        ));
        if killed + netns > 0 {
            report.push(format!(
                "{node}: removed {netns} namespaces, {killed} processes left by the agent"
            ));
        }
        // A socket LB an agent left pinned (killed, not stopped).
        match ferry_agent::socket_lb::remove_pins(node) {
            Ok(true) => report.push(format!("{node}: removed the socket LB's pins")),
            Ok(false) => {}
            Err(e) => report.push(format!("{node}: removing the socket LB's pins: {e}")),
        }
    }
    let ovn = lab.data().join("ovn");
    // Node chassis (`--chassis-per-node`) first: the fabric in the central registry
    // outlives them.
    for node in ferry_ovn_stack::fabric::chassis_nodes(&topology::NODES) {
        let dir = ferry_ovn_stack::fabric::node_chassis_dir(&ovn, &node);
        if dir.exists() {
            let t = ferry_ovn_stack::stop_from_dir(&dir).map_err(|e| fail("down", e, None))?;
            if !t.stopped.is_empty() || !t.netns.is_empty() {
                report.push(format!(
                    "{node} chassis: stopped {:?}, removed namespaces {:?}",
                    t.stopped, t.netns
                ));
            }
        }
    }
    if ovn.exists() {
        let t = ferry_ovn_stack::stop_from_dir(&ovn).map_err(|e| fail("down", e, None))?;
        if !t.stopped.is_empty() || !t.netns.is_empty() {
            report.push(format!(
                "OVN/OVS: stopped {:?}, removed namespaces {:?}",
                t.stopped, t.netns
            ));
        }
    }
    report.extend(crate::dpu::down(lab));
    if lab.marker().exists() || lab.pid_file().exists() {
        std::fs::remove_dir_all(&lab.dir)
            .map_err(|e| fail("down", format!("removing {}: {e}", lab.dir.display()), None))?;
        report.push(format!("removed {}", lab.dir.display()));
    }
    Ok(report)
}
