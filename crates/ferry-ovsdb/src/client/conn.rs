//! One connection: open it (leader check, schema, monitor), read and write it, answer
//! echo, apply notifications to the mirror, and the supervisor that reconnects.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{Inner, MONITOR_ID, MonitorMethod, Resume, SERVER_MONITOR_ID, ZERO_TXN, lock, millis};
use crate::error::{Error, Result};
use crate::remote::{BoxRead, BoxWrite, Remote};
use ferry_ovsdb_wire::schema::Schema;
use ferry_ovsdb_wire::{Framer, Mirror, Shape};

enum Pending {
    Call {
        method: String,
        tx: oneshot::Sender<Result<Value>>,
    },
    /// The monitor reply is applied to the mirror by the reader itself, before any later
    /// notification, then acknowledged.
    Monitor {
        method: MonitorMethod,
        tx: oneshot::Sender<Result<()>>,
    },
    /// Our keep-alive echo: the reply is only proof of life.
    Echo,
}

pub(super) struct Conn {
    remote: String,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<(bool, HashMap<u64, Pending>)>,
    next_id: AtomicU64,
    last_rx: Mutex<Instant>,
    closed: AtomicBool,
    /// The uuid of our database's row in `_Server`'s `Database` table, when the server
    /// is the leader of a clustered database and we watch it (see [`check_leader`]).
    server_row: Mutex<Option<String>>,
}

impl Conn {
    fn register(&self, p: Pending) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut g = lock(&self.pending);
        if g.0 {
            return None;
        }
        g.1.insert(id, p);
        Some(id)
    }

    fn send(&self, id: u64, method: &str, params: &Value) -> bool {
        let msg = json!({"id": id, "method": method, "params": params});
        match serde_json::to_vec(&msg) {
            Ok(bytes) => self.tx.send(bytes).is_ok(),
            Err(_) => false,
        }
    }

    pub(super) async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let lost = || Error::ConnectionLost {
            method: method.to_owned(),
        };
        let (tx, rx) = oneshot::channel();
        let id = self
            .register(Pending::Call {
                method: method.to_owned(),
                tx,
            })
            .ok_or_else(lost)?;
        if !self.send(id, method, &params) {
            lock(&self.pending).1.remove(&id);
            return Err(lost());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                lock(&self.pending).1.remove(&id);
                Err(Error::Timeout {
                    method: method.to_owned(),
                    timeout_ms: millis(timeout),
                })
            }
        }
    }

    pub(super) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed)
    }

    /// Fails every request in flight; later ones fail at once.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let drained: Vec<Pending> = {
            let mut g = lock(&self.pending);
            g.0 = true;
            g.1.drain().map(|(_, p)| p).collect()
        };
        for p in drained {
            match p {
                Pending::Call { method, tx } => {
                    let _ = tx.send(Err(Error::ConnectionLost { method }));
                }
                Pending::Monitor { method, tx } => {
                    let _ = tx.send(Err(Error::ConnectionLost {
                        method: method.name().to_owned(),
                    }));
                }
                Pending::Echo => {}
            }
        }
    }
}

/// Runs connections one after the other until shutdown.
pub(super) async fn supervise(inner: Arc<Inner>) {
    let mut backoff = inner.config.backoff_min;
    let mut shutdown = inner.shutdown.clone();
    let mut start = 0usize;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // A member that answered "not the leader" means the cluster lives and is
        // (re)electing: poll at the shortest interval instead of backing off, so that
        // the new leader is found within one interval of its election.
        let mut saw_member = false;
        match establish(&inner, &mut start, &mut saw_member).await {
            Ok(live) => {
                backoff = inner.config.backoff_min;
                let remote = live.conn.remote.clone();
                let why = run(&inner, live).await;
                inner.conn.send_replace(None);
                lock(&inner.status).connected = None;
                if *shutdown.borrow() {
                    break;
                }
                warn!(%remote, reason = %why, "OVSDB connection lost; reconnecting");
                lock(&inner.status).last_error = Some(why);
            }
            Err(e) => {
                debug!(error = %e, "OVSDB connect failed");
                let why = match e {
                    Error::NoUsableRemote { last, .. } => last,
                    e => e.to_string(),
                };
                lock(&inner.status).last_error = Some(why);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        backoff = if saw_member {
            inner.config.backoff_min
        } else {
            (backoff * 2).min(inner.config.backoff_max)
        };
    }
    inner.conn.send_replace(None);
    debug!("OVSDB client stopped");
}

struct Live {
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<String>,
    writer: tokio::task::JoinHandle<String>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.conn.close();
    }
}

