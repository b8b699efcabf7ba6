//! The controllers against a real (Ferry's own) API server over HTTPS: IPAM, generated
//! objects, probe-driven endpoints, cleanup on delete, bad references, and Lease failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, YusurService};
use ferry_testkit::api::client_for;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod common;

struct Env {
    _dir: tempfile::TempDir,
    server: Option<ferry_apiserver::ApiServer>,
    client: Client,
    controller_kubeconfig: std::path::PathBuf,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = common::api(dir.path()).await;
    let controller_kubeconfig = dir.path().join("api/kubeconfig-controller");
    Env {
        _dir: dir,
        server: Some(server),
        client,
        controller_kubeconfig,
    }
}

async fn start_controller(
    e: &Env,
    identity: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let client = client_for(&e.controller_kubeconfig).await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let config = ferry_controller::ControllerConfig {
        identity: identity.into(),
        eip_pool: Some("198.18.0.100-198.18.0.199".into()),
        ..Default::default()
    };
    let task = tokio::spawn(async move {
        ferry_controller::run(client, config, rx).await.unwrap();
    });
    (tx, task)
}

async fn apply(client: &Client, v: serde_json::Value) {
    let api_version = v["apiVersion"].as_str().unwrap().to_string();
    let kind = v["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), "default", &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&v),
    )
    .await
    .unwrap();
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn topology(c: &Client) {
    for v in ["vpc1", "vpc2"] {
        apply(c, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": v}, "spec": {}})).await;
    }
    for (name, vpc, cidr) in [
        ("vpc1-subnet1", "vpc1", "10.0.1.0/24"),
        ("vpc1-subnet2", "vpc1", "10.0.2.0/24"),
        ("vpc2-subnet1", "vpc2", "10.0.1.0/24"),
    ] {
        apply(c, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": {"vpc": vpc, "cidrBlock": cidr, "excludeIps": ["10.0.1.2..10.0.1.9"]}})).await;
    }
    for (name, subnet) in [
        ("ep1", "vpc1-subnet1"),
        ("ep2", "vpc1-subnet2"),
        ("ep-vpc2", "vpc2-subnet1"),
    ] {
        apply(c, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"svc": "svc1-ep"}, "annotations": {"iaas.yusur.io/subnet": subnet}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "none"}]}})).await;
    }
}

