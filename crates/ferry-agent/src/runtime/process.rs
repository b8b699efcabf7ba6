//! A container's process: how it is started (on the host's file system, or chrooted
//! into its image), run to completion (init containers), stopped, and adopted from the
//! agent before.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ContainerSpec, RuntimeConfig, Workload};
use crate::netns_admin::{self, Record};

/// A container's process: started by this agent, or adopted from the agent before it
/// (which died or restarted: the process writes its output to files, so it ran on).
#[derive(Debug)]
pub(super) enum Proc {
    Owned(Child),
    /// Not our child: only its PID can be watched, and its exit code is unknown.
    Adopted {
        pid: i32,
        start: u64,
    },
}

/// The exit code reported for an adopted process that ended (its parent, not us, saw the
/// real one): 137, as the kubelet reports a container whose status it lost.
pub(super) const UNKNOWN_EXIT: i32 = 137;

/// True while `pid` is the process that started at `start` and is not a zombie.
pub(super) fn alive(pid: i32, start: u64) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, after)| after.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    !zombie && netns_admin::start_time(pid) == Some(start)
}

impl Proc {
    pub(super) fn id(&self) -> i32 {
        match self {
            Proc::Owned(c) => c.id() as i32,
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// The exit status once the process ended.
    pub(super) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Proc::Owned(c) => c.try_wait().ok().flatten(),
            Proc::Adopted { pid, start } => (!alive(*pid, *start))
                .then(|| std::process::ExitStatus::from_raw(UNKNOWN_EXIT << 8)),
        }
    }
}

/// The directory a container's process starts in: its `workingDir` when that exists on
/// the host, else the workload's own work directory (lab backends write files there).
pub fn work_dir(cfg: &RuntimeConfig, w: &Workload, c: &ContainerSpec) -> PathBuf {
    match c.working_dir.as_deref().map(std::path::Path::new) {
        Some(d) if d.is_absolute() && d.is_dir() => d.to_path_buf(),
        _ => cfg.log_dir.join("work").join(&w.netns),
    }
}

/// Starts run `run` of a container; its output goes to the run's log file
/// ([`crate::container_log`]), of which the previous run's is kept. The process writes
/// its output to files itself, so it outlives the agent (see [`Sandbox::start`]).
pub(super) fn spawn(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    record: &Record,
    run: i32,
) -> std::io::Result<(Proc, Option<crate::container_log::Tail>)> {
    let argv = if c.argv.is_empty() {
        vec!["sleep".to_string(), "infinity".to_string()]
    } else {
        c.argv.clone()
    };
    let log = crate::container_log::run_path(&cfg.log_dir, &w.netns, &c.name, run);
    // A run's files start empty (a reused run number after a pod's recreation).
    for s in [
        crate::container_log::Stream::Stdout,
        crate::container_log::Stream::Stderr,
    ] {
        let raw = crate::container_log::raw_path(&log, s);
        let _ = std::fs::remove_file(format!("{}.pos", raw.display()));
        let _ = std::fs::remove_file(raw);
    }
    let (out, err) = crate::container_log::open_outputs(&log)?;
    let mut cmd = command(cfg, w, c, &argv)?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    record.add_process(pid);
    record.set_container(&format!("{}/{}", w.netns, c.name), &w.uid, pid, run);
    let tail = crate::container_log::follow(&log)
        .inspect_err(|e| tracing::warn!(workload = %w.key, container = %c.name, error = %e, "following the container's output failed"))
        .ok();
    crate::container_log::prune(&cfg.log_dir, &w.netns, &c.name, run - 1);
    Ok((Proc::Owned(child), tail))
}

/// The command of a container: chrooted into its image when the lab's layout holds it,
/// else on the host's file system in the workload's namespace.
pub(super) fn command(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    argv: &[String],
) -> std::io::Result<Command> {
    let unpacked = match crate::lab_image::images() {
        Some(images) => images
            .unpack(&c.image)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        None => None,
    };
    if let Some(u) = unpacked {
        let env: Vec<(String, String)> = u.env.iter().chain(&c.env).cloned().collect();
        return crate::lab_image::command(&u.rootfs, &c.mounts, &w.netns, argv, &env);
    }
    let mut cmd = match w.netns.is_empty() {
        true => Command::new(&argv[0]),
        false => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &w.netns]).arg(&argv[0]);
            cmd
        }
    };
    cmd.args(&argv[1..]);
    let work = work_dir(cfg, w, c);
    let _ = std::fs::create_dir_all(&work);
    cmd.current_dir(&work);
    cmd.envs(c.env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// Runs the init containers of `w` one after the other, each to completion (its output
/// in its log as any run's); the first that fails (or outlives `INIT_TIMEOUT`) fails the
/// start, which a later pass tries again, as the kubelet restarts a failed init container.
pub(super) fn run_init(cfg: &RuntimeConfig, w: &Workload, record: &Record) -> Result<(), String> {
    for c in w.containers.iter().filter(|c| c.init) {
        let (mut child, tail) =
            spawn(cfg, w, c, record, 0).map_err(|e| format!("starting init {}: {e}", c.name))?;
        let deadline = Instant::now() + INIT_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        record.remove_process(child.id());
        if let Some(t) = tail {
            t.finish();
        }
        match status {
            Some(s) if s.success() => {}
            Some(s) => return Err(format!("init container {} failed: {s}", c.name)),
            None => {
                stop_child(&mut child, record);
                return Err(format!("init container {} did not finish", c.name));
            }
        }
    }
    Ok(())
}

/// How long an init container may run.
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn stop_child(child: &mut Proc, record: &Record) {
    let pid = child.id();
    let group = nix::unistd::Pid::from_raw(-pid);
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    if let Proc::Owned(c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    record.remove_process(pid);
}

/// The container process a previous agent left running for this workload, if it is
/// still the same pod's; one of another pod of the same name is killed.
pub(super) fn adoptable(
    cfg: &RuntimeConfig,
    w: &Workload,
    c: &ContainerSpec,
    record: &Record,
) -> Option<((Proc, Option<crate::container_log::Tail>), i32)> {
    let key = format!("{}/{}", w.netns, c.name);
    let r = record.snapshot().containers.get(&key)?.clone();
    if !alive(r.pid, r.start) {
        record.remove_process(r.pid);
        return None;
    }
    if r.uid != w.uid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-r.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        record.remove_process(r.pid);
        return None;
    }
    let log = crate::container_log::run_path(&cfg.log_dir, &w.netns, &c.name, r.run);
    let tail = crate::container_log::follow(&log).ok();
    tracing::info!(workload = %w.key, container = %c.name, pid = r.pid, "adopted the running container");
    Some((
        (
            Proc::Adopted {
                pid: r.pid,
                start: r.start,
            },
            tail,
        ),
        r.run,
    ))
}
