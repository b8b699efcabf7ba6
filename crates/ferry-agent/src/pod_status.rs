//! The status of a Pod as the kubelet writes it, from what the lab runtime observed:
//! `phase` (Pending until a container runs, Running while one runs or restarts, Succeeded or
//! Failed once all ended for good under the restart policy), the conditions
//! (`PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`, `PodScheduled`,
//! each keeping its `lastTransitionTime` until its status changes), `podIP(s)`,
//! `hostIP(s)`, `startTime` and `containerStatuses` (state, lastState, ready, started,
//! restartCount, image). Pure: [`status`] takes plain data and the previous status.

use serde_json::{Value, json};

use crate::runtime::{RestartPolicy, Terminated};

/// One container as the runtime saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    pub name: String,
    pub image: String,
    pub running: bool,
    pub ready: bool,
    /// Start of the current (or last) run.
    pub started_at: jiff::Timestamp,
    pub restarts: i32,
    /// Exited, and waiting out the back-off before its restart.
    pub backing_off: bool,
    pub last: Option<Terminated>,
}

/// One Pod as the runtime saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRun {
    pub containers: Vec<ContainerRun>,
    pub restart: RestartPolicy,
    pub pod_ip: String,
    pub host_ip: Option<String>,
    pub start_time: jiff::Timestamp,
}

fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn terminated(t: &Terminated) -> Value {
    json!({"terminated": {"exitCode": t.exit_code, "reason": t.reason,
        "startedAt": ts(t.started_at), "finishedAt": ts(t.finished_at)}})
}

/// The phase, as the kubelet's `getPhase` decides it for containers without init ones.
pub fn phase(run: &PodRun) -> &'static str {
    let going = run.containers.iter().any(|c| c.running || c.backing_off);
    if going {
        return "Running";
    }
    let ended: Vec<&Terminated> = run
        .containers
        .iter()
        .filter_map(|c| c.last.as_ref())
        .collect();
    if run.containers.is_empty() || ended.len() < run.containers.len() {
        return "Pending";
    }
    if ended.iter().all(|t| t.exit_code == 0) {
        "Succeeded"
    } else if run.restart == RestartPolicy::Never {
        "Failed"
    } else {
        // OnFailure/Always restart a failed container: it is backing off, not finished.
        "Running"
    }
}

