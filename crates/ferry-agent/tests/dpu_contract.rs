//! The host/DPU contract through a real Ferry API server (no root): the `dpu-host` CNI's
//! Kubernetes side ([`KubeAssignments`]), with the node's own identity
//! (`system:node:n1`), refuses a pod while the DPU Lease `ferry-dpu-NODE` is missing or
//! lapsed and admits it once renewed, writes the pod's `iaas.yusur.io/vf` annotation
//! (allowed by `deploy/dpu/rbac-dpu-host.yaml`; refused before it is applied, for another
//! node's pod and for any other field) and withdraws it; the DPU's decision
//! ([`dpu::desired_bindings`]) over the pods listed from the server binds exactly what the
//! host announced, and the node identity renews its DPU's Lease.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use ferry_agent::cni::{CniArgs, CniCommand, CniEnv, CniError, NetConf, parse_conf};
use ferry_agent::cni_kube::KubeAssignments;
use ferry_agent::cni_plugin::AssignmentSource;
use ferry_agent::dpu;
use ferry_testkit::api::TestApiServer;

fn lease(renewed_ago_s: i64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(dpu::dpu_lease_name("n1")),
            namespace: Some(dpu::DPU_LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("n1-dpu".into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(
                Timestamp::now() - jiff::SignedDuration::from_secs(renewed_ago_s),
            )),
            ..Default::default()
        }),
    }
}

/// Runs one of the plugin's blocking Kubernetes calls off the test's runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce(&mut KubeAssignments, &CniEnv, &NetConf) -> Result<T, CniError> + Send + 'static,
    conf: &NetConf,
) -> Result<T, CniError> {
    let conf = conf.clone();
    tokio::task::spawn_blocking(move || {
        let env = CniEnv {
            command: CniCommand::Add,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
            args: CniArgs::parse("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web").expect("args"),
            path: vec![],
        };
        let mut k = KubeAssignments {
            wait: Duration::from_secs(1),
        };
        f(&mut k, &env, &conf)
    })
    .await
    .expect("blocking task")
}

