//! The API server dies (`kill -9`-like: its runtime is dropped, every connection closed at
//! once) and comes back on the same address and data dir: the leading controller must go
//! on, and a YusurService created afterwards gets its ClusterIP (issue 15's faults lab).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_api::YusurService;
use kube::Client;
use kube::api::Api;
use serde_json::json;

/// Server-side apply through the test kit (field manager `test`, forced).
async fn apply(client: &Client, v: serde_json::Value) -> Result<(), kube::Error> {
    ferry_testkit::api::apply(client, &v).await.map(|_| ())
}

/// An API server on a runtime of its own, so that dropping the runtime ends every task
/// and closes every socket at once, as a killed process does.
struct Server {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(dir: &Path, listen: SocketAddr) -> (Server, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = dir.to_path_buf();
        let addr = runtime.block_on(async move {
            let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
                data_dir: dir,
                listen,
                limits: Default::default(),
                services: Default::default(),
            })
            .await
            .unwrap();
            let crds: Vec<serde_json::Value> = ferry_api::all_crds()
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect();
            server.install_crds(&crds).await.unwrap();
            let addr = server.addr;
            // Kept alive by its runtime: leaked into a task that never ends.
            tokio::spawn(async move {
                let _server = server;
                std::future::pending::<()>().await;
            });
            addr
        });
        (
            Server {
                runtime: Some(runtime),
            },
            addr,
        )
    }

    /// Drops every task and socket of the server at once.
    fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn client_for(path: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn service(name: &str) -> serde_json::Value {
    json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": name},
        "spec": {"vpc": "vpc1", "ports": [{"port": 80}], "selector": {"svc": "web"}}})
}

/// The ClusterIP of `name` once its status has one, polling for `within`.
async fn cluster_ip(client: &Client, name: &str, within: Duration) -> Option<String> {
    let api: Api<YusurService> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(s) = api.get(name).await
            && let Some(ip) = s.status.and_then(|s| s.cluster_ip)
        {
            return Some(ip);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_created_after_the_api_server_restarts_gets_its_cluster_ip() {
    let dir = tempfile::tempdir().unwrap();
    let d: PathBuf = dir.path().to_path_buf();
    let (server, addr) = {
        let d = d.clone();
        tokio::task::spawn_blocking(move || Server::start(&d, "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap()
    };
    let admin = client_for(&d.join("kubeconfig")).await;
    let controller_client = client_for(&d.join("kubeconfig-controller")).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let config = ferry_controller::ControllerConfig {
        identity: "restart".into(),
        ..Default::default()
    };
    let task = tokio::spawn(async move {
        ferry_controller::run(controller_client, config, rx)
            .await
            .unwrap();
    });
    apply(&admin, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": "vpc1"}, "spec": {}})).await.unwrap();
    apply(&admin, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": "vpc1-subnet1"},
        "spec": {"vpc": "vpc1", "cidrBlock": "10.0.1.0/24"}})).await.unwrap();
    apply(&admin, service("before")).await.unwrap();
    let before = cluster_ip(&admin, "before", Duration::from_secs(30)).await;
    assert!(before.is_some(), "a ClusterIP before the restart");

    tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (server, _) = {
        let d = d.clone();
        tokio::task::spawn_blocking(move || Server::start(&d, addr))
            .await
            .unwrap()
    };
    // The create may meet the server still starting: retried.
    let start = Instant::now();
    while let Err(e) = apply(&admin, service("after")).await {
        assert!(start.elapsed() < Duration::from_secs(30), "create: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = cluster_ip(&admin, "after", Duration::from_secs(60)).await;
    assert!(
        after.is_some() && after != before,
        "a new ClusterIP after the restart: {after:?} (before {before:?})"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();
}
