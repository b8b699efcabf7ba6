//! Scheduling latency without a data plane: 100 Pods created against a real `ferry
//! apiserver` (in process) with two hollow nodes (Node + fresh agent Lease); prints
//! created -> bound p50/p99 as a client sees it (create answered -> first watch event with
//! `spec.nodeName`). A figure, not an assertion on time; the test asserts every Pod was bound
//! and the 100 spread evenly. The same measured to `Running` with lab agents is
//! `crates/ferry/tests/workloads_e2e.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_to_bound_for_100_pods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        limits: Default::default(),
        services: Default::default(),
    })
    .await
    .expect("API server");
    let admin = client_for(&server.kubeconfig).await;
    let controller = client_for(&dir.path().join("kubeconfig-embedded")).await;
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), ferry_api::AGENT_LEASE_NAMESPACE);
    for n in ["node1", "node2"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        let l: Lease =
            serde_json::from_value(json!({"metadata": {"name": ferry_api::agent_lease_name(n)},
            "spec": {"holderIdentity": n, "leaseDurationSeconds": 600,
                "renewTime": MicroTime(jiff::Timestamp::now())}}))
            .expect("lease");
        leases
            .create(&PostParams::default(), &l)
            .await
            .expect("lease");
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_embedded::run(controller, rx));

    let seen: Arc<Mutex<HashMap<String, (Instant, String)>>> = Default::default();
    let s2 = seen.clone();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let w = pods.clone();
    let watch = tokio::spawn(async move {
        let mut s =
            std::pin::pin!(watcher::watcher(w, watcher::Config::default()).applied_objects());
        while let Some(Ok(p)) = s.next().await {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                let name = p.metadata.name.clone().unwrap_or_default();
                s2.lock()
                    .expect("lock")
                    .entry(name)
                    .or_insert((Instant::now(), n));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 100;
    let created: HashMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("p{i:03}");
                let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}}))
                .expect("pod");
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create");
                (name, Instant::now())
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    for _ in 0..600 {
        if seen.lock().expect("lock").len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), n, "every pod bound");
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in seen.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    assert_eq!(
        (per_node.get("node1"), per_node.get("node2")),
        (Some(&50), Some(&50)),
        "spread by load"
    );
    let mut lat: Vec<f64> = seen
        .iter()
        .filter_map(|(name, (at, _))| {
            Some(
                at.saturating_duration_since(*created.get(name)?)
                    .as_secs_f64(),
            )
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "FIGURE {n} pods created -> bound (embedded scheduler, debug build): p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    server.shutdown().await;
}
