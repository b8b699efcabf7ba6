//! Running helper commands and recognising, signalling and reaping the processes a stack
//! (or a lab host) started. A recorded process is only ever signalled after [`is_ours`] confirmed that the
//! PID still runs the command line (and, when known, the start time) that was recorded.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A process the lab started, as recorded in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Unique name within the lab (`ovn-northd`, `host:web1:python3`, ...).
    pub name: String,
    /// Who owns it: `"ovn"` for the OVN/OVS stack, `"host:NAME"` for a host's servers.
    pub owner: String,
    /// The PID.
    pub pid: i32,
    /// The command line the process runs once started (after any `ip netns exec`).
    pub argv: Vec<String>,
    /// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot), guarding
    /// against PID reuse.
    pub start_time: Option<u64>,
}

/// Runs a command to completion and returns its output; an error only if it cannot start.
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// Runs a command and fails with its stderr unless it exits 0; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A command line as a string, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens (appending) a log file for a child's stdout and stderr.
pub fn log_stdio(path: &Path) -> Result<(Stdio, Stdio)> {
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open log", path, e))
    };
    Ok((Stdio::from(open()?), Stdio::from(open()?)))
}

/// Starts `cmd` with stdin from `/dev/null` and stdout and stderr appended to `log`, in a
/// process group of its own (a Ctrl-C meant for the caller does not reach it).
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let (out, err) = log_stdio(log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    cmd.spawn().map_err(|source| Error::Spawn {
        program: describe(cmd),
        source,
    })
}

/// The argv of a running process, or `None` if it is gone or a zombie.
pub fn read_cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // zombie or kernel thread
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// `(state, start_time)` from `/proc/PID/stat`.
fn read_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process (see [`ProcessRecord::start_time`]).
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, t)| t)
}

