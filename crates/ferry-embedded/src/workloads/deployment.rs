//! One Deployment: which ReplicaSet is new (its template equals the Deployment's, the hash
//! label aside), the replicas of each ReplicaSet for this step of the rollout, which old
//! ReplicaSets beyond `revisionHistoryLimit` go, and the Deployment's status, so that
//! `kubectl rollout status|undo|restart` and `kubectl scale` work as on a real cluster.
//! One step per pass, as kube-controller-manager does: scale the new ReplicaSet up, or
//! (when it cannot grow) scale old ones down; the next pass sees the result.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION, owner_ref, template_hash,
};

/// Annotations a Deployment does not pass on to its ReplicaSets (kube's skip list).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// What to write for one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// A new ReplicaSet for the current template.
    pub create: Option<ReplicaSet>,
    /// ReplicaSets to replace (replicas or annotations changed), as they should be.
    pub update: Vec<ReplicaSet>,
    /// Old ReplicaSets beyond the history limit.
    pub delete: Vec<String>,
    /// The Deployment's `deployment.kubernetes.io/revision`.
    pub revision: String,
    pub status: DeploymentStatus,
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the hash label, for comparing a ReplicaSet's to the Deployment's.
fn without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(POD_TEMPLATE_HASH);
        if l.is_empty() {
            m.labels = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// `maxSurge`/`maxUnavailable` against `replicas`: percentages round up for surge and
/// down for unavailable; both zero would block, so unavailable becomes 1.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .filter(|s| s.type_.as_deref() != Some("Recreate"))
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let resolve = |v: Option<IntOrString>, up: bool| -> i32 {
        match v.unwrap_or(IntOrString::String("25%".into())) {
            IntOrString::Int(i) => i.max(0),
            IntOrString::String(s) => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
                let num = i64::from(replicas) * pct;
                let v = if up { (num + 99) / 100 } else { num / 100 };
                i32::try_from(v.max(0)).unwrap_or(0)
            }
        }
    };
    if spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
    {
        return (0, replicas);
    }
    let surge = resolve(ru.max_surge, true);
    let unavailable = resolve(ru.max_unavailable, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn set_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

fn stat(rs: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

/// Plans `d` given the ReplicaSets it controls (any order).
pub fn plan(d: &Deployment, owned: &[&ReplicaSet], now: jiff::Timestamp) -> Plan {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let name = d.metadata.name.clone().unwrap_or_default();
    let (surge, max_unavailable) = surge_and_unavailable(d);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut rss: Vec<ReplicaSet> = owned.iter().map(|r| (*r).clone()).collect();
    rss.sort_by_key(|r| {
        (
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            r.metadata.name.clone(),
        )
    });
    let template = without_hash(&spec.template);
    let new_idx = rss.iter().position(|r| {
        r.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(without_hash)
            == Some(template.clone())
    });
    let max_old_revision = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, r)| revision_of(r))
        .max()
        .unwrap_or(0);
    let mut changed: BTreeMap<usize, ReplicaSet> = BTreeMap::new();
    let mut create = None;
    let paused = spec.paused == Some(true);
    let mut new_created = false;
    let annotations_for = |rev: i64, base: &ObjectMeta| {
        let mut a: BTreeMap<String, String> = d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .collect();
        let mut keep = base.annotations.clone().unwrap_or_default();
        keep.append(&mut a);
        keep.insert(REVISION.into(), rev.to_string());
        keep.insert(DESIRED_REPLICAS.into(), replicas.to_string());
        keep.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
        keep
    };
    // The new ReplicaSet: found (an old one again after an undo gets the next revision) or
    // created.
    let mut new_rs: Option<ReplicaSet> = match new_idx {
        Some(i) => {
            let r = rss[i].clone();
            let rev = revision_of(&r);
            if rev <= max_old_revision && !paused {
                let mut u = r.clone();
                u.metadata.annotations = Some(annotations_for(max_old_revision + 1, &r.metadata));
                changed.insert(i, u.clone());
                Some(u)
            } else {
                Some(r)
            }
        }
        None if paused => None,
        None => {
            let hash = template_hash(&template, d.status.as_ref().and_then(|s| s.collision_count));
            let mut t = spec.template.clone();
            let tm = t.metadata.get_or_insert_with(Default::default);
            tm.labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let meta = ObjectMeta {
                name: Some(format!("{name}-{hash}")),
                namespace: d.metadata.namespace.clone(),
                labels: tm.labels.clone(),
                owner_references: Some(vec![owner_ref("apps/v1", "Deployment", &d.metadata)]),
                ..Default::default()
            };
            let annotations = annotations_for(max_old_revision + 1, &meta);
            new_created = true;
            Some(ReplicaSet {
                metadata: ObjectMeta {
                    annotations: Some(annotations),
                    ..meta
                },
                spec: Some(ReplicaSetSpec {
                    replicas: Some(0),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector,
                    template: Some(t),
                }),
                status: None,
            })
        }
    };
    let olds: Vec<usize> = (0..rss.len()).filter(|i| Some(*i) != new_idx).collect();
    let current = |i: usize, changed: &BTreeMap<usize, ReplicaSet>| {
        changed
            .get(&i)
            .map(spec_replicas)
            .unwrap_or_else(|| spec_replicas(&rss[i]))
    };
    if let Some(new) = new_rs.as_mut()
        && !paused
    {
        let new_replicas = spec_replicas(new);
        let old_active: i32 = olds.iter().map(|i| current(*i, &changed)).sum();
        let old_pods: i32 = olds.iter().map(|i| stat(&rss[*i], |s| s.replicas)).sum();
        let mut target_new = new_replicas;
        if recreate {
            if old_active > 0 {
                for i in &olds {
                    if current(*i, &changed) > 0 {
                        let mut u = changed.get(i).cloned().unwrap_or_else(|| rss[*i].clone());
                        set_replicas(&mut u, 0);
                        changed.insert(*i, u);
                    }
                }
            } else if old_pods == 0 {
                target_new = replicas;
            }
        } else if old_active == 0 || new_replicas > replicas {
            // Only the new one (plain scaling), or more of it than wanted.
            target_new = replicas;
        } else {
            let total = old_active + new_replicas;
            let room = replicas + surge - total;
            if room > 0 && new_replicas < replicas {
                target_new = new_replicas + room.min(replicas - new_replicas);
            } else {
                // Scale old ones down: first their unavailable Pods, then available ones,
                // keeping replicas - maxUnavailable available.
                let min_available = replicas - max_unavailable;
                let new_unavailable = (new_replicas
                    - new
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0))
                .max(0);
                let mut max_down = total - min_available - new_unavailable;
                for i in &olds {
                    if max_down <= 0 {
                        break;
                    }
                    let cur = current(*i, &changed);
                    let unhealthy = (cur
                        - rss[*i]
                            .status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0))
                    .max(0);
                    let down = unhealthy.min(max_down);
                    if down > 0 {
                        let mut u = changed.get(i).cloned().unwrap_or_else(|| rss[*i].clone());
                        set_replicas(&mut u, cur - down);
                        changed.insert(*i, u);
                        max_down -= down;
                    }
                }
                let available: i32 = olds
                    .iter()
                    .map(|i| {
                        rss[*i]
                            .status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                    })
                    .sum::<i32>()
                    + new
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0);
                let mut to_scale = available - min_available;
                for i in &olds {
                    if to_scale <= 0 {
                        break;
                    }
                    let cur = current(*i, &changed);
                    let down = cur.min(to_scale);
                    if down > 0 {
                        let mut u = changed.get(i).cloned().unwrap_or_else(|| rss[*i].clone());
                        set_replicas(&mut u, cur - down);
                        changed.insert(*i, u);
                        to_scale -= down;
                    }
                }
            }
        }
        if target_new != new_replicas || new_created {
            set_replicas(new, target_new);
            if let Some(a) = new.metadata.annotations.as_mut() {
                a.insert(DESIRED_REPLICAS.into(), replicas.to_string());
                a.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
            }
            match new_idx {
                Some(i) => {
                    changed.insert(i, new.clone());
                }
                None => create = Some(new.clone()),
            }
        }
    }
    // History: old ReplicaSets with no replicas and no Pods beyond the limit, oldest first.
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
    let idle: Vec<usize> = olds
        .iter()
        .copied()
        .filter(|i| current(*i, &changed) == 0 && stat(&rss[*i], |s| s.replicas) == 0)
        .collect();
    let delete: Vec<String> = idle
        .iter()
        .take(idle.len().saturating_sub(limit))
        .filter_map(|i| rss[*i].metadata.name.clone())
        .collect();
    // Status, from the ReplicaSets' own (as their controller last wrote them).
    let sum = |f: fn(&ReplicaSet) -> i32| -> i32 { rss.iter().map(f).sum() };
    let total_spec: i32 = (0..rss.len()).map(|i| current(i, &changed)).sum::<i32>()
        + create.as_ref().map(spec_replicas).unwrap_or(0);
    let updated = new_rs
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .map(|s| s.replicas)
        .unwrap_or(0);
    let available = sum(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    });
    let status_replicas = sum(|r| stat(r, |s| s.replicas));
    let old = d.status.clone().unwrap_or_default();
    let new_name = new_rs
        .as_ref()
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or_default();
    let complete = updated == replicas
        && status_replicas == replicas
        && available >= replicas
        && new_rs.is_some();
    let (av_status, av_reason, av_message) = if available >= replicas - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
        )
    };
    let (pr_reason, pr_message) = if paused {
        ("DeploymentPaused", "Deployment is paused".to_string())
    } else if new_created {
        (
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else if complete {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    // Progress is any change of the counts; without any for progressDeadlineSeconds (600
    // by default) an unfinished rollout has timed out, which `kubectl rollout status`
    // reports as an error.
    let counts = |s: &DeploymentStatus| {
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
        )
    };
    let ready_sum = sum(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let progressed = counts(&old)
        != (
            Some(status_replicas),
            Some(updated),
            Some(ready_sum),
            Some(available),
        );
    let prev_progressing = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let stalled = !paused
        && !complete
        && !new_created
        && !progressed
        && prev_progressing
            .and_then(|c| c.last_update_time.as_ref())
            .is_some_and(|t| t.0 + jiff::SignedDuration::from_secs(deadline) < now);
    let (pr_reason, pr_message) = if stalled
        || prev_progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            && !complete
            && !progressed
            && !new_created
    {
        (
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        )
    } else {
        (pr_reason, pr_message)
    };
    let pr_status = match pr_reason {
        "ProgressDeadlineExceeded" => "False",
        _ if paused => "Unknown",
        _ => "True",
    };
    let at = Time(now);
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let prev = old.conditions.iter().flatten().find(|c| c.type_ == type_);
        let same_status = prev.is_some_and(|p| p.status == status);
        let same = same_status
            && !(type_ == "Progressing" && progressed)
            && prev.is_some_and(|p| {
                p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(&message)
            });
        DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: if same {
                prev.and_then(|p| p.last_update_time.clone())
            } else {
                Some(at.clone())
            },
            last_transition_time: if same_status {
                prev.and_then(|p| p.last_transition_time.clone())
            } else {
                Some(at.clone())
            },
        }
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(status_replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready_sum),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        conditions: Some(vec![
            condition("Available", av_status, av_reason, av_message),
            condition("Progressing", pr_status, pr_reason, pr_message),
        ]),
        collision_count: old.collision_count,
        ..Default::default()
    };
    let revision = new_rs
        .as_ref()
        .map(|n| revision_of(n).to_string())
        .or_else(|| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION).cloned())
        })
        .unwrap_or_default();
    Plan {
        create,
        update: changed.into_values().collect(),
        delete,
        revision,
        status,
    }
}
