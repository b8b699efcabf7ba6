//! One DaemonSet, as kube-controller-manager's daemonset controller runs it: one Pod per
//! eligible node (its labels match the template's `nodeSelector` and required node
//! affinity, its `NoSchedule`/`NoExecute` taints are tolerated; a cordon or a node that is
//! not ready does not keep a DaemonSet Pod away), Pods on nodes that are not eligible or
//! gone deleted, and a changed template rolled out node by node: `RollingUpdate` deletes
//! old Pods within `maxUnavailable` (unavailable old Pods at once), and a node gets its new
//! Pod once the old one is gone (no surge: deploy/agent.yaml's `cni` container removes the
//! plugin files when it stops). `OnDelete` replaces only Pods deleted by hand.
//!
//! Pods are bound by `spec.nodeName` at creation (kube's controller binds through node
//! affinity and the scheduler; the outcome is the same node). The template's hash is the
//! Pods' `controller-revision-hash` label (kube keeps it in a ControllerRevision).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{owner_ref, pod_active, pod_available, pod_ready, template_hash};
use crate::scheduler::{affinity_matches, tolerates};

/// The label holding the template hash a Pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// What to do for one DaemonSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create (named by `generateName`, bound by `spec.nodeName`).
    pub create: Vec<Pod>,
    /// Names of Pods to delete.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

/// The hash of the DaemonSet's current template.
pub fn current_hash(ds: &DaemonSet) -> String {
    let spec = ds.spec.clone().unwrap_or_default();
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    template_hash(
        &template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    )
}

/// Whether a Pod of `ds` belongs on `node`: selector, required affinity and taints.
pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.clone().unwrap_or_default();
    let probe = Pod {
        spec: spec.template.spec.clone(),
        ..Default::default()
    };
    if !affinity_matches(&probe, node) {
        return false;
    }
    let tolerations = probe
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        // The node lifecycle taints (not-ready, unreachable, unschedulable) never keep a
        // DaemonSet Pod away: kube adds tolerations for them to every DaemonSet Pod.
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// `maxUnavailable` of a RollingUpdate against `desired` nodes (percentages round down,
/// at least 1 as kube keeps it); `None` for `OnDelete`.
fn max_unavailable(ds: &DaemonSet, desired: usize) -> Option<usize> {
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.clone())
        .unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return None;
    }
    let v = strategy
        .rolling_update
        .and_then(|r| r.max_unavailable)
        .unwrap_or(IntOrString::Int(1));
    let n = match v {
        IntOrString::Int(i) => usize::try_from(i).unwrap_or(0),
        IntOrString::String(s) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            desired * pct / 100
        }
    };
    Some(n.max(1))
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .map(String::as_str)
}

/// A new Pod of `ds` for `node`.
fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.clone().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![owner_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Plans `ds` over `nodes`, given the Pods it controls (`owned`, including ones just
/// created that a cache may not show yet).
pub fn plan(ds: &DaemonSet, nodes: &[&Node], owned: &[&Pod], now: jiff::Timestamp) -> Plan {
    let hash = current_hash(ds);
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let wanted: BTreeSet<String> = nodes
        .iter()
        .filter(|n| eligible(ds, n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    // Active Pods per node, and nodes where one is still terminating.
    let mut on: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut terminating: BTreeSet<String> = BTreeSet::new();
    for p in owned {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() {
            terminating.insert(node);
        } else if pod_active(p) {
            on.entry(node).or_default().push(p);
        }
    }
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut misscheduled = 0;
    // The Pod each wanted node keeps: the current template's first, then ready, then oldest.
    let mut kept: BTreeMap<&str, &Pod> = BTreeMap::new();
    for (node, pods) in &mut on {
        if !wanted.contains(node) {
            misscheduled += 1;
            delete.extend(pods.iter().map(|p| name(p)));
            continue;
        }
        pods.sort_by_key(|p| {
            (
                pod_hash(p) != Some(hash.as_str()),
                !pod_ready(p),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                name(p),
            )
        });
        kept.insert(node.as_str(), pods[0]);
        delete.extend(pods[1..].iter().map(|p| name(p)));
    }
    let deleting = ds.metadata.deletion_timestamp.is_some();
    for node in &wanted {
        if !kept.contains_key(node.as_str()) && !terminating.contains(node) && !deleting {
            create.push(new_pod(ds, node, &hash));
        }
    }
    // The rollout: old Pods that are not available go at once, available ones within the
    // budget of maxUnavailable (counting nodes without an available Pod).
    let desired = wanted.len();
    if let Some(max) = max_unavailable(ds, desired) {
        let available = kept
            .values()
            .filter(|p| pod_available(p, min_ready, now))
            .count();
        let mut budget = max.saturating_sub(desired - available);
        for p in kept.values().filter(|p| pod_hash(p) != Some(hash.as_str())) {
            if !pod_available(p, min_ready, now) {
                delete.push(name(p));
            } else if budget > 0 {
                budget -= 1;
                delete.push(name(p));
            }
        }
    }
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(kept.values().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let available = count(&|p| pod_available(p, min_ready, now));
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: count(&|_| true),
        number_misscheduled: misscheduled,
        number_ready: count(&pod_ready),
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        updated_number_scheduled: Some(count(&|p| pod_hash(p) == Some(hash.as_str()))),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: None,
    };
    Plan {
        create,
        delete,
        status,
    }
}
