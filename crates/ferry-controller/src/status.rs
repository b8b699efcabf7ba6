//! A YusurService's status, pure: its `Ready` and `Programmed` conditions from what the pass
//! decided and what the NB commit returned, transition times kept while a condition holds,
//! and which conditions changed (each change is an Event).

use std::collections::BTreeMap;

use ferry_api::{Condition, YusurService, YusurServiceStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::plan::ServiceOutcome;

/// What the NB said about this pass: `Ok` with per-service errors of the model, or the
/// error of the transaction that carried every service.
pub type NbResult = Result<BTreeMap<String, String>, String>;

/// Whether `o` is programmed, given the pass's NB result (`None`: no network controller).
pub fn programmed(o: &ServiceOutcome, nb: Option<&NbResult>) -> Option<Result<(), String>> {
    Some(match nb? {
        Ok(errors) => match errors.get(&o.key) {
            Some(msg) => Err(msg.clone()),
            None if !o.programmable() => Err("not programmed: see the Ready condition".into()),
            None => Ok(()),
        },
        Err(e) => Err(e.clone()),
    })
}

/// Whether `o`'s service already shows Programmed, true, for its current generation, and
/// this pass leaves its NB state as it was (`changed` false): a full convergence then
/// changes nothing it depends on.
pub fn programmed_now(o: &ServiceOutcome, changed: bool) -> bool {
    let svc = &o.service;
    !changed
        && svc.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Programmed"
                    && c.status == "True"
                    && c.observed_generation == svc.metadata.generation
            })
        })
}

