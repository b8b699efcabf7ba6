//! Lab hosts: a network namespace whose `eth0` is one end of a veth pair, the other end
//! plugged into the lab's integration bridge as the OVN logical port `iface_id`.
//!
//! Everything a host creates is recorded in the lab's [`Registry`] *before* it is
//! created, and [`Host::delete`] (or [`ferry_ovn_stack::stop_from_dir`]) removes exactly that. A
//! namespace or link that already exists and is not in the registry is never adopted.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use ferry_ovn_stack::netns::{
    delete_link, delete_netns, delete_ovs_port, in_netns, ip, link_exists, netns_exists, vsctl,
    with_netns,
};
use ferry_ovn_stack::process::{self, ProcessRecord};
use ferry_ovn_stack::registry::{HostRecord, LinkRecord, OvsPortRecord, Registry};
use ferry_ovn_stack::{Error, OvsBridge, Result};

/// Longest Linux interface name.
pub const IFNAMSIZ_MAX: usize = 15;

/// How the bridge side of a host's veth is attached to OVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortType {
    /// The default (`type=""`: AF_PACKET in the userspace datapath, ~1 Gbit/s).
    #[default]
    System,
    /// `type=afxdp options:xdp-mode=native` (a busy-polling PMD thread).
    Afxdp,
    /// `type=afxdp-nonpmd options:xdp-mode=native`.
    AfxdpNonPmd,
}

impl PortType {
    /// The OVS interface type (`""` for a veth read over AF_PACKET).
    pub fn ovs_type(self) -> &'static str {
        match self {
            PortType::System => "",
            PortType::Afxdp => "afxdp",
            PortType::AfxdpNonPmd => "afxdp-nonpmd",
        }
    }

    fn vsctl_args(self, port: &str) -> Vec<String> {
        let ty = match self {
            PortType::System => return Vec::new(),
            PortType::Afxdp => "afxdp",
            PortType::AfxdpNonPmd => "afxdp-nonpmd",
        };
        vec![
            "--".into(),
            "set".into(),
            "Interface".into(),
            port.into(),
            format!("type={ty}"),
            "options:xdp-mode=native".into(),
        ]
    }
}

/// What a host looks like. Build with [`HostSpec::new`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The host's name (registry owner tag `host:NAME`).
    pub name: String,
    /// Its network namespace (default: the name).
    pub netns: String,
    /// `eth0`'s MAC address, as the logical port's `addresses` names it.
    pub mac: String,
    /// `eth0`'s address with prefix length, e.g. `10.251.1.10/24`.
    pub ip_cidr: String,
    /// Default gateway (the logical router port's address), if any.
    pub gateway: Option<Ipv4Addr>,
    /// The logical switch port name (`external_ids:iface-id`; default: the name).
    pub iface_id: String,
    /// The bridge-side interface and OVS port name, at most 15 bytes (default: derived
    /// from the name by [`port_name`]).
    pub port: String,
    /// How the port is attached to OVS.
    pub port_type: PortType,
    /// Transmit checksum offload (and with it TSO) on both veth ends; `None` (the
    /// default): what the bridge's datapath handles, as the agent decides it
    /// ([`ferry_agent::plumb::link_state::tx_checksum_wanted`]).
    pub tx_checksum_offload: Option<bool>,
}