async fn bindings(client: &kube::Client) -> std::collections::BTreeMap<String, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default()).await.expect("list pods");
    dpu::desired_bindings(&list.items, "n1")
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_dpu_agree_through_the_api_server() {
    let srv = TestApiServer::start().await;
    let admin = srv.client().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "web".into(),
                image: Some("web".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    // Another node's pod, which n1 must not annotate.
    let mut other = pod.clone();
    other.metadata.name = Some("elsewhere".into());
    if let Some(s) = other.spec.as_mut() {
        s.node_name = Some("n2".into());
    }
    pods.create(&PostParams::default(), &other)
        .await
        .expect("create n2's pod");
    // The CNI of a DPU host runs as the node (its kubeconfig holds system:node:n1).
    let conf = parse_conf(
        serde_json::json!({"cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
            "mode": "dpu-host", "kubeconfig": srv.node_kubeconfig("n1")})
        .to_string()
        .as_bytes(),
    )
    .expect("conf");

    // No DPU Lease, then a lapsed one: refused, code 11, with the reason.
    let err = blocking(|k, e, c| k.admit(e, c), &conf)
        .await
        .expect_err("no lease");
    assert_eq!(
        (err.code, err.msg.as_str()),
        (
            11,
            "no DPU agent for this node: Lease ferry-dpu-n1 does not exist"
        )
    );
    let leases: Api<Lease> = Api::namespaced(admin.clone(), dpu::DPU_LEASE_NAMESPACE);
    leases
        .create(&PostParams::default(), &lease(60))
        .await
        .expect("create lease");
    let err = blocking(|k, e, c| k.admit(e, c), &conf)
        .await
        .expect_err("lapsed");
    assert_eq!(err.code, 11);
    assert!(
        err.msg
            .starts_with("the DPU agent's Lease ferry-dpu-n1 has lapsed ("),
        "{}",
        err.msg
    );
    // Renewed: admitted.
    let mut l = leases.get(&dpu::dpu_lease_name("n1")).await.expect("lease");
    l.spec = lease(0).spec;
    leases
        .replace(&dpu::dpu_lease_name("n1"), &PostParams::default(), &l)
        .await
        .expect("renew");
    blocking(|k, e, c| k.admit(e, c), &conf)
        .await
        .expect("admitted with a live DPU lease");

    // Nothing announced yet: the DPU binds nothing.
    assert!(bindings(&admin).await.is_empty());
    // Without the DPU host role the node may not patch pods at all (RBAC's ferry-agent
    // role has no `patch pods`).
    let err = blocking(
        |k, e, c| k.announce_vf(e, c, Some("fy00000000000a1")),
        &conf,
    )
    .await
    .expect_err("no DPU host role yet");
    assert!(
        err.details.contains("forbidden") && err.details.contains("patch"),
        "{err:?}"
    );
    for doc in serde_saphyr::from_multiple::<serde_json::Value>(include_str!(
        "../../../deploy/dpu/rbac-dpu-host.yaml"
    ))
    .expect("deploy/dpu/rbac-dpu-host.yaml")
    {
        ferry_testkit::api::apply(&admin, &doc)
            .await
            .expect("apply the DPU host role");
    }
    // Bindings take effect as the authorizer sees them (within a moment).
    let mut announced = Err(err);
    for _ in 0..50 {
        announced = blocking(
            |k, e, c| k.announce_vf(e, c, Some("fy00000000000a1")),
            &conf,
        )
        .await;
        if announced.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    announced.expect("announce as the node, with the DPU host role");
    let got = pods.get("web").await.expect("pod");
    assert_eq!(
        got.annotations()
            .get(dpu::ANNOTATION_VF)
            .map(String::as_str),
        Some("fy00000000000a1")
    );
    assert_eq!(
        bindings(&admin).await,
        std::collections::BTreeMap::from([(
            "fy00000000000a1".to_string(),
            ferry_net::port_name(ferry_net::PortKind::Pod, "default", "web")
        )])
    );
    // DEL withdraws it; the DPU's plan unbinds.
    blocking(|k, e, c| k.announce_vf(e, c, None), &conf)
        .await
        .expect("withdraw");
    let got = pods.get("web").await.expect("pod");
    assert_eq!(got.annotations().get(dpu::ANNOTATION_VF), None);
    assert!(bindings(&admin).await.is_empty());

    // The node restriction keeps the role to the VF annotation of n1's own pods.
    let node = ferry_testkit::api::client_for(&srv.node_kubeconfig("n1")).await;
    let node_pods: Api<Pod> = Api::namespaced(node.clone(), "default");
    let merge = |v: serde_json::Value| Patch::Merge(v);
    let vf =
        |rep: &str| serde_json::json!({"metadata": {"annotations": {dpu::ANNOTATION_VF: rep}}});
    let cases = [
        ("another node's pod", "elsewhere", vf("fy00000000000b1")),
        (
            "another annotation",
            "web",
            serde_json::json!({"metadata": {"annotations": {"iaas.yusur.io/ip_address": "10.0.0.99"}}}),
        ),
        (
            "a label",
            "web",
            serde_json::json!({"metadata": {"labels": {"app": "x"}}}),
        ),
        (
            "the spec",
            "web",
            serde_json::json!({"spec": {"activeDeadlineSeconds": 5}}),
        ),
    ];
    for (what, name, body) in cases {
        let r = node_pods
            .patch(name, &PatchParams::default(), &merge(body))
            .await;
        match r {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{what}: {s:?}"),
            other => panic!("{what}: the node's patch was not refused: {other:?}"),
        }
    }
    let got = pods.get("elsewhere").await.expect("n2's pod");
    assert_eq!(got.annotations().get(dpu::ANNOTATION_VF), None);
    // The node's own identity may renew its DPU's Lease (`ferry-dpu-NODE`).
    let node_leases: Api<Lease> = Api::namespaced(node.clone(), dpu::DPU_LEASE_NAMESPACE);
    let mut l = node_leases
        .get(&dpu::dpu_lease_name("n1"))
        .await
        .expect("read lease");
    l.spec = lease(0).spec;
    let r = node_leases
        .replace(&dpu::dpu_lease_name("n1"), &PostParams::default(), &l)
        .await;
    assert!(r.is_ok(), "node identity renewing ferry-dpu-n1: {r:?}");
    srv.stop().await;
}
