//! `ferry-ovsdb-wire` is OVSDB without I/O: what crosses the wire and what is kept of it,
//! as plain data and pure functions. It owns RFC 7047 wire notation and the builders of
//! every transaction operation ([`wire`]), the JSON-RPC framing of a byte stream into
//! messages ([`Framer`]), schemas ([`schema`]), the row store a monitor keeps up to date
//! from `update`/`update2`/`update3` notifications ([`Mirror`]), and the OVN Northbound
//! tables and columns Ferry writes ([`nb`]).
//!
//! It must not open a socket, spawn a task or read a clock: `ferry-ovsdb` (the tokio
//! client) is built on it, and pure crates such as `ferry-net` use it for rows, operations
//! and table names without pulling in tokio or rustls. `ferry-ovsdb` re-exports all of it
//! under its old paths (`ferry_ovsdb::wire`, `ferry_ovsdb::nb`, `ferry_ovsdb::Mirror`).

mod error;
mod framing;
mod mirror;
pub mod nb;
pub mod schema;
pub mod wire;

pub use error::{Error, Result};
pub use framing::Framer;
pub use mirror::{Mirror, Shape, Tables};
pub use wire::Row;
