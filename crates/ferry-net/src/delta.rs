//! [`cluster_ip_delta`] and [`port_delta`]: the operations for a few changed services or
//! workload ports alone, without building or comparing the rest of the network (the fast
//! path of a controller that knows what changed).
//!
//! It covers services with a cluster IP and no EIP (scenarios 1 and 2): their rows are
//! load balancers in their VPCs' groups and nothing else, so the only row they share with
//! other services is a group's `load_balancer` set, changed with `mutate` (insert/delete of
//! one reference) instead of rewriting a set of thousands. Anything else (an EIP, a group
//! not yet in the NB, a service [`crate::diff`] would refuse) returns `None`: the caller
//! converges everything with [`crate::build_desired`] and [`crate::diff`] instead.

use std::collections::{BTreeMap, BTreeSet};

use ferry_ovsdb_wire::nb;
use ferry_ovsdb_wire::wire;
use serde_json::{Map, Value, json};

use crate::diff::{CurrentRow, changed_columns, owned_key, row_uuid};
use crate::model::{OWNER, PortState, ServiceState};
use crate::scenario::{cluster_ip, scope_vpcs, service_owner};
use crate::topology::Builder;

const LB: &str = nb::load_balancer::TABLE;
const GROUP: &str = nb::load_balancer_group::TABLE;

fn owner_of(columns: &Map<String, Value>) -> Option<&str> {
    wire::map_get(columns.get(nb::load_balancer::EXTERNAL_IDS)?, OWNER)?.as_str()
}

/// Whether a current row belongs in [`cluster_ip_delta`]'s `current`: a load balancer of
/// one of `owners`, or a Ferry group (the caller reads only these from its mirror).
pub fn delta_input(table: &str, columns: &Map<String, Value>, owners: &BTreeSet<String>) -> bool {
    match table {
        LB => owner_of(columns).is_some_and(|o| owners.contains(o)),
        GROUP => owned_key(table, columns).is_some(),
        _ => false,
    }
}

/// The uuids of a reference column (a set, or a bare one-element atom).
fn uuids(v: Option<&Value>) -> BTreeSet<&str> {
    v.map(wire::set_elements)
        .unwrap_or_default()
        .into_iter()
        .filter_map(wire::as_uuid)
        .collect()
}

fn by_uuid(u: &str) -> Vec<Value> {
    vec![wire::by_uuid(u)]
}

/// One transaction converging the load balancers of `services` (their new state) and of
/// `owners` (the `ferry.io/owner` of every service touched, removed ones included: their
/// rows go), given `current`: the NB rows [`delta_input`] selects. `None` when the fast
/// path does not apply (see the module doc).
pub fn cluster_ip_delta(
    services: &[ServiceState],
    owners: &BTreeSet<String>,
    current: &[CurrentRow],
) -> Option<Vec<Value>> {
    let mut b = Builder::default();
    for svc in services {
        // EIPs, external IPs and node ports need links, routes and the nodes: not here.
        if svc.eip.is_some()
            || !svc.external_ips.is_empty()
            || svc.ports.iter().any(|p| p.node_port.is_some())
            || !owners.contains(&service_owner(svc))
        {
            return None;
        }
        let mut seen = BTreeSet::new();
        if !svc.ports.iter().all(|p| seen.insert((p.port, &p.protocol))) {
            return None;
        }
        cluster_ip::build(&mut b, svc, &scope_vpcs(svc));
    }
    // The NB as it is: groups by name, these services' load balancers by key.
    let mut groups: BTreeMap<&str, (&str, BTreeSet<&str>)> = BTreeMap::new();
    let mut lbs: BTreeMap<String, Vec<&CurrentRow>> = BTreeMap::new();
    for row in current {
        if !delta_input(&row.table, &row.columns, owners) {
            continue;
        }
        if row.table == GROUP {
            if let Some(name) = row.columns.get("name").and_then(Value::as_str) {
                groups.insert(name, (&row.uuid, uuids(row.columns.get("load_balancer"))));
            }
        } else if let Some(k) = owned_key(&row.table, &row.columns) {
            lbs.entry(k).or_default().push(row);
        }
    }
    for rows in lbs.values_mut() {
        rows.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    }
    let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (g, keys) in &b.group_lbs {
        if !groups.contains_key(g.as_str()) {
            return None;
        }
        for k in keys {
            group_of.insert(k, g);
        }
    }
    let taken: BTreeSet<&str> = current.iter().map(|r| r.uuid.as_str()).collect();
    let mut ops = Vec::new();
    let mut add: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut remove: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut deletes = Vec::new();
    for ((table, key), row) in &b.rows {
        if *table != LB {
            continue;
        }
        let group = group_of.get(key.as_str()).copied()?;
        let cols: Map<String, Value> = row.columns.clone().into_iter().collect();
        match lbs.get(key).and_then(|v| v.first()) {
            Some(cur) => {
                let changed = changed_columns(&cur.columns, cols);
                if !changed.is_empty() {
                    ops.push(wire::update(LB, by_uuid(&cur.uuid), changed));
                }
                if !groups[group].1.contains(cur.uuid.as_str()) {
                    add.entry(group).or_default().push(cur.uuid.clone());
                }
            }
            None => {
                let mut salt = 0;
                let mut u = row_uuid(LB, key, 0);
                while taken.contains(u.as_str()) {
                    salt += 1;
                    u = row_uuid(LB, key, salt);
                }
                ops.push(wire::insert_with_uuid(LB, &u, cols));
                add.entry(group).or_default().push(u);
            }
        }
    }
    // Stale: rows of these owners no longer desired, and duplicates of a key.
    for (key, rows) in &lbs {
        let desired = b.rows.contains_key(&(LB, key.clone()));
        for (i, cur) in rows.iter().enumerate() {
            if desired && i == 0 {
                continue;
            }
            for (name, (_, members)) in &groups {
                if members.contains(cur.uuid.as_str()) {
                    remove.entry(name).or_default().push(cur.uuid.clone());
                }
            }
            deletes.push(wire::delete(LB, by_uuid(&cur.uuid)));
        }
    }
    let mutate = |name: &str, verb: &str, us: &[String]| {
        let set = wire::set(us.iter().map(|u| wire::uuid(u)));
        let m = wire::mutation(nb::load_balancer_group::LOAD_BALANCER, verb, set);
        wire::mutate(GROUP, by_uuid(groups[name].0), vec![m])
    };
    ops.extend(add.iter().map(|(g, us)| mutate(g, "insert", us)));
    ops.extend(remove.iter().map(|(g, us)| mutate(g, "delete", us)));
    ops.extend(deletes);
    Some(ops)
}

