//! The store's contract on a real etcd cluster (Debian's `etcd-server`, started by the test
//! as child processes): revisions, compare-and-swap, paged lists at one revision, watches from
//! a revision, compaction, two handles sharing one cluster, and a member killed mid-writes.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use bytes::Bytes;
use ferry_store::{
    Backend, Event, EventKind, KeyValue, Op, Store, StoreError, StoreOptions, Watch,
};
use ferry_testkit::etcd::EtcdCluster;

async fn connect(cluster: &EtcdCluster, prefix: &str) -> Store {
    let Backend::Etcd(config) = cluster.url(prefix).parse::<Backend>().unwrap() else {
        panic!("not an etcd url")
    };
    Store::connect_etcd(config, StoreOptions::default())
        .await
        .unwrap()
}

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(20), w.recv())
        .await
        .expect("watch stalled")
        .expect("watch ended")
        .expect("watch failed")
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
async fn etcd_store_keeps_the_contract_of_the_embedded_one() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster, "/t1").await;
    let r0 = store.current_revision();

    let a = store.create("/registry/a", "1").await.unwrap();
    assert_eq!(a, kv("/registry/a", "1", r0 + 1, r0 + 1));
    assert_eq!(store.current_revision(), r0 + 1);
    let err = store.create("/registry/a", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");

    let a2 = store
        .update("/registry/a", "2", Some(r0 + 1))
        .await
        .unwrap();
    assert_eq!(a2, kv("/registry/a", "2", r0 + 1, r0 + 2));
    let err = store
        .update("/registry/a", "3", Some(r0 + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected, current, .. } if expected == r0 + 1 && current == r0 + 2),
        "{err:?}"
    );
    let err = store.update("/registry/none", "3", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    // A txn is all or nothing, under one revision.
    let err = store
        .txn(vec![
            Op::Create {
                key: "/registry/b".into(),
                value: Bytes::from_static(b"1"),
            },
            Op::Create {
                key: "/registry/a".into(),
                value: Bytes::from_static(b"1"),
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/registry/a"),
        "{err:?}"
    );
    assert_eq!(store.get("/registry/b").await.unwrap(), None);
    let both = store
        .txn(vec![
            Op::Create {
                key: "/registry/b".into(),
                value: Bytes::from_static(b"1"),
            },
            Op::Update {
                key: "/registry/a".into(),
                value: Bytes::from_static(b"3"),
                expected_mod_revision: Some(r0 + 2),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        both,
        vec![
            kv("/registry/b", "1", r0 + 3, r0 + 3),
            kv("/registry/a", "3", r0 + 1, r0 + 3)
        ]
    );
    let err = store
        .txn(vec![
            Op::Delete {
                key: "/registry/b".into(),
                expected_mod_revision: None,
            },
            Op::Delete {
                key: "/registry/b".into(),
                expected_mod_revision: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey { .. }), "{err:?}");

    let gone = store.delete("/registry/b", Some(r0 + 3)).await.unwrap();
    assert_eq!(gone, kv("/registry/b", "1", r0 + 3, r0 + 4));
    assert_eq!(
        store.list("/registry/").await.unwrap(),
        (vec![kv("/registry/a", "3", r0 + 1, r0 + 3)], r0 + 4)
    );
    assert_eq!(
        store.get("/registry/a").await.unwrap(),
        Some(kv("/registry/a", "3", r0 + 1, r0 + 3))
    );

    // Another prefix on the same cluster sees none of it.
    let other = connect(&cluster, "/t2").await;
    assert_eq!(other.list("/registry/").await.unwrap().0, vec![]);
}

#[tokio::test]
async fn etcd_list_pages_at_one_revision() {
    let cluster = EtcdCluster::start(1);
    let store = connect(&cluster, "").await;
    for i in 0..1203 {
        store
            .create(format!("/registry/k/{i:05}"), "v")
            .await
            .unwrap();
    }
    let (kvs, rev) = store.list("/registry/k/").await.unwrap();
    assert_eq!(kvs.len(), 1203);
    assert_eq!(rev, store.current_revision());
    let keys: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "sorted, no duplicate across pages");
}

#[tokio::test]
async fn etcd_watch_replays_then_follows_another_handles_writes() {
    let cluster = EtcdCluster::start(1);
    let a = connect(&cluster, "/fed").await;
    let b = connect(&cluster, "/fed").await;
    let first = a.create("/registry/x", "1").await.unwrap();
    let second = a.update("/registry/x", "2", None).await.unwrap();
    a.create("/other/y", "1").await.unwrap();

    // B watches from the first write: replays the second, then follows A live.
    let mut w = b.watch("/registry/", first.mod_revision).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.kind, ev.kv.clone(), ev.prev_kv.clone()),
        (EventKind::Put, second.clone(), Some(first.clone()))
    );
    let deleted = a.delete("/registry/x", None).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.revision, ev.kind, ev.kv),
        (deleted.mod_revision, EventKind::Delete, deleted)
    );
    let created = a.create("/registry/z", "1").await.unwrap();
    assert_eq!(next(&mut w).await.kv, created);
    assert!(
        b.current_revision() >= created.mod_revision,
        "B saw A's revision through its watch"
    );

    // Compacted history: a watch from before it fails with Compacted.
    a.compact(created.mod_revision).await.unwrap();
    let mut old = b.watch("/registry/", first.mod_revision).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), old.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
}

