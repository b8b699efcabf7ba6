//! `ferry up` SIGTERMed during start-up leaves nothing behind (issue 15: it used to leak
//! its OVN daemons, which run in process groups of their own). For several points of
//! start-up (each marked by a file start-up writes: a daemon's pidfile, the kubeconfig),
//! a fresh `ferry up` gets SIGTERM the moment the point is reached; once it has exited,
//! no process it started may remain.
//!
//! Processes are tracked by parentage, never by name: this test process is made a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`), so a daemon that outlives `ferry up` is
//! re-parented to it and shows up as its child; the PIDs of the pidfiles seen during
//! start-up are checked as well. One test in its own binary, so no other test's
//! children are counted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ferry_bin;
use ferry_ovn_stack::process::{is_gone, read_cmdline};

/// Where start-up is when SIGTERM comes: the file whose appearance marks it.
const POINTS: [(&str, &str); 6] = [
    (
        "first daemon spawned (NB ovsdb-server)",
        "ovn/run/nb-ovsdb.pid",
    ),
    ("ovn-northd spawned", "ovn/run/ovn-northd.pid"),
    ("OVS ovsdb-server spawned", "ovn/run/ovs-ovsdb.pid"),
    ("ovs-vswitchd spawned", "ovn/run/ovs-vswitchd.pid"),
    ("ovn-controller spawned", "ovn/run/ovn-controller.pid"),
    ("API server up (kubeconfig written)", "kubeconfig"),
];

/// Direct children of this process (after re-parenting: orphans of `ferry up`).
fn children() -> BTreeSet<i32> {
    let me = std::process::id().to_string();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (in parentheses): state, ppid, ...
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) && fields.first() != Some(&"Z") {
            out.insert(pid);
        }
    }
    out
}

/// Every `*.pid` under `DIR/ovn/run` now: `(file, pid)`.
fn pidfiles(data: &Path) -> BTreeSet<(String, i32)> {
    std::fs::read_dir(data.join("ovn/run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), pid))
        })
        .collect()
}

#[test]
#[ignore = "needs root and OVN"]
fn sigterm_during_start_up_leaves_no_process_behind() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut failures = Vec::new();
    for (i, (point, marker)) in POINTS.iter().enumerate() {
        let dir = tempfile::Builder::new().prefix("sigterm-").tempdir()?;
        let data = dir.path().join("data");
        let chassis = format!("sigt{}x{i}", std::process::id());
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let before = children();
        let mut up = Command::new(ferry_bin())
            .args(["up", "--no-agent", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--gateway-chassis", &chassis])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let up_pid = up.id() as i32;

        // Wait for the point, collecting the daemons' PIDs as they appear.
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !data.join(marker).exists() {
            seen.extend(pidfiles(&data));
            anyhow::ensure!(
                Instant::now() < deadline && up.try_wait()?.is_none(),
                "{point}: never reached\n{}",
                ferry_testkit::tail(&dir.path().join("up.log"), 30)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(up_pid),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        seen.extend(pidfiles(&data));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            seen.extend(pidfiles(&data));
            if let Some(s) = up.try_wait()? {
                break s;
            }
            anyhow::ensure!(Instant::now() < deadline, "{point}: ferry up did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Daemons stop before `ferry up` exits; give re-parenting a moment anyway.
        std::thread::sleep(Duration::from_millis(300));
        let orphans: Vec<(i32, String)> = children()
            .difference(&before)
            .map(|pid| {
                let cmd = read_cmdline(*pid).unwrap_or_default().join(" ");
                (*pid, cmd)
            })
            .collect();
        let alive: Vec<&(String, i32)> = seen.iter().filter(|(_, pid)| !is_gone(*pid)).collect();
        let netns = Path::new("/var/run/netns")
            .join(format!("{chassis}-ovs"))
            .exists();
        eprintln!(
            "{point}: ferry up exited ({status}) after SIGTERM; {} daemon pidfiles seen, \
             orphans {orphans:?}, live pidfile PIDs {alive:?}, netns left {netns}",
            seen.len()
        );
        if !orphans.is_empty() || !alive.is_empty() || netns {
            failures.push(format!(
                "{point}: orphans {orphans:?}, live {alive:?}, netns {netns}\n{}",
                ferry_testkit::tail(&dir.path().join("up.log"), 20)
            ));
        }
        // Whatever the outcome, leave nothing behind for the next round.
        for (pid, _) in &orphans {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid), None);
        }
        let _ = ferry_ovn_stack::stop_from_dir(&data.join("ovn"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}
