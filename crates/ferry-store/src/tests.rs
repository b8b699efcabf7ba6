//! Unit tests: every operation and every error, against a real redb file.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;

use super::*;

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.redb"), StoreOptions::default()).unwrap();
    (dir, store)
}

fn kv(key: &str, value: &str, create_revision: u64, mod_revision: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision,
        mod_revision,
    }
}

#[tokio::test]
async fn empty_store_is_at_revision_zero() {
    let (_dir, store) = open().await;
    assert_eq!(store.current_revision(), 0);
    assert_eq!(store.compacted_revision(), 0);
    assert_eq!(store.get("/a").await.unwrap(), None);
    assert_eq!(store.list("/").await.unwrap(), (vec![], 0));
}

#[tokio::test]
async fn create_assigns_consecutive_revisions_from_one() {
    let (_dir, store) = open().await;
    assert_eq!(store.create("/a", "1").await.unwrap(), kv("/a", "1", 1, 1));
    assert_eq!(store.create("/b", "2").await.unwrap(), kv("/b", "2", 2, 2));
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.get("/a").await.unwrap(), Some(kv("/a", "1", 1, 1)));
}

#[tokio::test]
async fn create_of_existing_key_is_already_exists_and_takes_no_revision() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    let err = store.create("/a", "2").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { key } if key == "/a"),
        "{err}"
    );
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/a").await.unwrap(), Some(kv("/a", "1", 1, 1)));
}

#[tokio::test]
async fn update_keeps_create_revision_and_moves_mod_revision() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    store.create("/b", "x").await.unwrap();
    assert_eq!(
        store.update("/a", "2", None).await.unwrap(),
        kv("/a", "2", 1, 3)
    );
    assert_eq!(
        store.update("/a", "3", Some(3)).await.unwrap(),
        kv("/a", "3", 1, 4)
    );
    assert_eq!(store.get("/a").await.unwrap(), Some(kv("/a", "3", 1, 4)));
}

#[tokio::test]
async fn update_of_missing_key_is_not_found() {
    let (_dir, store) = open().await;
    let err = store.update("/a", "1", None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { key } if key == "/a"),
        "{err}"
    );
    assert_eq!(store.current_revision(), 0);
}

#[tokio::test]
async fn update_with_stale_revision_is_conflict_naming_current() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    store.update("/a", "2", None).await.unwrap();
    let err = store.update("/a", "3", Some(1)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key, expected: 1, current: 2 } if key == "/a"),
        "{err}"
    );
    assert_eq!(store.get("/a").await.unwrap(), Some(kv("/a", "2", 1, 2)));
    assert_eq!(store.current_revision(), 2);
}

#[tokio::test]
async fn delete_returns_last_value_at_the_delete_revision() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    assert_eq!(
        store.delete("/a", Some(1)).await.unwrap(),
        kv("/a", "1", 1, 2)
    );
    assert_eq!(store.get("/a").await.unwrap(), None);
    // A re-created key is a new incarnation.
    assert_eq!(
        store.create("/a", "again").await.unwrap(),
        kv("/a", "again", 3, 3)
    );
}

#[tokio::test]
async fn delete_errors() {
    let (_dir, store) = open().await;
    let err = store.delete("/a", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    store.create("/a", "1").await.unwrap();
    let err = store.delete("/a", Some(7)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 7,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(store.get("/a").await.unwrap().is_some());
}

#[tokio::test]
async fn txn_commits_every_op_under_one_revision() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    store.create("/b", "1").await.unwrap();
    let got = store
        .txn(vec![
            Op::Create {
                key: "/c".into(),
                value: "new".into(),
            },
            Op::Update {
                key: "/a".into(),
                value: "2".into(),
                expected_mod_revision: Some(1),
            },
            Op::Delete {
                key: "/b".into(),
                expected_mod_revision: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            kv("/c", "new", 3, 3),
            kv("/a", "2", 1, 3),
            kv("/b", "1", 2, 3)
        ]
    );
    assert_eq!(store.current_revision(), 3);
    let (all, rev) = store.list("/").await.unwrap();
    assert_eq!(rev, 3);
    assert_eq!(all, vec![kv("/a", "2", 1, 3), kv("/c", "new", 3, 3)]);
}

#[tokio::test]
async fn txn_with_one_failed_precondition_writes_nothing() {
    let (_dir, store) = open().await;
    store.create("/a", "1").await.unwrap();
    let err = store
        .txn(vec![
            Op::Create {
                key: "/c".into(),
                value: "new".into(),
            },
            Op::Update {
                key: "/a".into(),
                value: "2".into(),
                expected_mod_revision: Some(99),
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 1, .. }),
        "{err}"
    );
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/c").await.unwrap(), None);
    assert_eq!(store.get("/a").await.unwrap(), Some(kv("/a", "1", 1, 1)));
}

#[tokio::test]
async fn txn_naming_a_key_twice_is_refused() {
    let (_dir, store) = open().await;
    let err = store
        .txn(vec![
            Op::Create {
                key: "/a".into(),
                value: "1".into(),
            },
            Op::Delete {
                key: "/a".into(),
                expected_mod_revision: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateKey { key } if key == "/a"),
        "{err}"
    );
    assert_eq!(store.current_revision(), 0);
}

#[tokio::test]
async fn empty_txn_takes_no_revision() {
    let (_dir, store) = open().await;
    assert_eq!(store.txn(vec![]).await.unwrap(), vec![]);
    assert_eq!(store.current_revision(), 0);
}

#[tokio::test]
async fn list_returns_only_the_prefix_sorted_with_its_revision() {
    let (_dir, store) = open().await;
    for key in ["/r/pods/b", "/r/pods/a", "/r/podsx/c", "/r/svc/a", "/q"] {
        store.create(key, "v").await.unwrap();
    }
    let (pods, rev) = store.list("/r/pods/").await.unwrap();
    let keys: Vec<_> = pods.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/r/pods/a", "/r/pods/b"]);
    assert_eq!(rev, 5);
    let (all, _) = store.list("").await.unwrap();
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn concurrent_writers_get_distinct_consecutive_revisions() {
    let (_dir, store) = open().await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create(format!("/k/{i}"), "v").await })
        })
        .collect();
    let mut revisions = BTreeSet::new();
    for t in tasks {
        let kv = t.await.unwrap().unwrap();
        assert_eq!(kv.create_revision, kv.mod_revision);
        revisions.insert(kv.mod_revision);
    }
    assert_eq!(revisions, (1..=64).collect());
    assert_eq!(store.current_revision(), 64);
}

