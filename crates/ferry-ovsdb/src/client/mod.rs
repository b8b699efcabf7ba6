//! The client: one supervised connection at a time, requests multiplexed over it, a
//! monitor that keeps the [`Mirror`] current, echo in both directions, reconnection with
//! backoff, and resumption with `monitor_cond_since`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span};

use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::tls::TlsConfig;
use ferry_ovsdb_wire::Mirror;

mod conn;

use conn::{Conn, supervise};

const MONITOR_ID: &str = "ferry";
/// The id of our `monitor` of `_Server`'s `Database` table (leader changes).
const SERVER_MONITOR_ID: &str = "ferry-server";
const ZERO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// Which monitor request to use; [`Config::monitor_method`] `None` picks the best the
/// server supports (`monitor_cond_since`, then `monitor_cond`, then `monitor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMethod {
    /// `monitor_cond_since` (update3, resumable).
    CondSince,
    /// `monitor_cond` (update2).
    Cond,
    /// `monitor` (RFC 7047 original, full rows).
    Plain,
}

impl MonitorMethod {
    fn name(self) -> &'static str {
        match self {
            MonitorMethod::CondSince => "monitor_cond_since",
            MonitorMethod::Cond => "monitor_cond",
            MonitorMethod::Plain => "monitor",
        }
    }

    fn fallback(self) -> Option<MonitorMethod> {
        match self {
            MonitorMethod::CondSince => Some(MonitorMethod::Cond),
            MonitorMethod::Cond => Some(MonitorMethod::Plain),
            MonitorMethod::Plain => None,
        }
    }
}

/// How to reach the database and what to mirror.
#[derive(Debug, Clone)]
pub struct Config {
    /// `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`, tried in order; for a clustered
    /// database the leader is preferred.
    pub remotes: Vec<String>,
    /// Key, certificate and CA certificate for `ssl:` remotes (required by them, unused
    /// by the others).
    pub tls: Option<TlsConfig>,
    /// The database to monitor (e.g. `OVN_Northbound`).
    pub database: String,
    /// Tables to mirror, each with the columns to mirror (empty = every column).
    /// An empty map mirrors nothing.
    pub monitor: BTreeMap<String, Vec<String>>,
    /// Force a monitor method instead of the best supported one.
    pub monitor_method: Option<MonitorMethod>,
    /// Connect only to the RAFT leader of a clustered database (like ovsdb-idl's default).
    pub leader_only: bool,
    /// How long a request waits for a connection and then for its reply.
    pub request_timeout: Duration,
    /// How often we send our own echo; the connection is dropped when nothing at all was
    /// received for two intervals.
    pub echo_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Config {
    /// Defaults: leader only, 30 s request timeout, 5 s echo, backoff 100 ms .. 8 s.
    pub fn new<S: Into<String>>(
        remotes: impl IntoIterator<Item = S>,
        database: impl Into<String>,
    ) -> Config {
        Config {
            remotes: remotes.into_iter().map(Into::into).collect(),
            tls: None,
            database: database.into(),
            monitor: BTreeMap::new(),
            monitor_method: None,
            leader_only: true,
            request_timeout: Duration::from_secs(30),
            echo_interval: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(8),
        }
    }

    /// Adds a table to mirror (no columns = every column).
    pub fn monitor_table(mut self, table: &str, columns: &[&str]) -> Config {
        self.monitor.insert(
            table.to_owned(),
            columns.iter().map(|c| (*c).to_owned()).collect(),
        );
        self
    }

    /// Sets the TLS material for `ssl:` remotes.
    pub fn with_tls(mut self, tls: TlsConfig) -> Config {
        self.tls = Some(tls);
        self
    }
}

/// How the last monitor was (re)established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// `monitor_cond_since` found our last transaction id: only the changes were sent.
    Changes,
    /// A full snapshot replaced the mirror.
    Snapshot,
}

/// Connection state, for health reporting and tests.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The remote currently connected, if any.
    pub connected: Option<String>,
    /// Successful connections so far (1 after the first, +1 per reconnect).
    pub connects: u64,
    /// The monitor method in use.
    pub monitor_method: Option<MonitorMethod>,
    /// How the last monitor started.
    pub last_resume: Option<Resume>,
    /// The last connection error.
    pub last_error: Option<String>,
}

