//! `ferry bench control-plane`: a real `ferry apiserver` and `ferry controller` (separate
//! processes, so their memory is measured apart) against a real OVN NB and `ovn-northd`
//! (a central-only `ferry_ovn_stack::OvnStack`),
//! with N YusurServices of M backends each. Prints a table and JSON; asserts nothing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, YusurService};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// What to run.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub services: usize,
    pub backends: usize,
    pub ferry: PathBuf,
    pub out: Option<PathBuf>,
    /// Single-service changes and probe flips measured.
    pub samples: usize,
}

/// The figures, with the keys the issue names.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlPlaneResult {
    pub services: usize,
    pub backends: usize,
    /// From the first pod created to every pod's port in the NB.
    pub ports_sync_s: f64,
    pub full_sync_s: f64,
    /// From all Programmed to every NetworkProbe created.
    pub probes_created_s: f64,
    pub probes_healthy_s: f64,
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    pub endpoint_flip_p99_ms: f64,
    pub list_probes_ms: f64,
    pub apiserver_rss_mib: f64,
    pub controller_rss_mib: f64,
    pub objects: usize,
}

struct Children(Vec<Child>);

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

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let f = std::fs::File::create(log).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| e.to_string())?)
        .stderr(f)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

fn progress(what: &str, done: usize, total: usize, start: Instant) {
    eprint!(
        "\r  {what}: {done}/{total} ({:.1}s)   ",
        start.elapsed().as_secs_f64()
    );
    if done == total {
        eprintln!();
    }
}

