//! A 3-member RAFT cluster: the client picks the leader out of a list of remotes, and
//! follows the new leader when the old one is killed; over unix sockets and over `ssl:`
//! (production's `ssl:a:6641,ssl:b:6641,ssl:c:6641`).

use std::time::{Duration, Instant};

use ferry_ovsdb::nb::{self, logical_switch as ls};
use ferry_ovsdb::{Client, Config, TlsConfig, wire};
use ferry_testkit::ovsdb::NbServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// `(leader, connected)` of the NB database on one member, read from `_Server`.
async fn role(remote: &str) -> Option<(bool, bool)> {
    let mut config = Config::new([remote], nb::DATABASE);
    config.leader_only = false;
    config.request_timeout = Duration::from_secs(2);
    let c = Client::connect(config).await.ok()?;
    let r = c
        .transact(
            "_Server",
            vec![wire::select(
                "Database",
                vec![wire::eq("name", nb::DATABASE)],
                Some(&["leader", "connected"]),
            )],
        )
        .await
        .ok()?;
    let row = &r[0]["rows"][0];
    Some((
        row["leader"] == json!(true),
        row["connected"] == json!(true),
    ))
}

/// Waits until every listed member is connected and exactly one is leader; returns its index.
async fn leader_of(members: &[&NbServer]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut roles = Vec::new();
        for m in members {
            roles.push(role(&m.unix_remote()).await);
        }
        let all_connected = roles.iter().all(|r| matches!(r, Some((_, true))));
        let leaders: Vec<usize> = (0..roles.len())
            .filter(|&i| matches!(roles[i], Some((true, true))))
            .collect();
        if all_connected && leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle: {roles:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn client_prefers_the_leader_and_follows_a_new_one_after_kill_9() {
    follows_the_leader(NbServer::cluster(3), NbServer::unix_remote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn over_ssl_the_client_prefers_the_leader_and_follows_a_new_one_after_kill_9() {
    follows_the_leader(NbServer::cluster_tls(3), NbServer::ssl_remote).await;
}

async fn follows_the_leader(mut members: Vec<NbServer>, remote: fn(&NbServer) -> String) {
    let leader = leader_of(&members.iter().collect::<Vec<_>>()).await;

    // Followers first in the list: the client must skip them.
    let mut order: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    order.push(leader);
    let remotes: Vec<String> = order.iter().map(|&i| remote(&members[i])).collect();
    let mut config = nb::config(remotes.clone());
    if let Some(p) = &members[0].pki {
        config.tls = Some(TlsConfig::from_files(
            &p.client.private_key,
            &p.client.certificate,
            &p.pki.ca_cert,
        ));
    }
    config.request_timeout = Duration::from_secs(20);
    config.backoff_max = Duration::from_millis(500);
    let c = Client::connect(config).await.expect("connect");
    assert_eq!(
        c.status().connected,
        Some(remote(&members[leader])),
        "connected to the leader"
    );

    c.transact(
        nb::DATABASE,
        vec![wire::insert(
            ls::TABLE,
            wire::row([(ls::NAME, json!("one"))]),
        )],
    )
    .await
    .expect("write through the leader");

    members[leader].kill();
    let rest: Vec<&NbServer> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| &members[i])
        .collect();
    let new_leader = remote(rest[leader_of(&rest).await]);

    // A guarded write issued while the client reconnects goes to the new leader, once.
    let ops = vec![
        wire::wait(
            ls::TABLE,
            vec![wire::eq(ls::NAME, "two")],
            &[ls::NAME],
            true,
            vec![],
            Some(0),
        ),
        wire::insert(ls::TABLE, wire::row([(ls::NAME, json!("two"))])),
    ];
    match c.transact_retrying(nb::DATABASE, ops, 20).await {
        Ok(_) => {}
        Err(ferry_ovsdb::Error::OpFailed { index: 0, .. }) => {}
        Err(e) => panic!("write after failover: {e}"),
    }
    rest[0].nbctl(&["--no-leader-only", "ls-add", "three"]);
    c.wait_until(WAIT, |m| {
        ["one", "two", "three"]
            .iter()
            .all(|n| !m.find(ls::TABLE, ls::NAME, &json!(n)).is_empty())
    })
    .await
    .expect("mirror follows the new leader");
    assert_eq!(c.status().connected, Some(new_leader), "{:?}", c.status());
    assert_eq!(
        c.with_mirror(|m| m.table(ls::TABLE).map(|t| t.len())),
        Some(3),
        "no duplicates"
    );
}
