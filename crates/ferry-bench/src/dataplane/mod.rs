//! `ferry bench dataplane`: five ways from a client namespace to a backend namespace,
//! built and measured in one run on one machine, so that the figures can be compared as
//! ratios even on a noisy machine:
//!
//! | path | what carries the traffic |
//! |---|---|
//! | `direct` | kernel routing: client and backend namespaces joined by a router namespace |
//! | `iptables` | the same, plus kube-proxy's iptables rules for `N` services in the router; the client connects to a cluster IP |
//! | `nftables` | the same, with kube-proxy's nftables rules (one verdict map) |
//! | `ovn-direct` | OVN in the userspace datapath: client, switch, router, switch, backend IP |
//! | `ferry-ovn` | the same through an OVN load balancer VIP: `N` services programmed by Ferry's programmer (`ferry-net` + `ferry-ovsdb`) into a VPC's `Load_Balancer_Group` |
//! | `ferry-sock` | the same VIP and fabric, but translated at `connect()` by Ferry's socket LB (`ferry-sock`, `N` services in its BPF maps), so the packets carry the backend's address; client and backend are in the VPC's socket-LB port group, so their packets skip conntrack |
//! | `ferry-sock-bare` | the socket LB on `ovn-direct`'s client and fabric (no load balancer group on its switches): `ovn-direct` plus only the socket LB's cost |
//! | `ferry-sock-stateless` | `ferry-sock` from a second socket-LB client. Both clients and the backend are in `fbv`'s socket-LB port group, as the network controller does for pods on socket-LB nodes (traffic between members skips conntrack, [`ovn::socket_lb_ports`]), so since that group became Ferry's default this path is the same as `ferry-sock`; kept so runs compare with earlier ones |
//!
//! For each path: iperf3 throughput, sockperf TCP ping-pong latency (p50/p99), wrk
//! keep-alive requests/s, wrk `Connection: close` connections/s, and the time to program
//! the `N` services. Measurements are interleaved: each round runs one metric on every
//! path back to back, then the next metric; each figure is the median over the rounds.
//!
//! Everything is created under a unique prefix `fb-<pid>-` (namespaces) and a temporary
//! directory, and removed at the end, on error, and on SIGINT/SIGTERM. Only processes this
//! run started are stopped, by PID. Needs root and the Debian packages iperf3, sockperf,
//! wrk, nginx-light, curl, iptables, nftables, ovn-central, ovn-host, openvswitch-switch.

mod iptables;
mod kernel;
mod matrix;
mod nftables;
mod ovn;
mod report;
mod services;
mod sock;
mod tools;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use ferry_lab::PortType;
pub use iptables::restore_input as iptables_restore_input;
pub use matrix::{MatrixConfig, matrix_configs, matrix_table, parse_matrix, run_matrix};
pub use nftables::script as nftables_script;
pub use report::{Row, median, table, to_json};
pub use services::{Catalogue, MAX_SERVICES, Port, Service, catalogue};

use crate::error::{Error, Result};
use kernel::{KernelPath, Namespaces, Rules};
use ovn::OvnPaths;

// === options ===

/// One of the measured paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BenchPath {
    Direct,
    Iptables,
    Nftables,
    OvnDirect,
    FerryOvn,
    FerrySock,
    FerrySockBare,
    FerrySockStateless,
}

impl BenchPath {
    /// Every path, in report order.
    pub const ALL: [BenchPath; 8] = [
        BenchPath::Direct,
        BenchPath::Iptables,
        BenchPath::Nftables,
        BenchPath::OvnDirect,
        BenchPath::FerryOvn,
        BenchPath::FerrySock,
        BenchPath::FerrySockBare,
        BenchPath::FerrySockStateless,
    ];

