//! The restart loop: one slot per daemon; a pass notices deaths and restarts what is due,
//! with doubling backoff.

use std::process::{Child, Command};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Daemon, LabPaths, OWNER};
use crate::error::{Error, Result};
use crate::netns;
use crate::process::{self, ProcessRecord};
use crate::registry::Registry;

pub(super) struct Spec {
    pub(super) daemon: Daemon,
    pub(super) argv: Vec<String>,
    pub(super) netns: Option<String>,
}

pub(super) struct Slot {
    pub(super) spec: Spec,
    pub(super) child: Option<Child>,
    pub(super) pid: i32,
    pub(super) started: Instant,
    pub(super) restarts: u32,
    pub(super) backoff: Duration,
    pub(super) restart_at: Option<Instant>,
}

pub(super) struct Shared {
    pub(super) paths: LabPaths,
    pub(super) registry: Registry,
    pub(super) slots: Mutex<Vec<Slot>>,
    pub(super) stopping: AtomicBool,
    pub(super) min_backoff: Duration,
    pub(super) max_backoff: Duration,
}

impl Shared {
    pub(super) fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the daemon of `spec` and records it (registry and pidfile).
    pub(super) fn spawn(&self, spec: &Spec) -> Result<Child> {
        let log = self.paths.log(spec.daemon);
        let mut cmd = match &spec.netns {
            Some(ns) => netns::exec_command(ns, &spec.argv),
            None => {
                let mut c = Command::new(&spec.argv[0]);
                c.args(&spec.argv[1..]);
                c
            }
        };
        let (out, err) = process::log_stdio(&log)?;
        cmd.envs(self.paths.env())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        // Own process group: a Ctrl-C meant for the caller does not reach the lab.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: process::describe(&cmd),
            source,
        })?;
        let pid = child.id() as i32;
        let rec = ProcessRecord {
            name: spec.daemon.name().to_owned(),
            owner: OWNER.to_owned(),
            pid,
            argv: spec.argv.clone(),
            start_time: process::start_time(pid),
        };
        self.registry.put_process(&rec)?;
        let pidfile = self.paths.pidfile(spec.daemon);
        std::fs::write(&pidfile, format!("{pid}\n"))
            .map_err(|e| Error::io("write", &pidfile, e))?;
        tracing::info!(daemon = spec.daemon.name(), pid, "started");
        Ok(child)
    }

    /// One supervision pass: notice deaths, restart what is due.
    pub(super) fn supervise_once(&self) {
        let now = Instant::now();
        let mut slots = self.slots();
        for slot in slots.iter_mut() {
            if let Some(child) = slot.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {
                        if now.duration_since(slot.started) > Duration::from_secs(30) {
                            slot.backoff = self.min_backoff;
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        tracing::warn!(daemon = slot.spec.daemon.name(), pid = slot.pid, %status,
                            delay_ms = slot.backoff.as_millis() as u64, "daemon died; restarting");
                    }
                    Err(e) => {
                        tracing::warn!(daemon = slot.spec.daemon.name(), pid = slot.pid, error = %e,
                            "cannot wait for daemon; restarting");
                    }
                }
                slot.child = None;
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(self.max_backoff);
            }
            if slot.restart_at.is_some_and(|t| t <= now) {
                match self.spawn(&slot.spec) {
                    Ok(child) => {
                        slot.pid = child.id() as i32;
                        slot.child = Some(child);
                        slot.started = now;
                        slot.restarts += 1;
                        slot.restart_at = None;
                    }
                    Err(e) => {
                        tracing::error!(daemon = slot.spec.daemon.name(), error = %e, "restart failed");
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(self.max_backoff);
                    }
                }
            }
        }
    }
}
