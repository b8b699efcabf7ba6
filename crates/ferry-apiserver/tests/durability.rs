//! Nothing acknowledged is lost: 64 clients create and update objects over HTTPS against the
//! real server process, every 2xx is recorded, the process is killed with SIGKILL while
//! writes are in flight, and after a restart on the same data dir every acknowledged write
//! is there. (SIGKILL leaves the page cache intact, so this proves that a 2xx is sent only
//! after the write is committed to the store; that the commit is fsynced rests on
//! `ferry-store` committing with redb's `Durability::Immediate`.)

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const CLIENTS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = common::spawn_server(dir.path());
    let client = common::client_for(&dir.path().join("kubeconfig")).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    // name -> acknowledged; counter-N -> highest acknowledged value.
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let counters = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let cms = cms.clone();
        let created = created.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let counter = format!("counter-{t:02}");
            for i in 0u64.. {
                let name = format!("d-{t:02}-{i:05}");
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name}, "data": {"i": i.to_string()}}))
                .expect("ConfigMap");
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(_) => created.lock().expect("lock").push(name),
                    Err(_) => return,
                }
                let bump = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": counter}, "data": {"n": i.to_string()}}));
                match cms
                    .patch(&counter, &PatchParams::apply("durability").force(), &bump)
                    .await
                {
                    Ok(_) => {
                        counters.lock().expect("lock").insert(counter.clone(), i);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes pile up, then kill the server in the middle of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while created.lock().expect("lock").len() < 2000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_kill = created.lock().expect("lock").len();
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    for t in tasks {
        t.await.expect("client task");
    }
    drop(server);
    let acked = created.lock().expect("lock").clone();
    let counters = counters.lock().expect("lock").clone();
    assert!(
        before_kill >= 500,
        "too few writes before the kill ({before_kill}) to prove anything"
    );

    // Restart on the same data dir: every acknowledged write is there.
    let _server = common::spawn_server(dir.path());
    let client = common::client_for(&dir.path().join("kubeconfig")).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let stored: BTreeMap<String, ConfigMap> = cms
        .list(&ListParams::default())
        .await
        .expect("list after restart")
        .items
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !stored.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for (name, n) in &counters {
        let got: u64 = stored
            .get(name)
            .and_then(|c| c.data.as_ref()?.get("n")?.parse().ok())
            .unwrap_or_else(|| panic!("{name} lost"));
        assert!(got >= *n, "{name}: acknowledged {n}, found {got}");
    }
    eprintln!(
        "{} creates and {} counters acknowledged before kill -9; all present after restart",
        acked.len(),
        counters.len()
    );
}
