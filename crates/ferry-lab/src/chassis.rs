//! Which chassis each end of a check ran on, read from the SB (`Port_Binding.chassis`),
//! and the check rows that show it: with a chassis per node (the default of `ferry lab
//! up`, [`per_node`]) every scenario must have answers from a backend on another chassis
//! than its client's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::lab::CheckRow;
use crate::topology::Scenario;

/// The lab's external gateway port (`eip-gateway` on the `external` switch, as ferry-net
/// names it): a distributed gateway port's chassis-redirect port `cr-…` with HA
/// gateways, an `l3gateway` port on a gateway router otherwise.
pub const EIP_GATEWAY_PORT: &str = "eip-gateway-external";

/// Logical port -> chassis name, from the SB.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The lab runs one chassis per node.
    pub per_node: bool,
    ports: BTreeMap<String, String>,
}

fn sbctl_json(sb_sock: &Path, args: &[&str]) -> Option<Value> {
    let out = Command::new("ovn-sbctl")
        .arg(format!(
            "--db={}",
            ferry_ovn_stack::raft::remotes_beside(sb_sock)
        ))
        .args(["--timeout=10", "--format=json"])
        .args(args)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// `["uuid", "…"]` -> the UUID; anything else (an empty set) -> None.
fn uuid_of(v: &Value) -> Option<&str> {
    (v[0] == "uuid").then(|| v[1].as_str()).flatten()
}

/// Pure: the port -> chassis map from `list Chassis` and `list Port_Binding` as
/// `ovn-sbctl --format=json` prints them (columns `_uuid,name` and `logical_port,chassis`).
pub fn placement_from(chassis: &Value, bindings: &Value) -> BTreeMap<String, String> {
    let names: BTreeMap<&str, &str> = chassis["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((uuid_of(&r[0])?, r[1].as_str()?)))
        .collect();
    bindings["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let port = r[0].as_str()?;
            let ch = names.get(uuid_of(&r[1])?)?;
            Some((port.to_owned(), (*ch).to_owned()))
        })
        .collect()
}

/// A chassis name as the rows print it: `ferry-node1` -> `node1`.
pub fn short(chassis: &str) -> &str {
    chassis.strip_prefix("ferry-").unwrap_or(chassis)
}

/// Whether `ferry lab up` gives each node its own chassis. It does by default, since
/// traffic between nodes crossing a tunnel is the normal case of a cluster; but a
/// federation lab (`clusters` > 1) keeps one chassis per member unless `asked`
/// (`--chassis-per-node`): three members would otherwise run nine `ovs-vswitchd` on the
/// machine. `single` (`--single-chassis`) always wins: benches want no tunnel and
/// userspace TSO on.
pub fn per_node(clusters: usize, asked: bool, single: bool) -> bool {
    !single && (asked || clusters <= 1)
}

/// The backend's own address in the text of `iperf3 --get-server-output` (the server's
/// `[  5] local 10.0.1.4 port 5001 connected to ...` line): which backend a Service sent
/// the test to.
pub fn iperf_server_ip(server_output: &str) -> Option<&str> {
    server_output
        .lines()
        .filter(|l| l.contains(" connected to "))
        .find_map(|l| l.split_once(" local ")?.1.split_whitespace().next())
}

/// What the seed's iperf3 check measured: the answering backend (a lab host name), the
/// rate, how many tries it took and the last error.
#[derive(Debug, Clone, Default)]
pub struct Iperf {
    pub server: Option<String>,
    pub gbps: Option<f64>,
    pub tries: usize,
    pub error: String,
}

/// The seed's iperf3 row: the rate, and on which chassis each end was. It passes on any
/// rate above zero (there is no threshold: this machine is shared, and with a chassis per
/// node userspace TSO is off, see docs/chassis.md).
pub fn iperf_row(p: &Placement, client: &str, target: &str, m: &Iperf) -> CheckRow {
    let client_at = p.of_host(client).unwrap_or("?");
    let server = m
        .server
        .as_deref()
        .map(|s| (s, p.of_host(s).unwrap_or("?")));
    let place = match server {
        Some((s, at)) if p.per_node && at == client_at => {
            format!(" from {s}@{at}, same chassis (no TSO with tunnels)")
        }
        Some((s, at)) if p.per_node => {
            format!(" from {s}@{at}, across chassis (Geneve, no TSO with tunnels)")
        }
        Some((s, at)) => format!(" from {s}@{at}"),
        None => String::new(),
    };
    CheckRow {
        check: "seed ysvc1 (iperf3)".into(),
        client: format!("{client}@{client_at}"),
        target: target.into(),
        result: match m.gbps {
            Some(g) => format!("{g:.2} Gbit/s{place} (try {})", m.tries),
            None => m.error.clone(),
        },
        pass: m.gbps.is_some_and(|g| g > 0.0),
    }
}

impl Placement {
    /// Reads the SB of the lab's OVN directory (`DIR/ferry/ovn`); empty if it cannot.
    pub fn read(ovn_dir: &Path, per_node: bool) -> Placement {
        let sb = ferry_ovn_stack::LabPaths::new(ovn_dir).sb_sock;
        let ports = match (
            sbctl_json(&sb, &["--columns=_uuid,name", "list", "Chassis"]),
            sbctl_json(
                &sb,
                &["--columns=logical_port,chassis", "list", "Port_Binding"],
            ),
        ) {
            (Some(c), Some(b)) => placement_from(&c, &b),
            _ => BTreeMap::new(),
        };
        Placement { per_node, ports }
    }

    /// The chassis a lab host's port is bound on: its logical port is the host's name
    /// with a kind prefix (`default_svc1-ep-1`, `bm_default_bm-1`, `node_node1`, ...).
    pub fn of_host(&self, host: &str) -> Option<&str> {
        let suffix = format!("_{host}");
        self.ports
            .iter()
            .find(|(p, _)| *p == host || p.ends_with(&suffix))
            .map(|(_, c)| short(c))
    }

    /// The chassis holding the external gateway port now.
    pub fn gateway(&self) -> Option<&str> {
        self.ports
            .get(&format!("cr-{EIP_GATEWAY_PORT}"))
            .or_else(|| self.ports.get(EIP_GATEWAY_PORT))
            .map(|c| short(c))
    }
}

/// The row under a scenario's row: where its client and each answering backend ran, and
/// how many answers crossed chassis. With a chassis per node it fails when none did.
pub fn scenario_row(p: &Placement, s: &Scenario, seen: &BTreeMap<String, usize>) -> CheckRow {
    let client = p.of_host(&s.client).unwrap_or("?");
    let mut crossed = 0;
    let backends: Vec<String> = seen
        .iter()
        .map(|(b, n)| {
            let ch = p.of_host(b).unwrap_or("?");
            if ch != client {
                crossed += n;
            }
            format!("{b}@{ch}:{n}")
        })
        .collect();
    let answers: usize = seen.values().sum();
    CheckRow {
        check: format!("{} chassis", s.id),
        client: format!("{}@{client}", s.client),
        target: if s.use_eip {
            format!("via gateway @{}", p.gateway().unwrap_or("?"))
        } else {
            "-".into()
        },
        result: format!(
            "{crossed}/{answers} answers from another chassis [{}]",
            backends.join(" ")
        ),
        pass: !p.per_node || crossed > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chassis_per_node_is_the_default_of_one_lab_not_of_a_federation() {
        // (name, clusters, --chassis-per-node, --single-chassis, want)
        let cases = [
            ("(none)", 1, false, false, true),
            ("--chassis-per-node", 1, true, false, true),
            ("--single-chassis", 1, false, true, false),
            ("--clusters 3", 3, false, false, false),
            ("--clusters 3 --chassis-per-node", 3, true, false, true),
            ("--clusters 3 --single-chassis", 3, false, true, false),
        ];
        for (name, clusters, asked, single, want) in cases {
            assert_eq!(per_node(clusters, asked, single), want, "{name}");
        }
    }

    #[test]
    fn ports_map_to_chassis_names_and_hosts_by_suffix() {
        let chassis = json!({"headings": ["_uuid", "name"], "data": [
            [["uuid", "u1"], "ferry-node1"], [["uuid", "u2"], "ferry-node2"]]});
        let bindings = json!({"headings": ["logical_port", "chassis"], "data": [
            ["default_svc1-ep-1", ["uuid", "u1"]],
            ["bm_default_bm-1", ["uuid", "u2"]],
            ["default_client-vpc1", ["uuid", "u1"]],
            ["cr-eip-gateway-external", ["uuid", "u2"]],
            ["external-localnet", ["set", []]]]});
        let ports = placement_from(&chassis, &bindings);
        assert_eq!(
            ports,
            BTreeMap::from([
                ("bm_default_bm-1".to_string(), "ferry-node2".to_string()),
                ("cr-eip-gateway-external".into(), "ferry-node2".into()),
                ("default_client-vpc1".into(), "ferry-node1".into()),
                ("default_svc1-ep-1".into(), "ferry-node1".into()),
            ])
        );
        let p = Placement {
            per_node: true,
            ports,
        };
        assert_eq!(
            (p.of_host("svc1-ep-1"), p.of_host("bm-1"), p.gateway()),
            (Some("node1"), Some("node2"), Some("node2"))
        );
        let s = crate::topology::scenarios().remove(0);
        let seen = BTreeMap::from([("bm-1".to_string(), 3), ("svc1-ep-1".to_string(), 2)]);
        let row = scenario_row(&p, &s, &seen);
        assert_eq!(
            (row.result.as_str(), row.pass),
            (
                "3/5 answers from another chassis [bm-1@node2:3 svc1-ep-1@node1:2]",
                true
            )
        );
        // (name, server, rate, want client, want result, want pass)
        let cases = [
            (
                "across chassis",
                Some("bm-1"),
                Some(0.3),
                "0.30 Gbit/s from bm-1@node2, across chassis (Geneve, no TSO with tunnels) (try 2)",
                true,
            ),
            (
                "same chassis",
                Some("svc1-ep-1"),
                Some(0.5),
                "0.50 Gbit/s from svc1-ep-1@node1, same chassis (no TSO with tunnels) (try 2)",
                true,
            ),
            ("no result", None, None, "iperf3: busy", false),
        ];
        for (name, server, gbps, want, pass) in cases {
            let m = Iperf {
                server: server.map(String::from),
                gbps,
                tries: 2,
                error: "iperf3: busy".into(),
            };
            let row = iperf_row(&p, "client-vpc1", "10.96.0.5:5001", &m);
            assert_eq!(
                (row.client.as_str(), row.result.as_str(), row.pass),
                ("client-vpc1@node1", want, pass),
                "{name}"
            );
        }
        let one = Placement {
            per_node: false,
            ports: BTreeMap::from([("bm_default_bm-1".to_string(), "ferry-ch1".to_string())]),
        };
        let m = Iperf {
            server: Some("bm-1".into()),
            gbps: Some(4.0),
            tries: 1,
            error: String::new(),
        };
        assert_eq!(
            iperf_row(&one, "client-vpc1", "t", &m).result,
            "4.00 Gbit/s from bm-1@ch1 (try 1)"
        );
    }

    #[test]
    fn iperf_server_is_the_local_address_of_the_servers_connection() {
        let text = "Accepted connection from 10.0.3.10, port 40002\n\
                    [  5] local 10.0.1.4 port 5001 connected to 10.0.3.10 port 40004\n\
                    [ ID] Interval           Transfer     Bitrate\n";
        assert_eq!(iperf_server_ip(text), Some("10.0.1.4"));
        assert_eq!(iperf_server_ip("iperf3: error"), None);
    }
}

/// What `ferry lab gateway-failover` measured.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// The chassis that held the external gateway before (and whose daemons were killed).
    pub from: String,
    /// The chassis holding it afterwards (from the SB).
    pub to: String,
    /// Kill -> the SB shows the gateway port on the other chassis.
    pub sb_moved_s: Option<f64>,
    /// Kill -> the first answer to the EIP after it (a backend on the surviving chassis).
    pub first_answer_s: Option<f64>,
    /// Kill -> the first answer after which every request was answered (requests that
    /// met a backend on the dead chassis fail until its probes take it out of rotation).
    pub steady_s: Option<f64>,
    /// The longest time without an answer, from the kill.
    pub longest_gap_s: f64,
    /// Requests sent / failed during the measurement (requests that met a backend on the
    /// dead chassis fail too until its probes take it out of rotation).
    pub requests: usize,
    pub failed: usize,
    /// Daemons released -> the gateway is back on the preferred chassis (`None`: not
    /// within the wait).
    pub failback_s: Option<f64>,
}

/// `curl` from a lab host with a 1 s limit: (who answered) or why not.
fn probe_once(host: &str, target: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("ferry-{host}"), "curl", "-s"])
        .args(["-m", "1", &format!("http://{target}/")])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())
    } else {
        Err(format!("curl exit {}", out.status.code().unwrap_or(-1)))
    }
}

