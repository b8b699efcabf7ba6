//! The federation's decisions for one federated object, with no client in sight: which
//! targets placement resolves to (tenant isolation, clusters or cells), what each target's
//! Work must hold (template + overrides + annotation policy), which Works to leave
//! (outside the mask) or delete (outside placement), and the status fed back.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::types::{
    AnnotationPolicy, FederatedYusurService, FederatedYusurServiceStatus, LABEL_TENANT,
    LABEL_WORKSPACE, MemberCluster, MemberClusterStatus, TopologyType, Work, WorkOwner, WorkSpec,
};

/// Label on every Work naming the uid of the federated object it was rendered from.
pub const LABEL_OWNER_UID: &str = "federation.iaas.yusur.io/owner-uid";
/// Finalizer that keeps a deleted federated object until its Works are gone.
pub const FINALIZER: &str = "federation.iaas.yusur.io/works";
/// The federated kind this module plans.
pub const KIND: &str = "FederatedYusurService";

/// The federation namespace holding one member's Works (Karmada's `karmada-es-<cluster>`).
pub fn member_namespace(cluster: &str) -> String {
    format!("ferry-member-{cluster}")
}

/// The Work of one object at one target: `<object ns>.<target ns>.<name>`. Namespaces
/// hold no dots, so the name cannot collide across objects or cells. Past the 253
/// characters an object name may have, the tail is replaced by a stable FNV-1a hash of
/// the whole name.
pub fn work_name(object_namespace: &str, target_namespace: &str, name: &str) -> String {
    let full = format!("{object_namespace}.{target_namespace}.{name}");
    if full.len() <= 253 {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let keep = full
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= 253 - 17)
        .last()
        .unwrap_or(0);
    format!("{}-{hash:016x}", full[..keep].trim_end_matches(['.', '-']))
}

/// A tenant and workspace: a member is eligible for an object when both are equal
/// (absent labels included).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tenancy {
    pub tenant: Option<String>,
    pub workspace: Option<String>,
}

impl Tenancy {
    pub fn of(labels: &BTreeMap<String, String>) -> Tenancy {
        Tenancy {
            tenant: labels.get(LABEL_TENANT).cloned(),
            workspace: labels.get(LABEL_WORKSPACE).cloned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "tenant {}, workspace {}",
            self.tenant.as_deref().unwrap_or("<none>"),
            self.workspace.as_deref().unwrap_or("<none>")
        )
    }
}

/// What planning needs to know about a member cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub tenancy: Tenancy,
    /// `(cell name, namespace)`.
    pub cells: Vec<(String, String)>,
    /// Ready and heard from within the grace period.
    pub ready: bool,
}

impl Member {
    /// A member as of `now`: ready when its agent said so within `grace`.
    pub fn of(mc: &MemberCluster, now: Timestamp, grace: std::time::Duration) -> Member {
        Member {
            name: mc.name_any(),
            tenancy: Tenancy::of(mc.labels()),
            cells: mc
                .spec
                .cells
                .iter()
                .map(|c| (c.name.clone(), c.namespace.clone()))
                .collect(),
            ready: mc
                .status
                .as_ref()
                .is_some_and(|s| heartbeat_fresh(s, now, grace)),
        }
    }
}

fn heartbeat_fresh(s: &MemberClusterStatus, now: Timestamp, grace: std::time::Duration) -> bool {
    let ready = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let fresh = s.last_heartbeat_time.as_ref().is_some_and(|Time(t)| {
        now.as_millisecond() - t.as_millisecond() <= grace.as_millis() as i64
    });
    ready && fresh
}

/// The status the controller writes on a member whose heartbeats stopped (Ready turns
/// Unknown, as the node lifecycle controller does for Nodes); None when nothing changes.
pub fn stale_member_status(
    mc: &MemberCluster,
    now: Timestamp,
    grace: std::time::Duration,
) -> Option<MemberClusterStatus> {
    let s = mc.status.as_ref()?;
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.status != "True" || heartbeat_fresh(s, now, grace) {
        return None;
    }
    let mut next = s.clone();
    set_condition(
        &mut next.conditions,
        Condition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: "HeartbeatMissed".into(),
            message: format!(
                "no heartbeat from the member's join agent for more than {}s",
                grace.as_secs()
            ),
            last_transition_time: Time(now),
            observed_generation: None,
        },
    );
    Some(next)
}

/// A Work as the federation's cache holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingWork {
    pub namespace: String,
    pub name: String,
    pub work: Work,
}

/// Everything one object's plan depends on.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub object: &'a FederatedYusurService,
    pub members: &'a [Member],
    /// The Works labelled with the object's uid, wherever they are.
    pub works: &'a [ExistingWork],
    /// The annotation policy of the federated type.
    pub policy: &'a AnnotationPolicy,
    pub now: Timestamp,
}

