//! Shared fixtures: the lab topology of `interfaces.md` as a [`NetworkState`], service
//! builders, and a small pure simulator of OVSDB transaction semantics for the NB tables
//! Ferry writes (strong and weak references, garbage collection of unreferenced non-root
//! rows, uuids given on insert, unique name indexes), strict about every violation.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_net::*;
use serde_json::{Value, json};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn subnet(name: &str, vpc: &str, cidr: &str, gw: &str) -> SubnetState {
    SubnetState {
        name: name.into(),
        vpc: vpc.into(),
        cidr: cidr.parse().unwrap(),
        gateway: ip(gw),
    }
}

pub fn port(name: &str, subnet: &str, mac: &str, addr: &str) -> PortState {
    PortState {
        name: name.into(),
        subnet: subnet.into(),
        mac: mac.into(),
        ip: ip(addr),
    }
}

/// The lab of `interfaces.md`: the default VPC with `subnet0` and `ovn-default`, vpc1 with
/// three subnets, vpc2 with one overlapping vpc1's first, nodes, backends, an outside client.
pub fn lab(services: Vec<ServiceState>) -> NetworkState {
    NetworkState {
        nodes: vec![],
        socket_lb_ports: Default::default(),
        gateway_chassis: "ch1".into(),
        transit_cidr: None,
        vpcs: vec!["ovn-cluster".into(), "vpc1".into(), "vpc2".into()],
        subnets: vec![
            subnet("subnet0", "ovn-cluster", "100.64.0.0/16", "100.64.0.1"),
            subnet("ovn-default", "ovn-cluster", "10.16.0.0/16", "10.16.0.1"),
            subnet("vpc1-subnet1", "vpc1", "10.0.1.0/24", "10.0.1.1"),
            subnet("vpc1-subnet2", "vpc1", "10.0.2.0/24", "10.0.2.1"),
            subnet("vpc1-subnet3", "vpc1", "10.0.3.0/24", "10.0.3.1"),
            subnet("vpc2-subnet1", "vpc2", "10.0.1.0/24", "10.0.1.1"),
        ],
        ports: vec![
            port("node_node1", "subnet0", "0a:00:00:64:00:02", "100.64.0.2"),
            port(
                "default_bd1",
                "ovn-default",
                "0a:00:00:10:00:0a",
                "10.16.0.10",
            ),
            port(
                "default_b11",
                "vpc1-subnet1",
                "0a:00:00:01:01:0a",
                "10.0.1.10",
            ),
            port(
                "default_b12",
                "vpc1-subnet2",
                "0a:00:00:01:02:0a",
                "10.0.2.10",
            ),
            port(
                "default_c13",
                "vpc1-subnet3",
                "0a:00:00:01:03:0a",
                "10.0.3.10",
            ),
            port(
                "default_b21",
                "vpc2-subnet1",
                "0a:00:00:02:01:14",
                "10.0.1.20",
            ),
            port(
                "ext_client",
                EXTERNAL_SWITCH,
                "0a:00:00:ee:00:fa",
                "198.18.0.250",
            ),
        ],
        external: Some(ExternalNetwork {
            cidr: "198.18.0.0/24".parse().unwrap(),
            gateway: ip("198.18.0.1"),
            pool: (ip("198.18.0.100"), ip("198.18.0.199")),
        }),
        services,
    }
}

pub fn vpc(v: &str) -> ServiceScope {
    ServiceScope::Vpc(v.into())
}

pub fn multi(vs: &[&str]) -> ServiceScope {
    ServiceScope::MultiVpc(vs.iter().map(|v| v.to_string()).collect())
}

