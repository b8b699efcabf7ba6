//! What can be wrong with what an OVSDB server sent, found without any I/O.

/// A malformed message, update or schema.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message or update that does not follow RFC 7047.
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    /// A schema that cannot be used (`db` is the database it names).
    #[error("OVSDB schema of {db}: {reason}")]
    Schema { db: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
