//! Measures the API server on this machine and prints the figures (JSON, then a table):
//! acknowledged creates/s over HTTPS with 1 and 64 concurrent clients, LIST of 100k objects
//! from the watch cache (with and without a label selector), memory per stored object (RSS
//! of the server process after a restart that loads them, minus RSS when empty), and watch
//! fan-out to 1000 watchers (time until all see one write; events/s for a burst).
//!
//! `cargo run --release -p ferry-apiserver --example apiserver_bench [-- --objects N]`
//!
//! `-- --lease-under-load SECS` measures instead what leader election sees under bulk load:
//! the latency of a controller's Lease renewal (a GET then a PUT of `kube-system/ferry-
//! controller` every 250 ms, on a connection of its own, as `ferry-controller`'s leader
//! task does) and of node Lease renewals (`kube-node-lease`, 200/s) while 64 clients create
//! ConfigMaps as fast as they can, for SECS seconds. Prints p50/p99/max of each.
//!
//! `-- --lease-under-load SECS --preload N --node-leases L --node-rate R` is the same at the
//! 10,000-node condition: N NetworkProbes (~1 KiB each, with managedFields, as the
//! controller writes them) and L node Leases are written into the store before the server
//! starts (so it serves with them in its cache), the node Leases are renewed by merge
//! patches (as the hollow nodes and `ferry agent` do) at R/s in all, and one more client
//! creates ConfigMaps one at a time beside the 64. Afterwards it times a LIST of the N
//! probes. The server's pid is printed to stderr, for `perf record -p`.
//!
//! The server runs as a child process (this binary with `serve`), so its RSS is its own.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    if args.get(1).map(String::as_str) == Some("serve") {
        let dir = PathBuf::from(args.get(2).context("serve DIR")?);
        return rt.block_on(serve(dir));
    }
    let objects = args
        .iter()
        .position(|a| a == "--objects")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse())
        .transpose()
        .context("--objects N")?
        .unwrap_or(100_000usize);
    let flag = |name: &str| -> anyhow::Result<Option<usize>> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|n| n.parse::<usize>())
            .transpose()
            .with_context(|| format!("{name} N"))
    };
    if let Some(secs) = flag("--lease-under-load")? {
        let scale = match flag("--preload")? {
            None => None,
            Some(probes) => Some(Scale {
                probes,
                node_leases: flag("--node-leases")?.unwrap_or(10_000),
                node_rate: flag("--node-rate")?.unwrap_or(1_000),
            }),
        };
        return rt.block_on(lease_under_load(secs as u64, scale));
    }
    rt.block_on(bench(objects))
}

/// Child mode: serve DIR until stdin closes.
async fn serve(dir: PathBuf) -> anyhow::Result<()> {
    let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
        data_dir: dir,
        listen: "127.0.0.1:0".parse()?,
        limits: ferry_apiserver::Limits {
            max_inflight_per_identity: 10_000,
            ..Default::default()
        },
        services: Default::default(),
    })
    .await?;
    let crds: Vec<serde_json::Value> = ferry_api::all_crds()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    server.install_crds(&crds).await?;
    println!("serving https://{}", server.addr);
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

struct ServerProcess(Child);

impl ServerProcess {
    fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        eprintln!("server pid {}", child.id());
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        if !line.starts_with("serving") {
            bail!("server did not start: {line:?}");
        }
        Ok(ServerProcess(child))
    }

    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    fn stop(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn client(dir: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(dir.join("kubeconfig"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn cm(name: &str, i: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "yes", "shard": (i % 100).to_string()}},
        "data": {"index": i.to_string(), "payload": "0123456789abcdef0123456789abcdef"},
    }))
    .unwrap_or_default()
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Creates `n` ConfigMaps in `ns` with `clients` concurrent clients; returns creates/s.
async fn creates(client: &kube::Client, ns: &str, n: usize, clients: usize) -> anyhow::Result<f64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let api = api.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                api.create(&PostParams::default(), &cm(&format!("cm-{i:07}"), i))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Median wall time (ms) and item count of a raw LIST (server work + transfer, no decoding).
async fn list_ms(client: &kube::Client, path: &str) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut items = 0;
    for _ in 0..5 {
        let req = axum::http::Request::get(path).body(Vec::new())?;
        let start = Instant::now();
        let text = client.request_text(req).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        items = text.matches("\"kind\":\"ConfigMap\"").count();
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], items))
}