/// A service with one TCP port 80 -> 8080.
pub fn svc(
    key: &str,
    scope: ServiceScope,
    cip: Option<&str>,
    eip: Option<&str>,
    backends: &[(&str, &str)],
) -> ServiceState {
    ServiceState {
        external_ips: vec![],
        kind: Default::default(),
        node_local: false,
        key: key.into(),
        uid: format!("uid-{}", key.replace('/', "-")),
        scope,
        cluster_ip: cip.map(ip),
        eip: eip.map(ip),
        ports: vec![ServicePort {
            node_port: None,
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
        }],
        affinity_timeout: None,
        backends: backends
            .iter()
            .map(|(i, v)| Backend {
                node: None,
                ip: ip(i),
                vpc: v.to_string(),
            })
            .collect(),
    }
}

/// One service per scenario of `architecture.md`, in the lab of [`lab`].
pub fn scenario_services() -> Vec<ServiceState> {
    vec![
        // 1: ClusterIP in vpc1, backends in two subnets.
        svc(
            "default/web-vpc1",
            vpc("vpc1"),
            Some("10.96.0.10"),
            None,
            &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
        ),
        // 2: ClusterIP in the default VPC (reached from the node's join port too).
        svc(
            "default/web-default",
            vpc(DEFAULT_VPC),
            Some("10.96.0.20"),
            None,
            &[("10.16.0.10", DEFAULT_VPC)],
        ),
        // 3: EIP in vpc1.
        svc(
            "default/web-eip",
            vpc("vpc1"),
            Some("10.96.0.30"),
            Some("198.18.0.100"),
            &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
        ),
        // 4: multi-VPC EIP, one backend in each VPC on the same CIDR.
        svc(
            "default/web-multi",
            multi(&["vpc1", "vpc2"]),
            None,
            Some("198.18.0.101"),
            &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
        ),
    ]
}

/// The desired row of `table` whose `name` column (or, for routes, key) is `name`.
pub fn find<'a>(d: &'a Desired, table: &str, name: &str) -> Option<&'a Row> {
    d.rows.iter().find(|r| {
        r.table == table
            && (r.columns.get("name").and_then(Value::as_str) == Some(name)
                || r.key == format!("{table}:{name}"))
    })
}

pub fn row<'a>(d: &'a Desired, table: &str, name: &str) -> &'a Row {
    find(d, table, name).unwrap_or_else(|| panic!("no {table} {name}"))
}

/// The `name`s of the desired rows a reference column points to, sorted.
pub fn ref_names(d: &Desired, v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (t, k) = (r[1].as_str().unwrap(), r[2].as_str().unwrap());
            let target = d
                .rows
                .iter()
                .find(|x| x.table == t && x.key == k)
                .unwrap_or_else(|| panic!("dangling reference {t} {k}"));
            target
                .columns
                .get("name")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| k.to_string())
        })
        .collect();
    out.sort();
    out
}

// === the OVSDB simulator ===

/// (table, column) -> (referenced table, strong?) for the columns Ferry writes.
fn ref_column(table: &str, column: &str) -> Option<(&'static str, bool)> {
    Some(match (table, column) {
        ("Logical_Switch", "ports") => ("Logical_Switch_Port", true),
        ("Logical_Switch", "load_balancer") => ("Load_Balancer", false),
        ("Logical_Switch", "load_balancer_group") => ("Load_Balancer_Group", true),
        ("Logical_Router", "ports") => ("Logical_Router_Port", true),
        ("Logical_Router", "static_routes") => ("Logical_Router_Static_Route", true),
        ("Logical_Router", "load_balancer") => ("Load_Balancer", false),
        ("Logical_Router", "load_balancer_group") => ("Load_Balancer_Group", true),
        ("Logical_Router", "nat") => ("NAT", true),
        ("Logical_Router_Port", "gateway_chassis") => ("Gateway_Chassis", true),
        ("Load_Balancer_Group", "load_balancer") => ("Load_Balancer", false),
        ("Port_Group", "ports") => ("Logical_Switch_Port", false),
        ("Port_Group", "acls") => ("ACL", true),
        _ => return None,
    })
}

