//! Inputs and outputs of the model, as plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything the model needs to know about the cluster's network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkState {
    /// The chassis (OVS `system-id`) that hosts gateway routers and gateway ports; several,
    /// comma separated in priority order, make the external gateway and the VPCs' gateway
    /// ports HA over all of them.
    pub gateway_chassis: String,
    /// /30 links between routers are carved from here; no subnet may overlap it.
    pub transit_cidr: Option<Ipv4Net>,
    /// Every VPC, the default one included.
    pub vpcs: Vec<String>,
    pub subnets: Vec<SubnetState>,
    /// Workload, node and probe ports to plumb into subnets (or the external network).
    pub ports: Vec<PortState>,
    pub external: Option<ExternalNetwork>,
    pub services: Vec<ServiceState>,
    /// The nodes' addresses, where NodePorts answer.
    #[serde(default)]
    pub nodes: Vec<NodeAddresses>,
    /// Names of workload ports (in [`NetworkState::ports`]) whose pod runs on a node where
    /// the socket LB (`ferry agent --socket-lb`) is attached and its agent alive: they join
    /// their VPC's socket-LB port group ([`crate::socket_lb_group`]), whose traffic between
    /// members skips conntrack. Empty: no group, every packet as before.
    #[serde(default)]
    pub socket_lb_ports: BTreeSet<String>,
}

/// A node's addresses: its interface on the join subnet, and an address on the external
/// network (answered by `eip-gateway`, like an EIP) when it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAddresses {
    pub name: String,
    pub internal: Option<Ipv4Addr>,
    pub external: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A subnet: one logical switch, attached to its VPC's router at `gateway`.
