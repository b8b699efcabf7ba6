//! `YusurService`: the one object a user writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A load-balanced service inside one VPC, across several VPCs, or behind an elastic IP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "YusurService",
    namespaced,
    status = "YusurServiceStatus",
    shortname = "ysvc",
    category = "ferry",
    derive = "PartialEq",
    doc = "A VPC-aware load-balanced service programmed into OVN by Ferry",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope"),
    printcolumn(name = "VPC", type_ = "string", json_path = ".status.vpcs"),
    printcolumn(name = "Cluster-IP", type_ = "string", json_path = ".status.clusterIP"),
    printcolumn(name = "EIP", type_ = "string", json_path = ".status.eip"),
    printcolumn(name = "Port(s)", type_ = "string", json_path = ".spec.ports[*].port"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct YusurServiceSpec {
    /// ClusterIP (reachable inside the VPC and from nodes) or LoadBalancer (also behind an EIP).
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// `vpc`: backends in the one VPC named by `vpc`; `multi-vpc`: backends in every VPC of `vpcs`.
    #[serde(default)]
    pub scope: Scope,
    /// The VPC of a `scope: vpc` service; omitted means the default VPC `ovn-cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// The VPCs of a `scope: multi-vpc` service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpcs: Option<Vec<String>>,
    /// A fixed ClusterIP inside the service CIDR; allocated when absent.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// LoadBalancer only: an address in the EIP pool or the name of an `Eip`; allocated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<String>,
    /// The ports the service exposes.
    #[schemars(length(min = 1))]
    pub ports: Vec<ServicePort>,
    /// Labels matched against every backend kind in the service's VPC(s).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Which backend kinds may be selected; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_kinds: Option<Vec<BackendKind>>,
    /// `ClientIP` keeps a client on one backend for `sessionAffinityTimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Seconds a ClientIP affinity lasts (default 10800, as in Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub session_affinity_timeout_seconds: Option<i32>,
    /// How backends are probed; a TCP probe on each port's targetPort when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// How the service is reached.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    LoadBalancer,
}

/// Where the backends live.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Scope {
    #[default]
    #[serde(rename = "vpc")]
    Vpc,
    #[serde(rename = "multi-vpc")]
    MultiVpc,
}

/// One exposed port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
    /// The backends' port; `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
}

/// Transport protocol of a port.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// Kinds of backend a selector may match.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum BackendKind {
    Pod,
    VirtualMachineInstance,
    BareMetal,
    VNicIP,
}

/// Session affinity, as in Kubernetes Services.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

/// How each backend is probed by the node agents.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// How to probe; when absent, the probed port's protocol decides (UDP for a UDP port,
    /// TCP otherwise): a TCP probe of a UDP-only backend would never succeed.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HealthCheckType>,
    /// Port to probe; the first port's targetPort when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// HTTP path (type HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// UDP: what a probe that hears neither a reply nor an ICMP port unreachable within its
    /// timeout means (default Unknown: silence proves nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_silence: Option<UdpSilence>,
}

/// The verdict of a UDP probe that hears nothing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum UdpSilence {
    /// The backend's health is unknown: it leaves the load balancers until it answers.
    #[default]
    Unknown,
    /// Silence counts as success (a port that never answers, e.g. a syslog sink).
    Healthy,
    /// Silence counts as failure.
    Unhealthy,
}

fn one() -> i32 {
    1
}
fn three() -> i32 {
    3
}

impl HealthCheck {
    /// The probe type for a port of `protocol`: the one written, else UDP for a UDP port
    /// and TCP for the rest (SCTP included: agents have no SCTP probe).
    pub fn probe_type(&self, protocol: Protocol) -> HealthCheckType {
        self.type_.unwrap_or(match protocol {
            Protocol::UDP => HealthCheckType::UDP,
            Protocol::TCP | Protocol::SCTP => HealthCheckType::TCP,
        })
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            type_: None,
            port: None,
            path: None,
            period_seconds: 1,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 3,
            udp_silence: None,
        }
    }
}

/// Probe kinds the agent runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HealthCheckType {
    #[default]
    TCP,
    HTTP,
    UDP,
    ICMP,
}

/// What the controllers report about a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct YusurServiceStatus {
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<String>,
    /// The VPCs it serves, comma-separated (the default VPC when it names none), for the
    /// VPC column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpcs: Option<String>,
    #[serde(default)]
    pub ready_endpoints: i32,
    #[serde(default)]
    pub total_endpoints: i32,
    /// `ready/total`, for the READY column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