/// Tries each remote once, starting at `start`; returns the first usable connection with
/// its monitor in place. Sets `saw_member` when a remote refused only because it is not
/// the leader of its clustered database.
async fn establish(inner: &Arc<Inner>, start: &mut usize, saw_member: &mut bool) -> Result<Live> {
    let n = inner.remotes.len();
    let mut last = String::new();
    for k in 0..n {
        let i = (*start + k) % n;
        let remote = &inner.remotes[i];
        match open(inner, remote).await {
            Ok(live) => {
                *start = i;
                return Ok(live);
            }
            Err(e) => {
                debug!(%remote, error = %e, "remote not usable");
                *saw_member |= matches!(e, Error::NotLeader { .. });
                last = e.to_string();
            }
        }
    }
    *start = (*start + 1) % n;
    Err(Error::NoUsableRemote {
        remotes: inner.config.remotes.clone(),
        last,
    })
}

async fn open(inner: &Arc<Inner>, remote: &Remote) -> Result<Live> {
    let (r, w) = remote.connect(inner.config.tls.as_ref()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        remote: remote.to_string(),
        tx,
        pending: Mutex::new((false, HashMap::new())),
        next_id: AtomicU64::new(1),
        last_rx: Mutex::new(Instant::now()),
        closed: AtomicBool::new(false),
        server_row: Mutex::new(None),
    });
    let live = Live {
        reader: tokio::spawn(read_loop(inner.clone(), conn.clone(), r)),
        writer: tokio::spawn(write_loop(w, rx)),
        conn,
    };
    let mut live = live;
    let started = match set_up(inner, &live.conn).await {
        Ok(started) => started,
        // Say why the server hung up (over `ssl:`, a TLS 1.3 server refuses our
        // certificate only after our side of the handshake is done, with an alert).
        Err(Error::ConnectionLost { method }) => {
            let why = match tokio::time::timeout(Duration::from_millis(500), &mut live.reader).await
            {
                Ok(Ok(why)) => why,
                _ => "unknown reason".to_owned(),
            };
            return Err(Error::Dropped {
                remote: live.conn.remote.clone(),
                method,
                reason: why,
            });
        }
        Err(e) => return Err(e),
    };
    let conn = &live.conn;
    {
        let mut st = lock(&inner.status);
        st.connected = Some(conn.remote.clone());
        st.connects += 1;
        if let Some((method, resume)) = started {
            st.monitor_method = Some(method);
            st.last_resume = Some(resume);
        }
    }
    info!(remote = %conn.remote, ?started, "OVSDB connected");
    inner.conn.send_replace(Some(conn.clone()));
    Ok(live)
}

/// The leader check and the monitor of a new connection.
async fn set_up(inner: &Arc<Inner>, conn: &Conn) -> Result<Option<(MonitorMethod, Resume)>> {
    let timeout = inner.config.request_timeout;
    let db = &inner.config.database;
    if inner.config.leader_only {
        check_leader(conn, db, timeout).await?;
    }
    if inner.config.monitor.is_empty() {
        return Ok(None);
    }
    let schema_json = conn.call("get_schema", json!([db]), timeout).await?;
    let schema = Schema::parse(&schema_json)?;
    Ok(Some(start_monitor(inner, conn, schema).await?))
}

