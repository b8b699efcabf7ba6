//! The mirror follows changes made by another client (`ovn-nbctl`), with each monitor
//! method, and the connection survives the server's inactivity probe.

use std::time::Duration;

use ferry_ovsdb::nb::{self, logical_switch as ls, logical_switch_port as lsp};
use ferry_ovsdb::{Client, Config, Mirror, MonitorMethod, Resume, wire};
use ferry_testkit::ovsdb::NbServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn switch(m: &Mirror, name: &str) -> Option<(String, wire::Row)> {
    m.find(ls::TABLE, ls::NAME, &json!(name)).into_iter().next()
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn mirror_follows_another_clients_inserts_updates_and_deletes_with_every_monitor_method() {
    let server = NbServer::standalone();
    for (i, method) in [
        MonitorMethod::CondSince,
        MonitorMethod::Cond,
        MonitorMethod::Plain,
    ]
    .into_iter()
    .enumerate()
    {
        let mut config = nb::config([server.unix_remote()]);
        config.monitor_method = Some(method);
        let c = Client::connect(config).await.expect("connect");
        assert_eq!(c.status().monitor_method, Some(method));
        let name = format!("x{i}");

        // An existing row from the previous round arrives in the initial snapshot.
        if i > 0 {
            let prev = format!("x{}", i - 1);
            assert!(
                c.with_mirror(|m| switch(m, &prev).is_some()),
                "{method:?}: initial snapshot"
            );
        }

        server.nbctl(&["ls-add", &name]);
        c.wait_until(WAIT, |m| switch(m, &name).is_some())
            .await
            .expect("insert seen");

        // modify: a set column gains elements, a map column gains a key.
        server.nbctl(&["lsp-add", &name, &format!("{name}-p1")]);
        server.nbctl(&["lsp-add", &name, &format!("{name}-p2")]);
        server.nbctl(&[
            "set",
            "Logical_Switch",
            &name,
            "external_ids:owner=ferry",
            "other_config:a=1",
        ]);
        c.wait_until(WAIT, |m| {
            switch(m, &name).is_some_and(|(_, r)| {
                wire::set_elements(&r[ls::PORTS]).len() == 2
                    && wire::map_get(&r[ls::EXTERNAL_IDS], "owner") == Some(&json!("ferry"))
            })
        })
        .await
        .expect("modify seen");

        // modify: one element out, a map value changed, a key removed.
        server.nbctl(&["lsp-del", &format!("{name}-p1")]);
        server.nbctl(&["set", "Logical_Switch", &name, "external_ids:owner=other"]);
        server.nbctl(&["remove", "Logical_Switch", &name, "other_config", "a"]);
        c.wait_until(WAIT, |m| {
            switch(m, &name).is_some_and(|(_, r)| {
                wire::map_get(&r[ls::EXTERNAL_IDS], "owner") == Some(&json!("other"))
                    && r[ls::OTHER_CONFIG] == json!(["map", []])
            })
        })
        .await
        .expect("second modify seen");
        c.with_mirror(|m| {
            let (_, r) = switch(m, &name).expect("switch");
            let ports = wire::set_elements(&r[ls::PORTS]);
            assert_eq!(ports.len(), 1, "{method:?}: {r:?}");
            let p = wire::as_uuid(ports[0]).expect("uuid");
            assert_eq!(
                m.row(lsp::TABLE, p).map(|p| p[lsp::NAME].clone()),
                Some(json!(format!("{name}-p2")))
            );
        });

        // delete (the switch and, by garbage collection, its port).
        server.nbctl(&["ls-add", &format!("{name}-tmp")]);
        server.nbctl(&["ls-del", &format!("{name}-tmp")]);
        c.wait_until(WAIT, |m| {
            switch(m, &format!("{name}-tmp")).is_none() && switch(m, &name).is_some()
        })
        .await
        .expect("delete seen");
        let out = server.nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Logical_Switch",
            &format!("name={name}"),
        ]);
        assert!(
            c.with_mirror(|m| m.row(ls::TABLE, &out).is_some()),
            "mirror keyed by the real uuid {out}"
        );
        assert_eq!(c.status().last_resume, Some(Resume::Snapshot));
    }
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn mirror_of_selected_columns_only_and_unknown_table_is_an_error() {
    let server = NbServer::standalone();
    server.nbctl(&[
        "ls-add",
        "a",
        "--",
        "set",
        "Logical_Switch",
        "a",
        "external_ids:k=v",
    ]);
    let c = Client::connect(
        Config::new([server.unix_remote()], nb::DATABASE).monitor_table(ls::TABLE, &[ls::NAME]),
    )
    .await
    .expect("connect");
    c.with_mirror(|m| {
        let (_, row) = switch(m, "a").expect("a");
        assert_eq!(
            row.keys().collect::<Vec<_>>(),
            vec!["name"],
            "only the monitored column"
        );
    });

    let mut bad =
        Config::new([server.unix_remote()], nb::DATABASE).monitor_table("No_Such_Table", &[]);
    bad.request_timeout = Duration::from_secs(2);
    let err = Client::connect(bad).await.expect_err("unknown table");
    assert!(err.to_string().contains("No_Such_Table"), "{err}");
}

/// ovsdb-server probes an idle TCP client with `echo` after 5 s and drops it if no reply
/// comes within another 5 s. With our own echo turned far down, only answering the
/// server's echo keeps the connection.
#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn idle_tcp_connection_survives_the_servers_inactivity_probe() {
    let server = NbServer::standalone();
    let mut config = nb::config([server.tcp_remote()]);
    config.echo_interval = Duration::from_secs(3600);
    let c = Client::connect(config).await.expect("connect");
    tokio::time::sleep(Duration::from_secs(12)).await;
    server.nbctl(&["ls-add", "after-idle"]);
    c.wait_until(WAIT, |m| switch(m, "after-idle").is_some())
        .await
        .expect("still monitoring");
    assert_eq!(
        c.status().connects,
        1,
        "never reconnected: {:?}",
        c.status()
    );
    let log = std::fs::read_to_string(server.dir.path().join("ovsdb-server.log")).expect("log");
    assert!(
        !log.contains("no response to inactivity probe"),
        "server dropped us:\n{log}"
    );
}