impl HostSpec {
    /// A host named `name`, with netns and iface-id `name` and a derived port name.
    pub fn new(name: &str, mac: &str, ip_cidr: &str, gateway: Option<Ipv4Addr>) -> HostSpec {
        HostSpec {
            name: name.to_owned(),
            netns: name.to_owned(),
            mac: mac.to_owned(),
            ip_cidr: ip_cidr.to_owned(),
            gateway,
            iface_id: name.to_owned(),
            port: port_name(name),
            port_type: PortType::System,
            tx_checksum_offload: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |what: &'static str, value: &str, reason: &str| Error::Invalid {
            what,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !s.starts_with('.')
        };
        if !plain(&self.name) {
            return Err(invalid(
                "host name",
                &self.name,
                "use letters, digits, '-', '_', '.'",
            ));
        }
        if !plain(&self.netns) || self.netns.len() > 64 {
            return Err(invalid(
                "namespace name",
                &self.netns,
                "use up to 64 letters, digits, '-', '_', '.'",
            ));
        }
        if !plain(&self.port) || self.port.len() > IFNAMSIZ_MAX {
            return Err(invalid(
                "port name",
                &self.port,
                "use up to 15 letters, digits, '-', '_', '.'",
            ));
        }
        let mac_ok = self.mac.split(':').count() == 6
            && self
                .mac
                .split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
        if !mac_ok {
            return Err(invalid(
                "MAC address",
                &self.mac,
                "expected six hex bytes like 0a:00:00:01:01:0a",
            ));
        }
        let cidr_ok = self.ip_cidr.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
        });
        if !cidr_ok {
            return Err(invalid(
                "address",
                &self.ip_cidr,
                "expected IPv4/prefix like 10.251.1.10/24",
            ));
        }
        if self.iface_id.is_empty() {
            return Err(invalid("iface-id", &self.iface_id, "must not be empty"));
        }
        Ok(())
    }
}