/// True if the PID no longer names a running process (absent, or a zombie).
pub fn is_gone(pid: i32) -> bool {
    !matches!(read_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Whether a live command line is the one recorded: same arguments, and the program's
/// file name starts with the recorded one (so `python3` matches a version manager's
/// `~/.pyenv/versions/3.11.9/bin/python3.11`, `ovsdb-server` matches
/// `/usr/sbin/ovsdb-server`).
pub fn cmdline_matches(expected: &[String], actual: &[String]) -> bool {
    fn base(s: &str) -> &str {
        s.rsplit('/').next().unwrap_or(s)
    }
    match (expected.split_first(), actual.split_first()) {
        (Some((e0, erest)), Some((a0, arest))) => base(a0).starts_with(base(e0)) && erest == arest,
        _ => false,
    }
}

/// Whether the recorded process is still the one we started.
pub fn is_ours(rec: &ProcessRecord) -> bool {
    let Some((state, start)) = read_stat(rec.pid) else {
        return false;
    };
    if state == 'Z' || rec.start_time.is_some_and(|t| t != start) {
        return false;
    }
    read_cmdline(rec.pid).is_some_and(|actual| cmdline_matches(&rec.argv, &actual))
}

/// How a recorded process ended (see [`stop_recorded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It was already gone.
    AlreadyGone,
    /// It exited after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// SIGTERM, wait up to `grace`, then SIGKILL. `exited` reports whether the process has
/// ended (and reaps it if it is our child); it is polled every 20 ms.
pub fn terminate(
    name: &str,
    pid: i32,
    grace: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<Ended> {
    if exited() {
        return Ok(Ended::AlreadyGone);
    }
    let send = |sig: Signal, label: &'static str| match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::Signal {
            process: name.to_owned(),
            pid,
            signal: label,
            source,
        }),
    };
    let wait = |limit: Duration, exited: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + limit;
        loop {
            if exited() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    send(Signal::SIGTERM, "SIGTERM")?;
    if wait(grace, &mut exited) {
        return Ok(Ended::Terminated);
    }
    tracing::warn!(
        process = name,
        pid,
        "did not stop after SIGTERM; sending SIGKILL"
    );
    send(Signal::SIGKILL, "SIGKILL")?;
    if wait(Duration::from_secs(5), &mut exited) {
        Ok(Ended::Killed)
    } else {
        Err(Error::Unkillable {
            process: name.to_owned(),
            pid,
        })
    }
}

/// Exit check for a process that may or may not be our child: reap it if it is, then ask
/// `/proc`.
pub fn reap_or_gone(pid: i32) -> bool {
    // ECHILD (not our child) is expected and harmless.
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    is_gone(pid)
}

/// Stops a recorded process if, and only if, it is still ours.
pub fn stop_recorded(rec: &ProcessRecord, grace: Duration) -> Result<Ended> {
    if !is_ours(rec) {
        // Reap a zombie child of ours, if that is what it is.
        reap_or_gone(rec.pid);
        return Ok(Ended::AlreadyGone);
    }
    terminate(&rec.name, rec.pid, grace, || reap_or_gone(rec.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cmdline_matching() {
        struct Case {
            name: &'static str,
            expected: &'static [&'static str],
            actual: &'static [&'static str],
            want: bool,
        }
        let cases = [
            Case {
                name: "identical",
                expected: &["ovn-northd", "--unixctl=/x"],
                actual: &["ovn-northd", "--unixctl=/x"],
                want: true,
            },
            Case {
                name: "absolute path of the same program",
                expected: &["ovsdb-server", "/d/nb.db"],
                actual: &["/usr/sbin/ovsdb-server", "/d/nb.db"],
                want: true,
            },
            Case {
                name: "version manager shim resolves to versioned interpreter",
                expected: &["python3", "-m", "http.server"],
                actual: &[
                    "/opt/pyenv/versions/3.11.9/bin/python3.11",
                    "-m",
                    "http.server",
                ],
                want: true,
            },
            Case {
                name: "different arguments (another lab's daemon)",
                expected: &["ovsdb-server", "/a/nb.db"],
                actual: &["ovsdb-server", "/b/nb.db"],
                want: false,
            },
            Case {
                name: "different program with the same arguments",
                expected: &["ovsdb-server", "/a/nb.db"],
                actual: &["sleep", "/a/nb.db"],
                want: false,
            },
            Case {
                name: "still in ip netns exec",
                expected: &["ovs-vswitchd", "unix:/s"],
                actual: &["ip", "netns", "exec", "ns", "ovs-vswitchd", "unix:/s"],
                want: false,
            },
            Case {
                name: "empty",
                expected: &[],
                actual: &["x"],
                want: false,
            },
        ];
        for c in cases {
            assert_eq!(
                cmdline_matches(&v(c.expected), &v(c.actual)),
                c.want,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn own_process_is_recognised_and_reused_pid_is_not() {
        let me = std::process::id() as i32;
        let argv = read_cmdline(me).expect("own cmdline");
        let rec = ProcessRecord {
            name: "me".into(),
            owner: "test".into(),
            pid: me,
            argv: argv.clone(),
            start_time: start_time(me),
        };
        assert!(is_ours(&rec));
        let wrong_start = ProcessRecord {
            start_time: rec.start_time.map(|t| t + 1),
            ..rec.clone()
        };
        assert!(
            !is_ours(&wrong_start),
            "a different start time means PID reuse"
        );
        let wrong_args = ProcessRecord {
            argv: vec![argv[0].clone(), "--not-my-arg".into()],
            ..rec
        };
        assert!(!is_ours(&wrong_args));
    }

    #[test]
    fn terminate_stops_a_child_and_reaps_it() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let ended = terminate("sleep", pid, Duration::from_secs(2), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .expect("terminate");
        assert_eq!(ended, Ended::Terminated);
        assert!(is_gone(pid));
    }

    #[test]
    fn terminate_escalates_to_sigkill() {
        // A shell that ignores SIGTERM.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .expect("spawn sh");
        thread::sleep(Duration::from_millis(100)); // let the trap install
        let pid = child.id() as i32;
        let ended = terminate("sh", pid, Duration::from_millis(200), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .expect("terminate");
        assert_eq!(ended, Ended::Killed);
    }
}
