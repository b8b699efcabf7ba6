//! The fault campaign's decisions, pure: which faults run in which order, what the
//! traffic samples of one fault add up to, the verdict of a row against the issue's
//! targets, and the state audit's comparisons (NB rows against the baseline, process
//! counts against what should run). No clock, socket or process here.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A control-plane kill must program the next change within this long.
pub const CHANGE_TARGET_S: f64 = 3.0;
/// A vswitchd or ovn-controller kill must be recovered from within this long.
pub const DATAPLANE_TARGET_S: f64 = 5.0;
/// Losing the active gateway chassis must move EIP traffic within this long.
pub const GATEWAY_TARGET_S: f64 = 3.0;
/// A failed request sent up to this long after an unrelated `ovs-vswitchd` abort (or up
/// to [`ABORT_INFLIGHT_S`] before its logged time) is counted apart: the supervisor
/// restarts it and `ovn-controller` reprograms it within about that long.
pub const ABORT_OUTAGE_S: f64 = 6.0;
/// A request is timed by when it was sent and may take 2 s (the flows' limit): one sent
/// this long before an abort's logged time was still in flight when `ovs-vswitchd` died
/// (the limit plus 0.5 s for the log's timing).
pub const ABORT_INFLIGHT_S: f64 = 2.5;

/// One fault of the campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fault {
    /// `kill -9` of a chassis' `ovs-vswitchd` (restarted by the stack's supervisor).
    Vswitchd { chassis: String },
    /// `kill -9` of a chassis' `ovn-controller`.
    OvnController { chassis: String },
    /// `kill -9` of `ovn-northd`.
    Northd,
    /// `kill -9` of the NB RAFT leader.
    NbLeader,
    /// `kill -9` of the SB RAFT leader.
    SbLeader,
    /// `kill -9` of the controller replica holding the Lease; it is kept down for the
    /// measurement, so the standby must take over.
    ControllerLeader,
    /// `kill -9` of a node's agent.
    Agent { node: String },
    /// `kill -9` of the API server.
    Apiserver,
    /// The node's agent cut off the API server for `secs` (an nftables drop rule).
    Partition { node: String, secs: u64 },
    /// The chassis holding the external gateway loses `ovs-vswitchd` and `ovn-controller`
    /// at once, kept down for the measurement.
    GatewayChassis,
}

/// What the targets say about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Class {
    /// vswitchd, ovn-controller: recovered within [`DATAPLANE_TARGET_S`].
    DataPlane,
    /// Controller, API server, northd, NB or SB leader: 0 failed requests, the next
    /// change programmed within [`CHANGE_TARGET_S`].
    ControlPlane,
    /// The active gateway chassis: EIP traffic moved within [`GATEWAY_TARGET_S`].
    Gateway,
    /// A node agent or a partition: no target in the issue; 0 failed requests expected.
    Node,
}

impl Fault {
    /// The row's name.
    pub fn name(&self) -> String {
        match self {
            Fault::Vswitchd { chassis } => format!("ovs-vswitchd@{chassis}"),
            Fault::OvnController { chassis } => format!("ovn-controller@{chassis}"),
            Fault::Northd => "ovn-northd".into(),
            Fault::NbLeader => "NB leader".into(),
            Fault::SbLeader => "SB leader".into(),
            Fault::ControllerLeader => "controller leader".into(),
            Fault::Agent { node } => format!("agent@{node}"),
            Fault::Apiserver => "API server".into(),
            Fault::Partition { node, secs } => format!("partition {node}|API {secs}s"),
            Fault::GatewayChassis => "gateway chassis".into(),
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Fault::Vswitchd { .. } | Fault::OvnController { .. } => Class::DataPlane,
            Fault::Northd
            | Fault::NbLeader
            | Fault::SbLeader
            | Fault::ControllerLeader
            | Fault::Apiserver => Class::ControlPlane,
            Fault::GatewayChassis => Class::Gateway,
            Fault::Agent { .. } | Fault::Partition { .. } => Class::Node,
        }
    }

    /// The short name `--only` takes (`vswitchd`, `ovn-controller`, `northd`, `nb`, `sb`,
    /// `controller`, `agent`, `apiserver`, `partition`, `gateway`).
    pub fn short(&self) -> &'static str {
        match self {
            Fault::Vswitchd { .. } => "vswitchd",
            Fault::OvnController { .. } => "ovn-controller",
            Fault::Northd => "northd",
            Fault::NbLeader => "nb",
            Fault::SbLeader => "sb",
            Fault::ControllerLeader => "controller",
            Fault::Agent { .. } => "agent",
            Fault::Apiserver => "apiserver",
            Fault::Partition { .. } => "partition",
            Fault::GatewayChassis => "gateway",
        }
    }
}

