//! `ferry bench control-plane`: a real `ferry apiserver` and two `ferry controller`
//! replicas (separate processes, so their memory is measured apart; one leads, one stands
//! by) against a real OVN NB and `ovn-northd` (a central-only `ferry_ovn_stack::OvnStack`),
//! with N YusurServices of M backends each, the backends spread over `--nodes` hollow nodes
//! ([`crate::hollow`]) that keep their Leases fresh and report their probes as agents do.
//! Ends with a crash failover: the leader is killed (SIGKILL) and the time until the
//! standby programs the next change is `failover_s`. Prints a table and JSON; asserts
//! nothing.
//!
//! Also reported: the leader's pass times (from its `reconcile pass` debug lines, which it
//! writes with metrics on or off) and the API server's GET latency under 8 clients, the
//! two figures `ferry bench metrics-cost` ([`crate::metrics_cost`]) compares with
//! `FERRY_METRICS=off` and on.
//!
//! Over 600 lines: one run's phases (pods, services, changes, flips, LIST, writes,
//! failover) share its processes, clients and hollow nodes, so they stay in one file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, YusurService};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::hollow;

/// What to run.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub services: usize,
    pub backends: usize,
    /// Hollow nodes the backends are spread over (at least one).
    pub nodes: usize,
    pub ferry: PathBuf,
    pub out: Option<PathBuf>,
    /// Single-service changes and probe flips measured.
    pub samples: usize,
    /// `false` runs the API server and the controllers with `FERRY_METRICS=off`.
    pub metrics: bool,
    /// Start a standby controller and measure the crash failover.
    pub failover: bool,
}

/// The figures, with the keys the issue names.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlPlaneResult {
    pub services: usize,
    pub backends: usize,
    pub nodes: usize,
    /// From the first pod created to every pod's port in the NB.
    pub ports_sync_s: f64,
    /// From the first service created (none before) to all Programmed and in the NB.
    pub full_sync_s: f64,
    /// From the first service created to every NetworkProbe created (seen by its node).
    pub probes_created_s: f64,
    /// From the first service created to every backend Healthy in its load balancer.
    pub probes_healthy_s: f64,
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    pub endpoint_flip_p99_ms: f64,
    /// LIST of every NetworkProbe: the whole response body received, read as a stream
    /// (median of 3).
    pub list_probes_ms: f64,
    pub listed_probes: usize,
    /// Acknowledged creates/s with 64 concurrent clients, and with one.
    pub acked_writes_per_s: f64,
    pub acked_writes_per_s_1: f64,
    pub apiserver_rss_mib: f64,
    /// The leader's RSS (and the standby's).
    pub controller_rss_mib: f64,
    pub standby_rss_mib: f64,
    /// The longest gap between two renewals of one hollow node's Lease (one of
    /// `hollow::TIMING.duration`, 40 s, lapses it).
    pub max_renew_gap_s: f64,
    pub lease_renewals: u64,
    /// Leader killed (SIGKILL) -> the standby programmed the next change in the NB.
    pub failover_s: f64,
    /// Times a controller lost its leadership before the kill (its "lost leadership"
    /// lines): each drops the running pass.
    pub leadership_losses: usize,
    /// Of those, the ones won back in the same term (nothing dropped, no repair pass).
    pub leadership_resumed: usize,
    pub objects: usize,
    /// Whether the components recorded metrics (`FERRY_METRICS` unset or on).
    pub metrics: bool,
    /// The leader's incremental and full passes (its `reconcile pass` lines).
    pub passes_incremental: usize,
    pub pass_incremental_p50_ms: f64,
    pub pass_incremental_p99_ms: f64,
    pub passes_full: usize,
    pub pass_full_p50_ms: f64,
    /// GET of one object by 8 concurrent clients (`API_GETS` requests): latency to the
    /// whole body, and requests/s.
    pub api_get_p50_ms: f64,
    pub api_get_p99_ms: f64,
    pub api_gets_per_s: f64,
    /// The controllers' API writes from the first service created until every backend was
    /// Healthy and the writes had settled (see [`controller_writes`]), per service, and
    /// by `verb resource`.
    pub controller_writes_per_service: f64,
    pub controller_writes: BTreeMap<String, u64>,
}

/// GETs timed by [`api_latency`].
const API_GETS: usize = 4000;

/// The controllers' leader Lease (seconds): short, for a failover within the 3 s target.
const LEASE_S: u64 = 2;

/// The leaderships lost in a controller log, and how many of them it won back in the same
/// term: (lost, resumed).
pub fn leadership_losses(log: &str) -> (usize, usize) {
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    (
        count("lost leadership; standing by"),
        count("leading again in the same term"),
    )
}

