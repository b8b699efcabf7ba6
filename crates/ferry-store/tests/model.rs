//! Property test: any sequence of operations (with restarts in between) leaves the store in the
//! state a plain `BTreeMap` model predicts, answers each operation as the model does, and its
//! watches, replayed from revision 0 or followed live, deliver exactly the model's events:
//! revisions 1..=N in order, no gap, no duplicate.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ferry_store::{Event, EventKind, KeyValue, Op, Store, StoreError, StoreOptions, Watch};
use proptest::prelude::*;

/// How an operation picks its `expected_mod_revision`.
#[derive(Debug, Clone)]
enum Expect {
    Any,
    /// The key's real current revision (0 if absent): must pass when the key exists.
    Current,
    /// A fixed, probably stale, revision.
    Exact(u64),
}

#[derive(Debug, Clone)]
enum Step {
    Create(u8, u8),
    Update(u8, u8, Expect),
    Delete(u8, Expect),
    Txn(Vec<Step>),
    Compact,
    Reopen,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::Current),
        (0u64..8).prop_map(Expect::Exact),
    ]
}

fn single() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..5, any::<u8>()).prop_map(|(k, v)| Step::Create(k, v)),
        (0u8..5, any::<u8>(), expect()).prop_map(|(k, v, e)| Step::Update(k, v, e)),
        (0u8..5, expect()).prop_map(|(k, e)| Step::Delete(k, e)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => single(),
        2 => prop::collection::vec(single(), 0..4).prop_map(Step::Txn),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
    ]
}

fn key(k: u8) -> String {
    format!("/registry/things/ns/k{k}")
}

/// The reference: objects, the revision and every event ever produced.
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, KeyValue>,
    revision: u64,
    events: Vec<Event>,
}

/// An error reduced to what the model can predict.
#[derive(Debug, PartialEq)]
enum Refusal {
    AlreadyExists(String),
    NotFound(String),
    Conflict(String, u64, u64),
    DuplicateKey(String),
}

fn refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::AlreadyExists { key } => Refusal::AlreadyExists(key),
        StoreError::NotFound { key } => Refusal::NotFound(key),
        StoreError::Conflict {
            key,
            expected,
            current,
        } => Refusal::Conflict(key, expected, current),
        StoreError::DuplicateKey { key } => Refusal::DuplicateKey(key),
        other => panic!("store failed: {other}"),
    }
}

impl Model {
    fn to_op(&self, step: &Step) -> Op {
        let expected = |k: u8, e: &Expect| match e {
            Expect::Any => None,
            Expect::Current => Some(self.objects.get(&key(k)).map_or(0, |kv| kv.mod_revision)),
            Expect::Exact(r) => Some(*r),
        };
        match step {
            Step::Create(k, v) => Op::Create {
                key: key(*k),
                value: Bytes::from(vec![*v; 3]),
            },
            Step::Update(k, v, e) => Op::Update {
                key: key(*k),
                value: Bytes::from(vec![*v; 2]),
                expected_mod_revision: expected(*k, e),
            },
            Step::Delete(k, e) => Op::Delete {
                key: key(*k),
                expected_mod_revision: expected(*k, e),
            },
            Step::Txn(_) | Step::Compact | Step::Reopen => unreachable!("not a single op"),
        }
    }

    fn apply(&mut self, ops: &[Op]) -> Result<Vec<KeyValue>, Refusal> {
        if ops.is_empty() {
            return Ok(vec![]);
        }
        for (i, op) in ops.iter().enumerate() {
            if ops[..i].iter().any(|o| o.key() == op.key()) {
                return Err(Refusal::DuplicateKey(op.key().to_owned()));
            }
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            let cur = self.objects.get(op.key()).cloned();
            let check = |exp: &Option<u64>, cur: &KeyValue| match exp {
                Some(e) if *e != cur.mod_revision => {
                    Err(Refusal::Conflict(cur.key.clone(), *e, cur.mod_revision))
                }
                _ => Ok(()),
            };
            let ev = match (op, cur) {
                (Op::Create { key, .. }, Some(_)) => {
                    return Err(Refusal::AlreadyExists(key.clone()));
                }
                (Op::Create { key, value }, None) => Event {
                    revision: rev,
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: rev,
                        mod_revision: rev,
                    },
                    prev_kv: None,
                },
                (Op::Update { key, .. } | Op::Delete { key, .. }, None) => {
                    return Err(Refusal::NotFound(key.clone()));
                }
                (
                    Op::Update {
                        value,
                        expected_mod_revision,
                        ..
                    },
                    Some(cur),
                ) => {
                    check(expected_mod_revision, &cur)?;
                    Event {
                        revision: rev,
                        kind: EventKind::Put,
                        kv: KeyValue {
                            value: value.clone(),
                            mod_revision: rev,
                            ..cur.clone()
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
                    check(expected_mod_revision, &cur)?;
                    Event {
                        revision: rev,
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: rev,
                            ..cur.clone()
                        },
                        prev_kv: Some(cur),
                    }
                }
            };
            events.push(ev);
        }
        self.revision = rev;
        for ev in &events {
            match ev.kind {
                EventKind::Put => self.objects.insert(ev.kv.key.clone(), ev.kv.clone()),
                EventKind::Delete => self.objects.remove(&ev.kv.key),
            };
        }
        let kvs = events.iter().map(|e| e.kv.clone()).collect();
        self.events.extend(events);
        Ok(kvs)
    }
}

