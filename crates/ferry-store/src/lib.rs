//! Ferry's durable MVCC object store: what etcd is to kube-apiserver, embedded.
//!
//! It owns the bytes of every API object, the one global revision counter (`resourceVersion`
//! is an object's `mod_revision`), the change log that watches replay from, and its
//! compaction. It knows nothing of Kubernetes: values are opaque bytes under string keys
//! (`/registry/<group>/<resource>/<namespace>/<name>`), and validation, encoding and
//! admission belong to the API server above it.
//!
//! Why redb: it is pure Rust (no C build), its commits are crash-safe and fsynced
//! (`Durability::Immediate`) before `commit` returns, which is what "an acknowledged write
//! survives `kill -9`" needs, and its read transactions are MVCC snapshots, so a list sees
//! exactly one revision. Its single writer is what serializes the revision counter; group
//! commit (many queued writes per fsync, see `writer`) recovers the throughput that one fsync
//! per write would cost. See the design notes' `dependencies.md`, "Embedded store".
//!
//! The same contract is also served by an etcd cluster (module `etcd`, [`Backend::Etcd`]),
//! for control planes that need a replicated store shared by several API servers.
//!
//! Layout: table `objects` (key → create/mod revision and value), table `log` (revision →
//! the events of that revision, with previous values, for watches), table `meta` (current and
//! compacted revision).

mod codec;
mod error;
mod etcd;
mod watch;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{mpsc, oneshot};

pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdTls};
pub use watch::Watch;

use error::db_err;
use watch::Hub;
use writer::Request;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (its current incarnation).
    pub create_revision: u64,
    /// Revision of the last write to the key: the API's `resourceVersion`.
    pub mod_revision: u64,
}

/// Whether an event wrote or removed its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    /// The key after the change. For a delete: the deleted value with
    /// `mod_revision == revision`.
    pub kv: KeyValue,
    /// The key before the change (`None` for a create).
    pub prev_kv: Option<KeyValue>,
}

/// One operation of a [`Store::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Fails with `AlreadyExists` if the key is present.
    Create { key: String, value: Bytes },
    /// Fails with `NotFound`, or `Conflict` if `expected_mod_revision` is set and differs.
    Update {
        key: String,
        value: Bytes,
        expected_mod_revision: Option<u64>,
    },
    /// Fails with `NotFound`, or `Conflict` if `expected_mod_revision` is set and differs.
    Delete {
        key: String,
        expected_mod_revision: Option<u64>,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Tuning knobs; the defaults suit the API server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keep only the last N revisions of history, compacting older log rows as part of each
    /// commit (no extra fsync). `None` keeps everything until [`Store::compact`] is called.
    pub retain_revisions: Option<u64>,
    /// Events a watcher may have undelivered before it is dropped with `WatchLagged` (one
    /// buffer of this size for the consumer plus one for live events during replay, so up to
    /// twice this). Bounded so one stuck client cannot grow memory without limit; it also
    /// bounds how many writes may land while a watch is still replaying history.
    pub watch_buffer: usize,
    /// Most writes committed under one fsync.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers are slowed down.
    pub queue_depth: usize,
    /// redb's page cache, in bytes (redb's own default: 1 GiB). Pages it does not hold are
    /// read through the kernel's page cache.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retain_revisions: None,
            watch_buffer: 4096,
            max_batch: 1024,
            queue_depth: 4096,
            cache_bytes: 1 << 30,
        }
    }
}

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    /// Last durable revision.
    revision: AtomicU64,
    /// Highest revision whose history has been dropped.
    compacted: AtomicU64,
    hub: Mutex<Hub>,
}

impl Shared {
    fn publish(&self, revision: u64, events: &[Event]) {
        // A poisoned hub means a publish panicked; the lock's data is still consistent
        // (retain either removed a watcher or not), so keep serving.
        let mut hub = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        hub.publish(revision, events);
    }

    fn hub_close(&self) {
        let mut hub = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        hub.close();
    }
}

/// Where a store keeps its data: the embedded redb file, or an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `embedded`: `store.redb` in the server's data dir.
    Embedded,
    /// `etcd://host:port[,host:port...][/prefix]`, or `etcds://` with TLS files.
    Etcd(EtcdConfig),
}

impl std::str::FromStr for Backend {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "" | "embedded" => Ok(Backend::Embedded),
            s if s.starts_with("etcd://")
                || s.starts_with("etcds://")
                || s.starts_with("etcd+https://") =>
            {
                Ok(Backend::Etcd(EtcdConfig::parse(s)?))
            }
            s => Err(StoreError::BadLocation(format!(
                "{s}: expected `embedded`, etcd://host:port[,host:port...][/prefix] or etcds://...?cacert=FILE[&cert=FILE&key=FILE]"
            ))),
        }
    }
}

