//! The network controller: the cluster's network state read from the caches, turned into
//! the desired Northbound rows by `ferry-net`, written through `ferry-ovsdb` in bounded
//! transactions until the NB matches. The first pass after start is a full repair: stale
//! rows Ferry owns are removed, rows it does not own are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ferry_api::{BareMetal, Protocol as ApiProtocol, Scope, SessionAffinity, VNicIP};
use ferry_net::{
    CurrentRow, ExternalNetwork, NetworkState, PortKind, PortState, ServicePort, ServiceScope,
    ServiceState, SubnetState,
};
use ferry_ovsdb::{Client, nb};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::reconcile::ServiceOutcome;
use crate::world::{self, Caches};

/// The external network as configured on the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalConfig {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// Where and how to program OVN.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// NB remotes (`unix:/path` or `tcp:host:port`), several for a RAFT cluster.
    pub remotes: Vec<String>,
    /// The chassis that hosts the gateway routers and gateway ports.
    pub gateway_chassis: String,
    pub external: Option<ExternalConfig>,
    /// Load balancers written per transaction at most.
    pub max_lb_per_txn: usize,
}

/// Errors reaching the NB.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("connecting to the OVN Northbound database {remotes:?}: {source}")]
    Connect {
        remotes: Vec<String>,
        source: ferry_ovsdb::Error,
    },
    #[error("NB transaction failed: {0}")]
    Transact(ferry_ovsdb::Error),
    #[error("planning the NB rows failed: {0}")]
    Plan(String),
}

/// Workload ports written per fast-path transaction at most.
const PORTS_PER_TXN: usize = 1000;

/// A connected network controller.
pub struct Network {
    client: Client,
    config: NetworkConfig,
}

fn protocol(p: ApiProtocol) -> ferry_net::Protocol {
    match p {
        ApiProtocol::TCP => ferry_net::Protocol::Tcp,
        ApiProtocol::UDP => ferry_net::Protocol::Udp,
        ApiProtocol::SCTP => ferry_net::Protocol::Sctp,
    }
}

fn ip(s: Option<&String>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// The NB port of a pod, once the controller has written its address.
pub fn pod_port(pod: &Pod) -> Option<PortState> {
    annotated_port(PortKind::Pod, &pod.metadata)
}

/// The NB port of a VMI, once the controller has written its address.
pub fn vmi_port(vmi: &ferry_api::VirtualMachineInstance) -> Option<PortState> {
    annotated_port(PortKind::Vmi, &vmi.metadata)
}

fn annotated_port(kind: PortKind, meta: &ObjectMeta) -> Option<PortState> {
    let a = meta.annotations.as_ref()?;
    Some(PortState {
        name: ferry_net::port_name(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        ),
        subnet: a.get(ferry_api::ANNOTATION_SUBNET)?.clone(),
        mac: a.get(ferry_api::ANNOTATION_MAC)?.clone(),
        ip: ip(a.get(ferry_api::ANNOTATION_IP))?,
    })
}

/// The NB port of a BareMetal host, once it has an address.
pub fn baremetal_port(bm: &BareMetal) -> Option<PortState> {
    let st = bm.status.clone().unwrap_or_default();
    Some(PortState {
        name: ferry_net::port_name(
            PortKind::BareMetal,
            &bm.namespace().unwrap_or_default(),
            &bm.name_any(),
        ),
        subnet: bm.spec.subnet.clone(),
        mac: st.mac_address?,
        ip: ip(st.ip_address.as_ref())?,
    })
}

/// The NB port of a VNicIP: on the external network it names its own address, elsewhere
/// it has the one the controller allocated.
pub fn vnicip_port(v: &VNicIP) -> Option<PortState> {
    let (addr, mac) = if v.spec.subnet == ferry_net::EXTERNAL_SWITCH {
        (ip(v.spec.ip_address.as_ref()), v.spec.mac_address.clone())
    } else {
        let st = v.status.clone().unwrap_or_default();
        (ip(st.ip_address.as_ref()), st.mac_address)
    };
    Some(PortState {
        name: ferry_net::port_name(
            PortKind::VNicIP,
            &v.namespace().unwrap_or_default(),
            &v.name_any(),
        ),
        subnet: v.spec.subnet.clone(),
        mac: mac?,
        ip: addr?,
    })
}

/// What the NB holds for one service, or `None` when it cannot be programmed (a service
/// with no backend still gets load balancers, which reject).
pub fn service_state(o: &ServiceOutcome) -> Option<ServiceState> {
    if o.problem
        .as_ref()
        .is_some_and(|(reason, _)| reason != "NoBackends")
    {
        return None;
    }
    let s = &o.service;
    Some(ServiceState {
        key: o.key.clone(),
        uid: s.uid().unwrap_or_default(),
        scope: match s.spec.scope {
            Scope::Vpc => ServiceScope::Vpc(crate::service::service_vpcs(s)[0].clone()),
            Scope::MultiVpc => ServiceScope::MultiVpc(crate::service::service_vpcs(s)),
        },
        cluster_ip: o.cluster_ip,
        eip: o.eip,
        ports: s
            .spec
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port as u16,
                target_port: p.target_port.unwrap_or(p.port) as u16,
                protocol: protocol(p.protocol),
            })
            .collect(),
        affinity_timeout: (s.spec.session_affinity == Some(SessionAffinity::ClientIP))
            .then(|| s.spec.session_affinity_timeout_seconds.unwrap_or(10800) as u32),
        backends: o
            .ready
            .iter()
            .map(|b| ferry_net::Backend {
                ip: b.ip,
                vpc: b.vpc.clone(),
            })
            .collect(),
    })
}

