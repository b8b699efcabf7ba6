//! The store's contract over an etcd v3 cluster, so several API servers can share one
//! replicated store (`--store etcd://host:port[,host:port...][/prefix]`, or `etcds://...`
//! with TLS: [`EtcdConfig::parse`]).
//!
//! The mapping is etcd's own model, which the embedded store copies: a key's
//! `mod_revision` is its `resourceVersion`, every txn takes one cluster-wide revision,
//! compare-and-swap is a txn comparing `mod_revision`, a list is a range read at one revision
//! (paged, all pages at the first page's revision), and a watch starts after a revision with
//! previous values. It talks to etcd's JSON gateway over HTTP/1.1 with the HTTP client the
//! workspace already has (no gRPC stack), in `client`; `wire` holds the JSON.
//!
//! What differs from the embedded store: a watch ends with [`StoreError::Unavailable`] when
//! its connection breaks (the caller re-lists, as after `WatchLagged`), a write whose outcome
//! is unknown fails with `Unavailable` instead of being retried, and the current revision
//! this handle reports is the newest it has seen (its own writes, lists and watch events),
//! not etcd's: other writers' changes reach it through a watch.

mod client;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use crate::watch::Watch;
use crate::{Event, KeyValue, Op, Result, StoreError, StoreOptions};
use client::{Conn, Retry};
use wire::WatchMessage;

/// Keys read per page of a list, so no answer nears the gateway's message size limit.
const LIST_PAGE: u64 = 500;

/// Where an etcd-backed store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member's client URL.
    pub endpoints: Vec<String>,
    /// Prepended to every key, so several Ferry control planes can share one etcd.
    pub prefix: String,
    /// HTTPS to the members (`etcds://`): the CA their certificates chain to, and the client
    /// certificate etcd's `--client-cert-auth` asks for. `None`: plain HTTP (`etcd://`).
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: PEM files, read when the store connects (etcd's own `--trusted-ca-file`,
/// `--cert-file`, `--key-file` on its side).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// CA certificate(s) the members' certificates must chain to (their names are checked
    /// against the endpoint's host).
    pub ca: std::path::PathBuf,
    /// Client certificate and its private key, both or neither.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl EtcdConfig {
    /// Parses `etcd://host:port[,host:port...][/prefix]`, or the same with `etcds://` (or
    /// `etcd+https://`) and the TLS files as a query:
    /// `etcds://host:port[,...][/prefix]?cacert=CA.pem[&cert=CLIENT.pem&key=CLIENT.key]`.
    pub fn parse(url: &str) -> Result<EtcdConfig> {
        let bad = |why: &str| StoreError::BadLocation(format!("{url}: {why}"));
        let (rest, tls) = if let Some(r) = url.strip_prefix("etcd://") {
            (r, false)
        } else if let Some(r) = url
            .strip_prefix("etcds://")
            .or_else(|| url.strip_prefix("etcd+https://"))
        {
            (r, true)
        } else {
            return Err(bad("must start with etcd:// or etcds://"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(bad("no endpoint"));
        }
        for e in &endpoints {
            let port = e.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none()
                || e.parse::<hyper::Uri>().is_err()
            {
                return Err(bad("each endpoint must be host:port"));
            }
        }
        let tls = match (tls, query) {
            (false, None) => None,
            (false, Some(_)) => return Err(bad("TLS files need etcds://")),
            (true, query) => {
                let mut t = EtcdTls::default();
                let mut ca = None;
                for pair in query
                    .unwrap_or_default()
                    .split('&')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair
                        .split_once('=')
                        .filter(|(_, v)| !v.is_empty())
                        .ok_or_else(|| bad("a query parameter must be NAME=FILE"))?;
                    match k {
                        "cacert" => ca = Some(v.into()),
                        "cert" => t.cert = Some(v.into()),
                        "key" => t.key = Some(v.into()),
                        _ => return Err(bad("query parameters are cacert, cert and key")),
                    }
                }
                t.ca = ca.ok_or_else(|| bad("etcds:// needs ?cacert=FILE"))?;
                if t.cert.is_some() != t.key.is_some() {
                    return Err(bad("cert and key go together"));
                }
                Some(t)
            }
        };
        Ok(EtcdConfig {
            endpoints,
            prefix: prefix.to_owned(),
            tls,
        })
    }
}

/// A handle on an etcd-backed store.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Conn>,
    prefix: String,
    revisions: Arc<Revisions>,
    watch_buffer: usize,
    /// Dropped with the last handle: ends every watch with `None`, as closing the embedded
    /// store does.
    _closed: watch::Sender<()>,
    closed_rx: watch::Receiver<()>,
}

/// The newest revision this handle has seen and the newest compaction it has heard of.
#[derive(Default)]
struct Revisions {
    current: AtomicU64,
    compacted: AtomicU64,
}

impl Revisions {
    fn saw(&self, revision: u64) {
        self.current.fetch_max(revision, Ordering::SeqCst);
    }
}

// === impl EtcdStore ===