fn seed() -> serde_json::Value {
    let text = include_str!("../../../examples/ysvc1.yaml");
    serde_saphyr::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_service_gets_cluster_ip_endpoints_of_healthy_vpc1_backends_and_cleans_up() {
    let e = env().await;
    let (stop, task) = start_controller(&e, "t1").await;
    topology(&e.client).await;
    apply(&e.client, seed()).await;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    // IPAM: addresses in each pod's subnet, excludeIps honoured, no duplicates within a VPC.
    let ips = eventually("pod addresses", Duration::from_secs(10), async || {
        let mut ips = Vec::new();
        for p in ["ep1", "ep2", "ep-vpc2"] {
            ips.push(
                pods.get(p)
                    .await
                    .ok()?
                    .annotations()
                    .get(ferry_api::ANNOTATION_IP)?
                    .clone(),
            );
        }
        Some(ips)
    })
    .await;
    assert_eq!(
        ips,
        ["10.0.1.10", "10.0.2.2", "10.0.1.10"],
        "ep1 skips the excluded range; vpc2 reuses the overlapping CIDR"
    );

    let ysvcs: Api<YusurService> = Api::namespaced(e.client.clone(), "default");
    let status = eventually("status", Duration::from_secs(10), async || {
        let s = ysvcs.get("ysvc1").await.ok()?.status?;
        (s.total_endpoints == 2).then_some(s)
    })
    .await;
    assert_eq!(status.cluster_ip.as_deref(), Some("10.96.0.2"));
    assert_eq!(
        status.ready_endpoints, 0,
        "a new backend waits for its first probe success"
    );

    let svcs: Api<Service> = Api::namespaced(e.client.clone(), "default");
    // Status is written first, the generated objects right after it.
    let svc = eventually(
        "the headless Service",
        Duration::from_secs(10),
        async || svcs.get_opt("ysvc1").await.ok().flatten(),
    )
    .await;
    assert_eq!(
        svc.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    assert_eq!(
        svc.labels()["service.kubernetes.io/service-proxy-name"],
        "ferry"
    );
    assert_eq!(svc.annotations()["iaas.yusur.io/vip"], "10.96.0.2");

    let probes: Api<NetworkProbe> = Api::namespaced(e.client.clone(), "default");
    let names: Vec<String> = eventually("both probes", Duration::from_secs(10), async || {
        let names: Vec<String> = probes
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        (names.len() >= 2).then_some(names)
    })
    .await;
    assert_eq!(
        names,
        ["ysvc1-pod-ep1", "ysvc1-pod-ep2"],
        "one probe per vpc1 backend; the vpc2 pod is not selected"
    );

    // A probe turning Healthy puts its backend into Endpoints; Unhealthy takes it out.
    let eps: Api<Endpoints> = Api::namespaced(e.client.clone(), "default");
    let addresses = async || -> Vec<String> {
        eps.get("ysvc1")
            .await
            .ok()
            .and_then(|ep| ep.subsets)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .map(|a| a.ip)
            .collect()
    };
    let flip = Instant::now();
    probes
        .patch_status(
            "ysvc1-pod-ep1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
        )
        .await
        .unwrap();
    eventually("ep1 in endpoints", Duration::from_secs(5), async || {
        (addresses().await == ["10.0.1.10"]).then_some(())
    })
    .await;
    eprintln!("probe Healthy -> Endpoints: {:?}", flip.elapsed());
    probes
        .patch_status(
            "ysvc1-pod-ep2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
        )
        .await
        .unwrap();
    eventually("both in endpoints", Duration::from_secs(5), async || {
        (addresses().await.len() == 2).then_some(())
    })
    .await;
    let flip = Instant::now();
    probes
        .patch_status(
            "ysvc1-pod-ep1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Unhealthy"}})),
        )
        .await
        .unwrap();
    eventually("ep1 out of endpoints", Duration::from_secs(5), async || {
        (addresses().await == ["10.0.2.2"]).then_some(())
    })
    .await;
    eprintln!("probe Unhealthy -> Endpoints: {:?}", flip.elapsed());
    let s = eventually("ready 1/2", Duration::from_secs(5), async || {
        ysvcs
            .get("ysvc1")
            .await
            .ok()?
            .status
            .filter(|s| s.ready.as_deref() == Some("1/2"))
    })
    .await;
    assert_eq!(
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str()),
        Some("True")
    );

    // A backend that goes away loses its probe.
    pods.delete("ep2", &DeleteParams::default()).await.unwrap();
    eventually("ep2's probe deleted", Duration::from_secs(5), async || {
        (probes.get_opt("ysvc1-pod-ep2").await.ok()?.is_none()).then_some(())
    })
    .await;

    // Deleting the YusurService removes everything it generated.
    ysvcs
        .delete("ysvc1", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "generated objects gone",
        Duration::from_secs(5),
        async || {
            let gone = svcs.get_opt("ysvc1").await.ok()?.is_none()
                && eps.get_opt("ysvc1").await.ok()?.is_none()
                && probes
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
            gone.then_some(())
        },
    )
    .await;
    let _ = stop.send(true);
    task.await.unwrap();
    if let Some(s) = e.server {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_and_clashes_get_a_false_condition_and_others_keep_working() {
    let e = env().await;
    let (stop, task) = start_controller(&e, "t2").await;
    topology(&e.client).await;
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "no-vpc"},
        "spec": {"vpc": "nope", "ports": [{"port": 80}], "selector": {"svc": "svc1-ep"}}})).await;
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "fixed-a"},
        "spec": {"vpc": "vpc1", "clusterIP": "10.96.0.50", "ports": [{"port": 80}], "selector": {"svc": "svc1-ep"}}})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "fixed-b"},
        "spec": {"vpc": "vpc1", "clusterIP": "10.96.0.50", "ports": [{"port": 80}], "selector": {"svc": "svc1-ep"}}})).await;
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "nothing"},
        "spec": {"vpc": "vpc1", "ports": [{"port": 80}], "selector": {"svc": "none"}}})).await;
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": "lb-missing-eip"},
        "spec": {"type": "LoadBalancer", "vpc": "vpc1", "eip": "no-such-eip", "ports": [{"port": 80}], "selector": {"svc": "svc1-ep"}}})).await;
    let ysvcs: Api<YusurService> = Api::namespaced(e.client.clone(), "default");
    for (name, reason) in [
        ("no-vpc", "VpcNotFound"),
        ("fixed-b", "ClusterIPConflict"),
        ("nothing", "NoBackends"),
        ("lb-missing-eip", "EipNotFound"),
    ] {
        let c = eventually(name, Duration::from_secs(10), async || {
            ysvcs
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == reason)
        })
        .await;
        assert_eq!(c.status, "False", "{name}");
    }
    let a = eventually("fixed-a", Duration::from_secs(5), async || {
        ysvcs
            .get("fixed-a")
            .await
            .ok()?
            .status
            .filter(|s| s.total_endpoints == 2)
    })
    .await;
    assert_eq!(
        a.cluster_ip.as_deref(),
        Some("10.96.0.50"),
        "the first owner keeps its address and keeps working"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(e.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|ev| ev.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "VpcNotFound")
            && reasons.iter().any(|r| r == "ClusterIPConflict"),
        "{reasons:?}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_exits() {
    let e = env().await;
    let (stop_a, task_a) = start_controller(&e, "a").await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "kube-system");
    let holder = async || {
        leases
            .get_opt("ferry-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    eventually("a leads", Duration::from_secs(10), async || {
        (holder().await.as_deref() == Some("a")).then_some(())
    })
    .await;
    let (stop_b, task_b) = start_controller(&e, "b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        holder().await.as_deref(),
        Some("a"),
        "the standby waits while the leader renews"
    );
    let exit = Instant::now();
    let _ = stop_a.send(true);
    task_a.await.unwrap();
    // At once when a released the Lease; within the lease duration (5 s) if a had lost it
    // before it exited (a loaded machine).
    eventually("b leads", Duration::from_secs(15), async || {
        (holder().await.as_deref() == Some("b")).then_some(())
    })
    .await;
    eprintln!("failover after a clean exit: {:?}", exit.elapsed());
    // The new leader does the work: a service applied now gets its address.
    topology(&e.client).await;
    apply(&e.client, seed()).await;
    let ysvcs: Api<YusurService> = Api::namespaced(e.client.clone(), "default");
    eventually("b reconciles", Duration::from_secs(10), async || {
        ysvcs.get("ysvc1").await.ok()?.status?.cluster_ip
    })
    .await;
    let _ = stop_b.send(true);
    task_b.await.unwrap();
    let _ = PostParams::default();
}

