//! The CNI plugin protocol (spec 1.0.0): environment, network configuration, results,
//! errors and the VERSION reply. Pure: no I/O here; [`dispatch`] turns one invocation
//! into stdout and an exit status, calling a [`CniPlugin`] for ADD, DEL and CHECK, and
//! [`plumb_request`] maps a pod's assignment onto [`crate::plumb`].

mod config;
mod dispatch;
mod env;
mod error;
mod pod_network;
mod result;
mod version;

pub use config::{DEFAULT_BRIDGE, DEFAULT_OVS_DB_SOCK, NetConf, PORT_TYPES, parse_conf};
pub use dispatch::{CniPlugin, Reply, dispatch};
pub use env::{
    CniArgs, CniCommand, CniEnv, Invocation, MAX_IFNAME_LEN, parse_env, validate_ifname,
};
pub use error::{CniError, ErrorCode};
pub use pod_network::{PodNetwork, plumb_request, pod_ref, unplumb_request};
pub use result::{CniResult, Interface, IpConfig, Route, add_result};
pub use version::{CNI_VERSION, SUPPORTED_VERSIONS, VersionInfo, check_version, version_info};

#[cfg(test)]
mod tests;
