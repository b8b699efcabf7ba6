//! What a monitor mirror of N logical switch ports costs: builds a [`Mirror`] of the NB
//! tables Ferry monitors from `update2` notifications shaped as ovsdb-server sends them
//! (pod ports as `ferry-net` writes them, spread over 4 switches whose `ports` sets hold
//! every port's uuid), then reads every row back as the full pass does (one copy of each
//! row). Prints the process RSS before and after, the mirror's own estimate, and the times.
//!
//! `cargo run --release -p ferry-ovsdb-wire --example mirror_mem [-- --ports 200000]`
//!
//! No ovsdb-server: the notifications are built here, in chunks of 10,000 rows (about what
//! ovsdb-server sends per message when ports are inserted 1,000 per transaction), so what
//! remains in RSS is the mirror.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use ferry_ovsdb_wire::schema::Schema;
use ferry_ovsdb_wire::{Mirror, Shape, nb};
use serde_json::{Value, json};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn uuid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-{:04x}-4000-8000-{i:012x}", i % 0xffff)
}

/// The schema of the two tables, with the column types `nb` names.
fn shape() -> Arc<Shape> {
    let ty = |c: &nb::Column| {
        let atom = |a: ferry_ovsdb_wire::schema::AtomType| match a {
            ferry_ovsdb_wire::schema::AtomType::Integer => "integer",
            ferry_ovsdb_wire::schema::AtomType::Real => "real",
            ferry_ovsdb_wire::schema::AtomType::Boolean => "boolean",
            ferry_ovsdb_wire::schema::AtomType::String => "string",
            ferry_ovsdb_wire::schema::AtomType::Uuid => "uuid",
        };
        let max = match c.ty.max {
            ferry_ovsdb_wire::schema::Max::N(n) => json!(n),
            ferry_ovsdb_wire::schema::Max::Unlimited => json!("unlimited"),
        };
        let mut t = json!({"key": atom(c.ty.key), "min": c.ty.min, "max": max});
        if let Some(v) = c.ty.value {
            t["value"] = json!(atom(v));
        }
        json!({ "type": t })
    };
    let tables = [nb::logical_switch::DEF, nb::logical_switch_port::DEF];
    let mut schema_tables = serde_json::Map::new();
    let mut columns = std::collections::BTreeMap::new();
    for t in tables {
        let cols: serde_json::Map<String, Value> = t
            .columns
            .iter()
            .map(|c| (c.name.to_owned(), ty(c)))
            .collect();
        schema_tables.insert(t.name.to_owned(), json!({ "columns": cols }));
        columns.insert(
            t.name.to_owned(),
            t.columns.iter().map(|c| c.name.to_owned()).collect(),
        );
    }
    let schema = Schema::parse(&json!({"name": nb::DATABASE, "version": "7.0.0",
        "tables": schema_tables}))
    .expect("schema");
    Arc::new(Shape { schema, columns })
}

/// A pod port as ovsdb-server sends it (default-valued columns left out, a one-element
/// set as its atom).
fn port(i: usize) -> Value {
    let ip = format!("10.{}.{}.{}", 64 + i / 65_536 % 4, i / 256 % 256, i % 256);
    let mac = format!(
        "0a:58:0a:{:02x}:{:02x}:{:02x}",
        i / 65_536 % 256,
        i / 256 % 256,
        i % 256
    );
    json!({
        "name": format!("ns{}_pod-{i}", i % 1000),
        "addresses": format!("{mac} {ip}"),
        "port_security": format!("{mac} {ip}"),
        "options": ["map", [["requested-chassis", format!("node-{}", i % 10_000)]]],
        "external_ids": ["map", [
            ["ferry.iaas.yusur.io/owner", format!("pod/ns{}/pod-{i}", i % 1000)],
            ["ferry.iaas.yusur.io/vpc", "vpc1"],
            ["iaas.yusur.io/kind", "pod"],
        ]],
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut ports = 200_000usize;
    while let Some(a) = args.next() {
        if a == "--ports" {
            ports = args.next().and_then(|n| n.parse().ok()).expect("--ports N");
        }
    }
    let switches = 4usize;
    let shape = shape();
    let rss0 = rss_kib();
    let mut m = Mirror::new(shape);
    let t = Instant::now();
    for start in (0..ports).step_by(10_000) {
        let rows: serde_json::Map<String, Value> = (start..(start + 10_000).min(ports))
            .map(|i| (uuid(1, i), json!({ "initial": port(i) })))
            .collect();
        m.apply_update2(&json!({ nb::logical_switch_port::TABLE: rows }))
            .expect("ports");
    }
    let sw: serde_json::Map<String, Value> = (0..switches)
        .map(|s| {
            let members: Vec<Value> = (s..ports)
                .step_by(switches)
                .map(|i| json!(["uuid", uuid(1, i)]))
                .collect();
            let row = json!({"name": format!("vpc1-s{s}"), "ports": ["set", members],
                "external_ids": ["map", [["ferry.iaas.yusur.io/owner", format!("subnet/vpc1-s{s}")]]]});
            (uuid(2, s), json!({ "initial": row }))
        })
        .collect();
    m.apply_update2(&json!({ nb::logical_switch::TABLE: sw }))
        .expect("switches");
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss1 = rss_kib();
    assert_eq!(m.len(), ports + switches);

    // One full read, as `ferry_nb::current_rows` does for a full pass.
    let t = Instant::now();
    let mut read = 0usize;
    for table in [nb::logical_switch_port::TABLE, nb::logical_switch::TABLE] {
        read += m.table(table).into_iter().flatten().fold(0, |n, (k, v)| {
            let copy = (k.to_owned(), v.to_owned());
            std::hint::black_box(&copy);
            n + 1
        });
    }
    let read_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(read, ports + switches);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let out = json!({
        "ports": ports,
        "switches": switches,
        "rss_before_mib": mib(rss0),
        "rss_with_mirror_mib": mib(rss1),
        "mirror_rss_mib": mib(rss1.saturating_sub(rss0)),
        "mirror_rss_bytes_per_port": (rss1.saturating_sub(rss0) * 1024) as f64 / ports as f64,
        "mirror_estimated_mib": m.estimated_bytes() as f64 / 1048576.0,
        "load_ms": load_ms,
        "read_every_row_ms": read_ms,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