impl EtcdStore {
    /// Connects and reads the cluster's revision (failing if no member answers).
    pub(crate) async fn connect(config: EtcdConfig, options: &StoreOptions) -> Result<EtcdStore> {
        let conn = Arc::new(Conn::new(config.endpoints, config.tls.as_ref())?);
        let (closed, closed_rx) = watch::channel(());
        let store = EtcdStore {
            inner: Arc::new(Inner {
                conn,
                prefix: config.prefix,
                revisions: Arc::default(),
                watch_buffer: options.watch_buffer.max(1),
                _closed: closed,
                closed_rx,
            }),
        };
        let answer = store
            .inner
            .conn
            .call(
                "connect",
                wire::RANGE,
                // Any key: only the answer's revision is read (etcd refuses an empty key).
                &wire::range_key(&format!("{}/", store.inner.prefix)),
                Retry::Safe,
            )
            .await?;
        store
            .inner
            .revisions
            .saw(wire::num(&answer["header"]["revision"]));
        tracing::info!(
            revision = store.current_revision(),
            prefix = %store.inner.prefix,
            "etcd store connected"
        );
        Ok(store)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    pub(crate) async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = std::collections::HashSet::new();
        for op in &ops {
            if !keys.insert(op.key()) {
                return Err(StoreError::DuplicateKey {
                    key: op.key().to_owned(),
                });
            }
        }
        let answer = self
            .inner
            .conn
            .call(
                "txn",
                wire::TXN,
                &wire::txn(&self.inner.prefix, &ops),
                Retry::OnlyIfUnsent,
            )
            .await?;
        let (revision, kvs) = wire::txn_outcome(&self.inner.prefix, &ops, &answer)?;
        self.inner.revisions.saw(revision);
        Ok(kvs)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let answer = self
            .inner
            .conn
            .call(
                "get",
                wire::RANGE,
                &wire::range_key(&self.full(key)),
                Retry::Safe,
            )
            .await?;
        let (mut kvs, _, _) = wire::range_outcome(&self.inner.prefix, &answer)?;
        Ok(kvs.pop())
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let full = self.full(prefix);
        let mut out = Vec::new();
        let mut from = full.clone();
        let mut revision = 0;
        loop {
            let body = wire::range_prefix(&full, &from, revision, LIST_PAGE);
            let answer = self
                .inner
                .conn
                .call("list", wire::RANGE, &body, Retry::Safe)
                .await?;
            let (kvs, more, at) = wire::range_outcome(&self.inner.prefix, &answer)?;
            if revision == 0 {
                revision = at;
            }
            let last = kvs.last().map(|kv| kv.key.clone());
            out.extend(kvs);
            match (more, last) {
                (true, Some(last)) => from = format!("{}{last}\0", self.inner.prefix),
                _ => break,
            }
        }
        self.inner.revisions.saw(revision);
        Ok((out, revision))
    }

    pub(crate) fn current_revision(&self) -> u64 {
        self.inner.revisions.current.load(Ordering::SeqCst)
    }

    pub(crate) fn compacted_revision(&self) -> u64 {
        self.inner.revisions.compacted.load(Ordering::SeqCst)
    }

    pub(crate) async fn compact(&self, revision: u64) -> Result<u64> {
        let body = serde_json::json!({"revision": revision.to_string(), "physical": true});
        match self
            .inner
            .conn
            .call("compact", wire::COMPACTION, &body, Retry::Safe)
            .await
        {
            Ok(answer) => self
                .inner
                .revisions
                .saw(wire::num(&answer["header"]["revision"])),
            Err(StoreError::Etcd { message, .. }) if message.contains("future revision") => {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current: self.current_revision(),
                });
            }
            // Already compacted at or past it: compaction never moves backwards.
            Err(StoreError::Etcd { message, .. }) if message.contains("compacted") => {}
            Err(e) => return Err(e),
        }
        Ok(self
            .inner
            .revisions
            .compacted
            .fetch_max(revision, Ordering::SeqCst)
            .max(revision))
    }

    pub(crate) async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch> {
        let compacted = self.compacted_revision();
        if after_revision < compacted {
            return Err(StoreError::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        let body = self
            .inner
            .conn
            .stream(
                wire::WATCH,
                &wire::watch_create(&self.full(prefix), after_revision + 1),
            )
            .await?;
        let (tx, rx) = mpsc::channel(self.inner.watch_buffer);
        tokio::spawn(follow(
            body,
            self.inner.prefix.clone(),
            after_revision,
            self.inner.revisions.clone(),
            self.inner.closed_rx.clone(),
            tx,
        ));
        Ok(Watch::from_channel(rx))
    }
}

/// Forwards one watch stream's events until it ends, then says why: `Compacted`, or
/// `Unavailable` when the connection or etcd ended it; nothing when the store closed.
async fn follow(
    mut body: hyper::body::Incoming,
    prefix: String,
    after: u64,
    revisions: Arc<Revisions>,
    mut closed: watch::Receiver<()>,
    tx: mpsc::Sender<Result<Event>>,
) {
    let mut buf = BytesMut::new();
    let mut last = after;
    let end = loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = closed.changed() => return,
            () = tx.closed() => return,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => break unavailable(format!("watch stream: {e}")),
            None => break unavailable("watch stream ended".into()),
        };
        buf.extend_from_slice(&data);
        let mut failed = None;
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Bytes = buf.split_to(nl + 1).freeze();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = serde_json::from_slice(&line)
                .map_err(|_| StoreError::Internal("etcd watch: a line that is not JSON"))
                .and_then(|v| wire::watch_message(&prefix, &v));
            match message {
                Ok(WatchMessage::Events(events)) => {
                    for ev in events {
                        // A resumed stream never repeats what was delivered.
                        if ev.revision <= after || ev.revision < last {
                            continue;
                        }
                        last = ev.revision;
                        revisions.saw(ev.revision);
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(WatchMessage::Compacted(compacted)) => {
                    revisions.compacted.fetch_max(compacted, Ordering::SeqCst);
                    failed = Some(StoreError::Compacted {
                        requested: last,
                        compacted,
                    });
                }
                Ok(WatchMessage::Failed(message)) => failed = Some(unavailable(message)),
                Err(e) => failed = Some(e),
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(e) = failed {
            break e;
        }
    };
    let _ = tx.send(Err(end)).await;
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable {
        op: "watch",
        message,
    }
}

#[cfg(test)]
mod tests;
