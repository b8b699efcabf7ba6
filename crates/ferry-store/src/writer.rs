//! The single writer: group commit of queued writes, one fsync per batch.
//!
//! One std thread owns every redb write transaction. It takes all requests queued at the moment
//! (up to `max_batch`), applies them in order inside one transaction, each successful write
//! getting the next revision, commits with `Durability::Immediate`, and only then updates the
//! in-memory revision, publishes the events to watchers and answers the callers. A request
//! whose precondition fails is answered with its error and leaves no trace in the batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, Durability, ReadableTable, Table};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{decode_object, encode_events, encode_object};
use crate::error::db_err;
use crate::{
    COMPACTED, Event, EventKind, KeyValue, LOG, META, OBJECTS, Op, REVISION, Result, Shared,
    StoreError,
};

/// One queued write.
pub(crate) enum Request {
    Write {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<Vec<KeyValue>>>,
    },
    Compact {
        revision: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
}

/// The answer to one request, sent only after the batch is durable.
enum Answer {
    Write(Result<Vec<KeyValue>>),
    Compact(Result<u64>),
}

impl Request {
    fn answer(self, answer: Answer) {
        // A caller that stopped waiting is not an error: its write is committed anyway.
        match (self, answer) {
            (Request::Write { reply, .. }, Answer::Write(r)) => {
                let _ = reply.send(r);
            }
            (Request::Compact { reply, .. }, Answer::Compact(r)) => {
                let _ = reply.send(r);
            }
            (Request::Write { reply, .. }, Answer::Compact(_)) => {
                let _ = reply.send(Err(StoreError::Internal("answer kind mismatch")));
            }
            (Request::Compact { reply, .. }, Answer::Write(_)) => {
                let _ = reply.send(Err(StoreError::Internal("answer kind mismatch")));
            }
        }
    }

