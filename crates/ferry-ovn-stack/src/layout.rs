//! Names and places: options, daemons, the lab directory layout, the bridge handle.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The integration bridge name OVN expects by default.
pub const DEFAULT_BRIDGE: &str = "br-int";

/// Registry owner tag of the stack's daemons.
pub const OWNER: &str = "ovn";

/// How to start an [`OvnStack`](crate::OvnStack).
#[derive(Debug, Clone)]
pub struct OvnOptions {
    /// The chassis name (`external_ids:system-id`), e.g. `ferry-lab-ch1`. Gateway routers
    /// and gateway ports must name it.
    pub system_id: String,
    /// Whether to run the chassis part (the OVS `ovsdb-server`, `ovs-vswitchd`,
    /// `ovn-controller`; needs root). Without it the stack is the central part only: NB,
    /// SB and `ovn-northd`, all a control plane needs.
    pub chassis: bool,
    /// The integration bridge (default `br-int`; also written to `external_ids:ovn-bridge`).
    pub bridge: String,
    /// The network namespace `ovs-vswitchd` runs in, created and removed by the stack;
    /// `None` runs it in the caller's namespace (taps then stay behind in the root
    /// namespace after a crash, see the module doc).
    pub ovs_netns: Option<String>,
    /// `external_ids:ovn-encap-ip` (default `127.0.0.1`: one chassis, no tunnels).
    pub encap_ip: String,
    /// How long each daemon may take to answer after it is started.
    pub ready_timeout: Duration,
    /// How long a daemon may take to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Restart delay of a daemon that died after running at least 5 s (a crash); one that
    /// dies sooner (a crash loop) waits twice as long as the time before, up to
    /// [`Self::max_backoff`].
    pub min_backoff: Duration,
    /// Longest restart delay.
    pub max_backoff: Duration,
    /// NB and SB also listen on `pssl:` (loopback), with a PKI made by `ovs-pki` under
    /// `DIR/pki`; `ovn-northd` and `ovn-controller` connect over it and
    /// [`OvnStack::nb_remote`](crate::OvnStack::nb_remote) names it ([`crate::StackTls`]).
    pub tls: bool,
    /// Whether to run the central part (NB and SB `ovsdb-server`, `ovn-northd`). Without
    /// it the stack is one chassis only, registered in the SB at [`Self::sb_remote`]: one
    /// per lab node with `ferry up --chassis-per-node`.
    pub run_central: bool,
    /// The SB (`unix:PATH`) a stack without [`Self::run_central`] connects to.
    pub sb_remote: Option<String>,
    /// Members of the NB and of the SB database: 1 (the default) runs each as one
    /// standalone `ovsdb-server`; 3 (or 5) runs each as a RAFT cluster of that many
    /// servers, and [`OvnStack::nb_remote`](crate::OvnStack::nb_remote) lists them all
    /// (see [`crate::raft`]). Not combined with [`Self::tls`] yet.
    pub raft_members: usize,
    /// With RAFT ([`Self::raft_members`] > 1): `ovn-northd` reaches NB and SB through a
    /// proxy that forwards to the current leader (`run/nb-leader.sock`,
    /// `run/sb-leader.sock`, see [`crate::leader_proxy`]) instead of walking the member
    /// list with ovsdb-idl's doubling backoff, which found a new NB leader 7 s after the
    /// old one's `kill -9` in the lab. Default true; the proxy lives in the process that
    /// runs the stack (as the supervisor does).
    pub northd_leader_proxy: bool,
    /// With RAFT: the clusters' election timer in ms, set on each leader after start
    /// (`cluster/change-election-timer`; kept in the database). `None` leaves OVSDB's
    /// default, 1,000 ms, which OVN's docs and deployments keep or raise on loaded
    /// clusters; a follower starts an election this long plus a random 0-1,000 ms after
    /// the leader's last heartbeat, so a shorter timer elects a new leader sooner after a
    /// `kill -9` at the price of spurious elections when a server is starved of CPU.
    pub election_timer_ms: Option<u64>,
    /// `Open_vSwitch` `other_config` keys written before `ovs-vswitchd` starts (some, like
    /// `userspace-tso-enable`, only take effect for ports opened after they are set).
    /// Default: [`default_ovs_other_config`].
    pub ovs_other_config: Vec<(String, String)>,
}