/// For a clustered database, refuses a server that is not the connected leader, and
/// keeps watching it: like ovsdb-idl with leader-only, a `monitor` of `_Server`'s
/// `Database` table tells us when this server stops being the leader (an election after
/// a partition, a leadership transfer), and [`handle`] then drops the connection so that
/// the supervisor looks for the new leader. A server without `_Server` (very old) is
/// taken as standalone.
async fn check_leader(conn: &Conn, db: &str, timeout: Duration) -> Result<()> {
    let params = json!(["_Server", SERVER_MONITOR_ID,
        {"Database": {"columns": ["name", "model", "leader", "connected"]}}]);
    let reply = match conn.call("monitor", params, timeout).await {
        Ok(r) => r,
        Err(Error::Rpc { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let rows = reply
        .get("Database")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(uuid, change)| Some((uuid, change.get("new")?)));
    let Some((uuid, row)) = rows
        .into_iter()
        .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(db))
    else {
        return Err(Error::Protocol(format!(
            "{}: database {db} not served",
            conn.remote
        )));
    };
    match raft_role(row) {
        RaftRole::Standalone => Ok(()),
        RaftRole::Leader => {
            *lock(&conn.server_row) = Some(uuid.clone());
            Ok(())
        }
        RaftRole::NotLeader { leader, connected } => Err(Error::NotLeader {
            remote: conn.remote.clone(),
            db: db.to_owned(),
            leader,
            connected,
        }),
    }
}

/// What a `_Server` `Database` row says about the server's copy of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RaftRole {
    /// Not clustered (standalone or relay): any server will do.
    Standalone,
    /// Clustered, and this server is the leader and connected to the cluster.
    Leader,
    /// Clustered, and this server is a follower, or cut off from the cluster.
    NotLeader { leader: bool, connected: bool },
}

/// Reads the role out of a `_Server` `Database` row (full row, or the new values of a
/// `monitor` update; a missing `model` means the row did not change it: clustered,
/// since only clustered rows change their leader or connected columns).
pub(super) fn raft_role(row: &Value) -> RaftRole {
    let model = row.get("model").and_then(Value::as_str);
    if model.is_some_and(|m| m != "clustered") {
        return RaftRole::Standalone;
    }
    let leader = row.get("leader") == Some(&Value::Bool(true));
    let connected = row.get("connected") == Some(&Value::Bool(true));
    if leader && connected {
        RaftRole::Leader
    } else {
        RaftRole::NotLeader { leader, connected }
    }
}

/// A `_Server` update for the connection's database row: fails (and so drops the
/// connection) when the server is no longer the connected leader.
fn check_server_update(conn: &Conn, db: &str, updates: &Value) -> Result<()> {
    let Some(uuid) = lock(&conn.server_row).clone() else {
        return Ok(());
    };
    let Some(change) = updates.get("Database").and_then(|t| t.get(&uuid)) else {
        return Ok(());
    };
    let role = match change.get("new") {
        Some(new) => raft_role(new),
        None => RaftRole::NotLeader {
            leader: false,
            connected: false,
        },
    };
    match role {
        RaftRole::Leader | RaftRole::Standalone => Ok(()),
        RaftRole::NotLeader { leader, connected } => Err(Error::NotLeader {
            remote: conn.remote.clone(),
            db: db.to_owned(),
            leader,
            connected,
        }),
    }
}