async fn drain(w: &mut Watch, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .expect("watch stalled")
            .expect("watch ended early")
            .expect("watch failed");
        out.push(ev);
    }
    out
}

async fn check(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut store = Store::open(&path, StoreOptions::default()).unwrap();
    let mut model = Model::default();
    // A client following everything live, re-watching from its last revision after restarts.
    let mut live = store.watch("", 0).await.unwrap();
    let mut live_seen: Vec<Event> = Vec::new();
    let mut compacted = 0;

    for step in &steps {
        match step {
            Step::Compact => {
                let to = model.revision / 2;
                compacted = compacted.max(to);
                assert_eq!(store.compact(to).await.unwrap(), compacted);
            }
            Step::Reopen => {
                let pending = model.events.len() - live_seen.len();
                live_seen.extend(drain(&mut live, pending).await);
                store.close().await.unwrap();
                assert!(live.recv().await.is_none(), "watch outlived its store");
                store = Store::open(&path, StoreOptions::default()).unwrap();
                live = store.watch("", model.revision).await.unwrap();
            }
            Step::Txn(inner) => {
                let ops: Vec<Op> = inner.iter().map(|s| model.to_op(s)).collect();
                let want = model.apply(&ops);
                let got = store.txn(ops).await.map_err(refusal);
                assert_eq!(got, want, "txn {inner:?}");
            }
            single => {
                let op = model.to_op(single);
                let want = model
                    .apply(std::slice::from_ref(&op))
                    .map(|mut v| v.remove(0));
                let got = match op {
                    Op::Create { key, value } => store.create(key, value).await,
                    Op::Update {
                        key,
                        value,
                        expected_mod_revision,
                    } => store.update(key, value, expected_mod_revision).await,
                    Op::Delete {
                        key,
                        expected_mod_revision,
                    } => store.delete(key, expected_mod_revision).await,
                }
                .map_err(refusal);
                assert_eq!(got, want, "{single:?}");
            }
        }
        assert_eq!(store.current_revision(), model.revision);
    }

    let (items, rev) = store.list("").await.unwrap();
    assert_eq!(rev, model.revision);
    assert_eq!(items, model.objects.values().cloned().collect::<Vec<_>>());
    assert_eq!(store.compacted_revision(), compacted);

    // Live: every event, in order, across restarts.
    let pending = model.events.len() - live_seen.len();
    live_seen.extend(drain(&mut live, pending).await);
    assert_eq!(live_seen, model.events);

    // Replay from the compacted revision (0 if never compacted): exactly the model's events
    // after it, whose revisions run without a gap up to the current one.
    let mut replay = store.watch("", compacted).await.unwrap();
    let want: Vec<Event> = model
        .events
        .iter()
        .filter(|e| e.revision > compacted)
        .cloned()
        .collect();
    let got = drain(&mut replay, want.len()).await;
    assert_eq!(got, want);
    let mut revs: Vec<u64> = got.iter().map(|e| e.revision).collect();
    revs.dedup();
    assert_eq!(revs, (compacted + 1..=model.revision).collect::<Vec<_>>());
    if compacted > 0 {
        assert!(matches!(
            store.watch("", compacted - 1).await.err(),
            Some(StoreError::Compacted { .. })
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_the_btreemap_model(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(steps));
    }
}
