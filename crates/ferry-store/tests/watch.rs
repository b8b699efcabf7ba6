//! Watch semantics: replay, live follow-on without gap or duplicate, prefixes, compaction,
//! lagging, many watchers at once.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use ferry_store::{Event, EventKind, Store, StoreError, StoreOptions, Watch};

fn open(options: StoreOptions) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.redb"), options).unwrap();
    (dir, store)
}

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("watch stalled")
        .expect("watch ended")
        .expect("watch failed")
}

#[tokio::test]
async fn watch_from_middle_replays_only_later_revisions_with_prev_values() {
    let (_dir, store) = open(StoreOptions::default());
    store.create("/a", "1").await.unwrap(); // 1
    store.create("/b", "1").await.unwrap(); // 2
    store.update("/a", "2", None).await.unwrap(); // 3
    store.delete("/b", None).await.unwrap(); // 4

    let mut w = store.watch("/", 2).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.revision, ev.kind, ev.kv.key.as_str()),
        (3, EventKind::Put, "/a")
    );
    assert_eq!(&ev.kv.value[..], b"2");
    let prev = ev.prev_kv.unwrap();
    assert_eq!((&prev.value[..], prev.mod_revision), (&b"1"[..], 1));

    let ev = next(&mut w).await;
    assert_eq!(
        (ev.revision, ev.kind, ev.kv.key.as_str()),
        (4, EventKind::Delete, "/b")
    );
    assert_eq!((ev.kv.mod_revision, ev.kv.create_revision), (4, 2));
    assert_eq!(ev.prev_kv.unwrap().mod_revision, 2);

    // Then live.
    store.create("/c", "1").await.unwrap();
    assert_eq!(next(&mut w).await.revision, 5);
}

#[tokio::test]
async fn watch_from_list_revision_sees_exactly_the_later_writes() {
    let (_dir, store) = open(StoreOptions::default());
    for i in 0..10 {
        store.create(format!("/k/{i}"), "v").await.unwrap();
    }
    let (items, rev) = store.list("/k/").await.unwrap();
    assert_eq!((items.len(), rev), (10, 10));
    let mut w = store.watch("/k/", rev).await.unwrap();
    store.update("/k/3", "w", Some(4)).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!((ev.revision, ev.kv.key.as_str()), (11, "/k/3"));
}

#[tokio::test]
async fn watch_filters_by_prefix_and_keeps_revision_order() {
    let (_dir, store) = open(StoreOptions::default());
    let mut w = store.watch("/pods/", 0).await.unwrap();
    store.create("/pods/a", "1").await.unwrap(); // 1
    store.create("/svc/a", "1").await.unwrap(); // 2
    store.create("/podsx", "1").await.unwrap(); // 3
    store.create("/pods/b", "1").await.unwrap(); // 4
    assert_eq!(next(&mut w).await.revision, 1);
    assert_eq!(next(&mut w).await.revision, 4);
}

#[tokio::test]
async fn txn_events_share_one_revision() {
    let (_dir, store) = open(StoreOptions::default());
    let mut w = store.watch("", 0).await.unwrap();
    store
        .txn(vec![
            ferry_store::Op::Create {
                key: "/a".into(),
                value: "1".into(),
            },
            ferry_store::Op::Create {
                key: "/b".into(),
                value: "1".into(),
            },
        ])
        .await
        .unwrap();
    let (a, b) = (next(&mut w).await, next(&mut w).await);
    assert_eq!((a.revision, a.kv.key.as_str()), (1, "/a"));
    assert_eq!((b.revision, b.kv.key.as_str()), (1, "/b"));
}

