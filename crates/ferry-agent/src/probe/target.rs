//! What a probe checks and how often.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::state::Thresholds;

/// The probe type (`healthCheck.type`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Success: a TCP connection is established.
    Tcp,
    /// Success: `GET path` answers 2xx or 3xx.
    Http { path: String },
    /// Success: a reply datagram; failure: an ICMP port unreachable; silence for the whole
    /// timeout: `silence` decides.
    Udp { silence: ferry_api::UdpSilence },
    /// Success: an ICMP echo reply (port ignored).
    Icmp,
}

/// The address probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    pub kind: ProbeKind,
    pub ip: IpAddr,
    pub port: u16,
}

/// One probe as the runner schedules it (from a NetworkProbe's spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Unique key, e.g. the NetworkProbe's `namespace/name`.
    pub id: String,
    /// The VPC's probe namespace; `None` probes from the agent's own namespace.
    pub netns: Option<PathBuf>,
    pub target: ProbeTarget,
    pub period: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}
