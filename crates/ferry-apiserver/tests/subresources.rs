//! `pods/binding` and the `scale` of Deployments and ReplicaSets, through kube-rs as a
//! scheduler and `kubectl scale` use them.

mod common;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

#[tokio::test]
async fn binding_sets_node_name_once_and_scale_writes_replicas() {
    let ts = common::start(Default::default()).await;
    // The scheduler's identity (`ferry up` runs the embedded controllers with it).
    let controller = common::client_for(&ts.embedded_kubeconfig()).await;
    let admin = ts.client().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let binding = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "p"}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    };
    let sched: Api<Pod> = Api::namespaced(controller, "default");
    let done: Value = sched
        .create_subresource("binding", "p", &PostParams::default(), &binding("n1"))
        .await
        .expect("bind");
    assert_eq!(done["status"], "Success");
    let bound = pods.get("p").await.expect("get");
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("n1")
    );
    let scheduled: Vec<(String, String)> = bound
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        scheduled,
        vec![("PodScheduled".to_string(), "True".to_string())]
    );
    let again = sched
        .create_subresource::<Value, Value>("binding", "p", &PostParams::default(), &binding("n2"))
        .await;
    match again {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409, "{e:?}");
            assert!(
                e.message.contains("already assigned to node \"n1\""),
                "{e:?}"
            );
        }
        other => panic!("a second binding must be refused: {other:?}"),
    }

    // Scale: GET shows spec.replicas and the selector; PATCH (as `kubectl scale` sends it)
    // writes the Deployment's spec.replicas; a stale resourceVersion is a conflict.
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "web"}]}}}}))
    .expect("deployment");
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let s = deploys.get_scale("web").await.expect("get scale");
    assert_eq!(s.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(
        s.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app=web")
    );
    let s = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("patch scale");
    assert_eq!(s.spec.and_then(|s| s.replicas), Some(1));
    let d = deploys.get("web").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
    let stale = deploys
        .replace_scale(
            "web",
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "web", "resourceVersion": "1"}, "spec": {"replicas": 5}}))
            .expect("scale"),
        )
        .await;
    assert!(
        matches!(stale, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{stale:?}"
    );

    // ReplicaSets are served, with their own scale.
    let rss: Api<ReplicaSet> = Api::namespaced(admin, "default");
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "rs"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
    .expect("replicaset");
    rss.create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    let s = rss
        .patch_scale(
            "rs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scale rs");
    assert_eq!(s.spec.and_then(|s| s.replicas), Some(4));
    ts.stop().await;
}
