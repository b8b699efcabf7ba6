//! How the mirror stores rows: compact values instead of `serde_json` maps.
//!
//! At 200,000 `Logical_Switch_Port`s a mirror of `serde_json` rows (a map per row, its
//! column names as `String` keys, every set and map as nested JSON arrays, every uuid as
//! `["uuid", String]`) took about 1.3 GiB in each process that held one. Here a table keeps
//! its column names once; a row is a boxed slice of cells in that order; an atom is an
//! integer, a boolean, a boxed string or a 16-byte uuid; a set or map is one boxed slice.
//! Rows come back as wire-notation [`Row`]s (canonical, as before) when read, so the
//! mirror's users and `ferry-net`'s diff see the same values as before.
//!
//! Conversions are lossless: anything that does not fit the compact forms (a real, a
//! `named-uuid`, a non-canonical uuid string) is kept as its JSON value.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::wire::{Row, atom_cmp};

/// A uuid in 16 bytes. Its byte order is the order of its canonical (lowercase) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Uuid([u8; 16]);

impl Uuid {
    /// Parses the canonical form only (8-4-4-4-12 lowercase hex digits), so that
    /// [`Uuid::text`] gives back the very same string.
    pub(crate) fn parse(s: &str) -> Option<Uuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut nibble = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            out[nibble / 2] |= if nibble.is_multiple_of(2) { v << 4 } else { v };
            nibble += 1;
        }
        Some(Uuid(out))
    }

    /// The canonical text.
    pub(crate) fn text(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(36);
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push(char::from(HEX[usize::from(byte >> 4)]));
            s.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        s
    }
}

/// A row's key in a table: its uuid, compact when canonical. Ordered as the text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowKey {
    Uuid(Uuid),
    Other(Box<str>),
}

impl RowKey {
    pub(crate) fn new(id: &str) -> RowKey {
        Uuid::parse(id).map_or_else(|| RowKey::Other(id.into()), RowKey::Uuid)
    }

    pub(crate) fn text(&self) -> String {
        match self {
            RowKey::Uuid(u) => u.text(),
            RowKey::Other(s) => s.to_string(),
        }
    }
}

impl Ord for RowKey {
    fn cmp(&self, other: &RowKey) -> Ordering {
        match (self, other) {
            (RowKey::Uuid(a), RowKey::Uuid(b)) => a.cmp(b),
            (RowKey::Other(a), RowKey::Other(b)) => a.cmp(b),
            _ => self.text().cmp(&other.text()),
        }
    }
}

impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &RowKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One atom.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Atom {
    Int(i64),
    Bool(bool),
    Str(Box<str>),
    /// `["uuid", id]` with a canonical id.
    Uuid(Uuid),
    /// Anything else, as received.
    Json(Box<Value>),
}

impl Atom {
    pub(crate) fn from_value(v: &Value) -> Atom {
        match v {
            Value::String(s) => Atom::Str(s.as_str().into()),
            Value::Bool(b) => Atom::Bool(*b),
            Value::Number(n) if n.is_i64() => n.as_i64().map_or_else(|| json(v), Atom::Int),
            Value::Array(a) => match a.as_slice() {
                [Value::String(tag), Value::String(id)] if tag == "uuid" => {
                    Uuid::parse(id).map_or_else(|| json(v), Atom::Uuid)
                }
                _ => json(v),
            },
            _ => json(v),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Atom::Int(i) => Value::from(*i),
            Atom::Bool(b) => Value::Bool(*b),
            Atom::Str(s) => Value::String(s.to_string()),
            Atom::Uuid(u) => {
                Value::Array(vec![Value::String("uuid".into()), Value::String(u.text())])
            }
            Atom::Json(v) => (**v).clone(),
        }
    }

