//! Tearing a lab down from its directory alone: what `ferry lab down` runs, and what
//! cleans up after a crash. Only what `state.json` records is touched, and a recorded
//! process is signalled only while its PID still runs the recorded command line.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{Daemon, LabPaths, OWNER};
use crate::netns;
use crate::process::{self, Ended, ProcessRecord};
use crate::registry::Registry;

/// What [`stop_from_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Processes signalled (`name (pid)`).
    pub stopped: Vec<String>,
    /// Recorded processes that were already gone or whose PID now runs something else.
    pub already_gone: Vec<String>,
    /// OVS ports removed or forgotten.
    pub ovs_ports: Vec<String>,
    /// Links deleted or found gone.
    pub links: Vec<String>,
    /// Namespaces deleted or found gone.
    pub netns: Vec<String>,
}

/// Stops every recorded process (host servers first, then the OVN/OVS daemons in reverse
/// start order; SIGTERM, SIGKILL after 5 s), removes recorded OVS ports, links and
/// namespaces, and forgets each as it goes. Safe to run twice and on a directory that
/// does not exist. Files (databases, logs) stay: see [`purge_dir`].
pub fn stop_from_dir(dir: &Path) -> Result<Teardown> {
    let mut report = Teardown::default();
    if !dir.join("state.json").exists() {
        return Ok(report);
    }
    let registry = Registry::open(dir)?;
    let paths = LabPaths::new(registry.dir());
    let state = registry.load()?;
    let grace = Duration::from_secs(5);
    let mut failures = Vec::new();

    let stop = |rec: &ProcessRecord, report: &mut Teardown, failures: &mut Vec<String>| {
        let label = format!("{} ({})", rec.name, rec.pid);
        match process::stop_recorded(rec, grace) {
            Ok(Ended::AlreadyGone) => report.already_gone.push(label),
            Ok(_) => report.stopped.push(label),
            Err(e) => {
                failures.push(e.to_string());
                return;
            }
        }
        if let Err(e) = registry.remove_process(&rec.name, rec.pid) {
            failures.push(e.to_string());
        }
    };

    // Servers inside hosts first: they keep namespaces alive.
    for rec in state.processes.iter().filter(|p| p.owner != OWNER).rev() {
        stop(rec, &mut report, &mut failures);
    }
    // Ports while the OVS database may still answer.
    for port in &state.ovs_ports {
        match netns::delete_ovs_port(port).and_then(|()| registry.remove_ovs_port(port)) {
            Ok(()) => report
                .ovs_ports
                .push(format!("{}/{}", port.bridge, port.port)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    // Daemons in reverse start order. A pidfile naming another PID than the record (a
    // restart whose record update was lost) is checked against the same command line.
    for rec in state.processes.iter().filter(|p| p.owner == OWNER).rev() {
        let from_pidfile = Daemon::ALL
            .iter()
            .find(|d| d.name() == rec.name)
            .and_then(|d| std::fs::read_to_string(paths.pidfile(*d)).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| *pid != rec.pid);
        if let Some(pid) = from_pidfile {
            let alt = ProcessRecord {
                pid,
                start_time: None,
                ..rec.clone()
            };
            stop(&alt, &mut report, &mut failures);
        }
        stop(rec, &mut report, &mut failures);
        if let Some(d) = Daemon::ALL.iter().find(|d| d.name() == rec.name) {
            let _ = std::fs::remove_file(paths.pidfile(*d));
        }
    }
    for link in state.links.iter().rev() {
        match netns::delete_link(link).and_then(|()| registry.remove_link(link)) {
            Ok(()) => report.links.push(link.name.clone()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    for ns in state.netns.iter().rev() {
        match netns::delete_netns(ns).and_then(|()| registry.remove_netns(ns)) {
            Ok(()) => report.netns.push(ns.clone()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    // Host descriptions go once nothing of theirs is left.
    if failures.is_empty()
        && let Err(e) = registry.update(|s| s.hosts.clear())
    {
        failures.push(e.to_string());
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Teardown {
            dir: registry.dir().to_owned(),
            failures,
        })
    }
}

/// Removes the files a lab creates in `dir` (`db/`, `run/`, `logs/`, `state.json`,
/// `state.lock`) and `dir` itself if that leaves it empty. Refuses while `state.json`
/// still records anything (run [`stop_from_dir`] first).
pub fn purge_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let registry = Registry::open(dir)?;
    let state = registry.load()?;
    if !state.is_empty() {
        return Err(Error::Invalid {
            what: "lab directory",
            value: dir.display().to_string(),
            reason: "state.json still records running resources; run stop_from_dir first".into(),
        });
    }
    for sub in ["db", "run", "logs"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io("remove", &p, e))?;
        }
    }
    for file in ["state.json", "state.lock", "state.json.tmp"] {
        let p = dir.join(file);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
        }
    }
    // Leaves a directory that holds anything else (not ours) alone.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
