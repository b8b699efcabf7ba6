//! Watches: replay from the durable log, then live events, with no gap and no duplicate.
//!
//! The writer publishes each committed batch to the [`Hub`] under its lock and records the last
//! published revision. A new watch registers under that same lock and notes that revision as the
//! end of its replay: everything up to it is already in the log (it was committed before it was
//! published), everything after it will arrive through the live channel. A per-watch task reads
//! the replay in chunks, then forwards live events, into the bounded channel behind [`Watch`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use redb::{Database, ReadableDatabase};
use tokio::sync::mpsc;

use crate::codec::decode_events;
use crate::error::db_err;
use crate::{COMPACTED, Event, LOG, META, Result, StoreError};

/// Revisions read per replay read transaction, so a long replay neither holds one snapshot
/// (and its pages) for long nor loads the whole history into memory.
const REPLAY_CHUNK: u64 = 512;

/// A stream of [`Event`]s under a prefix, in revision order.
///
/// Ends with `Err(StoreError::Compacted)` if the history it still had to replay was compacted
/// meanwhile, with `Err(StoreError::WatchLagged)` if the consumer fell more than the store's
/// `watch_buffer` events behind, and with `None` when the store closes. After either error the
/// caller must re-list and start a new watch from the list's revision.
pub struct Watch {
    rx: mpsc::Receiver<Result<Event>>,
}

impl Watch {
    /// A watch fed by another backend's task.
    pub(crate) fn from_channel(rx: mpsc::Receiver<Result<Event>>) -> Watch {
        Watch { rx }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

impl futures::Stream for Watch {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

// === impl Hub ===

/// The live watchers and the last revision published to them.
#[derive(Default)]
pub(crate) struct Hub {
    published: u64,
    closed: bool,
    watchers: Vec<LiveWatcher>,
}

struct LiveWatcher {
    prefix: String,
    after: u64,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    pub(crate) fn new(published: u64) -> Self {
        Hub {
            published,
            ..Hub::default()
        }
    }

    /// Hands a committed batch to every matching watcher. A watcher whose buffer is full is
    /// dropped and marked lagged rather than allowed to slow the writer or miss an event.
    pub(crate) fn publish(&mut self, revision: u64, events: &[Event]) {
        self.watchers.retain(|w| {
            for ev in events {
                if ev.revision <= w.after || !ev.kv.key.starts_with(&w.prefix) {
                    continue;
                }
                match w.tx.try_send(ev.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.lagged.store(true, Ordering::SeqCst);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        self.published = revision;
    }

    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.watchers.clear();
    }
}

/// Registers a watch and starts its task. Called with the store's current compacted revision
/// already checked; the replay re-checks it in each snapshot.
pub(crate) fn start(
    hub: &std::sync::Mutex<Hub>,
    db: Weak<Database>,
    prefix: &str,
    after_revision: u64,
    buffer: usize,
) -> Result<Watch> {
    let buffer = buffer.max(1);
    let (live_tx, live_rx) = mpsc::channel(buffer);
    let (out_tx, out_rx) = mpsc::channel(buffer);
    let lagged = Arc::new(AtomicBool::new(false));
    let replay_end = {
        let mut hub = hub
            .lock()
            .map_err(|_| StoreError::Internal("watch hub lock poisoned"))?;
        if hub.closed {
            return Err(StoreError::Closed);
        }
        hub.watchers.push(LiveWatcher {
            prefix: prefix.to_owned(),
            after: after_revision,
            tx: live_tx,
            lagged: lagged.clone(),
        });
        hub.published
    };
    tokio::spawn(forward(
        db,
        prefix.to_owned(),
        after_revision,
        replay_end,
        live_rx,
        lagged,
        out_tx,
    ));
    Ok(Watch { rx: out_rx })
}

async fn forward(
    db: Weak<Database>,
    prefix: String,
    after: u64,
    replay_end: u64,
    mut live: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    out: mpsc::Sender<Result<Event>>,
) {
    let mut next = after.saturating_add(1);
    while next <= replay_end {
        let Some(db) = db.upgrade() else {
            let _ = out.send(Err(StoreError::Closed)).await;
            return;
        };
        let last = replay_end.min(next.saturating_add(REPLAY_CHUNK - 1));
        let p = prefix.clone();
        let chunk = match tokio::task::spawn_blocking(move || read_log(&db, &p, next, last)).await {
            Ok(chunk) => chunk,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Closed),
        };
        match chunk {
            Ok(events) => {
                for ev in events {
                    if out.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        }
        next = last + 1;
    }
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Some(ev) => {
                    if out.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                None => {
                    if lagged.load(Ordering::SeqCst) {
                        let _ = out.send(Err(StoreError::WatchLagged)).await;
                    }
                    return;
                }
            },
            () = out.closed() => return,
        }
    }
}

/// Events of revisions `first..=last` under `prefix`, from one snapshot. Fails with
/// `Compacted` if part of that range is gone, and with `Corrupt` if a revision is missing
/// (every revision has exactly one log row, so a hole would be a silently skipped event).
pub(crate) fn read_log(db: &Database, prefix: &str, first: u64, last: u64) -> Result<Vec<Event>> {
    let txn = db.begin_read().map_err(db_err("begin read"))?;
    let meta = txn.open_table(META).map_err(db_err("open meta"))?;
    let compacted = meta
        .get(COMPACTED)
        .map_err(db_err("read compacted revision"))?
        .map_or(0, |g| g.value());
    if first <= compacted {
        return Err(StoreError::Compacted {
            requested: first - 1,
            compacted,
        });
    }
    let log = txn.open_table(LOG).map_err(db_err("open log"))?;
    let mut events = Vec::new();
    let mut expected = first;
    for row in log.range(first..=last).map_err(db_err("read log"))? {
        let (rev, record) = row.map_err(db_err("read log"))?;
        let rev = rev.value();
        if rev != expected {
            return Err(StoreError::Corrupt {
                what: "log",
                at: format!("revision {expected}"),
                reason: "missing revision",
            });
        }
        expected += 1;
        events.extend(
            decode_events(rev, record.value())?
                .into_iter()
                .filter(|ev| ev.kv.key.starts_with(prefix)),
        );
    }
    if expected != last + 1 {
        return Err(StoreError::Corrupt {
            what: "log",
            at: format!("revision {expected}"),
            reason: "missing revision",
        });
    }
    Ok(events)
}