    /// Its name in the JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BenchPath::Direct => "direct",
            BenchPath::Iptables => "iptables",
            BenchPath::Nftables => "nftables",
            BenchPath::OvnDirect => "ovn-direct",
            BenchPath::FerryOvn => "ferry-ovn",
            BenchPath::FerrySock => "ferry-sock",
            BenchPath::FerrySockBare => "ferry-sock-bare",
            BenchPath::FerrySockStateless => "ferry-sock-stateless",
        }
    }

    /// The path named `s`.
    pub fn parse(s: &str) -> Result<BenchPath> {
        BenchPath::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::Invalid {
                option: "--paths",
                reason: format!(
                    "unknown path {s:?}; use {}",
                    BenchPath::ALL.map(BenchPath::name).join(", ")
                ),
            })
    }

    fn is_ovn(self) -> bool {
        matches!(
            self,
            BenchPath::OvnDirect
                | BenchPath::FerryOvn
                | BenchPath::FerrySock
                | BenchPath::FerrySockBare
                | BenchPath::FerrySockStateless
        )
    }
}

/// The name of an OVS port type as `--ovs-port-type` spells it.
pub fn port_type_name(t: PortType) -> &'static str {
    match t {
        PortType::System => "system",
        PortType::Afxdp => "afxdp",
        PortType::AfxdpNonPmd => "afxdp-nonpmd",
    }
}

/// Parses `--ovs-port-type`: `system` (or `veth`, the default: AF_PACKET on the veth),
/// `afxdp`, `afxdp-nonpmd` (both with `options:xdp-mode=native`).
pub fn parse_port_type(s: &str) -> Result<PortType> {
    match s {
        "system" | "veth" | "" => Ok(PortType::System),
        "afxdp" => Ok(PortType::Afxdp),
        "afxdp-nonpmd" => Ok(PortType::AfxdpNonPmd),
        other => Err(Error::Invalid {
            option: "--ovs-port-type",
            reason: format!("unknown type {other:?}; use system, afxdp or afxdp-nonpmd"),
        }),
    }
}

/// How the OVN rows' `ovs-vswitchd` and veths are tuned; `None` fields keep what the lab
/// and the agent do by default (`ferry_ovn_stack::default_ovs_other_config`, the agent's
/// checksum offload rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OvsTuning {
    /// `other_config:userspace-tso-enable`.
    pub userspace_tso: Option<bool>,
    /// Transmit checksum offload on both ends of every OVN host's veth.
    pub tx_checksum_offload: Option<bool>,
    /// `other_config:n-handler-threads`.
    pub handler_threads: Option<u32>,
    /// `other_config:n-revalidator-threads`.
    pub revalidator_threads: Option<u32>,
}

impl OvsTuning {
    /// The `Open_vSwitch` `other_config` the stack starts with (pure).
    pub fn other_config(&self) -> Vec<(String, String)> {
        let mut kv = ferry_ovn_stack::default_ovs_other_config();
        let mut set = |k: &str, v: String| {
            kv.retain(|(key, _)| key != k);
            kv.push((k.to_owned(), v));
        };
        if let Some(t) = self.userspace_tso {
            set("userspace-tso-enable", t.to_string());
        }
        if let Some(n) = self.handler_threads {
            set("n-handler-threads", n.to_string());
        }
        if let Some(n) = self.revalidator_threads {
            set("n-revalidator-threads", n.to_string());
        }
        kv
    }
}

/// What to run. [`DataplaneOptions::default`] is the documented default run (1000 services,
/// 4-second measurements, 3 rounds, all paths, veth ports: about 6 minutes on 2 cores).
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// Services installed on the `iptables`, `nftables` and `ferry-ovn` paths (1..=65000).
    pub services: usize,
    /// Also write the JSON rows here.
    pub out: Option<PathBuf>,
    /// OVS interface type of the OVN rows' ports.
    pub ovs_port_type: PortType,
    /// `ovs-vswitchd` and veth tuning of the OVN rows.
    pub ovs: OvsTuning,
    /// Seconds per measurement.
    pub duration_s: u64,
    /// Rounds of measurements; each figure is the median.
    pub rounds: usize,
    /// The paths to measure (ratios need `direct`, and `ovn-direct` for `ferry-ovn`).
    pub paths: Vec<BenchPath>,
    /// Endpoints of each filler service (the measured one has the one real backend).
    pub filler_backends: usize,
    /// The `iptables-restore` to use (`iptables-restore` is `nf_tables` on Debian 12;
    /// `iptables-legacy-restore` for the legacy backend).
    pub iptables_restore: String,
    /// Print the table on stdout when done.
    pub print_table: bool,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        DataplaneOptions {
            services: 1000,
            out: None,
            ovs_port_type: PortType::System,
            ovs: OvsTuning::default(),
            duration_s: 4,
            rounds: 3,
            paths: BenchPath::ALL.to_vec(),
            filler_backends: 2,
            iptables_restore: "iptables-restore".into(),
            print_table: true,
        }
    }
}