/// A write to the federation API server.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkAction {
    /// Create or replace this Work (its spec).
    Put(Box<Work>),
    Delete {
        namespace: String,
        name: String,
    },
}

/// The outcome of planning one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub works: Vec<WorkAction>,
    pub status: FederatedYusurServiceStatus,
    /// The object is being deleted and no Work of its tenant is left: drop the finalizer.
    pub finalize: bool,
    /// Warnings worth an Event (new since the previous status), `(reason, message)`.
    pub events: Vec<(String, String)>,
}

/// One resolved target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    /// `c1` or `c1/cell-a`.
    id: String,
    cluster: String,
    /// Member namespace the object lands in.
    namespace: String,
    /// The cell name (cell topology).
    cell: Option<String>,
}

impl Target {
    /// Whether a mask or override entry names this target.
    fn named_by(&self, entry: &str) -> bool {
        entry == self.id || entry == self.cluster || self.cell.as_deref() == Some(entry)
    }
}

/// Resolves placement against the members of the object's tenancy; entries that cannot be
/// used come back as `(entry, why)`.
fn resolve(
    object: &FederatedYusurService,
    members: &[Member],
) -> (Vec<Target>, Vec<(String, String)>) {
    let tenancy = Tenancy::of(object.labels());
    let ns = object.namespace().unwrap_or_default();
    let eligible: BTreeMap<&str, &Member> = members
        .iter()
        .filter(|m| m.tenancy == tenancy)
        .map(|m| (m.name.as_str(), m))
        .collect();
    let not_ours = |name: &str| {
        format!(
            "{name} is not a member cluster of {}; nothing is written there",
            tenancy.describe()
        )
    };
    let mut targets: Vec<Target> = Vec::new();
    let mut rejected = Vec::new();
    let placement = &object.spec.placement;
    match placement.topology_type {
        TopologyType::Cluster => {
            for c in &placement.clusters {
                match eligible.get(c.as_str()) {
                    Some(_) => targets.push(Target {
                        id: c.clone(),
                        cluster: c.clone(),
                        namespace: ns.clone(),
                        cell: None,
                    }),
                    None => rejected.push((c.clone(), not_ours(c))),
                }
            }
        }
        TopologyType::Cell => {
            for entry in &placement.cells {
                let found: Vec<(&Member, &String)> = match entry.split_once('/') {
                    Some((cluster, cell)) => match eligible.get(cluster) {
                        None => {
                            rejected.push((entry.clone(), not_ours(cluster)));
                            continue;
                        }
                        Some(m) => m
                            .cells
                            .iter()
                            .filter(|(n, _)| n == cell)
                            .map(|(_, ns)| (*m, ns))
                            .collect(),
                    },
                    None => eligible
                        .values()
                        .flat_map(|m| {
                            m.cells
                                .iter()
                                .filter(|(n, _)| n == entry)
                                .map(move |(_, ns)| (*m, ns))
                        })
                        .collect(),
                };
                let cell = entry.rsplit('/').next().unwrap_or(entry).to_string();
                match found.as_slice() {
                    [(m, cell_ns)] => targets.push(Target {
                        id: format!("{}/{cell}", m.name),
                        cluster: m.name.clone(),
                        namespace: (*cell_ns).clone(),
                        cell: Some(cell),
                    }),
                    [] => rejected.push((
                        entry.clone(),
                        format!(
                            "no cell {entry} in the member clusters of {}",
                            tenancy.describe()
                        ),
                    )),
                    many => rejected.push((
                        entry.clone(),
                        format!(
                            "cell {entry} is held by {} clusters ({}); name it as cluster/cell",
                            many.len(),
                            many.iter()
                                .map(|(m, _)| m.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
        }
    }
    // One object per (cluster, namespace): a repeated entry is harmless, two cells mapped
    // to one namespace are not.
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut unique = Vec::new();
    for t in targets {
        match seen.get(&(t.cluster.clone(), t.namespace.clone())) {
            Some(id) if *id == t.id => {}
            Some(id) => rejected.push((
                t.id.clone(),
                format!(
                    "{} and {id} are the same namespace {} of {}",
                    t.id, t.namespace, t.cluster
                ),
            )),
            None => {
                seen.insert((t.cluster.clone(), t.namespace.clone()), t.id.clone());
                unique.push(t);
            }
        }
    }
    (unique, rejected)
}

/// The object a target must hold: the template, its spec annotations, the target's
/// overrides applied in order.
fn render(
    object: &FederatedYusurService,
    target: &Target,
    policy: &AnnotationPolicy,
) -> Result<Value, String> {
    let template = &object.spec.template;
    let mut manifest = json!({
        "apiVersion": "iaas.yusur.io/v1",
        "kind": "YusurService",
        "metadata": {
            "name": object.name_any(),
            "namespace": target.namespace,
            "labels": template.metadata.labels,
            "annotations": policy.spec_part(&template.metadata.annotations),
        },
        "spec": template.spec,
    });
    for o in object
        .spec
        .overrides
        .iter()
        .filter(|o| target.named_by(&o.target))
    {
        let ops: json_patch::Patch = serde_json::to_value(&o.patches)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("override for {}: {e}", o.target))?;
        json_patch::patch(&mut manifest, &ops)
            .map_err(|e| format!("override for {}: {e}", o.target))?;
    }
    let fixed = [
        ("/apiVersion", json!("iaas.yusur.io/v1")),
        ("/kind", json!("YusurService")),
        ("/metadata/name", json!(object.name_any())),
        ("/metadata/namespace", json!(target.namespace)),
    ];
    for (path, want) in fixed {
        if manifest.pointer(path) != Some(&want) {
            return Err(format!("overrides may not change {path}"));
        }
    }
    let errors = ferry_api::validate("YusurService", &manifest);
    if let Some(e) = errors.first() {
        return Err(format!(
            "the YusurService for {} is invalid: {}: {}",
            target.id, e.field, e.message
        ));
    }
    Ok(manifest)
}

/// Plans one federated object. See the module doc.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let object = input.object;
    let generation = object.metadata.generation.unwrap_or(0);
    let uid = object.uid().unwrap_or_default();
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let tenancy = Tenancy::of(object.labels());
    let eligible: BTreeSet<&str> = input
        .members
        .iter()
        .filter(|m| m.tenancy == tenancy)
        .map(|m| m.name.as_str())
        .collect();
    let ready: BTreeSet<&str> = input
        .members
        .iter()
        .filter(|m| m.ready)
        .map(|m| m.name.as_str())
        .collect();
    // Only Works in the tenancy's clusters are ever touched.
    let (ours, foreign): (Vec<&ExistingWork>, Vec<&ExistingWork>) = input
        .works
        .iter()
        .partition(|w| eligible.contains(w.work.spec.cluster.as_str()));
    let existing: BTreeMap<(&str, &str), &ExistingWork> = ours
        .iter()
        .map(|w| ((w.namespace.as_str(), w.name.as_str()), *w))
        .collect();

    let deleting = object.metadata.deletion_timestamp.is_some();
    let (targets, rejected) = if deleting {
        (Vec::new(), Vec::new())
    } else {
        resolve(object, input.members)
    };
    let in_scope = |t: &Target| match &object.spec.placement_mask {
        None => true,
        Some(mask) => mask.iter().any(|e| t.named_by(e)),
    };

    let mut actions = Vec::new();
    let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut rows = Vec::new();
    for t in &targets {
        let wns = member_namespace(&t.cluster);
        let wname = work_name(&ns, &t.namespace, &name);
        claimed.insert((wns.clone(), wname.clone()));
        let current = existing.get(&(wns.as_str(), wname.as_str())).copied();
        let mut desired_generation = current.map(|w| w.work.spec.generation);
        let mut failure = None;
        if in_scope(t) {
            match render(object, t, input.policy) {
                Ok(manifest) => {
                    let spec = WorkSpec {
                        cluster: t.cluster.clone(),
                        target: t.id.clone(),
                        owner: WorkOwner {
                            kind: KIND.into(),
                            namespace: ns.clone(),
                            name: name.clone(),
                            uid: uid.clone(),
                        },
                        generation,
                        annotation_policy: input.policy.clone(),
                        manifest,
                    };
                    desired_generation = Some(generation);
                    if current.map(|w| &w.work.spec) != Some(&spec) {
                        let mut work = Work::new(&wname, spec);
                        work.metadata = ObjectMeta {
                            name: Some(wname.clone()),
                            namespace: Some(wns.clone()),
                            labels: Some(BTreeMap::from([(LABEL_OWNER_UID.into(), uid.clone())])),
                            ..Default::default()
                        };
                        actions.push(WorkAction::Put(Box::new(work)));
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        rows.push(target_status(
            t,
            current,
            desired_generation,
            in_scope(t),
            failure,
            ready.contains(t.cluster.as_str()),
            &object.status,
            input.now,
        ));
    }
    for w in &ours {
        if !claimed.contains(&(w.namespace.clone(), w.name.clone())) {
            actions.push(WorkAction::Delete {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            });
        }
    }

    let status = aggregate(object, generation, rows, &rejected, &foreign, input.now);
    let previous_placement = object
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Placement"))
        .map(|c| c.message.clone());
    let events = status
        .conditions
        .iter()
        .filter(|c| c.type_ == "Placement" && c.status == "False")
        .filter(|c| previous_placement.as_deref() != Some(c.message.as_str()))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .collect();
    Plan {
        works: actions,
        status,
        finalize: deleting && ours.is_empty(),
        events,
    }
}

mod status;

pub use status::set_condition;
use status::{aggregate, target_status};

#[cfg(test)]
mod tests;
