//! The in-memory mirror of monitored tables, kept up to date from `update`, `update2` and
//! `update3` notifications.
//!
//! Rows are complete (every monitored column present; the server omits default values and
//! the mirror fills them in) and canonical: set columns are always `["set",[…]]` and map
//! columns `["map",[…]]`, elements sorted the way ovsdb-server sorts them. So a row built by
//! `ferry-net` in the same canonical form compares equal with `==`.
//!
//! They are stored compactly ([`compact`]: column names once per table, typed atoms,
//! 16-byte uuids) and built as wire-notation [`Row`]s when read, so reading a row costs an
//! allocation and holding 200,000 ports does not cost a `serde_json` map each.

mod compact;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use compact::Table;
use compact::{Atom, Datum};

use crate::error::{Error, Result};
use crate::schema::{ColumnType, Schema};
use crate::wire::{Row, atom_cmp, map_pairs, set_elements};

/// Table name -> its rows.
pub type Tables = BTreeMap<String, Table>;

/// What the mirror needs to interpret notifications: the schema and the monitored
/// columns of each table.
#[derive(Debug, Default)]
pub struct Shape {
    pub schema: Schema,
    pub columns: BTreeMap<String, Vec<String>>,
}

/// A copy of the monitored part of the database.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    tables: Tables,
    last_txn_id: Option<String>,
    shape: Arc<Shape>,
}

impl Mirror {
    /// An empty mirror of the tables `shape` names.
    pub fn new(shape: Arc<Shape>) -> Mirror {
        let tables = shape
            .columns
            .iter()
            .map(|(t, cols)| (t.clone(), Table::new(cols)))
            .collect();
        Mirror {
            tables,
            last_txn_id: None,
            shape,
        }
    }

    /// Switches to a new shape (after a reconnect), keeping the rows.
    pub fn set_shape(&mut self, shape: Arc<Shape>) {
        for (t, cols) in &shape.columns {
            match self.tables.get_mut(t) {
                Some(table) => table.relayout(cols),
                None => {
                    self.tables.insert(t.clone(), Table::new(cols));
                }
            }
        }
        self.shape = shape;
    }

    /// Every monitored table (present even when empty).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The rows of one table.
    pub fn table(&self, table: &str) -> Option<&Table> {
        self.tables.get(table)
    }

    /// One row (built from its compact form).
    pub fn row(&self, table: &str, uuid: &str) -> Option<Row> {
        self.tables.get(table)?.get(uuid)
    }

    /// The rows of `table` whose `column` equals `value`, as `(uuid, row)`.
    pub fn find(&self, table: &str, column: &str, value: &Value) -> Vec<(String, Row)> {
        let Some(t) = self.tables.get(table) else {
            return Vec::new();
        };
        let hits: std::collections::BTreeSet<String> = t
            .column(column)
            .filter(|(_, v)| v == value)
            .map(|(id, _)| id)
            .collect();
        hits.into_iter()
            .filter_map(|id| t.get(&id).map(|r| (id, r)))
            .collect()
    }

    /// The `last-txn-id` of the latest `update3` (clustered databases only: a standalone
    /// ovsdb-server 3.1 always reports the all-zero id).
    pub fn last_txn_id(&self) -> Option<&str> {
        self.last_txn_id.as_deref()
    }

    /// Rough heap size in bytes of the stored rows.
    pub fn estimated_bytes(&self) -> usize {
        self.tables.values().map(Table::estimated_bytes).sum()
    }