#[tokio::test]
async fn etcd_store_loses_no_acknowledged_write_when_a_member_is_killed() {
    loses_no_acknowledged_write_when_a_member_is_killed(EtcdCluster::start(3)).await;
}

/// The same over TLS (`etcds://`: HTTPS to the members, client-certificate authentication,
/// TLS between the peers too), after checking that a client the members must not trust is
/// refused: no client certificate, a CA that did not sign the members' certificate, or
/// plain HTTP.
#[tokio::test]
async fn etcd_store_over_tls_loses_no_acknowledged_write_when_a_member_is_killed() {
    let cluster = EtcdCluster::start_tls(3);
    let pki = cluster.pki.clone().unwrap();
    let hosts = cluster
        .url("")
        .trim_start_matches("etcds://")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    for (why, url, want) in [
        (
            "no client certificate",
            format!("etcds://{hosts}?cacert={}", pki.ca.display()),
            "BadCertificate",
        ),
        (
            "members signed by another CA",
            format!(
                "etcds://{hosts}?cacert={}&cert={}&key={}",
                pki.other_ca.display(),
                pki.client_cert.display(),
                pki.client_key.display()
            ),
            "UnknownIssuer",
        ),
        ("plain HTTP", format!("etcd://{hosts}"), "connection closed"),
    ] {
        let Backend::Etcd(config) = url.parse::<Backend>().unwrap() else {
            panic!("not an etcd url")
        };
        let err = Store::connect_etcd(config, StoreOptions::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{why}: connected"));
        assert!(
            matches!(err, StoreError::Unavailable { .. }) && err.to_string().contains(want),
            "{why}: {err}"
        );
    }
    let store = connect(&cluster, "/tls").await;
    let created = store.create("/registry/tls", "v").await.unwrap();
    assert_eq!(store.get("/registry/tls").await.unwrap(), Some(created));
    drop(store);
    loses_no_acknowledged_write_when_a_member_is_killed(cluster).await;
}

/// 40 creates through one handle with the member it uses SIGKILLed at the 20th: every
/// acknowledged write is there once, the watch either carries on or ends `Unavailable`, and
/// the member, restarted, has every write.
async fn loses_no_acknowledged_write_when_a_member_is_killed(mut cluster: EtcdCluster) {
    let store = connect(&cluster, "").await;
    let mut w = store
        .watch("/registry/", store.current_revision())
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..40 {
        if i == 20 {
            // The first endpoint is the one in use: its connections break.
            cluster.kill(0);
        }
        let key = format!("/registry/w/{i:03}");
        // A write whose outcome is unknown is retried by the caller (it may exist already).
        for attempt in 0.. {
            match store.create(key.clone(), "v").await {
                Ok(kv) => {
                    acked.push(kv);
                    break;
                }
                Err(StoreError::AlreadyExists { .. }) => break,
                Err(StoreError::Unavailable { .. }) if attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("write {i}: {e}"),
            }
        }
    }
    let (kvs, _) = store.list("/registry/w/").await.unwrap();
    assert_eq!(kvs.len(), 40, "every write is there once");
    for kv in &acked {
        assert!(kvs.contains(kv), "acknowledged {kv:?} survives");
    }
    // The watch on the killed member ends with Unavailable (re-list and re-watch), or, if it
    // was on another member, carries on.
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), w.recv())
            .await
            .unwrap()
        {
            Some(Ok(_)) => {
                seen += 1;
                if seen == 40 {
                    break;
                }
            }
            Some(Err(StoreError::Unavailable { .. })) => break,
            other => panic!("watch: {other:?}"),
        }
    }
    let mut again = store.watch("/registry/w/", 0).await.unwrap();
    for _ in 0..40 {
        assert_eq!(next(&mut again).await.kind, EventKind::Put);
    }
    // The member comes back and catches up.
    cluster.restart(0);
    let Backend::Etcd(config) = cluster.url_of(&[0], "").parse::<Backend>().unwrap() else {
        panic!("not an etcd url")
    };
    let back = Store::connect_etcd(config, StoreOptions::default())
        .await
        .unwrap();
    let (kvs, _) = back.list("/registry/w/").await.unwrap();
    assert_eq!(
        kvs.len(),
        40,
        "the restarted member has every write (a linearizable read)"
    );
}