/// A short interface name for a host: the name itself when it fits in 15 bytes, else its
/// first 10 bytes, `-` and 4 hex digits of a hash of the whole name.
pub fn port_name(host: &str) -> String {
    if host.len() <= IFNAMSIZ_MAX {
        return host.to_owned();
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = host.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let head: String = host.chars().take(10).collect();
    format!("{head}-{:04x}", hash & 0xffff)
}

/// A lab host (see the module doc).
#[derive(Debug, Clone)]
pub struct Host {
    spec: HostSpec,
    bridge: OvsBridge,
    registry: Registry,
}

impl Host {
    /// Creates the namespace, the veth pair (bridge side `spec.port` in the bridge's
    /// namespace, host side `eth0` with MAC, address, default route), brings `lo` and
    /// both ends up, sets transmit checksum offload on both ends (off unless the datapath
    /// handles it: [`HostSpec::tx_checksum_offload`]) and adds the port to the bridge with
    /// `external_ids:iface-id`. On failure, what was created is removed again.
    pub fn create(spec: HostSpec, bridge: &OvsBridge, registry: &Registry) -> Result<Host> {
        spec.validate()?;
        let state = registry.load()?;
        if netns_exists(&spec.netns) && !state.netns.contains(&spec.netns) {
            return Err(Error::AlreadyExists {
                what: "network namespace",
                name: spec.netns.clone(),
            });
        }
        let link = LinkRecord {
            name: spec.port.clone(),
            netns: bridge.netns.clone(),
        };
        if link_exists(&link) && !state.links.contains(&link) {
            return Err(Error::AlreadyExists {
                what: "link",
                name: spec.port.clone(),
            });
        }
        let host = Host {
            spec,
            bridge: bridge.clone(),
            registry: registry.clone(),
        };
        if let Err(e) = host.plumb(&link) {
            if let Err(cleanup) = host.delete() {
                tracing::error!(host = host.spec.name, error = %cleanup, "cleaning up a half-created host");
            }
            return Err(e);
        }
        Ok(host)
    }

    fn plumb(&self, link: &LinkRecord) -> Result<()> {
        let s = &self.spec;
        let ns = s.netns.as_str();
        self.registry.put_host(&HostRecord {
            name: s.name.clone(),
            netns: s.netns.clone(),
            ip_cidr: s.ip_cidr.clone(),
            mac: s.mac.clone(),
            iface_id: s.iface_id.clone(),
            port: s.port.clone(),
        })?;
        self.registry.add_netns(ns)?;
        if !netns_exists(ns) {
            ip(&["netns", "add", ns])?;
        }
        self.registry.add_link(link)?;
        if !link_exists(link) {
            let mut args = vec!["link", "add", s.port.as_str()];
            if let Some(br_ns) = &self.bridge.netns {
                args.extend(["netns", br_ns.as_str()]);
            }
            args.extend(["type", "veth", "peer", "name", "eth0", "netns", ns]);
            ip(&args)?;
        }
        ip(&["-n", ns, "link", "set", "eth0", "address", &s.mac])?;
        ip(&["-n", ns, "addr", "replace", &s.ip_cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        if let Some(gw) = s.gateway {
            ip(&[
                "-n",
                ns,
                "route",
                "replace",
                "default",
                "via",
                &gw.to_string(),
            ])?;
        }
        let br_ns = self.bridge.netns.as_deref();
        ip(&with_netns(br_ns, &["link", "set", &s.port, "up"]))?;
        let tx = match s.tx_checksum_offload {
            Some(on) => on,
            None => self.tx_checksum_wanted()?,
        };
        let tx = if tx { "on" } else { "off" };
        process::run_ok(&mut in_netns(br_ns, &["ethtool", "-K", &s.port, "tx", tx]))?;
        process::run_ok(&mut in_netns(
            Some(ns),
            &["ethtool", "-K", "eth0", "tx", tx],
        ))?;

        let port = self.port_record();
        self.registry.add_ovs_port(&port)?;
        let mut args: Vec<String> = vec![
            "--".into(),
            "--may-exist".into(),
            "add-port".into(),
            self.bridge.name.clone(),
            s.port.clone(),
            "--".into(),
            "set".into(),
            "Interface".into(),
            s.port.clone(),
            format!("external_ids:iface-id={}", s.iface_id),
        ];
        args.extend(s.port_type.vsctl_args(&s.port));
        vsctl(&self.bridge.db_sock, &args)?;
        let err = vsctl(
            &self.bridge.db_sock,
            &["get", "Interface", &s.port, "error"],
        )?;
        let err = err.trim();
        if !err.is_empty() && err != "[]" {
            return Err(Error::Command {
                command: format!("ovs-vsctl add-port {} {}", self.bridge.name, s.port),
                status: "interface error".into(),
                stderr: err.to_owned(),
            });
        }
        Ok(())
    }

    /// What the agent would choose on this bridge (see [`HostSpec::tx_checksum_offload`]).
    fn tx_checksum_wanted(&self) -> Result<bool> {
        let out = vsctl(
            &self.bridge.db_sock,
            &[
                "get",
                "Bridge",
                &self.bridge.name,
                "datapath_type",
                "--",
                "get",
                "Open_vSwitch",
                ".",
                "other_config",
            ],
        )?;
        let mut lines = out.lines();
        Ok(ferry_agent::plumb::link_state::tx_checksum_wanted(
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_default(),
            self.spec.port_type.ovs_type(),
        ))
    }

    fn port_record(&self) -> OvsPortRecord {
        OvsPortRecord {
            db_sock: self.bridge.db_sock.clone(),
            bridge: self.bridge.name.clone(),
            port: self.spec.port.clone(),
        }
    }

    /// The spec it was created from.
    pub fn spec(&self) -> &HostSpec {
        &self.spec
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its namespace.
    pub fn netns(&self) -> &str {
        &self.spec.netns
    }

    /// Its IPv4 address (without prefix).
    pub fn ip(&self) -> &str {
        self.spec
            .ip_cidr
            .split('/')
            .next()
            .unwrap_or(&self.spec.ip_cidr)
    }

    /// A command that runs `argv` inside the namespace (`ip netns exec NS ARGV...`); set
    /// its working directory, environment and stdio as needed.
    pub fn command(&self, argv: &[&str]) -> Command {
        in_netns(Some(&self.spec.netns), argv)
    }

    /// Runs `argv` in the namespace to completion; returns its output whatever the exit
    /// status (an error only if it cannot be started).
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        process::run(&mut self.command(argv))
    }

    /// Runs `argv` in the namespace; its stdout, or an error with its stderr if it fails.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        process::run_ok(&mut self.command(argv))
    }

    /// Starts a long-running `argv` (a server) in the namespace, in its own process group,
    /// stdout and stderr appended to `DIR/logs/host-NAME-PROGRAM.log`, and records its PID
    /// so that [`Host::delete`] and [`ferry_ovn_stack::stop_from_dir`] stop it.
    pub fn spawn(&self, argv: &[&str], cwd: Option<&Path>) -> Result<HostProcess> {
        let Some(program) = argv.first() else {
            return Err(Error::Invalid {
                what: "command",
                value: String::new(),
                reason: "empty argv".into(),
            });
        };
        let base = program.rsplit('/').next().unwrap_or(program);
        let log_dir = self.registry.dir().join("logs");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io("create directory", &log_dir, e))?;
        let log = log_dir.join(format!("host-{}-{base}.log", self.spec.name));
        let mut cmd = self.command(argv);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = process::spawn_logged(&mut cmd, &log)?;
        let pid = child.id() as i32;
        let rec = ProcessRecord {
            name: format!("host:{}:{base}:{pid}", self.spec.name),
            owner: self.owner(),
            pid,
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            start_time: process::start_time(pid),
        };
        self.registry.put_process(&rec)?;
        Ok(HostProcess {
            child,
            rec,
            registry: self.registry.clone(),
            log,
        })
    }

    fn owner(&self) -> String {
        format!("host:{}", self.spec.name)
    }

    /// Stops the host's recorded processes, removes its OVS port, its veth pair and its
    /// namespace, and their records. Idempotent; anything already gone counts as removed.
    pub fn delete(&self) -> Result<()> {
        let owner = self.owner();
        let state = self.registry.load()?;
        for rec in state.processes.iter().filter(|p| p.owner == owner).rev() {
            process::stop_recorded(rec, Duration::from_secs(5))?;
            self.registry.remove_process(&rec.name, rec.pid)?;
        }
        delete_ovs_port(&self.port_record())?;
        self.registry.remove_ovs_port(&self.port_record())?;
        let link = LinkRecord {
            name: self.spec.port.clone(),
            netns: self.bridge.netns.clone(),
        };
        delete_link(&link)?;
        self.registry.remove_link(&link)?;
        delete_netns(&self.spec.netns)?;
        self.registry.remove_netns(&self.spec.netns)?;
        self.registry.remove_host(&self.spec.name)?;
        Ok(())
    }
}

/// A server started by [`Host::spawn`]. Dropping it leaves the server running (it stays
/// recorded); [`HostProcess::stop`] ends it.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    rec: ProcessRecord,
    registry: Registry,
    log: PathBuf,
}

