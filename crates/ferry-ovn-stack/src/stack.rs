//! [`OvnStack`]: the OVN and OVS daemons of one stack (a lab, `ferry up`, a benchmark, a test), started as supervised children of the
//! calling process with everything (databases, sockets, pidfiles, logs) under one
//! directory:
//!
//! ```text
//! DIR/db/{nb,sb,conf}.db          DIR/logs/<daemon>.log    DIR/state.json (see Registry)
//! DIR/run/{nb,sb,db}.sock         DIR/run/<daemon>.ctl     DIR/run/<daemon>.pid
//! ```
//!
//! `ovs-vswitchd` runs inside its own network namespace (by default `<system-id>-ovs`):
//! the userspace `netdev` datapath creates persistent tap devices (`ovs-netdev` and one
//! named after the bridge) that survive the daemon and would clash between two labs in
//! the root namespace; in a lab namespace they disappear with it, and the host ends of
//! the lab's veth pairs live there too, so the lab puts nothing into the root namespace.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Error, Result};
use crate::jsonrpc;
use crate::layout::{Daemon, LabPaths, OWNER, OvnOptions, OvsBridge, unix_remote};
use crate::netns;
use crate::process;
use crate::readiness::{probe_chassis, probe_db};
use crate::registry::Registry;
use crate::supervisor::{Shared, Slot, Spec};

// === impl OvnStack ===

/// A running OVN/OVS stack (NB and SB `ovsdb-server`, `ovn-northd`, the OVS
/// `ovsdb-server`, `ovs-vswitchd`, `ovn-controller`), supervised by a background thread
/// that restarts any daemon that dies, with backoff, until [`OvnStack::stop`].
///
/// Dropping the stack stops it; [`OvnStack::detach`] leaves the daemons running
/// unsupervised (then [`crate::stop_from_dir`] removes them).
///
/// With [`OvnOptions::central`] only the first three daemons run (see [`Daemon`]).
pub struct OvnStack {
    shared: Arc<Shared>,
    opts: OvnOptions,
    supervisor: Option<JoinHandle<()>>,
    startup: Vec<(Daemon, Duration)>,
    created_netns: bool,
    finished: bool,
    /// With [`OvnOptions::tls`]: the PKI and the `pssl:` ports.
    tls: Option<crate::pki::StackTls>,
    /// Set by the caller (a signal handler) to abandon [`OvnStack::start_cancellable`].
    cancel: Arc<AtomicBool>,
    /// With RAFT and [`OvnOptions::northd_leader_proxy`]: northd's NB and SB proxies.
    proxies: Vec<crate::leader_proxy::LeaderProxy>,
}

impl std::fmt::Debug for OvnStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvnStack")
            .field("dir", &self.shared.paths.dir)
            .field("system_id", &self.opts.system_id)
            .finish_non_exhaustive()
    }
}

impl OvnStack {
    /// Creates the databases under `dir` (kept if they exist), starts every daemon and
    /// waits until each answers on its socket; then configures the bridge and waits for
    /// the chassis to register in the SB. On failure everything started so far is
    /// stopped again and the error names the daemon and its log.
    pub fn start(dir: &Path, opts: OvnOptions) -> Result<OvnStack> {
        OvnStack::start_cancellable(dir, opts, Arc::new(AtomicBool::new(false)))
    }

