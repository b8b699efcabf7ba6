//! `kill -9` of ovsdb-server mid-run: the client reconnects by itself, the mirror
//! converges (resumed with `monitor_cond_since`), and guarded transactions issued around
//! the crash are applied exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_ovsdb::nb::{self, logical_switch as ls};
use ferry_ovsdb::{Client, Error, Mirror, Resume, wire};
use ferry_testkit::ovsdb::NbServer;
use serde_json::{Value, json};

const DB: &str = nb::DATABASE;
const WAIT: Duration = Duration::from_secs(20);
const RACERS: usize = 10;

/// Insert switch `name` unless it exists: a retry after an unknown outcome cannot duplicate it.
fn guarded_insert(name: &str) -> Vec<Value> {
    vec![
        wire::wait(
            ls::TABLE,
            vec![wire::eq(ls::NAME, name)],
            &[ls::NAME],
            true,
            vec![],
            Some(0),
        ),
        wire::insert(ls::TABLE, wire::row([(ls::NAME, json!(name))])),
    ]
}

fn names(m: &Mirror) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in m.table(ls::TABLE).into_iter().flat_map(|t| t.values()) {
        *out.entry(r[ls::NAME].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    out
}

async fn crash_and_restart(mut server: NbServer) -> Client {
    let mut config = nb::config([server.unix_remote()]);
    // Slow first retry, so that changes made right after the restart happen while we are
    // away and must come back through the resumed monitor.
    config.backoff_min = Duration::from_millis(1500);
    config.backoff_max = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(20);
    let c = Client::connect(config).await.expect("connect");
    server.nbctl(&["ls-add", "before"]);
    server.nbctl(&["ls-add", "doomed"]);
    c.wait_until(WAIT, |m| names(m).contains_key("doomed"))
        .await
        .expect("initial changes");

    // Guarded inserts racing the crash: some commit before it, some are in flight, some
    // are sent after it.
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                let name = format!("g{i}");
                let r = c.transact_retrying(DB, guarded_insert(&name), 10).await;
                (name, r)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(4)).await;
    server.kill();
    server.start();
    server.nbctl(&["ls-add", "while-away"]);
    server.nbctl(&["ls-del", "doomed"]);

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in racers {
        let (name, r) = r.await.expect("racer task");
        *outcomes
            .entry(if r.is_ok() {
                "ok"
            } else {
                "guard tripped on retry"
            })
            .or_default() += 1;
        match r {
            Ok(_) => {}
            // The first attempt committed but its reply was lost; the retry hit the guard.
            Err(Error::OpFailed {
                index: 0,
                ref error,
                ..
            }) if error == "timed out" => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    eprintln!("racer outcomes: {outcomes:?}");
    server.nbctl(&["ls-add", "after"]);

    let want: Vec<String> = ["before", "while-away", "after"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..RACERS).map(|i| format!("g{i}")))
        .collect();
    c.wait_until(WAIT, |m| {
        let n = names(m);
        want.iter().all(|w| n.contains_key(w)) && !n.contains_key("doomed")
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "mirror did not converge: {e}; have {:?}",
            c.with_mirror(names)
        )
    });

    // Exactly one row per guarded name, in the mirror and on the server.
    let counts = c.with_mirror(names);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    let rows = c
        .transact(DB, vec![wire::select(ls::TABLE, vec![], Some(&[ls::NAME]))])
        .await
        .expect("select");
    assert_eq!(
        rows[0]["rows"].as_array().map(Vec::len),
        Some(want.len()),
        "{rows:?}"
    );

    // The mirror equals what a fresh client sees.
    let fresh = Client::connect(nb::config([server.unix_remote()]))
        .await
        .expect("fresh");
    assert_eq!(
        fresh.snapshot().tables(),
        c.snapshot().tables(),
        "mirror converged to the server's state"
    );
    assert!(c.status().connects >= 2, "{:?}", c.status());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn standalone_db_kill_9_reconnects_with_full_snapshot_and_no_duplicates() {
    let c = crash_and_restart(NbServer::standalone()).await;
    // A standalone ovsdb-server 3.1 keeps no transaction history (its update3 ids are all
    // zero), so monitor_cond_since answers found=false with a snapshot.
    assert_eq!(c.status().last_resume, Some(Resume::Snapshot));
    assert_eq!(
        c.with_mirror(|m| m.last_txn_id().map(str::to_owned))
            .as_deref(),
        Some("00000000-0000-0000-0000-000000000000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn clustered_db_kill_9_resumes_from_last_txn_id_and_no_duplicates() {
    let c = crash_and_restart(NbServer::clustered()).await;
    assert_eq!(
        c.status().last_resume,
        Some(Resume::Changes),
        "{:?}",
        c.status()
    );
}