/// The network state the caches and the services' NB states describe (pure).
pub fn network_state(
    c: &Caches,
    services: Vec<ServiceState>,
    config: &NetworkConfig,
    eip_pool: Option<(Ipv4Addr, Ipv4Addr)>,
) -> NetworkState {
    let mut vpcs: Vec<String> = c.vpcs.state().iter().map(|v| v.name_any()).collect();
    if !vpcs.iter().any(|v| v == ferry_api::DEFAULT_VPC) {
        vpcs.push(ferry_api::DEFAULT_VPC.into());
    }
    vpcs.sort();
    let subnet_infos = world::subnets(c);
    let subnets = subnet_infos
        .values()
        .filter_map(|s| {
            let cidr: Ipv4Net = s.cidr.parse().ok()?;
            Some(SubnetState {
                name: s.name.clone(),
                vpc: s.vpc.clone(),
                cidr,
                gateway: s
                    .gateway
                    .unwrap_or_else(|| crate::ipam::default_gateway(&cidr)),
            })
        })
        .collect();
    let mut ports: Vec<PortState> = c.pods.state().iter().filter_map(|p| pod_port(p)).collect();
    ports.extend(
        c.vmis
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|v| vmi_port(&v)),
    );
    ports.extend(
        c.baremetals
            .state()
            .iter()
            .filter_map(|b| baremetal_port(b)),
    );
    ports.extend(c.vnicips.state().iter().filter_map(|v| vnicip_port(v)));
    if subnet_infos.contains_key("subnet0") {
        for n in c.nodes.state() {
            let a = n.annotations();
            if let (Some(ipv4), Some(mac)) = (
                ip(a.get(ferry_api::ANNOTATION_IP)),
                a.get(ferry_api::ANNOTATION_MAC),
            ) {
                ports.push(PortState {
                    name: ferry_net::port_name(PortKind::Node, "", &n.name_any()),
                    subnet: "subnet0".into(),
                    mac: mac.clone(),
                    ip: ipv4,
                });
            }
        }
    }
    for n in c.nodes.state() {
        for (vpc, p) in crate::reconcile::probe_ports(&n) {
            if let (Ok(ipv4), true) = (p.ip.parse(), subnet_infos.contains_key(&p.subnet)) {
                ports.push(PortState {
                    name: ferry_net::port_name(PortKind::Probe, &vpc, &n.name_any()),
                    subnet: p.subnet.clone(),
                    mac: p.mac.clone(),
                    ip: ipv4,
                });
            }
        }
    }
    let external = match (&config.external, eip_pool) {
        (Some(e), Some(pool)) => Some(ExternalNetwork {
            cidr: e.cidr,
            gateway: e.gateway,
            pool,
        }),
        (Some(e), None) => Some(ExternalNetwork {
            cidr: e.cidr,
            gateway: e.gateway,
            pool: (Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED),
        }),
        _ => None,
    };
    NetworkState {
        gateway_chassis: config.gateway_chassis.clone(),
        transit_cidr: None,
        vpcs,
        subnets,
        ports,
        external,
        services,
    }
}

