//! [`diff`]: the minimal OVSDB operations that turn the rows Ferry owns in the NB into the
//! desired ones, split into bounded transactions that are each valid on their own.
//!
//! Rows are matched by their `ferry.io/key` (`Load_Balancer_Group`, which has no
//! `external_ids` in the 23.03 schema, by its `ferry-` name); rows without it are never
//! touched. How the operations respect the NB schema:
//!
//! - New rows are inserted with a deterministic `"uuid"` ([`row_uuid`]; accepted by
//!   ovsdb-server 3.1, verified), so a later transaction of the same plan can reference a
//!   row an earlier one created without re-reading the database.
//! - Non-root rows (ports, routes, gateway chassis) live only while referenced: one is
//!   inserted in the same transaction as the reference from its parent, and a stale one is
//!   dropped by removing that reference (the parent's update), never by a `delete`.
//! - A "unit" is a root row with all its non-root descendants; units are never split. Units
//!   whose non-root rows move between parents (a port changing switch) are merged, so the
//!   row is never left unreferenced between transactions.
//! - Units are ordered by dependency: load balancers, then groups (which reference them),
//!   then switches and routers (which reference both); deletes of stale roots come last,
//!   switches and routers first, so nothing still references a group when it goes.
//!
//! [`diff_fenced`] leaves alone the rows a [`Fence`] names (by `ferry.io/owner` or
//! `ferry.io/key`): what fast paths ([`crate::cluster_ip_delta`], [`crate::port_delta`])
//! wrote after the snapshot `desired` was built from. For them the NB as it is is the truth:
//! no operation on them, and their membership in every reference column the diff writes
//! follows the NB, while everything else converges as [`diff`] does.
//!
//! [`diff_fenced_with`] plans the same from an index of the NB's rows (only the columns
//! [`indexed_column`] names) and reads each row it compares whole when it compares it: a
//! large NB is not held whole twice, once in the client's mirror and once here.
//!
//! Over 600 lines: one algorithm (keys, the unit tree, the fence, the operations and their
//! order) whose steps share the same borrowed maps; split, each part would take them all.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use ferry_ovsdb_wire::nb::{self, is_root};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{Desired, KEY, OWNER, Row};

/// A row as an OVSDB monitor mirror holds it (wire notation: `["set", ..]`, `["map", ..]`,
/// `["uuid", ..]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentRow {
    pub table: String,
    pub uuid: String,
    pub columns: Map<String, Value>,
}

/// The operations of a convergence, as transactions to send in order (each one is the
/// operation list of an OVSDB `transact`, without the database name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub transactions: Vec<Vec<Value>>,
}

impl Plan {
    /// Nothing to do: the NB already holds the desired rows.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// Operations over all transactions.
    pub fn op_count(&self) -> usize {
        self.transactions.iter().map(Vec::len).sum()
    }
}

/// Rows [`diff_fenced`] must leave as the NB has them: those whose `ferry.io/owner` is in
/// `owners` or whose `ferry.io/key` is in `keys` (`Load_Balancer_Group`s, which have no
/// `external_ids`, never are). A key is fenced as a whole: if one row with a key is fenced
/// (desired or current), every row with that key is, and so are the desired rows below a
/// fenced one (they are written only through it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    pub owners: BTreeSet<String>,
    pub keys: BTreeSet<String>,
}

impl Fence {
    /// Nothing fenced: [`diff_fenced`] is then [`diff`].
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.keys.is_empty()
    }

    /// Whether a row of `table` with these `external_ids` is fenced by its own ids.
    fn holds(&self, table: &str, external_ids: Option<&Value>) -> bool {
        if table == nb::load_balancer_group::TABLE {
            return false;
        }
        let Some(ids) = external_ids else {
            return false;
        };
        map_str(ids, OWNER).is_some_and(|o| self.owners.contains(o))
            || map_str(ids, KEY).is_some_and(|k| self.keys.contains(k))
    }
}

/// The string under `key` in a `["map", [[K, V], ..]]` value, without allocating.
fn map_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    let [tag, Value::Array(pairs)] = v.as_array()?.as_slice() else {
        return None;
    };
    if tag != "map" {
        return None;
    }
    pairs
        .iter()
        .find_map(|p| match p.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) if k == key => Some(v.as_str()),
            _ => None,
        })
}

