//! The member side's decisions, with no client in sight: given the Works placed on this
//! member and the YusurServices it holds, what to create, replace or delete in the member
//! API server and what status to feed back on each Work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferry_api::YusurService;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::types::{ObjectReport, Work, WorkStatus};

/// Label on every member object the federation manages (its value: `federation`).
pub const LABEL_MANAGED_BY: &str = "federation.iaas.yusur.io/managed-by";
/// Annotation naming the Work a member object belongs to.
pub const ANNOTATION_WORK: &str = "federation.iaas.yusur.io/work";
/// Annotation with the Work generation the member object was applied from.
pub const ANNOTATION_GENERATION: &str = "federation.iaas.yusur.io/generation";

/// A write to the member API server or the federation's Work status.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberAction {
    Create(Box<YusurService>),
    /// Replace the object (carrying the current resourceVersion).
    Replace(Box<YusurService>),
    Delete {
        namespace: String,
        name: String,
    },
    /// Write this status on the Work of that name (in the member's namespace).
    WorkStatus {
        work: String,
        status: Box<WorkStatus>,
    },
}

/// Plans one pass of the join agent over `works` (those that changed, or all of them).
/// `objects` are the member's YusurServices (all of them, so a name taken by someone else
/// is seen); `known` the names of every Work placed on this member (an object whose Work
/// is not among them is deleted); `failures` the member API's errors of the previous pass
/// by Work name.
pub fn plan_member(
    works: &[Work],
    objects: &[Arc<YusurService>],
    known: &BTreeSet<String>,
    failures: &BTreeMap<String, String>,
    now: Timestamp,
) -> Vec<MemberAction> {
    let by_key: BTreeMap<(String, String), &YusurService> = objects
        .iter()
        .map(|o| ((o.namespace().unwrap_or_default(), o.name_any()), &**o))
        .collect();
    let mut actions = Vec::new();
    for w in works {
        let work = w.name_any();
        let previous = w.status.clone().unwrap_or_default();
        let desired: YusurService = match serde_json::from_value(w.spec.manifest.clone()) {
            Ok(d) if w.spec.manifest["kind"] == "YusurService" => d,
            Ok(_) | Err(_) => {
                let st = failed(
                    &previous,
                    "UnsupportedManifest",
                    "the manifest is not a YusurService this member can hold".into(),
                    now,
                );
                push_status(&mut actions, &work, &previous, st);
                continue;
            }
        };
        let key = (desired.namespace().unwrap_or_default(), desired.name_any());
        let current = by_key.get(&key).copied();
        if let Some(cur) = current
            && cur.annotations().get(ANNOTATION_WORK) != Some(&work)
        {
            let st = failed(
                &previous,
                "Conflict",
                format!(
                    "{}/{} exists in the member and is not this Work's; it is left alone",
                    key.0, key.1
                ),
                now,
            );
            push_status(&mut actions, &work, &previous, st);
            continue;
        }
        let merged = merge(w, &desired, current);
        match current {
            None => actions.push(MemberAction::Create(Box::new(merged))),
            Some(cur) if !same_content(cur, &merged) => {
                actions.push(MemberAction::Replace(Box::new(merged)))
            }
            Some(cur) => {
                let st = feedback(w, cur, &previous, now);
                push_status(&mut actions, &work, &previous, st);
                continue;
            }
        }
        if let Some(err) = failures.get(&work) {
            let st = failed(&previous, "ApplyFailed", err.clone(), now);
            push_status(&mut actions, &work, &previous, st);
        }
    }
    // Objects the federation placed here earlier whose Work is gone.
    for o in objects {
        let managed = o.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some("federation");
        if let Some(work) = o.annotations().get(ANNOTATION_WORK)
            && managed
            && !known.contains(work)
        {
            actions.push(MemberAction::Delete {
                namespace: o.namespace().unwrap_or_default(),
                name: o.name_any(),
            });
        }
    }
    actions
}