/// A handle on an open store. Cheap to clone; the store closes when the last handle is
/// dropped or [`Store::close`]d.
#[derive(Clone)]
pub struct Store {
    backend: Imp,
}

/// The two implementations of the one contract.
#[derive(Clone)]
enum Imp {
    Embedded(Arc<Inner>),
    Etcd(etcd::EtcdStore),
}

struct Inner {
    db: Arc<Database>,
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    watch_buffer: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.current_revision())
            .field("compacted", &self.compacted_revision())
            .finish()
    }
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the store at `path`, restoring its revision, compacted revision and
    /// keys, and starts its writer thread. Blocking: call it at startup or in `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(db_err("open database"))?;
        let (revision, compacted) = init_tables(&db)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            hub: Mutex::new(Hub::new(revision)),
        });
        let (requests, rx) = mpsc::channel(options.queue_depth.max(1));
        let writer = {
            let db = db.clone();
            let shared = shared.clone();
            let max_batch = options.max_batch.max(1);
            let retain = options.retain_revisions;
            std::thread::Builder::new()
                .name("ferry-store-writer".into())
                .spawn(move || writer::run(db, shared, rx, max_batch, retain))
                .map_err(|_| StoreError::Internal("cannot spawn the writer thread"))?
        };
        tracing::info!(revision, compacted, "store opened");
        Ok(Store {
            backend: Imp::Embedded(Arc::new(Inner {
                db,
                requests,
                shared,
                writer: Some(writer),
                watch_buffer: options.watch_buffer,
            })),
        })
    }

    /// Connects to an etcd cluster (see [`EtcdConfig`]) and reads its revision; fails with
    /// `Unavailable` if no member answers. `retain_revisions`, `max_batch` and
    /// `queue_depth` do not apply (etcd compacts by its own `--auto-compaction-*` flags);
    /// `watch_buffer` bounds each watch's undelivered events.
    pub async fn connect_etcd(config: EtcdConfig, options: StoreOptions) -> Result<Store> {
        Ok(Store {
            backend: Imp::Etcd(etcd::EtcdStore::connect(config, &options).await?),
        })
    }

    /// Creates `key`; `AlreadyExists` if present.
    pub async fn create(
        &self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> Result<KeyValue> {
        self.single(Op::Create {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    /// Replaces the value of an existing `key`. With `expected_mod_revision`, only if the key
    /// is still at that revision (`Conflict` otherwise): the API server's optimistic lock.
    pub async fn update(
        &self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
        expected_mod_revision: Option<u64>,
    ) -> Result<KeyValue> {
        self.single(Op::Update {
            key: key.into(),
            value: value.into(),
            expected_mod_revision,
        })
        .await
    }

    /// Deletes `key`, returning its last value with `mod_revision` = the delete's revision.
    pub async fn delete(
        &self,
        key: impl Into<String>,
        expected_mod_revision: Option<u64>,
    ) -> Result<KeyValue> {
        self.single(Op::Delete {
            key: key.into(),
            expected_mod_revision,
        })
        .await
    }

    /// Applies all `ops` atomically under one new revision, or none of them: the first failed
    /// precondition is returned and nothing is written. Results follow the order of `ops`.
    /// A key may appear only once (`DuplicateKey`). An empty txn writes nothing and takes no
    /// revision.
    ///
    /// Resolves only once the write is durable. Dropping the future does not withdraw a write
    /// already queued.
    pub async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>> {
        let inner = match &self.backend {
            Imp::Embedded(inner) => inner,
            Imp::Etcd(etcd) => return etcd.txn(ops).await,
        };
        let (reply, rx) = oneshot::channel();
        inner
            .requests
            .send(Request::Write { ops, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn single(&self, op: Op) -> Result<KeyValue> {
        self.txn(vec![op])
            .await?
            .pop()
            .ok_or(StoreError::Internal("a one-op txn returned no result"))
    }

    /// The current value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let inner = match &self.backend {
            Imp::Embedded(inner) => inner,
            Imp::Etcd(etcd) => return etcd.get(key).await,
        };
        let db = inner.db.clone();
        let key = key.to_owned();
        blocking(move || {
            let txn = db.begin_read().map_err(db_err("begin read"))?;
            let objects = txn.open_table(OBJECTS).map_err(db_err("open objects"))?;
            match redb::ReadableTable::get(&objects, key.as_str()).map_err(db_err("read object"))? {
                Some(g) => Ok(Some(codec::decode_object(&key, g.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Every key under `prefix`, sorted, from one snapshot, with that snapshot's revision
    /// (start a watch from it to follow on without a gap).
    pub async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let inner = match &self.backend {
            Imp::Embedded(inner) => inner,
            Imp::Etcd(etcd) => return etcd.list(prefix).await,
        };
        let db = inner.db.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let txn = db.begin_read().map_err(db_err("begin read"))?;
            let meta = txn.open_table(META).map_err(db_err("open meta"))?;
            let revision = redb::ReadableTable::get(&meta, REVISION)
                .map_err(db_err("read revision"))?
                .map_or(0, |g| g.value());
            let objects = txn.open_table(OBJECTS).map_err(db_err("open objects"))?;
            let mut out = Vec::new();
            let rows = redb::ReadableTable::range::<&str>(&objects, prefix.as_str()..)
                .map_err(db_err("list objects"))?;
            for row in rows {
                let (key, value) = row.map_err(db_err("list objects"))?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(codec::decode_object(key, value.value())?);
            }
            Ok((out, revision))
        })
        .await
    }

    /// The last durable revision (0 for an empty store). On etcd: the newest revision this
    /// handle has seen (its writes, lists and watch events).
    pub fn current_revision(&self) -> u64 {
        match &self.backend {
            Imp::Embedded(inner) => inner.shared.revision.load(Ordering::SeqCst),
            Imp::Etcd(etcd) => etcd.current_revision(),
        }
    }

    /// The highest revision whose history is gone; watches must start at or after it.
    pub fn compacted_revision(&self) -> u64 {
        match &self.backend {
            Imp::Embedded(inner) => inner.shared.compacted.load(Ordering::SeqCst),
            Imp::Etcd(etcd) => etcd.compacted_revision(),
        }
    }

    /// Drops the change history up to and including `revision` (objects are untouched), so the
    /// log stays bounded. Returns the compacted revision, which never moves backwards.
    /// `FutureRevision` if `revision` is past the current one.
    pub async fn compact(&self, revision: u64) -> Result<u64> {
        let inner = match &self.backend {
            Imp::Embedded(inner) => inner,
            Imp::Etcd(etcd) => return etcd.compact(revision).await,
        };
        let (reply, rx) = oneshot::channel();
        inner
            .requests
            .send(Request::Compact { revision, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Every change under `prefix` with a revision greater than `after_revision`, in revision
    /// order, never skipping one: first the durable history, then live commits (only once
    /// durable). `Compacted` if that history is gone. See [`Watch`] for how a watch ends.
    /// Must be called inside a tokio runtime.
    pub async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch> {
        let inner = match &self.backend {
            Imp::Embedded(inner) => inner,
            Imp::Etcd(etcd) => return etcd.watch(prefix, after_revision).await,
        };
        let compacted = self.compacted_revision();
        if after_revision < compacted {
            return Err(StoreError::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        watch::start(
            &inner.shared.hub,
            Arc::downgrade(&inner.db),
            prefix,
            after_revision,
            inner.watch_buffer,
        )
    }

    /// Closes the store if this is the last handle: waits for queued writes to commit and the
    /// writer to stop, ends every watch, and releases the file (a watch still mid-replay holds
    /// it until its current chunk is read). With other handles alive this only drops this one.
    pub async fn close(self) -> Result<()> {
        let inner = match self.backend {
            Imp::Embedded(inner) => inner,
            // The last handle's drop ends the watches; nothing is buffered here.
            Imp::Etcd(_) => return Ok(()),
        };
        let Ok(inner) = Arc::try_unwrap(inner) else {
            return Ok(());
        };
        let Inner {
            db,
            requests,
            writer,
            ..
        } = inner;
        drop(requests);
        if let Some(writer) = writer {
            blocking(move || {
                writer
                    .join()
                    .map_err(|_| StoreError::Internal("the writer thread panicked"))
            })
            .await?;
        }
        drop(db);
        Ok(())
    }
}

/// Creates missing tables and reads the persisted revisions.
fn init_tables(db: &Database) -> Result<(u64, u64)> {
    let txn = db.begin_write().map_err(db_err("begin write"))?;
    let revisions = {
        txn.open_table(OBJECTS).map_err(db_err("create objects"))?;
        txn.open_table(LOG).map_err(db_err("create log"))?;
        let meta = txn.open_table(META).map_err(db_err("create meta"))?;
        let read = |name| -> Result<u64> {
            Ok(redb::ReadableTable::get(&meta, name)
                .map_err(db_err("read meta"))?
                .map_or(0, |g| g.value()))
        };
        (read(REVISION)?, read(COMPACTED)?)
    };
    txn.commit().map_err(db_err("commit table creation"))?;
    Ok(revisions)
}

/// Runs blocking redb work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Closed),
    }
}

#[cfg(test)]
mod tests;
