//! The scheduler and the workload controllers against a real `ferry apiserver` (in
//! process), driven by kubectl 1.27, 1.32 and 1.33 as a user drives them: `create
//! deployment`, `rollout status|restart|undo`, `scale`, an unschedulable Pod, deleting the
//! Deployment. Two hollow nodes stand in for lab nodes: a Node and a fresh agent Lease each,
//! and a small kubelet stand-in that marks the Pods bound to them Running and Ready (the
//! lab agent does this for real in `crates/ferry/tests/workloads_e2e.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// The versioned kubectl (`kubectl.1.27`, ...) beside the `kubectl` on PATH, if installed.
fn kubectl_for(version: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())?;
    let bin = std::fs::canonicalize(kubectl)
        .ok()?
        .with_file_name(format!("kubectl.{version}"));
    bin.exists().then_some(bin)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("$ kubectl {}\n{text}", args.join(" "));
        (out.status.success(), text)
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args);
        assert!(ok, "kubectl {} failed: {text}", args.join(" "));
        text
    }
}

/// Polls `f` until it returns Some, for at most 60 s (a wait, not a timing assertion).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Hollow nodes: a Node and an agent Lease renewed every 2 s.
async fn hollow_nodes(client: kube::Client, names: &[&str]) {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in names {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}),
        )
        .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leases: Api<Lease> = Api::namespaced(client, ferry_api::AGENT_LEASE_NAMESPACE);
    tokio::spawn(async move {
        loop {
            for n in &names {
                let l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": ferry_api::agent_lease_name(n)},
                    "spec": {"holderIdentity": n, "leaseDurationSeconds": 10,
                        "renewTime": MicroTime(jiff::Timestamp::now())}});
                let _ = leases
                    .patch(
                        &ferry_api::agent_lease_name(n),
                        &PatchParams::apply("hollow-node").force(),
                        &Patch::Apply(l),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// Marks every Pod bound to a node Running and Ready, as a kubelet would once its
/// containers started.
fn kubelet_stand_in(client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut s =
            std::pin::pin!(watcher::watcher(pods, watcher::Config::default()).applied_objects());
        while let Some(Ok(p)) = s.next().await {
            let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if bound.is_none() || running || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.16.0.9",
                        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}})),
                )
                .await;
        }
    });
}

