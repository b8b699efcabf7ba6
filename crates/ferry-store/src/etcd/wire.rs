//! etcd v3's JSON API (its gRPC gateway, `/v3/...`) as plain functions: request bodies built
//! from store operations, and answers turned back into [`KeyValue`]s, [`Event`]s and
//! [`StoreError`]s. No I/O here; `client` sends what these build.
//!
//! The gateway's conventions: keys and values are base64, 64-bit integers are JSON strings,
//! and fields at their default value (0, false, PUT, empty) are left out of answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::{Event, EventKind, KeyValue, Op, Result, StoreError};

/// Gateway paths of etcd 3.4 (3.3 also served them under `/v3beta/`).
pub(crate) const RANGE: &str = "/v3/kv/range";
pub(crate) const TXN: &str = "/v3/kv/txn";
pub(crate) const COMPACTION: &str = "/v3/kv/compaction";
pub(crate) const WATCH: &str = "/v3/watch";

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// An integer field: the gateway writes int64 as a string, absent when 0.
pub(crate) fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with its
/// last byte below 0xff incremented (etcd's `GetPrefixRangeEnd`); `\0` (every key) when none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A range over every key under `prefix` at `revision` (0: the latest), starting at `from`
/// (inclusive, a full key), at most `limit` keys.
pub(crate) fn range_prefix(prefix: &str, from: &str, revision: u64, limit: u64) -> Value {
    json!({
        "key": b64(from.as_bytes()),
        "range_end": b64(&prefix_end(prefix.as_bytes())),
        "revision": revision.to_string(),
        "limit": limit.to_string(),
    })
}

/// A range reading one key.
pub(crate) fn range_key(key: &str) -> Value {
    json!({"key": b64(key.as_bytes())})
}

