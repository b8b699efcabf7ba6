//! The network controller against a real OVN Northbound ovsdb-server: ysvc1's load balancer
//! lands in the NB with exactly the healthy vpc1 backends, a restart of the controller
//! leaves every NB row as it was (no duplicates, nothing rewritten), and deleting the
//! service removes its rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, YusurService};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use ferry_testkit::api::client_for;
use ferry_testkit::ovsdb::NbServer;

mod common;

async fn apply(client: &Client, v: Value) {
    let api_version = v["apiVersion"].as_str().unwrap().to_string();
    let kind = v["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let (ar, caps) = kube::discovery::pinned_kind(
        client,
        &kube::api::GroupVersionKind::gvk(group, version, &kind),
    )
    .await
    .unwrap();
    let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), "default", &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    api.patch(
        v["metadata"]["name"].as_str().unwrap(),
        &PatchParams::apply("test").force(),
        &Patch::Apply(&v),
    )
    .await
    .unwrap();
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every owned NB row: (table, ferry key) -> uuid.
fn owned_rows(nb: &ferry_ovsdb::Client) -> BTreeMap<(String, String), Vec<String>> {
    nb.with_mirror(|m| {
        let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for t in ferry_ovsdb::nb::TABLES {
            for (uuid, cols) in m.table(t.name).into_iter().flatten() {
                if let Some(k) = ferry_net::owned_key(t.name, &cols) {
                    out.entry((t.name.to_string(), k))
                        .or_default()
                        .push(uuid.clone());
                }
            }
        }
        out
    })
}

fn lb_vips(nb: &ferry_ovsdb::Client, name: &str) -> Option<String> {
    nb.with_mirror(|m| {
        m.table("Load_Balancer")?
            .values()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
            .map(|r| r["vips"].to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn seed_lb_in_the_nb_restart_changes_nothing_delete_removes_rows() {
    let dir = tempfile::tempdir().unwrap();
    let nb_server = NbServer::standalone();
    let (server, admin, _) = common::api(dir.path()).await;
    let config = common::with_nb("net-test", nb_server.unix_remote());
    let start_controller = async || {
        let c = client_for(&dir.path().join("api/kubeconfig-controller")).await;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let cfg = config.clone();
        (
            tx,
            tokio::spawn(async move { ferry_controller::run(c, cfg, rx).await.unwrap() }),
        )
    };
    let (stop, task) = start_controller().await;
    for v in ["vpc1", "vpc2"] {
        apply(&admin, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": v}, "spec": {}})).await;
    }
    for (name, vpc, cidr) in [
        ("vpc1-subnet1", "vpc1", "10.0.1.0/24"),
        ("vpc1-subnet2", "vpc1", "10.0.2.0/24"),
        ("vpc2-subnet1", "vpc2", "10.0.1.0/24"),
    ] {
        apply(&admin, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": {"vpc": vpc, "cidrBlock": cidr}})).await;
    }
    for (name, subnet) in [
        ("ep1", "vpc1-subnet1"),
        ("ep2", "vpc1-subnet2"),
        ("ep-vpc2", "vpc2-subnet1"),
    ] {
        apply(&admin, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"svc": "svc1-ep"}, "annotations": {"iaas.yusur.io/subnet": subnet}},
            "spec": {"containers": [{"name": "c", "image": "none"}]}})).await;
    }
    let seed: Value = serde_saphyr::from_str(include_str!("../../../examples/ysvc1.yaml")).unwrap();
    apply(&admin, seed).await;
    apply(&admin, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "web-eip"},
        "spec": {"type": "LoadBalancer", "vpc": "vpc1", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"svc": "svc1-ep"}}})).await;

    let probes: Api<NetworkProbe> = Api::namespaced(admin.clone(), "default");
    for p in [
        "ysvc1-pod-ep1",
        "ysvc1-pod-ep2",
        "web-eip-pod-ep1",
        "web-eip-pod-ep2",
    ] {
        eventually(p, async || probes.get_opt(p).await.ok().flatten()).await;
        probes
            .patch_status(
                p,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
            )
            .await
            .unwrap();
    }
    let nb = ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config(vec![nb_server.unix_remote()]))
        .await
        .unwrap();
    let ysvcs: Api<YusurService> = Api::namespaced(admin.clone(), "default");
    let cip = eventually("ysvc1 programmed", async || {
        let s = ysvcs.get("ysvc1").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status == "True")
            .then_some(s.cluster_ip?)
    })
    .await;
    // CLUSTERIP:5001 -> exactly the two healthy vpc1 backends (the vpc2 pod is not selected).
    let vips = eventually("both backends in the NB", async || {
        lb_vips(&nb, "ferry-default-ysvc1-cip-vpc1-tcp")
            .filter(|v| v.contains("10.0.2.") && v.contains("10.0.1."))
    })
    .await;
    assert!(vips.contains(&format!("{cip}:5001")), "{vips}");
    assert_eq!(
        vips.matches(":5001").count(),
        3,
        "VIP plus two backends: {vips}"
    );
    eventually("web-eip programmed with an EIP", async || {
        ysvcs.get("web-eip").await.ok()?.status?.eip
    })
    .await;
    // The ClusterIP LB is in vpc1's group, on every vpc1 switch.
    let group_on_switches = nb.with_mirror(|m| {
        let group = m
            .table("Load_Balancer_Group")?
            .iter()
            .find(|(_, r)| r["name"] == "ferry-vpc1")
            .map(|(u, _)| u.clone())?;
        let switches: Vec<bool> = m
            .table("Logical_Switch")?
            .values()
            .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("vpc1-")))
            .map(|r| r["load_balancer_group"].to_string().contains(&group))
            .collect();
        Some(switches)
    });
    assert_eq!(group_on_switches, Some(vec![true, true]));

    let before = owned_rows(&nb);
    assert!(
        before.values().all(|uuids| uuids.len() == 1),
        "duplicate rows: {before:?}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    // A new controller: its first pass must find nothing to change.
    let (stop, task) = start_controller().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = owned_rows(&nb);
    assert_eq!(
        before, after,
        "a restarted controller rewrote or duplicated NB rows"
    );

    ysvcs
        .delete("ysvc1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("ysvc1's rows removed", async || {
        lb_vips(&nb, "ferry-default-ysvc1-cip-vpc1-tcp")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        lb_vips(&nb, "ferry-default-web-eip-cip-vpc1-tcp").is_some(),
        "the other service keeps its rows"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    server.shutdown().await;
}
