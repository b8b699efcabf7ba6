//! `ferry bench federation --clusters N --services M`: a federation API server, its
//! controller, N member API servers with their join agents (all in this process, over real
//! HTTPS), and M FederatedYusurServices placed on every member. It prints how long a
//! federated change takes to be applied in every member, and how long a member's status
//! takes to reach the federated object.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::YusurService;
use ferry_apiserver::{ApiServer, Config};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::controller::{self, ControllerConfig};
use crate::join::{self, JoinConfig};
use crate::server::{ServerError, client_for, start_server_on};
use crate::types::{FederatedYusurService, LABEL_TENANT, LABEL_WORKSPACE};
use ferry_apiserver::StoreBackend;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clusters: usize,
    pub services: usize,
    /// Federated writes in flight at once.
    pub concurrency: usize,
    /// Single changes timed one at a time after the bulk phases.
    pub samples: usize,
    pub out: Option<PathBuf>,
    /// How long to wait for each phase.
    pub timeout: Duration,
}

/// The figures (milliseconds unless named otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub clusters: usize,
    pub services: usize,
    /// All M services created (writes fired `concurrency` at a time) until every member
    /// holds every one of them.
    pub create_all_s: f64,
    /// Of that, until the federation had written every Work (the rest is the members'
    /// share: pulling, applying).
    pub works_written_s: Option<f64>,
    /// Per service: its federated create acknowledged -> applied in every member.
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    /// Per service: a template update acknowledged -> the new spec in every member (all M
    /// updated at once).
    pub update_p50_ms: f64,
    pub update_p99_ms: f64,
    /// Per service and member: the member's status written -> visible in the federated
    /// object's status for that target.
    pub feedback_p50_ms: f64,
    pub feedback_p99_ms: f64,
    /// One change at a time on the loaded federation (`samples` of them): a template
    /// update acknowledged -> applied in every member.
    pub samples: usize,
    pub single_update_p50_ms: f64,
    pub single_update_p99_ms: f64,
    /// One member status write at a time -> visible in the federated status.
    pub single_feedback_p50_ms: f64,
    pub single_feedback_p99_ms: f64,
}

