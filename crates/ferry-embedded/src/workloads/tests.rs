use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

fn now() -> jiff::Timestamp {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}})
}

fn deployment(replicas: i32, image: &str, extra: Value) -> Deployment {
    let mut v = json!({"metadata": {"name": "web", "namespace": "t1", "uid": "d-uid", "generation": 2},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template(image)}});
    if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(v).unwrap()
}

/// A ReplicaSet of `web` for `image`: spec replicas, (status replicas, available), revision,
/// created at minute `age`.
fn rs(image: &str, replicas: i32, pods: (i32, i32), rev: i64, minute: u32) -> ReplicaSet {
    let mut t = template(image);
    let hash = template_hash(&t, None);
    t["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    serde_json::from_value(json!({
        "metadata": {"name": format!("web-{hash}"), "namespace": "t1", "uid": format!("rs-{image}"),
            "creationTimestamp": format!("2026-11-28T11:{minute:02}:00Z"),
            "annotations": {REVISION: rev.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: hash}}, "template": t},
        "status": {"replicas": pods.0, "readyReplicas": pods.1, "availableReplicas": pods.1}}))
    .unwrap()
}

fn name(image: &str) -> String {
    format!("web-{}", template_hash(&template(image), None))
}

/// (name, spec replicas, revision) of what a plan writes.
fn writes(p: &deployment::Plan) -> Vec<(String, i32, String)> {
    p.create
        .iter()
        .chain(&p.update)
        .map(|r| {
            (
                r.metadata.name.clone().unwrap(),
                r.spec.as_ref().and_then(|s| s.replicas).unwrap(),
                r.metadata.annotations.as_ref().unwrap()[REVISION].clone(),
            )
        })
        .collect()
}

#[test]
fn hashes_are_stable_safe_and_differ_per_template() {
    let a = template_hash(&template("a"), None);
    assert_eq!(a, template_hash(&template("a"), None));
    assert_ne!(a, template_hash(&template("b"), None));
    assert_ne!(a, template_hash(&template("a"), Some(1)));
    assert!(
        a.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{a}"
    );
    // Key order does not matter.
    let reordered: Value =
        serde_json::from_str(r#"{"spec": {"containers": [{"image": "a", "name": "web"}]}, "metadata": {"labels": {"app": "web"}}}"#)
            .unwrap();
    assert_eq!(a, template_hash(&reordered, None));
}

#[test]
fn surge_and_unavailable_resolve_like_kube() {
    let cases = [
        (json!({}), 3, (1, 0)),
        (json!({}), 4, (1, 1)),
        (json!({}), 10, (3, 2)),
        (
            json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}),
            3,
            (0, 1),
        ),
        (
            json!({"strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 2}}}),
            3,
            (2, 2),
        ),
        (json!({"strategy": {"type": "Recreate"}}), 3, (0, 3)),
    ];
    for (extra, replicas, want) in cases {
        let d = deployment(replicas, "a", extra.clone());
        assert_eq!(
            deployment::surge_and_unavailable(&d),
            want,
            "{extra} x{replicas}"
        );
    }
}

#[test]
fn rollout_steps() {
    struct Case {
        what: &'static str,
        d: Deployment,
        rss: Vec<ReplicaSet>,
        writes: Vec<(String, i32, String)>,
    }
    let cases = vec![
        Case {
            what: "new deployment: one ReplicaSet with every replica, revision 1",
            d: deployment(3, "a", json!({})),
            rss: vec![],
            writes: vec![(name("a"), 3, "1".into())],
        },
        Case {
            what: "steady: nothing to write",
            d: deployment(3, "a", json!({})),
            rss: vec![rs("a", 3, (3, 3), 1, 0)],
            writes: vec![],
        },
        Case {
            what: "kubectl scale --replicas=1: the only ReplicaSet follows",
            d: deployment(1, "a", json!({})),
            rss: vec![rs("a", 3, (3, 3), 1, 0)],
            writes: vec![(name("a"), 1, "1".into())],
        },
        Case {
            what: "new template: new ReplicaSet of maxSurge (25% of 3 -> 1), revision 2",
            d: deployment(3, "b", json!({})),
            rss: vec![rs("a", 3, (3, 3), 1, 0)],
            writes: vec![(name("b"), 1, "2".into())],
        },
        Case {
            what: "new Pod not available yet: maxUnavailable 0 holds the old ones",
            d: deployment(3, "b", json!({})),
            rss: vec![rs("a", 3, (3, 3), 1, 0), rs("b", 1, (1, 0), 2, 1)],
            writes: vec![],
        },
        Case {
            what: "new Pod available: one old one goes",
            d: deployment(3, "b", json!({})),
            rss: vec![rs("a", 3, (3, 3), 1, 0), rs("b", 1, (1, 1), 2, 1)],
            writes: vec![(name("a"), 2, "1".into())],
        },
        Case {
            what: "room again: the new one grows",
            d: deployment(3, "b", json!({})),
            rss: vec![rs("a", 2, (2, 2), 1, 0), rs("b", 1, (1, 1), 2, 1)],
            writes: vec![(name("b"), 2, "2".into())],
        },
        Case {
            what: "unavailable old Pods go first, within what maxUnavailable leaves",
            d: deployment(
                3,
                "b",
                json!({"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}}),
            ),
            rss: vec![rs("a", 3, (3, 1), 1, 0), rs("b", 1, (1, 0), 2, 1)],
            writes: vec![(name("a"), 2, "1".into())],
        },
        Case {
            what: "undo: the old ReplicaSet is new again with the next revision",
            d: deployment(3, "a", json!({})),
            rss: vec![rs("a", 0, (0, 0), 1, 0), rs("b", 3, (3, 3), 2, 1)],
            writes: vec![(name("a"), 1, "3".into())],
        },
        Case {
            what: "Recreate: old ones to zero first",
            d: deployment(3, "b", json!({"strategy": {"type": "Recreate"}})),
            rss: vec![rs("a", 3, (3, 3), 1, 0)],
            writes: vec![(name("b"), 0, "2".into()), (name("a"), 0, "1".into())],
        },
        Case {
            what: "Recreate: the new one once the old Pods are gone",
            d: deployment(3, "b", json!({"strategy": {"type": "Recreate"}})),
            rss: vec![rs("a", 0, (0, 0), 1, 0), rs("b", 0, (0, 0), 2, 1)],
            writes: vec![(name("b"), 3, "2".into())],
        },
        Case {
            what: "paused: no new ReplicaSet",
            d: deployment(3, "b", json!({"paused": true})),
            rss: vec![rs("a", 3, (3, 3), 1, 0)],
            writes: vec![],
        },
    ];
    for c in cases {
        let refs: Vec<&ReplicaSet> = c.rss.iter().collect();
        let p = deployment::plan(&c.d, &refs, now());
        assert_eq!(writes(&p), c.writes, "{}", c.what);
    }
}

#[test]
fn a_new_replicaset_is_shaped_like_kubes() {
    let d = deployment(3, "a", json!({}));
    let p = deployment::plan(&d, &[], now());
    let hash = template_hash(&template("a"), None);
    let got = serde_json::to_value(p.create.unwrap()).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": format!("web-{hash}"), "namespace": "t1",
                "labels": {"app": "web", POD_TEMPLATE_HASH: hash},
                "annotations": {REVISION: "1", DESIRED_REPLICAS: "3", MAX_REPLICAS: "4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": "d-uid", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: hash}},
                "template": {"metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: hash}},
                    "spec": {"containers": [{"name": "web", "image": "a"}]}}}})
    );
    assert_eq!(p.revision, "1");
}

