//! `ferry lab faults` (issue 15 part 4): with traffic running on scenario 1 (a pod to a
//! ClusterIP in its VPC), scenario 3 (the outside client to an EIP) and a DNS query loop,
//! kills the lab's parts one at a time (`kill -9`): each chassis' `ovs-vswitchd` and
//! `ovn-controller`, `ovn-northd`, the NB and SB RAFT leaders, the controller leader (the
//! standby must take over), a node agent, the API server; then cuts a node off the API
//! server; then takes the active gateway chassis down. Each fault is one row: failed
//! requests, the longest gap, time to full recovery, when the next change (a new
//! YusurService) was answered, and a state audit after recovery; the verdict holds the row
//! to the targets ([`plan::verdict`]).
//!
//! Needs a lab from `ferry lab up --chassis-per-node --ovn-raft 3` with the roles as
//! processes (`FERRY_ROLE_PROCESSES=true`, see [`roles`]). Decisions are in [`plan`]; this
//! file is the loop around them and must not kill anything it did not find in the lab's
//! own pidfiles.

pub mod audit;
pub mod inject;
pub mod plan;
mod report;
pub mod roles;
pub mod traffic;

pub use report::print;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ferry_api::YusurService;
use ferry_ovn_stack::Daemon;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::lab::LabDir;
use inject::Lab;
use plan::{Fault, Flow, Row};

/// What to run.
#[derive(Debug, Clone)]
pub struct FaultsOptions {
    /// Seconds the partition lasts.
    pub partition_s: u64,
    /// One chassis per data-plane daemon instead of every chassis.
    pub quick: bool,
    /// Only these faults ([`Fault::short`] names); all when empty.
    pub only: Vec<String>,
    /// Write the JSON here too.
    pub out: Option<PathBuf>,
}

/// What the campaign found.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub rows: Vec<Row>,
    /// Problems of the audit before the first fault (the baseline's own state).
    pub baseline_audit: Vec<String>,
    /// `ovs-vswitchd` aborts (OVS 3.1 userspace conntrack) logged during the campaign.
    pub vswitchd_aborts: usize,
    pub pass: bool,
}

