//! The network objects a service lives in: `Vpc`, `Subnet` and `Eip` (all cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An isolated virtual network: one OVN logical router.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "Vpc",
    status = "VpcStatus",
    shortname = "vpc",
    category = "ferry",
    derive = "PartialEq",
    doc = "An isolated virtual network (one OVN logical router)",
    printcolumn(name = "Router", type_ = "string", json_path = ".status.router"),
    printcolumn(name = "Subnets", type_ = "string", json_path = ".status.subnets"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    /// The namespaces that may use this VPC and its subnets (admission refuses others);
    /// empty: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// Comma-separated names of the VPC's subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An IPv4 subnet of a VPC: one OVN logical switch.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "Subnet",
    status = "SubnetStatus",
    shortname = "subnet",
    category = "ferry",
    derive = "PartialEq",
    doc = "An IPv4 subnet of a VPC (one OVN logical switch)",
    printcolumn(name = "VPC", type_ = "string", json_path = ".spec.vpc"),
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidrBlock"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".status.gateway"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usingIPs"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableIPs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// The VPC this subnet belongs to; the default VPC when empty.
    #[serde(default)]
    pub vpc: String,
    /// IPv4 CIDR, e.g. `10.0.1.0/24`.
    pub cidr_block: String,
    /// Gateway address; the first host address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Addresses or `a..b` ranges never allocated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// Namespaces whose pods land here when they name no subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The subnet of pods that name none (at most one per cluster).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// `spec.gateway`, or the first host address Ferry uses when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, rename = "usingIPs")]
    pub using_ips: i64,
    #[serde(default, rename = "availableIPs")]
    pub available_ips: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An elastic IP: an external address bound to a LoadBalancer YusurService.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "Eip",
    status = "EipStatus",
    shortname = "eip",
    category = "ferry",
    derive = "PartialEq",
    doc = "An elastic IP from the external network's pool",
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Bound-To", type_ = "string", json_path = ".status.boundTo"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EipSpec {
    /// A fixed address in the pool; allocated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EipStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `namespace/name` of the YusurService using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