async fn web_pods(api: &Api<Pod>) -> Vec<Pod> {
    api.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

async fn deployment_and_scheduling_with_kubectl(version: &str) {
    let Some(bin) = kubectl_for(version) else {
        eprintln!(
            "SKIPPED: kubectl {version} is not installed (no kubectl.{version} beside kubectl)"
        );
        return;
    };
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
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_embedded::run(controller, rx));
    hollow_nodes(admin.clone(), &["node1", "node2"]).await;
    kubelet_stand_in(admin.clone());
    let k = Kubectl {
        bin,
        kubeconfig: server.kubeconfig.clone(),
        cache: dir.path().join("kubectl-cache"),
    };

    k.ok(&["create", "ns", "t1"]);
    k.ok(&[
        "-n",
        "t1",
        "create",
        "deployment",
        "web",
        "--image=web",
        "--replicas=3",
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
    ]);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "t1");
    let spread = eventually("3 Running pods of web", || {
        let pods = pods.clone();
        async move {
            let ps = web_pods(&pods).await;
            let running = ps
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (ps.len() == 3 && running == 3).then(|| {
                let mut n: Vec<String> = ps.iter().map(node_of).collect();
                n.sort();
                n
            })
        }
    })
    .await;
    assert!(
        spread == ["node1", "node1", "node2"] || spread == ["node1", "node2", "node2"],
        "replicas spread over both nodes: {spread:?}"
    );
    // The pods come from a ReplicaSet named DEPLOYMENT-HASH, labelled with the hash.
    let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "t1");
    let first = rss
        .list(&ListParams::default())
        .await
        .expect("list rs")
        .items;
    assert_eq!(first.len(), 1, "one ReplicaSet");
    let hash = first[0]
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .expect("pod-template-hash label");
    assert_eq!(
        first[0].metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    for p in web_pods(&pods).await {
        let name = p.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        let c = &p.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            c.command.clone().unwrap_or_default(),
            ["python3", "-m", "http.server", "8080"]
        );
    }
    let out = k.ok(&[
        "-n",
        "t1",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    // kubectl get shows what its printer shows on a real cluster.
    let table = k.ok(&["-n", "t1", "get", "deploy", "web", "--no-headers"]);
    let cells: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(cells[..4], ["web", "3/3", "3", "3"], "{table}");
    let table = k.ok(&["-n", "t1", "get", "rs", "--no-headers"]);
    let cells: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        [format!("web-{hash}").as_str(), "3", "3", "3"],
        "{table}"
    );
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "t1");
    let d = deploys.get("web").await.expect("deployment");
    let st = d.status.clone().expect("status");
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.observed_generation
        ),
        (Some(3), Some(3), Some(3), Some(3), d.metadata.generation)
    );

    // restart: a new ReplicaSet (revision 2) rolls in; undo: back to the first one (revision 3).
    k.ok(&["-n", "t1", "rollout", "restart", "deployment/web"]);
    let out = k.ok(&[
        "-n",
        "t1",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let revisions = |rs: &[ReplicaSet]| {
        let mut v: Vec<(String, String, i32)> = rs
            .iter()
            .map(|r| {
                (
                    r.metadata.name.clone().unwrap_or_default(),
                    r.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                        .cloned()
                        .unwrap_or_default(),
                    r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1),
                )
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    };
    let after_restart = revisions(&rss.list(&ListParams::default()).await.expect("rs").items);
    assert_eq!(after_restart.len(), 2, "{after_restart:?}");
    assert_eq!(
        (after_restart[0].1.as_str(), after_restart[0].2),
        ("1", 0),
        "{after_restart:?}"
    );
    assert_eq!(
        (after_restart[1].1.as_str(), after_restart[1].2),
        ("2", 3),
        "{after_restart:?}"
    );
    let out = k.ok(&["-n", "t1", "rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let out = k.ok(&[
        "-n",
        "t1",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let first_name = format!("web-{hash}");
    let after_undo = eventually(
        "the first ReplicaSet back at revision 3 with 3 replicas",
        || {
            let (rss, first_name) = (rss.clone(), first_name.clone());
            async move {
                let v = revisions(&rss.list(&ListParams::default()).await.ok()?.items);
                (v.iter()
                    .any(|(n, r, c)| *n == first_name && r == "3" && *c == 3))
                .then_some(v)
            }
        },
    )
    .await;
    assert_eq!(after_undo.len(), 2, "{after_undo:?}");

    // scale down to one.
    k.ok(&["-n", "t1", "scale", "deployment/web", "--replicas=1"]);
    eventually("one pod of web", || {
        let pods = pods.clone();
        async move { (web_pods(&pods).await.len() == 1).then_some(()) }
    })
    .await;

    // An unschedulable Pod: Pending, PodScheduled=False with kube-scheduler's message, an Event.
    k.ok(&[
        "-n",
        "t1",
        "run",
        "nowhere",
        "--image=x",
        "--overrides={\"apiVersion\":\"v1\",\"spec\":{\"nodeSelector\":{\"disk\":\"nvme\"}}}",
    ]);
    let want = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.";
    eventually("nowhere Pending with PodScheduled=False", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("nowhere").await.ok()?;
            let st = p.status?;
            let c = st
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (st.phase.as_deref() == Some("Pending")
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(want))
            .then_some(())
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(admin.clone(), "t1");
    eventually("a FailedScheduling Event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.involved_object.name.as_deref() == Some("nowhere")
                        && e.reason.as_deref() == Some("FailedScheduling")
                        && e.message.as_deref() == Some(want)
                })
        }
    })
    .await;
    let (_, get) = k.run(&["-n", "t1", "get", "pod", "nowhere"]);
    assert!(get.contains("Pending"), "{get}");
    let describe = k.ok(&["-n", "t1", "describe", "pod", "nowhere"]);
    assert!(
        describe.contains("FailedScheduling")
            && describe.contains("didn't match Pod's node affinity/selector"),
        "{describe}"
    );
    // Labelling a node makes it fit.
    k.ok(&["label", "node", "node2", "disk=nvme"]);
    eventually("nowhere bound to node2", || {
        let pods = pods.clone();
        async move {
            (pods.get("nowhere").await.ok().map(|p| node_of(&p)) == Some("node2".into()))
                .then_some(())
        }
    })
    .await;

    // Deleting the Deployment takes its ReplicaSets and Pods with it.
    k.ok(&["-n", "t1", "delete", "deployment", "web"]);
    eventually("ReplicaSets and Pods of web gone", || {
        let (pods, rss) = (pods.clone(), rss.clone());
        async move {
            let rs = rss.list(&ListParams::default()).await.ok()?.items;
            (rs.is_empty() && web_pods(&pods).await.is_empty()).then_some(())
        }
    })
    .await;

    // A standalone ReplicaSet keeps its replicas.
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "solo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "solo"}},
            "template": {"metadata": {"labels": {"app": "solo"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
    .expect("rs");
    rss.create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    eventually("2 ready pods of solo", || {
        let rss = rss.clone();
        async move {
            let s = rss.get("solo").await.ok()?.status?;
            (s.replicas == 2 && s.ready_replicas == Some(2)).then_some(())
        }
    })
    .await;

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_deployment_rollout_scale_and_scheduling() {
    deployment_and_scheduling_with_kubectl("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_deployment_rollout_scale_and_scheduling() {
    deployment_and_scheduling_with_kubectl("1.32").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_deployment_rollout_scale_and_scheduling() {
    deployment_and_scheduling_with_kubectl("1.33").await;
}