/// A row's identity in one diff: its table and its `ferry.io/key`, borrowed from the rows
/// diffed (owned only for a group, whose key is made from its name). At 10,000 services the
/// diff's maps hold over a million of them.
type Key<'a> = (&'a str, Cow<'a, str>);

/// A key borrowed from a desired row.
fn key_of(row: &Row) -> Key<'_> {
    (row.table, Cow::Borrowed(row.key.as_str()))
}

/// What a [`Fence`] covers in one diff's input.
#[derive(Default)]
struct Fenced<'a> {
    /// Desired keys that get no operation and whose membership follows the NB.
    keys: BTreeSet<Key<'a>>,
    /// Current rows that are fenced.
    uuids: BTreeSet<&'a str>,
    /// The current uuid of each fenced key the NB has (the smallest, as for kept rows).
    ids: BTreeMap<Key<'a>, Cow<'a, str>>,
}

impl<'a> Fenced<'a> {
    fn new(
        fence: &Fence,
        desired: &'a Desired,
        current: &'a [CurrentRow],
        owned: &BTreeMap<Key<'a>, Vec<&'a CurrentRow>>,
        parent: &BTreeMap<Key<'a>, Key<'a>>,
    ) -> Self {
        let mut f = Fenced::default();
        if fence.is_empty() {
            return f;
        }
        const IDS: &str = nb::load_balancer::EXTERNAL_IDS;
        for row in &desired.rows {
            if fence.holds(row.table, row.columns.get(IDS)) {
                f.keys.insert(key_of(row));
            }
        }
        for row in current {
            if fence.holds(&row.table, row.columns.get(IDS)) {
                f.uuids.insert(&row.uuid);
                // One key, one row: fenced if any of its rows is.
                if let Some(k) = owned_key_ref(&row.table, &row.columns) {
                    f.keys.insert((&row.table, k));
                }
            }
        }
        // Rows below a fenced desired row (none below the leaves fast paths write).
        let tables: BTreeSet<&str> = f.keys.iter().map(|(t, _)| *t).collect();
        if parent.values().any(|(t, _)| tables.contains(t)) {
            let below: Vec<&Key> = parent
                .iter()
                .filter(|(_, p)| {
                    let mut cur = *p;
                    for _ in 0..16 {
                        if f.keys.contains(cur) {
                            return true;
                        }
                        match parent.get(cur) {
                            Some(up) => cur = up,
                            None => break,
                        }
                    }
                    false
                })
                .map(|(k, _)| k)
                .collect();
            f.keys.extend(below.into_iter().cloned());
        }
        for k in &f.keys {
            if let Some(rows) = owned.get(k) {
                f.uuids.extend(rows.iter().map(|r| r.uuid.as_str()));
                if let Some(first) = rows.first() {
                    f.ids.insert(k.clone(), Cow::Borrowed(first.uuid.as_str()));
                }
            }
        }
        f
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.uuids.is_empty()
    }
}

/// Fenced uuids (U in `fenced`) in a current value: a `["uuid", U]` or a set of them (the
/// reference columns Ferry writes hold no maps of uuids).
fn fenced_refs<'v>(v: &'v Value, fenced: &BTreeSet<&str>, out: &mut Vec<&'v str>) {
    let atoms = match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.as_slice(),
        Some([_, _]) => std::slice::from_ref(v),
        _ => return,
    };
    for a in atoms {
        if let Some([tag, Value::String(u)]) = a.as_array().map(Vec::as_slice)
            && tag == "uuid"
            && fenced.contains(u.as_str())
        {
            out.push(u);
        }
    }
}

/// `v` (a resolved reference column) with the references `extra` added.
fn with_refs(v: Value, extra: &[&str]) -> Value {
    let more = extra.iter().map(|u| json!(["uuid", u]));
    match v {
        Value::Array(mut a) if a.len() == 2 && a[0] == "set" => {
            if let Value::Array(items) = &mut a[1] {
                items.extend(more);
            }
            Value::Array(a)
        }
        Value::Array(a) if a.len() == 2 && a[0] == "uuid" => {
            json!([
                "set",
                std::iter::once(Value::Array(a))
                    .chain(more)
                    .collect::<Vec<_>>()
            ])
        }
        // Not a reference column (a map, an atom): fenced uuids never appear there.
        other => other,
    }
}

