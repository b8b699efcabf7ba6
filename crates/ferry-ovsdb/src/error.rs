//! The one error type of this crate.

use serde_json::Value;

/// Everything that can go wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote string is not `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
    #[error("invalid OVSDB remote {remote:?}: {reason}")]
    InvalidRemote {
        remote: String,
        reason: &'static str,
    },

    /// An `ssl:` remote was given without TLS material.
    #[error(
        "OVSDB remote {remote:?} needs TLS material: a private key, a certificate and the CA certificate (ovs-pki's PEM files)"
    )]
    TlsNotConfigured { remote: String },

    /// The TLS material could not be read or parsed.
    #[error("OVSDB TLS {what}: {reason}")]
    TlsMaterial { what: &'static str, reason: String },

    /// The TLS handshake failed: most often the server's certificate is not signed by
    /// our CA certificate (`UnknownIssuer`), or the server refused our certificate.
    #[error("TLS handshake with OVSDB remote {remote:?} failed: {source}")]
    TlsHandshake {
        remote: String,
        #[source]
        source: std::io::Error,
    },

    /// Opening the socket failed.
    #[error("connecting to OVSDB remote {remote:?}: {source}")]
    Connect {
        remote: String,
        #[source]
        source: std::io::Error,
    },

    /// The server closed a new connection before it was ready (e.g. it refused our TLS
    /// certificate).
    #[error(
        "OVSDB remote {remote:?} dropped the connection during {method}: {reason}{}",
        if remote.starts_with("ssl:") { " (does the server trust our certificate's CA?)" } else { "" }
    )]
    Dropped {
        remote: String,
        method: String,
        reason: String,
    },

    /// The server is a member of a clustered database but not its connected leader
    /// (with [`crate::Config::leader_only`]): during an election, or a follower.
    #[error(
        "OVSDB remote {remote:?} is not the connected leader of clustered {db} (leader={leader}, connected={connected})"
    )]
    NotLeader {
        remote: String,
        db: String,
        leader: bool,
        connected: bool,
    },

    /// No remote in the list could be used (none reachable, or none is the RAFT leader).
    #[error("no usable OVSDB remote among {remotes:?}: {last}")]
    NoUsableRemote { remotes: Vec<String>, last: String },

    /// The server sent bytes that are not JSON, or a message that is not JSON-RPC.
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),

    /// The connection was lost while the request was in flight: it may or may not
    /// have been executed by the server.
    #[error("OVSDB connection lost during {method}; the outcome is unknown")]
    ConnectionLost { method: String },

    /// No connection became ready within the request timeout.
    #[error("OVSDB {method}: not connected within {timeout_ms} ms")]
    NotConnected { method: String, timeout_ms: u64 },

    /// No reply arrived within the request timeout.
    #[error("OVSDB {method}: no reply within {timeout_ms} ms")]
    Timeout { method: String, timeout_ms: u64 },

    /// The server answered the JSON-RPC request with an error.
    #[error("OVSDB {method} failed: {error}")]
    Rpc { method: String, error: Value },

    /// One operation of a transaction failed (RFC 7047 section 4.1.3).
    #[error(
        "OVSDB transact on {db}: operation {index} ({op}) failed: {error}{}",
        details_suffix(details)
    )]
    OpFailed {
        db: String,
        index: usize,
        op: String,
        error: String,
        details: Option<String>,
    },

    /// Every operation succeeded but the commit failed (constraint or
    /// referential-integrity violation, reported as an extra result element).
    #[error(
        "OVSDB transact on {db}: commit failed: {error}{}",
        details_suffix(details)
    )]
    CommitFailed {
        db: String,
        error: String,
        details: Option<String>,
    },

    /// The schema could not be understood.
    #[error("OVSDB schema of {db}: {reason}")]
    Schema { db: String, reason: String },

    /// `wait_until` gave up.
    #[error("mirror did not reach the awaited state within {timeout_ms} ms")]
    WaitTimeout { timeout_ms: u64 },

    /// The client was shut down.
    #[error("OVSDB client is shut down")]
    Shutdown,
}

fn details_suffix(details: &Option<String>) -> String {
    match details {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

impl Error {
    /// True when the request may not have reached the server or its reply was lost:
    /// retrying is safe only for transactions that guard themselves (a `wait`, or an
    /// insert with a caller-chosen `uuid`).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLost { .. } | Error::NotConnected { .. } | Error::Timeout { .. }
        )
    }
}

/// Result alias for this crate.
impl From<ferry_ovsdb_wire::Error> for Error {
    fn from(e: ferry_ovsdb_wire::Error) -> Error {
        match e {
            ferry_ovsdb_wire::Error::Protocol(m) => Error::Protocol(m),
            ferry_ovsdb_wire::Error::Schema { db, reason } => Error::Schema { db, reason },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