/// The order: each chassis' vswitchd, each ovn-controller, northd, the NB and SB
/// leaders, the controller leader, the API server, the partition of the last node, the
/// gateway chassis, and a node agent last (see the comment there). `quick`: one chassis for each data-plane daemon (the
/// second node's vswitchd, the first node's ovn-controller) and no witness; `only` keeps
/// the faults whose [`Fault::short`] it names (all when empty).
pub fn campaign(
    chassis: &[String],
    nodes: &[String],
    partition_s: u64,
    quick: bool,
    only: &[String],
) -> Vec<Fault> {
    let mut out = Vec::new();
    let (vs, oc): (Vec<&String>, Vec<&String>) = if quick {
        (
            nodes.get(1).or(nodes.first()).into_iter().collect(),
            nodes.first().into_iter().collect(),
        )
    } else {
        (chassis.iter().collect(), chassis.iter().collect())
    };
    out.extend(
        vs.into_iter()
            .map(|c| Fault::Vswitchd { chassis: c.clone() }),
    );
    out.extend(
        oc.into_iter()
            .map(|c| Fault::OvnController { chassis: c.clone() }),
    );
    out.extend([
        Fault::Northd,
        Fault::NbLeader,
        Fault::SbLeader,
        Fault::ControllerLeader,
    ]);
    out.push(Fault::Apiserver);
    if let Some(n) = nodes.last() {
        out.push(Fault::Partition {
            node: n.clone(),
            secs: partition_s,
        });
    }
    out.push(Fault::GatewayChassis);
    // Last: a lab agent's death breaks its pods' stdout/stderr pipes (it copies them into
    // the container logs), and a server that logs each request (every lab backend) then
    // answers nothing; the rows after it would measure that, not their own fault.
    if let Some(n) = nodes.first() {
        out.push(Fault::Agent { node: n.clone() });
    }
    out.retain(|f| only.is_empty() || only.iter().any(|o| o == f.short()));
    out
}

/// Which traffic a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Flow {
    /// Scenario 1: a pod to a ClusterIP in its VPC.
    ClusterIp,
    /// Scenario 3: the outside client to an EIP.
    Eip,
    /// A DNS query loop from a pod.
    Dns,
}

/// One request: when it was sent (seconds from the fault) and whether it was answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub flow: Flow,
    pub at: f64,
    pub ok: bool,
}

/// What the samples of one fault's window add up to.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub requests: usize,
    /// Failed requests, those during an unrelated abort included.
    pub failed: usize,
    /// Of `failed`, those within [`ABORT_OUTAGE_S`] of an unrelated `ovs-vswitchd` abort.
    pub failed_during_abort: usize,
    /// Failed requests per flow.
    pub failed_by_flow: BTreeMap<String, usize>,
    /// The longest time without an answer in any flow (between the sends of two answered
    /// requests, or from the window's start or to its end).
    pub longest_gap_s: f64,
    /// The send time of the first answered request after the last failed one, in the
    /// flow that took longest (0 when nothing failed).
    pub recovered_s: f64,
    /// Scenario 3: the first answer after the first failure from the fault on (0 when
    /// nothing failed).
    pub eip_moved_s: Option<f64>,
}

fn flow_name(f: Flow) -> String {
    match f {
        Flow::ClusterIp => "clusterIP",
        Flow::Eip => "eip",
        Flow::Dns => "dns",
    }
    .into()
}

/// Adds up samples from `start` to `end` (seconds from the fault; `start` is negative:
/// the window opens before the fault). `aborts`: times of unrelated `ovs-vswitchd`
/// aborts, seconds from the fault.
pub fn summarize(samples: &[Sample], aborts: &[f64], start: f64, end: f64) -> Traffic {
    let mut t = Traffic::default();
    let mut flows: BTreeMap<Flow, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.at >= start && s.at <= end) {
        flows.entry(s.flow).or_default().push(s);
    }
    for (flow, mut list) in flows {
        list.sort_by(|a, b| a.at.total_cmp(&b.at));
        t.requests += list.len();
        let failed: Vec<&&Sample> = list.iter().filter(|s| !s.ok).collect();
        t.failed += failed.len();
        t.failed_during_abort += failed
            .iter()
            .filter(|s| {
                aborts
                    .iter()
                    .any(|a| s.at >= a - ABORT_INFLIGHT_S && s.at <= a + ABORT_OUTAGE_S)
            })
            .count();
        if !failed.is_empty() {
            t.failed_by_flow.insert(flow_name(flow), failed.len());
        }
        let mut last_ok = start;
        for s in list.iter().filter(|s| s.ok) {
            t.longest_gap_s = t.longest_gap_s.max(s.at - last_ok);
            last_ok = s.at;
        }
        t.longest_gap_s = t.longest_gap_s.max(end - last_ok);
        let last_fail = failed.last().map(|s| s.at);
        if let Some(lf) = last_fail {
            let back = list
                .iter()
                .find(|s| s.ok && s.at > lf)
                .map(|s| s.at)
                .unwrap_or(end);
            t.recovered_s = t.recovered_s.max(back);
        }
        if flow == Flow::Eip {
            // From the fault on: a failure before it (an unrelated outage) moves nothing.
            t.eip_moved_s = match failed.iter().find(|s| s.at >= 0.0) {
                None => Some(0.0),
                Some(ff) => list.iter().find(|s| s.ok && s.at > ff.at).map(|s| s.at),
            };
        }
    }
    t
}