fn lab_config(lab: &LabDir) -> Result<(Lab, Vec<String>, Vec<String>), String> {
    let marker: serde_json::Value = std::fs::read(lab.dir.join("lab.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("no lab in {} (run `ferry lab up`)", lab.dir.display()))?;
    let ovn = lab.data().join("ovn");
    let nodes: Vec<String> = crate::topology::NODES
        .iter()
        .map(|n| n.to_string())
        .collect();
    let chassis = ferry_ovn_stack::fabric::chassis_nodes(&crate::topology::NODES);
    let api_port = marker["listen"]
        .as_str()
        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or(6444);
    let l = Lab {
        data: lab.data(),
        raft: inject::raft_members(&ovn),
        ovn,
        api_port,
    };
    let mut missing = Vec::new();
    if marker["chassisPerNode"] != true || !l.chassis_dir(&nodes[0]).exists() {
        missing.push("--chassis-per-node");
    }
    if l.raft < 3 {
        missing.push("--ovn-raft 3");
    }
    if roles::live_pid(&l.data, roles::APISERVER).is_none() {
        missing.push("the roles as processes (FERRY_ROLE_PROCESSES=true or --role-processes)");
    }
    if !missing.is_empty() {
        return Err(format!(
            "ferry lab faults needs a lab started with {} (e.g. `FERRY_ROLE_PROCESSES=true ferry lab up --dir {} --chassis-per-node --ovn-raft 3`)",
            missing.join(", "),
            lab.dir.display()
        ));
    }
    Ok((l, chassis, nodes))
}

/// The flows' targets from `lab status`.
async fn targets(lab: &LabDir) -> Result<Vec<traffic::Target>, String> {
    let st = crate::lab::status(lab).await.map_err(|e| e.to_string())?;
    let target = |i: usize| st["scenarios"][i]["target"].as_str().map(String::from);
    let (Some(s1), Some(s3)) = (target(0), target(2)) else {
        return Err("scenarios 1 and 3 have no address yet".into());
    };
    Ok(vec![
        traffic::Target {
            flow: Flow::ClusterIp,
            client: st["scenarios"][0]["client"]
                .as_str()
                .unwrap_or("client-vpc1")
                .into(),
            target: s1,
        },
        traffic::Target {
            flow: Flow::Eip,
            client: st["scenarios"][2]["client"]
                .as_str()
                .unwrap_or("ext-client")
                .into(),
            target: s3,
        },
        traffic::Target {
            flow: Flow::Dns,
            client: "client-vpc1".into(),
            target: "ysvc1.default.svc.cluster.local".into(),
        },
    ])
}

/// A fault in progress: what was hit, how to tell it runs again, what to release.
struct Injected {
    target: String,
    restored: Box<dyn Fn(f64) -> bool + Send>,
    /// Released (holds, the partition) once this many seconds passed, or at the window's
    /// end when `None`.
    release_after: Option<f64>,
    release: Option<Box<dyn FnOnce() + Send>>,
    /// The window lasts at least this long.
    min_window: f64,
}

fn kill_daemon(dir: PathBuf, d: Daemon, label: &str) -> Result<Injected, String> {
    let pid = inject::daemon_pid(&dir, d).ok_or(format!("no running {label}"))?;
    inject::kill9(pid)?;
    Ok(Injected {
        target: format!("{label} (pid {pid})"),
        restored: Box::new(move |_| inject::daemon_pid(&dir, d).is_some_and(|p| p != pid)),
        release_after: None,
        release: None,
        min_window: 8.0,
    })
}

fn kill_leader(lab: &Lab, d: Daemon) -> Result<Injected, String> {
    let (name, pid) = inject::leader(lab, d).ok_or("no leader")?;
    inject::kill9(pid)?;
    let l = lab.clone();
    let n = name.clone();
    Ok(Injected {
        target: format!("{name} (pid {pid}, leader)"),
        restored: Box::new(move |_| {
            inject::member_pid(&l, &n).is_some_and(|p| p != pid) && inject::leader(&l, d).is_some()
        }),
        release_after: None,
        release: None,
        min_window: 8.0,
    })
}

fn kill_role(lab: &Lab, name: &str, hold: bool) -> Result<Injected, String> {
    let pid = roles::live_pid(&lab.data, name).ok_or(format!("no running role {name}"))?;
    if hold {
        inject::hold_role(&lab.data, name)?;
    }
    inject::kill9(pid)?;
    let (data, n) = (lab.data.clone(), name.to_string());
    let (data2, n2) = (data.clone(), n.clone());
    Ok(Injected {
        target: format!(
            "{name} (pid {pid}){}",
            if hold { ", held down" } else { "" }
        ),
        restored: Box::new(move |_| roles::live_pid(&data, &n).is_some_and(|p| p != pid)),
        release_after: hold.then_some(15.0),
        release: hold.then(|| {
            Box::new(move || inject::release_role(&data2, &n2)) as Box<dyn FnOnce() + Send>
        }),
        min_window: 8.0,
    })
}

/// The controller replica holding the Lease.
async fn controller_leader(client: &kube::Client) -> Result<String, String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let l = leases
        .get("ferry-controller")
        .await
        .map_err(|e| format!("the controller Lease: {e}"))?;
    l.spec
        .and_then(|s| s.holder_identity)
        .filter(|h| roles::CONTROLLERS.contains(&h.as_str()))
        .ok_or("the controller Lease is held by no role replica".into())
}

async fn inject(
    f: &Fault,
    lab: &Lab,
    client: &kube::Client,
    nodes: &[String],
) -> Result<Injected, String> {
    match f {
        Fault::Vswitchd { chassis } => kill_daemon(
            lab.chassis_dir(chassis),
            Daemon::Vswitchd,
            &format!("ovs-vswitchd@{chassis}"),
        ),
        Fault::OvnController { chassis } => kill_daemon(
            lab.chassis_dir(chassis),
            Daemon::Controller,
            &format!("ovn-controller@{chassis}"),
        ),
        Fault::Northd => kill_daemon(lab.ovn.clone(), Daemon::Northd, "ovn-northd"),
        Fault::NbLeader => kill_leader(lab, Daemon::NbDb),
        Fault::SbLeader => kill_leader(lab, Daemon::SbDb),
        Fault::ControllerLeader => {
            let who = controller_leader(client).await?;
            kill_role(lab, &who, true)
        }
        Fault::Agent { node } => kill_role(lab, &roles::agent(node), false),
        Fault::Apiserver => kill_role(lab, roles::APISERVER, false),
        Fault::Partition { node, secs } => {
            let i = nodes.iter().position(|n| n == node).unwrap_or(0);
            let gid = roles::AGENT_GID_BASE + i as u32 + 1;
            let rule = inject::partition(gid, lab.api_port)?;
            let secs = *secs as f64;
            Ok(Injected {
                target: format!("nft table inet {}: {rule}", inject::NFT_TABLE),
                restored: Box::new(move |t| t >= secs),
                release_after: Some(secs),
                release: Some(Box::new(|| {
                    if let Err(e) = inject::heal() {
                        tracing::error!(error = %e, "removing the partition");
                    }
                })),
                min_window: secs + 8.0,
            })
        }
        Fault::GatewayChassis => {
            let gw = crate::chassis::Placement::read(&lab.ovn, true)
                .gateway()
                .map(String::from)
                .ok_or("no chassis holds the external gateway")?;
            let dir = lab.chassis_dir(&gw);
            let pids: Vec<i32> = [Daemon::Vswitchd, Daemon::Controller]
                .iter()
                .filter_map(|d| inject::daemon_pid(&dir, *d))
                .collect();
            if pids.len() != 2 {
                return Err(format!("{gw}: its daemons are not both running"));
            }
            for d in [Daemon::Vswitchd, Daemon::Controller] {
                inject::hold_daemon(&dir, d)?;
            }
            for p in &pids {
                inject::kill9(*p)?;
            }
            let dir2 = dir.clone();
            Ok(Injected {
                target: format!(
                    "{gw}: ovs-vswitchd (pid {}) + ovn-controller (pid {}), held down 15 s",
                    pids[0], pids[1]
                ),
                restored: Box::new(move |_| {
                    [Daemon::Vswitchd, Daemon::Controller]
                        .iter()
                        .all(|d| inject::daemon_pid(&dir, *d).is_some_and(|p| !pids.contains(&p)))
                }),
                release_after: Some(15.0),
                release: Some(Box::new(move || {
                    for d in [Daemon::Vswitchd, Daemon::Controller] {
                        inject::release_daemon(&dir2, d);
                    }
                })),
                min_window: 18.0,
            })
        }
    }
}

/// What became of the next change: acknowledged (seconds from the fault), answered
/// (seconds from the acknowledgement), and the last error while it was not.
type Change = (Option<f64>, Option<f64>, Option<String>);

/// How long one request to the next change's ClusterIP may take. Short, because a
/// connection made before the client's node has the new VIP (with a backend) in its
/// socket LB was not answered at all (curl never connected within its 2 s: no reject,
/// and the retransmitted SYNs did not get through either), so with the flows' 2 s limit
/// one early try put up to 2 s into the figure (an NB leader run: the socket LB had the
/// VIP 1.74 s after the kill, the change was reported at 3.82 s). Every try is a new
/// connection, so this only sets the figure's resolution.
const CHANGE_TRY_S: f64 = 0.5;

/// The next change: a new YusurService in vpc1 over scenario 1's backends.
async fn next_change(
    client: kube::Client,
    name: String,
    client_host: String,
    t0: Instant,
) -> Change {
    let api: Api<YusurService> = Api::namespaced(client, "default");
    let obj: YusurService = match serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": name, "namespace": "default", "labels": {"ferry.io/faults": "next-change"}},
        "spec": {"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"svc": "svc1-ep"}}}))
    {
        Ok(o) => o,
        Err(e) => return (None, None, Some(e.to_string())),
    };
    let deadline = Duration::from_secs(40);
    let mut acked = None;
    let mut last_error = None;
    while t0.elapsed() < deadline {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            api.create(&PostParams::default(), &obj),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => {
                acked = Some(t0.elapsed());
                break;
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                acked = Some(t0.elapsed());
                break;
            }
            Ok(Err(e)) => last_error = Some(format!("create: {e}")),
            Err(_) => last_error = Some("create: no answer within 5 s".into()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(acked) = acked else {
        return (None, None, last_error);
    };
    while t0.elapsed() < deadline {
        let ip = match tokio::time::timeout(Duration::from_secs(5), api.get(&name)).await {
            Ok(Ok(y)) => y.status.and_then(|s| s.cluster_ip),
            Ok(Err(e)) => {
                last_error = Some(format!("get: {e}"));
                None
            }
            Err(_) => {
                last_error = Some("get: no answer within 5 s".into());
                None
            }
        };
        if ip.is_none() && last_error.is_none() {
            last_error = Some("no clusterIP assigned yet".into());
        }
        if let Some(ip) = ip {
            let t = traffic::Target {
                flow: Flow::ClusterIp,
                client: client_host.clone(),
                target: format!("{ip}:80"),
            };
            if tokio::task::spawn_blocking(move || t.request_within(CHANGE_TRY_S))
                .await
                .unwrap_or(false)
            {
                let done = t0.elapsed();
                return (
                    Some(acked.as_secs_f64()),
                    Some((done - acked).as_secs_f64()),
                    None,
                );
            }
            last_error = Some(format!("{ip}:80 not answering from {client_host}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Some(acked.as_secs_f64()), None, last_error)
}

/// Deletes the campaign's next-change services (left from an earlier run too).
async fn delete_changes(client: &kube::Client) {
    let api: Api<YusurService> = Api::namespaced(client.clone(), "default");
    let lp = kube::api::ListParams::default().labels("ferry.io/faults=next-change");
    let _ = api.delete_collection(&DeleteParams::default(), &lp).await;
}

fn aborts_since(lab: &Lab, chassis: &[String], wall0: SystemTime) -> Vec<f64> {
    let mut logs = vec![ferry_ovn_stack::LabPaths::new(&lab.ovn).log(Daemon::Vswitchd)];
    logs.extend(
        chassis
            .iter()
            .map(|c| ferry_ovn_stack::LabPaths::new(&lab.chassis_dir(c)).log(Daemon::Vswitchd)),
    );
    let origin = wall0
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    inject::abort_times(&logs)
        .into_iter()
        .map(|t| t - origin)
        .collect()
}

/// Runs the campaign; prints a line per fault as it goes.
pub async fn run(lab_dir: &LabDir, opts: &FaultsOptions) -> Result<Report, String> {
    let (lab, chassis, nodes) = lab_config(lab_dir)?;
    let client = crate::lab::client(lab_dir)
        .await
        .map_err(|e| e.to_string())?;
    let faults = plan::campaign(&chassis, &nodes, opts.partition_s, opts.quick, &opts.only);
    delete_changes(&client).await;
    let flows = traffic::Flows::start(targets(lab_dir).await?);
    let campaign_start = SystemTime::now();
    // The baseline: the NB as the controller built it, once everything answers.
    let t = Instant::now();
    while !flows.steady(5) && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut baseline = audit::nb_snapshot(&lab)?;
    let mut baseline_audit = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        baseline = audit::nb_snapshot(&lab)?;
        baseline_audit = audit::audit(&lab, &client, &baseline, &chassis, &nodes).await;
        if baseline_audit.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "faults: {} faults; baseline: {} NB rows Ferry owns, audit {}",
        faults.len(),
        baseline.len(),
        if baseline_audit.is_empty() {
            "clean".to_string()
        } else {
            baseline_audit.join("; ")
        }
    );
    let mut rows = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let row = run_one(i, f, &lab, &client, &flows, &baseline, &chassis, &nodes).await;
        eprintln!(
            "faults: {} -> {}",
            row.name,
            if row.pass {
                "pass".to_string()
            } else {
                row.misses.join("; ")
            }
        );
        rows.push(row);
    }
    flows.stop();
    let aborts = aborts_since(&lab, &chassis, campaign_start)
        .iter()
        .filter(|t| **t >= 0.0)
        .count();
    let pass = rows.iter().all(|r| r.pass) && baseline_audit.is_empty();
    let report = Report {
        rows,
        baseline_audit,
        vswitchd_aborts: aborts,
        pass,
    };
    if let Some(out) = &opts.out {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    i: usize,
    f: &Fault,
    lab: &Lab,
    client: &kube::Client,
    flows: &traffic::Flows,
    baseline: &plan::NbSnapshot,
    chassis: &[String],
    nodes: &[String],
) -> Row {
    let mut notes = Vec::new();
    let t = Instant::now();
    while !flows.steady(5) && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !flows.steady(5) {
        notes.push("traffic was not steady before the fault (60 s)".into());
    }
    let window_open = Instant::now() - Duration::from_secs(1);
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    let mut row = Row {
        fault: f.clone(),
        name: f.name(),
        class: f.class(),
        target: String::new(),
        traffic: Default::default(),
        restored_s: None,
        recovery_s: None,
        change_acked_s: None,
        change_programmed_s: None,
        audit: Vec::new(),
        audit_clean_after_s: None,
        misses: Vec::new(),
        pass: false,
        notes: Vec::new(),
    };
    let mut injected = match inject(f, lab, client, nodes).await {
        Ok(x) => x,
        Err(e) => {
            row.misses = vec![format!("could not inject: {e}")];
            row.notes = notes;
            return row;
        }
    };
    row.target = injected.target.clone();
    let change = tokio::spawn(next_change(
        client.clone(),
        format!("faults-{i}"),
        "client-vpc1".into(),
        t0,
    ));
    let max_window = injected.min_window + 30.0;
    let mut restored = None;
    let mut change_done = None;
    let mut change_task = Some(change);
    loop {
        let now = t0.elapsed().as_secs_f64();
        if restored.is_none() && (injected.restored)(now) {
            restored = Some(now);
        }
        if let Some(after) = injected.release_after
            && now >= after
            && let Some(r) = injected.release.take()
        {
            r();
            notes.push(format!("released after {after:.0} s"));
        }
        if change_task.as_ref().is_some_and(|h| h.is_finished())
            && let Some(h) = change_task.take()
        {
            change_done = Some(h.await.unwrap_or((None, None, None)));
        }
        let settled = restored.is_some() && change_done.is_some() && flows.steady(10);
        if (now >= injected.min_window && settled) || now >= max_window {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(r) = injected.release.take() {
        r();
        notes.push("released at the window's end".into());
    }
    let end = t0.elapsed().as_secs_f64();
    if let Some(h) = change_task.take() {
        h.abort();
    }
    let (acked, programmed, why) =
        change_done.unwrap_or((None, None, Some("still waiting at the window's end".into())));
    row.change_acked_s = acked;
    row.change_programmed_s = programmed;
    if let Some(why) = why {
        notes.push(format!("next change: {why}"));
    }
    let aborts = aborts_since(lab, chassis, wall0);
    // Also the aborts whose outage reaches into the window from before it (between two
    // rows: the previous row's audit) or whose in-flight requests it holds: one logged
    // between two rows, in no row's window, had left 10 failures in the NB leader's row
    // on all three flows, "no abort near".
    let near: Vec<f64> = aborts
        .iter()
        .copied()
        .filter(|a| *a >= -1.0 - plan::ABORT_OUTAGE_S && *a <= end + plan::ABORT_INFLIGHT_S)
        .collect();
    row.traffic = plan::summarize(&flows.samples(t0, window_open), &near, -1.0, end);
    if !near.is_empty() {
        notes.push(format!(
            "ovs-vswitchd aborted {} time(s) on its own in or next to this window (OVS 3.1 userspace conntrack, lib/conntrack.c assertion; fixed upstream in 3.1.3); {} failed request(s) fell in those outages",
            near.len(),
            row.traffic.failed_during_abort
        ));
    }
    row.restored_s = restored;
    row.recovery_s = restored.map(|r| r.max(row.traffic.recovered_s));
    // The audit, after the next change is deleted again.
    delete_changes(client).await;
    let a0 = Instant::now();
    loop {
        row.audit = audit::audit(lab, client, baseline, chassis, nodes).await;
        if row.audit.is_empty() {
            row.audit_clean_after_s = Some(a0.elapsed().as_secs_f64());
            break;
        }
        if a0.elapsed() > Duration::from_secs(40) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.misses = plan::verdict(
        row.class,
        &row.traffic,
        row.recovery_s,
        row.change_programmed_s,
        &row.audit,
    );
    row.pass = row.misses.is_empty();
    row.notes = notes;
    row
}
