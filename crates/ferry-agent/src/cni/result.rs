//! The CNI success result (spec 1.0.0, "Success"): interfaces, IPs, routes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::{CniError, ErrorCode};
use super::version::is_pre_1_0;
use crate::mac_addr::MacAddr;
use crate::plumb::PlumbRequest;

/// A CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// The cluster DNS the container runtime writes into the pod's resolv.conf: the
    /// network configuration's `dns`, passed through as the spec describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// CNI DNS settings (spec 1.0.0 "dns", in the configuration and the result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An interface the plugin created. `sandbox` is set for interfaces inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address the plugin configured; `interface` indexes [`CniResult::interfaces`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in results of cniVersion 0.x: `"4"` or `"6"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route the plugin configured inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

impl CniResult {
    /// The JSON printed on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Parses a configuration's `prevResult` (given to CHECK and DEL), if present.
    pub fn from_prev(prev: Option<&serde_json::Value>) -> Result<Option<CniResult>, CniError> {
        prev.map(|v| {
            serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(
                    ErrorCode::DecodingFailure,
                    "prevResult in the network configuration is not a CNI result",
                    e.to_string(),
                )
            })
        })
        .transpose()
    }

    /// The same result in `version`'s shape (0.x results carry `ips[].version`).
    pub fn for_version(mut self, version: &str) -> CniResult {
        self.cni_version = version.to_string();
        let old = is_pre_1_0(version);
        for ip in &mut self.ips {
            ip.version = old.then(|| {
                if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }
                .to_string()
            });
        }
        self
    }
}

/// The ADD result for a plumbed pod: the host end (index 0), the container end (index 1,
/// with its sandbox), the address on the container end, the default route (when the
/// request adds one) and the request's further routes.
pub fn add_result(version: &str, req: &PlumbRequest, host_mac: Option<MacAddr>) -> CniResult {
    let mut interfaces = Vec::new();
    if let Some(mac) = host_mac {
        interfaces.push(Interface {
            name: req.host_ifname.clone(),
            mac,
            sandbox: None,
        });
    }
    let container_index = interfaces.len();
    interfaces.push(Interface {
        name: req.ifname.clone(),
        mac: req.mac,
        sandbox: Some(req.netns_path.display().to_string()),
    });
    let default_dst: IpNet = if req.gateway.is_ipv4() {
        IpNet::V4(ipnet::Ipv4Net::default())
    } else {
        IpNet::V6(ipnet::Ipv6Net::default())
    };
    CniResult {
        dns: None,
        cni_version: version.to_string(),
        interfaces,
        ips: vec![IpConfig {
            version: None,
            address: req.ip_cidr,
            gateway: Some(req.gateway),
            interface: Some(container_index),
        }],
        routes: req
            .default_route
            .then_some((default_dst, req.gateway))
            .into_iter()
            .chain(req.routes.iter().copied())
            .map(|(dst, gw)| Route { dst, gw: Some(gw) })
            .collect(),
    }
    .for_version(version)
}