impl HostProcess {
    /// Its PID.
    pub fn pid(&self) -> i32 {
        self.rec.pid
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (SIGKILL after 5 s), reap, forget its record.
    pub fn stop(mut self) -> Result<()> {
        let child = &mut self.child;
        process::terminate(&self.rec.name, self.rec.pid, Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)) | Err(_))
        })?;
        self.registry.remove_process(&self.rec.name, self.rec.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_ifnamsiz_and_are_stable() {
        assert_eq!(port_name("web1"), "web1");
        assert_eq!(port_name("exactly15chars_"), "exactly15chars_");
        let long = port_name("client-vpc1-subnet3-pod");
        assert!(long.len() <= IFNAMSIZ_MAX, "{long}");
        assert!(long.starts_with("client-vpc"));
        assert_eq!(long, port_name("client-vpc1-subnet3-pod"));
        assert_ne!(long, port_name("client-vpc1-subnet3-vm"));
    }

    #[test]
    fn specs_are_validated_before_anything_is_created() {
        let ok = HostSpec::new("h1", "0a:00:00:01:01:0a", "10.251.1.10/24", None);
        assert!(ok.validate().is_ok());
        let cases: Vec<(&str, HostSpec)> = vec![
            (
                "bad mac",
                HostSpec {
                    mac: "0a:00:00:01:01".into(),
                    ..ok.clone()
                },
            ),
            (
                "bad cidr",
                HostSpec {
                    ip_cidr: "10.251.1.10".into(),
                    ..ok.clone()
                },
            ),
            (
                "prefix > 32",
                HostSpec {
                    ip_cidr: "10.251.1.10/33".into(),
                    ..ok.clone()
                },
            ),
            (
                "port too long",
                HostSpec {
                    port: "a-very-long-port-name".into(),
                    ..ok.clone()
                },
            ),
            (
                "slash in netns",
                HostSpec {
                    netns: "a/b".into(),
                    ..ok.clone()
                },
            ),
            (
                "empty iface-id",
                HostSpec {
                    iface_id: String::new(),
                    ..ok.clone()
                },
            ),
        ];
        for (name, spec) in cases {
            assert!(
                matches!(spec.validate(), Err(Error::Invalid { .. })),
                "{name}: {spec:?}"
            );
        }
    }
}