/// Errors running the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{0}")]
    Start(#[from] ferry_apiserver::ApiServerError),
    #[error("the API: {0}")]
    Kube(#[from] kube::Error),
    #[error("a federated object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error(transparent)]
    Credential(#[from] crate::credential::CredentialError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// When each `(member, name, port)` was first seen in a member.
type Seen = Arc<Mutex<HashMap<(usize, String, i32), Instant>>>;
/// When each `(name, cluster, readyEndpoints)` was first seen in a federated status.
type FedSeen = Arc<Mutex<HashMap<(String, String, i32), Instant>>>;

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn fysvc(
    i: usize,
    port: i32,
    clusters: &[String],
) -> Result<FederatedYusurService, serde_json::Error> {
    let name = format!("svc-{i}");
    serde_json::from_value(json!({
        "apiVersion": "federation.iaas.yusur.io/v1", "kind": "FederatedYusurService",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {LABEL_TENANT: "bench", LABEL_WORKSPACE: "w1"}},
        "spec": {
            "template": {"spec": {"vpc": "vpc1", "ports": [{"port": port}], "selector": {"app": name}}},
            "placement": {"topologyType": "cluster", "clusters": clusters},
        },
    }))
}

/// Runs the benchmark; see the module doc.
pub async fn run(opts: &BenchOptions) -> Result<BenchResult, BenchError> {
    run_on(opts, &StoreBackend::Embedded).await
}

/// [`run`] with the federation API server on the store `store` names (the members keep
/// the embedded store), to compare an etcd-backed federation with the embedded one.
pub async fn run_on(opts: &BenchOptions, store: &StoreBackend) -> Result<BenchResult, BenchError> {
    let root = std::env::temp_dir().join(format!("ferry-bench-federation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = run_in(opts, store, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    let r = result?;
    if let Some(path) = &opts.out {
        let text = serde_json::to_string_pretty(&r).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(r)
}

async fn run_in(
    opts: &BenchOptions,
    store: &StoreBackend,
    root: &std::path::Path,
) -> Result<BenchResult, BenchError> {
    let (stop_tx, stop) = watch::channel(false);
    let fserver = start_server_on(
        &root.join("federation"),
        "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        store,
    )
    .await?;
    let fed = client_for(&fserver.kubeconfig).await?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn({
        let (fed, stop) = (fed.clone(), stop.clone());
        async move {
            let _ = controller::run(fed, ControllerConfig::new("bench"), stop).await;
        }
    }));
    let mut members: Vec<(ApiServer, Client)> = Vec::new();
    let names: Vec<String> = (1..=opts.clusters).map(|i| format!("c{i}")).collect();
    let crds: Vec<serde_json::Value> = ferry_api::all_crds()
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    for name in &names {
        let server = ApiServer::start(Config {
            data_dir: root.join(name),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: Default::default(),
            services: Default::default(),
        })
        .await?;
        server.install_crds(&crds).await?;
        let client = client_for(&server.kubeconfig).await?;
        let mut cfg = JoinConfig::new(name);
        cfg.tenant = Some("bench".into());
        cfg.workspace = Some("w1".into());
        // Each member joins with its own token, as in a real federation (its RBAC checked
        // on every request it makes).
        let own = member_client(&fed, &fserver.kubeconfig, &cfg, root).await?;
        tasks.push(tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move {
                if let Err(e) = join::run(own, client, cfg, stop).await {
                    tracing::error!(error = %e, "join agent");
                }
            }
        }));
        members.push((server, client));
    }
    let outcome = measure(opts, &fed, &members, &names).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    for (s, _) in members {
        s.shutdown().await;
    }
    fserver.shutdown().await;
    outcome
}

/// Registers the member `cfg` names and returns a client of the federation with its own
/// token (its kubeconfig written under `root`).
async fn member_client(
    fed: &Client,
    admin_kubeconfig: &std::path::Path,
    cfg: &JoinConfig,
    root: &std::path::Path,
) -> Result<Client, BenchError> {
    use crate::credential;
    let spec = credential::MemberSpec {
        name: cfg.name.clone(),
        tenant: cfg.tenant.clone(),
        workspace: cfg.workspace.clone(),
        cells: cfg.cells.clone(),
    };
    let token = credential::add_member(fed, &spec).await?;
    let path = root.join(format!("{}-federation.kubeconfig", cfg.name));
    let endpoint = credential::endpoint_of(admin_kubeconfig)?;
    credential::write_member_kubeconfig(
        &path,
        &credential::member_kubeconfig(&endpoint, &cfg.name, &token),
    )?;
    Ok(client_for(&path).await?)
}

async fn measure(
    opts: &BenchOptions,
    fed: &Client,
    members: &[(ApiServer, Client)],
    names: &[String],
) -> Result<BenchResult, BenchError> {
    // Every member's YusurServices, as they appear.
    let seen: Seen = Arc::default();
    for (i, (_, client)) in members.iter().enumerate() {
        let seen = seen.clone();
        let api: Api<YusurService> = Api::all(client.clone());
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let objs = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                let now = Instant::now();
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                for o in objs {
                    let port = o.spec.ports.first().map(|p| p.port).unwrap_or(0);
                    s.entry((i, o.name_any(), port)).or_insert(now);
                }
            }
        });
    }
    // Members ready before the clock starts.
    let mcs: Api<crate::types::MemberCluster> = Api::all(fed.clone());
    wait(opts.timeout, "members ready", || async {
        let l = mcs.list(&Default::default()).await.ok()?;
        let ready = l
            .items
            .iter()
            .filter(|m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        (ready == names.len()).then_some(())
    })
    .await?;

    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    // When the last Work of the bulk create was written: the federation's share of it.
    let works_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let works_done = works_done.clone();
        let want = opts.services * names.len();
        let works: Api<crate::types::Work> = Api::all(fed.clone());
        tokio::spawn(async move {
            let stream = watcher(works, watcher::Config::default());
            futures::pin_mut!(stream);
            let mut seen = std::collections::HashSet::new();
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) = ev {
                    seen.insert((w.namespace().unwrap_or_default(), w.name_any()));
                    if seen.len() >= want {
                        *works_done.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                        return;
                    }
                }
            }
        });
    }
    // Phase 1: create.
    let start = Instant::now();
    let objects: Vec<FederatedYusurService> = (0..opts.services)
        .map(|i| fysvc(i, 80, names))
        .collect::<Result<_, _>>()?;
    let acked = write_all(opts, |i| {
        let api = api.clone();
        let o = objects[i].clone();
        async move { api.create(&PostParams::default(), &o).await.map(|_| ()) }
    })
    .await?;
    let create = wait_applied(opts, &seen, members.len(), &acked, 80).await?;
    let create_all_s = start.elapsed().as_secs_f64();
    let works_written_s = works_done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| t.saturating_duration_since(start).as_secs_f64());

    // Phase 2: update every template's port.
    let acked = write_all(opts, |i| {
        let api = api.clone();
        let patch = json!({"spec": {"template": {"spec": {"vpc": "vpc1", "ports": [{"port": 81}], "selector": {"app": format!("svc-{i}")}}}}});
        async move {
            api.patch(&format!("svc-{i}"), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    })
    .await?;
    let update = wait_applied(opts, &seen, members.len(), &acked, 81).await?;

    // Phase 3: every member reports status for every service.
    let fed_seen: FedSeen = Arc::default();
    {
        let fed_seen = fed_seen.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let o = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    _ => continue,
                };
                let now = Instant::now();
                let mut s = fed_seen.lock().unwrap_or_else(|e| e.into_inner());
                for t in o.status.iter().flat_map(|s| s.targets.iter()) {
                    s.entry((o.name_any(), t.cluster.clone(), t.report.ready_endpoints))
                        .or_insert(now);
                }
            }
        });
    }
    let mut reported: HashMap<(String, String), Instant> = HashMap::new();
    let jobs: Vec<(usize, usize)> = (0..members.len())
        .flat_map(|m| (0..opts.services).map(move |i| (m, i)))
        .collect();
    type Reported = Result<((String, String), Instant), kube::Error>;
    let results: Vec<Reported> = futures::stream::iter(jobs)
        .map(|(m, i)| {
            let api: Api<YusurService> = Api::namespaced(members[m].1.clone(), "default");
            let cluster = names[m].clone();
            async move {
                let patch = json!({"status": {"readyEndpoints": 7, "totalEndpoints": 7}});
                api.patch_status(
                    &format!("svc-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Ok(((format!("svc-{i}"), cluster), Instant::now()))
            }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    for r in results {
        let (k, t) = r?;
        reported.insert(k, t);
    }
    let want = reported.len();
    wait(opts.timeout, "status feedback", || async {
        let s = fed_seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.keys().filter(|(_, _, r)| *r == 7).count();
        (n >= want).then_some(())
    })
    .await?;
    let feedback: Vec<f64> = {
        let s = fed_seen.lock().unwrap_or_else(|e| e.into_inner());
        reported
            .iter()
            .filter_map(|((n, c), t)| {
                s.get(&(n.clone(), c.clone(), 7))
                    .map(|seen| ms(seen.saturating_duration_since(*t)))
            })
            .collect()
    };

    // Phase 4: single changes on the loaded federation, one at a time.
    let mut single = Vec::new();
    let mut single_feedback = Vec::new();
    for k in 0..opts.samples {
        let i = k * opts.services / opts.samples.max(1);
        let port = 1000 + k as i32;
        let patch = json!({"spec": {"template": {"spec": {"vpc": "vpc1", "ports": [{"port": port}], "selector": {"app": format!("svc-{i}")}}}}});
        api.patch(
            &format!("svc-{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let t = Instant::now();
        let done = wait_applied_one(opts, &seen, members.len(), i, port).await?;
        single.push(ms(done.saturating_duration_since(t)));

        let m = k % members.len();
        let ready = 100 + k as i32;
        let mapi: Api<YusurService> = Api::namespaced(members[m].1.clone(), "default");
        let patch = json!({"status": {"readyEndpoints": ready, "totalEndpoints": ready}});
        mapi.patch_status(
            &format!("svc-{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let t = Instant::now();
        let key = (format!("svc-{i}"), names[m].clone(), ready);
        let seen_at = wait(opts.timeout, "single status feedback", || async {
            fed_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .copied()
        })
        .await?;
        single_feedback.push(ms(seen_at.saturating_duration_since(t)));
    }
    Ok(BenchResult {
        clusters: names.len(),
        services: opts.services,
        create_all_s,
        works_written_s,
        create_p50_ms: percentile(create.clone(), 50.0),
        create_p99_ms: percentile(create, 99.0),
        update_p50_ms: percentile(update.clone(), 50.0),
        update_p99_ms: percentile(update, 99.0),
        feedback_p50_ms: percentile(feedback.clone(), 50.0),
        feedback_p99_ms: percentile(feedback, 99.0),
        samples: opts.samples,
        single_update_p50_ms: percentile(single.clone(), 50.0),
        single_update_p99_ms: percentile(single, 99.0),
        single_feedback_p50_ms: percentile(single_feedback.clone(), 50.0),
        single_feedback_p99_ms: percentile(single_feedback, 99.0),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Fires `write(i)` for every service, `concurrency` at a time; when each was acknowledged.
async fn write_all<F, Fut>(opts: &BenchOptions, write: F) -> Result<Vec<Instant>, BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let results: Vec<(usize, Result<(), kube::Error>, Instant)> =
        futures::stream::iter(0..opts.services)
            .map(|i| {
                let f = write(i);
                async move {
                    let r = f.await;
                    (i, r, Instant::now())
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    let mut acked = vec![Instant::now(); opts.services];
    for (i, r, t) in results {
        r?;
        acked[i] = t;
    }
    Ok(acked)
}

/// Waits until every service holds `port` in every member; per service, the time from its
/// acknowledgement to the last member that applied it.
async fn wait_applied(
    opts: &BenchOptions,
    seen: &Seen,
    members: usize,
    acked: &[Instant],
    port: i32,
) -> Result<Vec<f64>, BenchError> {
    wait(opts.timeout, "applied in every member", || async {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.keys().filter(|(_, _, p)| *p == port).count();
        (n >= members * acked.len()).then_some(())
    })
    .await?;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    Ok(acked
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let last = (0..members)
                .filter_map(|m| s.get(&(m, format!("svc-{i}"), port)))
                .max()
                .copied()
                .unwrap_or(*t);
            ms(last.saturating_duration_since(*t))
        })
        .collect())
}

/// When service `i` held `port` in every member.
async fn wait_applied_one(
    opts: &BenchOptions,
    seen: &Seen,
    members: usize,
    i: usize,
    port: i32,
) -> Result<Instant, BenchError> {
    let name = format!("svc-{i}");
    wait(
        opts.timeout,
        "a single change applied in every member",
        || async {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let times: Vec<Instant> = (0..members)
                .filter_map(|m| s.get(&(m, name.clone(), port)).copied())
                .collect();
            (times.len() == members)
                .then(|| times.into_iter().max())
                .flatten()
        },
    )
    .await
}

async fn wait<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what.into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result as a table on stdout, then as JSON (CLI output).
pub fn print(r: &BenchResult) {
    println!(
        "federation bench: {} members x {} services",
        r.clusters, r.services
    );
    println!("{:<44} {:>10} {:>10}", "PHASE", "P50 MS", "P99 MS");
    for (name, p50, p99) in [
        (
            "create -> applied in every member",
            r.create_p50_ms,
            r.create_p99_ms,
        ),
        (
            "update -> applied in every member",
            r.update_p50_ms,
            r.update_p99_ms,
        ),
        (
            "member status -> federated status",
            r.feedback_p50_ms,
            r.feedback_p99_ms,
        ),
        (
            "one update -> applied in every member",
            r.single_update_p50_ms,
            r.single_update_p99_ms,
        ),
        (
            "one member status -> federated status",
            r.single_feedback_p50_ms,
            r.single_feedback_p99_ms,
        ),
    ] {
        println!("{name:<44} {p50:>10.1} {p99:>10.1}");
    }
    println!(
        "all {} created and applied everywhere in {:.2} s (every Work written after {} s)",
        r.services,
        r.create_all_s,
        r.works_written_s
            .map_or("?".to_string(), |s| format!("{s:.2}"))
    );
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}
