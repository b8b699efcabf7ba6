use super::*;
use serde_json::json;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn campaign_order_quick_and_only() {
    let chassis = strings(&["node1", "node2", "witness"]);
    let nodes = strings(&["node1", "node2"]);
    let names = |f: Vec<Fault>| f.iter().map(Fault::name).collect::<Vec<_>>();
    let cases = [
        (
            "the whole campaign, in the issue's order",
            false,
            vec![],
            vec![
                "ovs-vswitchd@node1",
                "ovs-vswitchd@node2",
                "ovs-vswitchd@witness",
                "ovn-controller@node1",
                "ovn-controller@node2",
                "ovn-controller@witness",
                "ovn-northd",
                "NB leader",
                "SB leader",
                "controller leader",
                "API server",
                "partition node2|API 30s",
                "gateway chassis",
                "agent@node1",
            ],
        ),
        (
            "quick: one chassis per data-plane daemon",
            true,
            vec![],
            vec![
                "ovs-vswitchd@node2",
                "ovn-controller@node1",
                "ovn-northd",
                "NB leader",
                "SB leader",
                "controller leader",
                "API server",
                "partition node2|API 30s",
                "gateway chassis",
                "agent@node1",
            ],
        ),
        (
            "only some",
            true,
            strings(&["apiserver", "gateway", "nb"]),
            vec!["NB leader", "API server", "gateway chassis"],
        ),
    ];
    for (name, quick, only, want) in cases {
        assert_eq!(
            names(campaign(&chassis, &nodes, 30, quick, &only)),
            want,
            "{name}"
        );
    }
}

#[test]
fn classes_follow_the_issue() {
    let cases = [
        (
            Fault::Vswitchd {
                chassis: "n".into(),
            },
            Class::DataPlane,
        ),
        (
            Fault::OvnController {
                chassis: "n".into(),
            },
            Class::DataPlane,
        ),
        (Fault::Northd, Class::ControlPlane),
        (Fault::NbLeader, Class::ControlPlane),
        (Fault::SbLeader, Class::ControlPlane),
        (Fault::ControllerLeader, Class::ControlPlane),
        (Fault::Apiserver, Class::ControlPlane),
        (Fault::GatewayChassis, Class::Gateway),
        (Fault::Agent { node: "n".into() }, Class::Node),
        (
            Fault::Partition {
                node: "n".into(),
                secs: 1,
            },
            Class::Node,
        ),
    ];
    for (f, want) in cases {
        assert_eq!(f.class(), want, "{}", f.name());
    }
}

fn s(flow: Flow, at: f64, ok: bool) -> Sample {
    Sample { flow, at, ok }
}