/// Opens `watchers` watches, then times one write until all saw it, and a burst of writes
/// until every watcher saw every one. Returns (ms for one write, events/s for the burst).
async fn fanout(
    client: &kube::Client,
    watchers: usize,
    burst: usize,
) -> anyhow::Result<(f64, f64)> {
    namespace(client, "fanout").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "fanout");
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let seen = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let seen = seen.clone();
        let ready = ready.clone();
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await?
                .boxed();
            ready.fetch_add(1, Ordering::SeqCst);
            while let Some(e) = s.next().await {
                if let WatchEvent::Added(_) = e? {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
            anyhow::Ok(())
        }));
    }
    while ready.load(Ordering::SeqCst) < watchers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The server subscribes a watch before it sends the response headers, which is when
    // `Api::watch` returns: every watcher is now live.
    let wait_for = |target: usize| {
        let seen = seen.clone();
        async move {
            while seen.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    let start = Instant::now();
    api.create(&PostParams::default(), &cm("one", 0)).await?;
    tokio::time::timeout(Duration::from_secs(60), wait_for(watchers))
        .await
        .context("not every watcher saw the write")?;
    let one_ms = start.elapsed().as_secs_f64() * 1000.0;

    let start = Instant::now();
    for i in 0..burst {
        api.create(&PostParams::default(), &cm(&format!("burst-{i}"), i))
            .await?;
    }
    tokio::time::timeout(Duration::from_secs(120), wait_for(watchers * (burst + 1)))
        .await
        .context("not every watcher saw the burst")?;
    let events_per_s = (watchers * burst) as f64 / start.elapsed().as_secs_f64();
    for t in tasks {
        t.abort();
    }
    Ok((one_ms, events_per_s))
}

async fn bench(objects: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let empty = ServerProcess::start(&dir)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = empty.rss_bytes();
    let c = client(&dir).await?;
    namespace(&c, "seq").await?;
    namespace(&c, "bulk").await?;
    eprintln!("1 client: 2000 creates ...");
    let w1 = creates(&c, "seq", 2000, 1).await?;
    eprintln!("64 clients: {objects} creates ...");
    let w64 = creates(&c, "bulk", objects, 64).await?;
    empty.stop();

    // Restart: the server loads everything into its cache; RSS now vs. when empty.
    let started = Instant::now();
    let full = ServerProcess::start(&dir)?;
    let restart_ms = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full = full.rss_bytes();
    let stored = objects + 2000;
    let c = client(&dir).await?;
    eprintln!("LIST ...");
    let (list_all_ms, list_all_n) = list_ms(&c, "/api/v1/namespaces/bulk/configmaps").await?;
    let (list_sel_ms, list_sel_n) = list_ms(
        &c,
        "/api/v1/namespaces/bulk/configmaps?labelSelector=shard%3D7",
    )
    .await?;
    eprintln!("watch fan-out ...");
    let (fan_one_ms, fan_eps) = fanout(&c, 1000, 20).await?;
    full.stop();

    let per_object = (rss_full.saturating_sub(rss_empty)) as f64 / stored as f64;
    let out = json!({
        "creates_per_s_1_client": w1.round(),
        "creates_per_s_64_clients": w64.round(),
        "objects": objects,
        "list_all_ms": list_all_ms, "list_all_items": list_all_n,
        "list_label_selector_ms": list_sel_ms, "list_label_selector_items": list_sel_n,
        "rss_empty_bytes": rss_empty, "rss_loaded_bytes": rss_full,
        "bytes_per_object": per_object.round(),
        "restart_with_all_objects_ms": restart_ms.round(),
        "watchers": 1000,
        "fanout_one_write_ms": fan_one_ms,
        "fanout_events_per_s": fan_eps.round(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    println!();
    let rows = [
        ("acknowledged creates/s, 1 client", format!("{w1:.0}")),
        ("acknowledged creates/s, 64 clients", format!("{w64:.0}")),
        (
            "LIST all (raw HTTPS, median of 5)",
            format!("{list_all_ms:.1} ms for {list_all_n} objects"),
        ),
        (
            "LIST with labelSelector shard=7",
            format!("{list_sel_ms:.1} ms for {list_sel_n} of {objects}"),
        ),
        (
            "memory per stored object (RSS delta)",
            format!(
                "{:.0} B ({:.0} MiB for {stored})",
                per_object,
                (rss_full.saturating_sub(rss_empty)) as f64 / 1048576.0
            ),
        ),
        ("restart loading all objects", format!("{restart_ms:.0} ms")),
        (
            "watch fan-out: 1 write -> 1000 watchers",
            format!("{fan_one_ms:.1} ms"),
        ),
        (
            "watch fan-out: 20-write burst",
            format!("{fan_eps:.0} events/s"),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<42} {v}");
    }
    Ok(())
}

fn lease(name: &str, ns: &str, holder: &str, duration_s: i32) -> Lease {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration_s),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        }),
    }
}

