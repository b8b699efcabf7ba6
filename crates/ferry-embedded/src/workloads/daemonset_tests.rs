use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::daemonset::{REVISION_HASH, current_hash, plan};

fn now() -> jiff::Timestamp {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

/// `agent`'s DaemonSet for `image`, with `extra` merged into its spec.
fn ds(image: &str, extra: Value) -> DaemonSet {
    let mut v = json!({"metadata": {"name": "agent", "namespace": "sys", "uid": "ds-uid", "generation": 3},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": image}]}}}});
    if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            if k == "podSpec" {
                if let (Some(ps), Some(xs)) = (
                    s["template"]["spec"].as_object_mut(),
                    x.as_object().cloned(),
                ) {
                    ps.extend(xs);
                }
            } else {
                s.insert(k.clone(), x.clone());
            }
        }
    }
    serde_json::from_value(v).unwrap()
}

fn node(name: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
    )
    .unwrap()
}

/// A Pod of `agent` on `node`, made from the template of `image`, ready or not.
fn pod(name: &str, node: &str, of: &DaemonSet, ready: bool, deleting: bool) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "sys",
            "creationTimestamp": "2026-11-28T11:00:00Z",
            "labels": {"app": "agent", REVISION_HASH: current_hash(of)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "a"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-11-28T11:59:00Z");
    }
    serde_json::from_value(v).unwrap()
}

/// What a plan does, as comparable values: the nodes Pods are created on, the Pods
/// deleted, and (desired, current, ready, updated, available, misscheduled).
type Outcome = (Vec<String>, Vec<String>, (i32, i32, i32, i32, i32, i32));