#[test]
fn summaries() {
    type Case = (&'static str, Vec<Sample>, Vec<f64>, (f64, f64), Traffic);
    let cases: Vec<Case> = vec![
        (
            "nothing failed",
            vec![
                s(Flow::ClusterIp, -0.5, true),
                s(Flow::ClusterIp, 0.5, true),
                s(Flow::Eip, 0.0, true),
                s(Flow::Eip, 1.0, true),
                s(Flow::Eip, 2.5, false),
            ],
            vec![],
            (-1.0, 2.0),
            Traffic {
                requests: 4,
                longest_gap_s: 1.5,
                eip_moved_s: Some(0.0),
                ..Traffic::default()
            },
        ),
        (
            "an outage in one flow: recovered at the first answer after the last failure",
            vec![
                s(Flow::ClusterIp, 0.0, true),
                s(Flow::ClusterIp, 0.2, false),
                s(Flow::ClusterIp, 0.4, false),
                s(Flow::ClusterIp, 0.6, true),
                s(Flow::ClusterIp, 0.8, false),
                s(Flow::ClusterIp, 1.0, true),
                s(Flow::ClusterIp, 2.0, true),
            ],
            vec![],
            (0.0, 2.0),
            Traffic {
                requests: 7,
                failed: 3,
                failed_by_flow: BTreeMap::from([("clusterIP".to_string(), 3)]),
                longest_gap_s: 1.0,
                recovered_s: 1.0,
                ..Traffic::default()
            },
        ),
        (
            "the EIP moves at the first answer after the first failure",
            vec![
                s(Flow::Eip, 0.1, false),
                s(Flow::Eip, 0.3, false),
                s(Flow::Eip, 1.7, true),
                s(Flow::Eip, 1.9, false),
                s(Flow::Eip, 2.5, true),
            ],
            vec![],
            (0.0, 3.0),
            Traffic {
                requests: 5,
                failed: 3,
                failed_by_flow: BTreeMap::from([("eip".to_string(), 3)]),
                longest_gap_s: 1.7,
                recovered_s: 2.5,
                eip_moved_s: Some(1.7),
                ..Traffic::default()
            },
        ),
        (
            "an EIP failure before the fault does not count as the move",
            vec![
                s(Flow::Eip, -0.6, false),
                s(Flow::Eip, -0.4, true),
                s(Flow::Eip, 0.2, false),
                s(Flow::Eip, 0.9, true),
            ],
            vec![],
            (-1.0, 1.0),
            Traffic {
                requests: 4,
                failed: 2,
                failed_by_flow: BTreeMap::from([("eip".to_string(), 2)]),
                longest_gap_s: 1.3,
                recovered_s: 0.9,
                eip_moved_s: Some(0.9),
                ..Traffic::default()
            },
        ),
        (
            "an EIP that never answers again: not moved, recovered only at the window's end",
            vec![s(Flow::Eip, -0.2, true), s(Flow::Eip, 0.5, false)],
            vec![],
            (-1.0, 3.0),
            Traffic {
                requests: 2,
                failed: 1,
                failed_by_flow: BTreeMap::from([("eip".to_string(), 1)]),
                longest_gap_s: 3.2,
                recovered_s: 3.0,
                eip_moved_s: None,
                ..Traffic::default()
            },
        ),
        (
            "failures near an unrelated abort are counted apart, others are not",
            vec![
                s(Flow::Dns, 0.0, true),
                s(Flow::Dns, 1.0, false),
                s(Flow::Dns, 7.0, false),
                s(Flow::Dns, 9.0, false),
                s(Flow::Dns, 9.5, true),
            ],
            vec![1.2],
            (0.0, 9.5),
            Traffic {
                requests: 5,
                failed: 3,
                failed_during_abort: 2,
                failed_by_flow: BTreeMap::from([("dns".to_string(), 3)]),
                longest_gap_s: 9.5,
                recovered_s: 9.5,
                ..Traffic::default()
            },
        ),
        (
            "sent up to 2.5 s before an abort (in flight when it died) or within 6 s after one logged before the window: apart",
            vec![
                s(Flow::Dns, -1.0, false),
                s(Flow::Dns, 0.0, true),
                s(Flow::Dns, 5.6, false),
                s(Flow::Dns, 6.1, false),
                s(Flow::Dns, 8.0, true),
            ],
            vec![-5.5, 8.5],
            (-1.0, 8.0),
            Traffic {
                requests: 5,
                failed: 3,
                failed_during_abort: 2,
                failed_by_flow: BTreeMap::from([("dns".to_string(), 3)]),
                longest_gap_s: 8.0,
                recovered_s: 8.0,
                ..Traffic::default()
            },
        ),
    ];
    for (name, samples, aborts, (start, end), want) in cases {
        assert_eq!(summarize(&samples, &aborts, start, end), want, "{name}");
    }
}

#[test]
fn verdicts() {
    let clean = Traffic::default();
    let failed = Traffic {
        failed: 3,
        failed_during_abort: 1,
        ..Traffic::default()
    };
    let aborted_only = Traffic {
        failed: 2,
        failed_during_abort: 2,
        ..Traffic::default()
    };
    let moved = |m: Option<f64>| Traffic {
        eip_moved_s: m,
        ..Traffic::default()
    };
    let no_audit: Vec<String> = vec![];
    type Case = (
        &'static str,
        Class,
        Traffic,
        Option<f64>,
        Option<f64>,
        Vec<String>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "data plane in time",
            Class::DataPlane,
            failed.clone(),
            Some(4.9),
            None,
            no_audit.clone(),
            vec![],
        ),
        (
            "data plane late",
            Class::DataPlane,
            clean.clone(),
            Some(5.2),
            None,
            no_audit.clone(),
            vec!["recovered after 5.20 s > 5 s"],
        ),
        (
            "data plane never",
            Class::DataPlane,
            clean.clone(),
            None,
            None,
            no_audit.clone(),
            vec!["not recovered"],
        ),
        (
            "control plane clean",
            Class::ControlPlane,
            clean.clone(),
            Some(1.0),
            Some(2.9),
            no_audit.clone(),
            vec![],
        ),
        (
            "control plane: failures count, aborts apart",
            Class::ControlPlane,
            failed.clone(),
            None,
            Some(1.0),
            no_audit.clone(),
            vec!["2 failed requests"],
        ),
        (
            "control plane: only abort failures",
            Class::ControlPlane,
            aborted_only,
            None,
            Some(1.0),
            no_audit.clone(),
            vec![],
        ),
        (
            "control plane: slow change",
            Class::ControlPlane,
            clean.clone(),
            None,
            Some(5.5),
            no_audit.clone(),
            vec!["next change programmed after 5.50 s > 3 s"],
        ),
        (
            "control plane: change never",
            Class::ControlPlane,
            clean.clone(),
            None,
            None,
            no_audit.clone(),
            vec!["next change never programmed"],
        ),
        (
            "gateway moved",
            Class::Gateway,
            moved(Some(2.0)),
            None,
            None,
            no_audit.clone(),
            vec![],
        ),
        (
            "gateway slow",
            Class::Gateway,
            moved(Some(3.5)),
            None,
            None,
            no_audit.clone(),
            vec!["EIP moved after 3.50 s > 3 s"],
        ),
        (
            "gateway never",
            Class::Gateway,
            moved(None),
            None,
            None,
            no_audit.clone(),
            vec!["EIP traffic never moved"],
        ),
        (
            "node: failures",
            Class::Node,
            failed,
            None,
            None,
            no_audit.clone(),
            vec!["2 failed requests"],
        ),
        (
            "audit problems fail any row",
            Class::Node,
            clean,
            None,
            None,
            vec!["missing a".to_string(), "extra b".to_string()],
            vec!["audit: missing a; extra b"],
        ),
    ];
    for (name, class, traffic, recovery, change, audit, want) in cases {
        assert_eq!(
            verdict(class, &traffic, recovery, change, &audit),
            strings(&want),
            "{name}"
        );
    }
}