/// Renews `name` in `ns` every `every` until `stop`: a GET then a PUT with the read
/// resourceVersion (what the controller's leader task does). Returns each renewal's
/// latency (ms).
async fn renew_loop(
    api: Api<Lease>,
    name: String,
    every: Duration,
    stop: Instant,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < stop {
        tick.tick().await;
        let start = Instant::now();
        let mut cur = api.get(&name).await?;
        if let Some(spec) = cur.spec.as_mut() {
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::now(),
            ));
        }
        api.replace(&name, &PostParams::default(), &cur).await?;
        out.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// User + system CPU seconds of process `pid` so far (Linux `/proc`; 0 elsewhere).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 of `rest`, which starts
    // with the state (field 3).
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

fn percentiles(mut v: Vec<f64>) -> (usize, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (v.len(), at(0.5), at(0.99), v.last().copied().unwrap_or(0.0))
}

/// The 10,000-node condition of `--preload` (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Scale {
    probes: usize,
    node_leases: usize,
    node_rate: usize,
}

fn probe_json(i: usize) -> serde_json::Value {
    let name = format!("svc-{:05}-backend-{:02}", i / 20, i % 20);
    json!({
        "apiVersion": format!("{}/v1", ferry_api::GROUP), "kind": "NetworkProbe",
        "metadata": {
            "name": name, "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": "2026-11-29T09:00:00Z", "generation": 1,
            "labels": {"iaas.yusur.io/service": format!("svc-{:05}", i / 20)},
            // No ownerReferences: the garbage collector would delete probes whose
            // YusurService does not exist. An annotation of the same size instead.
            "annotations": {"iaas.yusur.io/owner": format!("YusurService/svc-{:05}/{}", i / 20, uuid::Uuid::new_v4())},
            "managedFields": [
                {"manager": "ferry-controller", "operation": "Apply", "apiVersion": format!("{}/v1", ferry_api::GROUP),
                 "time": "2026-11-29T09:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:iaas.yusur.io/service": {}}, "f:ownerReferences": {"k:{\"uid\":\"x\"}": {}}},
                    "f:spec": {"f:failureThreshold": {}, "f:nodeName": {}, "f:periodSeconds": {}, "f:port": {},
                    "f:successThreshold": {}, "f:target": {"f:kind": {}, "f:name": {}, "f:namespace": {}}, "f:timeoutSeconds": {}, "f:type": {}}}},
                {"manager": "ferry-agent", "operation": "Update", "apiVersion": format!("{}/v1", ferry_api::GROUP),
                 "time": "2026-11-29T09:00:05Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:lastTransitionTime": {}, "f:message": {}, "f:observedGeneration": {}, "f:phase": {}}}}]},
        "spec": {"target": {"kind": "Pod", "name": format!("pod-{i:06}"), "namespace": "default"},
            "type": "TCP", "port": 8080, "nodeName": format!("node{}", i % 10_000),
            "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "status": {"phase": "Healthy", "observedGeneration": 1, "lastTransitionTime": "2026-11-29T09:00:05Z", "message": ""},
    })
}