#[tokio::test]
async fn the_leadership_flag_falls_when_another_holder_takes_the_lease() {
    let e = env().await;
    let client = client_for(&e.controller_kubeconfig).await;
    let (stop, rx_stop) = tokio::sync::watch::channel(false);
    let cfg = ferry_controller::leader::LeaderConfig::new("a");
    let (mut leading, task) = ferry_controller::leader::spawn(client, cfg, rx_stop);
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(Option::is_some))
        .await
        .expect("a leads")
        .unwrap();
    // Another replica (a partition healed, a clock jump) holds a live Lease now.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "kube-system");
    let mut lease = leases.get("ferry-controller").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(60);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        jiff::Timestamp::now(),
    ));
    leases
        .replace("ferry-controller", &PostParams::default(), &lease)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(Option::is_none))
        .await
        .expect("a stops leading")
        .unwrap();
    let _ = stop.send(true);
    task.await.unwrap();
    // It did not release what it no longer held.
    let held = leases.get("ferry-controller").await.unwrap();
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("intruder")
    );
}

/// Writes node `name`'s agent Lease, renewed `age` ago with a 10 s duration.
async fn agent_lease(c: &Client, node: &str, age: Duration) {
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": ferry_api::agent_lease_name(node), "namespace": ferry_api::AGENT_LEASE_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 10,
                 "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.clone(), ferry_api::AGENT_LEASE_NAMESPACE);
    api.patch(
        &ferry_api::agent_lease_name(node),
        &PatchParams::apply("test").force(),
        &Patch::Apply(&lease),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_agent_lease_makes_its_pods_probes_unknown_and_moves_host_probes() {
    let e = env().await;
    for n in ["node1", "node2"] {
        apply(
            &e.client,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
        )
        .await;
        agent_lease(&e.client, n, Duration::ZERO).await;
    }
    let (stop, task) = start_controller(&e, "t-lease").await;
    topology(&e.client).await;
    // A bare-metal backend names no node: a live agent is chosen for it.
    apply(&e.client, json!({"apiVersion": "iaas.yusur.io/v1", "kind": "BareMetal", "metadata": {"name": "bm-0", "labels": {"svc": "svc1-ep"}},
        "spec": {"subnet": "vpc1-subnet2"}})).await;
    apply(&e.client, seed()).await;
    let probes: Api<NetworkProbe> = Api::namespaced(e.client.clone(), "default");
    let bm_node = eventually(
        "the bare-metal probe",
        Duration::from_secs(10),
        async || {
            probes
                .get_opt("ysvc1-bm-bm-0")
                .await
                .ok()
                .flatten()?
                .spec
                .node_name
        },
    )
    .await;
    assert_eq!(bm_node, "node1", "bm-0 hashes to node1 of [node1, node2]");
    for p in ["ysvc1-pod-ep1", "ysvc1-pod-ep2", "ysvc1-bm-bm-0"] {
        eventually(p, Duration::from_secs(10), async || {
            probes.get_opt(p).await.ok().flatten()
        })
        .await;
        probes
            .patch_status(
                p,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
            )
            .await
            .unwrap();
    }
    let ysvcs: Api<YusurService> = Api::namespaced(e.client.clone(), "default");
    eventually("3 of 3 ready", Duration::from_secs(10), async || {
        (ysvcs.get("ysvc1").await.ok()?.status?.ready_endpoints == 3).then_some(())
    })
    .await;
    // node1's agent stops: its Lease is older than its duration. The pods on node1 are
    // presumed lost (Unknown, out of Endpoints); the host's probe goes to node2.
    agent_lease(&e.client, "node1", Duration::from_secs(30)).await;
    let started = Instant::now();
    for p in ["ysvc1-pod-ep1", "ysvc1-pod-ep2"] {
        let st = eventually(p, Duration::from_secs(15), async || {
            let st = probes.get(p).await.ok()?.status?;
            (st.phase == ferry_api::ProbePhase::Unknown).then_some(st)
        })
        .await;
        assert!(st.message.unwrap_or_default().contains("node1"));
    }
    let moved = eventually(
        "the host probe on node2",
        Duration::from_secs(15),
        async || {
            probes
                .get("ysvc1-bm-bm-0")
                .await
                .ok()?
                .spec
                .node_name
                .filter(|n| n == "node2")
        },
    )
    .await;
    assert_eq!(moved, "node2");
    let eps: Api<Endpoints> = Api::namespaced(e.client.clone(), "default");
    let ready = eventually(
        "only the host left in Endpoints",
        Duration::from_secs(10),
        async || {
            let ep = eps.get("ysvc1").await.ok()?;
            let ips: Vec<String> = ep
                .subsets?
                .first()?
                .addresses
                .clone()?
                .into_iter()
                .map(|a| a.ip)
                .collect();
            (ips.len() == 1).then_some(ips)
        },
    )
    .await;
    eprintln!(
        "lease lapse handled {:?} after the lease changed; host probe was on {bm_node}; endpoints {ready:?}",
        started.elapsed()
    );
    // The host keeps its Healthy phase across the move (its new agent reports on its own).
    assert_eq!(
        probes
            .get("ysvc1-bm-bm-0")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        ferry_api::ProbePhase::Healthy
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

/// A TCP proxy to `upstream` that stops passing bytes (and holds new connections) while
/// `frozen`: a Lease renewal through it hangs as on an API server too loaded to answer.
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frozen = std::sync::Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (f1, f2) = (f.clone(), f.clone());
            let pass = async |mut from: tokio::net::tcp::OwnedReadHalf,
                              mut to: tokio::net::tcp::OwnedWriteHalf,
                              frozen: std::sync::Arc<AtomicBool>| {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = from.read(&mut buf).await {
                    while frozen.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pass(dr, uw, f1));
            tokio::spawn(pass(ur, dw, f2));
        }
    });
    (addr, frozen)
}

/// A leader whose renewals go unanswered past its renew deadline stops writing; when it
/// wins the Lease back and nobody held it meanwhile (the same term), it resumes, keeping
/// what it had (no second takeover), and programs what changed while it stood by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_wins_its_lease_back_in_the_same_term_resumes() {
    use std::sync::atomic::Ordering;
    let log = common::captured_log();
    let e = env().await;
    let kc = kube::config::Kubeconfig::read_from(&e.controller_kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api_addr: std::net::SocketAddr = cfg
        .cluster_url
        .authority()
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    let (proxy, frozen) = freezable_proxy(api_addr).await;
    let mut lease_cfg = cfg.clone();
    lease_cfg.cluster_url = format!("https://{proxy}").parse().unwrap();
    let client = Client::try_from(cfg).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let config = ferry_controller::ControllerConfig {
        identity: "resumer".into(),
        lease_duration: Some(Duration::from_secs(2)),
        lease_client: Some(lease_cfg),
        ..Default::default()
    };
    let task = tokio::spawn(async move {
        ferry_controller::run(client, config, rx).await.unwrap();
    });
    topology(&e.client).await;
    apply(&e.client, seed()).await;
    let eps: Api<Endpoints> = Api::namespaced(e.client.clone(), "default");
    eventually("ysvc1's Endpoints", Duration::from_secs(10), async || {
        eps.get_opt("ysvc1").await.ok().flatten()
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.client.clone(), "kube-system");
    let term = async || {
        let l = leases.get("ferry-controller").await.unwrap();
        let s = l.spec.unwrap();
        (l.metadata.uid, s.holder_identity, s.lease_transitions)
    };
    let before = term().await;
    assert_eq!(before.1.as_deref(), Some("resumer"));

    // Renewals hang: past the 1.5 s renew deadline the leader stands by.
    frozen.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ysvcs: Api<YusurService> = Api::namespaced(e.client.clone(), "default");
    let mut paused = ysvcs.get("ysvc1").await.unwrap();
    paused.metadata = kube::api::ObjectMeta {
        name: Some("ysvc-paused".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    paused.status = None;
    ysvcs.create(&PostParams::default(), &paused).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        eps.get_opt("ysvc-paused").await.unwrap().is_none(),
        "a leader past its renew deadline writes nothing"
    );

    frozen.store(false, Ordering::SeqCst);
    eventually(
        "ysvc-paused's Endpoints, after the leader resumed",
        Duration::from_secs(15),
        async || eps.get_opt("ysvc-paused").await.ok().flatten(),
    )
    .await;
    assert_eq!(
        term().await,
        before,
        "won back in the same term: the same Lease, holder and transitions"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| {
        log.lines()
            .filter(|l| l.contains("identity=resumer") && l.contains(needle))
            .count()
    };
    assert!(count("lost leadership") >= 1, "it stood by:\n{log}");
    assert!(
        count("leading again in the same term") >= 1,
        "it resumed:\n{log}"
    );
    assert_eq!(
        count("taking over"),
        1,
        "one takeover, at the start:\n{log}"
    );
}