const ROOT: &[&str] = &[
    "Logical_Switch",
    "Logical_Router",
    "Load_Balancer",
    "Load_Balancer_Group",
    "Port_Group",
];

const NAME_INDEXED: &[&str] = &[
    "Logical_Switch_Port",
    "Logical_Router_Port",
    "Load_Balancer_Group",
    "Gateway_Chassis",
    "Port_Group",
];

fn uuids_of(v: &Value) -> Vec<String> {
    match v.as_array().map(Vec::as_slice) {
        Some([t, Value::String(u)]) if t == "uuid" => vec![u.clone()],
        Some([t, Value::Array(items)]) if t == "set" => items.iter().flat_map(uuids_of).collect(),
        _ => vec![],
    }
}

fn where_uuid(op: &Value) -> Result<String, String> {
    op["where"][0][2][1]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("op without a _uuid where: {op}"))
}

/// A database of NB rows, with OVSDB's transaction rules.
#[derive(Debug, Clone, Default)]
pub struct Db {
    pub rows: BTreeMap<String, CurrentRow>,
}

impl Db {
    pub fn current(&self) -> Vec<CurrentRow> {
        self.rows.values().cloned().collect()
    }

    /// Applies one transaction atomically, or refuses it as ovsdb-server would.
    pub fn transact(&mut self, ops: &[Value]) -> Result<(), String> {
        let mut next = self.rows.clone();
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        for op in ops {
            let table = op["table"].as_str().ok_or("op without table")?.to_string();
            match op["op"].as_str() {
                Some("insert") => {
                    let u = op["uuid"]
                        .as_str()
                        .ok_or("insert without uuid")?
                        .to_string();
                    if next.contains_key(&u) || deleted.contains(&u) {
                        return Err(format!("duplicate uuid {u}"));
                    }
                    let columns = op["row"].as_object().ok_or("insert without row")?.clone();
                    next.insert(
                        u.clone(),
                        CurrentRow {
                            table,
                            uuid: u,
                            columns,
                        },
                    );
                }
                Some("update") => {
                    let u = where_uuid(op)?;
                    let r = next
                        .get_mut(&u)
                        .filter(|r| r.table == table)
                        .ok_or_else(|| format!("update of missing {table} {u}"))?;
                    for (c, v) in op["row"].as_object().ok_or("update without row")? {
                        r.columns.insert(c.clone(), v.clone());
                    }
                }
                Some("mutate") => {
                    let u = where_uuid(op)?;
                    let r = next
                        .get_mut(&u)
                        .filter(|r| r.table == table)
                        .ok_or_else(|| format!("mutate of missing {table} {u}"))?;
                    for m in op["mutations"]
                        .as_array()
                        .ok_or("mutate without mutations")?
                    {
                        let (Some(col), Some(verb)) = (m[0].as_str(), m[1].as_str()) else {
                            return Err(format!("bad mutation {m}"));
                        };
                        let as_items = |v: &Value| -> Vec<Value> {
                            match v.as_array().map(Vec::as_slice) {
                                Some([tag, Value::Array(items)]) if tag == "set" => items.clone(),
                                _ => vec![v.clone()],
                            }
                        };
                        let mut items = r.columns.get(col).map(as_items).unwrap_or_default();
                        for x in as_items(&m[2]) {
                            match verb {
                                "insert" if !items.contains(&x) => items.push(x),
                                "insert" => {}
                                "delete" => items.retain(|y| y != &x),
                                other => return Err(format!("unexpected mutator {other}")),
                            }
                        }
                        r.columns.insert(col.to_string(), json!(["set", items]));
                    }
                }
                Some("delete") => {
                    let u = where_uuid(op)?;
                    if !ROOT.contains(&table.as_str()) {
                        return Err(format!("delete of non-root {table} {u}"));
                    }
                    next.remove(&u)
                        .filter(|r| r.table == table)
                        .ok_or_else(|| format!("delete of missing {table} {u}"))?;
                    deleted.insert(u);
                }
                other => return Err(format!("unexpected op {other:?}")),
            }
        }
        // Garbage collection of non-root rows no strong reference holds.
        loop {
            let referenced: BTreeSet<String> = next
                .values()
                .flat_map(|r| {
                    r.columns
                        .iter()
                        .filter(|(c, _)| ref_column(&r.table, c).is_some_and(|(_, strong)| strong))
                        .flat_map(|(_, v)| uuids_of(v))
                        .collect::<Vec<_>>()
                })
                .collect();
            let before = next.len();
            next.retain(|u, r| ROOT.contains(&r.table.as_str()) || referenced.contains(u));
            if next.len() == before {
                break;
            }
        }
        // Commit (after the garbage collection, whose victims' weak references vanish too):
        // weak references to missing rows vanish, strong ones are an error.
        let present: BTreeMap<String, String> = next
            .iter()
            .map(|(u, r)| (u.clone(), r.table.clone()))
            .collect();
        for r in next.values_mut() {
            for (c, v) in r.columns.iter_mut() {
                let Some((target, strong)) = ref_column(&r.table, c) else {
                    continue;
                };
                for u in uuids_of(v) {
                    if present.get(&u).map(String::as_str) != Some(target) {
                        if strong {
                            return Err(format!(
                                "{} {} {c}: strong reference to missing {u}",
                                r.table, r.uuid
                            ));
                        }
                        *v = json!([
                            "set",
                            uuids_of(v)
                                .into_iter()
                                .filter(|x| x != &u)
                                .map(|x| json!(["uuid", x]))
                                .collect::<Vec<_>>()
                        ]);
                    }
                }
            }
        }
        // Unique name indexes.
        let mut names = BTreeSet::new();
        for r in next.values() {
            if NAME_INDEXED.contains(&r.table.as_str())
                && let Some(n) = r.columns.get("name").and_then(Value::as_str)
                && !names.insert((r.table.clone(), n.to_string()))
            {
                return Err(format!("{} name {n} is not unique", r.table));
            }
        }
        self.rows = next;
        Ok(())
    }