    fn fail(self, err: StoreError) {
        match self {
            Request::Write { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Request::Compact { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// Runs until every sender is gone, then closes all watches.
pub(crate) fn run(
    db: Arc<Database>,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Request>,
    max_batch: usize,
    retain_revisions: Option<u64>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        commit_batch(&db, &shared, &mut batch, retain_revisions);
    }
    shared.hub_close();
}

fn commit_batch(
    db: &Database,
    shared: &Shared,
    batch: &mut Vec<Request>,
    retain_revisions: Option<u64>,
) {
    let span = tracing::debug_span!("store_commit", batch = batch.len());
    let _guard = span.enter();
    let revision = shared.revision.load(Ordering::SeqCst);
    let compacted = shared.compacted.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    match apply_batch(db, batch, revision, compacted, retain_revisions) {
        Ok(done) => {
            ferry_metrics::store().committed(batch.len(), started.elapsed(), done.fsync);
            shared.revision.store(done.revision, Ordering::SeqCst);
            shared.compacted.store(done.compacted, Ordering::SeqCst);
            shared.publish(done.revision, &done.events);
            for (req, answer) in batch.drain(..).zip(done.answers) {
                req.answer(answer);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "store batch commit failed, every write of the batch is refused");
            for req in batch.drain(..) {
                req.fail(err.clone());
            }
        }
    }
}

struct Applied {
    /// Time of the durable commit alone.
    fsync: std::time::Duration,
    revision: u64,
    compacted: u64,
    events: Vec<Event>,
    answers: Vec<Answer>,
}

/// Applies the batch in one transaction and commits it durably. `Err` only for database
/// failures, which void the whole batch.
fn apply_batch(
    db: &Database,
    batch: &[Request],
    mut revision: u64,
    mut compacted: u64,
    retain_revisions: Option<u64>,
) -> Result<Applied> {
    let mut txn = db.begin_write().map_err(db_err("begin write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(db_err("set durability"))?;
    let mut events = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut objects = txn.open_table(OBJECTS).map_err(db_err("open objects"))?;
        let mut log = txn.open_table(LOG).map_err(db_err("open log"))?;
        let mut meta = txn.open_table(META).map_err(db_err("open meta"))?;
        for req in batch {
            match req {
                Request::Write { ops, .. } if ops.is_empty() => {
                    answers.push(Answer::Write(Ok(Vec::new())));
                }
                Request::Write { ops, .. } => match plan(&objects, ops, revision + 1)? {
                    Err(rejected) => answers.push(Answer::Write(Err(rejected))),
                    Ok((kvs, revision_events)) => {
                        revision += 1;
                        write_revision(&mut objects, &mut log, revision, &revision_events)?;
                        events.extend(revision_events);
                        answers.push(Answer::Write(Ok(kvs)));
                    }
                },
                Request::Compact { revision: to, .. } => {
                    let answer = if *to > revision {
                        Err(StoreError::FutureRevision {
                            requested: *to,
                            current: revision,
                        })
                    } else {
                        compacted = compact_log(&mut log, compacted, *to)?;
                        Ok(compacted)
                    };
                    answers.push(Answer::Compact(answer));
                }
            }
        }
        if let Some(keep) = retain_revisions {
            compacted = compact_log(&mut log, compacted, revision.saturating_sub(keep))?;
        }
        meta.insert(REVISION, revision)
            .map_err(db_err("write revision"))?;
        meta.insert(COMPACTED, compacted)
            .map_err(db_err("write compacted revision"))?;
    }
    let fsync = std::time::Instant::now();
    txn.commit().map_err(db_err("commit"))?;
    Ok(Applied {
        fsync: fsync.elapsed(),
        revision,
        compacted,
        events,
        answers,
    })
}

/// Checks every precondition of one write against the current state and, if all hold,
/// returns its results and events at `revision`. Nothing is written here, so a rejected
/// write leaves the batch untouched. Outer `Err`: database failure; inner: rejection.
fn plan(
    objects: &Table<&str, &[u8]>,
    ops: &[Op],
    revision: u64,
) -> Result<Result<(Vec<KeyValue>, Vec<Event>)>> {
    let mut seen = HashSet::with_capacity(ops.len());
    if let Some(dup) = ops.iter().find(|op| !seen.insert(op.key())) {
        return Ok(Err(StoreError::DuplicateKey {
            key: dup.key().to_owned(),
        }));
    }
    let mut kvs = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key();
        let current = match objects.get(key).map_err(db_err("read object"))? {
            Some(guard) => Some(decode_object(key, guard.value())?),
            None => None,
        };
        let check = |expected: &Option<u64>, current: &KeyValue| match expected {
            Some(e) if *e != current.mod_revision => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected: *e,
                current: current.mod_revision,
            }),
            _ => Ok(()),
        };
        let not_found = || StoreError::NotFound {
            key: key.to_owned(),
        };
        let event = match (op, current) {
            (Op::Create { .. }, Some(_)) => {
                return Ok(Err(StoreError::AlreadyExists {
                    key: key.to_owned(),
                }));
            }
            (Op::Create { value, .. }, None) => Event {
                revision,
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                },
                prev_kv: None,
            },
            (Op::Update { .. } | Op::Delete { .. }, None) => return Ok(Err(not_found())),
            (
                Op::Update {
                    value,
                    expected_mod_revision,
                    ..
                },
                Some(cur),
            ) => {
                if let Err(e) = check(expected_mod_revision, &cur) {
                    return Ok(Err(e));
                }
                Event {
                    revision,
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.to_owned(),
                        value: value.clone(),
                        create_revision: cur.create_revision,
                        mod_revision: revision,
                    },
                    prev_kv: Some(cur),
                }
            }
            (
                Op::Delete {
                    expected_mod_revision,
                    ..
                },
                Some(cur),
            ) => {
                if let Err(e) = check(expected_mod_revision, &cur) {
                    return Ok(Err(e));
                }
                Event {
                    revision,
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..cur.clone()
                    },
                    prev_kv: Some(cur),
                }
            }
        };
        kvs.push(event.kv.clone());
        events.push(event);
    }
    Ok(Ok((kvs, events)))
}

/// Writes one accepted revision: the objects and its log row.
fn write_revision(
    objects: &mut Table<&str, &[u8]>,
    log: &mut Table<u64, &[u8]>,
    revision: u64,
    events: &[Event],
) -> Result<()> {
    for ev in events {
        match ev.kind {
            EventKind::Put => {
                let record = encode_object(ev.kv.create_revision, ev.kv.mod_revision, &ev.kv.value);
                objects
                    .insert(ev.kv.key.as_str(), record.as_slice())
                    .map_err(db_err("write object"))?;
            }
            EventKind::Delete => {
                objects
                    .remove(ev.kv.key.as_str())
                    .map_err(db_err("delete object"))?;
            }
        }
    }
    log.insert(revision, encode_events(events).as_slice())
        .map_err(db_err("append log"))?;
    Ok(())
}

/// Drops log rows up to `to` if that is past `compacted`; returns the new compacted revision.
fn compact_log(log: &mut Table<u64, &[u8]>, compacted: u64, to: u64) -> Result<u64> {
    if to <= compacted {
        return Ok(compacted);
    }
    log.retain_in(compacted + 1..=to, |_, _| false)
        .map_err(db_err("compact log"))?;
    Ok(to)
}
