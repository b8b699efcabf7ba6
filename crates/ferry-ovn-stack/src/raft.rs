//! NB and SB as RAFT clusters (more than one
//! [`OvnOptions::raft_members`](crate::OvnOptions::raft_members)): the members of one
//! database, how their files are created (`ovsdb-tool create-cluster` for the first,
//! `join-cluster` for the others), when a member is ready (it has joined: `_Server`'s
//! `Database` row says `connected`), and which member leads.
//!
//! Member 1 keeps the standalone names (`db/nb.db`, `run/nb.sock`, process `nb-ovsdb`), so
//! a tool that only knows the first socket still reaches the cluster; member N > 1 is
//! `db/nb-N.db`, `run/nb-N.sock`, process `nb-ovsdb-N`. Members talk RAFT over unix
//! sockets `run/nb-N.raft` (one machine; a real deployment uses `tcp:`/`ssl:` addresses,
//! which change nothing for the clients).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::Result;
use crate::jsonrpc;
use crate::layout::{Daemon, LabPaths, unix_remote};
use crate::process;

/// One `ovsdb-server` of a (possibly one-member, standalone) NB or SB database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// [`Daemon::NbDb`] or [`Daemon::SbDb`].
    pub daemon: Daemon,
    /// 1-based.
    pub index: usize,
    /// The process name (registry, log, pidfile, control socket).
    pub name: String,
    /// Its database file.
    pub db_file: PathBuf,
    /// Its client socket (`punix:`).
    pub sock: PathBuf,
    /// Its RAFT address (`unix:DIR/run/nb-N.raft`), unused when standalone.
    pub raft: String,
}

/// The schema file and database name of NB or SB.
pub fn schema(daemon: Daemon) -> (&'static str, &'static str) {
    match daemon {
        Daemon::SbDb => ("/usr/share/ovn/ovn-sb.ovsschema", "OVN_Southbound"),
        _ => ("/usr/share/ovn/ovn-nb.ovsschema", "OVN_Northbound"),
    }
}

/// The `n` members of `daemon`'s database (`n` <= 1: the one standalone server).
pub fn members(p: &LabPaths, daemon: Daemon, n: usize) -> Vec<Member> {
    let (stem, sock) = match daemon {
        Daemon::SbDb => ("sb", &p.sb_sock),
        _ => ("nb", &p.nb_sock),
    };
    (1..=n.max(1))
        .map(|index| {
            let suffix = if index == 1 {
                String::new()
            } else {
                format!("-{index}")
            };
            Member {
                daemon,
                index,
                name: format!("{}{suffix}", daemon.name()),
                db_file: p.db_dir.join(format!("{stem}{suffix}.db")),
                sock: if index == 1 {
                    sock.clone()
                } else {
                    p.run_dir.join(format!("{stem}{suffix}.sock"))
                },
                raft: unix_remote(&p.run_dir.join(format!("{stem}-{index}.raft"))),
            }
        })
        .collect()
}

/// `unix:SOCK` of every member, comma separated: what `ovn-northd`, `ovn-controller`
/// (`ovn-remote`), `ovn-nbctl --db` and Ferry's `--ovn-nb` take.
pub fn remotes(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| unix_remote(&m.sock))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `unix:` remotes of NB's or SB's members in the stack directory `dir`, as found
/// there (the sockets that exist), comma separated: for a tool that does not know how
/// many members the stack was started with (`ovn-nbctl --db=...` in `ferry lab`). Member
/// 1's socket alone when none exists yet.
pub fn remotes_in(dir: &Path, daemon: Daemon) -> String {
    let all = members(&LabPaths::new(dir), daemon, 7);
    let found: Vec<Member> = all.iter().filter(|m| m.sock.exists()).cloned().collect();
    if found.is_empty() {
        remotes(&all[..1])
    } else {
        remotes(&found)
    }
}

