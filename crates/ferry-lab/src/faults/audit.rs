//! The state audit after a fault, the I/O half: the NB rows Ferry owns (by
//! `ferry_net::owned_key`), probes and services, lab hosts plumbed and bound to a
//! chassis, and the processes that should run exactly once (each OVN/OVS daemon, each
//! role, each backend's server). The comparisons are [`super::plan`]'s.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ferry_api::{NetworkProbe, ProbePhase, YusurService};
use ferry_ovn_stack::{Daemon, LabPaths};
use kube::Api;
use serde_json::{Value, json};

use super::inject::Lab;
use super::plan::{self, NbSnapshot};
use super::roles;

/// NB tables that hold rows Ferry owns.
const TABLES: [&str; 17] = [
    "Logical_Switch",
    "Logical_Switch_Port",
    "Logical_Router",
    "Logical_Router_Port",
    "Logical_Router_Static_Route",
    "Logical_Router_Policy",
    "NAT",
    "Load_Balancer",
    "Load_Balancer_Group",
    "Load_Balancer_Health_Check",
    "ACL",
    "Address_Set",
    "Port_Group",
    "DHCP_Options",
    "Gateway_Chassis",
    "HA_Chassis_Group",
    "HA_Chassis",
];

/// The NB rows Ferry owns, read from the leader (or the standalone server).
pub fn nb_snapshot(lab: &Lab) -> Result<NbSnapshot, String> {
    let sock = super::inject::leader(lab, Daemon::NbDb)
        .and_then(|(name, _)| {
            ferry_ovn_stack::raft::members(&LabPaths::new(&lab.ovn), Daemon::NbDb, lab.raft)
                .into_iter()
                .find(|m| m.name == name)
                .map(|m| m.sock)
        })
        .unwrap_or_else(|| LabPaths::new(&lab.ovn).nb_sock);
    let mut params = vec![json!("OVN_Northbound")];
    params.extend(
        TABLES
            .iter()
            .map(|t| json!({"op": "select", "table": t, "where": []})),
    );
    let result = ferry_ovn_stack::jsonrpc::call(
        &sock,
        "transact",
        Value::Array(params),
        Duration::from_secs(10),
    )?;
    let mut out = NbSnapshot::new();
    for (table, r) in TABLES.iter().zip(result.as_array().into_iter().flatten()) {
        if let Some(e) = r.get("error") {
            return Err(format!("select {table}: {e}"));
        }
        for row in r["rows"].as_array().into_iter().flatten() {
            let Some(cols) = row.as_object() else {
                continue;
            };
            if let Some(key) = ferry_net::owned_key(table, cols) {
                let content = if *table == "Load_Balancer" {
                    json!({"vips": cols.get("vips")})
                } else {
                    Value::Null
                };
                out.entry(format!("{table}:{key}"))
                    .or_default()
                    .push(content);
            }
        }
    }
    Ok(out)
}