#[test]
fn nb_audit() {
    let lb = |vips: Value| json!({"vips": vips});
    let baseline: NbSnapshot = BTreeMap::from([
        (
            "lb:a".to_string(),
            vec![lb(json!(["map", [["10.96.0.10:80", "10.0.1.2:8080"]]]))],
        ),
        ("lsp:x".to_string(), vec![Value::Null]),
        ("lsp:y".to_string(), vec![Value::Null]),
    ]);
    let now: NbSnapshot = BTreeMap::from([
        (
            "lb:a".to_string(),
            vec![lb(json!(["map", [["10.96.0.10:80", "10.0.1.3:8080"]]]))],
        ),
        ("lsp:x".to_string(), vec![Value::Null, Value::Null]),
        ("lsp:z".to_string(), vec![Value::Null]),
    ]);
    assert_eq!(
        audit_nb(&baseline, &now),
        strings(&[
            "changed lb:a",
            "duplicated lsp:x (2 rows)",
            "extra lsp:z",
            "missing lsp:y"
        ])
    );
    assert_eq!(audit_nb(&baseline, &baseline), Vec::<String>::new());
}

#[test]
fn process_audit() {
    let expected = strings(&["ovn-northd", "ovs-vswitchd@node1", "agent-node1"]);
    let running = BTreeMap::from([
        ("ovn-northd".to_string(), 1),
        ("ovs-vswitchd@node1".to_string(), 2),
        ("stray".to_string(), 1),
    ]);
    assert_eq!(
        audit_processes(&expected, &running),
        strings(&[
            "ovs-vswitchd@node1 running 2 times",
            "agent-node1 not running"
        ])
    );
}