/// Whether the diff reads `column` of every current row of `table`: `external_ids` (and a
/// group's name: which row is whose) and references (the unit tree). The other columns
/// it reads only of the rows it compares, through [`diff_fenced_with`]'s `full`; a column
/// it does not know is read everywhere.
pub fn indexed_column(table: &str, column: &str) -> bool {
    use ferry_ovsdb_wire::schema::AtomType::Uuid;
    if column == nb::load_balancer::EXTERNAL_IDS
        || (table == nb::load_balancer_group::TABLE && column == nb::load_balancer_group::NAME)
    {
        return true;
    }
    nb::TABLES
        .iter()
        .find(|t| t.name == table)
        .and_then(|t| t.columns.iter().find(|c| c.name == column))
        .is_none_or(|c| c.ty.key == Uuid || c.ty.value == Some(Uuid))
}

/// A current row's every column, for the rows [`diff_fenced_with`] compares.
pub type FullRow<'f> = &'f dyn for<'r> Fn(&'r CurrentRow) -> Option<Cow<'r, Map<String, Value>>>;

/// Columns of the NB schema that Ferry writes and that hold weak references: they neither
/// keep a row alive nor make it a child, so they are left out of the parent/unit tree (a
/// port group's member stays in its switch's unit).
const WEAK: &[(&str, &str)] = &[("Port_Group", "ports")];

fn is_weak(table: &str, column: &str) -> bool {
    WEAK.contains(&(table, column))
}

/// The desired key of a row in the NB, if Ferry owns it.
pub fn owned_key(table: &str, columns: &Map<String, Value>) -> Option<String> {
    owned_key_ref(table, columns).map(Cow::into_owned)
}

/// [`owned_key`], borrowed from the row where it can be.
fn owned_key_ref<'a>(table: &str, columns: &'a Map<String, Value>) -> Option<Cow<'a, str>> {
    if table == nb::load_balancer_group::TABLE {
        let name = columns.get(nb::load_balancer_group::NAME)?.as_str()?;
        return name
            .starts_with("ferry-")
            .then(|| Cow::Owned(format!("{table}:{name}")));
    }
    let ids = columns.get(nb::load_balancer::EXTERNAL_IDS)?;
    map_str(ids, KEY).map(Cow::Borrowed)
}

/// The uuid a new desired row is inserted with: a name-based (RFC 9562 version 8) uuid
/// from the table and key, `salt` > 0 only to step past a uuid already in use.
pub fn row_uuid(table: &str, key: &str, salt: u32) -> String {
    // FNV-1a, 128 bits.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    let prime: u128 = 0x0000000001000000000000000000013b;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u128::from(*b)).wrapping_mul(prime);
        }
    };
    feed(table.as_bytes());
    feed(&[0]);
    feed(key.as_bytes());
    if salt > 0 {
        feed(&[0]);
        feed(&salt.to_be_bytes());
    }
    let mut b = h.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Canonical form for comparison: one-element sets as the atom, sets and maps sorted.
pub(crate) fn norm(v: &Value) -> Value {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => {
            if items.len() == 1 {
                return norm(&items[0]);
            }
            let mut n: Vec<Value> = items.iter().map(norm).collect();
            n.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            json!(["set", n])
        }
        Some([tag, Value::Array(pairs)]) if tag == "map" => {
            let mut n: Vec<Value> = pairs
                .iter()
                .filter_map(|p| Some(json!([norm(p.get(0)?), norm(p.get(1)?)])))
                .collect();
            n.sort_by(|a, b| sort_key(&a[0]).cmp(&sort_key(&b[0])));
            json!(["map", n])
        }
        _ => v.clone(),
    }
}