/// The `status` object (without the `{"status": ...}` wrapper); `prev` is the status last
/// written, whose condition transition times are kept where the status did not change.
pub fn status(run: &PodRun, prev: Option<&Value>, now: jiff::Timestamp) -> Value {
    let phase = phase(run);
    let finished = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = run
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let all_ready = unready.is_empty() && phase == "Running";
    let since = |type_: &str, st: &str| -> String {
        prev.and_then(|p| p["conditions"].as_array())
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_ && c["status"] == st)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(String::from)
            .unwrap_or_else(|| ts(now))
    };
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let st = if ok { "True" } else { "False" };
        let mut c = json!({"type": type_, "status": st, "lastProbeTime": null,
            "lastTransitionTime": since(type_, st)});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let (reason, message) = if finished {
        (Some("PodCompleted"), None)
    } else if all_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let conditions = vec![
        cond("PodReadyToStartContainers", !finished, None, None),
        cond("Initialized", true, None, None),
        cond("Ready", all_ready, reason, message.clone()),
        cond("ContainersReady", all_ready, reason, message),
        cond("PodScheduled", true, None, None),
    ];
    let statuses: Vec<Value> = run
        .containers
        .iter()
        .map(|c| {
            let (state, last) = if c.running {
                (
                    json!({"running": {"startedAt": ts(c.started_at)}}),
                    c.last.as_ref().map(terminated).unwrap_or_else(|| json!({})),
                )
            } else if c.backing_off {
                (
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off restarting failed container {}", c.name)}}),
                    c.last.as_ref().map(terminated).unwrap_or_else(|| json!({})),
                )
            } else if let Some(t) = &c.last {
                (terminated(t), json!({}))
            } else {
                (
                    json!({"waiting": {"reason": "ContainerCreating"}}),
                    json!({}),
                )
            };
            json!({"name": c.name, "image": c.image, "imageID": "",
                "containerID": format!("ferry-lab://{}", c.name),
                "ready": c.ready && c.running, "started": c.running, "restartCount": c.restarts,
                "state": state, "lastState": last})
        })
        .collect();
    let mut s = json!({"phase": phase, "conditions": conditions,
        "podIP": run.pod_ip, "podIPs": [{"ip": run.pod_ip}],
        "startTime": ts(run.start_time), "containerStatuses": statuses, "qosClass": "BestEffort"});
    if let Some(h) = &run.host_ip {
        s["hostIP"] = json!(h);
        s["hostIPs"] = json!([{"ip": h}]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn run(policy: RestartPolicy, containers: Vec<ContainerRun>) -> PodRun {
        PodRun {
            containers,
            restart: policy,
            pod_ip: "10.16.0.5".into(),
            host_ip: Some("100.64.0.2".into()),
            start_time: t("2026-11-28T10:00:00Z"),
        }
    }

    fn c(running: bool, ready: bool, backing_off: bool, exit: Option<i32>) -> ContainerRun {
        ContainerRun {
            name: "web".into(),
            image: "nginx:1.27".into(),
            running,
            ready,
            started_at: t("2026-11-28T10:00:01Z"),
            restarts: if exit.is_some() && running { 1 } else { 0 },
            backing_off,
            last: exit.map(|code| Terminated {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at: t("2026-11-28T10:00:01Z"),
                finished_at: t("2026-11-28T10:00:09Z"),
            }),
        }
    }

    #[test]
    fn phases() {
        use RestartPolicy::*;
        let cases = [
            (
                "not started",
                Always,
                vec![c(false, false, false, None)],
                "Pending",
            ),
            (
                "running",
                Always,
                vec![c(true, true, false, None)],
                "Running",
            ),
            (
                "restarting after a crash",
                Always,
                vec![c(false, false, true, Some(1))],
                "Running",
            ),
            (
                "done under Never",
                Never,
                vec![c(false, false, false, Some(0))],
                "Succeeded",
            ),
            (
                "failed under Never",
                Never,
                vec![c(false, false, false, Some(2))],
                "Failed",
            ),
            (
                "done under OnFailure",
                OnFailure,
                vec![c(false, false, false, Some(0))],
                "Succeeded",
            ),
            (
                "one of two still runs",
                Never,
                vec![c(false, false, false, Some(1)), c(true, true, false, None)],
                "Running",
            ),
        ];
        for (what, policy, cs, want) in cases {
            assert_eq!(phase(&run(policy, cs)), want, "{what}");
        }
    }

    #[test]
    fn a_running_ready_pod_reads_like_the_kubelets() {
        let now = t("2026-11-28T10:00:02Z");
        let got = status(
            &run(RestartPolicy::Always, vec![c(true, true, false, None)]),
            None,
            now,
        );
        let at = "2026-11-28T10:00:02Z";
        let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": at});
        assert_eq!(
            got,
            json!({"phase": "Running",
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                    cond("ContainersReady"), cond("PodScheduled")],
                "podIP": "10.16.0.5", "podIPs": [{"ip": "10.16.0.5"}],
                "hostIP": "100.64.0.2", "hostIPs": [{"ip": "100.64.0.2"}],
                "startTime": "2026-11-28T10:00:00Z", "qosClass": "BestEffort",
                "containerStatuses": [{"name": "web", "image": "nginx:1.27", "imageID": "",
                    "containerID": "ferry-lab://web", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-28T10:00:01Z"}}, "lastState": {}}]})
        );
    }

    #[test]
    fn transitions_keep_their_time_until_the_status_changes() {
        let first = status(
            &run(RestartPolicy::Always, vec![c(true, false, false, None)]),
            None,
            t("2026-11-28T10:00:02Z"),
        );
        let ready = |s: &Value| {
            let c = s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()
                .clone();
            (
                c["status"].clone(),
                c["lastTransitionTime"].clone(),
                c["message"].clone(),
            )
        };
        assert_eq!(
            ready(&first),
            (
                json!("False"),
                json!("2026-11-28T10:00:02Z"),
                json!("containers with unready status: [web]")
            )
        );
        // Still not ready later: same transition time.
        let again = status(
            &run(RestartPolicy::Always, vec![c(true, false, false, None)]),
            Some(&first),
            t("2026-11-28T10:00:07Z"),
        );
        assert_eq!(again, first);
        // Ready: a new transition.
        let now_ready = status(
            &run(RestartPolicy::Always, vec![c(true, true, false, None)]),
            Some(&again),
            t("2026-11-28T10:00:09Z"),
        );
        assert_eq!(
            ready(&now_ready),
            (json!("True"), json!("2026-11-28T10:00:09Z"), Value::Null)
        );
    }

    #[test]
    fn crash_loop_and_completion_states() {
        let now = t("2026-11-28T10:00:10Z");
        let s = status(
            &run(RestartPolicy::Always, vec![c(false, false, true, Some(1))]),
            None,
            now,
        );
        let cs = &s["containerStatuses"][0];
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(cs["ready"], false);
        let s = status(
            &run(RestartPolicy::Never, vec![c(false, false, false, Some(0))]),
            None,
            now,
        );
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(
            s["containerStatuses"][0]["state"],
            json!({"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2026-11-28T10:00:01Z", "finishedAt": "2026-11-28T10:00:09Z"}})
        );
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("PodCompleted"))
        );
    }
}
