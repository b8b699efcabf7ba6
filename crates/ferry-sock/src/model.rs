//! What the caller wants programmed: services keyed by (VPC, VIP, port, protocol), each
//! with its healthy backends, algorithm and ClientIP affinity. Plain data, no kernel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A VPC as the socket LB knows it: a small number the caller assigns (one per Ferry
/// VPC, the same on every node is not required, only within this node).
pub type VpcId = u32;

/// Transport protocol of a service port. SCTP is not translated (the hooks only see
/// TCP and UDP sockets of interest; SCTP service ports keep the OVN path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number the kernel reports in `bpf_sock_addr.protocol`.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// One service port as seen from inside a VPC: the translation happens only for sockets
/// whose network namespace belongs to `vpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub vpc: VpcId,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "vpc {} {}:{}/{}", self.vpc, self.vip, self.port, proto)
    }
}

/// A healthy backend with its weight (relative share of new connections; 0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: SocketAddrV4,
    pub weight: u16,
}

impl Backend {
    /// A backend with weight 1.
    pub fn new(addr: SocketAddrV4) -> Backend {
        Backend { addr, weight: 1 }
    }
}

/// How a new socket picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Algorithm {
    /// Uniform over the weighted slots (each backend repeated by its reduced weight).
    #[default]
    Random,
    /// Maglev consistent hashing of the socket cookie: every datagram of an unconnected
    /// UDP socket reaches the same backend, and a backend change moves only the sockets
    /// (and, with affinity, the clients) that were on the changed backends.
    Maglev,
}

/// One service port's programming.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    /// The healthy backends only: what the controller puts into Endpoints. Empty means
    /// the service is not programmed at all, so the socket keeps the VIP and the OVN
    /// load balancer answers (rejects) exactly as it does for every other client.
    pub backends: Vec<Backend>,
    pub algorithm: Algorithm,
    /// `sessionAffinity: ClientIP` timeout in seconds (Kubernetes default 10800); 0 = no
    /// affinity. The client is the pod's network namespace.
    pub affinity_timeout_s: u32,
}

/// Everything that should be programmed on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub services: BTreeMap<ServiceKey, ServiceSpec>,
}