/// The order [`norm`] sorts set elements and map keys by: strings and uuids by their text
/// without serialising them (a set of 10,000 load balancer references is sorted in
/// milliseconds), anything else by its JSON text. OVSDB sets are homogeneous and map keys
/// unique, so this is a total order on what a column can hold.
fn sort_key(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(a) if a.len() == 2 && (a[0] == "uuid" || a[0] == "named-uuid") => {
            match &a[1] {
                Value::String(u) => Cow::Borrowed(u),
                _ => Cow::Owned(v.to_string()),
            }
        }
        _ => Cow::Owned(v.to_string()),
    }
}

/// What an absent column holds: the empty value of the desired value's kind.
fn empty_like(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.first() == Some(&json!("map")) => json!(["map", []]),
        Value::Array(_) => json!(["set", []]),
        Value::String(_) => json!(""),
        Value::Number(_) => json!(0),
        Value::Bool(_) => json!(false),
        _ => Value::Null,
    }
}

/// The columns of `cols` whose value differs from the row's `have`, semantically.
pub(crate) fn changed_columns(
    have: &Map<String, Value>,
    cols: Map<String, Value>,
) -> Map<String, Value> {
    cols.into_iter()
        .filter(|(c, v)| match have.get(c) {
            // Identical wire values need no normalising (most columns).
            Some(have) => have != v && norm(have) != norm(v),
            None => norm(&empty_like(v)) != norm(v),
        })
        .collect()
}

/// Desired references (`["ref", TABLE, KEY]`) in a value.
fn desired_refs<'v>(v: &'v Value, out: &mut Vec<Key<'v>>) {
    if let Value::Array(a) = v {
        if let [tag, Value::String(t), Value::String(k)] = a.as_slice()
            && tag == "ref"
        {
            out.push((t, Cow::Borrowed(k)));
            return;
        }
        for x in a {
            desired_refs(x, out);
        }
    }
}

/// Uuids (`["uuid", U]`) in a current value.
fn current_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Array(a) => {
            if let [tag, Value::String(u)] = a.as_slice()
                && tag == "uuid"
            {
                out.push(u);
                return;
            }
            for x in a {
                current_refs(x, out);
            }
        }
        Value::Object(m) => m.values().for_each(|x| current_refs(x, out)),
        _ => {}
    }
}

/// Replaces desired references by `["uuid", U]` (U from `ids`, else from `extra`); a
/// reference to a row in neither (never produced by the builder, or fenced) is dropped
/// rather than sent.
fn resolve(v: &Value, ids: &BTreeMap<Key, Cow<str>>, extra: &BTreeMap<Key, Cow<str>>) -> Value {
    let as_ref = |x: &Value| -> Option<Option<Value>> {
        let a = x.as_array()?;
        if a.len() == 3 && a[0] == "ref" {
            let k: Key = (a[1].as_str()?, Cow::Borrowed(a[2].as_str()?));
            let u = ids.get(&k).or_else(|| extra.get(&k));
            return Some(u.map(|u| json!(["uuid", u])));
        }
        None
    };
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "set" => {
            let items = a[1].as_array().map(Vec::as_slice).unwrap_or_default();
            let out: Vec<Value> = items
                .iter()
                .filter_map(|x| match as_ref(x) {
                    Some(r) => r,
                    None => Some(resolve(x, ids, extra)),
                })
                .collect();
            json!(["set", out])
        }
        other => match as_ref(other) {
            Some(Some(r)) => r,
            Some(None) => json!(["set", []]),
            None => other.clone(),
        },
    }
}

/// A minimal union-find over unit ids.
#[derive(Default)]
struct Units {
    parent: BTreeMap<String, String>,
}

impl Units {
    fn add(&mut self, id: &str) {
        self.parent
            .entry(id.to_string())
            .or_insert_with(|| id.to_string());
    }
    fn find(&mut self, id: &str) -> String {
        self.add(id);
        let mut cur = id.to_string();
        loop {
            let p = self.parent[&cur].clone();
            if p == cur {
                return cur;
            }
            cur = p;
        }
    }
    fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller id wins, so the result does not depend on the order of unions.
            let (keep, drop) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(drop, keep);
        }
    }
}

fn desired_id(table: &str, key: &str) -> String {
    format!("d\u{0}{table}\u{0}{key}")
}
fn stale_id(uuid: &str) -> String {
    format!("s\u{0}{uuid}")
}

