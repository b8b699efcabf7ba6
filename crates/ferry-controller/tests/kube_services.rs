//! Ordinary Kubernetes Services against a real OVN Northbound ovsdb-server and Ferry's API
//! server: a NodePort Service's cluster IP answers on the default VPC's load balancer, its
//! node ports on the nodes' external addresses on the router; `externalTrafficPolicy: Local` splits backends by node; a LoadBalancer Service
//! gets an address from the EIP pool in its status and on the router; readiness from the
//! EndpointSlice counts; deleting a Service removes its rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_testkit::api::apply;
use ferry_testkit::ovsdb::NbServer;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

mod common;

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lb_vips(nb: &ferry_ovsdb::Client, name: &str) -> Option<Value> {
    nb.with_mirror(|m| {
        m.table("Load_Balancer")?
            .values()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
            .map(|r| r["vips"].clone())
    })
}

/// The `VIP -> backends` pairs of an NB map column, sorted.
fn pairs(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v[1]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            (
                kv[0].as_str().unwrap_or_default().to_string(),
                kv[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn slice(name: &str, svc: &str, endpoints: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "test"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn kubernetes_services_of_every_type_reach_the_nb() {
    let dir = tempfile::tempdir().unwrap();
    let nb_server = NbServer::standalone();
    let (server, admin, c) = common::api(dir.path()).await;
    let config = common::with_nb("kube-svc-test", nb_server.unix_remote());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { ferry_controller::run(c, config, rx).await.unwrap() });

    for (name, cidr) in [
        ("subnet0", "100.64.0.0/16"),
        ("ovn-default", "10.16.0.0/16"),
    ] {
        apply(
            &admin,
            &json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name},
            "spec": {"vpc": "ovn-cluster", "cidrBlock": cidr, "default": name == "ovn-default"}}),
        )
        .await
        .unwrap();
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    for (n, ext) in [("node1", "198.18.0.11"), ("node2", "198.18.0.12")] {
        apply(
            &admin,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
        )
        .await
        .unwrap();
        nodes
            .patch_status(
                n,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"addresses": [{"type": "ExternalIP", "address": ext}]}}),
                ),
            )
            .await
            .unwrap();
    }
    // The controller gives each node its join address.
    let join: Vec<String> = eventually("node join addresses", async || {
        let mut out = Vec::new();
        for n in ["node1", "node2"] {
            out.push(
                nodes
                    .get(n)
                    .await
                    .ok()?
                    .metadata
                    .annotations?
                    .get(ferry_api::ANNOTATION_IP)?
                    .clone(),
            );
        }
        Some(out)
    })
    .await;

    apply(&admin, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.5.1", "selector": {"app": "np"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}})).await.unwrap();
    apply(
        &admin,
        &slice(
            "np-1",
            "np",
            json!([
        {"addresses": ["10.16.0.10"], "nodeName": "node1", "conditions": {"ready": true}},
        {"addresses": ["10.16.0.11"], "nodeName": "node2", "conditions": {"ready": true}},
        {"addresses": ["10.16.0.12"], "nodeName": "node2", "conditions": {"ready": false}}]),
        ),
    )
    .await
    .unwrap();
    let nb = ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config(vec![nb_server.unix_remote()]))
        .await
        .unwrap();
    let both = "10.16.0.10:8080,10.16.0.11:8080".to_string();
    let cip = eventually("the NodePort Service's load balancer", async || {
        lb_vips(&nb, "ferry-svc-default-np-cip-ovn-cluster-tcp")
            .filter(|v| pairs(v).first().is_some_and(|(_, b)| b.contains(',')))
    })
    .await;
    assert_eq!(
        pairs(&cip),
        vec![("10.96.5.1:80".to_string(), both.clone())],
        "the named targetPort comes from the slice; the not-ready endpoint is left out; \
         join addresses ({join:?}) are the node agents' (nftables), not OVN's"
    );
    let ext = eventually("node ports on the router", async || {
        lb_vips(&nb, "ferry-svc-default-np-eip-tcp")
    })
    .await;
    assert_eq!(
        pairs(&ext),
        vec![
            ("198.18.0.11:30080".to_string(), both.clone()),
            ("198.18.0.12:30080".to_string(), both.clone()),
        ]
    );

    // externalTrafficPolicy: Local -> each node's VIP leads to its own endpoints.
    let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
    svcs.patch(
        "np",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Local"}})),
    )
    .await
    .unwrap();
    eventually("Local splits backends by node", async || {
        let v = lb_vips(&nb, "ferry-svc-default-np-eip-tcp")?;
        (pairs(&v)
            == vec![
                (
                    "198.18.0.11:30080".to_string(),
                    "10.16.0.10:8080".to_string(),
                ),
                (
                    "198.18.0.12:30080".to_string(),
                    "10.16.0.11:8080".to_string(),
                ),
            ])
        .then_some(())
    })
    .await;

    // LoadBalancer: an address from the pool, in status and on the router.
    apply(&admin, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.5.2", "selector": {"app": "np"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081}]}})).await.unwrap();
    apply(
        &admin,
        &slice(
            "lb-1",
            "lb",
            json!([{"addresses": ["10.16.0.10"], "conditions": {"ready": true}}]),
        ),
    )
    .await
    .unwrap();
    let lb_ip = eventually("a LoadBalancer address in status", async || {
        let s = svcs.get("lb").await.ok()?;
        s.status?.load_balancer?.ingress?.first()?.ip.clone()
    })
    .await;
    assert!(lb_ip.starts_with("198.18.0.1"), "{lb_ip} is from the pool");
    eventually("the LoadBalancer address on the router", async || {
        let v = lb_vips(&nb, "ferry-svc-default-lb-eip-tcp")?;
        pairs(&v)
            .iter()
            .any(|(vip, b)| vip == &format!("{lb_ip}:80") && b == "10.16.0.10:8080")
            .then_some(())
    })
    .await;

    // A headless Service and an ExternalName one get nothing in OVN.
    apply(&admin, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hl", "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"app": "np"}, "ports": [{"port": 80}]}})).await.unwrap();
    apply(&admin, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "en", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.org"}})).await.unwrap();

    // Deleting a Service removes its rows; the other keeps its own.
    svcs.delete("np", &DeleteParams::default()).await.unwrap();
    eventually("np's rows removed", async || {
        (lb_vips(&nb, "ferry-svc-default-np-cip-ovn-cluster-tcp").is_none()
            && lb_vips(&nb, "ferry-svc-default-np-eip-tcp").is_none())
        .then_some(())
    })
    .await;
    assert!(lb_vips(&nb, "ferry-svc-default-lb-eip-tcp").is_some());
    let names: Vec<String> = nb.with_mirror(|m| {
        m.table("Load_Balancer")
            .into_iter()
            .flatten()
            .filter_map(|(_, r)| r["name"].as_str().map(String::from))
            .filter(|n| n.contains("-hl-") || n.contains("-en-"))
            .collect()
    });
    assert!(
        names.is_empty(),
        "headless/ExternalName got rows: {names:?}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    server.shutdown().await;
}