pub struct SubnetState {
    /// The Subnet's name, which is also the logical switch's.
    pub name: String,
    pub vpc: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A logical switch port: `subnet` is a subnet name or [`EXTERNAL_SWITCH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortState {
    /// The logical switch port name, i.e. the OVS `iface-id` ([`crate::port_name`]).
    pub name: String,
    pub subnet: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// The network outside the cloud: the switch clients sit on, `eip-gateway`'s address on it,
/// and the pool EIPs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalNetwork {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// First and last address of the EIP pool, inclusive.
    pub pool: (Ipv4Addr, Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
/// A load balancer protocol.
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The protocol as the NB writes it (`tcp`, `udp`, `sctp`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// `port` on the service's addresses goes to `target_port` on each backend.
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
    /// A Kubernetes NodePort: `NODE:node_port` on every node's addresses.
    #[serde(default)]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A ready backend: its address inside `vpc`.
pub struct Backend {
    pub ip: Ipv4Addr,
    pub vpc: String,
    /// The node it runs on, for node-local traffic policies.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// Where a service's backends live.
pub enum ServiceScope {
    Vpc(String),
    MultiVpc(Vec<String>),
}

/// One service and its ready backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// `namespace/name`: errors and row owners name it.
    pub key: String,
    /// The service object's uid, part of the `ferry.io/owner` of its rows.
    pub uid: String,
    pub scope: ServiceScope,
    pub cluster_ip: Option<Ipv4Addr>,
    /// An allocated EIP (LoadBalancer services).
    pub eip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Ready backends only: with none, the load balancers reject.
    pub backends: Vec<Backend>,
    /// A Kubernetes Service, or a YusurService (the default): the owner of its rows.
    #[serde(default)]
    pub kind: ServiceKind,
    /// More addresses that answer like the EIP (a Service's `externalIPs`), on the
    /// external network.
    #[serde(default)]
    pub external_ips: Vec<Ipv4Addr>,
    /// NodePorts answer only with the backends on the node addressed, keeping the client's
    /// address (`externalTrafficPolicy: Local`).
    #[serde(default)]
    pub node_local: bool,
}

/// The object a service is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceKind {
    #[default]
    YusurService,
    /// An ordinary `v1 Service` (always in the default VPC).
    Service,
}

/// The default VPC: the join subnet and node ports belong to it.
pub const DEFAULT_VPC: &str = "ovn-cluster";
/// The join subnet of the default VPC, where every node's interface is a port.
pub const JOIN_SUBNET: &str = "subnet0";
/// The join range when no subnet named [`JOIN_SUBNET`] is given; no other subnet may
/// overlap the join subnet.
pub const JOIN_CIDR_DEFAULT: &str = "100.64.0.0/16";
/// The transit range when [`NetworkState::transit_cidr`] is `None`.
pub const TRANSIT_CIDR_DEFAULT: &str = "100.100.0.0/16";
/// Name of the switch of the external network (ports with this `subnet` go there).
pub const EXTERNAL_SWITCH: &str = "external";
/// The external switch's localnet port when the gateway is HA over several chassis.
pub const EXTERNAL_LOCALNET_PORT: &str = "external-localnet";
/// Its physical network (`ovn-bridge-mappings` on each gateway chassis maps it to a bridge).
pub const EXTERNAL_PHYSNET: &str = "external";
/// The gateway router between the external network and the VPCs.
pub const EIP_GATEWAY: &str = "eip-gateway";
/// The gateway router of multi-VPC services.
pub const SERVICE_GATEWAY: &str = "service-gateway";
/// `external_ids` key naming the desired row a NB row is.
pub const KEY: &str = "ferry.io/key";
/// `external_ids` key naming the object a NB row exists for.
pub const OWNER: &str = "ferry.io/owner";

/// One desired NB row: its table, a stable key, and its columns in OVSDB wire notation.
/// References to other desired rows are written `["ref", TABLE, KEY]` and resolved by
/// [`crate::plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: &'static str,
    pub key: String,
    pub columns: BTreeMap<String, Value>,
}

/// What an object could not get, and why; the rest of the network is still built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("subnet {subnet}: VPC {vpc} does not exist")]
    SubnetUnknownVpc { subnet: String, vpc: String },
    #[error("subnet {subnet}: {cidr} overlaps the reserved transit range {reserved}")]
    SubnetOverlapsTransit {
        subnet: String,
        cidr: Ipv4Net,
        reserved: Ipv4Net,
    },
    #[error("subnet {subnet}: {cidr} overlaps the join subnet {join}")]
    SubnetOverlapsJoin {
        subnet: String,
        cidr: Ipv4Net,
        join: Ipv4Net,
    },
    #[error("subnet {subnet}: {cidr} overlaps subnet {other} of the same VPC")]
    SubnetOverlapsSubnet {
        subnet: String,
        cidr: Ipv4Net,
        other: String,
    },
    #[error("{kind} {name}: its OVN name {ovn_name} is reserved or already taken")]
    NameClash {
        kind: &'static str,
        name: String,
        ovn_name: String,
    },
    #[error("VPC {vpc}: no /30 left in the transit range {range} for its link")]
    TransitRangeFull { vpc: String, range: Ipv4Net },
    #[error("port {port}: subnet {subnet} does not exist")]
    PortUnknownSubnet { port: String, subnet: String },
    #[error("service {service}: VPC {vpc} does not exist")]
    ServiceUnknownVpc { service: String, vpc: String },
    #[error("service {service}: EIP {eip} is outside the pool")]
    EipOutOfPool { service: String, eip: Ipv4Addr },
    #[error("service {service}: EIP {eip} is already used by {other}")]
    EipInUse {
        service: String,
        eip: Ipv4Addr,
        other: String,
    },
    #[error("service {service}: an EIP needs an external network")]
    NoExternalNetwork { service: String },
    #[error("service {service}: backends in VPCs {vpcs:?} share the address {ip}")]
    DuplicateBackendIp {
        service: String,
        ip: Ipv4Addr,
        vpcs: Vec<String>,
    },
    #[error("service {service}: port {port}/{protocol} is listed twice")]
    DuplicateServicePort {
        service: String,
        port: u16,
        protocol: &'static str,
    },
    #[error("service {service}: {vip} is already served by {other}")]
    VipClash {
        service: String,
        vip: String,
        other: String,
    },
    #[error("service {service}: external IP {ip} is not on the external network {cidr}")]
    ExternalIpOutsideNetwork {
        service: String,
        ip: Ipv4Addr,
        cidr: Ipv4Net,
    },
    #[error("service {service}: node ports are served only in the default VPC")]
    NodePortOutsideDefaultVpc { service: String },
}

impl ObjectError {
    /// `namespace/name` of the service (or the subnet/port name) the error is about.
    pub fn object(&self) -> &str {
        match self {
            ObjectError::SubnetUnknownVpc { subnet, .. }
            | ObjectError::SubnetOverlapsTransit { subnet, .. }
            | ObjectError::SubnetOverlapsJoin { subnet, .. }
            | ObjectError::SubnetOverlapsSubnet { subnet, .. } => subnet,
            ObjectError::NameClash { name, .. } => name,
            ObjectError::TransitRangeFull { vpc, .. } => vpc,
            ObjectError::PortUnknownSubnet { port, .. } => port,
            ObjectError::ServiceUnknownVpc { service, .. }
            | ObjectError::EipOutOfPool { service, .. }
            | ObjectError::EipInUse { service, .. }
            | ObjectError::NoExternalNetwork { service }
            | ObjectError::DuplicateBackendIp { service, .. }
            | ObjectError::DuplicateServicePort { service, .. }
            | ObjectError::VipClash { service, .. }
            | ObjectError::ExternalIpOutsideNetwork { service, .. }
            | ObjectError::NodePortOutsideDefaultVpc { service } => service,
        }
    }
}

/// The desired NB content and the objects that could not be programmed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub rows: Vec<Row>,
    pub errors: Vec<ObjectError>,
}
