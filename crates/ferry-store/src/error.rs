//! The one error type of the store.

use std::sync::Arc;

/// Every way a store operation can fail.
///
/// It is `Clone` because one failed group commit is reported to every write of its batch;
/// database errors are shared behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `create` (or a txn `Op::Create`) found the key already present.
    #[error("create {key}: already exists")]
    AlreadyExists { key: String },
    /// `update`/`delete` found no such key.
    #[error("{key}: not found")]
    NotFound { key: String },
    /// The caller's `expected_mod_revision` is not the key's current `mod_revision`
    /// (optimistic concurrency; the API server answers 409).
    #[error("{key}: expected mod_revision {expected}, current is {current}")]
    Conflict {
        key: String,
        expected: u64,
        current: u64,
    },
    /// A txn names the same key twice; its result would be ambiguous, so it is refused whole.
    #[error("txn: key {key} appears more than once")]
    DuplicateKey { key: String },
    /// The history after `requested` is no longer kept (the API server answers 410 Gone and the
    /// client re-lists).
    #[error("revision {requested}: history compacted up to {compacted}, re-list")]
    Compacted { requested: u64, compacted: u64 },
    /// `compact` was asked for a revision the store has not reached.
    #[error("compact to revision {requested}: current revision is only {current}")]
    FutureRevision { requested: u64, current: u64 },
    /// A watcher did not drain its buffer in time and was dropped; it must re-list and watch
    /// again. Always the last item of a watch.
    #[error("watch fell behind by more than its buffer and was closed, re-list")]
    WatchLagged,
    /// The store's writer has stopped (every handle was closed or dropped).
    #[error("store is closed")]
    Closed,
    /// The embedded database failed; `op` names what the store was doing.
    #[error("{op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: Arc<redb::Error>,
    },
    /// A stored record could not be decoded (file damage or a format bug).
    #[error("corrupt {what} record {at}: {reason}")]
    Corrupt {
        what: &'static str,
        at: String,
        reason: &'static str,
    },
    /// A store location (`--store`) that cannot be parsed.
    #[error("store location {0}")]
    BadLocation(String),
    /// etcd refused the request (`op` names it); not a precondition failure.
    #[error("etcd {op}: {message}")]
    Etcd { op: &'static str, message: String },
    /// No etcd member answered, or the outcome of a write is unknown (its connection broke
    /// after it was sent, or etcd lost its leader meanwhile): the caller may retry. A watch
    /// whose stream broke ends with it; re-list and watch again.
    #[error("etcd {op} unavailable: {message}")]
    Unavailable { op: &'static str, message: String },
    /// An invariant of the store itself was broken (a bug, never bad input).
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps any redb error to [`StoreError::Database`], naming the operation.
pub(crate) fn db_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Database {
        op,
        source: Arc::new(e.into()),
    }
}
