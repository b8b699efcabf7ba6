//! [`plan`]: the minimal OVSDB operations that turn the rows Ferry owns in the NB into the
//! desired ones. Rows are matched by their `ferry.io/key` (groups, which have no
//! `external_ids`, by their `ferry-` name); rows without it are never touched.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::model::{Desired, KEY};

/// A row as an OVSDB monitor mirror holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRow {
    pub table: String,
    pub uuid: String,
    pub columns: Map<String, Value>,
}

/// Tables whose rows live only while referenced: they are dropped by removing the
/// reference, never deleted directly.
const NON_ROOT: &[&str] = &[
    "Logical_Switch_Port",
    "Logical_Router_Port",
    "Logical_Router_Static_Route",
    "Gateway_Chassis",
    "NAT",
];

/// The desired key of a row in the NB, if Ferry owns it.
pub fn owned_key(table: &str, columns: &Map<String, Value>) -> Option<String> {
    if table == "Load_Balancer_Group" {
        let name = columns.get("name")?.as_str()?;
        return name
            .starts_with("ferry-")
            .then(|| format!("{table}:{name}"));
    }
    let pairs = columns.get("external_ids")?.get(1)?.as_array()?;
    pairs
        .iter()
        .find(|p| p.get(0).and_then(Value::as_str) == Some(KEY))
        .and_then(|p| p.get(1)?.as_str().map(String::from))
}

/// Canonical form for comparison: one-element sets as the atom, sets and maps sorted.
fn norm(v: &Value) -> Value {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => {
            if items.len() == 1 {
                return norm(&items[0]);
            }
            let mut n: Vec<Value> = items.iter().map(norm).collect();
            n.sort_by_key(|x| x.to_string());
            json!(["set", n])
        }
        Some([tag, Value::Array(pairs)]) if tag == "map" => {
            let mut n: Vec<Value> = pairs
                .iter()
                .map(|p| json!([norm(&p[0]), norm(&p[1])]))
                .collect();
            n.sort_by_key(|x| x.to_string());
            json!(["map", n])
        }
        _ => v.clone(),
    }
}

fn resolve(v: &Value, ids: &BTreeMap<(String, String), Value>) -> Value {
    match v {
        Value::Array(a) if a.len() == 3 && a[0] == "ref" => {
            let key = (
                a[1].as_str().unwrap_or_default().to_string(),
                a[2].as_str().unwrap_or_default().to_string(),
            );
            ids.get(&key).cloned().unwrap_or(Value::Null)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, ids)).collect()),
        other => other.clone(),
    }
}

/// Operations converging the NB to `desired`. When more than `max_lb_ops` load balancers
/// must be written, only that many are returned (load balancers reference nothing, so such
/// a transaction stands alone); call again after applying until the plan is empty.
pub fn plan(desired: &Desired, current: &[CurrentRow], max_lb_ops: usize) -> Vec<Value> {
    let mut owned: BTreeMap<(String, String), &CurrentRow> = BTreeMap::new();
    for row in current {
        if let Some(k) = owned_key(&row.table, &row.columns) {
            owned.insert((row.table.clone(), k), row);
        }
    }
    // Every desired row's identity: its uuid if it exists, a uuid-name if not.
    let mut ids: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, row) in desired.rows.iter().enumerate() {
        let k = (row.table.to_string(), row.key.clone());
        match owned.get(&k) {
            Some(cur) => ids.insert(k, json!(["uuid", cur.uuid])),
            None => {
                let n = format!("row{i}");
                names.insert(k.clone(), n.clone());
                ids.insert(k, json!(["named-uuid", n]))
            }
        };
    }
    let mut lb_ops = Vec::new();
    let mut ops = Vec::new();
    for row in &desired.rows {
        let k = (row.table.to_string(), row.key.clone());
        let cols: Map<String, Value> = row
            .columns
            .iter()
            .map(|(c, v)| (c.clone(), resolve(v, &ids)))
            .collect();
        let op = match owned.get(&k) {
            None => {
                json!({"op": "insert", "table": row.table, "row": cols, "uuid-name": names[&k]})
            }
            Some(cur) => {
                let changed: Map<String, Value> = cols
                    .into_iter()
                    .filter(|(c, v)| cur.columns.get(c).map(norm) != Some(norm(v)))
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                json!({"op": "update", "table": row.table, "where": [["_uuid", "==", ["uuid", cur.uuid]]], "row": changed})
            }
        };
        if row.table == "Load_Balancer" {
            lb_ops.push(op)
        } else {
            ops.push(op)
        }
    }
    let wanted: std::collections::BTreeSet<(String, String)> = desired
        .rows
        .iter()
        .map(|r| (r.table.to_string(), r.key.clone()))
        .collect();
    for ((table, k), cur) in &owned {
        if !wanted.contains(&(table.clone(), k.clone())) && !NON_ROOT.contains(&table.as_str()) {
            ops.push(json!({"op": "delete", "table": table, "where": [["_uuid", "==", ["uuid", cur.uuid]]]}));
        }
    }
    if lb_ops.len() > max_lb_ops {
        lb_ops.truncate(max_lb_ops);
        return lb_ops;
    }
    lb_ops.extend(ops);
    lb_ops
}