/// The pass times (ms) of `reconcile pass` lines in a controller log: (incremental, full).
pub fn pass_times(log: &str) -> (Vec<f64>, Vec<f64>) {
    let mut out = (Vec::new(), Vec::new());
    for line in log.lines().filter(|l| l.contains("reconcile pass")) {
        let plain = strip_ansi(line);
        let field = |name: &str| {
            plain
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let (Some(full), Some(ms)) = (
            field("full"),
            field("elapsed_ms").and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if full == "true" {
            out.1.push(ms);
        } else {
            out.0.push(ms);
        }
    }
    out
}

/// `s` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `requests` GETs of the `default` namespace by `clients` concurrent clients: each
/// latency (ms, the whole body received) and requests/s.
pub(crate) async fn api_latency(
    client: &Client,
    requests: usize,
    clients: usize,
) -> Result<(Vec<f64>, f64), String> {
    let t = Instant::now();
    let lat = futures::stream::iter(0..requests)
        .map(|_| {
            let client = client.clone();
            async move {
                let req = http::Request::get("/api/v1/namespaces/default")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                client.request_text(req).await.map_err(|e| e.to_string())?;
                Ok::<f64, String>(t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let per_s = requests as f64 / t.elapsed().as_secs_f64();
    Ok((lat, per_s))
}

/// Child processes, stopped (SIGTERM, then SIGKILL) by PID on drop.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub(crate) fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let f = std::fs::File::create(log).map_err(|e| e.to_string())?;
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| e.to_string())?)
        .stderr(f)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

fn progress(what: &str, done: usize, total: usize, start: Instant) {
    ferry_lab::progress::count(
        what,
        done,
        total,
        &format!("({:.1}s)", start.elapsed().as_secs_f64()),
    );
}

pub(crate) async fn wait_file(path: &Path, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return Err(format!("{} did not appear", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Pods per subnet at most. OVN gives a logical switch at most 32,767 ports (tunnel keys):
/// past that northd binds no more (at 10k x 20 in 4 subnets, the SB held 32,767 Port_Bindings
/// of 200,000 ports). The rest is left for the nodes' probe ports, which share a subnet.
const PODS_PER_SUBNET: usize = 20_000;

/// Subnets for `pods` backends: at least 4, each holding at most [`PODS_PER_SUBNET`].
fn subnet_count(pods: usize) -> usize {
    pods.div_ceil(PODS_PER_SUBNET).max(4)
}

/// The address and subnet of backend `i` of `subnets` /16s (10.100.0.0/16, 10.101.0.0/16,
/// ...; .0.1 is each gateway), dealt round-robin.
fn backend_ip(i: usize, subnets: usize) -> (Ipv4Addr, usize) {
    let subnet = i % subnets;
    let n = (i / subnets) as u32 + 2;
    (
        Ipv4Addr::new(10, 100 + subnet as u8, (n >> 8) as u8, (n & 0xff) as u8),
        subnet,
    )
}

fn lb_backends(m: &ferry_ovsdb::Mirror, name: &str) -> Option<usize> {
    let rows = m.table("Load_Balancer")?;
    let row = rows
        .values()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))?;
    let vips = row.get("vips")?.get(1)?.as_array()?;
    Some(
        vips.first()
            .and_then(|p| p.get(1)?.as_str())
            .map(|s| {
                if s.is_empty() {
                    0
                } else {
                    s.split(',').count()
                }
            })
            .unwrap_or(0),
    )
}

/// Runs the benchmark in a temporary directory.
pub async fn control_plane(opts: &ControlPlaneOptions) -> Result<ControlPlaneResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // FERRY_BENCH_KEEP=1 keeps the logs and data for a look afterwards (failed runs too).
    let (_dir, path) = if std::env::var_os("FERRY_BENCH_KEEP").is_some() {
        (None, dir.keep())
    } else {
        let p = dir.path().to_path_buf();
        (Some(dir), p)
    };
    let d = path.as_path();
    let (n, m, nodes) = (opts.services, opts.backends, opts.nodes.max(1));
    eprintln!(
        "control-plane bench: {n} services x {m} backends on {nodes} nodes, metrics {}, in {}",
        if opts.metrics { "on" } else { "off" },
        d.display()
    );
    let metrics_env = if opts.metrics { "on" } else { "off" };
    // OVN NB + SB + northd only: the control plane's job ends at the NB.
    let ovn_dir = d.join("ovn");
    let stack = tokio::task::spawn_blocking(move || {
        ferry_ovn_stack::OvnStack::start(&ovn_dir, ferry_ovn_stack::OvnOptions::central())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("starting OVN: {e}"))?;
    let nb_remote = stack.nb_remote();
    let mut children = Children(Vec::new());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let api_dir = d.join("api");
    let mut c = Command::new(&opts.ferry);
    c.args(["apiserver", "--data-dir"])
        .arg(&api_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("FERRY_METRICS", metrics_env);
    let apiserver = spawn(&mut c, &d.join("apiserver.log"))?;
    let api_pid = apiserver.id();
    children.0.push(apiserver);
    wait_file(&api_dir.join("kubeconfig"), Duration::from_secs(30)).await?;
    let client = client_of(&api_dir.join("kubeconfig")).await?;
    for crd in ferry_api::all_crds() {
        let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
        api.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Two replicas: "bench-a" leads (started first), "bench-b" stands by.
    let mut pids = BTreeMap::new();
    let ids: &[&str] = if opts.failover {
        &["bench-a", "bench-b"]
    } else {
        &["bench-a"]
    };
    // FERRY_BENCH_LEASE_S overrides the lease (a loaded machine may not renew in 1.5 s).
    let lease_s = std::env::var("FERRY_BENCH_LEASE_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(LEASE_S);
    for &id in ids {
        let mut c = Command::new(&opts.ferry);
        // Every pass's time in the log, with metrics on or off (see `pass_times`).
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        c.env("FERRY_METRICS", metrics_env)
            .env("RUST_LOG", format!("{filter},ferry_controller::pass=debug"));
        c.args(["controller", "--kubeconfig"])
            .arg(api_dir.join("kubeconfig-controller"))
            .args([
                "--ovn-nb",
                &nb_remote,
                "--service-cidr",
                "10.96.0.0/12",
                "--identity",
                id,
                "--lease-duration-s",
                &lease_s.to_string(),
            ]);
        let controller = spawn(&mut c, &d.join(format!("controller-{id}.log")))?;
        pids.insert(id.to_string(), controller.id());
        children.0.push(controller);
        if id == "bench-a" {
            let t = Instant::now();
            while leader(&client).await.as_deref() != Some("bench-a") {
                if t.elapsed() > Duration::from_secs(60) {
                    return Err("the first controller did not take the Lease".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // The network: one VPC, /16 subnets enough for the pods (`subnet_count`).
    let apply = async |v: Value| -> Result<(), String> {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "iaas.yusur.io",
            "v1",
            &kind,
        ));
        let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&v),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    apply(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": "vpc1"}, "spec": {}})).await?;
    let subnets = subnet_count(n * m);
    if subnets > 100 {
        return Err(format!(
            "{} backends need {subnets} subnets; the bench has room for 100 (10.100-10.199)",
            n * m
        ));
    }
    for s in 0..subnets {
        apply(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": format!("bench-{s}")}, "spec": {"vpc": "vpc1", "cidrBlock": format!("10.{}.0.0/16", 100 + s)}})).await?;
    }
    // The hollow nodes: Nodes and Leases, then renewals and probe reports from now on.
    let start = Instant::now();
    hollow::register(&client, nodes, 64).await?;
    eprintln!(
        "  {nodes} hollow nodes registered in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let hollow = hollow::start(&client, nodes, 256);
    // Backends: pods with their addresses already written, as the controller would, spread
    // over the nodes.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let total_pods = n * m;
    let start = Instant::now();
    let pods_started = start;
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    futures::stream::iter(0..total_pods)
        .map(|i| {
            let pods = pods.clone();
            let created = created.clone();
            async move {
                let (ip, s) = backend_ip(i, subnets);
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({"metadata": {"name": format!("b-{i}"), "labels": {"svc": format!("s{}", i / m)},
                    "annotations": {"iaas.yusur.io/subnet": format!("bench-{s}"), "iaas.yusur.io/ip_address": ip.to_string(), "iaas.yusur.io/mac_address": format!("0a:00:{:02x}:{:02x}:{:02x}:{:02x}", ip.octets()[0], ip.octets()[1], ip.octets()[2], ip.octets()[3]),
                        "iaas.yusur.io/gateway": format!("10.{}.0.1", 100 + s), "iaas.yusur.io/cidr": format!("10.{}.0.0/16", 100 + s)}},
                    "spec": {"nodeName": hollow::node_name(i % nodes), "containers": [{"name": "c", "image": "none"}]}})).unwrap_or_default();
                let r = pods.create(&PostParams::default(), &pod).await;
                let c = created.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if c.is_multiple_of(1000) || c == total_pods {
                    progress("pods", c, total_pods, start);
                }
                r.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;

    // Watch the NB the way the controller does.
    let nb = ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config(vec![nb_remote.clone()]))
        .await
        .map_err(|e| e.to_string())?;
    // The backends' ports in the NB first, so that the services' sync is measured on its
    // own (the pods' is reported as ports_sync_s, from the first pod created).
    let mut waited = Instant::now();
    while nb.with_mirror(|mm| {
        mm.table("Logical_Switch_Port").map_or(0, |t| {
            t.values()
                .filter(|r| {
                    r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("default_b-"))
                })
                .count()
        })
    }) < total_pods
    {
        if pods_started.elapsed() > Duration::from_secs(3600) {
            return Err("the pods' ports did not reach the NB within an hour".into());
        }
        if waited.elapsed() >= Duration::from_secs(10) {
            waited = Instant::now();
            let ports = nb.with_mirror(|mm| mm.table("Logical_Switch_Port").map_or(0, |t| t.len()));
            eprintln!(
                "  waiting for the pods' ports: {ports} NB ports ({:.0}s); leader {}; RSS MiB: apiserver {:.0}, controllers {:?}",
                pods_started.elapsed().as_secs_f64(),
                leader(&client).await.unwrap_or_default(),
                rss_mib(api_pid),
                pids.iter()
                    .map(|(id, p)| (id.clone(), rss_mib(*p).round()))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ports_sync_s = pods_started.elapsed().as_secs_f64();
    eprintln!("  pods' ports in the NB after {ports_sync_s:.1}s");
    let ysvcs: Api<YusurService> = Api::namespaced(client.clone(), "default");
    let writes_before = scrape_writes(&client).await?;
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let ysvcs = ysvcs.clone();
            async move {
                let y: YusurService = serde_json::from_value(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": format!("s{i}")},
                    "spec": {"vpc": "vpc1", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"svc": format!("s{i}")}}})).unwrap_or_else(|_| YusurService::new("x", serde_json::from_value(json!({"ports": []})).unwrap_or_else(|_| unreachable!())));
                ysvcs.create(&PostParams::default(), &y).await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    // Empty -> all Programmed, every probe created (seen by its node), every backend
    // Healthy in its load balancer (the hollow nodes report as the probes appear).
    let (mut full_sync_s, mut probes_created_s, mut probes_healthy_s) = (None, None, None);
    // (load balancers with every backend, when that count last rose)
    let mut progressed = (0, Instant::now());
    let (full_sync_s, probes_created_s, probes_healthy_s): (f64, f64, f64) = loop {
        let lbs = nb.with_mirror(|mm| mm.table("Load_Balancer").map(|t| t.len()).unwrap_or(0));
        // The LIST of every service (tens of MB at 10k) only once every LB is in the NB:
        // listed twice a second it loaded the API server it measures.
        if full_sync_s.is_none() && lbs >= n {
            let programmed = ysvcs
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|y| {
                    y.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Programmed" && c.status == "True")
                    })
                })
                .count();
            if lbs >= n && programmed >= n {
                full_sync_s = Some(start.elapsed().as_secs_f64());
            }
        }
        let assigned = hollow
            .stats
            .assigned
            .load(std::sync::atomic::Ordering::Relaxed) as usize;
        if probes_created_s.is_none() && assigned >= n * m {
            probes_created_s = Some(start.elapsed().as_secs_f64());
        }
        let full = nb.with_mirror(|mm| full_lbs(mm, m));
        if probes_healthy_s.is_none() && full >= n {
            probes_healthy_s = Some(start.elapsed().as_secs_f64());
        }
        ferry_lab::progress::count(
            "load balancers with every backend",
            full,
            n,
            &format!(
                "programmed: {} probes assigned: {assigned}/{} reported: {} ({:.1}s)",
                full_sync_s.map_or("-".to_string(), |s| format!("{s:.1}s")),
                n * m,
                hollow
                    .stats
                    .reported
                    .load(std::sync::atomic::Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            ),
        );
        if let (Some(a), Some(b), Some(c)) = (full_sync_s, probes_created_s, probes_healthy_s) {
            eprintln!();
            eprintln!(
                "  full_sync_s {a:.1}, probes_created_s {b:.1}, probes_healthy_s {c:.1}; RSS MiB: apiserver {:.0}, controllers {:?}",
                rss_mib(api_pid),
                pids.values()
                    .map(|p| rss_mib(*p).round())
                    .collect::<Vec<_>>()
            );
            break (a, b, c);
        }
        if start.elapsed() > Duration::from_secs(3600) {
            return Err("the services were not all Programmed and Healthy within an hour".into());
        }
        if full > progressed.0 {
            progressed = (full, Instant::now());
        } else if progressed.1.elapsed() > STALLED {
            return Err(format!(
                "no load balancer gained its last backend in {}s ({full} of {n} have all): {}",
                STALLED.as_secs(),
                not_ready(&ysvcs).await?
            ));
        }
        if waited.elapsed() >= Duration::from_secs(10) {
            waited = Instant::now();
            eprintln!(
                "  leader {}; RSS MiB: apiserver {:.0}, controllers {:?}",
                leader(&client).await.unwrap_or_default(),
                rss_mib(api_pid),
                pids.iter()
                    .map(|(id, p)| (id.clone(), rss_mib(*p).round()))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The controllers' writes for the services, once the writer is done with them: the
    // count stays put for 3 s (at most 2 minutes after all were Healthy).
    let settle = Instant::now();
    let (mut controller_writes_now, mut still) = (BTreeMap::new(), 0);
    while still < 3 && settle.elapsed() < Duration::from_secs(120) {
        let w = controller_writes(&writes_before, &scrape_writes(&client).await?);
        still = if w == controller_writes_now {
            still + 1
        } else {
            0
        };
        controller_writes_now = w;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let controller_writes_total: u64 = controller_writes_now.values().sum();
    let controller_writes_per_service = controller_writes_total as f64 / n.max(1) as f64;
    eprintln!(
        "  controller writes: {controller_writes_total} ({controller_writes_per_service:.1} per service, settled {:.1}s after all Healthy): {controller_writes_now:?}",
        settle.elapsed().as_secs_f64()
    );
    // LIST of every probe, the response body received whole, read as a stream (as a
    // reflector or `kubectl get` reads it; no decoding timed). Collected into one string
    // first (`request_text`), the client's copies of ~290 MB took longer than the server.
    let mut lists = Vec::new();
    let mut listed_probes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        listed_probes = count_listed(
            &client,
            "/apis/iaas.yusur.io/v1/networkprobes",
            "NetworkProbe",
        )
        .await?;
        lists.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let list_probes_ms = percentile(&mut lists, 0.5);
    eprintln!("  LIST {listed_probes} probes: {list_probes_ms:.0} ms");

    // Single-service changes with all N present: a new port, until its VIP is in the NB.
    let mut changes = Vec::new();
    for k in 0..opts.samples {
        let i = (k * 7919) % n;
        let t = Instant::now();
        change_port(&ysvcs, &nb, i, 81 + k as i32, Duration::from_secs(120)).await?;
        changes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Probe flips: one backend Unhealthy until it leaves its LB.
    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), "default");
    let mut flips = Vec::new();
    for k in 0..opts.samples {
        let i = (k * 104_729) % n;
        let lb = format!("ferry-default-s{i}-cip-vpc1-tcp");
        let probe = format!("s{i}-pod-b-{}", i * m);
        let t = Instant::now();
        probes
            .patch_status(
                &probe,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Unhealthy"}})),
            )
            .await
            .map_err(|e| e.to_string())?;
        while nb.with_mirror(|mm| lb_backends(mm, &lb)) != Some(m - 1) {
            if t.elapsed() > Duration::from_secs(120) {
                return Err(format!("flip of {probe} did not reach the NB"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        flips.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    eprintln!(
        "  changes and flips timed: change p50 {:.1} ms, p99 {:.1} ms; flip p99 {:.1} ms",
        percentile(&mut changes.clone(), 0.5),
        percentile(&mut changes.clone(), 0.99),
        percentile(&mut flips.clone(), 0.99)
    );
    // Acknowledged writes while the hollow nodes keep renewing: creates of small objects
    // the controller does not watch.
    let acked_writes_per_s_1 = acked_writes(&client, "bench-writes-1", 2000, 1).await?;
    let acked_writes_per_s = acked_writes(&client, "bench-writes-64", 20_000, 64).await?;
    eprintln!(
        "  acked writes/s: {acked_writes_per_s_1:.0} (1 client), {acked_writes_per_s:.0} (64)"
    );
    let mut objects = 0;
    for path in [
        "/api/v1/pods",
        "/apis/iaas.yusur.io/v1/yusurservices",
        "/apis/iaas.yusur.io/v1/networkprobes",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/nodes",
    ] {
        let req = http::Request::get(path.to_string())
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let full: Value = client.request(req).await.map_err(|e| e.to_string())?;
        objects += full["items"].as_array().map_or(0, Vec::len);
    }
    let (mut gets, api_gets_per_s) = api_latency(&client, API_GETS, 8).await?;
    eprintln!(
        "  GET p50 {:.2} ms, p99 {:.2} ms, {api_gets_per_s:.0}/s (8 clients)",
        percentile(&mut gets, 0.5),
        percentile(&mut gets, 0.99)
    );
    let leading = leader(&client).await.unwrap_or_default();
    // The leader's passes so far (before any failover).
    let (mut incremental, mut full) = pass_times(
        &std::fs::read_to_string(d.join(format!("controller-{leading}.log"))).unwrap_or_default(),
    );
    eprintln!(
        "  leader passes: {} incremental (p50 {:.2} ms), {} full (p50 {:.2} ms)",
        incremental.len(),
        percentile(&mut incremental, 0.5),
        full.len(),
        percentile(&mut full, 0.5)
    );
    let (leadership_losses, leadership_resumed) = pids
        .keys()
        .map(|id| {
            leadership_losses(
                &std::fs::read_to_string(d.join(format!("controller-{id}.log")))
                    .unwrap_or_default(),
            )
        })
        .fold((0, 0), |(l, r), (a, b)| (l + a, r + b));
    eprintln!(
        "  leaderships lost so far: {leadership_losses} ({leadership_resumed} won back in the same term)"
    );
    let standby = if leading == "bench-a" {
        "bench-b"
    } else {
        "bench-a"
    };
    let leader_pid = pids.get(&leading).copied().unwrap_or_default();
    let standby_pid = pids.get(standby).copied().unwrap_or_default();
    let apiserver_rss_mib = rss_mib(api_pid);
    let controller_rss_mib = rss_mib(leader_pid);
    let standby_rss_mib = rss_mib(standby_pid);
    eprintln!(
        "  RSS MiB: apiserver {apiserver_rss_mib:.0}, leader {controller_rss_mib:.0}, standby {standby_rss_mib:.0}"
    );
    // Crash failover: SIGKILL the leader, change a service at once, time until the
    // standby has programmed it (skipped, as 0, if no standby is alive).
    let standby_alive = standby_pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(standby_pid as i32), None).is_ok();
    let failover_s = if standby_alive {
        eprintln!("  killing the leader {leading} (pid {leader_pid})");
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(leader_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| format!("kill -9 {leader_pid}: {e}"))?;
        change_port(&ysvcs, &nb, n / 2, 200, Duration::from_secs(300)).await?;
        let failover_s = t.elapsed().as_secs_f64();
        eprintln!(
            "  {} programmed the change {failover_s:.2}s after the kill",
            leader(&client).await.unwrap_or_default()
        );
        failover_s
    } else {
        eprintln!("  no standby alive: failover not measured");
        0.0
    };
    let stats = &hollow.stats;
    let result = ControlPlaneResult {
        services: n,
        backends: m,
        nodes,
        ports_sync_s,
        full_sync_s,
        probes_created_s,
        probes_healthy_s,
        change_p50_ms: percentile(&mut changes.clone(), 0.5),
        change_p99_ms: percentile(&mut changes, 0.99),
        endpoint_flip_p99_ms: percentile(&mut flips, 0.99),
        list_probes_ms,
        listed_probes,
        acked_writes_per_s,
        acked_writes_per_s_1,
        apiserver_rss_mib,
        controller_rss_mib,
        standby_rss_mib,
        max_renew_gap_s: stats
            .max_renew_gap_ms
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0,
        lease_renewals: stats.renewals.load(std::sync::atomic::Ordering::Relaxed),
        failover_s,
        leadership_losses,
        leadership_resumed,
        objects,
        metrics: opts.metrics,
        passes_incremental: incremental.len(),
        pass_incremental_p50_ms: percentile(&mut incremental, 0.5),
        pass_incremental_p99_ms: percentile(&mut incremental, 0.99),
        passes_full: full.len(),
        pass_full_p50_ms: percentile(&mut full, 0.5),
        api_get_p50_ms: percentile(&mut gets, 0.5),
        api_get_p99_ms: percentile(&mut gets, 0.99),
        api_gets_per_s,
        controller_writes_per_service,
        controller_writes: controller_writes_now,
    };
    drop(hollow);
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    if let Some(out) = &opts.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    drop(children);
    drop(stack);
    Ok(result)
}

/// A client from a kubeconfig file, with a long read timeout (large lists under load).
pub(crate) async fn client_of(kubeconfig: &Path) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    cfg.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The holder of the controllers' Lease.
async fn leader(client: &Client) -> Option<String> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    api.get_opt("ferry-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Load balancers with `m` backends.
fn full_lbs(mm: &ferry_ovsdb::Mirror, m: usize) -> usize {
    mm.table("Load_Balancer").map_or(0, |t| {
        t.values()
            .filter(|r| {
                r.get("vips")
                    .and_then(|v| v.get(1)?.as_array()?.first()?.get(1)?.as_str())
                    .is_some_and(|s| !s.is_empty() && s.split(',').count() == m)
            })
            .count()
    })
}

/// Gives service `s{i}` a second port and waits until its VIP is in the NB.
async fn change_port(
    ysvcs: &Api<YusurService>,
    nb: &ferry_ovsdb::Client,
    i: usize,
    port: i32,
    timeout: Duration,
) -> Result<(), String> {
    let lb = format!("ferry-default-s{i}-cip-vpc1-tcp");
    let t = Instant::now();
    ysvcs
        .patch(
            &format!("s{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ports": [{"name": "a", "port": 80, "targetPort": 8080}, {"name": "b", "port": port, "targetPort": 8080}]}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let want = format!(":{port}");
    while !nb.with_mirror(|mm| {
        mm.table("Load_Balancer").is_some_and(|t| {
            t.values().any(|r| {
                r.get("name").and_then(Value::as_str) == Some(lb.as_str())
                    && r.get("vips").is_some_and(|v| v.to_string().contains(&want))
            })
        })
    }) {
        if t.elapsed() > timeout {
            return Err(format!("change of s{i} did not reach the NB"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Creates `count` ConfigMaps in a new namespace with `clients` concurrent clients;
/// returns acknowledged creates/s.
async fn acked_writes(
    client: &Client,
    ns: &str,
    count: usize,
    clients: usize,
) -> Result<f64, String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let nsobj =
        serde_json::from_value(json!({"metadata": {"name": ns}})).map_err(|e| e.to_string())?;
    namespaces
        .create(&PostParams::default(), &nsobj)
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm = serde_json::from_value(json!({"metadata": {"name": format!("w-{i}"), "labels": {"bench": "writes"}},
                    "data": {"index": i.to_string(), "payload": "0123456789abcdef0123456789abcdef"}}))
                .map_err(|e| e.to_string())?;
                api.create(&PostParams::default(), &cm)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// Writes counted in the API server's `ferry_apiserver_requests_total`, by (verb,
/// resource), answers other than 200/201 apart (`resource (409)`).
pub fn write_counts(metrics: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("ferry_apiserver_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(verb), Some(mut resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        // Conflicts (a stale cache's create or replace) apart: they are wasted writes.
        if let Some(code) = label("code").filter(|c| c != "200" && c != "201") {
            resource = format!("{resource} ({code})");
        }
        if !matches!(verb.as_str(), "create" | "update" | "patch" | "delete") {
            continue;
        }
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *out.entry((verb, resource)).or_default() += n;
    }
    out
}

/// The writes between two [`write_counts`] that the controllers made: all but Leases
/// (the hollow nodes' and the controllers' own), the hollow nodes' probe reports
/// (`patch networkprobes/status`) and the bench's own YusurService creates. As
/// `"verb resource" -> count`.
pub fn controller_writes(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|((verb, resource), _)| by_controllers(verb, resource))
        .map(|(k, n)| {
            let was = before.get(k).copied().unwrap_or(0);
            (format!("{} {}", k.0, k.1), n.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Whether writes of `verb` on `resource` (as [`write_counts`] names them) are the
/// controllers' during the services phase.
fn by_controllers(verb: &str, resource: &str) -> bool {
    // Without the response code ("networkprobes/status (409)").
    let plain = resource.split(' ').next().unwrap_or_default();
    !matches!(
        (verb, plain),
        (_, "leases") | ("patch", "networkprobes/status") | ("create", "yusurservices")
    )
}

/// Reads the LIST at `path` as a stream and counts its items of `kind`, keeping no more
/// than a buffer of it.
async fn count_listed(client: &Client, path: &str, kind: &str) -> Result<usize, String> {
    use futures::AsyncReadExt;
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let mut body = client
        .request_stream(req)
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Occurrences::new(format!("\"kind\":\"{kind}\""));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let got = body.read(&mut buf).await.map_err(|e| e.to_string())?;
        if got == 0 {
            return Ok(found.count);
        }
        found.feed(&buf[..got]);
    }
}

/// Counts a pattern in a byte stream fed in pieces (a match may straddle two).
struct Occurrences {
    pattern: Vec<u8>,
    /// The end of what was fed, shorter than the pattern: the start of a match.
    tail: Vec<u8>,
    count: usize,
}

impl Occurrences {
    fn new(pattern: String) -> Self {
        Occurrences {
            pattern: pattern.into_bytes(),
            tail: Vec::new(),
            count: 0,
        }
    }

    fn feed(&mut self, piece: &[u8]) {
        let p = self.pattern.len();
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(piece);
        self.count += window
            .windows(p)
            .filter(|w| *w == self.pattern.as_slice())
            .count();
        let keep = window.len().min(p.saturating_sub(1));
        self.tail = window[window.len() - keep..].to_vec();
    }
}

async fn scrape_writes(client: &Client) -> Result<BTreeMap<(String, String), u64>, String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(req).await.map_err(|e| e.to_string())?;
    Ok(write_counts(&text))
}

/// The readable table.
pub fn print_control_plane(r: &ControlPlaneResult) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(["figure", "value"]);
    let rows = [
        (
            "services x backends",
            format!("{} x {}", r.services, r.backends),
        ),
        (
            "ports_sync_s (first pod -> every pod's port in the NB)",
            format!("{:.2}", r.ports_sync_s),
        ),
        ("nodes (hollow)", r.nodes.to_string()),
        (
            "full_sync_s (empty -> all Programmed and in the NB)",
            format!("{:.2}", r.full_sync_s),
        ),
        (
            "probes_created_s (empty -> every probe created)",
            format!("{:.2}", r.probes_created_s),
        ),
        (
            "probes_healthy_s (empty -> every backend Healthy in its LB)",
            format!("{:.2}", r.probes_healthy_s),
        ),
        (
            "change_p50_ms (one service -> NB row)",
            format!("{:.1}", r.change_p50_ms),
        ),
        ("change_p99_ms", format!("{:.1}", r.change_p99_ms)),
        (
            "endpoint_flip_p99_ms (probe Unhealthy -> NB)",
            format!("{:.1}", r.endpoint_flip_p99_ms),
        ),
        (
            "list_probes_ms (LIST all NetworkProbes, body received as a stream)",
            format!("{:.1} ({} items)", r.list_probes_ms, r.listed_probes),
        ),
        (
            "acked_writes_per_s (64 clients / 1 client)",
            format!(
                "{:.0} / {:.0}",
                r.acked_writes_per_s, r.acked_writes_per_s_1
            ),
        ),
        ("apiserver_rss_mib", format!("{:.0}", r.apiserver_rss_mib)),
        (
            "controller_rss_mib (leader / standby)",
            format!("{:.0} / {:.0}", r.controller_rss_mib, r.standby_rss_mib),
        ),
        (
            "max_renew_gap_s (hollow Lease renewals)",
            format!("{:.2} ({} renewals)", r.max_renew_gap_s, r.lease_renewals),
        ),
        (
            "failover_s (leader kill -9 -> change in the NB)",
            format!("{:.2}", r.failover_s),
        ),
        (
            "leadership_losses (before the kill; won back in the same term)",
            format!("{} ({})", r.leadership_losses, r.leadership_resumed),
        ),
        ("objects", r.objects.to_string()),
        (
            "leader passes: incremental p50 / p99 ms (count)",
            format!(
                "{:.2} / {:.2} ({})",
                r.pass_incremental_p50_ms, r.pass_incremental_p99_ms, r.passes_incremental
            ),
        ),
        (
            "leader passes: full p50 ms (count)",
            format!("{:.2} ({})", r.pass_full_p50_ms, r.passes_full),
        ),
        (
            "api GET p50 / p99 ms, per s (8 clients)",
            format!(
                "{:.2} / {:.2}, {:.0}",
                r.api_get_p50_ms, r.api_get_p99_ms, r.api_gets_per_s
            ),
        ),
        (
            "controller writes per service (empty -> all Healthy, settled)",
            format!("{:.1}", r.controller_writes_per_service),
        ),
        ("metrics", if r.metrics { "on" } else { "off" }.to_string()),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    println!("{t}");
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}

/// How long the services phase may go without one more load balancer gaining its last
/// backend before the bench gives up and says why (a run stuck on services that can never
/// be programmed waited for the hour before).
const STALLED: Duration = Duration::from_secs(300);

/// The services whose Ready condition is not True, with its reason and message (the first
/// five, and how many in all).
async fn not_ready(ysvcs: &Api<YusurService>) -> Result<String, String> {
    let list = ysvcs
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let stuck: Vec<String> = list
        .items
        .iter()
        .filter_map(|y| {
            let name = y.metadata.name.as_deref().unwrap_or_default();
            let ready = y
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => None,
                Some(c) => Some(format!("{name} ({}: {})", c.reason, c.message)),
                None => Some(format!("{name} (no Ready condition)")),
            }
        })
        .collect();
    Ok(format!(
        "{} services not Ready; {}",
        stuck.len(),
        stuck.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn occurrences_are_counted_across_pieces() {
        let text =
            b"[{\"kind\":\"NetworkProbe\"},{\"kind\":\"NetworkProbe\"},{\"kind\":\"Other\"}]";
        let want = 2;
        // Every split into pieces of one size, from one byte to the whole.
        for size in 1..=text.len() {
            let mut o = super::Occurrences::new("\"kind\":\"NetworkProbe\"".into());
            for piece in text.chunks(size) {
                o.feed(piece);
            }
            assert_eq!(o.count, want, "pieces of {size}");
        }
    }

    use super::*;

    #[test]
    fn no_subnet_gets_more_pods_than_ovn_can_bind() {
        for pods in [100, 80_000, 200_000, 1_000_000] {
            let subnets = subnet_count(pods);
            let mut per = vec![0usize; subnets];
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..pods {
                let (ip, s) = backend_ip(i, subnets);
                assert_eq!(ip.octets()[1] as usize, 100 + s, "pod {i}");
                assert!(ip.octets()[2..] != [0, 0] && ip.octets()[2..] != [0, 1]);
                assert!(seen.insert(ip), "{ip} given twice");
                per[s] += 1;
            }
            assert!(subnets >= 4);
            assert!(per.iter().all(|&n| n <= PODS_PER_SUBNET), "{pods}: {per:?}");
        }
        assert_eq!(subnet_count(200_000), 10);
    }

    #[test]
    fn leadership_losses_count_the_controllers_lines() {
        let log = "2026-11-29T00:00:00Z  INFO ferry_controller: taking over identity=bench-a\n\
                   2026-11-29T00:00:01Z  WARN ferry_controller: lost leadership; standing by identity=bench-a\n\
                   2026-11-29T00:00:02Z  WARN ferry_controller::leader: not leading identity=bench-a\n\
                   2026-11-29T00:00:03Z  WARN ferry_controller: lost leadership; standing by identity=bench-a\n\
                   2026-11-29T00:00:04Z  INFO ferry_controller: leading again in the same term; nothing dropped identity=bench-a\n";
        assert_eq!(leadership_losses(log), (2, 1));
        assert_eq!(leadership_losses(""), (0, 0));
    }

    #[test]
    fn controller_writes_are_the_write_verbs_less_leases_reports_and_the_bench_creates() {
        let before = write_counts(
            "# HELP x\n\
             ferry_apiserver_requests_total{verb=\"create\",resource=\"networkprobes\",code=\"201\"} 5\n\
             ferry_apiserver_requests_total{verb=\"update\",resource=\"leases\",code=\"200\"} 9\n",
        );
        let after = write_counts(
            "ferry_apiserver_requests_total{verb=\"create\",resource=\"networkprobes\",code=\"201\"} 45\n\
             ferry_apiserver_requests_total{verb=\"create\",resource=\"networkprobes\",code=\"409\"} 2\n\
             ferry_apiserver_requests_total{verb=\"update\",resource=\"leases\",code=\"200\"} 99\n\
             ferry_apiserver_requests_total{verb=\"patch\",resource=\"networkprobes/status\",code=\"200\"} 40\n\
             ferry_apiserver_requests_total{verb=\"patch\",resource=\"networkprobes/status\",code=\"409\"} 3\n\
             ferry_apiserver_requests_total{verb=\"patch\",resource=\"yusurservices/status\",code=\"200\"} 6\n\
             ferry_apiserver_requests_total{verb=\"create\",resource=\"yusurservices\",code=\"201\"} 2\n\
             ferry_apiserver_requests_total{verb=\"list\",resource=\"endpoints\",code=\"200\"} 7\n",
        );
        assert_eq!(
            controller_writes(&before, &after),
            BTreeMap::from([
                ("create networkprobes".to_string(), 40),
                ("create networkprobes (409)".to_string(), 2),
                ("patch yusurservices/status".to_string(), 6),
            ])
        );
    }
}