/// Writes `scale`'s probes and node Leases straight into the store of `dir` (the server
/// is not running yet), 1,000 per transaction.
async fn preload(dir: &Path, scale: Scale) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let store = ferry_store::Store::open(dir.join("store.redb"), Default::default())?;
    let started = Instant::now();
    let probe_prefix = format!("/registry/{}/networkprobes/default/", ferry_api::GROUP);
    let mut ops = Vec::new();
    for i in 0..scale.probes {
        let v = probe_json(i);
        let key = format!(
            "{probe_prefix}{}",
            v["metadata"]["name"].as_str().unwrap_or_default()
        );
        ops.push(ferry_store::Op::Create {
            key,
            value: serde_json::to_vec(&v)?.into(),
        });
        if ops.len() == 1000 {
            store.txn(std::mem::take(&mut ops)).await?;
        }
    }
    for i in 0..scale.node_leases {
        let name = format!("ferry-agent-node{i}");
        let v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease", "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": "2026-11-29T09:00:00Z", "generation": 1},
            "spec": {"holderIdentity": format!("node{i}"), "leaseDurationSeconds": 40,
                "renewTime": "2026-11-29T09:00:00.000000Z"}});
        let key = format!("/registry/coordination.k8s.io/leases/kube-node-lease/{name}");
        ops.push(ferry_store::Op::Create {
            key,
            value: serde_json::to_vec(&v)?.into(),
        });
        if ops.len() == 1000 {
            store.txn(std::mem::take(&mut ops)).await?;
        }
    }
    if !ops.is_empty() {
        store.txn(ops).await?;
    }
    store.close().await?;
    eprintln!(
        "preloaded {} probes and {} node Leases in {:.1} s",
        scale.probes,
        scale.node_leases,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Renews node Leases `ferry-agent-node{0..n}` by merge patch, `rate` a second in all
/// (round robin, at most 1,024 in flight), until `stop`. Returns each renewal's latency
/// (ms) and the longest gap between two renewals of one Lease (s).
async fn node_patches(
    api: Api<Lease>,
    n: usize,
    rate: usize,
    stop: Instant,
) -> anyhow::Result<(Vec<f64>, f64)> {
    use kube::api::{Patch, PatchParams};
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let last: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..n)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let max_gap = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = rate as f64 / 100.0;
    let mut next = 0f64;
    let mut tasks = Vec::new();
    while Instant::now() < stop {
        tick.tick().await;
        let from = next as usize;
        next += per_tick;
        for k in from..next as usize {
            let i = k % n;
            let permit = limit.clone().acquire_owned().await?;
            let (api, lat, last, max_gap) =
                (api.clone(), lat.clone(), last.clone(), max_gap.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let patch = json!({"spec": {"renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()}});
                let r = api
                    .patch(&format!("ferry-agent-node{i}"), &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                drop(permit);
                if r.is_ok() {
                    let now = start.elapsed().as_millis() as u64;
                    let before = last[i].swap(now, Ordering::Relaxed);
                    if before > 0 {
                        max_gap.fetch_max(now - before, Ordering::Relaxed);
                    }
                    lat.lock().map(|mut v| v.push(t.elapsed().as_secs_f64() * 1000.0)).ok();
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let out = lat.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((out, max_gap.load(Ordering::Relaxed) as f64 / 1000.0))
}

/// Lease renewal latency while 64 clients write bulk objects (see the module doc).
async fn lease_under_load(secs: u64, scale: Option<Scale>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    if let Some(scale) = scale {
        preload(&dir, scale).await?;
    }
    let loading = Instant::now();
    let server = ServerProcess::start(&dir)?;
    eprintln!("server up in {:.1} s", loading.elapsed().as_secs_f64());
    let bulk = client(&dir).await?;
    namespace(&bulk, "bulk").await?;
    namespace(&bulk, "seq").await?;
    let nodes = if scale.is_some() { 0 } else { 200usize };
    let controller_api: Api<Lease> = Api::namespaced(client(&dir).await?, "kube-system");
    controller_api
        .create(
            &PostParams::default(),
            &lease("ferry-controller", "kube-system", "bench", 2),
        )
        .await?;
    let node_client = client(&dir).await?;
    let node_api: Api<Lease> = Api::namespaced(node_client, "kube-node-lease");
    for i in 0..nodes {
        let name = format!("ferry-agent-node{i}");
        node_api
            .create(
                &PostParams::default(),
                &lease(&name, "kube-node-lease", &name, 40),
            )
            .await?;
    }
    let run = |stop: Instant| {
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(renew_loop(
            controller_api.clone(),
            "ferry-controller".into(),
            Duration::from_millis(250),
            stop,
        )));
        for i in 0..nodes {
            tasks.push(tokio::spawn(renew_loop(
                node_api.clone(),
                format!("ferry-agent-node{i}"),
                Duration::from_secs(1),
                stop,
            )));
        }
        tasks
    };
    let patches = |stop: Instant| {
        scale.map(|s| {
            tokio::spawn(node_patches(
                node_api.clone(),
                s.node_leases,
                s.node_rate,
                stop,
            ))
        })
    };

    // Quiet: the renewals alone.
    let quiet_stop = Instant::now() + Duration::from_secs(secs.min(10));
    let quiet_nodes = patches(quiet_stop);
    let quiet = run(quiet_stop);
    let mut quiet_ctl = Vec::new();
    for (i, t) in quiet.into_iter().enumerate() {
        let v = t.await??;
        if i == 0 {
            quiet_ctl = v;
        }
    }
    if let Some(t) = quiet_nodes {
        t.await??;
    }

    // Loaded: the same renewals while 64 clients create ConfigMaps (and one more, alone).
    let stop = Instant::now() + Duration::from_secs(secs);
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..64 {
        let api: Api<ConfigMap> = Api::namespaced(bulk.clone(), "bulk");
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < stop {
                api.create(&PostParams::default(), &cm(&format!("w{w}-{i}"), i))
                    .await?;
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let one_client = {
        let api: Api<ConfigMap> = Api::namespaced(client(&dir).await?, "seq");
        tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < stop {
                api.create(&PostParams::default(), &cm(&format!("s-{i}"), i))
                    .await?;
                i += 1;
            }
            anyhow::Ok(i)
        })
    };
    let started = Instant::now();
    let server_cpu0 = cpu_seconds(server.0.id());
    let loaded_nodes = patches(stop);
    let renewals = run(stop);
    let mut ctl = Vec::new();
    let mut node = Vec::new();
    for (i, t) in renewals.into_iter().enumerate() {
        let v = t.await??;
        if i == 0 {
            ctl = v;
        } else {
            node.extend(v);
        }
    }
    let mut node_gap = 0.0;
    if let Some(t) = loaded_nodes {
        let (v, gap) = t.await??;
        node.extend(v);
        node_gap = gap;
    }
    for w in writers {
        w.await??;
    }
    let server_cpu = cpu_seconds(server.0.id()) - server_cpu0;
    let one_n = one_client.await??;
    let one = one_n as f64 / started.elapsed().as_secs_f64();
    let bulk_per_s = written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    // Every write of the loaded phase: creates, node renewals, controller renewals (a GET
    // and a PUT each, counted as one).
    let writes = written.load(Ordering::Relaxed) + one_n + node.len() + ctl.len();
    let cpu_per_write_us = server_cpu * 1e6 / writes.max(1) as f64;
    let list = match scale {
        Some(s) if s.probes > 0 => {
            let path = format!("/apis/{}/v1/networkprobes", ferry_api::GROUP);
            let mut times = Vec::new();
            let cpu0 = (cpu_seconds(server.0.id()), cpu_seconds(std::process::id()));
            for _ in 0..3 {
                let req = axum::http::Request::get(path.as_str()).body(Vec::new())?;
                let t = Instant::now();
                let text = bulk.request_text(req).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                eprintln!("LIST {} bytes", text.len());
            }
            eprintln!(
                "LIST CPU per LIST: server {:.0} ms, client (this process) {:.0} ms",
                (cpu_seconds(server.0.id()) - cpu0.0) * 1000.0 / 3.0,
                (cpu_seconds(std::process::id()) - cpu0.1) * 1000.0 / 3.0
            );
            times.sort_by(f64::total_cmp);
            // The same LIST read as a stream whose bytes are counted, not kept: what the
            // server and the transport cost without the client's copies of 300 MB
            // (`request_text` collects the frames, copies them into one buffer, copies that
            // again and checks it as UTF-8).
            let mut streamed = Vec::new();
            let cpu0 = (cpu_seconds(server.0.id()), cpu_seconds(std::process::id()));
            for _ in 0..3 {
                use futures::AsyncReadExt;
                let req = axum::http::Request::get(path.as_str()).body(Vec::new())?;
                let t = Instant::now();
                let mut body = bulk.request_stream(req).await?;
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0usize;
                loop {
                    let got = body.read(&mut buf).await?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                streamed.push(t.elapsed().as_secs_f64() * 1000.0);
                eprintln!("LIST streamed {n} bytes");
            }
            eprintln!(
                "LIST streamed, CPU per LIST: server {:.0} ms, client (this process) {:.0} ms",
                (cpu_seconds(server.0.id()) - cpu0.0) * 1000.0 / 3.0,
                (cpu_seconds(std::process::id()) - cpu0.1) * 1000.0 / 3.0
            );
            streamed.sort_by(f64::total_cmp);
            eprintln!("LIST streamed, median of 3: {:.0} ms", streamed[1]);
            Some(times[1])
        }
        _ => None,
    };
    server.stop();

    let (qn, q50, q99, qmax) = percentiles(quiet_ctl);
    let (cn, c50, c99, cmax) = percentiles(ctl);
    let (nn, n50, n99, nmax) = percentiles(node);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "seconds": secs, "bulk_clients": 64, "bulk_creates_per_s": bulk_per_s.round(),
            "one_client_creates_per_s": one.round(),
            "server_cpu_s_loaded": server_cpu, "server_cpu_us_per_write": cpu_per_write_us.round(),
            "preloaded_probes": scale.map(|s| s.probes),
            "node_leases": scale.map_or(nodes, |s| s.node_leases),
            "node_renewals_per_s": scale.map_or(nodes, |s| s.node_rate),
            "node_max_renew_gap_s": node_gap,
            "list_probes_ms": list,
            "controller_renew_quiet_ms": {"n": qn, "p50": q50, "p99": q99, "max": qmax},
            "controller_renew_loaded_ms": {"n": cn, "p50": c50, "p99": c99, "max": cmax},
            "node_renew_loaded_ms": {"n": nn, "p50": n50, "p99": n99, "max": nmax},
        }))?
    );
    println!();
    println!("bulk creates/s (64 clients)                {bulk_per_s:.0}");
    println!("creates/s (1 client, beside the 64)        {one:.0}");
    println!(
        "server CPU per write (loaded phase)        {cpu_per_write_us:.0} us ({server_cpu:.1} s for {writes})"
    );
    println!(
        "controller Lease GET+PUT, quiet            p50 {q50:.1} ms  p99 {q99:.1} ms  max {qmax:.1} ms  ({qn})"
    );
    println!(
        "controller Lease GET+PUT, 64 bulk clients  p50 {c50:.1} ms  p99 {c99:.1} ms  max {cmax:.1} ms  ({cn})"
    );
    println!(
        "node Lease renewal, 64 bulk clients        p50 {n50:.1} ms  p99 {n99:.1} ms  max {nmax:.1} ms  ({nn}; longest gap {node_gap:.1} s)"
    );
    if let Some(ms) = list {
        println!("LIST networkprobes (median of 3)           {ms:.0} ms");
    }
    Ok(())
}