fn outcome(p: &super::daemonset::Plan) -> Outcome {
    let mut created: Vec<String> = p
        .create
        .iter()
        .map(|c| c.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    created.sort();
    let mut deleted = p.delete.clone();
    deleted.sort();
    let s: &DaemonSetStatus = &p.status;
    (
        created,
        deleted,
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap(),
            s.number_available.unwrap(),
            s.number_misscheduled,
        ),
    )
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn one_pod_per_eligible_node_rolled_within_max_unavailable() {
    let cur = ds("v2", json!({}));
    let old = ds("v1", json!({}));
    let plain = |n: &str| node(n, json!({}), json!([]));
    let tainted = node(
        "tainted",
        json!({}),
        json!([{"key": "dedicated", "value": "gw", "effect": "NoSchedule"}]),
    );
    let lifecycle = node(
        "notready",
        json!({}),
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    );
    let linux = node("linux", json!({"os": "linux"}), json!([]));
    let selecting = ds("v2", json!({"podSpec": {"nodeSelector": {"os": "linux"}}}));
    let tolerating = ds(
        "v2",
        json!({"podSpec": {"tolerations": [{"operator": "Exists"}]}}),
    );
    let on_delete = ds("v2", json!({"updateStrategy": {"type": "OnDelete"}}));
    let two = ds(
        "v2",
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}),
    );
    type Case<'a> = (&'a str, &'a DaemonSet, Vec<Node>, Vec<Pod>, Outcome);
    let cases: Vec<Case> = vec![
        (
            "a Pod for every node, none yet",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![],
            (v(&["n1", "n2"]), v(&[]), (2, 0, 0, 0, 0, 0)),
        ),
        (
            "ready Pods everywhere: nothing to do",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![
                pod("p1", "n1", &cur, true, false),
                pod("p2", "n2", &cur, false, false),
            ],
            (v(&[]), v(&[]), (2, 2, 1, 2, 1, 0)),
        ),
        (
            "untolerated taint keeps it off; lifecycle taints do not",
            &cur,
            vec![plain("n1"), tainted.clone(), lifecycle.clone()],
            vec![],
            (v(&["n1", "notready"]), v(&[]), (2, 0, 0, 0, 0, 0)),
        ),
        (
            "operator Exists tolerates every taint (deploy/agent.yaml)",
            &tolerating,
            vec![plain("n1"), tainted],
            vec![],
            (v(&["n1", "tainted"]), v(&[]), (2, 0, 0, 0, 0, 0)),
        ),
        (
            "nodeSelector: only matching nodes; a Pod elsewhere is misscheduled",
            &selecting,
            vec![plain("n1"), linux],
            vec![pod("p1", "n1", &selecting, true, false)],
            (v(&["linux"]), v(&["p1"]), (1, 0, 0, 0, 0, 1)),
        ),
        (
            "a Pod on a node that is gone is deleted",
            &cur,
            vec![plain("n1")],
            vec![
                pod("p1", "n1", &cur, true, false),
                pod("px", "gone", &cur, true, false),
            ],
            (v(&[]), v(&["px"]), (1, 1, 1, 1, 1, 1)),
        ),
        (
            "two Pods on one node: the extra goes",
            &cur,
            vec![plain("n1")],
            vec![
                pod("p1", "n1", &cur, true, false),
                pod("p2", "n1", &cur, false, false),
            ],
            (v(&[]), v(&["p2"]), (1, 1, 1, 1, 1, 0)),
        ),
        (
            "template changed: one old ready Pod at a time (maxUnavailable 1)",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![
                pod("p1", "n1", &old, true, false),
                pod("p2", "n2", &old, true, false),
            ],
            (v(&[]), v(&["p1"]), (2, 2, 2, 0, 2, 0)),
        ),
        (
            "no new Pod while the old one terminates; no more deletes while one is down",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![
                pod("p1", "n1", &old, true, true),
                pod("p2", "n2", &old, true, false),
            ],
            (v(&[]), v(&[]), (2, 1, 1, 0, 1, 0)),
        ),
        (
            "the old Pod gone: its node gets the new template",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![pod("p2", "n2", &old, true, false)],
            (v(&["n1"]), v(&[]), (2, 1, 1, 0, 1, 0)),
        ),
        (
            "an old Pod that is not ready is replaced at once",
            &cur,
            vec![plain("n1"), plain("n2")],
            vec![
                pod("p1", "n1", &cur, false, false),
                pod("p2", "n2", &old, false, false),
            ],
            (v(&[]), v(&["p2"]), (2, 2, 0, 1, 0, 0)),
        ),
        (
            "maxUnavailable 50% of four nodes: two at once",
            &two,
            vec![plain("a"), plain("b"), plain("c"), plain("d")],
            vec![
                pod("pa", "a", &old, true, false),
                pod("pb", "b", &old, true, false),
                pod("pc", "c", &old, true, false),
                pod("pd", "d", &old, true, false),
            ],
            (v(&[]), v(&["pa", "pb"]), (4, 4, 4, 0, 4, 0)),
        ),
        (
            "OnDelete: old Pods stay",
            &on_delete,
            vec![plain("n1")],
            vec![pod("p1", "n1", &old, true, false)],
            (v(&[]), v(&[]), (1, 1, 1, 0, 1, 0)),
        ),
    ];
    for (name, d, nodes, pods, want) in cases {
        let nodes: Vec<&Node> = nodes.iter().collect();
        let pods: Vec<&Pod> = pods.iter().collect();
        assert_eq!(outcome(&plan(d, &nodes, &pods, now())), want, "{name}");
    }
}

#[test]
fn new_pods_carry_the_template_the_hash_the_owner_and_the_node() {
    let d = ds("v2", json!({"podSpec": {"hostNetwork": true}}));
    let n = node("n1", json!({}), json!([]));
    let p = plan(&d, &[&n], &[], now());
    let got = serde_json::to_value(&p.create).unwrap();
    assert_eq!(
        got,
        json!([{"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "agent-", "namespace": "sys",
            "labels": {"app": "agent", REVISION_HASH: current_hash(&d)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                "uid": "ds-uid", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "a", "image": "v2"}]}}])
    );
    assert_eq!(p.status.observed_generation, Some(3));
    assert_ne!(current_hash(&d), current_hash(&ds("v1", json!({}))));
}
