//! The feed against a real `ferry apiserver` (in a temp dir, on 127.0.0.1:0) through a plain
//! kube client: Services (cluster IPs allocated by the server), an EndpointSlice and a
//! YusurService with its status become records in the right VPCs, and a delete takes the
//! name away.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::YusurService;
use ferry_dns::wire::{CLASS_IN, Header, Message, Question, TYPE_A};
use ferry_dns::{Decision, Name, Zones, answer, fixtures, run_feed};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;

fn query(name: &str) -> Message {
    Message {
        header: Header {
            rd: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: Name::parse(name).expect("name"),
            qtype: TYPE_A,
            qclass: CLASS_IN,
        }],
        ..Default::default()
    }
}

/// The A records `name` gets from `vpc` (empty for NXDOMAIN/NODATA).
fn a(zones: &Zones, vpc: &str, name: &str) -> Vec<String> {
    match answer(zones, vpc, &query(name)) {
        Decision::Reply(m) => {
            let mut v: Vec<String> = m.answers.iter().map(|r| format!("{:?}", r.data)).collect();
            v.sort();
            v
        }
        other => panic!("{name} from {vpc}: {other:?}"),
    }
}

/// Waits until the published zones satisfy `ok` (the feed debounces and the watch is
/// asynchronous; nothing here measures time).
async fn until(
    rx: &mut watch::Receiver<Arc<Zones>>,
    what: &str,
    ok: impl Fn(&Zones) -> bool,
) -> Arc<Zones> {
    let wait = async {
        loop {
            let z = rx.borrow_and_update().clone();
            if ok(&z) {
                return z;
            }
            rx.changed().await.expect("feed running");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("zones never showed {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_follows_a_real_api_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        limits: Default::default(),
        services: Default::default(),
    })
    .await
    .expect("API server starts");
    let crds: Vec<serde_json::Value> = ferry_api::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("CRD as JSON"))
        .collect();
    server.install_crds(&crds).await.expect("CRDs");
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");

    let (tx, mut rx) = watch::channel(Arc::new(Zones::empty("cluster.local")));
    let feed = tokio::spawn(run_feed(client.clone(), "cluster.local".into(), tx));
    // Ready is announced even though the first zones equal the empty ones.
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .expect("the feed announces its first zones")
        .expect("feed running");
    assert_eq!(
        *rx.borrow_and_update().clone(),
        Zones::empty("cluster.local")
    );

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ysvcs: Api<YusurService> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // A ClusterIP Service without an address: the server allocates one.
    let mut web = fixtures::service("default", "web", "ClusterIP", "", &[("http", 80, "TCP")]);
    if let Some(spec) = web.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
    }
    let web = services.create(&pp, &web).await.expect("create web");
    let ip = web
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the API server allocated a cluster IP");
    let want_web = vec![format!("A({ip})")];
    let web_name = "web.default.svc.cluster.local";
    until(&mut rx, "web", |z| {
        a(z, "ovn-cluster", web_name) == want_web
    })
    .await;

    // A headless Service and its slice.
    services
        .create(
            &pp,
            &fixtures::headless("default", "db", &[("pg", 5432, "TCP")]),
        )
        .await
        .expect("create db");
    slices
        .create(
            &pp,
            &fixtures::slice(
                "default",
                "db",
                &[
                    ("10.16.0.5", Some("db-0"), Some(true)),
                    ("10.16.0.7", None, Some(false)),
                ],
                &[("pg", 5432, "TCP")],
            ),
        )
        .await
        .expect("create slice");
    let db = "db.default.svc.cluster.local";
    until(&mut rx, "db", |z| {
        a(z, "ovn-cluster", db) == ["A(10.16.0.5)"]
    })
    .await;

    // A YusurService in vpc1: named once its status has the cluster IP, only in vpc1.
    ysvcs
        .create(
            &pp,
            &fixtures::ysvc("default", "ysvc1", &["vpc1"], None, &[("http", 80)]),
        )
        .await
        .expect("create ysvc1");
    ysvcs
        .patch_status(
            "ysvc1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"clusterIP": "10.96.200.1"}})),
        )
        .await
        .expect("status");
    let y = "ysvc1.default.svc.cluster.local";
    let z = until(&mut rx, "ysvc1 in vpc1", |z| {
        a(z, "vpc1", y) == ["A(10.96.200.1)"]
    })
    .await;
    assert!(a(&z, "vpc2", y).is_empty(), "vpc2 must not see ysvc1");
    assert!(a(&z, "ovn-cluster", y).is_empty(), "nor the default VPC");
    assert!(a(&z, "vpc1", web_name).is_empty(), "vpc1 does not see web");

    // Delete: the name goes.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    until(&mut rx, "web gone", |z| {
        a(z, "ovn-cluster", web_name).is_empty()
    })
    .await;

    feed.abort();
    server.shutdown().await;
}
