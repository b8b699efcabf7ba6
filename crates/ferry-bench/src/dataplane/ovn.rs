//! The OVN paths, on one OVN/OVS stack ([`ferry_ovn_stack::OvnStack`], userspace `netdev`
//! datapath) programmed by Ferry's own programmer (`ferry-net` computes the Northbound
//! rows, `ferry-ovsdb` writes them in bounded transactions, as `ferry up`'s network
//! controller does):
//!
//! - `ovn-direct`: VPC `fbd`, a distributed router and two switches, client to backend IP.
//!   The VPC has no services, so its switches carry no load balancer.
//! - `ferry-ovn`: VPC `fbv`, the same shape, plus the catalogue's `N` services as one
//!   `Load_Balancer` each in the VPC's `Load_Balancer_Group`, attached to both switches;
//!   the client connects to the measured service's cluster IP.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_lab::{Host, HostSpec, PortType};
use ferry_net::{
    Backend as NetBackend, NetworkState, PortState, Protocol, ServicePort, ServiceScope,
    ServiceState, SubnetState,
};
use ferry_ovn_stack::{Daemon, OvnOptions, OvnStack};
use ferry_ovsdb::{Client, nb};

use super::OvsTuning;
use super::kernel::tune_endpoint;
use super::services::Catalogue;
use super::tools::{Backend, run_ok};
use crate::error::{Error, Result};

/// The VPC of `ovn-direct`.
pub const VPC_DIRECT: &str = "fbd";
/// The VPC of `ferry-ovn`.
pub const VPC_VIP: &str = "fbv";
/// Load balancers per NB transaction (what `ferry up` uses).
pub const MAX_LB_PER_TXN: usize = 500;

/// One logical port of the bench: the host it becomes and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPlan {
    pub lsp: &'static str,
    pub subnet: &'static str,
    pub mac: &'static str,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// Suffix of the namespace name.
    pub role: &'static str,
}

/// The ports: ovn-direct client and backend, ferry-ovn client and backend, the
/// ferry-sock client and the ferry-sock-stateless client (both in ferry-ovn's VPC and
/// subnet).
pub const PORTS: [PortPlan; 6] = [
    PortPlan {
        lsp: "fbd-client",
        subnet: "fbd-c",
        mac: "0a:00:00:fb:01:0a",
        ip: Ipv4Addr::new(10, 252, 1, 10),
        gateway: Ipv4Addr::new(10, 252, 1, 1),
        role: "oc",
    },
    PortPlan {
        lsp: "fbd-backend",
        subnet: "fbd-b",
        mac: "0a:00:00:fb:02:0a",
        ip: Ipv4Addr::new(10, 252, 2, 10),
        gateway: Ipv4Addr::new(10, 252, 2, 1),
        role: "ob",
    },
    PortPlan {
        lsp: "fbv-client",
        subnet: "fbv-c",
        mac: "0a:00:00:fb:03:0a",
        ip: Ipv4Addr::new(10, 253, 1, 10),
        gateway: Ipv4Addr::new(10, 253, 1, 1),
        role: "vc",
    },
    PortPlan {
        lsp: "fbv-backend",
        subnet: "fbv-b",
        mac: "0a:00:00:fb:04:0a",
        ip: Ipv4Addr::new(10, 253, 2, 10),
        gateway: Ipv4Addr::new(10, 253, 2, 1),
        role: "vb",
    },
    PortPlan {
        lsp: "fbv-sock-client",
        subnet: "fbv-c",
        mac: "0a:00:00:fb:05:0a",
        ip: Ipv4Addr::new(10, 253, 1, 11),
        gateway: Ipv4Addr::new(10, 253, 1, 1),
        role: "sc",
    },
    PortPlan {
        lsp: "fbv-sock-stateless",
        subnet: "fbv-c",
        mac: "0a:00:00:fb:06:0a",
        ip: Ipv4Addr::new(10, 253, 1, 12),
        gateway: Ipv4Addr::new(10, 253, 1, 1),
        role: "ss",
    },
];