async fn wait_file(path: &Path, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return Err(format!("{} did not appear", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn backend_ip(i: usize) -> (Ipv4Addr, usize) {
    // 4 subnets of /16: 10.100.0.0/16 .. 10.103.0.0/16; .0.1 is each gateway.
    let subnet = i % 4;
    let n = (i / 4) as u32 + 2;
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
    let d = dir.path();
    let (n, m) = (opts.services, opts.backends);
    eprintln!(
        "control-plane bench: {n} services x {m} backends in {}",
        d.display()
    );
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
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let apiserver = spawn(&mut c, &d.join("apiserver.log"))?;
    let api_pid = apiserver.id();
    children.0.push(apiserver);
    wait_file(&api_dir.join("kubeconfig"), Duration::from_secs(30)).await?;
    let kc = kube::config::Kubeconfig::read_from(api_dir.join("kubeconfig"))
        .map_err(|e| e.to_string())?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    cfg.read_timeout = Some(Duration::from_secs(300));
    let client = Client::try_from(cfg).map_err(|e| e.to_string())?;
    for crd in ferry_api::all_crds() {
        let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
        api.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Command::new(&opts.ferry);
    c.args(["controller", "--kubeconfig"])
        .arg(api_dir.join("kubeconfig-controller"))
        .args([
            "--ovn-nb",
            &nb_remote,
            "--service-cidr",
            "10.96.0.0/12",
            "--identity",
            "bench",
        ]);
    let controller = spawn(&mut c, &d.join("controller.log"))?;
    let ctl_pid = controller.id();
    children.0.push(controller);

    // The network: one VPC, four /16 subnets.
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
    for s in 0..4 {
        apply(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": format!("bench-{s}")}, "spec": {"vpc": "vpc1", "cidrBlock": format!("10.{}.0.0/16", 100 + s)}})).await?;
    }
    // Backends: pods with their addresses already written, as the controller would.
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
                let (ip, s) = backend_ip(i);
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({"metadata": {"name": format!("b-{i}"), "labels": {"svc": format!("s{}", i / m)},
                    "annotations": {"iaas.yusur.io/subnet": format!("bench-{s}"), "iaas.yusur.io/ip_address": ip.to_string(), "iaas.yusur.io/mac_address": format!("0a:00:{:02x}:{:02x}:{:02x}:{:02x}", ip.octets()[0], ip.octets()[1], ip.octets()[2], ip.octets()[3]),
                        "iaas.yusur.io/gateway": format!("10.{}.0.1", 100 + s), "iaas.yusur.io/cidr": format!("10.{}.0.0/16", 100 + s)}},
                    "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "none"}]}})).unwrap_or_default();
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ports_sync_s = pods_started.elapsed().as_secs_f64();
    eprintln!("  pods' ports in the NB after {ports_sync_s:.1}s");
    let ysvcs: Api<YusurService> = Api::namespaced(client.clone(), "default");
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
    loop {
        let lbs = nb.with_mirror(|mm| mm.table("Load_Balancer").map(|t| t.len()).unwrap_or(0));
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
        progress("services programmed", programmed.min(lbs), n, start);
        if lbs >= n && programmed >= n {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            return Err("full sync did not finish within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let full_sync_s = start.elapsed().as_secs_f64();

    // The controller writes status first, then the generated objects: wait for every
    // probe (the LIST that finds them all is the LIST figure).
    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    let mut list_probes_ms;
    let all = loop {
        let list_start = Instant::now();
        let all = probes
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list_probes_ms = list_start.elapsed().as_secs_f64() * 1000.0;
        progress("probes created", all.items.len(), n * m, start);
        if all.items.len() >= n * m {
            break all;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            return Err("the probes were not all created within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    let probes_created_s = start.elapsed().as_secs_f64();
    // Probes Healthy, as agents would report.
    let start = Instant::now();
    let names: Vec<String> = all.items.iter().map(|p| p.name_any()).collect();
    let total = names.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    futures::stream::iter(names.clone())
        .map(|name| {
            let probes = probes.clone();
            let done = done.clone();
            async move {
                let r = probes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
                    )
                    .await;
                let c = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if c.is_multiple_of(1000) || c == total {
                    progress("probes Healthy", c, total, start);
                }
                r.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let last = format!("ferry-default-s{}-cip-vpc1-tcp", n - 1);
    while nb.with_mirror(|mm| lb_backends(mm, &last)) != Some(m) {
        if start.elapsed() > Duration::from_secs(3600) {
            return Err("backends did not reach the NB within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let probes_healthy_s = start.elapsed().as_secs_f64();

    // Single-service changes with all N present: a new port, until its VIP is in the NB.
    let mut changes = Vec::new();
    for k in 0..opts.samples {
        let i = (k * 7919) % n;
        let lb = format!("ferry-default-s{i}-cip-vpc1-tcp");
        let t = Instant::now();
        ysvcs.patch(&format!("s{i}"), &PatchParams::default(), &Patch::Merge(json!({"spec": {"ports": [{"name": "a", "port": 80, "targetPort": 8080}, {"name": "b", "port": 81 + k as i32, "targetPort": 8080}]}}))).await.map_err(|e| e.to_string())?;
        let want = format!(":{}", 81 + k);
        while !nb.with_mirror(|mm| {
            mm.table("Load_Balancer").is_some_and(|t| {
                t.values().any(|r| {
                    r.get("name").and_then(Value::as_str) == Some(lb.as_str())
                        && r.get("vips").is_some_and(|v| v.to_string().contains(&want))
                })
            })
        }) {
            if t.elapsed() > Duration::from_secs(120) {
                return Err(format!("change of s{i} did not reach the NB"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        changes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Probe flips: one backend Unhealthy until it leaves its LB.
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
    let mut objects = 0;
    for path in [
        "/api/v1/pods",
        "/apis/iaas.yusur.io/v1/yusurservices",
        "/apis/iaas.yusur.io/v1/networkprobes",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let req = http::Request::get(format!("{path}?limit=1"))
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let list: Value = client.request(req).await.map_err(|e| e.to_string())?;
        let _ = list;
        let req = http::Request::get(path.to_string())
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let full: Value = client.request(req).await.map_err(|e| e.to_string())?;
        objects += full["items"].as_array().map_or(0, Vec::len);
    }
    let result = ControlPlaneResult {
        services: n,
        backends: m,
        ports_sync_s,
        full_sync_s,
        probes_created_s,
        probes_healthy_s,
        change_p50_ms: percentile(&mut changes.clone(), 0.5),
        change_p99_ms: percentile(&mut changes, 0.99),
        endpoint_flip_p99_ms: percentile(&mut flips, 0.99),
        list_probes_ms,
        apiserver_rss_mib: rss_mib(api_pid),
        controller_rss_mib: rss_mib(ctl_pid),
        objects,
    };
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    if let Some(out) = &opts.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    drop(children);
    drop(stack);
    Ok(result)
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
        (
            "full_sync_s (create -> all Programmed and in the NB)",
            format!("{:.2}", r.full_sync_s),
        ),
        (
            "probes_created_s (all Programmed -> every probe created)",
            format!("{:.2}", r.probes_created_s),
        ),
        (
            "probes_healthy_s (all probes Healthy -> last LB full)",
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
            "list_probes_ms (LIST all NetworkProbes)",
            format!("{:.1}", r.list_probes_ms),
        ),
        ("apiserver_rss_mib", format!("{:.0}", r.apiserver_rss_mib)),
        ("controller_rss_mib", format!("{:.0}", r.controller_rss_mib)),
        ("objects", r.objects.to_string()),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    println!("{t}");
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}
