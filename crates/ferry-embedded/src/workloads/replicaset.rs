//! One ReplicaSet: how many Pods to create from its template, which to delete (the least
//! useful first, as kube-controller-manager ranks them), and its status.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{owner_ref, pod_active, pod_available, pod_ready};

/// What to do for one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create (named by `generateName`).
    pub create: Vec<Pod>,
    /// Names of Pods to delete.
    pub delete: Vec<String>,
    pub status: ReplicaSetStatus,
}

/// Plans `rs` given the Pods it controls (`owned`: its namespace's Pods whose controller
/// reference is `rs`, including ones just created that a cache may not show yet).
pub fn plan(rs: &ReplicaSet, owned: &[&Pod], now: jiff::Timestamp) -> Plan {
    let spec = rs.spec.clone().unwrap_or_default();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or_default();
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| pod_active(p)).collect();
    let mut create = Vec::new();
    let mut delete = Vec::new();
    if active.len() < want && rs.metadata.deletion_timestamp.is_none() {
        let template = spec.template.clone().unwrap_or_default();
        let tmeta = template.metadata.clone().unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", rs.metadata.name.clone().unwrap_or_default())),
                namespace: rs.metadata.namespace.clone(),
                labels: tmeta.labels,
                annotations: tmeta.annotations,
                owner_references: Some(vec![owner_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        create = vec![pod; want - active.len()];
    } else if active.len() > want {
        // The least useful first: unbound, then pending, then not ready, then the most
        // restarted, then the newest (kube-controller-manager's ActivePods order).
        active.sort_by_key(|p| {
            let bound = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Pending") | None => 0,
                Some("Running") => 2,
                _ => 1,
            };
            let restarts: i32 = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (
                bound,
                phase,
                pod_ready(p),
                std::cmp::Reverse(restarts),
                std::cmp::Reverse(created),
                p.metadata.name.clone(),
            )
        });
        delete = active[..active.len() - want]
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
    }
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(owned.iter().filter(|p| pod_active(p) && f(p)).count()).unwrap_or(i32::MAX)
    };
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let status = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&pod_ready)),
        available_replicas: Some(count(&|p| pod_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        ..Default::default()
    };
    Plan {
        create,
        delete,
        status,
    }
}