    /// Applies every transaction of a plan, in order, each on its own.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), String> {
        for (i, t) in plan.transactions.iter().enumerate() {
            self.transact(t)
                .map_err(|e| format!("transaction {i}: {e}"))?;
        }
        Ok(())
    }

    /// The rows with keys for uuids, comparable across databases.
    pub fn canonical(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let ident = |r: &CurrentRow| -> String {
            owned_key(&r.table, &r.columns).unwrap_or_else(|| format!("foreign {}", r.uuid))
        };
        let key_of: BTreeMap<String, String> = self
            .rows
            .values()
            .map(|r| (r.uuid.clone(), ident(r)))
            .collect();
        fn canon(v: &Value, key_of: &BTreeMap<String, String>) -> Value {
            match v.as_array().map(Vec::as_slice) {
                Some([t, Value::String(u)]) if t == "uuid" => {
                    json!(["uuid", key_of.get(u).cloned().unwrap_or_default()])
                }
                Some([t, Value::Array(items)]) if t == "set" || t == "map" => {
                    let mut n: Vec<Value> = items.iter().map(|x| canon(x, key_of)).collect();
                    n.sort_by_key(|x| x.to_string());
                    if t == "set" && n.len() == 1 {
                        return n.remove(0);
                    }
                    json!([t, n])
                }
                Some(items) => Value::Array(items.iter().map(|x| canon(x, key_of)).collect()),
                None => v.clone(),
            }
        }
        self.rows
            .values()
            .map(|r| {
                let cols = r
                    .columns
                    .iter()
                    .map(|(c, v)| (c.clone(), canon(v, &key_of).to_string()))
                    .collect();
                (ident(r), cols)
            })
            .collect()
    }
}

/// Runs a command that must succeed; its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