/// One row of the campaign: what was done and measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub fault: Fault,
    pub name: String,
    pub class: Class,
    /// What was killed (a process name and PID), or the rule added.
    pub target: String,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Fault -> the killed part running again (a new PID; for a leader, a leader elected;
    /// for a partition, the rule removed).
    pub restored_s: Option<f64>,
    /// max(traffic recovered, restored): time to full recovery.
    pub recovery_s: Option<f64>,
    /// The next change (a new YusurService) was acknowledged by the API this long after
    /// the fault, and answered from its client this long after the acknowledgement.
    pub change_acked_s: Option<f64>,
    pub change_programmed_s: Option<f64>,
    /// The audit's problems when it gave up (empty: clean), and how long after the
    /// window it took to be clean.
    pub audit: Vec<String>,
    pub audit_clean_after_s: Option<f64>,
    /// Misses of the targets (empty: passed).
    pub misses: Vec<String>,
    pub pass: bool,
    /// Anything the reader should know (an unrelated abort, a hold released).
    pub notes: Vec<String>,
}

/// The targets a row is held to, as the table prints them.
pub fn target_text(class: Class) -> String {
    match class {
        Class::DataPlane => format!("recovered <= {DATAPLANE_TARGET_S} s"),
        Class::ControlPlane => {
            format!("0 failed, next change <= {CHANGE_TARGET_S} s")
        }
        Class::Gateway => format!("EIP moved <= {GATEWAY_TARGET_S} s"),
        Class::Node => "0 failed".into(),
    }
    .to_string()
        + ", audit clean"
}

/// The misses of a row against its class's targets (empty: it passed). Failed requests
/// during an unrelated abort do not count against a target; they are printed.
pub fn verdict(
    class: Class,
    traffic: &Traffic,
    recovery_s: Option<f64>,
    change_programmed_s: Option<f64>,
    audit: &[String],
) -> Vec<String> {
    let mut misses = Vec::new();
    let failed = traffic.failed - traffic.failed_during_abort;
    match class {
        Class::DataPlane => match recovery_s {
            Some(r) if r <= DATAPLANE_TARGET_S => {}
            Some(r) => misses.push(format!("recovered after {r:.2} s > {DATAPLANE_TARGET_S} s")),
            None => misses.push("not recovered".into()),
        },
        Class::ControlPlane => {
            if failed > 0 {
                misses.push(format!("{failed} failed requests"));
            }
            match change_programmed_s {
                Some(c) if c <= CHANGE_TARGET_S => {}
                Some(c) => misses.push(format!(
                    "next change programmed after {c:.2} s > {CHANGE_TARGET_S} s"
                )),
                None => misses.push("next change never programmed".into()),
            }
        }
        Class::Gateway => match traffic.eip_moved_s {
            Some(m) if m <= GATEWAY_TARGET_S => {}
            Some(m) => misses.push(format!("EIP moved after {m:.2} s > {GATEWAY_TARGET_S} s")),
            None => misses.push("EIP traffic never moved".into()),
        },
        Class::Node => {
            if failed > 0 {
                misses.push(format!("{failed} failed requests"));
            }
        }
    }
    if !audit.is_empty() {
        misses.push(format!("audit: {}", audit.join("; ")));
    }
    misses
}

/// The NB rows Ferry owns, by key: (table, content compared after recovery). Only a
/// load balancer's `vips` are compared (its backends follow health, which is whole
/// again after recovery); other rows are compared by presence.
pub type NbSnapshot = BTreeMap<String, Vec<Value>>;

/// NB problems now against the baseline taken before the campaign (the rows the
/// controller built with `ferry_net::build_desired` from the same objects): keys held by
/// more than one row, keys missing, keys not in the baseline, load balancers whose VIPs
/// differ.
pub fn audit_nb(baseline: &NbSnapshot, now: &NbSnapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, rows) in now {
        if rows.len() > 1 {
            out.push(format!("duplicated {k} ({} rows)", rows.len()));
        }
        match baseline.get(k) {
            None => out.push(format!("extra {k}")),
            Some(b) if b.first() != rows.first() && rows.len() == 1 => {
                out.push(format!("changed {k}"))
            }
            Some(_) => {}
        }
    }
    for k in baseline.keys() {
        if !now.contains_key(k) {
            out.push(format!("missing {k}"));
        }
    }
    out
}

/// Process problems: every expected process name should run exactly once.
pub fn audit_processes(expected: &[String], running: &BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    for name in expected {
        match running.get(name).copied().unwrap_or(0) {
            1 => {}
            0 => out.push(format!("{name} not running")),
            n => out.push(format!("{name} running {n} times")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
