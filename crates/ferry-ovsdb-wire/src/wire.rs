//! OVSDB wire notation (RFC 7047 section 5.1) as plain `serde_json::Value`s, and
//! builders for every transaction operation (section 5.2).
//!
//! Values stay JSON so that `ferry-net` can compute rows and operations without an OVSDB
//! client: `["uuid","…"]`, `["named-uuid","…"]`, `["set",[…]]`, `["map",[[k,v],…]]`.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

/// A row in wire notation: column name -> value.
pub type Row = Map<String, Value>;

// === values ===

/// `["uuid", id]`.
pub fn uuid(id: &str) -> Value {
    json!(["uuid", id])
}

/// `["named-uuid", name]`: refers to a row inserted earlier in the same transaction.
pub fn named_uuid(name: &str) -> Value {
    json!(["named-uuid", name])
}

/// `["set", [atoms…]]`.
pub fn set<I: IntoIterator<Item = Value>>(atoms: I) -> Value {
    json!(["set", atoms.into_iter().collect::<Vec<_>>()])
}

/// `["map", [[key, value]…]]`.
pub fn map<K: Into<Value>, V: Into<Value>, I: IntoIterator<Item = (K, V)>>(pairs: I) -> Value {
    let pairs: Vec<Value> = pairs
        .into_iter()
        .map(|(k, v)| Value::Array(vec![k.into(), v.into()]))
        .collect();
    json!(["map", pairs])
}

/// The id inside `["uuid", id]`.
pub fn as_uuid(v: &Value) -> Option<&str> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(id)]) if tag == "uuid" => Some(id),
        _ => None,
    }
}

/// The elements of a set value: `["set",[…]]` gives its atoms, a bare atom gives itself
/// (RFC 7047 allows a one-element set to be sent as the atom).
pub fn set_elements(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().collect(),
        _ => vec![v],
    }
}