/// The handover from replay to live is the delicate part: start watches while writers run and
/// check each watch sees every revision after its start exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_started_during_writes_have_no_gap_or_duplicate() {
    let (_dir, store) = open(StoreOptions::default());
    const WRITES: u64 = 2000;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..WRITES / 8 {
                    store.create(format!("/k/{w}/{i}"), "v").await.unwrap();
                }
            })
        })
        .collect();
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let start = store.current_revision();
        watchers.push((start, store.watch("/k/", start).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(store.current_revision(), WRITES);
    for (start, mut w) in watchers {
        for want in start + 1..=WRITES {
            assert_eq!(next(&mut w).await.revision, want, "watch from {start}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watchers_each_receive_the_full_sequence() {
    let (_dir, store) = open(StoreOptions::default());
    let mut readers = Vec::new();
    for _ in 0..16 {
        let mut w = store.watch("/", 0).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            while revs.len() < 300 {
                revs.push(next(&mut w).await.revision);
            }
            revs
        }));
    }
    for i in 0..300 {
        store.create(format!("/k{i}"), "v").await.unwrap();
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), (1..=300).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn events_arrive_only_once_durable() {
    let (_dir, store) = open(StoreOptions::default());
    let mut w = store.watch("/", 0).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                store.create(format!("/k{i}"), "v").await.unwrap();
            }
        })
    };
    for _ in 0..100 {
        let ev = next(&mut w).await;
        // The revision counter moves only after the commit's fsync.
        assert!(ev.revision <= store.current_revision());
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn compaction_during_a_long_replay_ends_the_watch_with_compacted() {
    let (_dir, store) = open(StoreOptions {
        watch_buffer: 1,
        ..StoreOptions::default()
    });
    let ops: Vec<_> = (0..2000)
        .map(|i| ferry_store::Op::Create {
            key: format!("/k{i}"),
            value: "v".into(),
        })
        .collect();
    // Many revisions quickly: one txn per key, sent concurrently.
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|op| {
            let store = store.clone();
            tokio::spawn(async move { store.txn(vec![op]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut w = store.watch("/", 0).await.unwrap();
    assert_eq!(next(&mut w).await.revision, 1);
    store.compact(1500).await.unwrap();
    let mut last = 1;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .unwrap()
        {
            Some(Ok(ev)) => {
                assert_eq!(ev.revision, last + 1);
                last = ev.revision;
            }
            Some(Err(StoreError::Compacted { compacted, .. })) => {
                assert_eq!(compacted, 1500);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last < 1500, "replay read past the compaction point: {last}");
    assert!(w.recv().await.is_none());
}

#[tokio::test]
async fn a_watcher_that_falls_behind_gets_lagged_after_a_gapless_prefix() {
    let (_dir, store) = open(StoreOptions {
        watch_buffer: 4,
        ..StoreOptions::default()
    });
    let mut w = store.watch("/", 0).await.unwrap();
    for i in 0..50 {
        store.create(format!("/k{i}"), "v").await.unwrap();
    }
    let mut revs = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .unwrap()
        {
            Some(Ok(ev)) => revs.push(ev.revision),
            Some(Err(e)) => break e,
            None => panic!("watch ended without saying it lagged"),
        }
    };
    assert!(matches!(end, StoreError::WatchLagged), "{end}");
    assert!(!revs.is_empty() && revs.len() < 50, "{revs:?}");
    assert_eq!(revs, (1..=revs.len() as u64).collect::<Vec<_>>());
    assert!(w.recv().await.is_none());
    // Others are unaffected: a new watch from the last seen revision resumes.
    let mut again = store.watch("/", *revs.last().unwrap()).await.unwrap();
    assert_eq!(next(&mut again).await.revision, revs.len() as u64 + 1);
}

#[tokio::test]
async fn watch_from_a_future_revision_waits_for_it() {
    let (_dir, store) = open(StoreOptions::default());
    store.create("/a", "1").await.unwrap();
    let mut w = store.watch("/", 3).await.unwrap();
    for i in 0..4 {
        store.create(format!("/b{i}"), "v").await.unwrap();
    }
    assert_eq!(next(&mut w).await.revision, 4);
    assert_eq!(next(&mut w).await.revision, 5);
}