/// The services of the scenarios (their ready endpoints must equal their total) and the
/// NetworkProbes (every one Healthy, with a prober).
pub async fn api_problems(client: &kube::Client) -> Vec<String> {
    let mut out = Vec::new();
    let ysvcs: Api<YusurService> = Api::namespaced(client.clone(), "default");
    for s in crate::topology::scenarios() {
        let name = s.service.trim_start_matches("default/");
        match ysvcs.get(name).await {
            Ok(y) => {
                let st = y.status.unwrap_or_default();
                if st.ready_endpoints != st.total_endpoints || st.total_endpoints == 0 {
                    out.push(format!(
                        "{name}: {}/{} endpoints ready",
                        st.ready_endpoints, st.total_endpoints
                    ));
                }
            }
            Err(e) => out.push(format!("{name}: {e}")),
        }
    }
    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), "default");
    match probes.list(&Default::default()).await {
        Ok(list) => {
            for p in list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let st = p.status.unwrap_or_default();
                if st.phase != ProbePhase::Healthy || st.prober.is_none() {
                    out.push(format!(
                        "probe {name} {} (prober {})",
                        st.phase.as_str(),
                        st.prober.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
        Err(e) => out.push(format!("probes: {e}")),
    }
    out
}

/// Lab hosts whose namespace is gone or whose port is bound to no chassis.
pub fn unplumbed(lab: &Lab) -> Vec<String> {
    let placement = crate::chassis::Placement::read(&lab.ovn, true);
    crate::topology::hosts()
        .into_iter()
        .filter_map(|h| {
            if !std::path::Path::new("/var/run/netns")
                .join(&h.netns)
                .exists()
            {
                Some(format!("{} has no namespace", h.name))
            } else if placement.of_host(&h.name).is_none() {
                Some(format!("{} bound to no chassis", h.name))
            } else {
                None
            }
        })
        .collect()
}

/// The backends whose HTTP server must run exactly once.
fn backend_hosts() -> Vec<String> {
    let mut v: Vec<String> = crate::topology::scenarios()
        .into_iter()
        .flat_map(|s| s.backends)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What should run exactly once, by the names [`running`] counts.
pub fn expected(lab: &Lab, chassis: &[String], nodes: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for d in [Daemon::NbDb, Daemon::SbDb] {
        for m in ferry_ovn_stack::raft::members(&LabPaths::new(&lab.ovn), d, lab.raft) {
            v.push(m.name);
        }
    }
    v.push(Daemon::Northd.name().into());
    for c in chassis {
        for d in [Daemon::OvsDb, Daemon::Vswitchd, Daemon::Controller] {
            v.push(format!("{}@{c}", d.name()));
        }
    }
    v.push(roles::APISERVER.into());
    v.extend(roles::CONTROLLERS.iter().map(|c| c.to_string()));
    v.extend(nodes.iter().map(|n| roles::agent(n)));
    // The nodes' DNS servers, when the lab runs them as roles (it has a cluster DNS).
    v.extend(
        nodes
            .iter()
            .map(|n| roles::dns(n))
            .filter(|r| roles::pidfile(&lab.data, r).exists()),
    );
    v.extend(backend_hosts().into_iter().map(|h| format!("http@{h}")));
    v
}

/// Counts the live processes by the names [`expected`] uses.
pub fn running(lab: &Lab, chassis: &[String]) -> BTreeMap<String, usize> {
    // Log files name each daemon: `--log-file=DIR/logs/NAME.log`.
    let mut logs: Vec<(String, String)> = Vec::new();
    let central = LabPaths::new(&lab.ovn);
    for d in [Daemon::NbDb, Daemon::SbDb] {
        for m in ferry_ovn_stack::raft::members(&central, d, lab.raft) {
            logs.push((
                format!("--log-file={}", central.log_named(&m.name).display()),
                m.name,
            ));
        }
    }
    logs.push((
        format!("--log-file={}", central.log(Daemon::Northd).display()),
        Daemon::Northd.name().into(),
    ));
    for c in chassis {
        let p = LabPaths::new(&lab.chassis_dir(c));
        for d in [Daemon::OvsDb, Daemon::Vswitchd, Daemon::Controller] {
            logs.push((
                format!("--log-file={}", p.log(d).display()),
                format!("{}@{c}", d.name()),
            ));
        }
    }
    let netns: Vec<(u64, String)> = backend_hosts()
        .into_iter()
        .filter_map(|h| {
            let m = std::fs::metadata(format!("/var/run/netns/ferry-{h}")).ok()?;
            Some((m.ino(), h))
        })
        .collect();
    let data = lab.data.display().to_string();
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mut name = None;
        if let Some((_, n)) = logs.iter().find(|(flag, _)| args.iter().any(|a| a == flag)) {
            name = Some(n.clone());
        } else if args.len() > 2
            && args[0].ends_with("ferry")
            && args.iter().any(|a| a.contains(&data))
        {
            let after = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            name = match args[1].as_str() {
                "apiserver" => Some(roles::APISERVER.to_string()),
                "controller" => after("--identity"),
                "agent" => after("--node").map(|n| roles::agent(&n)),
                "dns" => after("--node").map(|n| roles::dns(&n)),
                _ => None,
            };
        } else if args.iter().any(|a| a == "http.server") {
            let ino = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| m.ino())
                .ok();
            name = netns
                .iter()
                .find(|(i, _)| Some(*i) == ino)
                .map(|(_, h)| format!("http@{h}"));
        }
        if let Some(n) = name {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// Every audit problem now (empty: clean).
pub async fn audit(
    lab: &Lab,
    client: &kube::Client,
    baseline: &NbSnapshot,
    chassis: &[String],
    nodes: &[String],
) -> Vec<String> {
    let mut out = match nb_snapshot(lab) {
        Ok(now) => plan::audit_nb(baseline, &now),
        Err(e) => vec![format!("NB unreadable: {e}")],
    };
    out.extend(api_problems(client).await);
    out.extend(unplumbed(lab));
    out.extend(plan::audit_processes(
        &expected(lab, chassis, nodes),
        &running(lab, chassis),
    ));
    out
}
