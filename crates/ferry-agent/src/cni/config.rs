//! The network configuration the runtime writes on stdin: the standard keys plus Ferry's.

use std::path::PathBuf;

use serde::Deserialize;

use super::env::validate_ifname;
use super::error::{CniError, ErrorCode};
use super::version::check_version;

/// Default OVS database socket of a node.
pub const DEFAULT_OVS_DB_SOCK: &str = "/var/run/openvswitch/db.sock";
/// Default integration bridge.
pub const DEFAULT_BRIDGE: &str = "br-int";

/// OVS interface types accepted for the host end of the veth (`ovsPortType`).
/// `""`/`system` is the default (AF_PACKET on the userspace datapath); the `afxdp` types
/// are faster on the userspace datapath (see the design's ovn.md).
pub const PORT_TYPES: [&str; 4] = ["", "system", "afxdp", "afxdp-nonpmd"];

/// A Ferry network configuration.
///
/// ```json
/// {"cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
///  "ovsDbSock": "/var/run/openvswitch/db.sock", "bridge": "br-int",
///  "kubeconfig": "/etc/ferry/kubeconfig", "ovsPortType": "",
///  "sandboxDir": "/run/ferry/sandboxes"}
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default = "default_ovs_db_sock")]
    pub ovs_db_sock: PathBuf,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The kubeconfig the plugin uses to read the pod's network assignment.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// OVS `Interface.type` for the host end; empty means the default (`system`).
    #[serde(default)]
    pub ovs_port_type: String,
    /// The namespace `ovs-vswitchd` runs in, when not the host's (`ovsNetns`).
    #[serde(default)]
    pub ovs_netns: Option<PathBuf>,
    /// The result of the previous plugin or of ADD (given to CHECK and DEL).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// DNS settings for the pod (the cluster DNS address, the search path), returned in the
    /// ADD result for the runtime's resolv.conf.
    #[serde(default)]
    pub dns: Option<super::result::Dns>,
    /// Where ADD records the sandbox (netns cookie, pod) for the agent's socket load
    /// balancer and DEL removes it (`sandboxDir`; see `crate::socket_lb::sandbox_record`).
    #[serde(default = "default_sandbox_dir")]
    pub sandbox_dir: PathBuf,
    /// The node's agent mode (`mode`: `full`, the default, or `dpu-host`, where the plugin
    /// never touches OVS and the DPU binds the representor, see [`crate::dpu`]).
    #[serde(default)]
    pub mode: crate::dpu::AgentMode,
}

impl NetConf {
    /// The bridge the plugin puts the host end on; empty when this node's OVS is on its DPU.
    pub fn ovs_bridge(&self) -> &str {
        if crate::dpu::duties(self.mode).ovs_ports {
            &self.bridge
        } else {
            ""
        }
    }
}

fn default_sandbox_dir() -> PathBuf {
    PathBuf::from(crate::socket_lb::sandbox_record::DEFAULT_SANDBOX_DIR)
}

fn default_ovs_db_sock() -> PathBuf {
    PathBuf::from(DEFAULT_OVS_DB_SOCK)
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

/// Decodes and validates the configuration bytes.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            "network configuration on stdin is not valid JSON for Ferry",
            e.to_string(),
        )
    })?;
    validate(&conf)?;
    Ok(conf)
}

/// Only the `cniVersion` of a configuration, to answer errors in the request's version
/// even when the rest does not decode.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    serde_json::from_slice::<V>(stdin)
        .ok()
        .map(|v| v.cni_version)
}

fn validate(conf: &NetConf) -> Result<(), CniError> {
    let invalid = |field: &str, msg: String| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("network configuration field {field:?} is invalid"),
            msg,
        )
    };
    check_version(&conf.cni_version)?;
    if conf.name.is_empty() {
        return Err(invalid("name", "must not be empty".into()));
    }
    if conf.plugin_type.is_empty() {
        return Err(invalid("type", "must not be empty".into()));
    }
    if validate_ifname(&conf.bridge).is_err() {
        return Err(invalid(
            "bridge",
            format!("{:?} is not a valid bridge name", conf.bridge),
        ));
    }
    if !conf.ovs_db_sock.is_absolute() {
        return Err(invalid(
            "ovsDbSock",
            format!("{} must be an absolute path", conf.ovs_db_sock.display()),
        ));
    }
    if !PORT_TYPES.contains(&conf.ovs_port_type.as_str()) {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            format!("ovsPortType {:?} is not supported", conf.ovs_port_type),
            format!("use one of {PORT_TYPES:?} (empty = system)"),
        ));
    }
    Ok(())
}