#[tokio::test]
async fn racing_creates_of_one_key_in_a_batch_admit_exactly_one() {
    let (_dir, store) = open().await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create("/same", format!("{i}")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(kv) => {
                ok += 1;
                assert_eq!(kv.mod_revision, 1);
            }
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.current_revision(), 1);
}

#[tokio::test]
async fn compact_moves_forward_only_and_refuses_the_future() {
    let (_dir, store) = open().await;
    for i in 0..5 {
        store.create(format!("/k{i}"), "v").await.unwrap();
    }
    let err = store.compact(6).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FutureRevision {
                requested: 6,
                current: 5
            }
        ),
        "{err}"
    );
    assert_eq!(store.compact(3).await.unwrap(), 3);
    assert_eq!(store.compact(2).await.unwrap(), 3);
    assert_eq!(store.compacted_revision(), 3);
    // Objects are untouched by compaction.
    assert_eq!(store.list("/").await.unwrap().0.len(), 5);
}

#[tokio::test]
async fn watch_below_compacted_revision_is_compacted_error() {
    let (_dir, store) = open().await;
    for i in 0..5 {
        store.create(format!("/k{i}"), "v").await.unwrap();
    }
    store.compact(3).await.unwrap();
    let err = store.watch("/", 2).await.err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 2,
                compacted: 3
            }
        ),
        "{err}"
    );
    let mut w = store.watch("/", 3).await.unwrap();
    assert_eq!(w.recv().await.unwrap().unwrap().revision, 4);
    assert_eq!(w.recv().await.unwrap().unwrap().revision, 5);
}

#[tokio::test]
async fn auto_compaction_keeps_the_last_n_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        retain_revisions: Some(5),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path().join("s.redb"), options).unwrap();
    for i in 0..20 {
        store.create(format!("/k{i}"), "v").await.unwrap();
    }
    assert_eq!(store.compacted_revision(), 15);
    assert!(matches!(
        store.watch("/", 14).await.err(),
        Some(StoreError::Compacted { compacted: 15, .. })
    ));
    let mut w = store.watch("/", 15).await.unwrap();
    for rev in 16..=20 {
        assert_eq!(w.recv().await.unwrap().unwrap().revision, rev);
    }
}

#[tokio::test]
async fn reopen_restores_keys_revision_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    store.create("/a", "1").await.unwrap();
    store.create("/b", "1").await.unwrap();
    store.update("/a", "2", None).await.unwrap();
    store.delete("/b", None).await.unwrap();
    store.compact(2).await.unwrap();
    store.close().await.unwrap();

    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.current_revision(), 4);
    assert_eq!(store.compacted_revision(), 2);
    assert_eq!(
        store.list("/").await.unwrap(),
        (vec![kv("/a", "2", 1, 3)], 4)
    );
    assert_eq!(store.create("/c", "x").await.unwrap().mod_revision, 5);
    let mut w = store.watch("/", 2).await.unwrap();
    let revs: Vec<_> = [
        w.recv().await.unwrap().unwrap(),
        w.recv().await.unwrap().unwrap(),
        w.recv().await.unwrap().unwrap(),
    ]
    .iter()
    .map(|e| (e.revision, e.kind))
    .collect();
    assert_eq!(
        revs,
        [
            (3, EventKind::Put),
            (4, EventKind::Delete),
            (5, EventKind::Put)
        ]
    );
}

#[tokio::test]
async fn writes_after_close_of_the_last_handle_cannot_happen_and_the_file_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    store.create("/a", "1").await.unwrap();
    let mut w = store.watch("/", 1).await.unwrap();
    store.close().await.unwrap();
    // The watch ends with the store.
    assert!(w.recv().await.is_none());
    // Opening twice at once is refused by redb's file lock...
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Database {
                op: "open database",
                ..
            }
        ),
        "{err}"
    );
    // ...and the closed one reopened fine.
    assert_eq!(store.current_revision(), 1);
}