    /// [`OvnStack::start`] that gives up when `cancel` becomes true (a SIGTERM during
    /// start-up): it stops what it had started, as after any failed start, and returns
    /// [`Error::Cancelled`]. The flag is checked before each daemon and while waiting for
    /// one to be ready, so cancelling takes at most one readiness poll plus the teardown.
    pub fn start_cancellable(
        dir: &Path,
        opts: OvnOptions,
        cancel: Arc<AtomicBool>,
    ) -> Result<OvnStack> {
        if opts.raft_members > 1 && opts.tls {
            return Err(Error::Invalid {
                what: "OVN options",
                value: format!("raft_members={} with tls", opts.raft_members),
                reason: "RAFT clusters are served on unix sockets only for now".into(),
            });
        }
        let registry = Registry::open(dir)?;
        let paths = LabPaths::new(registry.dir());
        check_socket_paths(&paths, &opts.bridge)?;
        if let Some(live) = registry
            .load()?
            .processes
            .iter()
            .find(|p| p.owner == OWNER && process::is_ours(p))
        {
            return Err(Error::AlreadyExists {
                what: "running lab daemon",
                name: format!(
                    "{} (pid {}) in {}",
                    live.name,
                    live.pid,
                    paths.dir.display()
                ),
            });
        }
        for d in [&paths.db_dir, &paths.run_dir, &paths.log_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
        }
        let mut stack = OvnStack {
            shared: Arc::new(Shared {
                paths,
                registry,
                slots: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
                min_backoff: opts.min_backoff,
                max_backoff: opts.max_backoff,
            }),
            opts,
            supervisor: None,
            startup: Vec::new(),
            created_netns: false,
            finished: false,
            tls: None,
            cancel,
            proxies: Vec::new(),
        };
        match stack.bring_up() {
            Ok(()) => Ok(stack),
            Err(e) => {
                if let Err(stop_err) = stack.shutdown() {
                    tracing::error!(error = %stop_err, "cleaning up after a failed start");
                }
                Err(e)
            }
        }
    }

    fn bring_up(&mut self) -> Result<()> {
        if !self.opts.run_central {
            self.bring_up_chassis()?;
            return self.start_supervisor();
        }
        let p = self.shared.paths.clone();
        let o = self.opts.clone();

        let n = o.raft_members;
        crate::raft::create_files(&crate::raft::members(&p, Daemon::NbDb, n))?;
        crate::raft::create_files(&crate::raft::members(&p, Daemon::SbDb, n))?;
        if o.tls {
            self.tls = Some(crate::pki::StackTls::create(&p.dir.join("pki"))?);
        }
        let tls = self.tls.clone();

        for d in [Daemon::NbDb, Daemon::SbDb] {
            let (_, dbname) = crate::raft::schema(d);
            for m in crate::raft::members(&p, d, n) {
                let mut argv = vec![
                    "ovsdb-server".into(),
                    path_arg(&m.db_file),
                    format!("--remote=punix:{}", path_arg(&m.sock)),
                    p.ctl_flag_named(&m.name),
                    p.log_flag_named(&m.name),
                    "-vconsole:off".into(),
                ];
                if let Some(t) = &tls {
                    let port = if d == Daemon::NbDb {
                        t.nb_port
                    } else {
                        t.sb_port
                    };
                    argv.push(format!("--remote=pssl:{port}:127.0.0.1"));
                    argv.extend(t.pki.ssl_args(&t.server));
                }
                let sock = m.sock.clone();
                self.launch_named(d, &m.name, argv, None, |_| {
                    crate::raft::probe_member(&sock, dbname)
                })?;
            }
        }
        if n > 1
            && let Some(ms) = o.election_timer_ms
        {
            for d in [Daemon::NbDb, Daemon::SbDb] {
                crate::raft::set_election_timer(&p.dir, d, n, ms, o.ready_timeout).map_err(
                    |reason| Error::Invalid {
                        what: "RAFT election timer",
                        value: format!("{ms} ms"),
                        reason,
                    },
                )?;
            }
        }
        let (northd_nb, northd_sb) = if n > 1 && o.northd_leader_proxy {
            let mut remotes = Vec::new();
            for (d, stem) in [(Daemon::NbDb, "nb"), (Daemon::SbDb, "sb")] {
                let (_, dbname) = crate::raft::schema(d);
                let socks = crate::raft::members(&p, d, n)
                    .into_iter()
                    .map(|m| m.sock)
                    .collect();
                let proxy = crate::leader_proxy::LeaderProxy::start(
                    &p.run_dir.join(format!("{stem}-leader.sock")),
                    socks,
                    dbname,
                )?;
                remotes.push(proxy.remote());
                self.proxies.push(proxy);
            }
            (remotes.remove(0), remotes.remove(0))
        } else {
            (self.nb_remote(), self.sb_remote())
        };
        let mut argv = vec![
            "ovn-northd".into(),
            format!("--ovnnb-db={northd_nb}"),
            format!("--ovnsb-db={northd_sb}"),
            p.ctl_flag(Daemon::Northd),
            p.log_flag(Daemon::Northd),
            "-vconsole:off".into(),
        ];
        if let Some(t) = &tls {
            argv.extend(t.pki.ssl_args(&t.northd));
        }
        let northd_ctl = p.ctl(Daemon::Northd);
        self.launch(Daemon::Northd, argv, None, |_| {
            jsonrpc::call(&northd_ctl, "status", json!([]), Duration::from_secs(2)).map(drop)
        })?;
        if o.chassis {
            self.bring_up_chassis()?;
        }
        self.start_supervisor()
    }