impl DataplaneOptions {
    fn validate(&self) -> Result<()> {
        let bad = |option, reason: &str| {
            Err(Error::Invalid {
                option,
                reason: reason.into(),
            })
        };
        if self.services == 0 || self.services > MAX_SERVICES {
            return bad("--services", "must be 1..=65000");
        }
        if self.duration_s == 0 || self.duration_s > 600 {
            return bad("--duration", "must be 1..=600 seconds");
        }
        if self.rounds == 0 {
            return bad("--rounds", "must be at least 1");
        }
        if self.paths.is_empty() {
            return bad("--paths", "name at least one path");
        }
        if self.filler_backends == 0 || self.filler_backends > 100 {
            return bad("--filler-backends", "must be 1..=100");
        }
        Ok(())
    }
}

/// Programs every selected path needs.
fn required_programs(opts: &DataplaneOptions) -> Vec<&str> {
    let mut p = vec![
        "ip", "timeout", "sysctl", "iperf3", "sockperf", "wrk", "nginx", "curl",
    ];
    if opts.paths.contains(&BenchPath::Iptables) {
        p.push(&opts.iptables_restore);
    }
    if opts.paths.contains(&BenchPath::Nftables) {
        p.push("nft");
    }
    if opts.paths.iter().any(|x| x.is_ovn()) {
        p.extend([
            "ovsdb-server",
            "ovsdb-tool",
            "ovn-northd",
            "ovn-controller",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-ofctl",
            "ovn-nbctl",
            "ethtool",
        ]);
    }
    p
}

fn check_programs(opts: &DataplaneOptions) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = required_programs(opts)
        .into_iter()
        .filter(|prog| !std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            option: "prerequisites",
            reason: format!(
                "not found in PATH: {} (Debian: apt-get install iperf3 sockperf wrk nginx-light curl iptables nftables ovn-central ovn-host openvswitch-switch ethtool)",
                missing.join(", ")
            ),
        })
    }
}

// === the run ===

