//! The CNI error object (spec 1.0.0, "Error"): what the plugin prints on stdout, with a
//! non-zero exit status, when an operation fails.

use serde::{Deserialize, Serialize};

/// Well-known CNI error codes (spec 1.0.0 section "Error"); 100+ are plugin-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the runtime asked for a `cniVersion` this plugin does not speak.
    IncompatibleVersion,
    /// 2: the network configuration has a field this plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown or does not exist (e.g. its netns is gone).
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: I/O failure (reading stdin, running a tool).
    IoFailure,
    /// 6: stdin could not be decoded.
    DecodingFailure,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: a transient failure; the runtime should retry later.
    TryAgainLater,
    /// 100: plumbing the interface (veth, addresses, routes, OVS) failed.
    PlumbingFailed,
    /// 101: `CHECK` found the container's network different from what was plumbed.
    CheckFailed,
    /// 102: the pod's network assignment (IP, MAC) is not available.
    NoAssignment,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PlumbingFailed => 100,
            ErrorCode::CheckFailed => 101,
            ErrorCode::NoAssignment => 102,
        }
    }
}

/// A CNI error: `{cniVersion, code, msg, details}`. `msg` is a short sentence saying what
/// failed; `details` says which object or field and, where possible, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error in the plugin's own version ([`super::CNI_VERSION`]); the dispatcher
    /// rewrites the version to the request's when it is known.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            cni_version: super::CNI_VERSION.to_string(),
            code: code.code(),
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":{}}}", self.code))
    }
}