    /// [`atom_cmp`]'s order, without building values for the common kinds.
    pub(crate) fn cmp_atom(&self, other: &Atom) -> Ordering {
        match (self, other) {
            (Atom::Int(a), Atom::Int(b)) => a.cmp(b),
            (Atom::Bool(a), Atom::Bool(b)) => a.cmp(b),
            (Atom::Str(a), Atom::Str(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            _ => atom_cmp(&self.to_value(), &other.to_value()),
        }
    }
}

fn json(v: &Value) -> Atom {
    Atom::Json(Box::new(v.clone()))
}

/// One column's value: an atom, or a canonical set or map (sorted as received).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum {
    One(Atom),
    Set(Box<[Atom]>),
    Map(Box<[(Atom, Atom)]>),
}

impl Datum {
    /// The compact form of a canonical value (`["set",[…]]`, `["map",[[k,v]…]]` or an atom).
    pub(crate) fn from_value(v: &Value) -> Datum {
        if let Value::Array(a) = v
            && let [Value::String(tag), Value::Array(items)] = a.as_slice()
        {
            if tag == "set" {
                return Datum::Set(items.iter().map(Atom::from_value).collect());
            }
            if tag == "map" {
                let pairs: Option<Box<[(Atom, Atom)]>> = items
                    .iter()
                    .map(|p| match p.as_array().map(Vec::as_slice) {
                        Some([k, v]) => Some((Atom::from_value(k), Atom::from_value(v))),
                        _ => None,
                    })
                    .collect();
                if let Some(pairs) = pairs {
                    return Datum::Map(pairs);
                }
            }
        }
        Datum::One(Atom::from_value(v))
    }

    pub(crate) fn to_value(&self) -> Value {
        let tagged = |tag: &str, items: Vec<Value>| {
            Value::Array(vec![Value::String(tag.into()), Value::Array(items)])
        };
        match self {
            Datum::One(a) => a.to_value(),
            Datum::Set(atoms) => tagged("set", atoms.iter().map(Atom::to_value).collect()),
            Datum::Map(pairs) => tagged(
                "map",
                pairs
                    .iter()
                    .map(|(k, v)| Value::Array(vec![k.to_value(), v.to_value()]))
                    .collect(),
            ),
        }
    }
}

/// One row: a cell per column of its table (`None`: the row has no such column), plus any
/// column the table does not name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompactRow {
    pub(crate) cells: Box<[Option<Datum>]>,
    pub(crate) extra: Option<Box<Row>>,
}

/// The rows of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names, once for every row: a row's cells follow this order.
    columns: Arc<[String]>,
    rows: BTreeMap<RowKey, CompactRow>,
}

impl Table {
    pub(crate) fn new(columns: &[String]) -> Table {
        Table {
            columns: columns.into(),
            rows: BTreeMap::new(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every row as `(uuid, row)`, in uuid order; each row built when read.
    pub fn iter(&self) -> impl Iterator<Item = (String, Row)> + '_ {
        self.rows.iter().map(|(k, r)| (k.text(), self.to_row(r)))
    }

    /// Every row, in uuid order.
    pub fn values(&self) -> impl Iterator<Item = Row> + '_ {
        self.rows.values().map(|r| self.to_row(r))
    }

    /// Every row's uuid, in order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.rows.keys().map(RowKey::text)
    }