/// The OVS tuning every stack gets unless told otherwise: userspace TSO
/// (`userspace-tso-enable=true`). With it, the userspace datapath reads and writes the
/// kernel's virtio-net header on AF_PACKET (veth) ports, so segments of up to 64 KiB and
/// their pending checksums cross OVS whole instead of as 1,500-byte frames whose
/// checksums the veth's sender must have filled in (which is why veths used to need
/// `ethtool -K DEV tx off`; the agent keeps offload on where this is set). Measured with
/// `ferry bench dataplane --matrix` (docs/benchmarks.md): OVN's throughput 0.05 -> ~0.28
/// of kernel routing.
///
/// OVS 3.1 cannot put a TSO segment into a tunnel (`netdev_push_header` drops it), so a
/// stack whose chassis reach each other over Geneve must turn it off:
/// [`no_tso_ovs_other_config`] ([`OvnOptions::chassis_only`] does).
pub fn default_ovs_other_config() -> Vec<(String, String)> {
    vec![("userspace-tso-enable".to_owned(), "true".to_owned())]
}

/// [`default_ovs_other_config`] without userspace TSO: for chassis joined by tunnels.
pub fn no_tso_ovs_other_config() -> Vec<(String, String)> {
    vec![("userspace-tso-enable".to_owned(), "false".to_owned())]
}

impl OvnOptions {
    /// Defaults for a chassis name: bridge `br-int`, `ovs-vswitchd` in netns
    /// `<system_id>-ovs`, 30 s readiness and 5 s stop timeouts, restart backoff 200 ms..10 s.
    pub fn new(system_id: impl Into<String>) -> OvnOptions {
        let system_id = system_id.into();
        OvnOptions {
            ovs_netns: Some(format!("{system_id}-ovs")),
            system_id,
            chassis: true,
            bridge: DEFAULT_BRIDGE.to_owned(),
            encap_ip: "127.0.0.1".to_owned(),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            tls: false,
            run_central: true,
            sb_remote: None,
            raft_members: 1,
            northd_leader_proxy: true,
            election_timer_ms: None,
            ovs_other_config: default_ovs_other_config(),
        }
    }
}

impl OvnOptions {
    /// The central part only (NB, SB, `ovn-northd`; no root, no namespace): what the
    /// control-plane benchmark and NB tests run. Other defaults as [`OvnOptions::new`].
    pub fn central() -> OvnOptions {
        OvnOptions {
            chassis: false,
            ovs_netns: None,
            ..OvnOptions::new("central")
        }
    }

    /// One chassis only (the OVS `ovsdb-server`, `ovs-vswitchd` in netns
    /// `<system_id>-ovs`, `ovn-controller`), registered in the SB at `sb_remote`
    /// (`unix:PATH`), its tunnels sourced from `encap_ip`. Other defaults as
    /// [`OvnOptions::new`].
    pub fn chassis_only(
        system_id: impl Into<String>,
        sb_remote: impl Into<String>,
        encap_ip: impl Into<String>,
    ) -> OvnOptions {
        OvnOptions {
            run_central: false,
            sb_remote: Some(sb_remote.into()),
            encap_ip: encap_ip.into(),
            // Geneve between chassis: no userspace TSO in OVS 3.1 tunnels.
            ovs_other_config: no_tso_ovs_other_config(),
            ..OvnOptions::new(system_id)
        }
    }
}

/// The supervised daemons, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    /// `ovsdb-server` for OVN_Northbound (`run/nb.sock`).
    NbDb,
    /// `ovsdb-server` for OVN_Southbound (`run/sb.sock`).
    SbDb,
    /// `ovn-northd`.
    Northd,
    /// `ovsdb-server` for Open_vSwitch (`run/db.sock`).
    OvsDb,
    /// `ovs-vswitchd`.
    Vswitchd,
    /// `ovn-controller`.
    Controller,
}

impl Daemon {
    /// All daemons in start order.
    pub const ALL: [Daemon; 6] = [
        Daemon::NbDb,
        Daemon::SbDb,
        Daemon::Northd,
        Daemon::OvsDb,
        Daemon::Vswitchd,
        Daemon::Controller,
    ];

    /// The name used for its log, pidfile, control socket and registry record.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::NbDb => "nb-ovsdb",
            Daemon::SbDb => "sb-ovsdb",
            Daemon::Northd => "ovn-northd",
            Daemon::OvsDb => "ovs-ovsdb",
            Daemon::Vswitchd => "ovs-vswitchd",
            Daemon::Controller => "ovn-controller",
        }
    }
}