/// Where one path's client sends its traffic.
#[derive(Debug, Clone)]
struct Target {
    path: BenchPath,
    client_ns: String,
    target: Ipv4Addr,
    vswitchd: Option<i32>,
    /// `ovs-vswitchd`'s control socket (OVN rows): datapath counters per measurement.
    vswitchd_ctl: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Samples {
    gbps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    rps: Vec<f64>,
    cps: Vec<f64>,
    cpu: Vec<f64>,
    ovs_cpu: Vec<f64>,
    /// `ovs-vswitchd` datapath counters over each new-connection measurement.
    dp: Vec<tools::DpStats>,
    errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Throughput,
    Latency,
    KeepAlive,
    NewConn,
}

/// Everything the run created; [`Setup::cleanup`] (or drop) removes it.
#[derive(Debug, Default)]
struct Setup {
    kernel: Vec<(BenchPath, KernelPath)>,
    ovn: Option<OvnPaths>,
    /// Dropped before the OVN paths: detaches the socket LB.
    sock: Option<sock::SockPath>,
    namespaces: Namespaces,
}

impl Setup {
    fn cleanup(&mut self, prefix: &str) -> Vec<String> {
        let mut left = Vec::new();
        for (_, k) in &mut self.kernel {
            if let Some(mut b) = k.backend.take()
                && let Err(e) = b.stop()
            {
                left.push(format!("kernel backend server: {e}"));
            }
        }
        self.kernel.clear();
        self.sock = None;
        if let Some(mut o) = self.ovn.take() {
            left.extend(o.shutdown());
        }
        left.extend(self.namespaces.delete_all());
        left.extend(
            leftover_namespaces(prefix)
                .into_iter()
                .map(|n| format!("namespace {n} still exists")),
        );
        left
    }
}

/// Namespaces whose name starts with `prefix`.
pub fn leftover_namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace prefix of this process's runs: `fb-<pid>-`.
pub fn namespace_prefix() -> String {
    format!("fb-{}-", std::process::id())
}

/// Runs the benchmark: builds every selected path, measures, removes everything, prints
/// the table (unless `print_table` is off), writes the JSON rows to `out`, and returns the
/// rows. A measurement that fails leaves its figure `null` and says why in the row's
/// `errors`; a path that cannot be built fails the run (after cleaning up).
pub fn run(opts: &DataplaneOptions) -> Result<Vec<Row>> {
    opts.validate()?;
    check_programs(opts)?;
    let (rt, stop) = runtime_and_stop()?;
    let rows = run_one(opts, &rt, &stop)?;
    if opts.print_table {
        println!("{}", table(&rows));
    }
    if let Some(out) = &opts.out {
        std::fs::write(out, to_json(&rows) + "\n").map_err(|e| Error::io("write", out, e))?;
    }
    Ok(rows)
}

/// A one-thread runtime and a flag that SIGINT/SIGTERM set.
fn runtime_and_stop() -> Result<(tokio::runtime::Runtime, Arc<AtomicBool>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start a tokio runtime in", "/", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("interrupted: stopping after the current step and cleaning up");
            stop.store(true, Ordering::SeqCst);
        });
    }
    Ok((rt, stop))
}

