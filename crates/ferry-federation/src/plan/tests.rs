//! Table cases for [`plan`]: each compares the whole summary of a plan (the Works written
//! and deleted, every target's generations and reasons, the object's conditions).

use super::*;
use crate::types::{FederatedYusurServiceSpec, ObjectReport, TargetStatus, WorkStatus};

const NOW: i64 = 1_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("timestamp")
}

fn member(name: &str, tenant: &str, cells: &[(&str, &str)], ready: bool) -> Member {
    Member {
        name: name.into(),
        tenancy: Tenancy {
            tenant: Some(tenant.into()),
            workspace: Some("w1".into()),
        },
        cells: cells
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect(),
        ready,
    }
}

/// c1, c2 and c3 (down) belong to t1/w1; x1 to t2/w1 and holds a cell named like c1's.
fn members() -> Vec<Member> {
    vec![
        member("c1", "t1", &[("cell-a", "ns-a"), ("cell-b", "ns-b")], true),
        member("c2", "t1", &[("cell-c", "ns-c")], true),
        member("c3", "t1", &[], false),
        member("x1", "t2", &[("cell-a", "ns-a"), ("cell-x", "ns-x")], true),
    ]
}

fn object(generation: i64, spec: serde_json::Value) -> FederatedYusurService {
    let mut base = json!({
        "template": {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "web"}, "vpc": "vpc1"}},
        "placement": {"topologyType": "cluster", "clusters": ["c1", "c2"]},
    });
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    let spec: FederatedYusurServiceSpec = serde_json::from_value(base).expect("spec");
    let mut o = FederatedYusurService::new("web", spec);
    o.metadata.namespace = Some("default".into());
    o.metadata.uid = Some("u1".into());
    o.metadata.generation = Some(generation);
    o.metadata.labels = Some(BTreeMap::from([
        (LABEL_TENANT.to_string(), "t1".to_string()),
        (LABEL_WORKSPACE.to_string(), "w1".to_string()),
    ]));
    o
}

/// The Works a plan puts, as the cache would hold them after the member applied them
/// (status: applied at their generation, 1/2 endpoints ready).
fn applied(plan: &Plan) -> Vec<ExistingWork> {
    plan.works
        .iter()
        .filter_map(|a| match a {
            WorkAction::Put(w) => Some(ExistingWork {
                namespace: w.metadata.namespace.clone().unwrap_or_default(),
                name: w.metadata.name.clone().unwrap_or_default(),
                work: Work {
                    status: Some(WorkStatus {
                        applied_generation: Some(w.spec.generation),
                        report: ObjectReport {
                            cluster_ip: Some("10.96.0.10".into()),
                            ready_endpoints: 1,
                            total_endpoints: 2,
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    ..(**w).clone()
                },
            }),
            WorkAction::Delete { .. } => None,
        })
        .collect()
}

/// A plan reduced to what a reader checks.
#[derive(Debug, PartialEq)]
struct Summary {
    /// `ns/name@generation eip=...`
    puts: Vec<String>,
    deletes: Vec<String>,
    /// `id ns desired/observed Applied-reason Ready-reason`
    targets: Vec<String>,
    /// `type=status/reason`
    conditions: Vec<String>,
    ready: String,
    updated: String,
    finalize: bool,
    events: usize,
}

fn summary(p: &Plan) -> Summary {
    let g = |x: Option<i64>| x.map_or("-".to_string(), |g| g.to_string());
    let reason = |t: &TargetStatus, ty: &str| {
        t.conditions
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    };
    Summary {
        puts: p
            .works
            .iter()
            .filter_map(|a| match a {
                WorkAction::Put(w) => Some(format!(
                    "{}/{}@{} eip={}",
                    w.metadata.namespace.as_deref().unwrap_or_default(),
                    w.metadata.name.as_deref().unwrap_or_default(),
                    w.spec.generation,
                    w.spec.manifest["spec"]["eip"].as_str().unwrap_or("-"),
                )),
                WorkAction::Delete { .. } => None,
            })
            .collect(),
        deletes: p
            .works
            .iter()
            .filter_map(|a| match a {
                WorkAction::Delete { namespace, name } => Some(format!("{namespace}/{name}")),
                WorkAction::Put(_) => None,
            })
            .collect(),
        targets: p
            .status
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}/{} {} {}",
                    t.name,
                    t.namespace,
                    g(t.desired_generation),
                    g(t.observed_generation),
                    reason(t, "Applied"),
                    reason(t, "Ready")
                )
            })
            .collect(),
        conditions: p
            .status
            .conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
            .collect(),
        ready: p.status.ready_targets.clone().unwrap_or_default(),
        updated: p.status.updated_targets.clone().unwrap_or_default(),
        finalize: p.finalize,
        events: p.events.len(),
    }
}

