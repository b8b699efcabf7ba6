//! Ferry's API types: every resource of group `iaas.yusur.io/v1`, their CRDs and the
//! validation that the schema alone cannot express.
//!
//! This crate owns the shape of the objects users and controllers exchange. It does no
//! I/O: the API server, the controllers and the agent all depend on it, and a test keeps
//! the generated CRD manifests in `deploy/crds/` in step with these types.

// kube-derive repeats `type_` across printcolumn(...) entries.
#![allow(clippy::duplicated_attributes)]

mod backends;
mod compact_map;
mod contract;
mod crds;
mod network;
mod network_probe;
pub mod tenancy;
mod validation;
mod vmi;
pub mod watch_backoff;
mod yusur_service;

pub use backends::{
    BareMetal, BareMetalSpec, BareMetalStatus, HostAddressSpec, HostAddressStatus, VNicIP,
    VNicIPSpec, VNicIPStatus,
};
pub use compact_map::{CompactMap, StrLookup};
pub use contract::{
    ANNOTATION_CIDR, ANNOTATION_GATEWAY, ANNOTATION_IP, ANNOTATION_MAC, ANNOTATION_PROBE_PORTS,
    ANNOTATION_SOCKET_LB, ANNOTATION_SUBNET, ANNOTATION_VPC, DEFAULT_POD_SUBNET, DEFAULT_VPC,
    JOIN_SUBNET, ProbePort, SERVICE_LABEL, WorkloadAddress, probe_ports, probe_ports_annotation,
};
pub use crds::{all_crds, crd_manifest, crd_manifests};
pub use network::{
    Eip, EipSpec, EipStatus, Subnet, SubnetSpec, SubnetStatus, Vpc, VpcSpec, VpcStatus,
};
pub use network_probe::{
    NetworkProbe, NetworkProbeSpec, NetworkProbeStatus, ProbePhase, ProbeTarget,
};
pub use validation::{FieldError, validate};
pub use vmi::{
    VirtualMachineInstance, VirtualMachineInstanceSpec, VmiInterface, VmiStatus, vmi_crd,
};
pub use watch_backoff::WatchBackoff;
pub use yusur_service::{
    BackendKind, HealthCheck, HealthCheckType, Protocol, Scope, ServicePort, ServiceType,
    SessionAffinity, UdpSilence, YusurService, YusurServiceSpec, YusurServiceStatus,
};

/// The API group of every Ferry resource, kept from the seed design so that its manifests
/// apply verbatim.
pub const GROUP: &str = "iaas.yusur.io";
/// The only served version.
pub const VERSION: &str = "v1";
/// Namespace of the node agents' Leases (beside the kubelets' own).
pub const AGENT_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long an agent's Lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLeaseTiming {
    /// `leaseDurationSeconds`: the controller counts the node's agent gone (its probes
    /// Unknown) this long after the last renewal.
    pub duration: std::time::Duration,
    pub renew_every: std::time::Duration,
}

impl AgentLeaseTiming {
    /// The kubelet's node Lease (`nodeLeaseDurationSeconds` 40, renewed every quarter of
    /// it): `ferry agent`'s default and the hollow nodes' of `ferry bench control-plane`.
    /// At 10,000 nodes that is 1,000 renewals/s for the API server, against 3,333/s with
    /// [`AgentLeaseTiming::FAST`].
    pub const KUBELET: AgentLeaseTiming = AgentLeaseTiming {
        duration: std::time::Duration::from_secs(40),
        renew_every: std::time::Duration::from_secs(10),
    };
    /// 10 s renewed every 3 s: a stopped or cut-off agent is noticed within 10 s. The
    /// one-machine lab's agents (`ferry up`, whose fault and partition tests wait for a
    /// lapse) and the DPU Lease (`dpu_lease_name`) use it.
    pub const FAST: AgentLeaseTiming = AgentLeaseTiming {
        duration: std::time::Duration::from_secs(10),
        renew_every: std::time::Duration::from_secs(3),
    };

    /// `leaseDurationSeconds` (whole seconds, at least 1).
    pub fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// The Lease a node's agent renews while it runs (not the kubelet's, named after the node).
pub fn agent_lease_name(node: &str) -> String {
    format!("ferry-agent-{node}")
}

/// The Lease the DPU agent of host `node` renews (DPU split mode, docs/dpu.md); the host's
/// CNI refuses new pods while it has lapsed.
pub fn dpu_lease_name(node: &str) -> String {
    format!("ferry-dpu-{node}")
}

/// The Pod annotation a `dpu-host` agent writes after CNI ADD: the representor (the other
/// end of the pod's VF) the DPU must bind. The one Pod field a node may write besides status.
pub const ANNOTATION_VF: &str = "iaas.yusur.io/vf";

/// Condition type used across Ferry objects: see `conditions` in each status.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