const LSP: &str = nb::logical_switch_port::TABLE;
const SWITCH: &str = nb::logical_switch::TABLE;

/// The `ferry.io/key` of a workload port's row (`Logical_Switch_Port:NAME`), as
/// [`port_delta`] writes it: what goes in a [`crate::Fence`]'s `keys` for that port.
pub fn port_key(name: &str) -> String {
    crate::topology::key(LSP, name)
}

/// Whether a current row belongs in [`port_delta`]'s `current`: a switch, or a switch port
/// Ferry owns.
fn port_delta_input(table: &str, columns: &Map<String, Value>) -> bool {
    match table {
        SWITCH => true,
        LSP => owned_key(table, columns).is_some(),
        _ => false,
    }
}

/// The rows [`port_delta`] reads for `changes`, from a mirror's `Logical_Switch_Port` and
/// `Logical_Switch` tables (uuid -> columns): the changed ports' own rows, and each switch
/// with only its name and its `ports` cut down to those rows (a switch may hold tens of
/// thousands).
pub fn port_delta_current<'a>(
    changes: &[(Option<PortState>, Option<PortState>)],
    ports: impl IntoIterator<Item = (&'a String, &'a Map<String, Value>)>,
    switches: impl IntoIterator<Item = (&'a String, &'a Map<String, Value>)>,
) -> Vec<CurrentRow> {
    let names: BTreeSet<&str> = changes
        .iter()
        .flat_map(|(a, b)| a.iter().chain(b.iter()))
        .map(|p| p.name.as_str())
        .collect();
    let mut rows: Vec<CurrentRow> = ports
        .into_iter()
        .filter(|(_, cols)| {
            cols.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.contains(n))
                && port_delta_input(LSP, cols)
        })
        .map(|(uuid, cols)| CurrentRow {
            table: LSP.into(),
            uuid: uuid.clone(),
            columns: cols.clone(),
        })
        .collect();
    let wanted: BTreeSet<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
    let switches: Vec<CurrentRow> = switches
        .into_iter()
        .map(|(uuid, cols)| {
            let members: Vec<Value> = uuids(cols.get("ports"))
                .into_iter()
                .filter(|u| wanted.contains(u))
                .map(wire::uuid)
                .collect();
            let mut columns = Map::new();
            if let Some(n) = cols.get("name") {
                columns.insert("name".into(), n.clone());
            }
            columns.insert(nb::logical_switch::PORTS.into(), wire::set(members));
            CurrentRow {
                table: SWITCH.into(),
                uuid: uuid.clone(),
                columns,
            }
        })
        .collect();
    rows.extend(switches);
    rows
}