/// The txn applying `ops` at once: one compare per op (its precondition), the writes on
/// success, and a read of every key on failure so the failed precondition can be named.
/// `prefix` is prepended to every key.
pub(crate) fn txn(prefix: &str, ops: &[Op]) -> Value {
    let key = |k: &str| b64(format!("{prefix}{k}").as_bytes());
    let mut compare = Vec::new();
    let mut success = Vec::new();
    let mut failure = Vec::new();
    for op in ops {
        let k = key(op.key());
        compare.push(match op {
            Op::Create { .. } => {
                json!({"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
            }
            Op::Update {
                expected_mod_revision: Some(rev),
                ..
            }
            | Op::Delete {
                expected_mod_revision: Some(rev),
                ..
            } => json!({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()}),
            Op::Update { .. } | Op::Delete { .. } => {
                json!({"key": k, "target": "CREATE", "result": "GREATER", "create_revision": "0"})
            }
        });
        success.push(match op {
            Op::Create { value, .. } | Op::Update { value, .. } => {
                json!({"request_put": {"key": k, "value": b64(value), "prev_kv": true}})
            }
            Op::Delete { .. } => json!({"request_delete_range": {"key": k, "prev_kv": true}}),
        });
        failure.push(json!({"request_range": {"key": k}}));
    }
    json!({"compare": compare, "success": success, "failure": failure})
}

/// The results of a txn built by [`txn`] from the same `ops`: the revision it wrote and one
/// [`KeyValue`] per op, or the first op's failed precondition.
pub(crate) fn txn_outcome(
    prefix: &str,
    ops: &[Op],
    answer: &Value,
) -> Result<(u64, Vec<KeyValue>)> {
    let revision = num(&answer["header"]["revision"]);
    let responses = answer["responses"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if responses.len() != ops.len() {
        return Err(StoreError::Internal(
            "etcd txn: one response per op expected",
        ));
    }
    if answer["succeeded"].as_bool() != Some(true) {
        for (op, resp) in ops.iter().zip(responses) {
            let current = match resp["response_range"]["kvs"]
                .as_array()
                .and_then(|k| k.first())
            {
                Some(kv) => Some(decode_kv(prefix, kv)?),
                None => None,
            };
            if let Some(e) = precondition_error(op, current.as_ref()) {
                return Err(e);
            }
        }
        return Err(StoreError::Internal(
            "etcd txn failed but every precondition holds",
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (op, resp) in ops.iter().zip(responses) {
        out.push(match op {
            Op::Create { key, value } | Op::Update { key, value, .. } => {
                let prev = &resp["response_put"]["prev_kv"];
                KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: if prev.is_object() {
                        num(&prev["create_revision"])
                    } else {
                        revision
                    },
                    mod_revision: revision,
                }
            }
            Op::Delete { key, .. } => {
                let prev = resp["response_delete_range"]["prev_kvs"]
                    .as_array()
                    .and_then(|k| k.first())
                    .ok_or(StoreError::Internal("etcd delete: no previous value"))?;
                let prev = decode_kv(prefix, prev)?;
                KeyValue {
                    key: key.clone(),
                    value: prev.value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                }
            }
        });
    }
    Ok((revision, out))
}

/// Why `op` cannot apply to a key whose current value is `current`, if it cannot.
fn precondition_error(op: &Op, current: Option<&KeyValue>) -> Option<StoreError> {
    match (op, current) {
        (Op::Create { key, .. }, Some(_)) => Some(StoreError::AlreadyExists { key: key.clone() }),
        (Op::Create { .. }, None) => None,
        (Op::Update { key, .. } | Op::Delete { key, .. }, None) => {
            Some(StoreError::NotFound { key: key.clone() })
        }
        (
            Op::Update {
                key,
                expected_mod_revision: Some(expected),
                ..
            }
            | Op::Delete {
                key,
                expected_mod_revision: Some(expected),
            },
            Some(kv),
        ) if *expected != kv.mod_revision => Some(StoreError::Conflict {
            key: key.clone(),
            expected: *expected,
            current: kv.mod_revision,
        }),
        _ => None,
    }
}

/// One `mvccpb.KeyValue`, its key with `prefix` removed.
pub(crate) fn decode_kv(prefix: &str, kv: &Value) -> Result<KeyValue> {
    let corrupt = |reason| StoreError::Corrupt {
        what: "etcd key",
        at: kv["key"].as_str().unwrap_or_default().to_owned(),
        reason,
    };
    let key = B64
        .decode(kv["key"].as_str().unwrap_or_default())
        .map_err(|_| corrupt("key is not base64"))?;
    let key = String::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
    let key = key
        .strip_prefix(prefix)
        .ok_or_else(|| corrupt("key outside the store's prefix"))?
        .to_owned();
    let value = B64
        .decode(kv["value"].as_str().unwrap_or_default())
        .map_err(|_| corrupt("value is not base64"))?;
    Ok(KeyValue {
        key,
        value: Bytes::from(value),
        create_revision: num(&kv["create_revision"]),
        mod_revision: num(&kv["mod_revision"]),
    })
}

/// The keys of a range answer, whether more remain, and the revision it was read at.
pub(crate) fn range_outcome(prefix: &str, answer: &Value) -> Result<(Vec<KeyValue>, bool, u64)> {
    let kvs = answer["kvs"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|kv| decode_kv(prefix, kv))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        kvs,
        answer["more"].as_bool().unwrap_or(false),
        num(&answer["header"]["revision"]),
    ))
}

/// The watch stream's opening request: every key under `prefix` from revision `start`, with
/// previous values (a delete's value is its previous one).
pub(crate) fn watch_create(prefix: &str, start: u64) -> Value {
    json!({"create_request": {
        "key": b64(prefix.as_bytes()),
        "range_end": b64(&prefix_end(prefix.as_bytes())),
        "start_revision": start.to_string(),
        "prev_kv": true,
    }})
}

/// What one line of the watch stream says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WatchMessage {
    /// Changes, in revision order (possibly none: the creation notice or a progress notice).
    Events(Vec<Event>),
    /// The history the watch asked for is compacted up to this revision.
    Compacted(u64),
    /// etcd ended the watch for another reason, or the gateway reported an error.
    Failed(String),
}

/// Decodes one line of the watch stream (`{"result": WatchResponse}` or `{"error": ...}`).
pub(crate) fn watch_message(prefix: &str, line: &Value) -> Result<WatchMessage> {
    if let Some(err) = line.get("error") {
        return Ok(WatchMessage::Failed(
            err["message"].as_str().unwrap_or("watch error").to_owned(),
        ));
    }
    let result = &line["result"];
    let compacted = num(&result["compact_revision"]);
    if compacted > 0 {
        return Ok(WatchMessage::Compacted(compacted));
    }
    if result["canceled"].as_bool() == Some(true) {
        return Ok(WatchMessage::Failed(format!(
            "watch canceled: {}",
            result["cancel_reason"]
                .as_str()
                .unwrap_or("no reason given")
        )));
    }
    let mut events = Vec::new();
    for ev in result["events"].as_array().map_or(&[][..], Vec::as_slice) {
        let kv = decode_kv(prefix, &ev["kv"])?;
        let prev_kv = match &ev["prev_kv"] {
            v if v.is_object() => Some(decode_kv(prefix, v)?),
            _ => None,
        };
        let revision = kv.mod_revision;
        events.push(if ev["type"].as_str() == Some("DELETE") {
            // A delete carries only the key; its value is the one it removed.
            let prev = prev_kv.clone();
            Event {
                revision,
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: kv.key,
                    value: prev.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
                    create_revision: prev.map_or(0, |p| p.create_revision),
                    mod_revision: revision,
                },
                prev_kv,
            }
        } else {
            Event {
                revision,
                kind: EventKind::Put,
                kv,
                prev_kv,
            }
        });
    }
    Ok(WatchMessage::Events(events))
}

/// An error answer of the gateway (`{"error", "message", "code"}`, `code` a gRPC code).
pub(crate) fn error_of(answer: &Value) -> (u64, String) {
    (
        num(&answer["code"]),
        answer["message"]
            .as_str()
            .or_else(|| answer["error"].as_str())
            .unwrap_or("no message")
            .to_owned(),
    )
}

#[cfg(test)]
mod tests;