/// [`remotes_in`] for the database whose member-1 socket is `sock` (`DIR/run/nb.sock` or
/// `DIR/run/sb.sock`): what to give `ovn-nbctl --db=` instead of `unix:SOCK`, which fails
/// once member 1 is a follower ("database connection failed").
pub fn remotes_beside(sock: &Path) -> String {
    let daemon = match sock.file_name().and_then(|n| n.to_str()) {
        Some("sb.sock") => Daemon::SbDb,
        _ => Daemon::NbDb,
    };
    match sock.parent().and_then(Path::parent) {
        Some(dir) => remotes_in(dir, daemon),
        None => unix_remote(sock),
    }
}

/// Creates the database files that do not exist yet: a standalone database for one
/// member; otherwise member 1 creates the cluster and the others join it (they become
/// members once their server runs and reaches member 1).
pub fn create_files(members: &[Member]) -> Result<()> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let (schema_file, db_name) = schema(first.daemon);
    for m in members {
        if m.db_file.exists() {
            continue;
        }
        let mut cmd = Command::new("ovsdb-tool");
        if members.len() == 1 {
            cmd.arg("create").arg(&m.db_file).arg(schema_file);
        } else if m.index == 1 {
            cmd.arg("create-cluster")
                .arg(&m.db_file)
                .arg(schema_file)
                .arg(&m.raft);
        } else {
            cmd.arg("join-cluster")
                .arg(&m.db_file)
                .arg(db_name)
                .arg(&m.raft)
                .arg(&first.raft);
        }
        process::run_ok(&mut cmd)?;
    }
    Ok(())
}

/// The `_Server` `Database` row of `db` on the server at `sock`.
fn server_row(sock: &Path, db: &str) -> Result<Value, String> {
    let select = json!({"op": "select", "table": "Database",
        "where": [["name", "==", db]], "columns": ["model", "leader", "connected"]});
    let res = jsonrpc::call(
        sock,
        "transact",
        json!(["_Server", select]),
        Duration::from_secs(2),
    )?;
    res.get(0)
        .and_then(|r| r.get("rows"))
        .and_then(|r| r.get(0))
        .cloned()
        .ok_or_else(|| format!("{} does not serve {db}", sock.display()))
}

/// Ready: the member serves its database and, when clustered, is connected to the
/// cluster (a joining member is not until the leader has added it).
pub fn probe_member(sock: &Path, db: &str) -> Result<(), String> {
    let row = server_row(sock, db)?;
    if row.get("model").and_then(Value::as_str) != Some("clustered")
        || row.get("connected") == Some(&Value::Bool(true))
    {
        Ok(())
    } else {
        Err(format!(
            "{} has not joined the {db} cluster yet",
            sock.display()
        ))
    }
}

/// Whether the member at `sock` is the connected leader of its clustered database.
pub fn is_leader(sock: &Path, db: &str) -> bool {
    server_row(sock, db).is_ok_and(|row| {
        row.get("leader") == Some(&Value::Bool(true))
            && row.get("connected") == Some(&Value::Bool(true))
    })
}

/// The member of `daemon`'s database (NB or SB) in the stack directory `dir` that is the
/// RAFT leader now, with its PID from its pidfile: what a fault test kills. `None` when
/// no member leads (an election), or the database is not clustered there.
pub fn leader(dir: &Path, daemon: Daemon, n: usize) -> Option<(Member, i32)> {
    let p = LabPaths::new(dir);
    let (_, db) = schema(daemon);
    members(&p, daemon, n)
        .into_iter()
        .filter(|m| is_leader(&m.sock, db))
        .find_map(|m| {
            let pid = std::fs::read_to_string(p.pidfile_named(&m.name))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((m, pid))
        })
}

/// OVSDB's default RAFT election timer (ms).
pub const DEFAULT_ELECTION_TIMER_MS: u64 = 1000;

/// The values `cluster/change-election-timer` must be given, in order, to go from `from` to
/// `to` ms: ovsdb-server (3.1, `raft.c`) refuses an increase of more than 2x at once, so
/// that followers that have not applied it yet do not time out; a decrease goes in one
/// step. Outside 100..=600,000 ms it refuses anything (the caller must not ask).
pub fn election_timer_steps(from: u64, to: u64) -> Vec<u64> {
    let mut steps = Vec::new();
    let mut cur = from.max(1);
    while cur != to {
        cur = if to < cur { to } else { to.min(cur * 2) };
        steps.push(cur);
    }
    steps
}