/// A PID from a pidfile, only if `/proc/PID/cmdline` still names `program` and `dir`
/// (never signal a recycled PID).
fn recorded_pid(pidfile: &Path, program: &str, dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = String::from_utf8_lossy(&cmd);
    (cmd.contains(program) && cmd.contains(&dir.display().to_string())).then_some(pid)
}

/// Kills (`kill -9`) `ovs-vswitchd` and `ovn-controller` of the chassis holding the
/// external gateway, keeps them down (the stack's hold files) while `client` keeps
/// requesting `target` (the scenario-3 EIP), and measures how long the EIP's traffic took
/// to move to the other chassis; then lets them restart and waits for the gateway to come
/// back (OVN prefers the higher priority). Needs a chassis per node (the default of
/// `ferry lab up`; not with `--single-chassis`).
pub fn gateway_failover(ovn_dir: &Path, client: &str, target: &str) -> Result<Failover, String> {
    use ferry_ovn_stack::{Daemon, LabPaths};
    use std::time::{Duration, Instant};
    let before = Placement::read(ovn_dir, true);
    let from = before
        .gateway()
        .ok_or("no chassis holds the external gateway port (was the lab started with --single-chassis?)")?
        .to_owned();
    probe_once(client, target)
        .map_err(|e| format!("{client} -> {target} before the fault: {e}"))?;
    let node_dir = ferry_ovn_stack::fabric::node_chassis_dir(ovn_dir, &from);
    let paths = LabPaths::new(&node_dir);
    let victims = [
        (Daemon::Vswitchd, "ovs-vswitchd"),
        (Daemon::Controller, "ovn-controller"),
    ];
    for (d, _) in victims {
        std::fs::write(paths.hold_file(d), b"gateway-failover\n").map_err(|e| e.to_string())?;
    }
    let release = || {
        for (d, _) in victims {
            let _ = std::fs::remove_file(paths.hold_file(d));
        }
    };
    let mut pids = Vec::new();
    for (d, program) in victims {
        match recorded_pid(&paths.pidfile(d), program, &node_dir) {
            Some(pid) => pids.push(pid),
            None => {
                release();
                return Err(format!(
                    "no running {program} recorded in {}",
                    node_dir.display()
                ));
            }
        }
    }
    let t0 = Instant::now();
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The SB is watched on its own thread (every 50 ms) so that the move is timed
    // finer than one request.
    let watcher = {
        let (ovn_dir, from) = (ovn_dir.to_path_buf(), from.clone());
        std::thread::spawn(move || {
            while t0.elapsed() < Duration::from_secs(30) {
                if let Some(g) = Placement::read(&ovn_dir, true).gateway()
                    && g != from
                {
                    return Some((t0.elapsed(), g.to_owned()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    // A request every 100 ms, each on its own thread with a 1 s limit, so that one
    // request stuck on a dead path does not hide the others: the first answer is timed
    // to ~0.1 s. For 15 s once the first answer came (or 30 s without one).
    let mut sent: Vec<(Duration, std::thread::JoinHandle<bool>)> = Vec::new();
    let first_ok = std::sync::Arc::new(std::sync::Mutex::new(None::<Duration>));
    let first =
        |m: &std::sync::Mutex<Option<Duration>>| *m.lock().unwrap_or_else(|e| e.into_inner());
    while t0.elapsed() < Duration::from_secs(30)
        && (first(&first_ok).is_none() || t0.elapsed() < Duration::from_secs(15))
    {
        let (c, t, at, seen) = (
            client.to_owned(),
            target.to_owned(),
            t0.elapsed(),
            std::sync::Arc::clone(&first_ok),
        );
        sent.push((
            at,
            std::thread::spawn(move || {
                let ok = probe_once(&c, &t).is_ok();
                if ok {
                    let mut f = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if f.is_none_or(|x| at < x) {
                        *f = Some(at);
                    }
                }
                ok
            }),
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    let results: Vec<(Duration, bool)> = sent
        .into_iter()
        .map(|(at, h)| (at, h.join().unwrap_or(false)))
        .collect();
    let requests = results.len();
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    let answered: Vec<Duration> = results
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(at, _)| *at)
        .collect();
    let first_answer = answered.first().copied();
    let last_failure = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(at, _)| *at)
        .max();
    let steady = results
        .iter()
        .filter(|(at, ok)| *ok && last_failure.is_none_or(|f| *at > f))
        .map(|(at, _)| *at)
        .next();
    let mut longest_gap = Duration::ZERO;
    let mut last_ok = Duration::ZERO;
    for at in &answered {
        longest_gap = longest_gap.max(*at - last_ok);
        last_ok = *at;
    }
    if answered.is_empty() {
        longest_gap = t0.elapsed();
    }
    let moved = watcher.join().ok().flatten();
    let sb_moved = moved.as_ref().map(|(d, _)| *d);
    let to = moved.map(|(_, g)| g).unwrap_or_else(|| from.clone());
    release();
    let t1 = Instant::now();
    let mut failback = None;
    while t1.elapsed() < Duration::from_secs(30) {
        if Placement::read(ovn_dir, true).gateway() == Some(from.as_str()) {
            failback = Some(t1.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = |d: Duration| d.as_secs_f64();
    Ok(Failover {
        from,
        to,
        sb_moved_s: sb_moved.map(secs),
        first_answer_s: first_answer.map(secs),
        steady_s: steady.map(secs),
        longest_gap_s: secs(longest_gap),
        requests,
        failed,
        failback_s: failback.map(secs),
    })
}
