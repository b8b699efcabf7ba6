//! Fault injection, the I/O half: finding the process a fault kills (checked against its
//! command line, never a recycled PID), `kill -9`, hold files that keep a part down, the
//! partition's nftables table (only the table created here is ever removed), and the
//! checks that the part runs again.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_ovn_stack::{Daemon, LabPaths};

use super::roles;

/// The nftables table of a partition (created and deleted only here).
pub const NFT_TABLE: &str = "ferry-faults";

/// Where the lab's parts live.
#[derive(Debug, Clone)]
pub struct Lab {
    /// `DIR/ferry`.
    pub data: PathBuf,
    /// `DIR/ferry/ovn`: the central OVN stack.
    pub ovn: PathBuf,
    /// NB/SB RAFT members (1: standalone).
    pub raft: usize,
    /// The API server's port.
    pub api_port: u16,
}

impl Lab {
    /// The stack directory of a chassis (`node1`, `witness`).
    pub fn chassis_dir(&self, chassis: &str) -> PathBuf {
        ferry_ovn_stack::fabric::node_chassis_dir(&self.ovn, chassis)
    }
}

/// How many members the NB cluster has: member 1 is `run/nb.sock`, member K `run/nb-K.sock`.
pub fn raft_members(ovn: &Path) -> usize {
    let run = LabPaths::new(ovn).run_dir;
    (2..=7)
        .take_while(|k| run.join(format!("nb-{k}.sock")).exists())
        .count()
        + 1
}

/// A PID read from `pidfile`, only if it is alive and its command line names `program`
/// and `dir`.
pub fn checked_pid(pidfile: &Path, program: &str, dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    alive_running(pid, program, &dir.display().to_string()).then_some(pid)
}

/// Whether `pid` is alive (not a zombie) and its command line contains both strings.
pub fn alive_running(pid: i32, a: &str, b: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmd);
    cmd.contains(a) && cmd.contains(b)
}

/// The PID of a supervised daemon of the stack in `dir`.
pub fn daemon_pid(dir: &Path, d: Daemon) -> Option<i32> {
    let program = match d {
        Daemon::NbDb | Daemon::SbDb | Daemon::OvsDb => "ovsdb-server",
        Daemon::Northd => "ovn-northd",
        Daemon::Vswitchd => "ovs-vswitchd",
        Daemon::Controller => "ovn-controller",
    };
    checked_pid(&LabPaths::new(dir).pidfile(d), program, dir)
}

/// `kill -9`.
pub fn kill9(pid: i32) -> Result<(), String> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("kill -9 {pid}: {e}"))
}

/// The RAFT leader of NB or SB: (member name, PID).
pub fn leader(lab: &Lab, d: Daemon) -> Option<(String, i32)> {
    let (m, pid) = ferry_ovn_stack::raft::leader(&lab.ovn, d, lab.raft)?;
    alive_running(pid, "ovsdb-server", &lab.ovn.display().to_string()).then_some((m.name, pid))
}

/// The live PID of a RAFT member by name.
pub fn member_pid(lab: &Lab, name: &str) -> Option<i32> {
    checked_pid(
        &LabPaths::new(&lab.ovn).pidfile_named(name),
        "ovsdb-server",
        &lab.ovn,
    )
}

/// Holds a daemon of a stack down (its supervisor does not restart it while the file exists).
pub fn hold_daemon(dir: &Path, d: Daemon) -> Result<(), String> {
    std::fs::write(LabPaths::new(dir).hold_file(d), b"ferry lab faults\n")
        .map_err(|e| e.to_string())
}

pub fn release_daemon(dir: &Path, d: Daemon) {
    let _ = std::fs::remove_file(LabPaths::new(dir).hold_file(d));
}

/// Holds a role down.
pub fn hold_role(data: &Path, name: &str) -> Result<(), String> {
    std::fs::write(roles::hold_file(data, name), b"ferry lab faults\n").map_err(|e| e.to_string())
}

pub fn release_role(data: &Path, name: &str) {
    let _ = std::fs::remove_file(roles::hold_file(data, name));
}

fn nft(args: &[&str]) -> Result<(), String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drops every packet the agent running with `gid` sends to the API server's port: the
/// node is cut off the API server (its data plane and OVN are untouched).
pub fn partition(gid: u32, api_port: u16) -> Result<String, String> {
    nft(&["add", "table", "inet", NFT_TABLE])?;
    nft(&[
        "add",
        "chain",
        "inet",
        NFT_TABLE,
        "out",
        "{ type filter hook output priority 0 ; }",
    ])?;
    let rule = format!("meta skgid {gid} tcp dport {api_port} drop");
    let mut args = vec!["add", "rule", "inet", NFT_TABLE, "out"];
    args.extend(rule.split(' '));
    nft(&args)?;
    Ok(rule)
}

/// Removes the partition's table.
pub fn heal() -> Result<(), String> {
    nft(&["delete", "table", "inet", NFT_TABLE])
}

/// The `ovs-vswitchd` abort assertions (OVS 3.1 userspace conntrack) logged in `logs`,
/// as seconds since the Unix epoch (each abort logs its assertion twice; one per second).
pub fn abort_times(logs: &[PathBuf]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for l in logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("assertion conn->conn_type"))
        {
            if let Some(t) = line.get(..23).and_then(parse_log_time)
                && !out.iter().any(|o| (o - t).abs() < 1.0)
            {
                out.push(t);
            }
        }
    }
    out
}

/// `2026-11-29T05:01:02.345` (OVS log time, UTC) -> seconds since the epoch.
pub fn parse_log_time(s: &str) -> Option<f64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm) = (num(11..13)?, num(14..16)?);
    let ss: f64 = s.get(17..23)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times() {
        let cases = [
            ("1970-01-01T00:00:00.000", Some(0.0)),
            ("2026-11-29T05:01:02.345", Some(1_795_928_462.345)),
            ("2000-03-01T00:00:01.500", Some(951_868_801.5)),
            ("not a time at all here!", None),
        ];
        for (s, want) in cases {
            let got = parse_log_time(s);
            assert!(
                match (got, want) {
                    (Some(g), Some(w)) => (g - w).abs() < 1e-6,
                    (None, None) => true,
                    _ => false,
                },
                "{s}: {got:?} != {want:?}"
            );
        }
    }
}