#[test]
fn deployment_status_tells_kubectl_rollout_status_when_done() {
    // (replicas, rss, updated, available, Available, Progressing reason)
    let cases = vec![
        (
            3,
            vec![rs("a", 3, (3, 3), 1, 0)],
            3,
            3,
            "True",
            "NewReplicaSetAvailable",
        ),
        (
            3,
            vec![rs("a", 3, (3, 1), 1, 0)],
            3,
            1,
            "False",
            "ReplicaSetUpdated",
        ),
        (
            3,
            vec![rs("b", 2, (2, 2), 1, 0), rs("a", 2, (2, 2), 2, 1)],
            2,
            4,
            "True",
            "ReplicaSetUpdated",
        ),
    ];
    for (replicas, rss, updated, available, av, progressing) in cases {
        let d = deployment(replicas, "a", json!({}));
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let s = deployment::plan(&d, &refs, now()).status;
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.updated_replicas, Some(updated));
        assert_eq!(s.available_replicas, Some(available));
        let conds: Vec<(String, String, String)> = s
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason.unwrap()))
            .collect();
        assert_eq!(
            conds,
            vec![
                (
                    "Available".into(),
                    av.into(),
                    if av == "True" {
                        "MinimumReplicasAvailable".into()
                    } else {
                        "MinimumReplicasUnavailable".into()
                    }
                ),
                ("Progressing".into(), "True".into(), progressing.into()),
            ]
        );
    }
}