    /// Every row as `(uuid, row)`, in uuid order, with only the columns `keep` accepts:
    /// what a caller reads of every row, built without the rest.
    pub fn iter_columns<'a>(
        &'a self,
        keep: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = (String, Row)> + 'a {
        let kept: Vec<usize> = (0..self.columns.len())
            .filter(|&i| keep(&self.columns[i]))
            .collect();
        self.rows.iter().map(move |(k, r)| {
            let mut out = Map::new();
            for &i in &kept {
                if let Some(Some(d)) = r.cells.get(i) {
                    out.insert(self.columns[i].clone(), d.to_value());
                }
            }
            for (c, v) in r.extra.iter().flat_map(|e| e.iter()) {
                if keep(c) {
                    out.insert(c.clone(), v.clone());
                }
            }
            (k.text(), out)
        })
    }

    /// One row.
    pub fn get(&self, uuid: &str) -> Option<Row> {
        self.rows.get(&RowKey::new(uuid)).map(|r| self.to_row(r))
    }

    pub fn contains_key(&self, uuid: &str) -> bool {
        self.rows.contains_key(&RowKey::new(uuid))
    }

    /// One column of every row that has it, as `(uuid, value)`: a scan that builds only
    /// that column.
    pub fn column<'a>(&'a self, column: &str) -> impl Iterator<Item = (String, Value)> + 'a {
        let at = self.columns.iter().position(|c| c == column);
        let column = column.to_owned();
        self.rows.iter().filter_map(move |(k, r)| {
            let v = match at {
                Some(i) => r.cells.get(i)?.as_ref()?.to_value(),
                None => r.extra.as_ref()?.get(&column)?.clone(),
            };
            Some((k.text(), v))
        })
    }

    /// The rows whose `column` is a string that `pred` accepts, as `(uuid, row)`: a
    /// lookup by name that builds only the rows it returns.
    pub fn rows_with_str(&self, column: &str, pred: impl Fn(&str) -> bool) -> Vec<(String, Row)> {
        let Some(at) = self.position(column) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter(
                |(_, r)| matches!(r.cells.get(at), Some(Some(Datum::One(Atom::Str(s)))) if pred(s)),
            )
            .map(|(k, r)| (k.text(), self.to_row(r)))
            .collect()
    }

    /// The rows whose map `column` maps the string `key` to a string that `pred` accepts
    /// (an `external_ids` lookup), as `(uuid, row)`: a scan of the compact cells that
    /// builds only the rows it returns. At 10,000 services the service fast path built
    /// every load balancer to keep a few, 41% of the leader's CPU.
    pub fn rows_with_map_str(
        &self,
        column: &str,
        key: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<(String, Row)> {
        let Some(at) = self.position(column) else {
            return Vec::new();
        };
        let matches = |r: &CompactRow| match r.cells.get(at) {
            Some(Some(Datum::Map(pairs))) => pairs.iter().any(
                |(k, v)| matches!((k, v), (Atom::Str(k), Atom::Str(v)) if &**k == key && pred(v)),
            ),
            _ => false,
        };
        self.rows
            .iter()
            .filter(|(_, r)| matches(r))
            .map(|(k, r)| (k.text(), self.to_row(r)))
            .collect()
    }

    fn to_row(&self, r: &CompactRow) -> Row {
        let mut out = Map::new();
        for (name, cell) in self.columns.iter().zip(r.cells.iter()) {
            if let Some(d) = cell {
                out.insert(name.clone(), d.to_value());
            }
        }
        if let Some(extra) = &r.extra {
            for (k, v) in extra.iter() {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// The compact form of a canonical row.
    pub(crate) fn compact(&self, row: &Row) -> CompactRow {
        let cells = self
            .columns
            .iter()
            .map(|c| row.get(c).map(Datum::from_value))
            .collect();
        let extra: Row = row
            .iter()
            .filter(|(k, _)| !self.columns.iter().any(|c| c == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        CompactRow {
            cells,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        }
    }

    pub(crate) fn insert(&mut self, uuid: &str, row: &Row) {
        let r = self.compact(row);
        self.rows.insert(RowKey::new(uuid), r);
    }

    pub(crate) fn remove(&mut self, uuid: &str) {
        self.rows.remove(&RowKey::new(uuid));
    }

    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }

    pub(crate) fn row_mut(&mut self, uuid: &str) -> Option<&mut CompactRow> {
        self.rows.get_mut(&RowKey::new(uuid))
    }

    /// Where column `name` sits in a row's cells.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Re-lays every row for `columns` (after a reconnect with another column list).
    pub(crate) fn relayout(&mut self, columns: &[String]) {
        if *self.columns == *columns {
            return;
        }
        let rows: Vec<(RowKey, Row)> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(|(k, r)| {
                let row = self.to_row(&r);
                (k, row)
            })
            .collect();
        self.columns = columns.into();
        for (k, row) in rows {
            let r = self.compact(&row);
            self.rows.insert(k, r);
        }
    }

    /// Rough heap size in bytes.
    pub(crate) fn estimated_bytes(&self) -> usize {
        fn atom(a: &Atom) -> usize {
            match a {
                Atom::Str(s) => s.len(),
                Atom::Json(v) => 64 + v.to_string().len(),
                _ => 0,
            }
        }
        let atom_size = std::mem::size_of::<Atom>();
        let datum = |d: &Datum| match d {
            Datum::One(a) => atom(a),
            Datum::Set(s) => s.iter().map(|a| atom_size + atom(a)).sum(),
            Datum::Map(m) => m
                .iter()
                .map(|(k, v)| 2 * atom_size + atom(k) + atom(v))
                .sum(),
        };
        let cell = std::mem::size_of::<Option<Datum>>();
        self.rows
            .iter()
            .map(|(k, r)| {
                let key = match k {
                    RowKey::Uuid(_) => 0,
                    RowKey::Other(s) => s.len(),
                };
                // B-tree entry (key, row header) plus the cells.
                64 + key
                    + r.cells
                        .iter()
                        .map(|c| cell + c.as_ref().map_or(0, datum))
                        .sum::<usize>()
                    + r.extra.as_ref().map_or(0, |e| 64 * e.len())
            })
            .sum()
    }
}

impl<'a> IntoIterator for &'a Table {
    type Item = (String, Row);
    type IntoIter = Box<dyn Iterator<Item = (String, Row)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A set diff on compact atoms (see `mirror::apply_set_diff`): elements present are
/// removed, absent ones added; `old` is sorted, so each is found by binary search.
pub(crate) fn set_diff(old: &[Atom], diff: &[Atom]) -> Box<[Atom]> {
    let mut removed = vec![false; old.len()];
    let mut added: Vec<&Atom> = Vec::new();
    for d in diff {
        match old.binary_search_by(|a| a.cmp_atom(d)) {
            Ok(i) => removed[i] = !removed[i],
            Err(_) => added.push(d),
        }
    }
    // An element new to the set and named twice in the diff toggles back out.
    added.sort_by(|a, b| a.cmp_atom(b));
    let mut kept_added: Vec<&Atom> = Vec::new();
    for d in added {
        match kept_added.last() {
            Some(last) if last.cmp_atom(d).is_eq() => {
                kept_added.pop();
            }
            _ => kept_added.push(d),
        }
    }
    let mut atoms: Vec<Atom> = old
        .iter()
        .zip(removed)
        .filter(|(_, gone)| !gone)
        .map(|(a, _)| a.clone())
        .chain(kept_added.into_iter().cloned())
        .collect();
    atoms.sort_by(Atom::cmp_atom);
    atoms.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuids_round_trip_only_in_canonical_form() {
        let id = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
        assert_eq!(Uuid::parse(id).map(|u| u.text()).as_deref(), Some(id));
        for bad in [
            "0A1B2C3D-4E5F-6789-ABCD-EF0123456789",
            "0a1b2c3d4e5f6789abcdef0123456789----",
            "u1",
            "",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn row_keys_sort_as_their_text() {
        let ids = [
            "ffffffff-0000-0000-0000-000000000000",
            "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "u1",
            "0a1b2c3d-4e5f-6789-abcd-ef012345678a",
            "1",
            "z",
        ];
        let mut by_key: Vec<RowKey> = ids.iter().map(|i| RowKey::new(i)).collect();
        by_key.sort();
        let mut by_text: Vec<&str> = ids.to_vec();
        by_text.sort();
        assert_eq!(by_key.iter().map(RowKey::text).collect::<Vec<_>>(), by_text);
    }

    #[test]
    fn every_value_round_trips() {
        let values = [
            json!("s"),
            json!(""),
            json!(7),
            json!(-3),
            json!(1.5),
            json!(u64::MAX),
            json!(true),
            json!(["uuid", "0a1b2c3d-4e5f-6789-abcd-ef0123456789"]),
            json!(["uuid", "not-canonical"]),
            json!(["named-uuid", "row1"]),
            json!(["set", []]),
            json!(["set", ["a", "b"]]),
            json!(["set", [["uuid", "0a1b2c3d-4e5f-6789-abcd-ef0123456789"]]]),
            json!(["map", []]),
            json!(["map", [["k", "v"], ["n", 1]]]),
            json!(["map", "not pairs"]),
            json!(["map", [["only-key"]]]),
            json!(null),
        ];
        for v in values {
            assert_eq!(Datum::from_value(&v).to_value(), v, "{v}");
        }
    }

    #[test]
    fn atoms_order_as_atom_cmp_does() {
        let values = [
            json!(3),
            json!(-1),
            json!("b"),
            json!("a"),
            json!(true),
            json!(false),
            json!(["uuid", "0a1b2c3d-4e5f-6789-abcd-ef0123456789"]),
            json!(["uuid", "00000000-4e5f-6789-abcd-ef0123456789"]),
            json!(["named-uuid", "x"]),
            json!(2.5),
        ];
        for a in &values {
            for b in &values {
                assert_eq!(
                    Atom::from_value(a).cmp_atom(&Atom::from_value(b)),
                    atom_cmp(a, b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn a_table_keeps_columns_it_does_not_name() {
        let mut t = Table::new(&["name".to_owned(), "ports".to_owned()]);
        let row: Row =
            serde_json::from_value(json!({"name": "a", "ports": ["set", []], "other": {"x": 1}}))
                .expect("row");
        t.insert("u1", &row);
        assert_eq!(t.get("u1"), Some(row.clone()));
        assert_eq!(
            t.column("other").collect::<Vec<_>>(),
            vec![("u1".to_owned(), json!({"x": 1}))]
        );
        t.relayout(&["ports".to_owned(), "other".to_owned()]);
        assert_eq!(t.get("u1"), Some(row.clone()));
        t.relayout(&["name".to_owned()]);
        assert_eq!(
            t.rows_with_str("name", |n| n == "a"),
            vec![("u1".to_owned(), row)]
        );
        assert_eq!(t.rows_with_str("name", |n| n == "b"), vec![]);
    }

    #[test]
    fn rows_are_found_by_a_string_in_a_map_column() {
        let mut t = Table::new(&["name".to_owned(), "external_ids".to_owned()]);
        let ids = |owner: &str| json!(["map", [["ferry.io/owner", owner], ["other", "x"]]]);
        let rows: Vec<(&str, Row)> = [("u1", "svc-a"), ("u2", "svc-b"), ("u3", "svc-c")]
            .into_iter()
            .map(|(u, o)| {
                let row = serde_json::from_value(json!({"name": u, "external_ids": ids(o)}))
                    .expect("row");
                (u, row)
            })
            .collect();
        for (u, r) in &rows {
            t.insert(u, r);
        }
        // A row without the key, and one whose value under it is not a string.
        let bare: Row = serde_json::from_value(json!({"name": "u4", "external_ids": ["map", []]}))
            .expect("row");
        t.insert("u4", &bare);
        let odd: Row = serde_json::from_value(
            json!({"name": "u5", "external_ids": ["map", [["ferry.io/owner", 7]]]}),
        )
        .expect("row");
        t.insert("u5", &odd);
        let found = t.rows_with_map_str("external_ids", "ferry.io/owner", |o| {
            o == "svc-a" || o == "svc-c"
        });
        assert_eq!(
            found,
            vec![
                ("u1".to_owned(), rows[0].1.clone()),
                ("u3".to_owned(), rows[2].1.clone())
            ]
        );
        // The value under another key does not count, nor does a missing column.
        assert_eq!(
            t.rows_with_map_str("external_ids", "other", |o| o == "svc-a"),
            vec![]
        );
        assert_eq!(
            t.rows_with_map_str("options", "ferry.io/owner", |_| true),
            vec![]
        );
    }
}
