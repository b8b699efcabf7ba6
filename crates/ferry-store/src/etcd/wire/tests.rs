//! The gateway's JSON, as etcd 3.4 writes it (answers copied from a real server).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::json;

use super::*;

fn kv(key: &str, value: &str, create_revision: u64, mod_revision: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision,
        mod_revision,
    }
}

fn wire_kv(key: &str, value: &str, create: u64, modr: u64) -> Value {
    json!({"key": b64(key.as_bytes()), "create_revision": create.to_string(),
           "mod_revision": modr.to_string(), "version": "1", "value": b64(value.as_bytes())})
}

#[test]
fn prefix_end_increments_the_last_byte_below_ff() {
    let cases: Vec<(&[u8], Vec<u8>)> = vec![
        (b"/registry/", b"/registry0".to_vec()),
        (b"a", b"b".to_vec()),
        (&[b'a', 0xff], b"b".to_vec()),
        (&[0xff, 0xff], vec![0]),
        (b"", vec![0]),
    ];
    for (prefix, want) in cases {
        assert_eq!(prefix_end(prefix), want, "{prefix:?}");
    }
}

#[test]
fn txn_compares_each_precondition_and_reads_every_key_on_failure() {
    let ops = vec![
        Op::Create {
            key: "/a".into(),
            value: Bytes::from_static(b"1"),
        },
        Op::Update {
            key: "/b".into(),
            value: Bytes::from_static(b"2"),
            expected_mod_revision: Some(7),
        },
        Op::Delete {
            key: "/c".into(),
            expected_mod_revision: None,
        },
    ];
    let (a, b, c) = (b64(b"/p/a"), b64(b"/p/b"), b64(b"/p/c"));
    assert_eq!(
        txn("/p", &ops),
        json!({
            "compare": [
                {"key": a, "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                {"key": b, "target": "MOD", "result": "EQUAL", "mod_revision": "7"},
                {"key": c, "target": "CREATE", "result": "GREATER", "create_revision": "0"},
            ],
            "success": [
                {"request_put": {"key": a, "value": b64(b"1"), "prev_kv": true}},
                {"request_put": {"key": b, "value": b64(b"2"), "prev_kv": true}},
                {"request_delete_range": {"key": c, "prev_kv": true}},
            ],
            "failure": [
                {"request_range": {"key": a}},
                {"request_range": {"key": b}},
                {"request_range": {"key": c}},
            ],
        })
    );
}

#[test]
fn txn_outcomes_map_to_results_or_the_first_failed_precondition() {
    let create = Op::Create {
        key: "/a".into(),
        value: Bytes::from_static(b"new"),
    };
    let update = |expected| Op::Update {
        key: "/a".into(),
        value: Bytes::from_static(b"new"),
        expected_mod_revision: expected,
    };
    let delete = Op::Delete {
        key: "/a".into(),
        expected_mod_revision: None,
    };
    let header = json!({"cluster_id": "1", "revision": "9"});
    let failed = |kvs: Value| json!({"header": header, "responses": [{"response_range": {"header": {"revision": "9"}, "kvs": kvs}}]});
    type Case = (&'static str, Op, Value, Result<(u64, Vec<KeyValue>)>);
    let cases: Vec<Case> = vec![
        (
            "create",
            create.clone(),
            json!({"header": header, "succeeded": true, "responses": [{"response_put": {"header": {"revision": "9"}}}]}),
            Ok((9, vec![kv("/a", "new", 9, 9)])),
        ),
        (
            "update keeps the create revision",
            update(Some(4)),
            json!({"header": header, "succeeded": true, "responses": [{"response_put": {"prev_kv": wire_kv("/p/a", "old", 2, 4)}}]}),
            Ok((9, vec![kv("/a", "new", 2, 9)])),
        ),
        (
            "delete returns the deleted value at the delete's revision",
            delete.clone(),
            json!({"header": header, "succeeded": true, "responses": [{"response_delete_range": {"deleted": "1", "prev_kvs": [wire_kv("/p/a", "old", 2, 4)]}}]}),
            Ok((9, vec![kv("/a", "old", 2, 9)])),
        ),
        (
            "create of a present key",
            create,
            failed(json!([wire_kv("/p/a", "old", 2, 4)])),
            Err(StoreError::AlreadyExists { key: "/a".into() }),
        ),
        (
            "update of an absent key",
            update(None),
            failed(Value::Null),
            Err(StoreError::NotFound { key: "/a".into() }),
        ),
        (
            "update at a stale revision",
            update(Some(3)),
            failed(json!([wire_kv("/p/a", "old", 2, 4)])),
            Err(StoreError::Conflict {
                key: "/a".into(),
                expected: 3,
                current: 4,
            }),
        ),
    ];
    for (name, op, answer, want) in cases {
        let got = txn_outcome("/p", &[op], &answer);
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{name}");
    }
}

#[test]
fn watch_lines_become_events_compactions_or_failures() {
    let put = wire_kv("/p/a", "2", 2, 5);
    let prev = wire_kv("/p/a", "1", 2, 3);
    let deleted = json!({"key": b64(b"/p/a"), "mod_revision": "6"});
    let cases: Vec<(&str, Value, WatchMessage)> = vec![
        (
            "created",
            json!({"result": {"header": {"revision": "4"}, "created": true}}),
            WatchMessage::Events(vec![]),
        ),
        (
            "put and delete",
            json!({"result": {"header": {"revision": "6"}, "events": [
                {"kv": put, "prev_kv": prev},
                {"type": "DELETE", "kv": deleted, "prev_kv": put},
            ]}}),
            WatchMessage::Events(vec![
                Event {
                    revision: 5,
                    kind: EventKind::Put,
                    kv: kv("/a", "2", 2, 5),
                    prev_kv: Some(kv("/a", "1", 2, 3)),
                },
                Event {
                    revision: 6,
                    kind: EventKind::Delete,
                    kv: kv("/a", "2", 2, 6),
                    prev_kv: Some(kv("/a", "2", 2, 5)),
                },
            ]),
        ),
        (
            "compacted",
            json!({"result": {"header": {}, "canceled": true, "compact_revision": "3"}}),
            WatchMessage::Compacted(3),
        ),
        (
            "canceled",
            json!({"result": {"canceled": true, "cancel_reason": "no leader"}}),
            WatchMessage::Failed("watch canceled: no leader".into()),
        ),
        (
            "gateway error",
            json!({"error": {"grpc_code": 14, "http_code": 503, "message": "unavailable"}}),
            WatchMessage::Failed("unavailable".into()),
        ),
    ];
    for (name, line, want) in cases {
        assert_eq!(watch_message("/p", &line).unwrap(), want, "{name}");
    }
}

#[test]
fn a_key_outside_the_prefix_is_corrupt() {
    let err = decode_kv("/p", &wire_kv("/q/a", "1", 1, 1)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}