impl Network {
    pub async fn connect(config: NetworkConfig) -> Result<Network, NetworkError> {
        // A large NB (hundreds of thousands of rows) keeps ovsdb-server busy for seconds
        // at a time: allow it before calling the connection dead or a transaction lost.
        let mut c = nb::config(config.remotes.clone());
        c.echo_interval = std::time::Duration::from_secs(15);
        c.request_timeout = std::time::Duration::from_secs(120);
        let client = Client::connect(c)
            .await
            .map_err(|source| NetworkError::Connect {
                remotes: config.remotes.clone(),
                source,
            })?;
        Ok(Network { client, config })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Every row of the tables Ferry writes, as the mirror holds them.
    fn current(client: &Client) -> Vec<CurrentRow> {
        client.with_mirror(|m| {
            let mut rows = Vec::new();
            for t in nb::TABLES {
                for (uuid, cols) in m.table(t.name).into_iter().flatten() {
                    rows.push(CurrentRow {
                        table: t.name.to_string(),
                        uuid: uuid.clone(),
                        columns: cols.clone(),
                    });
                }
            }
            rows
        })
    }

    /// The fast path: converges only the load balancers of `changed` (new states) and of
    /// `owners` (every touched service, removed ones included) with one mutate of each
    /// group they are in. `Ok(false)` when it does not apply (an EIP, a group not yet in
    /// the NB, ...): the caller then converges everything with [`Network::apply`].
    pub async fn apply_services(
        &mut self,
        changed: &[ServiceState],
        owners: &BTreeSet<String>,
    ) -> Result<bool, NetworkError> {
        let current: Vec<CurrentRow> = self.client.with_mirror(|m| {
            let mut rows = Vec::new();
            for t in ["Load_Balancer", "Load_Balancer_Group"] {
                for (uuid, cols) in m.table(t).into_iter().flatten() {
                    if ferry_net::delta_input(t, cols, owners) {
                        rows.push(CurrentRow {
                            table: t.to_string(),
                            uuid: uuid.clone(),
                            columns: cols.clone(),
                        });
                    }
                }
            }
            rows
        });
        // Chunks of services with their owners; owners of removed services go last.
        let mut deltas = Vec::new();
        let mut left = owners.clone();
        for chunk in changed.chunks(self.config.max_lb_per_txn.max(1)) {
            let mine: BTreeSet<String> = chunk
                .iter()
                .map(ferry_net::scenario::service_owner)
                .filter(|o| left.remove(o))
                .collect();
            match ferry_net::cluster_ip_delta(chunk, &mine, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        if !left.is_empty() {
            match ferry_net::cluster_ip_delta(&[], &left, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        self.send_deltas(deltas).await
    }

    /// Sends a fast path's transactions in order.
    async fn send_deltas(
        &mut self,
        deltas: Vec<Vec<serde_json::Value>>,
    ) -> Result<bool, NetworkError> {
        for ops in deltas.into_iter().filter(|o| !o.is_empty()) {
            self.client
                .transact(nb::DATABASE, ops)
                .await
                .map_err(NetworkError::Transact)?;
        }
        Ok(true)
    }

    /// The fast path for workload ports: `changes` pairs each changed port's old and new
    /// state. `Ok(false)` when it does not apply (a switch not yet in the NB, ...).
    pub async fn apply_ports(
        &mut self,
        changes: &[(Option<PortState>, Option<PortState>)],
    ) -> Result<bool, NetworkError> {
        let current = self.client.with_mirror(|m| {
            ferry_net::port_delta_current(
                changes,
                m.table("Logical_Switch_Port").into_iter().flatten(),
                m.table("Logical_Switch").into_iter().flatten(),
            )
        });
        // Bounded transactions keep ovsdb-server responsive. Chunks touch distinct ports,
        // so all are planned from this one read; nothing is sent unless all apply.
        let mut deltas = Vec::new();
        for chunk in changes.chunks(PORTS_PER_TXN) {
            match ferry_net::port_delta(chunk, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(false),
            }
        }
        self.send_deltas(deltas).await
    }

    /// Converges the NB to `state`; returns the per-object errors of the model (keyed by
    /// object) or the transaction error.
    pub async fn apply(
        &mut self,
        state: &NetworkState,
    ) -> Result<BTreeMap<String, String>, NetworkError> {
        let started = Instant::now();
        // Building and diffing a large network takes seconds of CPU: off the async threads,
        // so the OVSDB connection keeps answering meanwhile.
        let state = state.clone();
        let desired = Arc::new(
            tokio::task::spawn_blocking(move || ferry_net::build_desired(&state))
                .await
                .map_err(|e| NetworkError::Plan(e.to_string()))?,
        );
        let mut txns = 0;
        let mut ops_total = 0;
        // One plan, its bounded transactions sent in order (each stands alone; inserts carry
        // deterministic uuids, so a replay after a lost reply fails instead of duplicating),
        // then a check from the mirror; re-planning only if something else moved meanwhile.
        for _ in 0..3 {
            let (client, d, max) = (
                self.client.clone(),
                desired.clone(),
                self.config.max_lb_per_txn,
            );
            let plan = tokio::task::spawn_blocking(move || {
                ferry_net::diff(&d, &Network::current(&client), max)
            })
            .await
            .map_err(|e| NetworkError::Plan(e.to_string()))?;
            if plan.is_empty() {
                break;
            }
            for ops in plan.transactions {
                ops_total += ops.len();
                txns += 1;
                self.client
                    .transact(nb::DATABASE, ops)
                    .await
                    .map_err(NetworkError::Transact)?;
            }
        }
        if txns > 0 {
            tracing::info!(
                txns,
                ops = ops_total,
                rows = desired.rows.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "NB converged"
            );
        }
        Ok(desired
            .errors
            .iter()
            .map(|e| (e.object().to_string(), e.to_string()))
            .collect())
    }
}