/// The `Election timer:` of `cluster/status` output.
pub fn parse_election_timer(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("Election timer:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `cluster/status DB` of the member whose unixctl socket is `ctl`.
fn cluster_status(ctl: &Path, db: &str) -> Result<String, String> {
    jsonrpc::call(ctl, "cluster/status", json!([db]), Duration::from_secs(2))
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

/// Sets `daemon`'s cluster's election timer to `ms` on its leader (the only member that
/// may change it), in steps of at most 2x, each waited for until the leader reports it.
/// `wait` bounds the whole change (and the wait for a leader). Already at `ms`: nothing.
pub fn set_election_timer(
    dir: &Path,
    daemon: Daemon,
    n: usize,
    ms: u64,
    wait: Duration,
) -> Result<(), String> {
    let (_, db) = schema(daemon);
    let p = LabPaths::new(dir);
    let started = std::time::Instant::now();
    let mut last = String::from("no leader");
    while started.elapsed() < wait {
        let Some((m, _)) = leader(dir, daemon, n) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let ctl = p.ctl_named(&m.name);
        let now = match cluster_status(&ctl, db).map(|s| parse_election_timer(&s)) {
            Ok(Some(now)) => now,
            Ok(None) => return Err(format!("{}: no election timer in cluster/status", m.name)),
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(&next) = election_timer_steps(now, ms).first() else {
            return Ok(());
        };
        // Refused while a previous change is pending ("election timer change pending"):
        // the next round tries again.
        match jsonrpc::call(
            &ctl,
            "cluster/change-election-timer",
            json!([db, next.to_string()]),
            Duration::from_secs(2),
        ) {
            Ok(_) => tracing::info!(member = %m.name, from = now, to = next, "election timer"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{db}: election timer not at {ms} ms after {wait:?}: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_timer_grows_by_at_most_two_and_shrinks_at_once() {
        let cases: [(u64, u64, &[u64]); 6] = [
            (1000, 1000, &[]),
            (1000, 500, &[500]),
            (1000, 100, &[100]),
            (1000, 3000, &[2000, 3000]),
            (500, 4000, &[1000, 2000, 4000]),
            (500, 1000, &[1000]),
        ];
        for (from, to, want) in cases {
            assert_eq!(election_timer_steps(from, to), want, "{from} -> {to}");
        }
    }

    #[test]
    fn election_timer_is_read_from_cluster_status() {
        let status = "5f03\nName: OVN_Northbound\nRole: leader\nTerm: 2\n\
                      Election timer: 500\nLog: [2, 70]\n";
        assert_eq!(parse_election_timer(status), Some(500));
        assert_eq!(parse_election_timer("Role: follower\n"), None);
    }

    #[test]
    fn members_keep_the_standalone_names_for_member_one() {
        let p = LabPaths::new(Path::new("/lab"));
        let got: Vec<(String, String, String, String)> = members(&p, Daemon::NbDb, 3)
            .into_iter()
            .map(|m| {
                (
                    m.name,
                    m.db_file.display().to_string(),
                    m.sock.display().to_string(),
                    m.raft,
                )
            })
            .collect();
        let want = [
            (
                "nb-ovsdb",
                "/lab/db/nb.db",
                "/lab/run/nb.sock",
                "unix:/lab/run/nb-1.raft",
            ),
            (
                "nb-ovsdb-2",
                "/lab/db/nb-2.db",
                "/lab/run/nb-2.sock",
                "unix:/lab/run/nb-2.raft",
            ),
            (
                "nb-ovsdb-3",
                "/lab/db/nb-3.db",
                "/lab/run/nb-3.sock",
                "unix:/lab/run/nb-3.raft",
            ),
        ]
        .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()));
        assert_eq!(got, want);
        assert_eq!(
            remotes(&members(&p, Daemon::SbDb, 2)),
            "unix:/lab/run/sb.sock,unix:/lab/run/sb-2.sock"
        );
        assert_eq!(
            remotes(&members(&p, Daemon::SbDb, 1)),
            "unix:/lab/run/sb.sock",
            "one member is the standalone server"
        );
    }
}
