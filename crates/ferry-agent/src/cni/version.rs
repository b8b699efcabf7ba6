//! CNI versions this plugin speaks and the `VERSION` reply.

use serde::Serialize;

use super::error::{CniError, ErrorCode};

/// The version of results and errors this plugin produces by default.
pub const CNI_VERSION: &str = "1.0.0";

/// Every `cniVersion` accepted in a network configuration. Results for 0.x versions carry
/// the per-IP `version` field those versions require.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The reply to `CNI_COMMAND=VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// The VERSION reply JSON.
pub fn version_info() -> VersionInfo {
    VersionInfo {
        cni_version: CNI_VERSION.to_string(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    }
}

/// Accepts a supported `cniVersion`, else an "incompatible version" error naming both.
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {v:?} is not supported"),
            format!("supported versions: {}", SUPPORTED_VERSIONS.join(", ")),
        ))
    }
}

/// True for versions before 1.0.0 (results need `ips[].version`).
pub fn is_pre_1_0(v: &str) -> bool {
    v.starts_with("0.")
}

/// CHECK exists since 0.4.0.
pub fn supports_check(v: &str) -> bool {
    !matches!(v, "0.3.0" | "0.3.1")
}