/// The member object a Work asks for: the manifest's spec and labels, the annotation policy
/// applied over what the member holds, the bookkeeping, the current object's identity.
fn merge(w: &Work, desired: &YusurService, current: Option<&YusurService>) -> YusurService {
    let mut out = desired.clone();
    let empty = BTreeMap::new();
    let cur_annotations = current.map(|c| c.annotations()).unwrap_or(&empty);
    let bookkeeping = BTreeMap::from([
        (ANNOTATION_WORK.to_string(), w.name_any()),
        (
            ANNOTATION_GENERATION.to_string(),
            w.spec.generation.to_string(),
        ),
    ]);
    let annotations =
        w.spec
            .annotation_policy
            .merge(cur_annotations, desired.annotations(), &bookkeeping);
    let mut labels = current.map(|c| c.labels().clone()).unwrap_or_default();
    labels.extend(desired.labels().clone());
    labels.insert(LABEL_MANAGED_BY.into(), "federation".into());
    out.metadata.annotations = Some(annotations);
    out.metadata.labels = Some(labels);
    if let Some(cur) = current {
        out.metadata.resource_version = cur.metadata.resource_version.clone();
        out.metadata.uid = cur.metadata.uid.clone();
        out.status = cur.status.clone();
    }
    out
}

fn same_content(a: &YusurService, b: &YusurService) -> bool {
    a.spec == b.spec && a.labels() == b.labels() && a.annotations() == b.annotations()
}

/// What the member object tells the federation.
fn feedback(w: &Work, cur: &YusurService, previous: &WorkStatus, now: Timestamp) -> WorkStatus {
    let st = cur.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ == "Applied")
        .cloned()
        .collect();
    crate::plan::set_condition(
        &mut conditions,
        Condition {
            type_: "Applied".into(),
            status: "True".into(),
            reason: "Applied".into(),
            message: String::new(),
            last_transition_time: Time(now),
            observed_generation: Some(w.spec.generation),
        },
    );
    conditions.extend(st.conditions.iter().cloned());
    WorkStatus {
        applied_generation: cur
            .annotations()
            .get(ANNOTATION_GENERATION)
            .and_then(|g| g.parse().ok()),
        member_generation: cur.metadata.generation,
        member_observed_generation: st.observed_generation,
        report: ObjectReport {
            cluster_ip: st.cluster_ip,
            eip: st.eip,
            ready_endpoints: st.ready_endpoints,
            total_endpoints: st.total_endpoints,
            status_annotations: w.spec.annotation_policy.status_part(cur.annotations()),
        },
        conditions,
    }
}

fn failed(previous: &WorkStatus, reason: &str, message: String, now: Timestamp) -> WorkStatus {
    let mut st = previous.clone();
    crate::plan::set_condition(
        &mut st.conditions,
        Condition {
            type_: "Applied".into(),
            status: "False".into(),
            reason: reason.into(),
            message,
            last_transition_time: Time(now),
            observed_generation: None,
        },
    );
    st
}