/// Order of a unit's work: what is referenced is written before what references it, and
/// stale roots go after every reference to them is gone. Port groups come after switches:
/// their weak references to new ports would be dropped if sent before the ports exist.
fn rank(table: &str, delete: bool) -> u8 {
    match (table, delete) {
        ("Load_Balancer", false) => 0,
        ("Load_Balancer_Group", false) => 1,
        ("Port_Group", false) => 3,
        (_, false) => 2,
        ("Load_Balancer_Group", true) => 5,
        ("Load_Balancer", true) => 6,
        (_, true) => 4,
    }
}

#[derive(Default)]
struct Unit {
    rank: u8,
    ops: Vec<Value>,
}

/// Operations converging the NB (`current`, all rows of the tables Ferry writes) to
/// `desired`, in transactions of at most `max_ops_per_txn` operations (a unit larger than
/// that, e.g. a new switch with many ports, gets a transaction of its own). Applying the
/// transactions in order, each on its own, converges the NB; a second `diff` is then empty.
pub fn diff(desired: &Desired, current: &[CurrentRow], max_ops_per_txn: usize) -> Plan {
    diff_fenced(desired, current, max_ops_per_txn, &Fence::default())
}

/// [`diff`], leaving the rows `fence` covers as the NB has them (`desired` comes from a
/// snapshot older than what fast paths wrote since):
///
/// - no insert, update or delete of a fenced row, desired or current, and no unit merge
///   because of one;
/// - in every column written for another row, references to fenced rows are those of the
///   NB: taken out of the desired value, the current value's put back (an inserted row
///   keeps a desired reference to a fenced row only if the NB has that row). A column
///   whose only difference is such a reference gives no operation;
/// - a stale root that references a fenced row, or that a fenced row references, is not
///   deleted (nor, then, a group it holds).
///
/// Everything else converges as with [`diff`]; with the same fence, a second call is empty.
pub fn diff_fenced(
    desired: &Desired,
    current: &[CurrentRow],
    max_ops_per_txn: usize,
    fence: &Fence,
) -> Plan {
    let full: FullRow = &|r| Some(Cow::Borrowed(&r.columns));
    diff_fenced_with(desired, current, full, max_ops_per_txn, fence)
}