/// Builds, measures and removes every selected path once; the rows (not printed).
fn run_one(
    opts: &DataplaneOptions,
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
) -> Result<Vec<Row>> {
    let dir = tempfile::Builder::new()
        .prefix("ferry-bench-")
        .tempdir()
        .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
    let prefix = namespace_prefix();
    let mut setup = Setup::default();
    let result = build_and_measure(opts, &prefix, dir.path(), rt, stop, &mut setup);
    let left = setup.cleanup(&prefix);
    let rows = result?;
    if !left.is_empty() {
        return Err(Error::Cleanup(left));
    }
    Ok(rows)
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

fn build_and_measure(
    opts: &DataplaneOptions,
    prefix: &str,
    dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    setup: &mut Setup,
) -> Result<Vec<Row>> {
    let n = opts.services;
    let mut details: Vec<(BenchPath, Option<f64>, String)> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for (i, (path, rules, tag)) in [
        (BenchPath::Direct, Rules::None, "d"),
        (BenchPath::Iptables, Rules::Iptables, "i"),
        (BenchPath::Nftables, Rules::Nftables, "n"),
    ]
    .into_iter()
    .enumerate()
    {
        if !opts.paths.contains(&path) {
            continue;
        }
        check(stop)?;
        let (_, _, _, backend) = kernel::subnets(i as u8);
        let cat = catalogue(
            n,
            backend,
            Ipv4Addr::new(10, 240 + i as u8, 3, 0),
            opts.filler_backends,
        );
        tracing::info!(path = path.name(), services = n, "building");
        let step =
            ferry_lab::progress::step(i + 1, 4, &format!("building the {} path", path.name()));
        let k = KernelPath::create(
            &mut setup.namespaces,
            &format!("{prefix}{tag}"),
            i as u8,
            rules,
            &cat,
            &opts.iptables_restore,
            dir,
        )?;
        step.done();
        tracing::info!(path = path.name(), program_s = ?k.program_s, "built");
        details.push((path, k.program_s, k.detail.clone()));
        targets.push(Target {
            path,
            client_ns: k.client_ns.clone(),
            target: k.target,
            vswitchd: None,
            vswitchd_ctl: None,
        });
        setup.kernel.push((path, k));
    }
    if opts.paths.iter().any(|p| p.is_ovn()) {
        check(stop)?;
        tracing::info!(
            services = n,
            port_type = port_type_name(opts.ovs_port_type),
            "building the OVN paths"
        );
        let cat = catalogue(
            n,
            ovn::VIP_BACKEND,
            ovn::VIP_FILLER_POOL,
            opts.filler_backends,
        );
        let step = ferry_lab::progress::step(4, 4, "building the OVN paths");
        let o = setup.ovn.insert(OvnPaths::create(
            prefix,
            opts.ovs_port_type,
            &opts.ovs,
            &cat,
            dir,
            rt,
        )?);
        step.done();
        tracing::info!(
            program_s = o.program_s,
            detail = o.detail,
            "OVN paths built"
        );
        let vs = o.vswitchd_pid();
        let ctl = o.vswitchd_ctl();
        if opts.paths.contains(&BenchPath::OvnDirect) {
            details.push((
                BenchPath::OvnDirect,
                None,
                "OVN userspace datapath, no load balancer on the path".into(),
            ));
            targets.push(Target {
                path: BenchPath::OvnDirect,
                client_ns: o.direct.client_ns.clone(),
                target: o.direct.target,
                vswitchd: vs,
                vswitchd_ctl: ctl.clone(),
            });
        }
        if opts.paths.contains(&BenchPath::FerryOvn) {
            details.push((BenchPath::FerryOvn, Some(o.program_s), o.detail.clone()));
            targets.push(Target {
                path: BenchPath::FerryOvn,
                client_ns: o.vip.client_ns.clone(),
                target: o.vip.target,
                vswitchd: vs,
                vswitchd_ctl: ctl.clone(),
            });
        }
        let sock_paths = [
            BenchPath::FerrySock,
            BenchPath::FerrySockBare,
            BenchPath::FerrySockStateless,
        ];
        if sock_paths.iter().any(|p| opts.paths.contains(p)) {
            let client_ns = format!("{prefix}{}", ovn::SOCK_CLIENT_ROLE);
            let bare_ns = format!("{prefix}{}", ovn::PORTS[0].role);
            let step = ferry_lab::progress::step(4, 4, "programming the ferry-sock paths");
            let bare = opts
                .paths
                .contains(&BenchPath::FerrySockBare)
                .then(|| (bare_ns.as_str(), ovn::PORTS[1].ip));
            let stateless_ns = format!("{prefix}{}", ovn::SOCK_STATELESS_ROLE);
            let s = setup.sock.insert(sock::SockPath::create(
                &[client_ns.as_str(), stateless_ns.as_str()],
                &cat,
                bare,
            )?);
            step.done();
            tracing::info!(
                program_s = s.program_s,
                plan_s = s.plan_s,
                "ferry-sock path built"
            );
            if opts.paths.contains(&BenchPath::FerrySock) {
                details.push((BenchPath::FerrySock, Some(s.program_s), s.detail.clone()));
                targets.push(Target {
                    path: BenchPath::FerrySock,
                    client_ns,
                    target: cat.measured().cluster_ip,
                    vswitchd: vs,
                    vswitchd_ctl: ctl.clone(),
                });
            }
            if opts.paths.contains(&BenchPath::FerrySockStateless) {
                details.push((
                    BenchPath::FerrySockStateless,
                    Some(s.program_s),
                    format!(
                        "ferry-sock from a second socket-LB client; since the socket-LB port \
                         group ({}) is Ferry's default, the same as ferry-sock (kept so runs \
                         compare with earlier ones)",
                        ferry_net::socket_lb_group(ovn::VPC_VIP)
                    ),
                ));
                targets.push(Target {
                    path: BenchPath::FerrySockStateless,
                    client_ns: stateless_ns,
                    target: cat.measured().cluster_ip,
                    vswitchd: vs,
                    vswitchd_ctl: ctl.clone(),
                });
            }
            if opts.paths.contains(&BenchPath::FerrySockBare) {
                details.push((
                    BenchPath::FerrySockBare,
                    Some(s.program_s),
                    "ferry-sock on ovn-direct's client and switches (no OVN load balancer on \
                     them): the measured VIP translated to ovn-direct's backend"
                        .into(),
                ));
                targets.push(Target {
                    path: BenchPath::FerrySockBare,
                    client_ns: bare_ns,
                    target: cat.measured().cluster_ip,
                    vswitchd: vs,
                    vswitchd_ctl: ctl.clone(),
                });
            }
        }
    }
    targets.sort_by_key(|t| t.path);

    for t in &targets {
        check(stop)?;
        let limit = if t.path.is_ovn() {
            ovn::READY_TIMEOUT
        } else {
            Duration::from_secs(10)
        };
        tools::wait_http(t.path.name(), &t.client_ns, t.target, limit)?;
    }

    // The idle cost of the OVS datapath (a busy-polling PMD thread shows here).
    let idle_ovs = targets.iter().find_map(|t| t.vswitchd).and_then(|pid| {
        let a = tools::process_ticks(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let b = tools::process_ticks(pid)?;
        Some((b - a) as f64 / tools::ticks_per_s() / t0.elapsed().as_secs_f64())
    });

    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    let mut load: Vec<f64> = Vec::new();
    let d = opts.duration_s;
    let total = opts.rounds * 4 * targets.len();
    let mut measured = 0;
    for round in 0..opts.rounds {
        for metric in [
            Metric::Throughput,
            Metric::Latency,
            Metric::KeepAlive,
            Metric::NewConn,
        ] {
            for (t, s) in targets.iter().zip(samples.iter_mut()) {
                check(stop)?;
                measure(t, metric, d, s);
                load.extend(tools::load_average_1m());
                measured += 1;
                ferry_lab::progress::count("measurements", measured, total, t.path.name());
            }
            tracing::info!(
                round = round + 1,
                of = opts.rounds,
                ?metric,
                "measured every path"
            );
        }
    }

    let rows = targets
        .iter()
        .zip(samples)
        .map(|(t, s)| {
            let (program_s, detail) = details
                .iter()
                .find(|(p, _, _)| *p == t.path)
                .map(|(_, p, d)| (*p, d.clone()))
                .unwrap_or_default();
            Row {
                path: t.path.name().into(),
                services: match t.path {
                    BenchPath::Direct | BenchPath::OvnDirect => 0,
                    _ => n,
                },
                throughput_gbps: median(&s.gbps),
                latency_p50_us: median(&s.p50),
                latency_p99_us: median(&s.p99),
                rps_keepalive: median(&s.rps),
                cps_new_conn: median(&s.cps),
                program_s,
                ovs_port_type: t
                    .path
                    .is_ovn()
                    .then(|| port_type_name(opts.ovs_port_type).to_owned()),
                throughput_cpu_cores: median(&s.cpu),
                ovs_cpu_cores_throughput: median(&s.ovs_cpu),
                ovs_cpu_cores_idle: if t.path.is_ovn() { idle_ovs } else { None },
                rounds: opts.rounds,
                detail,
                errors: s.errors,
                ovs_config: None,
                load_avg_1m: median(&load),
                ovs_dp_passes_per_packet: median(
                    &s.dp.iter().map(|d| d.passes_per_packet).collect::<Vec<_>>(),
                ),
                ovs_packets_per_conn: median(
                    &s.dp.iter().map(|d| d.packets_per_conn).collect::<Vec<_>>(),
                ),
                ovs_upcalls_per_conn: median(
                    &s.dp.iter().map(|d| d.upcalls_per_conn).collect::<Vec<_>>(),
                ),
            }
        })
        .collect();
    Ok(rows)
}

fn measure(t: &Target, metric: Metric, secs: u64, s: &mut Samples) {
    let name = t.path.name();
    match metric {
        Metric::Throughput => {
            let cpu0 = tools::cpu_times();
            let ovs0 = t.vswitchd.and_then(tools::process_ticks);
            let t0 = Instant::now();
            match tools::iperf3(&t.client_ns, t.target, secs) {
                Ok(g) => {
                    s.gbps.push(g);
                    if let (Some(a), Some(b)) = (cpu0, tools::cpu_times())
                        && let Some(c) = tools::cores_busy(a, b)
                    {
                        s.cpu.push(c);
                    }
                    if let (Some(a), Some(b)) = (ovs0, t.vswitchd.and_then(tools::process_ticks)) {
                        s.ovs_cpu.push(
                            (b - a) as f64 / tools::ticks_per_s() / t0.elapsed().as_secs_f64(),
                        );
                    }
                    tracing::debug!(path = name, gbps = g, "iperf3");
                }
                Err(e) => s.errors.push(format!("iperf3: {e}")),
            }
        }
        Metric::Latency => match tools::sockperf(&t.client_ns, t.target, secs) {
            Ok((p50, p99)) => {
                s.p50.push(p50);
                s.p99.push(p99);
            }
            Err(e) => s.errors.push(format!("sockperf: {e}")),
        },
        Metric::KeepAlive | Metric::NewConn => {
            let close = metric == Metric::NewConn;
            let ctl = t.vswitchd_ctl.as_deref().filter(|_| close);
            if let Some(ctl) = ctl {
                tools::dp_stats_clear(ctl);
            }
            match tools::wrk(&t.client_ns, t.target, secs, close) {
                Ok(w) => {
                    if let Some(dp) = ctl.and_then(tools::dp_stats) {
                        s.dp.push(dp.per_connection(w.requests_per_s * secs as f64));
                    }
                    if close {
                        s.cps.push(w.requests_per_s);
                    } else {
                        s.rps.push(w.requests_per_s);
                    }
                    if w.errors > 0 {
                        s.errors.push(format!(
                            "wrk{}: {} socket errors or non-2xx answers",
                            if close { " (Connection: close)" } else { "" },
                            w.errors
                        ));
                    }
                }
                Err(e) => s.errors.push(format!("wrk: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_types_round_trip_through_their_names() {
        for t in [PortType::System, PortType::Afxdp, PortType::AfxdpNonPmd] {
            assert_eq!(parse_port_type(port_type_name(t)).unwrap(), t);
        }
        assert_eq!(parse_port_type("veth").unwrap(), PortType::System);
        let err = parse_port_type("dpdk").unwrap_err().to_string();
        assert!(
            err.contains("--ovs-port-type") && err.contains("afxdp-nonpmd"),
            "{err}"
        );
    }

    #[test]
    fn paths_round_trip_and_unknown_names_are_refused() {
        for p in BenchPath::ALL {
            assert_eq!(BenchPath::parse(p.name()).unwrap(), p);
        }
        assert!(
            BenchPath::parse("ipvs")
                .unwrap_err()
                .to_string()
                .contains("--paths")
        );
    }

    #[test]
    fn options_are_validated() {
        assert!(DataplaneOptions::default().validate().is_ok());
        let cases = [
            (
                "--services",
                DataplaneOptions {
                    services: 0,
                    ..Default::default()
                },
            ),
            (
                "--services",
                DataplaneOptions {
                    services: 70_000,
                    ..Default::default()
                },
            ),
            (
                "--duration",
                DataplaneOptions {
                    duration_s: 0,
                    ..Default::default()
                },
            ),
            (
                "--rounds",
                DataplaneOptions {
                    rounds: 0,
                    ..Default::default()
                },
            ),
            (
                "--paths",
                DataplaneOptions {
                    paths: vec![],
                    ..Default::default()
                },
            ),
        ];
        for (flag, o) in cases {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
        let ten_k = DataplaneOptions {
            services: 10_000,
            ..Default::default()
        };
        assert!(ten_k.validate().is_ok());
    }

    #[test]
    fn only_the_selected_paths_need_their_programs() {
        let kernel_only = DataplaneOptions {
            paths: vec![BenchPath::Direct],
            ..Default::default()
        };
        let p = required_programs(&kernel_only);
        assert!(p.contains(&"iperf3") && !p.contains(&"nft") && !p.contains(&"ovn-northd"));
        let defaults = DataplaneOptions::default();
        let all = required_programs(&defaults);
        assert!(
            all.contains(&"nft") && all.contains(&"ovn-nbctl") && all.contains(&"iptables-restore")
        );
    }
}
