//! `kill -9` loses no acknowledged write.
//!
//! The test re-executes its own binary as a child (selected by an environment variable) that
//! writes keys from 64 concurrent tasks and prints `ACK <key> <revision>` for each write the
//! store acknowledged. The parent SIGKILLs it mid-flight, reopens the database and checks that
//! every acknowledged key is there with its value and revision, and that the revisions are
//! whole: one per stored key, 1..=current, all replayable by a watch.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_store::{Store, StoreOptions};

const CHILD_ENV: &str = "FERRY_STORE_CRASH_CHILD";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
const WRITERS: usize = 64;
const KILL_AFTER_ACKS: usize = 3000;

fn value_for(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    match std::env::var(CHILD_ENV) {
        Ok(path) => child(&path),
        Err(_) => parent(),
    }
}

/// Writes until killed, printing each acknowledgement.
fn child(path: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(path, StoreOptions::default()).unwrap();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/crash/{w:02}/{i:08}");
                        let kv = store.create(key.clone(), value_for(&key)).await.unwrap();
                        // stdout is line-buffered: each line leaves the process when printed.
                        println!("ACK {key} {}", kv.mod_revision);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (key, rev) = rest.split_once(' ').unwrap();
        acked.insert(key.to_owned(), rev.parse().unwrap());
        if !killed && (acked.len() >= KILL_AFTER_ACKS || Instant::now() > deadline) {
            // SIGKILL, then keep reading: lines already printed were acknowledged too.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "child exited by itself ({status}) after {} acks",
        acked.len()
    );
    assert!(acked.len() >= KILL_AFTER_ACKS, "only {} acks", acked.len());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let current = store.current_revision();
        for (key, rev) in &acked {
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(&kv.value[..], &value_for(key)[..], "{key}");
            assert_eq!((kv.create_revision, kv.mod_revision), (*rev, *rev), "{key}");
        }
        let max_acked = acked.values().max().copied().unwrap_or(0);
        assert!(
            current >= max_acked,
            "revision {current} < acked {max_acked}"
        );

        // Every revision is one create: the stored keys use exactly 1..=current.
        let (items, list_rev) = store.list("/crash/").await.unwrap();
        assert_eq!(list_rev, current);
        let revisions: BTreeSet<u64> = items.iter().map(|kv| kv.mod_revision).collect();
        assert_eq!(revisions.len(), items.len());
        assert_eq!(revisions, (1..=current).collect());

        // And the log replays them all, in order.
        let mut w = store.watch("/crash/", 0).await.unwrap();
        for want in 1..=current {
            let ev = w.recv().await.unwrap().unwrap();
            assert_eq!(ev.revision, want);
        }
        eprintln!(
            "crash test: {} acknowledged, {} durable (revision {current}), {} in flight at kill",
            acked.len(),
            items.len(),
            items.len() - acked.len()
        );
    });
}