/// The ferry-sock-stateless client's namespace suffix.
pub const SOCK_STATELESS_ROLE: &str = PORTS[5].role;

/// The ports the network model puts in `fbv`'s socket-LB port group
/// (`ferry_net::socket_lb_group`, what the controller does for pods on socket-LB nodes):
/// both socket-LB clients and the `fbv` backend. Traffic between members skips conntrack
/// (two `allow-stateless` ACLs, `ferry_net`'s `socket_lb` module); ferry-ovn's client is no
/// member, so its VIP connections keep conntrack as before.
pub fn socket_lb_ports() -> std::collections::BTreeSet<String> {
    [PORTS[4].lsp, PORTS[5].lsp, PORTS[3].lsp]
        .into_iter()
        .map(String::from)
        .collect()
}

/// `state` with the socket-LB clients and the backend in `fbv`'s socket-LB port group.
pub fn with_socket_lb_group(mut state: NetworkState) -> NetworkState {
    state.socket_lb_ports = socket_lb_ports();
    state
}

/// The ferry-sock client's namespace suffix.
pub const SOCK_CLIENT_ROLE: &str = PORTS[4].role;

/// The ferry-ovn backend (the catalogue's measured endpoint).
pub const VIP_BACKEND: Ipv4Addr = PORTS[3].ip;
/// A /24 in the ferry-ovn backend subnet whose `.100-.199` filler endpoints use.
pub const VIP_FILLER_POOL: Ipv4Addr = Ipv4Addr::new(10, 253, 2, 0);

