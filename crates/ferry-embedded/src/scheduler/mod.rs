//! Where a Pod runs, as kube-scheduler decides it for the filters Ferry's lab nodes can
//! tell apart: the node must be Ready (its Ferry agent Lease fresh), not cordoned
//! (`spec.unschedulable`), its `NoSchedule`/`NoExecute` taints tolerated, and its labels
//! must match the Pod's `nodeSelector` and required node affinity. Among the nodes that
//! pass, replicas of one owner spread: fewest Pods of the same controller, then fewest Pods,
//! then the node name. Pure: [`schedule`] takes the Pod, the nodes and the Pods already
//! placed, and returns a node or why none fits, worded as kube-scheduler words it
//! ("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.").

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

/// The scheduler name Pods get by default; Pods naming another are left to it.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub node: &'a Node,
    /// Its agent Lease is fresh.
    pub ready: bool,
}

/// A Pod that fits no node, with the count of nodes per reason (each node counts once,
/// under the first filter it fails, as kube-scheduler reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )
    }
}

/// Reasons, in kube-scheduler's words.
pub const NOT_READY: &str = "node(s) were not ready";
pub const CORDONED: &str = "node(s) were unschedulable";
pub const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether this scheduler places `pod`: not bound, not being deleted, not finished, and
/// meant for the default scheduler.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The uid of a Pod's controller (ReplicaSet, Job, ...), if it has one.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Places `pod` on one of `nodes`, given the Pods already bound (`placed`: any Pod whose
/// `spec.nodeName` is set; finished ones do not count).
pub fn schedule(
    pod: &Pod,
    nodes: &[Candidate<'_>],
    placed: &[&Pod],
) -> Result<String, Unschedulable> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut fits: Vec<&str> = Vec::new();
    for c in nodes {
        match filter(pod, c) {
            Ok(()) => fits.push(c.node.metadata.name.as_deref().unwrap_or_default()),
            Err(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    if fits.is_empty() {
        return Err(Unschedulable {
            nodes: nodes.len(),
            reasons,
        });
    }
    let owner = controller_uid(pod);
    let mut load: BTreeMap<&str, (usize, usize)> = fits.iter().map(|n| (*n, (0, 0))).collect();
    for p in placed {
        if matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if let Some((same, all)) = load.get_mut(n) {
            *all += 1;
            if owner.is_some() && controller_uid(p) == owner {
                *same += 1;
            }
        }
    }
    load.into_iter()
        .min_by_key(|(name, (same, all))| (*same, *all, *name))
        .map(|(n, _)| n.to_string())
        .ok_or(Unschedulable {
            nodes: nodes.len(),
            reasons: BTreeMap::new(),
        })
}

/// The first filter `c` fails for `pod`, as kube-scheduler's message words it.
fn filter(pod: &Pod, c: &Candidate<'_>) -> Result<(), String> {
    let node = c.node;
    let spec = node.spec.as_ref();
    if !c.ready {
        return Err(NOT_READY.into());
    }
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if spec.and_then(|s| s.unschedulable) == Some(true)
        && !tolerations.iter().any(|t| {
            tolerates(
                t,
                &Taint {
                    key: "node.kubernetes.io/unschedulable".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                },
            )
        })
    {
        return Err(CORDONED.into());
    }
    for t in spec.and_then(|s| s.taints.as_deref()).unwrap_or_default() {
        if matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|tol| tolerates(tol, t))
        {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ));
        }
    }
    if !affinity_matches(pod, node) {
        return Err(AFFINITY.into());
    }
    Ok(())
}

/// Whether a toleration tolerates a taint (key, operator Exists/Equal, value, effect).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    match tol.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && tol.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// `nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution` both hold.
pub fn affinity_matches(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = &pod.spec else { return true };
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let name = node.metadata.name.clone().unwrap_or_default();
    // Terms are ORed; the requirements of one term are ANDed; an empty term matches nothing.
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name.as_str())))
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}