    /// Number of rows over all tables.
    pub fn len(&self) -> usize {
        self.tables.values().map(Table::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // === applying notifications ===

    /// Drops every row (before a full snapshot replaces the contents).
    pub fn clear(&mut self) {
        for rows in self.tables.values_mut() {
            rows.clear();
        }
    }

    /// Records the `last-txn-id` a monitor resumes from.
    pub fn set_last_txn_id(&mut self, id: Option<String>) {
        self.last_txn_id = id;
    }

    /// Applies `<table-updates2>` (monitor_cond / monitor_cond_since).
    pub fn apply_update2(&mut self, updates: &Value) -> Result<()> {
        for (table, rows) in objects(updates, "table-updates2")? {
            for (uuid, change) in objects(rows, "table-update2")? {
                let change = change
                    .as_object()
                    .ok_or_else(|| proto("row-update2 is not an object"))?;
                if let Some(row) = change.get("initial").or_else(|| change.get("insert")) {
                    let row = self.complete_row(table, row)?;
                    self.table_mut(table).insert(uuid, &row);
                } else if let Some(diff) = change.get("modify") {
                    self.modify(table, uuid, diff)?;
                } else if change.contains_key("delete") {
                    self.table_mut(table).remove(uuid);
                } else {
                    return Err(proto("row-update2 without initial/insert/modify/delete"));
                }
            }
        }
        Ok(())
    }

    /// Applies `<table-updates>` (the original `monitor`: full `new` rows).
    pub fn apply_update1(&mut self, updates: &Value) -> Result<()> {
        for (table, rows) in objects(updates, "table-updates")? {
            for (uuid, change) in objects(rows, "table-update")? {
                match change.get("new") {
                    Some(new) => {
                        let row = self.complete_row(table, new)?;
                        self.table_mut(table).insert(uuid, &row);
                    }
                    None => {
                        self.table_mut(table).remove(uuid);
                    }
                }
            }
        }
        Ok(())
    }

    fn table_mut(&mut self, table: &str) -> &mut Table {
        if !self.tables.contains_key(table) {
            let cols = self.shape.columns.get(table).cloned().unwrap_or_default();
            self.tables.insert(table.to_owned(), Table::new(&cols));
        }
        self.tables
            .get_mut(table)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn column_type(&self, table: &str, column: &str) -> Option<ColumnType> {
        self.shape.schema.column(table, column).copied()
    }

    fn complete_row(&self, table: &str, row: &Value) -> Result<Row> {
        let row = row
            .as_object()
            .ok_or_else(|| proto("row is not an object"))?;
        let mut out = Map::new();
        for (col, v) in row {
            out.insert(col.clone(), canonical(self.column_type(table, col), v));
        }
        if let Some(cols) = self.shape.columns.get(table) {
            for col in cols {
                if !out.contains_key(col)
                    && let Some(ty) = self.column_type(table, col)
                {
                    out.insert(col.clone(), ty.default_value());
                }
            }
        }
        Ok(out)
    }

    fn modify(&mut self, table: &str, uuid: &str, diff: &Value) -> Result<()> {
        let diff = diff
            .as_object()
            .ok_or_else(|| proto("modify is not an object"))?;
        let types: Vec<Option<ColumnType>> =
            diff.keys().map(|c| self.column_type(table, c)).collect();
        let t = self.table_mut(table);
        let positions: Vec<Option<usize>> = diff.keys().map(|c| t.position(c)).collect();
        let row = t
            .row_mut(uuid)
            .ok_or_else(|| proto(&format!("modify of unknown row {table} {uuid}")))?;
        for (((col, d), ty), at) in diff.iter().zip(types).zip(positions) {
            let cell = at.and_then(|i| row.cells.get_mut(i));
            match cell {
                Some(cell) => {
                    let new = match (ty, cell.take()) {
                        (Some(ty), Some(Datum::Set(old))) if ty.is_set() => {
                            let d: Vec<Atom> =
                                set_elements(d).into_iter().map(Atom::from_value).collect();
                            Datum::Set(compact::set_diff(&old, &d))
                        }
                        (Some(ty), Some(old)) if ty.is_map() => {
                            Datum::from_value(&apply_map_diff(&old.to_value(), d))
                        }
                        (Some(ty), Some(old)) if ty.is_set() => {
                            Datum::from_value(&apply_set_diff(&old.to_value(), d))
                        }
                        (ty, _) => Datum::from_value(&canonical(ty, d)),
                    };
                    *cell = Some(new);
                }
                None => {
                    // A column the table's layout does not name: kept as JSON.
                    let extra = row.extra.get_or_insert_with(Default::default);
                    let new = match (ty, extra.get(col)) {
                        (Some(ty), Some(old)) if ty.is_map() => apply_map_diff(old, d),
                        (Some(ty), Some(old)) if ty.is_set() => apply_set_diff(old, d),
                        (ty, _) => canonical(ty, d),
                    };
                    extra.insert(col.clone(), new);
                }
            }
        }
        Ok(())
    }
}

fn proto(msg: &str) -> Error {
    Error::Protocol(msg.to_owned())
}

fn objects<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| proto(&format!("{what} is not an object")))
}

/// Canonical form of a column value: sets as sorted `["set",…]`, maps as sorted `["map",…]`.
pub(crate) fn canonical(ty: Option<ColumnType>, v: &Value) -> Value {
    match ty {
        Some(t) if t.is_map() => {
            let mut pairs: Vec<(Value, Value)> = map_pairs(v)
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            pairs.sort_by(|a, b| atom_cmp(&a.0, &b.0));
            build_map(pairs)
        }
        Some(t) if t.is_set() => {
            let mut atoms: Vec<Value> = set_elements(v).into_iter().cloned().collect();
            atoms.sort_by(atom_cmp);
            atoms.dedup();
            build_set(atoms)
        }
        _ => v.clone(),
    }
}

fn build_set(atoms: Vec<Value>) -> Value {
    Value::Array(vec![Value::String("set".into()), Value::Array(atoms)])
}

fn build_map(pairs: Vec<(Value, Value)>) -> Value {
    let pairs = pairs
        .into_iter()
        .map(|(k, v)| Value::Array(vec![k, v]))
        .collect();
    Value::Array(vec![Value::String("map".into()), Value::Array(pairs)])
}

/// A set diff toggles membership: elements present are removed, absent ones added. `old`
/// is canonical (sorted), so each element is found by binary search: a switch's `ports`
/// holds 50,000 uuids at 200k pods, and a linear search per element of every 1,000-port
/// diff made the mirror quadratic.
fn apply_set_diff(old: &Value, diff: &Value) -> Value {
    let old = set_elements(old);
    let mut removed = vec![false; old.len()];
    let mut added: Vec<&Value> = Vec::new();
    for d in set_elements(diff) {
        match old.binary_search_by(|a| atom_cmp(a, d)) {
            Ok(i) => removed[i] = !removed[i],
            Err(_) => added.push(d),
        }
    }
    // An element new to the set and named twice in the diff toggles back out.
    added.sort_by(|a, b| atom_cmp(a, b));
    let mut kept_added: Vec<&Value> = Vec::new();
    for d in added {
        match kept_added.last() {
            Some(last) if atom_cmp(last, d).is_eq() => {
                kept_added.pop();
            }
            _ => kept_added.push(d),
        }
    }
    let mut atoms: Vec<Value> = old
        .into_iter()
        .zip(removed)
        .filter(|(_, gone)| !gone)
        .map(|(a, _)| a.clone())
        .chain(kept_added.into_iter().cloned())
        .collect();
    atoms.sort_by(atom_cmp);
    build_set(atoms)
}

/// A map diff: a new key is added, a key with the same value is removed, a key with a
/// different value takes the new value.
fn apply_map_diff(old: &Value, diff: &Value) -> Value {
    let mut pairs: Vec<(Value, Value)> = map_pairs(old)
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in map_pairs(diff) {
        match pairs.iter().position(|(pk, _)| pk == k) {
            Some(i) if &pairs[i].1 == v => {
                pairs.remove(i);
            }
            Some(i) => pairs[i].1 = v.clone(),
            None => pairs.push((k.clone(), v.clone())),
        }
    }
    pairs.sort_by(|a, b| atom_cmp(&a.0, &b.0));
    build_map(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> Arc<Shape> {
        let schema = Schema::parse(
            &json!({"name": "T", "version": "1", "tables": {"Sw": {"columns": {
                "name": {"type": "string"},
                "ports": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
                "opt": {"type": {"key": "string", "min": 0}},
                "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}}}),
        )
        .expect("schema");
        Arc::new(Shape {
            schema,
            columns: [(
                "Sw".to_owned(),
                vec!["name".into(), "ports".into(), "opt".into(), "ids".into()],
            )]
            .into(),
        })
    }

    #[test]
    fn update2_insert_fills_defaults_and_canonicalises() {
        let mut m = Mirror::new(shape());
        m.apply_update2(&json!({"Sw": {"u1": {"insert": {"name": "a", "ports": ["uuid", "p1"]}}}}))
            .expect("apply");
        assert_eq!(
            m.row("Sw", "u1"),
            Some(crate::wire::row([
                ("name", json!("a")),
                ("ports", json!(["set", [["uuid", "p1"]]])),
                ("opt", json!(["set", []])),
                ("ids", json!(["map", []])),
            ]))
        );
    }

    #[test]
    fn iter_columns_builds_only_the_columns_kept() {
        let mut m = Mirror::new(shape());
        m.apply_update2(&json!({"Sw": {
            "u1": {"insert": {"name": "a", "ports": ["uuid", "p1"], "opt": "x"}},
            "u2": {"insert": {"name": "b"}}}}))
            .expect("apply");
        let t = m.table("Sw").expect("table");
        let kept: Vec<(String, Row)> = t.iter_columns(|c| c == "name" || c == "ports").collect();
        let whole: Vec<(String, Row)> = t
            .iter()
            .map(|(u, r)| {
                let r = r
                    .into_iter()
                    .filter(|(c, _)| c == "name" || c == "ports")
                    .collect();
                (u, r)
            })
            .collect();
        assert_eq!(kept, whole);
        assert_eq!(kept[0].1.len(), 2, "{kept:?}");
    }

    #[test]
    fn update2_modify_is_a_diff_for_sets_and_maps() {
        let cases = [
            (
                "set: add one, remove one",
                json!({"ports": ["set", [["uuid", "p1"], ["uuid", "p3"]]]}),
                "ports",
                json!(["set", [["uuid", "p2"], ["uuid", "p3"]]]),
            ),
            (
                "map: add, change, remove",
                json!({"ids": ["map", [["a", "1"], ["b", "9"], ["c", "3"]]]}),
                "ids",
                json!(["map", [["b", "9"], ["c", "3"]]]),
            ),
            (
                "optional: replace x by y is a two-element diff",
                json!({"opt": ["set", ["x", "y"]]}),
                "opt",
                json!(["set", ["y"]]),
            ),
            ("scalar replaces", json!({"name": "b"}), "name", json!("b")),
        ];
        for (name, diff, col, want) in cases {
            let mut m = Mirror::new(shape());
            m.apply_update2(&json!({"Sw": {"u1": {"initial": {
                "name": "a", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]],
                "opt": "x", "ids": ["map", [["a", "1"], ["b", "2"]]]}}}}))
                .expect("initial");
            m.apply_update2(&json!({"Sw": {"u1": {"modify": diff}}}))
                .expect(name);
            assert_eq!(
                m.row("Sw", "u1").and_then(|r| r.get(col).cloned()),
                Some(want),
                "{name}"
            );
        }
    }

    #[test]
    fn a_set_diff_toggles_each_element_of_a_large_set() {
        // 1,000 ports; the diff removes every third and adds 100 new ones (one named
        // twice, so it stays out), in no particular order. Canonical uuids (stored in 16
        // bytes) and other names (kept as JSON) alike.
        let canonical: fn(usize) -> String = |i| format!("00000000-0000-0000-0000-{i:012}");
        let other: fn(usize) -> String = |i| format!("p{i:05}");
        for name in [canonical, other] {
            set_diff_of_a_large_set(name);
        }
    }

    fn set_diff_of_a_large_set(name: fn(usize) -> String) {
        let uuid = |i: usize| json!(["uuid", name(i)]);
        let old: Vec<Value> = (0..1000).map(uuid).collect();
        let mut diff: Vec<Value> = (1000..1100).rev().map(uuid).collect();
        diff.extend((0..1000).step_by(3).map(uuid));
        diff.push(uuid(1050));
        let mut want: Vec<usize> = (0..1100)
            .filter(|i| !(*i < 1000 && i % 3 == 0) && *i != 1050)
            .collect();
        want.sort();
        let mut m = Mirror::new(shape());
        m.apply_update2(&json!({"Sw": {"u1": {"initial": {"name": "a", "ports": ["set", old]}}}}))
            .expect("initial");
        m.apply_update2(&json!({"Sw": {"u1": {"modify": {"ports": ["set", diff]}}}}))
            .expect("modify");
        let want: Vec<Value> = want.into_iter().map(uuid).collect();
        assert_eq!(
            m.row("Sw", "u1").and_then(|r| r.get("ports").cloned()),
            Some(json!(["set", want]))
        );
    }

    #[test]
    fn update2_delete_and_update1() {
        let mut m = Mirror::new(shape());
        m.apply_update1(&json!({"Sw": {"u1": {"new": {"name": "a"}}}}))
            .expect("v1 insert");
        assert_eq!(m.len(), 1);
        m.apply_update2(&json!({"Sw": {"u1": {"delete": null}}}))
            .expect("delete");
        assert!(m.is_empty());
        m.apply_update1(&json!({"Sw": {"u2": {"new": {"name": "b"}}}}))
            .expect("v1 insert");
        m.apply_update1(&json!({"Sw": {"u2": {"old": {"name": "b"}}}}))
            .expect("v1 delete");
        assert!(m.is_empty());
    }

    #[test]
    fn modify_of_unknown_row_is_a_protocol_error() {
        let mut m = Mirror::new(shape());
        let err = m
            .apply_update2(&json!({"Sw": {"nope": {"modify": {"name": "x"}}}}))
            .expect_err("must fail");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