/// The network state Ferry's programmer gets: both VPCs with their subnets and ports,
/// and, with a catalogue, its services in `fbv` (pure).
pub fn network_state(chassis: &str, catalogue: Option<&Catalogue>) -> NetworkState {
    let subnet = |name: &str, vpc: &str, third: u8, b: u8| SubnetState {
        name: name.into(),
        vpc: vpc.into(),
        cidr: ipnet::Ipv4Net::new(Ipv4Addr::new(10, b, third, 0), 24).unwrap_or_default(),
        gateway: Ipv4Addr::new(10, b, third, 1),
    };
    NetworkState {
        gateway_chassis: chassis.into(),
        vpcs: vec![VPC_DIRECT.into(), VPC_VIP.into()],
        subnets: vec![
            subnet("fbd-c", VPC_DIRECT, 1, 252),
            subnet("fbd-b", VPC_DIRECT, 2, 252),
            subnet("fbv-c", VPC_VIP, 1, 253),
            subnet("fbv-b", VPC_VIP, 2, 253),
        ],
        ports: PORTS
            .iter()
            .map(|p| PortState {
                name: p.lsp.into(),
                subnet: p.subnet.into(),
                mac: p.mac.into(),
                ip: p.ip,
            })
            .collect(),
        services: catalogue
            .map(|c| {
                c.services
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ServiceState {
                        external_ips: vec![],
                        kind: Default::default(),
                        node_local: false,
                        key: s.key.clone(),
                        uid: format!("bench-uid-{i}"),
                        scope: ServiceScope::Vpc(VPC_VIP.into()),
                        cluster_ip: Some(s.cluster_ip),
                        eip: None,
                        ports: s
                            .ports
                            .iter()
                            .map(|p| ServicePort {
                                node_port: None,
                                port: p.port,
                                target_port: p.target_port,
                                protocol: Protocol::Tcp,
                            })
                            .collect(),
                        affinity_timeout: None,
                        backends: s
                            .endpoints
                            .iter()
                            .map(|ip| NetBackend {
                                node: None,
                                ip: *ip,
                                vpc: VPC_VIP.into(),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

// === impl OvnPaths ===

/// Where one OVN path's client sends traffic.
#[derive(Debug, Clone)]
pub struct OvnEndpoint {
    pub client_ns: String,
    pub target: Ipv4Addr,
}

/// Both OVN paths, up and serving. [`OvnPaths::shutdown`] (or drop) stops the servers,
/// deletes the hosts and stops the stack.
#[derive(Debug)]
pub struct OvnPaths {
    stack: Option<OvnStack>,
    hosts: Vec<Host>,
    backends: Vec<Backend>,
    pub direct: OvnEndpoint,
    pub vip: OvnEndpoint,
    /// Seconds from the first NB transaction of the `N` services until every chassis
    /// reported the result in its flows (`ovn-nbctl --wait=hv sync`).
    pub program_s: f64,
    pub detail: String,
    pub port_type: PortType,
    /// Transmit checksum offload on the hosts' veths (`None`: as the agent decides).
    pub tx_checksum_offload: Option<bool>,
    dir: PathBuf,
}

impl OvnPaths {
    /// Starts the stack under `dir`, programs both VPCs, plugs the hosts (`PREFIX-oc`,
    /// `-ob`, `-vc`, `-vb`; `ovs-vswitchd` in `PREFIX-ovs`) with `port_type`, starts the
    /// backends' servers, then programs the catalogue's services (timed).
    pub fn create(
        prefix: &str,
        port_type: PortType,
        tuning: &OvsTuning,
        catalogue: &Catalogue,
        dir: &Path,
        rt: &tokio::runtime::Runtime,
    ) -> Result<OvnPaths> {
        let system_id = prefix.trim_end_matches('-').to_owned();
        let lab_dir = dir.join("ovn");
        let mut options = OvnOptions::new(system_id.clone());
        options.ovs_other_config = tuning.other_config();
        let stack = OvnStack::start(&lab_dir, options)?;
        let mut paths = OvnPaths {
            stack: Some(stack),
            hosts: Vec::new(),
            backends: Vec::new(),
            direct: OvnEndpoint {
                client_ns: format!("{prefix}{}", PORTS[0].role),
                target: PORTS[1].ip,
            },
            vip: OvnEndpoint {
                client_ns: format!("{prefix}{}", PORTS[2].role),
                target: catalogue.measured().cluster_ip,
            },
            program_s: 0.0,
            detail: String::new(),
            port_type,
            tx_checksum_offload: tuning.tx_checksum_offload,
            dir: lab_dir,
        };
        paths.bring_up(prefix, &system_id, catalogue, rt)?;
        Ok(paths)
    }

    fn stack(&self) -> Result<&OvnStack> {
        self.stack.as_ref().ok_or(Error::Invalid {
            option: "OVN stack",
            reason: "already stopped".into(),
        })
    }

    fn bring_up(
        &mut self,
        prefix: &str,
        system_id: &str,
        catalogue: &Catalogue,
        rt: &tokio::runtime::Runtime,
    ) -> Result<()> {
        let nb_remote = self.stack()?.nb_remote();
        let client = rt.block_on(Client::connect(nb::config([nb_remote])))?;
        rt.block_on(apply(&client, &network_state(system_id, None)))?;
        self.wait_hv()?;

        for p in &PORTS {
            let mut spec = HostSpec::new(
                &format!("{prefix}{}", p.role),
                p.mac,
                &format!("{}/24", p.ip),
                Some(p.gateway),
            );
            spec.iface_id = p.lsp.into();
            spec.port_type = self.port_type;
            spec.tx_checksum_offload = self.tx_checksum_offload;
            let stack = self.stack()?;
            let host = Host::create(spec, &stack.bridge(), stack.registry())?;
            self.hosts.push(host);
            tune_endpoint(&format!("{prefix}{}", p.role))?;
        }
        for role in [PORTS[1].role, PORTS[3].role] {
            let ns = format!("{prefix}{role}");
            self.backends
                .push(Backend::start(&ns, &self.dir.join(format!("srv-{role}")))?);
        }

        let t0 = Instant::now();
        let (txns, lbs) = rt.block_on(apply(
            &client,
            &with_socket_lb_group(network_state(system_id, Some(catalogue))),
        ))?;
        self.wait_hv()?;
        let program_s = t0.elapsed().as_secs_f64();
        self.program_s = program_s;
        client.shutdown();
        let flows = self.flow_count().map_or("?".into(), |n| n.to_string());
        self.detail = format!(
            "ferry-net + ferry-ovsdb: {lbs} load balancers in {txns} transactions, \
             one group on both switches; {flows} OpenFlow flows after"
        );
        Ok(())
    }

    fn env(&self) -> Result<Vec<(&'static str, PathBuf)>> {
        Ok(self.stack()?.paths().env())
    }

    /// `ovn-nbctl --wait=hv sync`: returns once every chassis has processed the NB as
    /// it is now (its flows are installed).
    pub fn wait_hv(&self) -> Result<()> {
        let nb = self.stack()?.nb_remote();
        run_ok(
            Command::new("ovn-nbctl")
                .arg(format!("--db={nb}"))
                .args(["--timeout=900", "--wait=hv", "sync"])
                .envs(self.env()?),
        )?;
        Ok(())
    }

    /// OpenFlow flows on the integration bridge.
    pub fn flow_count(&self) -> Option<u64> {
        let out = run_ok(
            Command::new("ovs-ofctl")
                .args(["dump-aggregate", "br-int"])
                .envs(self.env().ok()?),
        )
        .ok()?;
        out.split_whitespace()
            .find_map(|w| w.strip_prefix("flow_count="))
            .and_then(|n| n.parse().ok())
    }

    /// `ovs-vswitchd`'s control socket (`ovs-appctl -t PATH`).
    pub fn vswitchd_ctl(&self) -> Option<PathBuf> {
        Some(self.stack.as_ref()?.paths().ctl(Daemon::Vswitchd))
    }

    /// PID of `ovs-vswitchd` (for its CPU time).
    pub fn vswitchd_pid(&self) -> Option<i32> {
        self.stack.as_ref()?.pid(Daemon::Vswitchd)
    }

    /// Stops servers, deletes hosts, stops the stack; names what could not be removed.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for b in &mut self.backends {
            if let Err(e) = b.stop() {
                left.push(format!("OVN backend server: {e}"));
            }
        }
        self.backends.clear();
        for h in self.hosts.drain(..).rev() {
            if let Err(e) = h.delete() {
                left.push(format!("OVN host {}: {e}", h.name()));
            }
        }
        if let Some(stack) = self.stack.take()
            && let Err(e) = stack.stop()
        {
            left.push(format!("OVN stack: {e}"));
        }
        left
    }
}

impl Drop for OvnPaths {
    fn drop(&mut self) {
        for e in self.shutdown() {
            tracing::error!(error = e, "cleanup");
        }
    }
}

/// Converges the NB to `state` with the network controller's own applier
/// ([`ferry_nb::Applier`]); returns the number of transactions and of load balancers
/// written.
async fn apply(client: &Client, state: &NetworkState) -> Result<(usize, usize)> {
    let desired = ferry_net::build_desired(state);
    if let Some(e) = desired.errors.first() {
        return Err(Error::Invalid {
            option: "OVN network state",
            reason: e.to_string(),
        });
    }
    let lbs = desired
        .rows
        .iter()
        .filter(|r| r.table == nb::load_balancer::TABLE)
        .count();
    let applier = ferry_nb::Applier::new(client.clone(), MAX_LB_PER_TXN);
    let applied = applier.ensure(std::sync::Arc::new(desired)).await?;
    Ok((applied.transactions(), lbs))
}

/// How long to wait for a path to answer after programming.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {

    use super::*;
    use crate::dataplane::services::catalogue;

    fn rows<'a>(d: &'a ferry_net::Desired, table: &str) -> Vec<&'a ferry_net::Row> {
        d.rows.iter().filter(|r| r.table == table).collect()
    }

    #[test]
    fn both_vpcs_are_built_without_errors_and_only_fbv_gets_load_balancers() {
        let c = catalogue(10, VIP_BACKEND, VIP_FILLER_POOL, 2);
        let d = ferry_net::build_desired(&network_state("fb-1", Some(&c)));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(rows(&d, "Logical_Router").len(), 2);
        assert_eq!(rows(&d, "Logical_Switch").len(), 4);
        assert_eq!(rows(&d, "Load_Balancer").len(), 10);
        let groups = rows(&d, "Load_Balancer_Group");
        let fbv = groups
            .iter()
            .find(|g| g.columns["name"] == "ferry-fbv")
            .unwrap();
        assert_eq!(
            fbv.columns["load_balancer"][1].as_array().unwrap().len(),
            10
        );
        let fbd = groups
            .iter()
            .find(|g| g.columns["name"] == "ferry-fbd")
            .unwrap();
        assert_eq!(fbd.columns["load_balancer"][1].as_array().unwrap().len(), 0);
        // Every workload port is there with the address the host gets.
        for p in &PORTS {
            let lsp = rows(&d, "Logical_Switch_Port")
                .into_iter()
                .find(|r| r.columns["name"] == p.lsp)
                .unwrap();
            assert_eq!(
                lsp.columns["addresses"],
                serde_json::json!(["set", [format!("{} {}", p.mac, p.ip)]])
            );
        }
    }

    #[test]
    fn the_measured_service_is_one_load_balancer_with_three_vips_to_the_backend() {
        let c = catalogue(5, VIP_BACKEND, VIP_FILLER_POOL, 2);
        let d = ferry_net::build_desired(&network_state("fb-1", Some(&c)));
        let m = c.measured();
        let name = format!("ferry-{}-cip-fbv-tcp", m.key.replace('/', "-"));
        let lb = rows(&d, "Load_Balancer")
            .into_iter()
            .find(|r| r.columns["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name}"));
        let vips: Vec<(String, String)> = lb.columns["vips"][1]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap().into(),
                    kv[1].as_str().unwrap().into(),
                )
            })
            .collect();
        let ip = m.cluster_ip;
        // The NB map is written sorted by VIP string.
        assert_eq!(
            vips,
            vec![
                (format!("{ip}:11111"), "10.253.2.10:11111".into()),
                (format!("{ip}:5201"), "10.253.2.10:5201".into()),
                (format!("{ip}:80"), "10.253.2.10:80".into()),
            ]
        );
    }

    #[test]
    fn the_socket_lb_clients_and_the_backend_are_fbvs_stateless_group() {
        let c = catalogue(3, VIP_BACKEND, VIP_FILLER_POOL, 2);
        let d = ferry_net::build_desired(&with_socket_lb_group(network_state("fb-1", Some(&c))));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let g = d
            .rows
            .iter()
            .find(|r| r.table == "Port_Group")
            .expect("a socket-LB port group");
        assert_eq!(g.columns["name"], ferry_net::socket_lb_group(VPC_VIP));
        let members: Vec<&str> = g.columns["ports"][1]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[2].as_str().unwrap())
            .collect();
        assert_eq!(
            members,
            [
                "Logical_Switch_Port:fbv-backend",
                "Logical_Switch_Port:fbv-sock-client",
                "Logical_Switch_Port:fbv-sock-stateless"
            ]
        );
        assert_eq!(
            d.rows.iter().filter(|r| r.table == "ACL").count(),
            2,
            "both directions"
        );
    }

    #[test]
    fn a_fresh_nb_gets_the_load_balancers_in_bounded_transactions_first() {
        let c = catalogue(1200, VIP_BACKEND, VIP_FILLER_POOL, 2);
        let d = ferry_net::build_desired(&network_state("fb-1", Some(&c)));
        let ops = ferry_net::plan(&d, &[], MAX_LB_PER_TXN);
        assert_eq!(ops.len(), MAX_LB_PER_TXN);
        assert!(
            ops.iter()
                .all(|op| op["table"] == "Load_Balancer" && op["op"] == "insert")
        );
    }
}
