//! Deployments and ReplicaSets, as kube-controller-manager's deployment and replicaset
//! controllers run them: a Deployment owns one ReplicaSet per pod template (named
//! `DEPLOYMENT-HASH`, labelled `pod-template-hash=HASH`, revision in
//! `deployment.kubernetes.io/revision`), rolls from the old ones to the new one within
//! `maxSurge`/`maxUnavailable` counting only available Pods (Ready, for `minReadySeconds`),
//! and a ReplicaSet keeps `replicas` active Pods from its template. Pure: [`replicaset::plan`]
//! and [`deployment::plan`] take objects and return what to write; the controller writes it.
//! DaemonSets ([`daemonset::plan`]): one Pod per eligible node, rolled node by node.

pub mod daemonset;
#[cfg(test)]
mod daemonset_tests;
pub mod deployment;
pub mod replicaset;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::Value;

/// The label a Deployment adds to its ReplicaSets' selector and template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's revision within its Deployment (and the Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's replicas when the ReplicaSet was last written.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge when the ReplicaSet was last written.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The field manager of every write.
pub const MANAGER: &str = "ferry-embedded";

/// The Pod's `Ready` condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready for at least `min_ready_seconds` (by the Ready condition's lastTransitionTime).
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    since.is_some_and(|t| t + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now)
}

/// Counts toward a ReplicaSet: not finished and not being deleted.
pub fn pod_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The controller owner reference of an object.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The controller owner reference an owner gives what it creates.
pub fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `labels` satisfy a label selector (an empty selector matches everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// The alphabet of kube's `rand.SafeEncodeString` (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-1a (32 bit) over the template's canonical
/// JSON (object keys sorted) and the collision count, its decimal digits mapped through
/// kube's safe alphabet, as kube's `ComputeHash` + `SafeEncodeString` shape it (the
/// digest differs: kube hashes Go's printed form).
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(canonical(template).as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE[usize::from(b) % SAFE.len()]))
        .collect()
}

/// JSON with object keys sorted at every level.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        v => v.to_string(),
    }
}
