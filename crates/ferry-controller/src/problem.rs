//! Why a service cannot be served (fully): one variant per cause, each with the reason a
//! condition and an Event show and a message naming the field or object at fault.

use std::net::Ipv4Addr;

/// A service's problem, as its `Ready` condition reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `spec.vpc`/`spec.vpcs` names VPCs that do not exist.
    VpcNotFound(Vec<String>),
    ClusterIpConflict {
        ip: Ipv4Addr,
        holder: String,
    },
    ClusterIpOutOfRange(Ipv4Addr),
    ClusterIpExhausted(String),
    /// A LoadBalancer service on a controller started without `--eip-pool`.
    NoEipPool,
    /// `spec.eip` names an Eip object that does not exist or has no address.
    EipNotFound(String),
    EipOutOfPool(Ipv4Addr),
    EipConflict {
        ip: Ipv4Addr,
        holder: String,
    },
    EipExhausted(String),
    /// Nothing selected: the service is programmed anyway (its load balancers reject).
    NoBackends {
        empty_selector: bool,
    },
}

impl Problem {
    /// The condition reason (CamelCase, stable: scripts match on it).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::VpcNotFound(_) => "VpcNotFound",
            Problem::ClusterIpConflict { .. } => "ClusterIPConflict",
            Problem::ClusterIpOutOfRange(_) => "ClusterIPOutOfRange",
            Problem::ClusterIpExhausted(_) => "ClusterIPExhausted",
            Problem::NoEipPool => "NoEipPool",
            Problem::EipNotFound(_) => "EipNotFound",
            Problem::EipOutOfPool(_) => "EipOutOfPool",
            Problem::EipConflict { .. } => "EipConflict",
            Problem::EipExhausted(_) => "EipExhausted",
            Problem::NoBackends { .. } => "NoBackends",
        }
    }

    /// What the user reads, naming the field or object at fault.
    pub fn message(&self) -> String {
        match self {
            Problem::VpcNotFound(v) => format!("VPC {} does not exist", v.join(", ")),
            Problem::ClusterIpConflict { ip, holder } => {
                format!("clusterIP {ip} is already used by {holder}")
            }
            Problem::ClusterIpOutOfRange(ip) => {
                format!("clusterIP {ip} is outside the service CIDR")
            }
            Problem::ClusterIpExhausted(e) | Problem::EipExhausted(e) => e.clone(),
            Problem::NoEipPool => "this controller has no EIP pool (--eip-pool)".into(),
            Problem::EipNotFound(e) => format!("Eip {e:?} does not exist or has no address"),
            Problem::EipOutOfPool(ip) => format!("EIP {ip} is outside the pool"),
            Problem::EipConflict { ip, holder } => format!("EIP {ip} is already used by {holder}"),
            Problem::NoBackends {
                empty_selector: true,
            } => "the selector is empty".into(),
            Problem::NoBackends {
                empty_selector: false,
            } => "the selector matches no backend in the service's VPC(s)".into(),
        }
    }

    /// Whether the service stays out of OVN (every problem but having no backend).
    pub fn blocks_programming(&self) -> bool {
        !matches!(self, Problem::NoBackends { .. })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason(), self.message())
    }
}