/// Where a lab directory keeps things.
#[derive(Debug, Clone)]
pub struct LabPaths {
    /// The lab directory (absolute).
    pub dir: PathBuf,
    /// `DIR/db`: database files.
    pub db_dir: PathBuf,
    /// `DIR/run`: sockets and pidfiles (`OVS_RUNDIR` and `OVN_RUNDIR`).
    pub run_dir: PathBuf,
    /// `DIR/logs`: one log per daemon.
    pub log_dir: PathBuf,
    /// `DIR/run/nb.sock`.
    pub nb_sock: PathBuf,
    /// `DIR/run/sb.sock`.
    pub sb_sock: PathBuf,
    /// `DIR/run/db.sock` (the Open_vSwitch database; the default name OVS tools look for
    /// in `OVS_RUNDIR`).
    pub ovs_sock: PathBuf,
}

impl LabPaths {
    /// The layout under `dir` (which should be absolute).
    pub fn new(dir: &Path) -> LabPaths {
        let run_dir = dir.join("run");
        LabPaths {
            dir: dir.to_owned(),
            db_dir: dir.join("db"),
            log_dir: dir.join("logs"),
            nb_sock: run_dir.join("nb.sock"),
            sb_sock: run_dir.join("sb.sock"),
            ovs_sock: run_dir.join("db.sock"),
            run_dir,
        }
    }

    /// `DIR/logs/<daemon>.log`.
    pub fn log(&self, d: Daemon) -> PathBuf {
        self.log_named(d.name())
    }

    /// `DIR/logs/NAME.log` of a process by its name (a RAFT member is `nb-ovsdb-2`).
    pub fn log_named(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// `DIR/run/<daemon>.ctl`: its unixctl socket (`ovs-appctl -t PATH ...`), except for
    /// `ovn-controller`, which (in OVN 23.03) takes no `--unixctl` option and listens on
    /// `OVN_RUNDIR/ovn-controller.PID.ctl`: see [`LabPaths::controller_ctl`].
    pub fn ctl(&self, d: Daemon) -> PathBuf {
        self.ctl_named(d.name())
    }

    /// `DIR/run/NAME.ctl` of a process by its name.
    pub fn ctl_named(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.ctl"))
    }

    /// `DIR/run/ovn-controller.PID.ctl`: `ovn-controller`'s unixctl socket.
    pub fn controller_ctl(&self, pid: i32) -> PathBuf {
        self.run_dir.join(format!("ovn-controller.{pid}.ctl"))
    }

    /// `--log-file=DIR/logs/<daemon>.log`.
    pub(crate) fn log_flag(&self, d: Daemon) -> String {
        self.log_flag_named(d.name())
    }

    /// `--unixctl=DIR/run/<daemon>.ctl`.
    pub(crate) fn ctl_flag(&self, d: Daemon) -> String {
        self.ctl_flag_named(d.name())
    }

    /// `--log-file=DIR/logs/NAME.log`.
    pub(crate) fn log_flag_named(&self, name: &str) -> String {
        format!("--log-file={}", self.log_named(name).display())
    }

    /// `--unixctl=DIR/run/NAME.ctl`.
    pub(crate) fn ctl_flag_named(&self, name: &str) -> String {
        format!("--unixctl={}", self.ctl_named(name).display())
    }

    /// `DIR/db/NAME`, as a daemon argument.
    pub(crate) fn db_file(&self, name: &str) -> String {
        self.db_dir.join(name).display().to_string()
    }

    /// `DIR/run/<daemon>.pid`.
    pub fn pidfile(&self, d: Daemon) -> PathBuf {
        self.pidfile_named(d.name())
    }

    /// `DIR/run/NAME.pid` of a process by its name.
    pub fn pidfile_named(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.pid"))
    }

    /// `DIR/run/<daemon>.hold`: while this file exists the supervisor does not restart the
    /// daemon after it dies (fault injection: a chassis that stays down).
    pub fn hold_file(&self, d: Daemon) -> PathBuf {
        self.run_dir.join(format!("{}.hold", d.name()))
    }

    /// The environment every daemon and helper gets: OVS/OVN run, db and log directories.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("OVS_RUNDIR", self.run_dir.clone()),
            ("OVS_DBDIR", self.db_dir.clone()),
            ("OVS_LOGDIR", self.log_dir.clone()),
            ("OVN_RUNDIR", self.run_dir.clone()),
            ("OVN_DBDIR", self.db_dir.clone()),
            ("OVN_LOGDIR", self.log_dir.clone()),
        ]
    }
}

/// `unix:PATH`.
pub fn unix_remote(path: &Path) -> String {
    format!("unix:{}", path.display())
}

/// What `ferry_lab::Host::create` needs to plug a host into a lab's integration bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsBridge {
    /// The Open_vSwitch database socket.
    pub db_sock: PathBuf,
    /// The bridge name.
    pub name: String,
    /// The namespace `ovs-vswitchd` runs in, where hosts' bridge-side veth ends go.
    pub netns: Option<String>,
}