/// The pairs of a `["map",[[k,v]…]]` value (empty for anything else).
pub fn map_pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "map" => items
            .iter()
            .filter_map(|p| match p.as_array().map(Vec::as_slice) {
                Some([k, v]) => Some((k, v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Looks up a string key in a `["map",…]` value.
pub fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    map_pairs(v)
        .into_iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Orders atoms the way ovsdb-server does (numbers numerically, strings and uuids by
/// bytes, `false < true`), so sets and maps compare equal whatever order they were built in.
pub fn atom_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&y.as_f64().unwrap_or(0.0)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            // ["uuid", s] / ["named-uuid", s]; borrowed: sets of 50k uuids are sorted
            // on every update of a large switch.
            fn key(v: &[Value]) -> (&str, &str) {
                (
                    v.first().and_then(Value::as_str).unwrap_or(""),
                    v.get(1).and_then(Value::as_str).unwrap_or(""),
                )
            }
            key(x).cmp(&key(y))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

// === conditions and mutations ===

/// A condition `[column, function, value]` (functions: `==`, `!=`, `<`, `<=`, `>`, `>=`,
/// `includes`, `excludes`).
pub fn cond(column: &str, function: &str, value: Value) -> Value {
    json!([column, function, value])
}

/// `[column, "==", value]`.
pub fn eq(column: &str, value: impl Into<Value>) -> Value {
    cond(column, "==", value.into())
}

/// The condition selecting one row by its `_uuid`.
pub fn by_uuid(id: &str) -> Value {
    cond("_uuid", "==", uuid(id))
}

/// A mutation `[column, mutator, value]` (mutators: `+=`, `-=`, `*=`, `/=`, `%=`,
/// `insert`, `delete`).
pub fn mutation(column: &str, mutator: &str, value: Value) -> Value {
    json!([column, mutator, value])
}

// === operations ===

/// `insert`: the server chooses the row's uuid.
pub fn insert(table: &str, row: Row) -> Value {
    json!({"op": "insert", "table": table, "row": row})
}

/// `insert` with a `uuid-name`, so later operations of the same transaction can refer to
/// the new row as `["named-uuid", name]`.
pub fn insert_named(table: &str, uuid_name: &str, row: Row) -> Value {
    json!({"op": "insert", "table": table, "row": row, "uuid-name": uuid_name})
}

/// `insert` with a caller-chosen row uuid (the `"uuid"` member, an OVS extension that
/// ovsdb-server 3.1 accepts: verified by `tests/transact.rs`). Inserting the same uuid
/// twice fails with `duplicate uuid`, so a retried insert cannot create a second row.
pub fn insert_with_uuid(table: &str, id: &str, row: Row) -> Value {
    json!({"op": "insert", "table": table, "row": row, "uuid": id})
}

/// `select`; `columns: None` selects every column.
pub fn select(table: &str, conditions: Vec<Value>, columns: Option<&[&str]>) -> Value {
    let mut op = json!({"op": "select", "table": table, "where": conditions});
    if let (Some(cols), Some(obj)) = (columns, op.as_object_mut()) {
        obj.insert("columns".into(), json!(cols));
    }
    op
}

/// `update`: sets the given columns of every matching row.
pub fn update(table: &str, conditions: Vec<Value>, row: Row) -> Value {
    json!({"op": "update", "table": table, "where": conditions, "row": row})
}

/// `mutate`: applies mutations (see [`mutation`]) to every matching row.
pub fn mutate(table: &str, conditions: Vec<Value>, mutations: Vec<Value>) -> Value {
    json!({"op": "mutate", "table": table, "where": conditions, "mutations": mutations})
}

/// `delete` every matching row.
pub fn delete(table: &str, conditions: Vec<Value>) -> Value {
    json!({"op": "delete", "table": table, "where": conditions})
}

/// `wait` until the matching rows, projected on `columns`, are (`equal: true`) or are not
/// (`equal: false`) exactly `rows`. With `timeout_ms: Some(0)` the transaction fails at once
/// ("timed out") when the condition does not hold: the usual guard against a concurrent
/// writer, or against a retry repeating an insert.
pub fn wait(
    table: &str,
    conditions: Vec<Value>,
    columns: &[&str],
    equal: bool,
    rows: Vec<Row>,
    timeout_ms: Option<u64>,
) -> Value {
    let mut op = json!({
        "op": "wait", "table": table, "where": conditions, "columns": columns,
        "until": if equal { "==" } else { "!=" }, "rows": rows,
    });
    if let (Some(t), Some(obj)) = (timeout_ms, op.as_object_mut()) {
        obj.insert("timeout".into(), json!(t));
    }
    op
}

/// `commit`; `durable: true` asks the server to sync to disk before replying.
pub fn commit(durable: bool) -> Value {
    json!({"op": "commit", "durable": durable})
}

/// `abort`: always fails, aborting the transaction (useful only in tests).
pub fn abort() -> Value {
    json!({"op": "abort"})
}

/// `comment`: text the server logs with the transaction.
pub fn comment(text: &str) -> Value {
    json!({"op": "comment", "comment": text})
}

/// `assert` that this connection holds `lock` (taken with the `lock` method, see
/// `ferry_ovsdb::Client::call`).
pub fn assert_lock(lock: &str) -> Value {
    json!({"op": "assert", "lock": lock})
}

/// Builds a [`Row`] from `(column, value)` pairs.
pub fn row<I: IntoIterator<Item = (&'static str, Value)>>(cols: I) -> Row {
    cols.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_produce_rfc7047_shapes() {
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "insert named",
                insert_named("Logical_Switch", "ls", row([("name", json!("a"))])),
                json!({"op":"insert","table":"Logical_Switch","row":{"name":"a"},"uuid-name":"ls"}),
            ),
            (
                "select with columns",
                select("NAT", vec![eq("type", "snat")], Some(&["logical_ip"])),
                json!({"op":"select","table":"NAT","where":[["type","==","snat"]],"columns":["logical_ip"]}),
            ),
            (
                "wait until == with timeout",
                wait(
                    "Logical_Switch",
                    vec![eq("name", "a")],
                    &["name"],
                    true,
                    vec![],
                    Some(0),
                ),
                json!({"op":"wait","table":"Logical_Switch","where":[["name","==","a"]],"columns":["name"],"until":"==","rows":[],"timeout":0}),
            ),
            (
                "mutate insert into set",
                mutate(
                    "Logical_Switch",
                    vec![by_uuid("u1")],
                    vec![mutation("ports", "insert", set([uuid("p")]))],
                ),
                json!({"op":"mutate","table":"Logical_Switch","where":[["_uuid","==",["uuid","u1"]]],
                       "mutations":[["ports","insert",["set",[["uuid","p"]]]]]}),
            ),
            (
                "map helper",
                map([("k", "v")]),
                json!(["map", [["k", "v"]]]),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn accessors_read_wire_values() {
        assert_eq!(as_uuid(&uuid("x")), Some("x"));
        assert_eq!(as_uuid(&json!("x")), None);
        assert_eq!(set_elements(&json!("a")), vec![&json!("a")]);
        assert_eq!(set_elements(&set([json!(1), json!(2)])).len(), 2);
        let m = map([("a", "1"), ("b", "2")]);
        assert_eq!(map_get(&m, "b"), Some(&json!("2")));
        assert_eq!(map_get(&m, "c"), None);
    }

    #[test]
    fn atom_order_matches_ovsdb() {
        assert_eq!(atom_cmp(&json!(2), &json!(10)), Ordering::Less);
        assert_eq!(atom_cmp(&json!("b"), &json!("a")), Ordering::Greater);
        assert_eq!(atom_cmp(&uuid("0a"), &uuid("0b")), Ordering::Less);
        assert_eq!(atom_cmp(&json!(false), &json!(true)), Ordering::Less);
    }
}