fn run(object: &FederatedYusurService, works: &[ExistingWork]) -> Plan {
    let members = members();
    plan(&PlanInput {
        object,
        members: &members,
        works,
        policy: &AnnotationPolicy::default(),
        now: now(),
    })
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Works for `clusters` as generation 1 of `object(1, {clusters})` left them.
fn generation_one(clusters: &[&str]) -> Vec<ExistingWork> {
    applied(&run(
        &object(
            1,
            json!({"placement": {"topologyType": "cluster", "clusters": clusters}}),
        ),
        &[],
    ))
}

struct Case {
    name: &'static str,
    object: FederatedYusurService,
    works: Vec<ExistingWork>,
    want: Summary,
}

fn cases() -> Vec<Case> {
    let deleting = {
        let mut o = object(2, json!({}));
        o.metadata.deletion_timestamp = Some(Time(now()));
        o
    };
    let foreign_work = {
        // A Work of this object in the other tenant's cluster (the object was relabelled).
        let mut w = generation_one(&["c1"]).remove(0);
        w.namespace = member_namespace("x1");
        w.work.spec.cluster = "x1".into();
        w
    };
    vec![
        Case {
            name: "placement on two clusters writes a Work for each, nothing for the third",
            object: object(1, json!({})),
            works: vec![],
            want: Summary {
                puts: s(&[
                    "ferry-member-c1/default.default.web@1 eip=-",
                    "ferry-member-c2/default.default.web@1 eip=-",
                ]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 1/- Applying NotApplied",
                    "c2 default 1/- Applying NotApplied",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Progressing",
                    "Placement=True/Resolved",
                ]),
                ready: "0/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "a cluster of another tenant gets a condition and nothing is written there",
            object: object(1, json!({"placement": {"clusters": ["c1", "x1", "nope"]}})),
            works: vec![],
            want: Summary {
                puts: s(&["ferry-member-c1/default.default.web@1 eip=-"]),
                deletes: vec![],
                targets: s(&["c1 default 1/- Applying NotApplied"]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Progressing",
                    "Placement=False/NotInTenant",
                ]),
                ready: "0/1".into(),
                updated: "0/1".into(),
                finalize: false,
                events: 1,
            },
        },
        Case {
            name: "cells land in the cell's namespace; a bare cell resolves only in the tenant",
            object: object(
                1,
                json!({"placement": {"topologyType": "cell", "cells": ["cell-a", "c2/cell-c", "x1/cell-x", "cell-x"]}}),
            ),
            works: vec![],
            want: Summary {
                puts: s(&[
                    "ferry-member-c1/default.ns-a.web@1 eip=-",
                    "ferry-member-c2/default.ns-c.web@1 eip=-",
                ]),
                deletes: vec![],
                targets: s(&[
                    "c1/cell-a ns-a 1/- Applying NotApplied",
                    "c2/cell-c ns-c 1/- Applying NotApplied",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Progressing",
                    "Placement=False/NotInTenant",
                ]),
                ready: "0/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 1,
            },
        },
        Case {
            name: "overrides patch one target; a cluster name covers its cells",
            object: object(
                1,
                json!({
                    "placement": {"topologyType": "cell", "cells": ["c1/cell-a", "c1/cell-b", "c2/cell-c"]},
                    "overrides": [
                        {"target": "c1", "patches": [{"op": "add", "path": "/spec/eip", "value": "198.18.1.120"}]},
                        {"target": "c1/cell-b", "patches": [{"op": "replace", "path": "/spec/eip", "value": "198.18.1.121"}]},
                    ],
                }),
            ),
            works: vec![],
            want: Summary {
                puts: s(&[
                    "ferry-member-c1/default.ns-a.web@1 eip=198.18.1.120",
                    "ferry-member-c1/default.ns-b.web@1 eip=198.18.1.121",
                    "ferry-member-c2/default.ns-c.web@1 eip=-",
                ]),
                deletes: vec![],
                targets: s(&[
                    "c1/cell-a ns-a 1/- Applying NotApplied",
                    "c1/cell-b ns-b 1/- Applying NotApplied",
                    "c2/cell-c ns-c 1/- Applying NotApplied",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Progressing",
                    "Placement=True/Resolved",
                ]),
                ready: "0/3".into(),
                updated: "0/3".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "an override that breaks the object writes nothing for that target only",
            object: object(
                2,
                json!({"overrides": [{"target": "c2", "patches": [{"op": "replace", "path": "/spec/type", "value": "Bogus"}]}]}),
            ),
            works: generation_one(&["c1", "c2"]),
            want: Summary {
                puts: s(&["ferry-member-c1/default.default.web@2 eip=-"]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 2/1 Applying NotApplied",
                    "c2 default 1/1 RenderFailed Ready",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/RenderFailed",
                    "Placement=True/Resolved",
                ]),
                ready: "1/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "everything applied and ready: no writes, Ready and UpToDate",
            object: object(1, json!({})),
            works: generation_one(&["c1", "c2"]),
            want: Summary {
                puts: vec![],
                deletes: vec![],
                targets: s(&[
                    "c1 default 1/1 Applied Ready",
                    "c2 default 1/1 Applied Ready",
                ]),
                conditions: s(&[
                    "Ready=True/AllTargetsReady",
                    "UpToDate=True/AllTargetsUpdated",
                    "Placement=True/Resolved",
                ]),
                ready: "2/2".into(),
                updated: "2/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "gray release: a masked update reaches placement AND mask only",
            object: object(
                2,
                json!({"placementMask": ["c1"], "template": {"spec": {"ports": [{"port": 8080}]}}}),
            ),
            works: generation_one(&["c1", "c2"]),
            want: Summary {
                puts: s(&["ferry-member-c1/default.default.web@2 eip=-"]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 2/1 Applying NotApplied",
                    "c2 default 1/1 Applied Ready",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Masked",
                    "Placement=True/Resolved",
                ]),
                ready: "1/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "a new target outside the mask is not created",
            object: object(
                2,
                json!({"placement": {"clusters": ["c1", "c2"]}, "placementMask": ["c1"]}),
            ),
            works: generation_one(&["c1"]),
            want: Summary {
                puts: s(&["ferry-member-c1/default.default.web@2 eip=-"]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 2/1 Applying NotApplied",
                    "c2 default -/- Masked NotApplied",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Masked",
                    "Placement=True/Resolved",
                ]),
                ready: "0/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "a down member does not block the others; outside the mask it keeps its generation",
            object: object(
                2,
                json!({"placement": {"clusters": ["c1", "c3"]}, "placementMask": ["c1"], "template": {"spec": {"ports": [{"port": 81}]}}}),
            ),
            works: generation_one(&["c1", "c3"]),
            want: Summary {
                puts: s(&["ferry-member-c1/default.default.web@2 eip=-"]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 2/1 Applying NotApplied",
                    "c3 default 1/1 Applied MemberNotReady",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Masked",
                    "Placement=True/Resolved",
                ]),
                ready: "0/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "a down member in the mask gets its Work and applies it when it returns",
            object: object(
                2,
                json!({"placement": {"clusters": ["c1", "c3"]}, "template": {"spec": {"ports": [{"port": 81}]}}}),
            ),
            works: generation_one(&["c1", "c3"]),
            want: Summary {
                puts: s(&[
                    "ferry-member-c1/default.default.web@2 eip=-",
                    "ferry-member-c3/default.default.web@2 eip=-",
                ]),
                deletes: vec![],
                targets: s(&[
                    "c1 default 2/1 Applying NotApplied",
                    "c3 default 2/1 MemberNotReady MemberNotReady",
                ]),
                conditions: s(&[
                    "Ready=False/TargetsNotReady",
                    "UpToDate=False/Progressing",
                    "Placement=True/Resolved",
                ]),
                ready: "0/2".into(),
                updated: "0/2".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "removed from placement: deleted there, even when the mask freezes updates",
            object: object(
                2,
                json!({"placement": {"clusters": ["c1"]}, "placementMask": []}),
            ),
            works: generation_one(&["c1", "c2"]),
            want: Summary {
                puts: vec![],
                deletes: s(&["ferry-member-c2/default.default.web"]),
                targets: s(&["c1 default 1/1 Applied Ready"]),
                conditions: s(&[
                    "Ready=True/AllTargetsReady",
                    "UpToDate=False/Masked",
                    "Placement=True/Resolved",
                ]),
                ready: "1/1".into(),
                updated: "0/1".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "deleting removes the tenant's Works only; another tenant's cluster is never touched",
            object: deleting.clone(),
            works: {
                let mut w = generation_one(&["c1", "c2"]);
                w.push(foreign_work.clone());
                w
            },
            want: Summary {
                puts: vec![],
                deletes: s(&[
                    "ferry-member-c1/default.default.web",
                    "ferry-member-c2/default.default.web",
                ]),
                targets: vec![],
                conditions: s(&[
                    "Ready=False/NoTargets",
                    "UpToDate=True/AllTargetsUpdated",
                    "Placement=True/Resolved",
                    "OutsideTenant=True/WorksLeftUntouched",
                ]),
                ready: "0/0".into(),
                updated: "0/0".into(),
                finalize: false,
                events: 0,
            },
        },
        Case {
            name: "deleting with only another tenant's Works left lets the object go",
            object: deleting,
            works: vec![foreign_work],
            want: Summary {
                puts: vec![],
                deletes: vec![],
                targets: vec![],
                conditions: s(&[
                    "Ready=False/NoTargets",
                    "UpToDate=True/AllTargetsUpdated",
                    "Placement=True/Resolved",
                    "OutsideTenant=True/WorksLeftUntouched",
                ]),
                ready: "0/0".into(),
                updated: "0/0".into(),
                finalize: true,
                events: 0,
            },
        },
    ]
}

#[test]
fn plans() {
    for c in cases() {
        let got = summary(&run(&c.object, &c.works));
        assert_eq!(got, c.want, "case: {}", c.name);
    }
}

/// One Work whole: where it lives, its owner label, and the manifest the member applies.
#[test]
fn work_holds_the_rendered_object_and_policy() {
    let mut o = object(
        3,
        json!({"placement": {"clusters": ["c2"]},
               "overrides": [{"target": "c2", "patches": [{"op": "add", "path": "/spec/eip", "value": "198.18.2.120"}]}]}),
    );
    o.spec.template.metadata.labels = BTreeMap::from([("app".into(), "web".into())]);
    o.spec.template.metadata.annotations = BTreeMap::from([
        ("lb.example/protocol".into(), "tcp".into()),
        ("status.lb.example/phase".into(), "ignored".into()),
    ]);
    let p = run(&o, &[]);
    let [WorkAction::Put(w)] = p.works.as_slice() else {
        panic!("one Put expected: {:?}", p.works)
    };
    let want = json!({
        "apiVersion": "federation.iaas.yusur.io/v1",
        "kind": "Work",
        "metadata": {
            "name": "default.default.web",
            "namespace": "ferry-member-c2",
            "labels": {"federation.iaas.yusur.io/owner-uid": "u1"},
        },
        "spec": {
            "cluster": "c2",
            "target": "c2",
            "owner": {"kind": "FederatedYusurService", "namespace": "default", "name": "web", "uid": "u1"},
            "generation": 3,
            "annotationPolicy": AnnotationPolicy::default(),
            "manifest": {
                "apiVersion": "iaas.yusur.io/v1",
                "kind": "YusurService",
                "metadata": {
                    "name": "web",
                    "namespace": "default",
                    "labels": {"app": "web"},
                    "annotations": {"lb.example/protocol": "tcp"},
                },
                "spec": {
                    "type": "LoadBalancer", "scope": "vpc", "vpc": "vpc1", "eip": "198.18.2.120",
                    "ports": [{"port": 80, "protocol": "TCP"}],
                    "selector": {"app": "web"},
                },
            },
        },
    });
    assert_eq!(serde_json::to_value(w).expect("json"), want);
}

/// Status feedback: the member's figures reach the target, its conditions are prefixed.
#[test]
fn status_feedback_reaches_the_target() {
    let o = object(1, json!({"placement": {"clusters": ["c1"]}}));
    let mut works = generation_one(&["c1"]);
    if let Some(st) = works[0].work.status.as_mut() {
        st.report.eip = Some("198.18.1.100".into());
        st.report.ready_endpoints = 2;
        st.report.total_endpoints = 2;
        st.report.status_annotations = BTreeMap::from([("status.lb/phase".into(), "up".into())]);
        st.conditions = vec![Condition {
            type_: "Programmed".into(),
            status: "True".into(),
            reason: "LoadBalancersWritten".into(),
            message: String::new(),
            last_transition_time: Time(now()),
            observed_generation: Some(1),
        }];
    }
    let p = run(&o, &works);
    let t = &p.status.targets[0];
    assert_eq!(
        t.report,
        ObjectReport {
            cluster_ip: Some("10.96.0.10".into()),
            eip: Some("198.18.1.100".into()),
            ready_endpoints: 2,
            total_endpoints: 2,
            status_annotations: BTreeMap::from([("status.lb/phase".into(), "up".into())]),
        }
    );
    let types: Vec<&str> = t.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Applied", "Ready", "MemberProgrammed"]);
}

/// A condition keeps its transition time while its status stays.
#[test]
fn condition_transition_time_is_kept_while_status_stays() {
    let o = object(1, json!({}));
    let works = generation_one(&["c1", "c2"]);
    let first = run(&o, &works);
    let mut later = o.clone();
    later.status = Some(first.status.clone());
    let members = members();
    let second = plan(&PlanInput {
        object: &later,
        members: &members,
        works: &works,
        policy: &AnnotationPolicy::default(),
        now: Timestamp::from_second(NOW + 60).expect("ts"),
    });
    assert_eq!(second.status, first.status);
}

#[test]
fn member_readiness_follows_heartbeats() {
    let grace = std::time::Duration::from_secs(15);
    let mut mc = MemberCluster::new("c1", Default::default());
    let status = |age: i64, ready: &str| MemberClusterStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: "Heartbeat".into(),
            message: String::new(),
            last_transition_time: Time(now()),
            observed_generation: None,
        }],
        last_heartbeat_time: Some(Time(Timestamp::from_second(NOW - age).expect("ts"))),
        version: None,
    };
    mc.status = Some(status(5, "True"));
    assert!(Member::of(&mc, now(), grace).ready);
    assert_eq!(stale_member_status(&mc, now(), grace), None);
    mc.status = Some(status(20, "True"));
    assert!(!Member::of(&mc, now(), grace).ready);
    let stale = stale_member_status(&mc, now(), grace).expect("turns Unknown");
    assert_eq!(
        (
            stale.conditions[0].status.as_str(),
            stale.conditions[0].reason.as_str()
        ),
        ("Unknown", "HeartbeatMissed")
    );
    mc.status = Some(status(1, "False"));
    assert!(!Member::of(&mc, now(), grace).ready);
}

#[test]
fn work_names_stay_valid_and_distinct() {
    assert_eq!(work_name("default", "ns-a", "web"), "default.ns-a.web");
    let long_a = "a".repeat(240);
    let long_b = format!("{}b", "a".repeat(239));
    let (x, y) = (
        work_name("default", "default", &long_a),
        work_name("default", "default", &long_b),
    );
    assert!(x.len() <= 253 && y.len() <= 253, "{} {}", x.len(), y.len());
    assert_ne!(x, y);
    assert_eq!(x, work_name("default", "default", &long_a), "stable");
}
