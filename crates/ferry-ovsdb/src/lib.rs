//! `ferry-ovsdb` owns Ferry's conversation with OVSDB (RFC 7047 JSON-RPC, as spoken by
//! ovsdb-server 3.1): connecting to `unix:`/`tcp:`/`ssl:` remotes (preferring the RAFT leader of
//! a clustered database), `transact` with typed per-operation errors, answering the
//! server's `echo` and sending our own, a `monitor_cond_since` monitor (falling back to
//! `monitor_cond`, then `monitor`) that keeps an in-memory [`Mirror`] of chosen tables,
//! and reconnection with backoff that resumes the monitor from the last transaction id.
//! It also names the OVN Northbound tables and columns Ferry writes ([`nb`]).
//!
//! It must not decide anything: which rows should exist is `ferry-net`'s job. Rows and
//! operations cross the boundary as wire-notation `serde_json` values ([`wire`]), so that
//! pure code can build them without this crate's client. Everything here that needs no
//! I/O (wire values and operations, framing, schemas, the [`Mirror`]'s row store, the
//! [`nb`] tables) lives in `ferry-ovsdb-wire`, which has no tokio, and is re-exported here.
//!
//! Written here because no maintained crate fits (see the design's dependency notes: the
//! `ovsdb` crate has no monitor; `ovsdb-client` never answers echo and has no
//! monitor_cond/update2). `ssl:` remotes use mutual TLS with OVN's PKI ([`TlsConfig`]:
//! rustls with the ring provider; the server's certificate must chain to the CA, its name
//! is not checked, as in Open vSwitch's own client).
//!
//! Behaviour of ovsdb-server 3.1 this crate relies on (each pinned by a test under `tests/`):
//! - `insert` accepts a caller-chosen `"uuid"` member; a second insert of it fails with a
//!   `duplicate uuid` error (`transact.rs`).
//! - `monitor_cond_since` is supported. A clustered database resumes with `found=true` and
//!   only the missed changes; a standalone one reports the all-zero transaction id, so a
//!   resume gets `found=false` and a full snapshot, which replaces the mirror (`reconnect.rs`).
//! - Update notifications for a transaction reach the connection that issued it before
//!   the transact reply, so the mirror is current when [`Client::transact`] returns.
//! - A RAFT leader that steps down without dying keeps its clients connected; only its
//!   `_Server` `Database` row changes (`leader` becomes false). With
//!   [`Config::leader_only`] the client monitors that row, as ovsdb-idl does, and moves to
//!   the new leader; while a cluster elects, it polls the members at the shortest backoff
//!   (`cluster.rs`: `kill -9` of the leader costs writers about 1.2 s here).
//! - An idle TCP client is sent `echo` after 5 s and dropped 5 s later without an answer
//!   (`monitor.rs`); whether unix-socket clients are probed was not checked.
//!
//! ```no_run
//! # async fn demo() -> ferry_ovsdb::Result<()> {
//! use ferry_ovsdb::{Client, nb, wire};
//! let client = Client::connect(nb::config(["unix:/run/ovn/ovnnb_db.sock"])).await?;
//! client
//!     .transact(nb::DATABASE, vec![wire::insert(
//!         nb::logical_switch::TABLE,
//!         wire::row([(nb::logical_switch::NAME, "ls1".into())]),
//!     )])
//!     .await?;
//! // The mirror already holds the new switch when transact returns.
//! let n = client.with_mirror(|m| m.table(nb::logical_switch::TABLE).map_or(0, |t| t.len()));
//! # let _ = n; Ok(()) }
//! ```

mod client;
mod error;
pub mod nb;
mod remote;
mod tls;

pub use client::{Client, Config, MonitorMethod, Resume, Status};
pub use error::{Error, Result};
pub use ferry_ovsdb_wire::{Mirror, Row, Tables, schema, wire};
pub use remote::Remote;
pub use tls::{Pem, TlsConfig};
