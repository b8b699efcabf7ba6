//! The endpoints controller against a real `ferry apiserver` (in process), with the
//! controller's identity: Pods and Services created as a user would, Endpoints and
//! EndpointSlices checked as the network side reads them, readiness flipped both ways, and
//! the Services it must not touch left alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Polls `f` until it returns Some, for at most 20 s (a wait, not a timing assertion).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn pod(api: &Api<Pod>, name: &str, app: &str, ip: &str, ready: bool) {
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}]}]}}))
    .expect("pod");
    api.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    set_ready(api, name, ip, ready).await;
}

async fn set_ready(api: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}

/// (ready, not ready) addresses of an Endpoints object.
fn addresses(e: &Endpoints) -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut ports = Vec::new();
    for s in e.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
        ports.extend(s.ports.iter().flatten().map(|p| p.port));
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready, ports)
}

/// (ip, ready) of every endpoint of the slices of `svc` this controller manages.
async fn slice_view(api: &Api<EndpointSlice>, svc: &str) -> Vec<(String, bool, Vec<i32>)> {
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={svc},endpointslice.kubernetes.io/managed-by=ferry-embedded"
    ));
    let mut out: Vec<(String, bool, Vec<i32>)> = api
        .list(&lp)
        .await
        .expect("list slices")
        .items
        .iter()
        .flat_map(|s| {
            let ports: Vec<i32> = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            s.endpoints
                .iter()
                .map(move |e| {
                    (
                        e.addresses[0].clone(),
                        e.conditions.as_ref().and_then(|c| c.ready) == Some(true),
                        ports.clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pods_and_readiness() {
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
    // The embedded controllers run with the identity `ferry up` gives them.
    let controller = client_for(&dir.path().join("kubeconfig-embedded")).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_embedded::run(controller, rx));

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");

    pod(&pods, "a", "web", "10.0.0.1", true).await;
    pod(&pods, "b", "web", "10.0.0.2", false).await;
    pod(&pods, "c", "db", "10.0.0.3", true).await;
    let svc = |v: Value| -> Service { serde_json::from_value(v).expect("service") };
    svcs.create(
        &PostParams::default(),
        &svc(
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        ),
    )
    .await
    .expect("service web");

    let want = |r: &[&str], n: &[&str]| {
        (
            r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            n.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let ep_is = |r: Vec<String>, n: Vec<String>| {
        let eps = eps.clone();
        move || {
            let (r, n) = (r.clone(), n.clone());
            let eps = eps.clone();
            async move {
                let e = eps.get_opt("web").await.ok()??;
                let (ready, not_ready, ports) = addresses(&e);
                (ready == r && not_ready == n).then_some(ports)
            }
        }
    };
    let (r, n) = want(&["10.0.0.1"], &["10.0.0.2"]);
    let ports = eventually("Endpoints web: a ready, b not", ep_is(r, n)).await;
    assert!(
        ports.iter().all(|p| *p == 8080),
        "named port resolved: {ports:?}"
    );
    let view = eventually("slices of web", || {
        let slices = slices.clone();
        async move {
            let v = slice_view(&slices, "web").await;
            (v.len() == 2).then_some(v)
        }
    })
    .await;
    assert_eq!(
        view,
        vec![
            ("10.0.0.1".to_string(), true, vec![8080]),
            ("10.0.0.2".to_string(), false, vec![8080])
        ]
    );

    // Readiness flips both ways.
    set_ready(&pods, "b", "10.0.0.2", true).await;
    set_ready(&pods, "a", "10.0.0.1", false).await;
    let (r, n) = want(&["10.0.0.2"], &["10.0.0.1"]);
    eventually("Endpoints web after the flip", ep_is(r, n)).await;
    eventually("slices of web after the flip", || {
        let slices = slices.clone();
        async move {
            let v = slice_view(&slices, "web").await;
            (v == vec![
                ("10.0.0.1".to_string(), false, vec![8080]),
                ("10.0.0.2".to_string(), true, vec![8080]),
            ])
            .then_some(())
        }
    })
    .await;

    // A Pod that goes is no endpoint.
    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let (r, n) = want(&["10.0.0.2"], &[]);
    eventually("Endpoints web without a", ep_is(r, n)).await;

    // Left alone: a Service Ferry's controller generated for a YusurService, and a Service
    // without selector whose Endpoints its user wrote.
    svcs.create(
        &PostParams::default(),
        &svc(
            json!({"metadata": {"name": "gen", "labels": {"iaas.yusur.io/service": "gen"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None", "ports": [{"port": 80}]}}),
        ),
    )
    .await
    .expect("generated");
    svcs.create(
        &PostParams::default(),
        &svc(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})),
    )
    .await
    .expect("manual");
    let by_hand: Endpoints = serde_json::from_value(json!({"metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]}))
    .expect("endpoints");
    eps.create(&PostParams::default(), &by_hand)
        .await
        .expect("by hand");
    // A later Service converging shows the controller has seen the earlier ones.
    svcs.create(
        &PostParams::default(),
        &svc(json!({"metadata": {"name": "marker"}, "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}})),
    )
    .await
    .expect("marker");
    eventually("Endpoints marker", || {
        let eps = eps.clone();
        async move {
            let e = eps.get_opt("marker").await.ok()??;
            (addresses(&e).0 == vec!["10.0.0.3".to_string()]).then_some(())
        }
    })
    .await;
    assert!(
        eps.get_opt("gen").await.expect("get").is_none(),
        "generated Service got Endpoints"
    );
    assert!(slice_view(&slices, "gen").await.is_empty());
    let manual = eps.get("manual").await.expect("manual");
    assert_eq!(addresses(&manual).0, vec!["192.0.2.1".to_string()]);
    assert!(slice_view(&slices, "manual").await.is_empty());

    // The Service goes: so do its Endpoints and slices.
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    eventually("web's Endpoints and slices gone", || {
        let (eps, slices) = (eps.clone(), slices.clone());
        async move {
            let gone = eps.get_opt("web").await.ok()?.is_none()
                && slice_view(&slices, "web").await.is_empty();
            gone.then_some(())
        }
    })
    .await;

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    server.shutdown().await;
}
