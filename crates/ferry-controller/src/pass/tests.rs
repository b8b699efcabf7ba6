use super::*;

fn outcome(name: &str) -> ServiceOutcome {
    crate::nb_work::tests::outcome(name, "10.96.0.1")
}

fn programmed(writes: &Writes, key: &str) -> Option<(String, String)> {
    let status = writes.queued(key)?;
    let c = status.conditions.iter().find(|c| c.type_ == "Programmed")?;
    Some((c.status.clone(), c.reason.clone()))
}

fn planned(only: Option<&[&str]>, outcomes: Vec<ServiceOutcome>) -> Planned {
    Planned {
        full: only.is_none(),
        started: Instant::now(),
        seen: (None, None),
        prepare_ms: 0,
        plan_ms: 0,
        only: only.map(|o| o.iter().map(|k| format!("default/{k}")).collect()),
        ports: Vec::new(),
        states: nb_work::states_of(&outcomes),
        outcomes,
        kube: BTreeMap::new(),
        lb_ips: BTreeMap::new(),
    }
}

/// A full plan of three services: kept, moved (10.96.0.2) and gone.
fn full_of_three() -> Planned {
    planned(
        None,
        vec![
            crate::nb_work::tests::outcome("kept", "10.96.0.1"),
            crate::nb_work::tests::outcome("moved", "10.96.0.2"),
            crate::nb_work::tests::outcome("gone", "10.96.0.3"),
        ],
    )
}

/// A full plan made off the loop, overlaid with what the loop planned again: a
/// service planned again takes its new outcome and state, one deleted meanwhile
/// leaves, the others stay as the full plan had them.
#[test]
fn a_full_plan_takes_what_was_planned_again_over_its_own() {
    let mut full = full_of_three();
    let t = Instant::now();
    let mut again = planned(
        Some(&["moved", "gone"]),
        vec![crate::nb_work::tests::outcome("moved", "10.96.0.9")],
    );
    again.seen = (Some(t), None);
    full.overlay(again);
    let vips: BTreeMap<&str, Option<Ipv4Addr>> = full
        .outcomes
        .iter()
        .map(|o| (o.key.as_str(), o.cluster_ip))
        .collect();
    assert_eq!(
        vips,
        [
            ("default/kept", Some("10.96.0.1".parse().unwrap())),
            ("default/moved", Some("10.96.0.9".parse().unwrap())),
        ]
        .into()
    );
    assert_eq!(
        full.states.keys().collect::<Vec<_>>(),
        ["default/kept", "default/moved"]
    );
    assert_eq!(
        full.states["default/moved"],
        nb_work::states_of(&[crate::nb_work::tests::outcome("moved", "10.96.0.9")])["default/moved"]
    );
    assert_eq!(full.seen, (Some(t), None));
}

/// What the loop planned while the full plan was made stays as the loop has it: no
/// outcome from the plan (its status was written), the loop's NB state; a service the
/// loop removed meanwhile has none.
#[test]
fn a_full_plan_leaves_what_the_loop_planned_meanwhile() {
    let mut full = full_of_three();
    let loop_net = nb_work::states_of(&[crate::nb_work::tests::outcome("moved", "10.96.0.9")]);
    let touched: BTreeSet<String> = ["default/moved".into(), "default/gone".into()].into();
    full.keep_loop(&touched, &loop_net);
    let keys: Vec<&str> = full.outcomes.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["default/kept"]);
    assert_eq!(
        full.states.keys().collect::<Vec<_>>(),
        ["default/kept", "default/moved"]
    );
    assert_eq!(full.states["default/moved"], loop_net["default/moved"]);
}

#[test]
fn statuses_wait_for_their_convergence_and_a_failure_waits_for_the_next() {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let writes = Writes::new(tx);
    let mut st = PassState::default();
    st.awaiting_nb
        .insert("default/a".into(), (1, Arc::new(outcome("a"))));
    st.awaiting_nb
        .insert("default/b".into(), (2, Arc::new(outcome("b"))));
    let t0 = Instant::now();
    st.wait_seen(1, (Some(t0), None));
    // Run 1 fails: a shows it and waits for run 2; b waits for run 2 anyway.
    st.converged(1, &Err("NB down".into()), &writes);
    assert_eq!(
        programmed(&writes, "default/a"),
        Some(("False".into(), "ProgrammingFailed".into()))
    );
    assert_eq!(programmed(&writes, "default/b"), None);
    assert!(st.nb_left.full, "a failed convergence is owed again");
    let waiting: Vec<(&String, u64)> = st.awaiting_nb.iter().map(|(k, (r, _))| (k, *r)).collect();
    assert_eq!(
        waiting,
        [(&"default/a".to_string(), 2), (&"default/b".to_string(), 2)]
    );
    // Its changes' first sight waits for run 2 too, to be observed once it commits.
    assert_eq!(st.awaiting_seen.get(&2), Some(&(Some(t0), None)));
    // Run 2 succeeds: both are programmed, nothing waits.
    st.converged(2, &Ok(BTreeMap::new()), &writes);
    for k in ["default/a", "default/b"] {
        assert_eq!(
            programmed(&writes, k),
            Some(("True".into(), "Programmed".into())),
            "{k}"
        );
    }
    assert!(st.awaiting_nb.is_empty());
    assert!(st.awaiting_seen.is_empty());
}
