//! Hollow nodes for `ferry bench control-plane --nodes N`, as kubemark's hollow kubelets:
//! each simulated node registers its Node, keeps its agent Lease
//! (`kube-node-lease/ferry-agent-NODE`) fresh at the real agent's period, and reports the
//! NetworkProbes assigned to it (`spec.nodeName`) the way `ferry-agent` does (a status
//! patch with `phase`, `prober`, `latencyMs`, `lastTransitionTime`), so the API server and
//! the controller see the traffic of N agents.
//!
//! They are tasks of this process, not N processes: one watch of NetworkProbes hands each
//! probe to its node (kube-apiserver serves N agent watches from one watch cache, so the
//! server-side cost that matters is the writes), and a bounded pool sends the requests
//! (like a real cluster's agents, requests beyond what the server takes wait in line; how
//! late a Lease renewal gets is reported as `max_renew_gap_s`).
//!
//! A hollow node reports each probe once (per probe uid and node): a probe the bench then
//! marks Unhealthy stays so, as a real backend that went down would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_api::NetworkProbe;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

/// The agent's default Lease timing, the kubelet's (40 s, renewed every 10 s:
/// [`ferry_api::AgentLeaseTiming::KUBELET`], what `ferry agent` does unless told otherwise).
pub const TIMING: ferry_api::AgentLeaseTiming = ferry_api::AgentLeaseTiming::KUBELET;
/// How often each hollow node renews its Lease.
pub const RENEW_PERIOD: Duration = TIMING.renew_every;

/// What the hollow nodes did, read while they run.
#[derive(Debug, Default)]
pub struct HollowStats {
    pub renewals: AtomicU64,
    pub renew_failures: AtomicU64,
    /// The longest time between two successful renewals of one node, ms.
    pub max_renew_gap_ms: AtomicU64,
    /// Probes seen assigned to a hollow node.
    pub assigned: AtomicU64,
    pub reported: AtomicU64,
    pub report_failures: AtomicU64,
}

/// Running hollow nodes; dropping stops them.
pub struct HollowNodes {
    pub names: Arc<Vec<String>>,
    pub stats: Arc<HollowStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The name of hollow node `i`.
pub fn node_name(i: usize) -> String {
    format!("hollow-{i:05}")
}

fn micro_now() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Creates the Nodes (Ready) and their Leases, `concurrency` requests at a time.
pub async fn register(client: &Client, n: usize, concurrency: usize) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), ferry_api::AGENT_LEASE_NAMESPACE);
    futures::stream::iter(0..n)
        .map(|i| {
            let (nodes, leases) = (nodes.clone(), leases.clone());
            async move {
                let name = node_name(i);
                let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "ferry.bench/hollow": "true"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "FerryAgentReady",
                        "message": "hollow node", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}))
                .map_err(|e| e.to_string())?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(format!("node {name}: {e}")),
                }
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": ferry_api::agent_lease_name(&name), "namespace": ferry_api::AGENT_LEASE_NAMESPACE},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": TIMING.duration_seconds(), "renewTime": micro_now()}}))
                .map_err(|e| e.to_string())?;
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(format!("lease of {name}: {e}")),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
}

/// Starts renewing the Leases of `n` registered nodes and reporting their probes, with at
/// most `inflight` requests at once for each of the two jobs (separate budgets: on a
/// real cluster one agent's probe reports do not delay another agent's renewal).
pub fn start(client: &Client, n: usize, inflight: usize) -> HollowNodes {
    let names: Arc<Vec<String>> = Arc::new((0..n).map(node_name).collect());
    let stats = Arc::new(HollowStats::default());
    let limit = Arc::new(Semaphore::new(inflight.max(1)));
    let renew = tokio::spawn(renew_all(
        client.clone(),
        names.clone(),
        stats.clone(),
        Arc::new(Semaphore::new(inflight.max(1))),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = tokio::spawn(assigned_probes(
        client.clone(),
        names.clone(),
        tx,
        stats.clone(),
    ));
    let report = tokio::spawn(report_all(client.clone(), rx, stats.clone(), limit));
    HollowNodes {
        names,
        stats,
        tasks: vec![renew, watch, report],
    }
}

/// Each node renews every [`RENEW_PERIOD`], the nodes spread evenly over the period (as
/// agents started at different times are).
async fn renew_all(
    client: Client,
    names: Arc<Vec<String>>,
    stats: Arc<HollowStats>,
    limit: Arc<Semaphore>,
) {
    let leases: Api<Lease> = Api::namespaced(client, ferry_api::AGENT_LEASE_NAMESPACE);
    let n = names.len();
    if n == 0 {
        return;
    }
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let tick = Duration::from_millis(20);
    let per_tick = n as f64 * tick.as_secs_f64() / RENEW_PERIOD.as_secs_f64();
    let mut next = 0f64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let from = next as usize;
        next += per_tick;
        let to = next as usize;
        for k in from..to {
            let i = k % n;
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (leases, stats, last) = (leases.clone(), stats.clone(), last.clone());
            let name = ferry_api::agent_lease_name(&names[i]);
            tokio::spawn(async move {
                let patch = json!({"spec": {"renewTime": micro_now()}});
                let r = leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                drop(permit);
                match r {
                    Ok(_) => {
                        stats.renewals.fetch_add(1, Ordering::Relaxed);
                        let now = epoch.elapsed().as_millis() as u64;
                        let before = last[i].swap(now, Ordering::Relaxed);
                        if before > 0 {
                            stats
                                .max_renew_gap_ms
                                .fetch_max(now - before, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        stats.renew_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
}

/// One watch of every NetworkProbe; each probe assigned to a hollow node that has not
/// reported it yet is sent on (probe namespace, name, node).
async fn assigned_probes(
    client: Client,
    names: Arc<Vec<String>>,
    tx: mpsc::UnboundedSender<(String, String, String)>,
    stats: Arc<HollowStats>,
) {
    let ours: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut reported: HashMap<String, String> = HashMap::new();
    let api: Api<NetworkProbe> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        let p = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let Some(node) = p
            .spec
            .node_name
            .clone()
            .filter(|n| ours.contains(n.as_str()))
        else {
            continue;
        };
        let uid = p.uid().unwrap_or_default();
        if reported.get(&uid) == Some(&node) {
            continue;
        }
        if reported.insert(uid, node.clone()).is_none() {
            stats.assigned.fetch_add(1, Ordering::Relaxed);
        }
        if tx
            .send((p.namespace().unwrap_or_default(), p.name_any(), node))
            .is_err()
        {
            return;
        }
    }
}

/// Writes Healthy for each probe handed over, as the agent does after its probe succeeded.
async fn report_all(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<(String, String, String)>,
    stats: Arc<HollowStats>,
    limit: Arc<Semaphore>,
) {
    let mut apis: BTreeMap<String, Api<NetworkProbe>> = BTreeMap::new();
    while let Some((ns, name, node)) = rx.recv().await {
        let api = apis
            .entry(ns.clone())
            .or_insert_with(|| Api::namespaced(client.clone(), &ns))
            .clone();
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let status = json!({"status": {"phase": "Healthy", "message": "hollow node: connected",
                "lastTransitionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "latencyMs": 0.1, "prober": node}});
            // As the agent, a failed write is tried again (here with backoff, a few times).
            let mut backoff = Duration::from_millis(100);
            for _ in 0..8 {
                let r = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                match r {
                    Ok(_) => {
                        stats.reported.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => break,
                    Err(_) => {
                        stats.report_failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
            drop(permit);
        });
    }
}