    /// The restart loop's thread (see [`crate::supervisor`]).
    fn start_supervisor(&mut self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let handle = thread::Builder::new()
            .name("ferry-ovn-supervisor".into())
            .spawn(move || {
                while !shared.stopping.load(Ordering::SeqCst) {
                    shared.supervise_once();
                    thread::park_timeout(Duration::from_millis(100));
                }
            })
            .map_err(|e| Error::io("spawn supervisor thread for", &self.shared.paths.dir, e))?;
        self.supervisor = Some(handle);
        Ok(())
    }

    /// The OVS database, `ovs-vswitchd` (in its namespace) with the integration bridge,
    /// and `ovn-controller`, ready once its chassis is registered in the SB.
    fn bring_up_chassis(&mut self) -> Result<()> {
        let p = self.shared.paths.clone();
        let o = self.opts.clone();

        create_db(&p, "conf.db", "/usr/share/openvswitch/vswitch.ovsschema")?;
        let argv = vec![
            "ovsdb-server".into(),
            p.db_file("conf.db"),
            format!("--remote=punix:{}", path_arg(&p.ovs_sock)),
            p.ctl_flag(Daemon::OvsDb),
            p.log_flag(Daemon::OvsDb),
            "-vconsole:off".into(),
        ];
        self.launch(Daemon::OvsDb, argv, None, |_| {
            probe_db(&p.ovs_sock, "Open_vSwitch")
        })?;
        self.vsctl(&["--no-wait", "init"])?;
        if !o.ovs_other_config.is_empty() {
            let kv: Vec<String> = o
                .ovs_other_config
                .iter()
                .map(|(k, v)| format!("other_config:{k}={v}"))
                .collect();
            let mut args = vec!["--no-wait", "set", "Open_vSwitch", "."];
            args.extend(kv.iter().map(String::as_str));
            self.vsctl(&args)?;
        }

        if let Some(ns) = &o.ovs_netns {
            let state = self.shared.registry.load()?;
            if !state.netns.contains(ns) && netns::netns_exists(ns) {
                return Err(Error::AlreadyExists {
                    what: "network namespace",
                    name: ns.clone(),
                });
            }
            self.shared.registry.add_netns(ns)?;
            self.created_netns = true;
            if !netns::netns_exists(ns) {
                process::run_ok(Command::new("ip").args(["netns", "add", ns]))?;
            }
            process::run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        let argv = vec![
            "ovs-vswitchd".into(),
            unix_remote(&p.ovs_sock),
            p.ctl_flag(Daemon::Vswitchd),
            p.log_flag(Daemon::Vswitchd),
            "-vconsole:off".into(),
        ];
        let vs_ctl = p.ctl(Daemon::Vswitchd);
        self.launch(Daemon::Vswitchd, argv, o.ovs_netns.clone(), |_| {
            jsonrpc::call(&vs_ctl, "version", json!([]), Duration::from_secs(2)).map(drop)
        })?;
        // Without --no-wait, ovs-vsctl returns once ovs-vswitchd applied the bridge.
        let br = o.bridge.as_str();
        let ids = [
            format!("external_ids:system-id={}", o.system_id),
            format!("external_ids:ovn-remote={}", self.sb_remote()),
            "external_ids:ovn-encap-type=geneve".to_owned(),
            format!("external_ids:ovn-encap-ip={}", o.encap_ip),
            "external_ids:ovn-bridge-datapath-type=netdev".to_owned(),
            format!("external_ids:ovn-bridge={br}"),
        ];
        let mut args = vec![
            "--",
            "--may-exist",
            "add-br",
            br,
            "--",
            "set",
            "Bridge",
            br,
            "datapath_type=netdev",
            "fail-mode=secure",
            "--",
            "set",
            "Open_vSwitch",
            ".",
        ];
        args.extend(ids.iter().map(String::as_str));
        self.vsctl(&args)?;

        let mut argv = vec![
            "ovn-controller".into(),
            unix_remote(&p.ovs_sock),
            p.log_flag(Daemon::Controller),
            "-vconsole:off".into(),
        ];
        if let Some(t) = &self.tls {
            argv.extend(t.pki.ssl_args(&t.controller));
        }
        let system_id = o.system_id.clone();
        // A chassis-only stack registers in the SB it was given (its first member when
        // it is a RAFT cluster's list).
        let first_sb = o.sb_remote.as_deref().and_then(|r| r.split(',').next());
        let sb_sock = match first_sb.and_then(|r| r.strip_prefix("unix:")) {
            Some(path) if !o.run_central => std::path::PathBuf::from(path),
            _ => p.sb_sock.clone(),
        };
        self.launch(Daemon::Controller, argv, None, |pid| {
            let status = jsonrpc::call(
                &p.controller_ctl(pid),
                "connection-status",
                json!([]),
                Duration::from_secs(2),
            )?;
            if status.as_str().map(str::trim) != Some("connected") {
                return Err(format!("SB connection-status {status}"));
            }
            probe_chassis(&sb_sock, &system_id)
        })
    }

    /// Starts one daemon and waits until `ready` succeeds.
    fn launch(
        &mut self,
        daemon: Daemon,
        argv: Vec<String>,
        netns: Option<String>,
        ready: impl Fn(i32) -> Result<(), String>,
    ) -> Result<()> {
        self.launch_named(daemon, daemon.name(), argv, netns, ready)
    }

    /// [`OvnStack::launch`] of one of several processes of a daemon (a RAFT member),
    /// under its own name.
    fn launch_named(
        &mut self,
        daemon: Daemon,
        name: &str,
        argv: Vec<String>,
        netns: Option<String>,
        ready: impl Fn(i32) -> Result<(), String>,
    ) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let t0 = Instant::now();
        let spec = Spec {
            daemon,
            name: name.to_owned(),
            argv,
            netns,
        };
        let child = self.shared.spawn(&spec)?;
        let pid = child.id() as i32;
        self.shared.slots().push(Slot {
            spec,
            child: Some(child),
            pid,
            started: t0,
            restarts: 0,
            backoff: self.opts.min_backoff,
            restart_at: None,
        });
        let log = self.shared.paths.log_named(name);
        let deadline = t0 + self.opts.ready_timeout;
        let mut last;
        loop {
            {
                let mut slots = self.shared.slots();
                if let Some(Slot { child: Some(c), .. }) = slots.last_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Err(Error::Exited {
                        process: name.to_owned(),
                        status: status.to_string(),
                        tail: log_tail(&log, 5),
                        log,
                    });
                }
            }
            match ready(pid) {
                Ok(()) => break,
                Err(e) => last = e,
            }
            if self.cancel.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    process: name.to_owned(),
                    timeout: self.opts.ready_timeout,
                    detail: last,
                    log,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
        let took = t0.elapsed();
        tracing::info!(daemon = name, pid, ms = took.as_millis() as u64, "ready");
        self.startup.push((daemon, took));
        Ok(())
    }