#[test]
fn a_rollout_without_progress_past_its_deadline_times_out() {
    let d = |last_update: &str, counts: (i32, i32, i32, i32)| {
        let mut d = deployment(3, "b", json!({"progressDeadlineSeconds": 60}));
        d.status = Some(
            serde_json::from_value(json!({"replicas": counts.0, "updatedReplicas": counts.1,
                "readyReplicas": counts.2, "availableReplicas": counts.3,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                    "message": format!("ReplicaSet \"{}\" is progressing.", name("b")),
                    "lastUpdateTime": last_update, "lastTransitionTime": last_update}]}))
            .unwrap(),
        );
        d
    };
    // Stuck: the new Pod never becomes available (old 3 available, new 1 not).
    let rss = [rs("a", 3, (3, 3), 1, 0), rs("b", 1, (1, 0), 2, 1)];
    let refs: Vec<&ReplicaSet> = rss.iter().collect();
    let progressing = |d: &Deployment| {
        let s = deployment::plan(d, &refs, now()).status;
        let c = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        (c.status, c.reason.unwrap())
    };
    let stuck = (4, 1, 3, 3);
    assert_eq!(
        progressing(&d("2026-11-28T11:58:00Z", stuck)),
        ("False".to_string(), "ProgressDeadlineExceeded".to_string())
    );
    assert_eq!(
        progressing(&d("2026-11-28T11:59:30Z", stuck)),
        ("True".to_string(), "ReplicaSetUpdated".to_string())
    );
    // Counts moved since the last status: progress, whatever the time.
    assert_eq!(
        progressing(&d("2026-11-28T11:58:00Z", (4, 1, 2, 2))),
        ("True".to_string(), "ReplicaSetUpdated".to_string())
    );
}

#[test]
fn history_beyond_the_limit_goes_oldest_first() {
    let d = deployment(3, "d", json!({"revisionHistoryLimit": 1}));
    let rss = [
        rs("a", 0, (0, 0), 1, 0),
        rs("b", 0, (0, 0), 2, 1),
        rs("c", 0, (0, 0), 3, 2),
        rs("d", 3, (3, 3), 4, 3),
    ];
    let refs: Vec<&ReplicaSet> = rss.iter().collect();
    assert_eq!(
        deployment::plan(&d, &refs, now()).delete,
        vec![name("a"), name("b")]
    );
}

fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, minute: u32) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "t1", "labels": {"app": "web"},
            "creationTimestamp": format!("2026-11-28T11:{minute:02}:00Z")},
        "spec": {"containers": [{"name": "web"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
            "lastTransitionTime": "2026-11-28T11:59:50Z"}]}});
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    serde_json::from_value(v).unwrap()
}

fn replicaset(replicas: i32, min_ready: i32) -> ReplicaSet {
    serde_json::from_value(json!({"metadata": {"name": "rs", "namespace": "t1", "uid": "rs-uid", "generation": 4},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "web", "image": "x"}]}}}}))
    .unwrap()
}

#[test]
fn replicaset_creates_deletes_and_counts() {
    let pods = [
        pod("ready-old", Some("n1"), "Running", true, 1),
        pod("ready-new", Some("n2"), "Running", true, 5),
        pod("not-ready", Some("n1"), "Running", false, 2),
        pod("pending", Some("n2"), "Pending", false, 3),
        pod("unbound", None, "Pending", false, 4),
        pod("done", Some("n1"), "Succeeded", false, 0),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    // (replicas, minReadySeconds, creates, deletes)
    let cases: Vec<(i32, i32, usize, Vec<&str>)> = vec![
        (5, 0, 0, vec![]),
        (7, 0, 2, vec![]),
        (3, 0, 0, vec!["unbound", "pending"]),
        (
            1,
            0,
            0,
            vec!["unbound", "pending", "not-ready", "ready-new"],
        ),
        (
            0,
            0,
            0,
            vec!["unbound", "pending", "not-ready", "ready-new", "ready-old"],
        ),
    ];
    for (replicas, min_ready, creates, deletes) in cases {
        let p = replicaset::plan(&replicaset(replicas, min_ready), &refs, now());
        assert_eq!(p.create.len(), creates, "x{replicas}");
        assert_eq!(p.delete, deletes, "x{replicas}");
    }
    let p = replicaset::plan(&replicaset(7, 0), &refs, now());
    assert_eq!(
        serde_json::to_value(&p.create[0]).unwrap(),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "rs-", "namespace": "t1", "labels": {"app": "web"}, "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid",
                "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "web", "image": "x"}]}})
    );
    // Finished Pods do not count; availability waits minReadySeconds.
    let counts = |min_ready| {
        let s = replicaset::plan(&replicaset(5, min_ready), &refs, now()).status;
        (
            s.replicas,
            s.ready_replicas,
            s.available_replicas,
            s.observed_generation,
        )
    };
    assert_eq!(counts(0), (5, Some(2), Some(2), Some(4)));
    assert_eq!(counts(5), (5, Some(2), Some(2), Some(4)));
    assert_eq!(counts(60), (5, Some(2), Some(0), Some(4)));
}
