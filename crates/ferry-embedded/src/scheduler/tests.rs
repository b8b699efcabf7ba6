use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::*;

fn node(name: &str, labels: Value, spec: Value) -> Node {
    let mut l = labels;
    l["kubernetes.io/hostname"] = json!(name);
    serde_json::from_value(json!({"metadata": {"name": name, "labels": l}, "spec": spec})).unwrap()
}

fn pod(spec: Value) -> Pod {
    let mut s = spec;
    s["containers"] = json!([{"name": "c", "image": "x"}]);
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "t1"}, "spec": s}))
        .unwrap()
}

/// A placed Pod on `node`, owned by `owner` if given.
fn placed(name: &str, node: &str, owner: Option<&str>, phase: &str) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "t1"},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]}, "status": {"phase": phase}});
    if let Some(o) = owner {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "rs", "uid": o, "controller": true}]);
    }
    serde_json::from_value(v).unwrap()
}

fn owned(uid: &str) -> Pod {
    let mut p = pod(json!({}));
    p.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "rs", "uid": uid, "controller": true}))
        .unwrap(),
    ]);
    p
}

fn unschedulable(nodes: usize, reasons: &[(&str, usize)]) -> Result<String, Unschedulable> {
    Err(Unschedulable {
        nodes,
        reasons: reasons.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
    })
}

#[test]
fn filters_and_their_reasons() {
    let n1 = node("node1", json!({"disk": "ssd", "zone": "a"}), json!({}));
    let n2 = node("node2", json!({"disk": "hdd", "zone": "b"}), json!({}));
    let tainted = node(
        "node3",
        json!({}),
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
    );
    let soft = node(
        "node4",
        json!({}),
        json!({"taints": [{"key": "meh", "effect": "PreferNoSchedule"}]}),
    );
    let cordoned = node("node5", json!({}), json!({"unschedulable": true}));
    let ready = |n: &'static Node| Candidate {
        node: n,
        ready: true,
    };
    let leak = |n: Node| -> &'static Node { Box::leak(Box::new(n)) };
    let (n1, n2, tainted, soft, cordoned) = (
        leak(n1),
        leak(n2),
        leak(tainted),
        leak(soft),
        leak(cordoned),
    );
    let affinity = |exprs: Value| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}})
    };
    type Case<'a> = (
        &'a str,
        Pod,
        Vec<Candidate<'a>>,
        Result<String, Unschedulable>,
    );
    let cases: Vec<Case> = vec![
        ("no nodes", pod(json!({})), vec![], unschedulable(0, &[])),
        (
            "nodeSelector picks the labelled node",
            pod(json!({"nodeSelector": {"disk": "hdd"}})),
            vec![ready(n1), ready(n2)],
            Ok("node2".into()),
        ),
        (
            "nodeSelector matching nothing: kube-scheduler's message",
            pod(json!({"nodeSelector": {"disk": "nvme"}})),
            vec![ready(n1), ready(n2)],
            unschedulable(2, &[(AFFINITY, 2)]),
        ),
        (
            "affinity In",
            pod(affinity(
                json!([{"key": "zone", "operator": "In", "values": ["b", "c"]}]),
            )),
            vec![ready(n1), ready(n2)],
            Ok("node2".into()),
        ),
        (
            "affinity NotIn",
            pod(affinity(
                json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}]),
            )),
            vec![ready(n1), ready(n2)],
            Ok("node2".into()),
        ),
        (
            "affinity Exists on a label only some have",
            pod(affinity(json!([{"key": "disk", "operator": "Exists"}]))),
            vec![ready(tainted), ready(n1)],
            Ok("node1".into()),
        ),
        (
            "affinity DoesNotExist",
            pod(affinity(
                json!([{"key": "disk", "operator": "DoesNotExist"}]),
            )),
            vec![ready(n1), ready(soft)],
            Ok("node4".into()),
        ),
        (
            "requirements of one term are ANDed",
            pod(affinity(
                json!([{"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "disk", "operator": "In", "values": ["hdd"]}]),
            )),
            vec![ready(n1), ready(n2)],
            unschedulable(2, &[(AFFINITY, 2)]),
        ),
        (
            "terms are ORed",
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node2"]}]}]}}}}),
            ),
            vec![ready(n1), ready(n2)],
            Ok("node2".into()),
        ),
        (
            "an untolerated NoSchedule taint",
            pod(json!({})),
            vec![ready(tainted)],
            unschedulable(1, &[("node(s) had untolerated taint {dedicated: gpu}", 1)]),
        ),
        (
            "tolerated by Equal",
            pod(
                json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
            ),
            vec![ready(tainted)],
            Ok("node3".into()),
        ),
        (
            "tolerated by Exists without a key",
            pod(json!({"tolerations": [{"operator": "Exists"}]})),
            vec![ready(tainted)],
            Ok("node3".into()),
        ),
        (
            "a toleration for another effect does not count",
            pod(
                json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}),
            ),
            vec![ready(tainted)],
            unschedulable(1, &[("node(s) had untolerated taint {dedicated: gpu}", 1)]),
        ),
        (
            "PreferNoSchedule does not filter",
            pod(json!({})),
            vec![ready(soft)],
            Ok("node4".into()),
        ),
        (
            "a node whose agent lease lapsed is not ready",
            pod(json!({})),
            vec![
                Candidate {
                    node: n1,
                    ready: false,
                },
                ready(n2),
            ],
            Ok("node2".into()),
        ),
        (
            "cordoned, not ready and mismatched: one reason per node, sorted",
            pod(json!({"nodeSelector": {"disk": "ssd"}})),
            vec![
                ready(cordoned),
                Candidate {
                    node: n1,
                    ready: false,
                },
                ready(n2),
            ],
            unschedulable(3, &[(AFFINITY, 1), (CORDONED, 1), (NOT_READY, 1)]),
        ),
    ];
    for (what, p, nodes, want) in cases {
        assert_eq!(schedule(&p, &nodes, &[]), want, "{what}");
    }
}