async fn start_monitor(
    inner: &Arc<Inner>,
    conn: &Conn,
    schema: Schema,
) -> Result<(MonitorMethod, Resume)> {
    let db = &inner.config.database;
    let mut columns = BTreeMap::new();
    let mut requests = serde_json::Map::new();
    for (table, cols) in &inner.config.monitor {
        let Some(known) = schema.tables.get(table) else {
            return Err(Error::Schema {
                db: db.clone(),
                reason: format!("monitored table {table} does not exist"),
            });
        };
        let cols: Vec<String> = if cols.is_empty() {
            known.keys().cloned().collect()
        } else {
            cols.clone()
        };
        if let Some(c) = cols.iter().find(|c| !known.contains_key(*c)) {
            return Err(Error::Schema {
                db: db.clone(),
                reason: format!("monitored column {table}.{c} does not exist"),
            });
        }
        requests.insert(table.clone(), json!([{ "columns": cols }]));
        columns.insert(table.clone(), cols);
    }
    let shape = Arc::new(Shape { schema, columns });
    // The mirror gets the new shape now; its rows stay until the reply says whether they
    // can be kept.
    let last_txn = {
        let mut m = inner
            .mirror
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.set_shape(shape);
        m.last_txn_id().map(str::to_owned)
    };

    let mut method = inner
        .config
        .monitor_method
        .unwrap_or(MonitorMethod::CondSince);
    let remembered = lock(&inner.status).monitor_method;
    if inner.config.monitor_method.is_none()
        && let Some(r) = remembered
    {
        method = r;
    }
    loop {
        let params = match method {
            MonitorMethod::CondSince => json!([
                db,
                MONITOR_ID,
                requests,
                last_txn.as_deref().unwrap_or(ZERO_TXN)
            ]),
            _ => json!([db, MONITOR_ID, requests]),
        };
        let (tx, rx) = oneshot::channel();
        let id = conn
            .register(Pending::Monitor { method, tx })
            .ok_or_else(|| Error::ConnectionLost {
                method: method.name().to_owned(),
            })?;
        if !conn.send(id, method.name(), &params) {
            return Err(Error::ConnectionLost {
                method: method.name().to_owned(),
            });
        }
        let reply = tokio::time::timeout(inner.config.request_timeout, rx).await;
        match reply {
            Ok(Ok(Ok(()))) => {
                let resume = lock(&inner.status).last_resume.unwrap_or(Resume::Snapshot);
                return Ok((method, resume));
            }
            Ok(Ok(Err(Error::Rpc { error, .. })))
                if inner.config.monitor_method.is_none()
                    && error.to_string().contains("unknown method")
                    && method.fallback().is_some() =>
            {
                info!(
                    method = method.name(),
                    "server lacks monitor method; falling back"
                );
                method = method.fallback().unwrap_or(MonitorMethod::Plain);
            }
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => {
                return Err(Error::ConnectionLost {
                    method: method.name().to_owned(),
                });
            }
            Err(_) => {
                return Err(Error::Timeout {
                    method: method.name().to_owned(),
                    timeout_ms: millis(inner.config.request_timeout),
                });
            }
        }
    }
}

/// Serves a ready connection until it dies; returns why.
async fn run(inner: &Arc<Inner>, mut live: Live) -> String {
    let interval = inner.config.echo_interval;
    let probed = needs_probes(&live.conn.remote);
    let mut shutdown = inner.shutdown.clone();
    let mut tick = tokio::time::interval(interval);
    // After a stall, one late tick and then a full interval: the reader gets to run.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_tick = Instant::now();
    // Since when this task could hear the server (see `server_silent`).
    let mut listening_since = last_tick;
    loop {
        tokio::select! {
            r = &mut live.reader => return r.unwrap_or_else(|e| e.to_string()),
            r = &mut live.writer => return r.unwrap_or_else(|e| e.to_string()),
            _ = shutdown.wait_for(|s| *s) => return "shutdown".into(),
            _ = tick.tick() => {
                let now = Instant::now();
                if stalled(now.duration_since(last_tick), interval) {
                    listening_since = now;
                }
                last_tick = now;
                if !probed {
                    continue;
                }
                let idle = lock(&live.conn.last_rx).elapsed();
                if server_silent(idle, now.duration_since(listening_since), interval) {
                    return format!("no message from server for {} ms", idle.as_millis());
                }
                if let Some(id) = live.conn.register(Pending::Echo) {
                    live.conn.send(id, "echo", &json!([]));
                }
            }
        }
    }
}