/// [`diff_fenced`] on `current` rows that hold only the columns [`indexed_column`] names,
/// each compared row's others read through `full` (`None`: the row is gone, and the next
/// diff sees it). At 10,000 services x 20 the NB's 210,000 rows, built whole, were ~360
/// MiB for each full convergence.
pub fn diff_fenced_with<'a>(
    desired: &'a Desired,
    current: &'a [CurrentRow],
    full: FullRow,
    max_ops_per_txn: usize,
    fence: &Fence,
) -> Plan {
    // Owned rows by key; with duplicates the smallest uuid is kept, the others are stale.
    let mut owned: BTreeMap<Key, Vec<&CurrentRow>> = BTreeMap::new();
    let mut owned_uuid: BTreeSet<&str> = BTreeSet::new();
    for row in current {
        if let Some(k) = owned_key_ref(&row.table, &row.columns) {
            owned.entry((&row.table, k)).or_default().push(row);
            owned_uuid.insert(&row.uuid);
        }
    }
    for rows in owned.values_mut() {
        rows.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    }
    let by_uuid: BTreeMap<&str, &CurrentRow> =
        current.iter().map(|r| (r.uuid.as_str(), r)).collect();
    // Who references whom, in the NB as it is.
    let mut referrers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in current {
        let mut refs = Vec::new();
        for (c, v) in &row.columns {
            if !is_weak(&row.table, c) {
                current_refs(v, &mut refs);
            }
        }
        for r in refs {
            referrers.entry(r).or_default().push(&row.uuid);
        }
    }

    // The desired tree: each non-root row's parent, hence its root.
    let mut parent: BTreeMap<Key, Key> = BTreeMap::new();
    for row in &desired.rows {
        let mut refs = Vec::new();
        for (c, v) in &row.columns {
            if !is_weak(row.table, c) {
                desired_refs(v, &mut refs);
            }
        }
        for r in refs {
            if !is_root(r.0) {
                parent.insert(r, key_of(row));
            }
        }
    }
    let fenced = Fenced::new(fence, desired, current, &owned, &parent);

    // Every desired row's uuid: the existing row's, or a fresh deterministic one. Fenced
    // rows get none, so references to them resolve to nothing.
    let wanted: BTreeSet<Key> = desired
        .rows
        .iter()
        .map(key_of)
        .filter(|k| !fenced.keys.contains(k))
        .collect();
    let mut taken: BTreeSet<Cow<str>> = current
        .iter()
        .map(|r| Cow::Borrowed(r.uuid.as_str()))
        .collect();
    let mut ids: BTreeMap<Key, Cow<str>> = BTreeMap::new();
    let mut kept: BTreeMap<Key, &CurrentRow> = BTreeMap::new();
    for k in &wanted {
        if let Some(cur) = owned.get(k).and_then(|v| v.first()) {
            ids.insert(k.clone(), Cow::Borrowed(cur.uuid.as_str()));
            kept.insert(k.clone(), cur);
        } else {
            let mut salt = 0;
            let mut u = row_uuid(k.0, &k.1, 0);
            while taken.contains(u.as_str()) {
                salt += 1;
                u = row_uuid(k.0, &k.1, salt);
            }
            taken.insert(Cow::Owned(u.clone()));
            ids.insert(k.clone(), Cow::Owned(u));
        }
    }
    let kept_uuid: BTreeMap<&str, Key> = kept
        .iter()
        .map(|(k, r)| (r.uuid.as_str(), k.clone()))
        .collect();

    let desired_root = |k: &Key<'a>| -> Key<'a> {
        let mut cur = k.clone();
        for _ in 0..16 {
            match parent.get(&cur) {
                Some(p) if !is_root(cur.0) => cur = p.clone(),
                _ => break,
            }
        }
        cur
    };
    // The current root of an existing row: the unit id of the owned root above it.
    let current_root = |uuid: &str| -> Option<String> {
        let mut cur = uuid;
        for _ in 0..16 {
            let row = by_uuid.get(cur)?;
            if is_root(&row.table) {
                if !owned_uuid.contains(cur) || fenced.uuids.contains(cur) {
                    return None;
                }
                return Some(match kept_uuid.get(cur) {
                    Some((t, k)) => desired_id(t, k),
                    None => stale_id(cur),
                });
            }
            cur = referrers.get(cur)?.first()?;
        }
        None
    };

    let mut units = Units::default();
    for row in &desired.rows {
        let k = key_of(row);
        if fenced.keys.contains(&k) {
            continue;
        }
        let root = desired_root(&k);
        let id = desired_id(root.0, &root.1);
        units.add(&id);
        if !is_root(row.table)
            && let Some(cur) = kept.get(&k)
            && let Some(cur_root) = current_root(&cur.uuid)
            && cur_root != id
        {
            units.union(&id, &cur_root);
        }
    }

    let mut work: BTreeMap<String, Unit> = BTreeMap::new();
    let mut push = |units: &mut Units, id: &str, rank: u8, op: Value| {
        let unit = work.entry(units.find(id)).or_insert(Unit {
            rank: u8::MAX,
            ops: Vec::new(),
        });
        unit.rank = unit.rank.min(rank);
        unit.ops.push(op);
    };
    let no_ids = BTreeMap::new();
    for row in &desired.rows {
        let k = key_of(row);
        if fenced.keys.contains(&k) {
            continue;
        }
        let root = desired_root(&k);
        let id = desired_id(root.0, &root.1);
        let op = match kept.get(&k) {
            None => {
                // A new row may reference a fenced row the NB has.
                let cols: Map<String, Value> = row
                    .columns
                    .iter()
                    .map(|(c, v)| (c.clone(), resolve(v, &ids, &fenced.ids)))
                    .collect();
                json!({"op": "insert", "table": row.table, "uuid": ids[&k], "row": cols})
            }
            Some(cur) => {
                let Some(have) = full(cur) else {
                    continue;
                };
                let mut cols: Map<String, Value> = row
                    .columns
                    .iter()
                    .map(|(c, v)| (c.clone(), resolve(v, &ids, &no_ids)))
                    .collect();
                if !fenced.is_empty() {
                    // References to fenced rows stay as the NB has them.
                    for (c, v) in cols.iter_mut() {
                        let mut keep = Vec::new();
                        if let Some(v) = have.get(c) {
                            fenced_refs(v, &fenced.uuids, &mut keep);
                        }
                        if !keep.is_empty() {
                            *v = with_refs(std::mem::take(v), &keep);
                        }
                    }
                }
                let changed = changed_columns(&have, cols);
                if changed.is_empty() {
                    continue;
                }
                json!({"op": "update", "table": row.table,
                       "where": [["_uuid", "==", ["uuid", cur.uuid]]], "row": changed})
            }
        };
        push(&mut units, &id, rank(root.0, false), op);
    }
    // Stale roots kept for the fence: those holding or held by a fenced row, and what they
    // hold strongly (a group under such a switch).
    let mut protected: BTreeSet<&str> = BTreeSet::new();
    if !fenced.uuids.is_empty() {
        let stale = owned.iter().flat_map(|((table, _), rows)| {
            rows.iter()
                .filter(|r| is_root(table) && !kept_uuid.contains_key(r.uuid.as_str()))
        });
        for cur in stale {
            let mut refs = Vec::new();
            for v in cur.columns.values() {
                fenced_refs(v, &fenced.uuids, &mut refs);
            }
            let held = referrers
                .get(cur.uuid.as_str())
                .is_some_and(|rs| rs.iter().any(|r| fenced.uuids.contains(r)));
            if !refs.is_empty() || held {
                protected.insert(&cur.uuid);
            }
        }
        let mut below = Vec::new();
        for u in &protected {
            for v in by_uuid[u].columns.values() {
                current_refs(v, &mut below);
            }
        }
        below.retain(|u| {
            by_uuid
                .get(u)
                .is_some_and(|r| is_root(&r.table) && r.table != "Load_Balancer")
        });
        protected.extend(below);
    }
    // Stale owned roots go; stale non-root rows go with their parent's update or delete.
    for ((table, _), rows) in &owned {
        for cur in rows {
            if !is_root(table)
                || kept_uuid.contains_key(cur.uuid.as_str())
                || fenced.uuids.contains(cur.uuid.as_str())
                || protected.contains(cur.uuid.as_str())
            {
                continue;
            }
            // A row someone else still references (a foreign switch using a Ferry group)
            // cannot be deleted; it is left until that reference goes.
            let foreign_ref = *table != "Load_Balancer"
                && referrers.get(cur.uuid.as_str()).is_some_and(|rs| {
                    rs.iter()
                        .any(|r| !owned_uuid.contains(r) && is_root_row(&by_uuid, r))
                });
            if foreign_ref {
                continue;
            }
            let op = json!({"op": "delete", "table": table,
                            "where": [["_uuid", "==", ["uuid", cur.uuid]]]});
            push(&mut units, &stale_id(&cur.uuid), rank(table, true), op);
        }
    }

    let mut ordered: Vec<(u8, String, Vec<Value>)> = work
        .into_iter()
        .filter(|(_, u)| !u.ops.is_empty())
        .map(|(id, u)| (u.rank, id, u.ops))
        .collect();
    ordered.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let max = max_ops_per_txn.max(1);
    let mut plan = Plan::default();
    let mut txn: Vec<Value> = Vec::new();
    for (_, _, ops) in ordered {
        if !txn.is_empty() && txn.len() + ops.len() > max {
            plan.transactions.push(std::mem::take(&mut txn));
        }
        txn.extend(ops);
    }
    if !txn.is_empty() {
        plan.transactions.push(txn);
    }
    plan
}

fn is_root_row(by_uuid: &BTreeMap<&str, &CurrentRow>, uuid: &str) -> bool {
    by_uuid.get(uuid).is_some_and(|r| is_root(&r.table))
}

/// The first transaction of [`diff`]: for callers that apply one transaction, re-read the
/// NB and ask again until the result is empty.
pub fn plan(desired: &Desired, current: &[CurrentRow], max_ops_per_txn: usize) -> Vec<Value> {
    diff(desired, current, max_ops_per_txn)
        .transactions
        .into_iter()
        .next()
        .unwrap_or_default()
}
