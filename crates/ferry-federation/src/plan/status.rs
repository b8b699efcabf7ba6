//! The status half of planning: each target's state from its Work and member, and the
//! object's aggregate conditions (`Ready`, `UpToDate`, `Placement`, `OutsideTenant`).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{ExistingWork, Target};
use crate::types::{FederatedYusurService, FederatedYusurServiceStatus, TargetStatus};

#[allow(clippy::too_many_arguments)]
pub(super) fn target_status(
    t: &Target,
    work: Option<&ExistingWork>,
    desired_generation: Option<i64>,
    in_scope: bool,
    failure: Option<String>,
    member_ready: bool,
    previous: &Option<FederatedYusurServiceStatus>,
    now: Timestamp,
) -> TargetStatus {
    let fed = work.and_then(|w| w.work.status.clone()).unwrap_or_default();
    let observed = fed.applied_generation;
    let prev = previous
        .as_ref()
        .and_then(|s| s.targets.iter().find(|p| p.name == t.id))
        .map(|p| p.conditions.clone())
        .unwrap_or_default();
    let member_applied = fed.conditions.iter().find(|c| c.type_ == "Applied");
    let applied = desired_generation.is_some() && observed == desired_generation;
    let (a_status, a_reason, a_message) = match (&failure, desired_generation, member_applied) {
        (Some(e), _, _) => ("False", "RenderFailed", e.clone()),
        (None, None, _) if !in_scope => (
            "False",
            "Masked",
            "outside placementMask: not created yet".to_string(),
        ),
        (None, None, _) => ("False", "Pending", "no Work yet".to_string()),
        (None, Some(_), Some(c)) if c.status == "False" => {
            ("False", c.reason.as_str(), c.message.clone())
        }
        (None, Some(_), _) if applied => ("True", "Applied", String::new()),
        (None, Some(g), _) if !member_ready => (
            "False",
            "MemberNotReady",
            format!("generation {g} waits for the member to come back"),
        ),
        (None, Some(g), _) => (
            "False",
            "Applying",
            format!("generation {g} handed to the member"),
        ),
    };
    let (r_status, r_reason) = if !member_ready {
        ("False", "MemberNotReady")
    } else if !applied {
        ("False", "NotApplied")
    } else if fed.report.ready_endpoints == 0 {
        ("False", "NoReadyEndpoints")
    } else {
        ("True", "Ready")
    };
    let mut conditions = prev.clone();
    conditions.retain(|c| c.type_ == "Applied" || c.type_ == "Ready");
    for (type_, status, reason, message) in [
        ("Applied", a_status, a_reason.to_string(), a_message),
        ("Ready", r_status, r_reason.to_string(), String::new()),
    ] {
        set_condition(
            &mut conditions,
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason,
                message,
                last_transition_time: Time(now),
                observed_generation: None,
            },
        );
    }
    // The member object's own conditions, as the member wrote them.
    conditions.extend(
        fed.conditions
            .iter()
            .filter(|c| c.type_ != "Applied")
            .map(|c| Condition {
                type_: format!("Member{}", c.type_),
                ..c.clone()
            }),
    );
    TargetStatus {
        name: t.id.clone(),
        cluster: t.cluster.clone(),
        namespace: t.namespace.clone(),
        desired_generation,
        observed_generation: observed,
        report: fed.report,
        conditions,
    }
}

pub(super) fn aggregate(
    object: &FederatedYusurService,
    generation: i64,
    targets: Vec<TargetStatus>,
    rejected: &[(String, String)],
    foreign: &[&ExistingWork],
    now: Timestamp,
) -> FederatedYusurServiceStatus {
    let mut conditions = object
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let is_true = |t: &TargetStatus, ty: &str| {
        t.conditions
            .iter()
            .any(|c| c.type_ == ty && c.status == "True")
    };
    let n = targets.len();
    let updated: Vec<&TargetStatus> = targets
        .iter()
        .filter(|t| t.observed_generation == Some(generation))
        .collect();
    let ready: Vec<&TargetStatus> = targets.iter().filter(|t| is_true(t, "Ready")).collect();
    let stale: Vec<String> = targets
        .iter()
        .filter(|t| t.observed_generation != Some(generation))
        .map(|t| match t.observed_generation {
            Some(g) => format!("{} at generation {g}", t.name),
            None => format!("{} not applied", t.name),
        })
        .collect();
    let masked = targets
        .iter()
        .any(|t| t.desired_generation != Some(generation));
    let render_failed = targets.iter().any(|t| {
        t.conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.reason == "RenderFailed")
    });
    let up_to_date = if stale.is_empty() {
        ("True", "AllTargetsUpdated", String::new())
    } else if render_failed {
        ("False", "RenderFailed", stale.join("; "))
    } else if masked {
        ("False", "Masked", stale.join("; "))
    } else {
        ("False", "Progressing", stale.join("; "))
    };
    let not_ready: Vec<String> = targets
        .iter()
        .filter(|t| !is_true(t, "Ready"))
        .map(|t| {
            let why = t
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            format!("{}: {why}", t.name)
        })
        .collect();
    let ready_c = if n == 0 {
        (
            "False",
            "NoTargets",
            "placement resolves to no target".to_string(),
        )
    } else if not_ready.is_empty() {
        ("True", "AllTargetsReady", String::new())
    } else {
        ("False", "TargetsNotReady", not_ready.join("; "))
    };
    let placement = if rejected.is_empty() {
        ("True", "Resolved", String::new())
    } else {
        (
            "False",
            "NotInTenant",
            rejected
                .iter()
                .map(|(_, why)| why.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    let mut set = vec![
        ("Ready", ready_c),
        ("UpToDate", up_to_date),
        ("Placement", placement),
    ];
    if foreign.is_empty() {
        conditions.retain(|c| c.type_ != "OutsideTenant");
    } else {
        set.push((
            "OutsideTenant",
            (
                "True",
                "WorksLeftUntouched",
                format!(
                    "Works in clusters that are not (or no longer) members of the object's tenant/workspace are never touched: {}",
                    foreign
                        .iter()
                        .map(|w| format!("{}/{}", w.namespace, w.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        ));
    }
    for (type_, (status, reason, message)) in set {
        set_condition(
            &mut conditions,
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Time(now),
                observed_generation: Some(generation),
            },
        );
    }
    FederatedYusurServiceStatus {
        observed_generation: Some(generation),
        updated_targets: Some(format!("{}/{n}", updated.len())),
        ready_targets: Some(format!("{}/{n}", ready.len())),
        targets,
        conditions,
    }
}

/// Sets a condition, keeping its lastTransitionTime when its status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => {
            if x.status == c.status {
                c.last_transition_time = x.last_transition_time.clone();
            }
            *x = c;
        }
        None => conditions.push(c),
    }
}