    /// Runs `ovs-vsctl --db=unix:DIR/run/db.sock --timeout=READY ARGS...`; returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        self.ctl("ovs-vsctl", &self.shared.paths.ovs_sock, args)
    }

    /// Runs `ovn-nbctl --db=unix:DIR/run/nb.sock ARGS...` (every member's socket when
    /// the NB is a RAFT cluster: `ovn-nbctl` finds the leader); returns stdout.
    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        let db = self.unix_remotes(Daemon::NbDb);
        self.ctl_db("ovn-nbctl", &db, args)
    }

    /// Runs `ovn-sbctl --db=unix:DIR/run/sb.sock ARGS...` (every member's socket when
    /// the SB is a RAFT cluster); returns stdout.
    pub fn sbctl(&self, args: &[&str]) -> Result<String> {
        let db = self.unix_remotes(Daemon::SbDb);
        self.ctl_db("ovn-sbctl", &db, args)
    }

    /// `unix:` remotes of NB or SB, comma separated (one unless clustered).
    fn unix_remotes(&self, d: Daemon) -> String {
        crate::raft::remotes(&crate::raft::members(
            &self.shared.paths,
            d,
            self.opts.raft_members,
        ))
    }

    /// The members of NB's or SB's RAFT cluster (one standalone server unless
    /// [`OvnOptions::raft_members`] > 1).
    pub fn members(&self, d: Daemon) -> Vec<crate::raft::Member> {
        crate::raft::members(&self.shared.paths, d, self.opts.raft_members)
    }

    /// The current PID of a process by its name (a RAFT member: `nb-ovsdb-2`).
    pub fn pid_named(&self, name: &str) -> Option<i32> {
        self.shared
            .slots()
            .iter()
            .find(|s| s.spec.name == name && s.child.is_some())
            .map(|s| s.pid)
    }

    /// The member of NB's or SB's cluster that leads now, with its PID.
    pub fn leader(&self, d: Daemon) -> Option<(crate::raft::Member, i32)> {
        crate::raft::leader(&self.shared.paths.dir, d, self.opts.raft_members)
    }

    fn ctl(&self, program: &str, sock: &Path, args: &[&str]) -> Result<String> {
        self.ctl_db(program, &unix_remote(sock), args)
    }

    fn ctl_db(&self, program: &str, db: &str, args: &[&str]) -> Result<String> {
        process::run_ok(
            Command::new(program)
                .arg(format!("--db={db}"))
                .arg(format!(
                    "--timeout={}",
                    self.opts.ready_timeout.as_secs().max(1)
                ))
                .args(args)
                .envs(self.shared.paths.env()),
        )
    }

    /// The directory layout.
    pub fn paths(&self) -> &LabPaths {
        &self.shared.paths
    }

    /// The options the stack was started with.
    pub fn options(&self) -> &OvnOptions {
        &self.opts
    }

    /// The stack's registry (`DIR/state.json`), to pass to `ferry_lab::Host::create`.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// `unix:DIR/run/nb.sock`, or with [`OvnOptions::tls`] `ssl:127.0.0.1:PORT` (then a
    /// client needs [`OvnStack::tls`]'s `client` pair and CA).
    pub fn nb_remote(&self) -> String {
        match &self.tls {
            Some(t) => t.nb_remote(),
            None => self.unix_remotes(Daemon::NbDb),
        }
    }

    /// `unix:DIR/run/sb.sock`, or with [`OvnOptions::tls`] `ssl:127.0.0.1:PORT`.
    pub fn sb_remote(&self) -> String {
        if !self.opts.run_central
            && let Some(r) = &self.opts.sb_remote
        {
            return r.clone();
        }
        match &self.tls {
            Some(t) => t.sb_remote(),
            None => self.unix_remotes(Daemon::SbDb),
        }
    }

    /// The PKI and `pssl:` ports of a stack started with [`OvnOptions::tls`].
    pub fn tls(&self) -> Option<&crate::pki::StackTls> {
        self.tls.as_ref()
    }

    /// The integration bridge, for `ferry_lab::Host::create`.
    pub fn bridge(&self) -> OvsBridge {
        OvsBridge {
            db_sock: self.shared.paths.ovs_sock.clone(),
            name: self.opts.bridge.clone(),
            netns: self.opts.ovs_netns.clone(),
        }
    }

    /// The current PID of a daemon (`None` while it waits to be restarted).
    pub fn pid(&self, d: Daemon) -> Option<i32> {
        self.shared
            .slots()
            .iter()
            .find(|s| s.spec.daemon == d && s.child.is_some())
            .map(|s| s.pid)
    }

    /// How often the supervisor restarted a daemon.
    pub fn restarts(&self, d: Daemon) -> u32 {
        self.shared
            .slots()
            .iter()
            .find(|s| s.spec.daemon == d)
            .map_or(0, |s| s.restarts)
    }

    /// How long each daemon took from spawn to ready during [`OvnStack::start`].
    pub fn startup_times(&self) -> &[(Daemon, Duration)] {
        &self.startup
    }

    /// Stops supervision, then every daemon in reverse start order (SIGTERM, SIGKILL after
    /// [`OvnOptions::stop_timeout`]), removes their pidfiles and records, and deletes the
    /// `ovs-vswitchd` namespace. Databases and logs stay.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops supervision and returns, leaving the daemons running with their records in
    /// `state.json` (what a crashed `ferry` leaves behind; [`crate::stop_from_dir`]
    /// removes them).
    pub fn detach(mut self) {
        self.halt_supervisor();
        // Dropping a Child neither kills nor waits for it.
        self.shared.slots().clear();
        self.finished = true;
    }

    fn halt_supervisor(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(h) = self.supervisor.take() {
            h.thread().unpark();
            if h.join().is_err() {
                tracing::error!("supervisor thread panicked");
            }
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.halt_supervisor();
        if self.opts.chassis
            && self.opts.ovs_netns.is_none()
            && self.pid(Daemon::Vswitchd).is_some()
        {
            self.release_root_taps();
        }
        let mut failures = Vec::new();
        let slots: Vec<Slot> = std::mem::take(&mut *self.shared.slots());
        for mut slot in slots.into_iter().rev() {
            let name = slot.spec.name.as_str();
            if let Some(mut child) = slot.child.take() {
                let r = process::terminate(name, slot.pid, self.opts.stop_timeout, || {
                    matches!(child.try_wait(), Ok(Some(_)) | Err(_))
                });
                match r {
                    Ok(ended) => tracing::info!(daemon = name, pid = slot.pid, ?ended, "stopped"),
                    Err(e) => {
                        failures.push(e.to_string());
                        continue;
                    }
                }
            }
            let pidfile = self.shared.paths.pidfile_named(name);
            let _ = std::fs::remove_file(pidfile);
            if let Err(e) = self.shared.registry.remove_process(name, slot.pid) {
                failures.push(e.to_string());
            }
        }
        // After northd (stopped above), so it never sees its databases vanish first.
        self.proxies.clear();
        if self.created_netns
            && let Some(ns) = &self.opts.ovs_netns
        {
            match netns::delete_netns(ns) {
                Ok(()) => {
                    if let Err(e) = self.shared.registry.remove_netns(ns) {
                        failures.push(e.to_string());
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                dir: self.shared.paths.dir.clone(),
                failures,
            })
        }
    }
}

impl OvnStack {
    /// With `ovs-vswitchd` in the caller's namespace, its taps would outlive it there:
    /// deleting the bridge removes the bridge's tap, and `exit --cleanup` the datapath's
    /// own `ovs-netdev`. Best effort; the daemons are stopped afterwards anyway.
    fn release_root_taps(&self) {
        let ctl = self.shared.paths.ctl(Daemon::Vswitchd);
        let steps = [
            self.vsctl(&["--if-exists", "del-br", &self.opts.bridge]),
            process::run_ok(
                Command::new("ovs-appctl")
                    .arg("--timeout=10")
                    .arg("-t")
                    .arg(&ctl)
                    .args(["exit", "--cleanup"]),
            ),
        ];
        for r in steps {
            if let Err(e) = r {
                tracing::warn!(error = %e, "releasing ovs-vswitchd's taps");
            }
        }
    }
}

impl Drop for OvnStack {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "stopping the OVN stack on drop");
        }
    }
}

// === helpers ===

fn path_arg(x: &Path) -> String {
    x.display().to_string()
}

fn create_db(p: &LabPaths, file: &str, schema: &str) -> Result<()> {
    let path = p.db_dir.join(file);
    if path.exists() {
        return Ok(());
    }
    process::run_ok(
        Command::new("ovsdb-tool")
            .arg("create")
            .arg(&path)
            .arg(schema),
    )?;
    Ok(())
}

/// The last `n` lines of a log file (empty if unreadable).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Unix socket paths are limited to 107 bytes; fail early with a clear message.
fn check_socket_paths(p: &LabPaths, bridge: &str) -> Result<()> {
    let longest = Daemon::ALL
        .iter()
        .map(|d| p.ctl(*d))
        .chain([
            p.controller_ctl(4_194_304),
            p.run_dir.join(format!("{bridge}.snoop")),
        ])
        .map(|x| x.as_os_str().len())
        .max()
        .unwrap_or(0);
    if longest > 107 {
        return Err(Error::Invalid {
            what: "lab directory",
            value: p.dir.display().to_string(),
            reason: format!("its sockets would need {longest} bytes; unix socket paths allow 107"),
        });
    }
    Ok(())
}