/// A handle to the supervised connection; cheap to clone. The connection is closed when
/// the last handle is dropped (or on [`Client::shutdown`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _guard: Arc<ShutdownGuard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("database", &self.inner.config.database)
            .field("status", &*lock(&self.inner.status))
            .finish()
    }
}

struct ShutdownGuard(watch::Sender<bool>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

struct Inner {
    config: Config,
    remotes: Vec<Remote>,
    conn: watch::Sender<Option<Arc<Conn>>>,
    mirror: RwLock<Mirror>,
    generation: watch::Sender<u64>,
    status: Mutex<Status>,
    shutdown: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl Client ===

impl Client {
    /// Starts the connection supervisor and waits (up to `request_timeout`) until the first
    /// connection is ready and, if tables are monitored, the mirror holds their contents.
    /// The client keeps reconnecting in the background after that.
    pub async fn connect(config: Config) -> Result<Client> {
        let timeout = config.request_timeout;
        let client = Client::start(config)?;
        let mut rx = client.inner.conn.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::NoUsableRemote {
                remotes: client.inner.config.remotes.clone(),
                last: lock(&client.inner.status)
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "timed out".into()),
            }),
        }
    }

    /// Starts the supervisor without waiting for a connection (requests wait for one).
    /// Fails only on a malformed remote, or an `ssl:` remote without usable TLS material
    /// (which is read and parsed here once, so that a wrong path fails at once instead of
    /// in every reconnect). Must be called inside a tokio runtime.
    pub fn start(config: Config) -> Result<Client> {
        let remotes = config
            .remotes
            .iter()
            .map(|r| Remote::parse(r))
            .collect::<Result<Vec<_>>>()?;
        if remotes.is_empty() {
            return Err(Error::InvalidRemote {
                remote: String::new(),
                reason: "no remote given",
            });
        }
        if let Some(ssl) = remotes.iter().find(|r| r.is_ssl()) {
            match &config.tls {
                None => {
                    return Err(Error::TlsNotConfigured {
                        remote: ssl.to_string(),
                    });
                }
                Some(tls) => {
                    tls.client_config()?;
                }
            }
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            remotes,
            conn: watch::Sender::new(None),
            mirror: RwLock::new(Mirror::default()),
            generation: watch::Sender::new(0),
            status: Mutex::new(Status::default()),
            shutdown: shutdown_rx,
        });
        let span = info_span!("ovsdb", db = %inner.config.database);
        tokio::spawn(supervise(inner.clone()).instrument(span));
        Ok(Client {
            inner,
            _guard: Arc::new(ShutdownGuard(shutdown_tx)),
        })
    }

    /// Closes the connection and stops reconnecting; later requests fail with
    /// [`Error::Shutdown`].
    pub fn shutdown(&self) {
        self._guard.0.send_replace(true);
    }

    /// Sends any JSON-RPC request (e.g. `lock`, `unlock`) and returns its `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let conn = self.ready_conn(method).await?;
        conn.call(method, params, self.inner.config.request_timeout)
            .await
    }

    /// `list_dbs`.
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let v = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(v).map_err(|e| Error::Protocol(format!("list_dbs reply: {e}")))
    }

    /// `get_schema`, raw.
    pub async fn get_schema(&self, db: &str) -> Result<Value> {
        self.call("get_schema", json!([db])).await
    }

    /// `transact`: runs `ops` (built with [`crate::wire`]) atomically and returns one
    /// result per operation. A failed operation is [`Error::OpFailed`] with its index; a
    /// failed commit is [`Error::CommitFailed`]. When this returns `Ok` and the changed
    /// tables are monitored, the mirror already shows the changes: ovsdb-server sends the
    /// update notification before the reply, and both are handled in order.
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>> {
        let names: Vec<String> = ops
            .iter()
            .map(|o| {
                o.get("op")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(Value::String(db.to_owned()));
        params.extend(ops);
        let reply = self.call("transact", Value::Array(params)).await?;
        check_transact(db, &names, reply)
    }

    /// [`Client::transact`], retried after connection errors until it gets an answer or
    /// `attempts` are used up. Only for transactions that cannot apply twice: guard them
    /// with a `wait` (timeout 0) or insert with a caller-chosen uuid; a retry of one that
    /// had committed then fails with that guard's error instead of writing again.
    pub async fn transact_retrying(
        &self,
        db: &str,
        ops: Vec<Value>,
        attempts: u32,
    ) -> Result<Vec<Value>> {
        let mut attempt = 1;
        loop {
            match self.transact(db, ops.clone()).await {
                Err(e) if e.is_connection_error() && attempt < attempts => {
                    debug!(attempt, error = %e, "transact retry");
                    attempt += 1;
                    tokio::time::sleep(self.inner.config.backoff_min).await;
                }
                other => return other,
            }
        }
    }

    /// A copy of the mirror.
    pub fn snapshot(&self) -> Mirror {
        self.with_mirror(Mirror::clone)
    }

    /// Reads the mirror without copying it (do not block inside `f`).
    pub fn with_mirror<R>(&self, f: impl FnOnce(&Mirror) -> R) -> R {
        let m = self
            .inner
            .mirror
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&m)
    }

    /// Waits until `pred` holds for the mirror (checked after every applied update), e.g.
    /// until another client's change has arrived.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Mirror) -> bool,
    ) -> Result<()> {
        let mut rx = self.inner.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if self.with_mirror(&mut pred) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => {
                    return Err(Error::WaitTimeout {
                        timeout_ms: millis(timeout),
                    });
                }
            }
        }
    }

    /// Connection state.
    pub fn status(&self) -> Status {
        lock(&self.inner.status).clone()
    }

    async fn ready_conn(&self, method: &str) -> Result<Arc<Conn>> {
        if *self.inner.shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        let mut rx = self.inner.conn.subscribe();
        let timeout = self.inner.config.request_timeout;
        let mut shutdown = self.inner.shutdown.clone();
        tokio::select! {
            // A connection that just died may still be published for a moment: skip it.
            r = tokio::time::timeout(timeout, rx.wait_for(|c| c.as_ref().is_some_and(|c| c.is_open()))) => match r {
                Ok(Ok(c)) => c.clone().ok_or(Error::Shutdown),
                Ok(Err(_)) => Err(Error::Shutdown),
                Err(_) => Err(Error::NotConnected { method: method.to_owned(), timeout_ms: millis(timeout) }),
            },
            _ = shutdown.wait_for(|s| *s) => Err(Error::Shutdown),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Turns a transact reply into per-operation results or the first error.
fn check_transact(db: &str, names: &[String], reply: Value) -> Result<Vec<Value>> {
    let Value::Array(results) = reply else {
        return Err(Error::Protocol("transact reply is not an array".into()));
    };
    for (index, r) in results.iter().enumerate() {
        let Some(error) = r.get("error") else {
            continue;
        };
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        let details = r.get("details").and_then(Value::as_str).map(str::to_owned);
        return Err(match names.get(index) {
            Some(op) => Error::OpFailed {
                db: db.to_owned(),
                index,
                op: op.clone(),
                error,
                details,
            },
            None => Error::CommitFailed {
                db: db.to_owned(),
                error,
                details,
            },
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transact_errors_name_the_operation() {
        let names = vec!["insert".to_owned(), "wait".to_owned()];
        let err = check_transact(
            "NB",
            &names,
            json!([{"uuid": ["uuid", "x"]}, {"error": "timed out", "details": "\"wait\" timed out"}]),
        )
        .expect_err("op error");
        assert!(
            matches!(&err, Error::OpFailed { index: 1, op, error, .. } if op == "wait" && error == "timed out"),
            "{err:?}"
        );
        let err = check_transact(
            "NB",
            &names,
            json!([{}, {}, {"error": "referential integrity violation"}]),
        )
        .expect_err("commit error");
        assert!(matches!(err, Error::CommitFailed { .. }), "{err:?}");
        assert_eq!(
            check_transact("NB", &names, json!([{}, {}]))
                .expect("ok")
                .len(),
            2
        );
    }
}
