//! Backends that are not Pods: `BareMetal` servers and `VNicIP`s (an address on a virtual NIC).
//! Both are namespaced, like the services that select them by label.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A bare-metal server with an address in a subnet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "BareMetal",
    namespaced,
    status = "BareMetalStatus",
    shortname = "bm",
    category = "ferry",
    derive = "PartialEq",
    doc = "A bare-metal server attached to a Ferry subnet",
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ipAddress"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".status.macAddress"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalSpec {
    pub subnet: String,
    /// A fixed address; allocated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// The node whose agent plumbs and probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An address on a virtual NIC, usable as a service backend.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iaas.yusur.io",
    version = "v1",
    kind = "VNicIP",
    plural = "vnicips",
    namespaced,
    status = "VNicIPStatus",
    shortname = "vip",
    category = "ferry",
    derive = "PartialEq",
    doc = "An IP address on a virtual NIC attached to a Ferry subnet",
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ipAddress"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".status.macAddress"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VNicIPSpec {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// The node whose agent plumbs and probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VNicIPStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What BareMetal and VNicIP share: the subnet a host sits in, the address it asks for
/// and the node that plumbs it. One shape, so IPAM and the agent treat both alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddressSpec {
    pub subnet: String,
    pub ip_address: Option<String>,
    pub mac_address: Option<String>,
    pub node_name: Option<String>,
}

/// The address a host was given (its status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddressStatus {
    pub ip_address: Option<String>,
    pub mac_address: Option<String>,
}

macro_rules! host_address {
    ($kind:ty) => {
        impl $kind {
            /// The host's address request, in the shape every host kind shares.
            pub fn host_spec(&self) -> HostAddressSpec {
                HostAddressSpec {
                    subnet: self.spec.subnet.clone(),
                    ip_address: self.spec.ip_address.clone(),
                    mac_address: self.spec.mac_address.clone(),
                    node_name: self.spec.node_name.clone(),
                }
            }

            /// The address the controller gave the host, if any.
            pub fn host_status(&self) -> HostAddressStatus {
                let s = self.status.as_ref();
                HostAddressStatus {
                    ip_address: s.and_then(|s| s.ip_address.clone()),
                    mac_address: s.and_then(|s| s.mac_address.clone()),
                }
            }
        }
    };
}
host_address!(BareMetal);
host_address!(VNicIP);