#[test]
fn replicas_spread_by_owner_then_by_load() {
    let nodes: Vec<Node> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| node(n, json!({}), json!({})))
        .collect();
    let c: Vec<Candidate> = nodes
        .iter()
        .map(|n| Candidate {
            node: n,
            ready: true,
        })
        .collect();
    let cases: Vec<(&str, Pod, Vec<Pod>, &str)> = vec![
        ("empty cluster: first by name", owned("a"), vec![], "node1"),
        (
            "fewest pods of the same owner wins over fewest pods",
            owned("a"),
            vec![
                placed("a1", "node1", Some("a"), "Running"),
                placed("x1", "node2", Some("x"), "Running"),
                placed("x2", "node2", Some("x"), "Running"),
                placed("a2", "node3", Some("a"), "Running"),
            ],
            "node2",
        ),
        (
            "then fewest pods",
            owned("a"),
            vec![
                placed("x1", "node1", None, "Running"),
                placed("x2", "node2", None, "Running"),
                placed("x3", "node1", None, "Running"),
            ],
            "node3",
        ),
        (
            "finished pods do not count",
            owned("a"),
            vec![
                placed("a1", "node1", Some("a"), "Succeeded"),
                placed("a2", "node2", Some("a"), "Running"),
                placed("a3", "node3", Some("a"), "Failed"),
            ],
            "node1",
        ),
        (
            "a pod without owner spreads by load only",
            pod(json!({})),
            vec![
                placed("a1", "node1", Some("a"), "Running"),
                placed("a2", "node2", Some("a"), "Running"),
            ],
            "node3",
        ),
    ];
    for (what, p, placed, want) in cases {
        let refs: Vec<&Pod> = placed.iter().collect();
        assert_eq!(schedule(&p, &c, &refs), Ok(want.to_string()), "{what}");
    }
}

#[test]
fn messages_read_like_kube_scheduler() {
    let u = Unschedulable {
        nodes: 2,
        reasons: [(AFFINITY.to_string(), 2)].into(),
    };
    assert_eq!(
        u.to_string(),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    let u = Unschedulable {
        nodes: 3,
        reasons: [
            (AFFINITY.to_string(), 1),
            (
                "node(s) had untolerated taint {dedicated: gpu}".to_string(),
                2,
            ),
        ]
        .into(),
    };
    assert_eq!(
        u.to_string(),
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) had untolerated taint {dedicated: gpu}."
    );
    assert_eq!(
        Unschedulable {
            nodes: 0,
            reasons: Default::default()
        }
        .to_string(),
        "no nodes available to schedule pods"
    );
}

#[test]
fn who_is_scheduled() {
    let cases = [
        (json!({"spec": {"containers": []}}), true),
        (json!({"spec": {"nodeName": "n", "containers": []}}), false),
        (
            json!({"spec": {"schedulerName": "other", "containers": []}}),
            false,
        ),
        (
            json!({"spec": {"schedulerName": "default-scheduler", "containers": []}}),
            true,
        ),
        (
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": []}}),
            false,
        ),
        (
            json!({"spec": {"containers": []}, "status": {"phase": "Failed"}}),
            false,
        ),
    ];
    for (v, want) in cases {
        let p: Pod = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(wants_scheduling(&p), want, "{v}");
    }
}
