//! `NetworkProbe`: one health probe per backend of a YusurService, written by the service
//! controller and run by the node agent that can reach the backend.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::yusur_service::{BackendKind, HealthCheckType};

/// A probe of one backend, from inside the backend's VPC.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "NetworkProbe",
    namespaced,
    status = "NetworkProbeStatus",
    shortname = "np",
    category = "ferry",
    derive = "PartialEq",
    doc = "A health probe of one YusurService backend, run by a Ferry node agent",
    selectable = ".spec.nodeName",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "VPC", type_ = "string", json_path = ".spec.target.vpc"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.target.ip"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProbeSpec {
    pub target: ProbeTarget,
    #[serde(default, rename = "type")]
    pub type_: HealthCheckType,
    #[schemars(range(min = 0, max = 65535))]
    #[serde(default)]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The agent responsible for this probe (the backend's node, or one the controller assigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// UDP: the verdict of silence (see the YusurService's `healthCheck.udpSilence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_silence: Option<crate::UdpSilence>,
}

/// The backend a probe checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTarget {
    pub kind: BackendKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub vpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    pub ip: String,
}

/// What a probe last concluded: the agent's state machine and the status share this one
/// type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProbePhase {
    /// Not enough results yet (a new or changed target), or nobody is probing it.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl ProbePhase {
    /// The name used in NetworkProbe status.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbePhase::Unknown => "Unknown",
            ProbePhase::Healthy => "Healthy",
            ProbePhase::Unhealthy => "Unhealthy",
        }
    }
}

/// Written by the agent, only when the phase changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProbeStatus {
    #[serde(default)]
    pub phase: ProbePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The agent (node) that ran the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prober: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