/// One transaction converging workload ports that changed: `changes` pairs a port's old
/// state with its new one (`None`: absent), given `current`, the rows `port_delta_input`
/// selects. A new port is inserted with a `mutate` of its switch's `ports`; a port that
/// goes is removed from its switch (the NB collects the row); one that moves changes both
/// switches in the same transaction. `None` when this is not enough (a switch not in the
/// NB, or a name used by a port Ferry did not build as a workload port): the caller
/// converges everything instead.
pub fn port_delta(
    changes: &[(Option<PortState>, Option<PortState>)],
    current: &[CurrentRow],
) -> Option<Vec<Value>> {
    let mut switches: BTreeMap<&str, (&str, BTreeSet<&str>)> = BTreeMap::new();
    let mut ports: BTreeMap<&str, &CurrentRow> = BTreeMap::new();
    for row in current {
        if !port_delta_input(&row.table, &row.columns) {
            continue;
        }
        let name = row.columns.get("name").and_then(Value::as_str);
        if row.table == SWITCH {
            if let Some(n) = name {
                switches.insert(n, (&row.uuid, uuids(row.columns.get("ports"))));
            }
        } else if let Some(n) = name {
            ports.insert(n, row);
        }
    }
    let taken: BTreeSet<&str> = current.iter().map(|r| r.uuid.as_str()).collect();
    let mut ops = Vec::new();
    let mut add: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut remove: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Where a current port row is referenced from.
    let switch_of = |uuid: &str| -> Vec<&str> {
        switches
            .iter()
            .filter(|(_, (_, members))| members.contains(uuid))
            .map(|(name, _)| *name)
            .collect()
    };
    for (old, new) in changes {
        let Some(name) = new.as_ref().or(old.as_ref()).map(|p| p.name.as_str()) else {
            continue;
        };
        let key = port_key(name);
        let cur = ports.get(name).copied();
        if let Some(c) = cur
            && owned_key(LSP, &c.columns).as_deref() != Some(key.as_str())
        {
            return None;
        }
        match (cur, new) {
            (Some(c), None) => {
                for s in switch_of(&c.uuid) {
                    remove.entry(s).or_default().push(c.uuid.clone());
                }
            }
            (None, None) => {}
            (cur, Some(p)) => {
                let subnet = p.subnet.as_str();
                if !switches.contains_key(subnet) {
                    return None;
                }
                let mut b = Builder::default();
                b.add(
                    LSP,
                    &p.name,
                    crate::topology::INFRA_OWNER,
                    BTreeMap::from([
                        ("name".to_string(), json!(p.name)),
                        (
                            "addresses".to_string(),
                            json!(["set", [format!("{} {}", p.mac, p.ip)]]),
                        ),
                    ]),
                );
                let row = b.rows.into_values().next()?;
                let cols: Map<String, Value> = row.columns.into_iter().collect();
                let uuid = match cur {
                    Some(c) => {
                        let changed = changed_columns(&c.columns, cols);
                        if !changed.is_empty() {
                            ops.push(wire::update(LSP, by_uuid(&c.uuid), changed));
                        }
                        for s in switch_of(&c.uuid) {
                            if s != subnet {
                                remove.entry(s).or_default().push(c.uuid.clone());
                            }
                        }
                        c.uuid.clone()
                    }
                    None => {
                        let mut salt = 0;
                        let mut u = row_uuid(LSP, &key, 0);
                        while taken.contains(u.as_str()) {
                            salt += 1;
                            u = row_uuid(LSP, &key, salt);
                        }
                        ops.push(wire::insert_with_uuid(LSP, &u, cols));
                        u
                    }
                };
                if !switches[subnet].1.contains(uuid.as_str()) {
                    add.entry(subnet).or_default().push(uuid);
                }
            }
        }
    }
    let mutate = |name: &str, verb: &str, us: &[String]| {
        let set = wire::set(us.iter().map(|u| wire::uuid(u)));
        let m = wire::mutation(nb::logical_switch::PORTS, verb, set);
        wire::mutate(SWITCH, by_uuid(switches[name].0), vec![m])
    };
    ops.extend(add.iter().map(|(s, us)| mutate(s, "insert", us)));
    ops.extend(remove.iter().map(|(s, us)| mutate(s, "delete", us)));
    Some(ops)
}