fn push_status(
    actions: &mut Vec<MemberAction>,
    work: &str,
    previous: &WorkStatus,
    next: WorkStatus,
) {
    if *previous != next {
        actions.push(MemberAction::WorkStatus {
            work: work.to_string(),
            status: Box::new(next),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AnnotationPolicy, WorkOwner, WorkSpec};
    use ferry_api::YusurServiceStatus;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("ts")
    }

    fn work(name: &str, generation: i64, port: i32, annotations: serde_json::Value) -> Work {
        let mut w = Work::new(
            name,
            WorkSpec {
                cluster: "c1".into(),
                target: "c1".into(),
                owner: WorkOwner::default(),
                generation,
                annotation_policy: AnnotationPolicy {
                    spec: vec!["lb/*".into()],
                    status: vec![],
                },
                manifest: json!({
                    "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
                    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                                 "annotations": annotations},
                    "spec": {"ports": [{"port": port}]},
                }),
            },
        );
        w.metadata.namespace = Some("ferry-member-c1".into());
        w
    }

    /// The member object as a previous pass created it from `w`.
    fn held(w: &Work, extra_annotations: &[(&str, &str)]) -> YusurService {
        let desired: YusurService = serde_json::from_value(w.spec.manifest.clone()).expect("ysvc");
        let mut o = merge(w, &desired, None);
        o.metadata.resource_version = Some("7".into());
        o.metadata.generation = Some(1);
        for (k, v) in extra_annotations {
            o.metadata
                .annotations
                .get_or_insert_default()
                .insert(k.to_string(), v.to_string());
        }
        o
    }

    fn kinds(actions: &[MemberAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                MemberAction::Create(o) => format!(
                    "create {}/{} gen={}",
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.annotations()
                        .get(ANNOTATION_GENERATION)
                        .cloned()
                        .unwrap_or_default()
                ),
                MemberAction::Replace(o) => format!(
                    "replace {}/{} gen={} rv={} annotations={:?}",
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.annotations()
                        .get(ANNOTATION_GENERATION)
                        .cloned()
                        .unwrap_or_default(),
                    o.metadata.resource_version.clone().unwrap_or_default(),
                    o.annotations()
                        .keys()
                        .filter(|k| !k.starts_with("federation."))
                        .collect::<Vec<_>>()
                ),
                MemberAction::Delete { namespace, name } => format!("delete {namespace}/{name}"),
                MemberAction::WorkStatus { work, status } => format!(
                    "status {work} applied={:?} ready={}/{} applied-reason={}",
                    status.applied_generation,
                    status.report.ready_endpoints,
                    status.report.total_endpoints,
                    status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Applied")
                        .map(|c| c.reason.clone())
                        .unwrap_or_default()
                ),
            })
            .collect()
    }

    #[test]
    fn member_passes() {
        let w1 = work("default.default.web", 1, 80, json!({"lb/mode": "a"}));
        let w2 = work("default.default.web", 2, 81, json!({}));
        let mut with_status = held(&w1, &[("lb-status", "up")]);
        with_status.status = Some(YusurServiceStatus {
            cluster_ip: Some("10.96.0.10".into()),
            ready_endpoints: 2,
            total_endpoints: 3,
            ..Default::default()
        });
        let stranger = {
            let mut o = held(&w1, &[]);
            o.metadata.annotations = None;
            o.metadata.labels = None;
            o
        };
        let orphan = {
            let mut o = held(&w1, &[(ANNOTATION_WORK, "default.default.gone")]);
            o.metadata.name = Some("gone".into());
            o
        };
        struct Case {
            name: &'static str,
            works: Vec<Work>,
            objects: Vec<YusurService>,
            failures: BTreeMap<String, String>,
            want: Vec<&'static str>,
        }
        let cases = [
            Case {
                name: "a new Work creates the object",
                works: vec![w1.clone()],
                objects: vec![],
                failures: BTreeMap::new(),
                want: vec!["create default/web gen=1"],
            },
            Case {
                name: "applied and unchanged: only the status feedback",
                works: vec![w1.clone()],
                objects: vec![with_status.clone()],
                failures: BTreeMap::new(),
                want: vec![
                    "status default.default.web applied=Some(1) ready=2/3 applied-reason=Applied",
                ],
            },
            Case {
                name: "a new generation replaces spec, drops the old spec key, keeps the status key",
                works: vec![w2.clone()],
                objects: vec![with_status.clone()],
                failures: BTreeMap::new(),
                want: vec![r#"replace default/web gen=2 rv=7 annotations=["lb-status"]"#],
            },
            Case {
                name: "an object of that name not placed by this Work is left alone",
                works: vec![w1.clone()],
                objects: vec![stranger],
                failures: BTreeMap::new(),
                want: vec![
                    "status default.default.web applied=None ready=0/0 applied-reason=Conflict",
                ],
            },
            Case {
                name: "an object whose Work is gone is deleted",
                works: vec![w1.clone()],
                objects: vec![with_status.clone(), orphan],
                failures: BTreeMap::new(),
                want: vec![
                    "status default.default.web applied=Some(1) ready=2/3 applied-reason=Applied",
                    "delete default/gone",
                ],
            },
            Case {
                name: "the member API's error is fed back",
                works: vec![w2],
                objects: vec![with_status],
                failures: BTreeMap::from([(
                    "default.default.web".to_string(),
                    "422: bad".to_string(),
                )]),
                want: vec![
                    r#"replace default/web gen=2 rv=7 annotations=["lb-status"]"#,
                    "status default.default.web applied=None ready=0/0 applied-reason=ApplyFailed",
                ],
            },
        ];
        for c in cases {
            let known: BTreeSet<String> = c.works.iter().map(|w| w.name_any()).collect();
            let objects: Vec<Arc<YusurService>> = c.objects.into_iter().map(Arc::new).collect();
            assert_eq!(
                kinds(&plan_member(&c.works, &objects, &known, &c.failures, now())),
                c.want,
                "case: {}",
                c.name
            );
        }
    }
}