/// Whether a connection to `remote` needs inactivity probes (OVS's rule,
/// `stream_or_pstream_needs_probes`): a `unix:` socket does not, since the kernel reports
/// a peer that died, and a silent one is busy. At 10,000 services x 20 the NB server spent
/// 20-40 s in single polls; clients that dropped it then asked for 200,000-row snapshots,
/// which kept it busy for the next ones.
fn needs_probes(remote: &str) -> bool {
    !remote.starts_with("unix:")
}

/// Whether a tick that came `since_last` after the previous one shows that this process
/// stalled (a runtime busy elsewhere): the server's messages may then be waiting unread.
fn stalled(since_last: Duration, interval: Duration) -> bool {
    since_last > interval + interval / 2
}

/// Whether the server is silent: no message for two echo intervals, counted only over
/// the time this task was listening (`listening`, restarted after a stall). A standby
/// controller whose runtime was busy for 30 s otherwise dropped a healthy connection
/// and reloaded 200,000 ports from a snapshot just as it took over.
fn server_silent(idle: Duration, listening: Duration, interval: Duration) -> bool {
    idle.min(listening) > interval * 2
}

async fn write_loop(mut w: BoxWrite, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) -> String {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = w.write_all(&bytes).await {
            return format!("write failed: {e}");
        }
    }
    "writer closed".into()
}

async fn read_loop(inner: Arc<Inner>, conn: Arc<Conn>, mut r: BoxRead) -> String {
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 256 * 1024];
    let why = loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => break "server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read failed: {e}"),
        };
        *lock(&conn.last_rx) = Instant::now();
        framer.push(&buf[..n]);
        let msgs = match framer.drain() {
            Ok(m) => m,
            Err(e) => break e.to_string(),
        };
        let mut failed = None;
        for msg in msgs {
            if let Err(e) = handle(&inner, &conn, msg) {
                failed = Some(e.to_string());
                break;
            }
        }
        if let Some(why) = failed {
            break why;
        }
    };
    conn.close();
    why
}

fn handle(inner: &Inner, conn: &Conn, msg: Value) -> Result<()> {
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        return match method {
            "echo" => {
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                let reply = json!({"id": id, "result": params, "error": null});
                if let Ok(bytes) = serde_json::to_vec(&reply) {
                    let _ = conn.tx.send(bytes);
                }
                Ok(())
            }
            "update3" => {
                let txn = params.get(1).and_then(Value::as_str).map(str::to_owned);
                apply(inner, |m| {
                    m.apply_update2(params.get(2).unwrap_or(&Value::Null))?;
                    m.set_last_txn_id(txn);
                    Ok(())
                })
            }
            "update2" => apply(inner, |m| {
                Ok(m.apply_update2(params.get(1).unwrap_or(&Value::Null))?)
            }),
            "update" if params.get(0).and_then(Value::as_str) == Some(SERVER_MONITOR_ID) => {
                check_server_update(
                    conn,
                    &inner.config.database,
                    params.get(1).unwrap_or(&Value::Null),
                )
            }
            "update" => apply(inner, |m| {
                Ok(m.apply_update1(params.get(1).unwrap_or(&Value::Null))?)
            }),
            other => {
                debug!(method = other, "ignoring notification");
                Ok(())
            }
        };
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        return Ok(());
    };
    let Some(pending) = lock(&conn.pending).1.remove(&id) else {
        return Ok(());
    };
    let error = msg.get("error").filter(|e| !e.is_null()).cloned();
    let result = msg.get("result").cloned().unwrap_or(Value::Null);
    match pending {
        Pending::Echo => {}
        Pending::Call { method, tx } => {
            let r = match error {
                Some(error) => Err(Error::Rpc { method, error }),
                None => Ok(result),
            };
            let _ = tx.send(r);
        }
        Pending::Monitor { method, tx } => {
            let rpc_error = error.is_some();
            let r = match error {
                Some(error) => Err(Error::Rpc {
                    method: method.name().to_owned(),
                    error,
                }),
                None => apply_monitor_reply(inner, method, &result),
            };
            // A reply that could not be applied leaves the mirror inconsistent: drop the
            // connection. An RPC error (e.g. unknown method) is not fatal.
            let fatal = !rpc_error && r.is_err();
            let why = r.as_ref().err().map(ToString::to_string);
            let _ = tx.send(r);
            if let (true, Some(why)) = (fatal, why) {
                return Err(Error::Protocol(why));
            }
        }
    }
    Ok(())
}

