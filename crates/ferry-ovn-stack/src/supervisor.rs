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
                let ran = now.duration_since(slot.started);
                let delay = restart_delay(ran, slot.backoff, self.min_backoff);
                match child.try_wait() {
                    Ok(None) => {
                        if ran >= STABLE {
                            slot.backoff = self.min_backoff;
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        tracing::warn!(daemon = slot.spec.name, pid = slot.pid, %status,
                            ran_ms = ran.as_millis() as u64,
                            delay_ms = delay.as_millis() as u64, "daemon died; restarting");
                    }
                    Err(e) => {
                        tracing::warn!(daemon = slot.spec.name, pid = slot.pid, error = %e,
                            "cannot wait for daemon; restarting");
                    }
                }
                slot.child = None;
                slot.restart_at = Some(now + delay);
                slot.backoff = (delay * 2).min(self.max_backoff);
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

/// How long a daemon must have run for its death to count as a crash rather than a crash
/// loop (one that fails at start-up).
pub(crate) const STABLE: Duration = Duration::from_secs(5);

/// The delay before restarting a daemon that died after running `ran`: the shortest delay
/// after a crash of a daemon that had run for [`STABLE`], so that repeated crashes of a
/// working daemon (OVS 3.1's userspace conntrack aborts `ovs-vswitchd` every few dozen
/// seconds under some traffic; see docs/resilience.md) each cost the same short outage;
/// `backoff` (which doubles with each quick death) when it died sooner.
pub(crate) fn restart_delay(ran: Duration, backoff: Duration, min: Duration) -> Duration {
    if ran >= STABLE { min } else { backoff }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays() {
        let ms = Duration::from_millis;
        let min = ms(200);
        let cases = [
            ("crash after a long run", ms(18_000), ms(6_400), ms(200)),
            ("crash right at the threshold", STABLE, ms(3_200), ms(200)),
            (
                "dies during start-up: backs off",
                ms(300),
                ms(1_600),
                ms(1_600),
            ),
            ("first quick death", ms(50), ms(200), ms(200)),
        ];
        for (name, ran, backoff, want) in cases {
            assert_eq!(restart_delay(ran, backoff, min), want, "{name}");
        }
    }
}
