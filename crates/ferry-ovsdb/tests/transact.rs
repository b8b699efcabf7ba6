//! `transact` and every operation kind against a real ovsdb-server with the NB schema.

use ferry_ovsdb::nb::{
    self, load_balancer as lb, logical_switch as ls, logical_switch_port as lsp,
};
use ferry_ovsdb::{Client, Config, Error, wire};
use ferry_testkit::ovsdb::NbServer;
use serde_json::{Value, json};

const DB: &str = nb::DATABASE;

async fn client(server: &NbServer) -> Client {
    Client::connect(nb::config([server.unix_remote()]))
        .await
        .expect("connect")
}

fn uuid_of(result: &Value) -> String {
    wire::as_uuid(&result["uuid"])
        .expect("insert result has uuid")
        .to_owned()
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn list_dbs_and_get_schema_over_unix_and_tcp() {
    let server = NbServer::standalone();
    for remote in [server.unix_remote(), server.tcp_remote()] {
        let c = Client::connect(Config::new([remote.clone()], DB))
            .await
            .expect(&remote);
        let dbs = c.list_dbs().await.expect("list_dbs");
        assert!(dbs.contains(&DB.to_owned()), "{remote}: {dbs:?}");
        let schema = c.get_schema(DB).await.expect("get_schema");
        assert_eq!(schema["name"], DB, "{remote}");
        assert_eq!(c.status().connected.as_deref(), Some(remote.as_str()));
    }
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn insert_named_uuid_refs_then_select_update_mutate_delete() {
    let server = NbServer::standalone();
    let c = client(&server).await;

    // insert with uuid-name: a port and the switch that references it, in one transaction.
    let r = c
        .transact(
            DB,
            vec![
                wire::insert_named(lsp::TABLE, "p", wire::row([(lsp::NAME, json!("p1"))])),
                wire::insert_named(
                    ls::TABLE,
                    "s",
                    wire::row([
                        (ls::NAME, json!("sw1")),
                        (ls::PORTS, wire::set([wire::named_uuid("p")])),
                    ]),
                ),
                wire::comment("ferry-ovsdb test: insert"),
            ],
        )
        .await
        .expect("insert");
    assert_eq!(r.len(), 3);
    let (port, sw) = (uuid_of(&r[0]), uuid_of(&r[1]));
    assert_eq!(r[2], json!({}), "comment result");

    // The mirror already shows both rows: no waiting.
    c.with_mirror(|m| {
        let row = m.row(ls::TABLE, &sw).expect("switch mirrored on return");
        assert_eq!(row[ls::PORTS], json!(["set", [["uuid", port]]]));
        assert_eq!(
            row[ls::EXTERNAL_IDS],
            json!(["map", []]),
            "defaults filled in"
        );
    });

    // select
    let r = c
        .transact(
            DB,
            vec![wire::select(
                ls::TABLE,
                vec![wire::eq(ls::NAME, "sw1")],
                Some(&[ls::NAME, ls::PORTS]),
            )],
        )
        .await
        .expect("select");
    assert_eq!(
        r[0]["rows"][0]["ports"],
        json!(["uuid", port]),
        "one-element set sent as the atom"
    );

    // update + mutate (map insert, set delete)
    c.transact(
        DB,
        vec![
            wire::update(
                ls::TABLE,
                vec![wire::by_uuid(&sw)],
                wire::row([(ls::OTHER_CONFIG, wire::map([("subnet", "10.0.0.0/24")]))]),
            ),
            wire::mutate(
                ls::TABLE,
                vec![wire::by_uuid(&sw)],
                vec![
                    wire::mutation(
                        ls::EXTERNAL_IDS,
                        "insert",
                        wire::map([("ferry.io/owner", "Subnet/s1")]),
                    ),
                    wire::mutation(ls::PORTS, "delete", wire::set([wire::uuid(&port)])),
                ],
            ),
        ],
    )
    .await
    .expect("update+mutate");
    c.with_mirror(|m| {
        let row = m.row(ls::TABLE, &sw).expect("switch");
        assert_eq!(
            wire::map_get(&row[ls::OTHER_CONFIG], "subnet"),
            Some(&json!("10.0.0.0/24"))
        );
        assert_eq!(
            wire::map_get(&row[ls::EXTERNAL_IDS], "ferry.io/owner"),
            Some(&json!("Subnet/s1"))
        );
        assert_eq!(row[ls::PORTS], json!(["set", []]));
        assert!(
            m.row(lsp::TABLE, &port).is_none(),
            "unreferenced port garbage-collected"
        );
    });

    // delete reports the count
    let r = c
        .transact(
            DB,
            vec![wire::delete(ls::TABLE, vec![wire::eq(ls::NAME, "sw1")])],
        )
        .await
        .expect("delete");
    assert_eq!(r[0]["count"], 1);
    c.with_mirror(|m| assert!(m.table(ls::TABLE).expect("table").is_empty()));
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn insert_with_caller_uuid_is_accepted_once_by_ovs_3_1() {
    let server = NbServer::standalone();
    let c = client(&server).await;
    let id = uuid::Uuid::new_v4().to_string();
    let op = wire::insert_with_uuid(
        lb::TABLE,
        &id,
        wire::row([
            (lb::NAME, json!("svc1")),
            (
                lb::VIPS,
                wire::map([("10.96.0.10:80", "10.0.1.5:8080,10.0.1.6:8080")]),
            ),
        ]),
    );
    let r = c
        .transact(DB, vec![op.clone()])
        .await
        .expect("insert with uuid");
    assert_eq!(uuid_of(&r[0]), id, "server kept the caller's uuid");
    assert!(c.snapshot().row(lb::TABLE, &id).is_some());

    let err = c
        .transact(DB, vec![op])
        .await
        .expect_err("second insert must fail");
    match &err {
        Error::OpFailed {
            index: 0,
            op,
            error,
            ..
        } => {
            assert_eq!(op, "insert");
            assert!(error.contains("duplicate"), "{err}");
        }
        other => panic!("want OpFailed, got {other:?}"),
    }
    assert_eq!(c.snapshot().table(lb::TABLE).map(|t| t.len()), Some(1));
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn wait_guard_assert_lock_abort_and_commit_errors_are_typed() {
    let server = NbServer::standalone();
    let c = client(&server).await;
    let guarded = |name: &str| {
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
    };
    c.transact(DB, guarded("g"))
        .await
        .expect("first guarded insert");
    let err = c.transact(DB, guarded("g")).await.expect_err("guard trips");
    assert!(
        matches!(&err, Error::OpFailed { index: 0, op, error, .. } if op == "wait" && error == "timed out"),
        "{err:?}"
    );
    assert!(err.to_string().contains("operation 0 (wait)"), "{err}");

    // wait until != : holds (a row exists), so the transaction goes on.
    let g_row = wire::row([(ls::NAME, json!("g"))]);
    c.transact(
        DB,
        vec![wire::wait(
            ls::TABLE,
            vec![wire::eq(ls::NAME, "g")],
            &[ls::NAME],
            false,
            vec![],
            Some(0),
        )],
    )
    .await
    .expect("wait != []");
    c.transact(
        DB,
        vec![wire::wait(
            ls::TABLE,
            vec![wire::eq(ls::NAME, "g")],
            &[ls::NAME],
            true,
            vec![g_row],
            Some(0),
        )],
    )
    .await
    .expect("wait == [g]");

    // assert: fails without the lock, passes once this connection holds it.
    let err = c
        .transact(DB, vec![wire::assert_lock("ferry")])
        .await
        .expect_err("no lock");
    assert!(
        matches!(&err, Error::OpFailed { op, error, .. } if op == "assert" && error == "not owner"),
        "{err:?}"
    );
    let locked = c.call("lock", json!(["ferry"])).await.expect("lock");
    assert_eq!(locked["locked"], true);
    c.transact(DB, vec![wire::assert_lock("ferry"), wire::commit(true)])
        .await
        .expect("assert with lock");

    // abort
    let err = c
        .transact(
            DB,
            vec![
                wire::insert(ls::TABLE, wire::row([(ls::NAME, json!("never"))])),
                wire::abort(),
            ],
        )
        .await
        .expect_err("abort");
    assert!(
        matches!(&err, Error::OpFailed { index: 1, op, error, .. } if op == "abort" && error == "aborted"),
        "{err:?}"
    );

    // commit failure: Logical_Switch_Port.name is a unique index.
    let two = |n: &str| {
        vec![
            wire::insert_named(lsp::TABLE, "a", wire::row([(lsp::NAME, json!(n))])),
            wire::insert_named(lsp::TABLE, "b", wire::row([(lsp::NAME, json!(n))])),
            wire::insert(
                ls::TABLE,
                wire::row([
                    (ls::NAME, json!("holder")),
                    (
                        ls::PORTS,
                        wire::set([wire::named_uuid("a"), wire::named_uuid("b")]),
                    ),
                ]),
            ),
        ]
    };
    let err = c
        .transact(DB, two("dup"))
        .await
        .expect_err("index violation");
    assert!(
        matches!(&err, Error::CommitFailed { error, .. } if error == "constraint violation"),
        "{err:?}"
    );

    // A JSON-RPC level error names the method.
    let err = c
        .transact("No_Such_DB", vec![])
        .await
        .expect_err("unknown db");
    assert!(
        matches!(&err, Error::Rpc { method, .. } if method == "transact"),
        "{err:?}"
    );

    let names: Vec<String> = c.with_mirror(|m| {
        m.table(ls::TABLE)
            .expect("t")
            .values()
            .map(|r| r[ls::NAME].as_str().unwrap_or("").to_owned())
            .collect()
    });
    assert_eq!(
        names,
        vec!["g".to_owned()],
        "nothing from failed transactions was written"
    );
}

#[tokio::test]
async fn ssl_remote_without_tls_material_is_refused_with_its_name() {
    let err = Client::start(Config::new(["ssl:10.0.0.1:6641"], DB)).expect_err("ssl");
    assert!(
        matches!(&err, Error::TlsNotConfigured { remote } if remote == "ssl:10.0.0.1:6641"),
        "{err:?}"
    );
}