fn apply_monitor_reply(inner: &Inner, method: MonitorMethod, result: &Value) -> Result<()> {
    let mut resume = Resume::Snapshot;
    apply(inner, |m| match method {
        MonitorMethod::CondSince => {
            let found = result.get(0).and_then(Value::as_bool).unwrap_or(false);
            let txn = result.get(1).and_then(Value::as_str).map(str::to_owned);
            if found {
                resume = Resume::Changes;
            } else {
                m.clear();
            }
            m.apply_update2(result.get(2).unwrap_or(&Value::Null))?;
            m.set_last_txn_id(txn);
            Ok(())
        }
        MonitorMethod::Cond => {
            m.clear();
            m.set_last_txn_id(None);
            Ok(m.apply_update2(result)?)
        }
        MonitorMethod::Plain => {
            m.clear();
            m.set_last_txn_id(None);
            Ok(m.apply_update1(result)?)
        }
    })?;
    lock(&inner.status).last_resume = Some(resume);
    Ok(())
}

fn apply(inner: &Inner, f: impl FnOnce(&mut Mirror) -> Result<()>) -> Result<()> {
    {
        let mut m = inner
            .mirror
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut m)?;
    }
    inner.generation.send_modify(|g| *g += 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_judged_only_on_time_the_client_listened() {
        let s = Duration::from_secs;
        let i = s(5);
        // (idle since the last message, listening for, silent?)
        let cases = [
            (s(4), s(100), false),
            (s(11), s(100), true),
            // The process stalled 31 s and has just resumed: the reader has not run yet.
            (s(31), s(0), false),
            (s(31), s(9), false),
            // Still nothing one interval after the stall plus one: the server is gone.
            (s(42), s(11), true),
        ];
        for (idle, listening, want) in cases {
            assert_eq!(
                server_silent(idle, listening, i),
                want,
                "{idle:?} {listening:?}"
            );
        }
        assert!(needs_probes("tcp:127.0.0.1:6641"));
        assert!(needs_probes("ssl:10.0.0.1:6641"));
        assert!(!needs_probes("unix:/run/ovn/ovnnb_db.sock"));
        assert!(!stalled(s(5), i));
        assert!(!stalled(Duration::from_millis(7400), i));
        assert!(stalled(s(31), i));
    }

    #[test]
    fn raft_role_of_server_rows() {
        let cases = [
            (
                "standalone",
                json!({"name": "OVN_Northbound", "model": "standalone", "leader": true, "connected": true}),
                RaftRole::Standalone,
            ),
            (
                "clustered leader",
                json!({"name": "OVN_Northbound", "model": "clustered", "leader": true, "connected": true}),
                RaftRole::Leader,
            ),
            (
                "clustered follower",
                json!({"name": "OVN_Northbound", "model": "clustered", "leader": false, "connected": true}),
                RaftRole::NotLeader {
                    leader: false,
                    connected: true,
                },
            ),
            (
                "leader cut off from the cluster",
                json!({"model": "clustered", "leader": true, "connected": false}),
                RaftRole::NotLeader {
                    leader: true,
                    connected: false,
                },
            ),
            (
                "update without model: lost leadership",
                json!({"leader": false, "connected": true}),
                RaftRole::NotLeader {
                    leader: false,
                    connected: true,
                },
            ),
        ];
        for (name, row, want) in cases {
            assert_eq!(raft_role(&row), want, "{name}");
        }
    }
}
