//! The restart loop: one slot per daemon; a pass notices deaths and restarts what is due,
//! with doubling backoff.

use std::process::{Child, Command};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{Daemon, LabPaths, OWNER};
use crate::netns;
use crate::process::{self, ProcessRecord};
use crate::registry::Registry;

pub(crate) struct Spec {
    pub(crate) daemon: Daemon,
    /// The process name: `daemon.name()`, or a RAFT member's (`nb-ovsdb-2`).
    pub(crate) name: String,
    pub(crate) argv: Vec<String>,
    pub(crate) netns: Option<String>,
}

pub(crate) struct Slot {
    pub(crate) spec: Spec,
    pub(crate) child: Option<Child>,
    pub(crate) pid: i32,
    pub(crate) started: Instant,
    pub(crate) restarts: u32,
    pub(crate) backoff: Duration,
    pub(crate) restart_at: Option<Instant>,
}

pub(crate) struct Shared {
    pub(crate) paths: LabPaths,
    pub(crate) registry: Registry,
    pub(crate) slots: Mutex<Vec<Slot>>,
    pub(crate) stopping: AtomicBool,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Shared {
    pub(crate) fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the daemon of `spec` and records it (registry and pidfile).
    pub(crate) fn spawn(&self, spec: &Spec) -> Result<Child> {
        let log = self.paths.log_named(&spec.name);
        let mut cmd = match &spec.netns {
            Some(ns) => netns::exec_command(ns, &spec.argv),
            None => {
                let mut c = Command::new(&spec.argv[0]);
                c.args(&spec.argv[1..]);
                c
            }
        };
        cmd.envs(self.paths.env());
        let child = process::spawn_logged(&mut cmd, &log)?;
        let pid = child.id() as i32;
        let rec = ProcessRecord {
            name: spec.name.clone(),
            owner: OWNER.to_owned(),
            pid,
            argv: spec.argv.clone(),
            start_time: process::start_time(pid),
        };
        self.registry.put_process(&rec)?;
        let pidfile = self.paths.pidfile_named(&spec.name);
        std::fs::write(&pidfile, format!("{pid}\n"))
            .map_err(|e| Error::io("write", &pidfile, e))?;
        tracing::info!(daemon = spec.name, pid, "started");
        Ok(child)
    }

    /// One supervision pass: notice deaths, restart what is due.
    pub(crate) fn supervise_once(&self) {
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
                        tracing::warn!(daemon = slot.spec.name, pid = slot.pid, %status,
                            delay_ms = slot.backoff.as_millis() as u64, "daemon died; restarting");
                    }
                    Err(e) => {
                        tracing::warn!(daemon = slot.spec.name, pid = slot.pid, error = %e,
                            "cannot wait for daemon; restarting");
                    }
                }
                slot.child = None;
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(self.max_backoff);
            }
            if slot.restart_at.is_some_and(|t| t <= now)
                && !self.paths.hold_file(slot.spec.daemon).exists()
            {
                match self.spawn(&slot.spec) {
                    Ok(child) => {
                        slot.pid = child.id() as i32;
                        slot.child = Some(child);
                        slot.started = now;
                        slot.restarts += 1;
                        slot.restart_at = None;
                    }
                    Err(e) => {
                        tracing::error!(daemon = slot.spec.name, error = %e, "restart failed");
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(self.max_backoff);
                    }
                }
            }
        }
    }
}
