//! Measures the API server on this machine and prints the figures (JSON, then a table):
//! acknowledged creates/s over HTTPS with 1 and 64 concurrent clients, LIST of 100k objects
//! from the watch cache (with and without a label selector), memory per stored object (RSS
//! of the server process after a restart that loads them, minus RSS when empty), and watch
//! fan-out to 1000 watchers (time until all see one write; events/s for a burst).
//!
//! `cargo run --release -p ferry-apiserver --example apiserver_bench [-- --objects N]`
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