/// Puts the service's current Programmed condition, as it is (generation and time
/// included), into `status`: it holds until a full convergence says otherwise.
pub fn keep_programmed(status: &mut YusurServiceStatus, svc: &YusurService) {
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Programmed"));
    status.conditions.retain(|c| c.type_ != "Programmed");
    status.conditions.extend(current.cloned());
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The status a service should show; `programmed` is `None` when no network controller
/// runs. Transition times are `now`: [`keep_transition_times`] restores those that did not
/// change.
pub fn desired_status(
    o: &ServiceOutcome,
    programmed: Option<Result<(), String>>,
    now: Timestamp,
) -> YusurServiceStatus {
    let generation = o.service.metadata.generation;
    let ready = o.ready.len() as i32;
    let mut conditions = vec![match &o.problem {
        Some(p) => condition("Ready", false, p.reason(), &p.message(), generation, now),
        None if ready == 0 => condition(
            "Ready",
            false,
            "NoReadyEndpoints",
            &format!("0 of {} backends are healthy", o.total()),
            generation,
            now,
        ),
        None => condition(
            "Ready",
            true,
            "EndpointsReady",
            &format!("{ready} of {} backends are healthy", o.total()),
            generation,
            now,
        ),
    }];
    match programmed {
        Some(Ok(())) => conditions.push(condition(
            "Programmed",
            true,
            "Programmed",
            "load balancers are in the OVN Northbound database",
            generation,
            now,
        )),
        Some(Err(msg)) => conditions.push(condition(
            "Programmed",
            false,
            "ProgrammingFailed",
            &msg,
            generation,
            now,
        )),
        None => {}
    }
    YusurServiceStatus {
        cluster_ip: o.cluster_ip.map(|i| i.to_string()),
        eip: o.eip.map(|i| i.to_string()),
        vpcs: Some(crate::service::service_vpcs(&o.service).join(",")),
        ready_endpoints: ready,
        total_endpoints: o.total() as i32,
        ready: Some(format!("{ready}/{}", o.total())),
        observed_generation: generation,
        conditions,
    }
}

/// Keeps `before`'s transition time for every condition whose status did not change.
pub fn keep_transition_times(status: &mut YusurServiceStatus, before: &YusurServiceStatus) {
    for c in &mut status.conditions {
        if let Some(b) = before
            .conditions
            .iter()
            .find(|b| b.type_ == c.type_ && b.status == c.status)
        {
            c.last_transition_time = b.last_transition_time.clone();
        }
    }
}

/// The conditions of `status` whose status or reason differ from `before` (an Event each).
pub fn changed_conditions<'a>(
    before: &YusurServiceStatus,
    status: &'a YusurServiceStatus,
) -> Vec<&'a Condition> {
    status
        .conditions
        .iter()
        .filter(|c| {
            let was = before.conditions.iter().find(|p| p.type_ == c.type_);
            was.map(|b| (&b.status, &b.reason)) != Some((&c.status, &c.reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;
    use ferry_api::YusurService;
    use std::sync::Arc;

    fn outcome(problem: Option<Problem>, ready: usize, total: usize) -> ServiceOutcome {
        let svc: YusurService = serde_json::from_value(serde_json::json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": "s", "namespace": "default", "generation": 3},
            "spec": {"ports": [{"port": 80}]}}))
        .unwrap();
        let b = crate::service::Backend {
            kind: ferry_api::BackendKind::Pod,
            namespace: "default".into(),
            name: "p".into(),
            uid: String::new(),
            ip: "10.0.0.2".parse().unwrap(),
            vpc: "vpc1".into(),
            subnet: "s1".into(),
            node: None,
            labels: Default::default(),
        };
        ServiceOutcome {
            key: "default/s".into(),
            service: Arc::new(svc.clone()),
            cluster_ip: Some("10.96.0.5".parse().unwrap()),
            eip: None,
            ready: vec![b.clone(); ready],
            problem,
            selected: vec![b; total],
            phases: Default::default(),
            existing_probes: vec![],
        }
    }

    fn brief(s: &YusurServiceStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    type Case<'a> = (
        &'static str,
        ServiceOutcome,
        Option<&'a NbResult>,
        Vec<(&'static str, &'static str, &'static str)>,
    );

    #[test]
    fn table() {
        let nb_ok: NbResult = Ok(BTreeMap::new());
        let nb_row_error: NbResult = Ok(BTreeMap::from([(
            "default/s".to_string(),
            "bad row".to_string(),
        )]));
        let nb_down: NbResult = Err("connection refused".into());
        let cases: Vec<Case> = vec![
            (
                "healthy and programmed",
                outcome(None, 2, 2),
                Some(&nb_ok),
                vec![
                    ("Ready", "True", "EndpointsReady"),
                    ("Programmed", "True", "Programmed"),
                ],
            ),
            (
                "no ready backend yet",
                outcome(None, 0, 2),
                Some(&nb_ok),
                vec![
                    ("Ready", "False", "NoReadyEndpoints"),
                    ("Programmed", "True", "Programmed"),
                ],
            ),
            (
                "no backend is still programmed (its load balancers reject)",
                outcome(
                    Some(Problem::NoBackends {
                        empty_selector: false,
                    }),
                    0,
                    0,
                ),
                Some(&nb_ok),
                vec![
                    ("Ready", "False", "NoBackends"),
                    ("Programmed", "True", "Programmed"),
                ],
            ),
            (
                "a missing VPC keeps it out of OVN",
                outcome(Some(Problem::VpcNotFound(vec!["vpc9".into()])), 0, 0),
                Some(&nb_ok),
                vec![
                    ("Ready", "False", "VpcNotFound"),
                    ("Programmed", "False", "ProgrammingFailed"),
                ],
            ),
            (
                "a row error of this service",
                outcome(None, 1, 1),
                Some(&nb_row_error),
                vec![
                    ("Ready", "True", "EndpointsReady"),
                    ("Programmed", "False", "ProgrammingFailed"),
                ],
            ),
            (
                "the NB is down",
                outcome(None, 1, 1),
                Some(&nb_down),
                vec![
                    ("Ready", "True", "EndpointsReady"),
                    ("Programmed", "False", "ProgrammingFailed"),
                ],
            ),
            (
                "no network controller: no Programmed condition",
                outcome(None, 1, 1),
                None,
                vec![("Ready", "True", "EndpointsReady")],
            ),
        ];
        for (name, o, nb, want) in cases {
            let st = desired_status(&o, programmed(&o, nb), Timestamp::UNIX_EPOCH);
            let want: Vec<(String, String, String)> = want
                .into_iter()
                .map(|(a, b, c)| (a.into(), b.into(), c.into()))
                .collect();
            assert_eq!(brief(&st), want, "{name}");
            assert_eq!(st.observed_generation, Some(3), "{name}");
        }
    }

    #[test]
    fn transition_times_stay_while_a_condition_holds_and_changes_are_events() {
        let o = outcome(None, 1, 2);
        let t0 = Timestamp::from_second(1000).unwrap();
        let before = desired_status(&o, None, t0);
        let mut again = desired_status(&o, None, Timestamp::from_second(2000).unwrap());
        keep_transition_times(&mut again, &before);
        assert_eq!(again, before);
        assert!(changed_conditions(&before, &again).is_empty());
        let o2 = outcome(None, 0, 2);
        let mut flipped = desired_status(&o2, None, Timestamp::from_second(3000).unwrap());
        keep_transition_times(&mut flipped, &before);
        assert_eq!(
            flipped.conditions[0].last_transition_time.0.as_second(),
            3000
        );
        let changed: Vec<&str> = changed_conditions(&before, &flipped)
            .iter()
            .map(|c| c.reason.as_str())
            .collect();
        assert_eq!(changed, ["NoReadyEndpoints"]);
        assert_eq!(flipped.ready.as_deref(), Some("0/2"));
    }

    #[test]
    fn a_convergence_in_flight_keeps_the_programmed_condition_it_had() {
        let t0 = Timestamp::from_second(1000).unwrap();
        let nb_ok: NbResult = Ok(BTreeMap::new());
        // Programmed at generation 3 (the outcome's).
        let mut o = outcome(None, 2, 2);
        let shown = desired_status(&o, programmed(&o, Some(&nb_ok)), t0);
        let mut svc = (*o.service).clone();
        svc.status = Some(shown.clone());
        o.service = Arc::new(svc);
        assert!(programmed_now(&o, false), "unchanged and programmed");
        assert!(!programmed_now(&o, true), "its NB state changes");
        // Kept as it was, time and generation included, while the rest is new.
        let later = Timestamp::from_second(2000).unwrap();
        let mut s = desired_status(&o, None, later);
        keep_programmed(&mut s, &o.service);
        let kept = s.conditions.iter().find(|c| c.type_ == "Programmed");
        assert_eq!(
            kept,
            shown.conditions.iter().find(|c| c.type_ == "Programmed")
        );
        // A newer generation is not programmed yet, whatever the condition says.
        let mut svc = (*o.service).clone();
        svc.metadata.generation = Some(4);
        o.service = Arc::new(svc);
        assert!(
            !programmed_now(&o, false),
            "generation 4 was never programmed"
        );
        // Nothing to keep: no Programmed condition at all.
        let fresh = outcome(None, 2, 2);
        let mut s = desired_status(&fresh, Some(Ok(())), later);
        keep_programmed(&mut s, &fresh.service);
        assert_eq!(
            brief(&s),
            [("Ready".into(), "True".into(), "EndpointsReady".into())]
        );
        assert!(!programmed_now(&fresh, false));
    }
}
