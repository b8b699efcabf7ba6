//! `ferry-bench` owns Ferry's benchmarks. The control-plane benchmark ([`control_plane`],
//! `ferry bench control-plane`) runs a real API server and controller against a real
//! OVN NB and measures changes, full syncs, probe flips and memory; [`metrics_cost`]
//! (`ferry bench metrics-cost`) runs it with metrics off and on. The data-plane
//! benchmark ([`dataplane`]) builds its own
//! network namespaces and its own OVN/OVS stack, measures Ferry's OVN load balancing side
//! by side with kernel routing and kube-proxy-style iptables and nftables in one run, and
//! reports figures and ratios (a table and JSON rows).
//!
//! The durability campaign ([`durability`], `ferry bench durability`) kills a real API
//! server with SIGKILL under concurrent writers and counts acknowledged writes that are
//! missing after each restart.
//!
//! It must not touch anything it did not create: namespaces carry the prefix
//! `fb-<pid>-`, daemons and servers are started as children and stopped by PID, and
//! everything is removed at the end, on error and on SIGINT/SIGTERM. It measures; it
//! asserts nothing about speed. The `ferry` binary parses flags into
//! [`dataplane::DataplaneOptions`] and calls [`dataplane::run`].
//!
//! ```no_run
//! # fn demo() -> ferry_bench::Result<()> {
//! use ferry_bench::dataplane::{DataplaneOptions, run};
//! let rows = run(&DataplaneOptions {
//!     services: 1000,
//!     out: Some("dataplane.json".into()),
//!     ..DataplaneOptions::default()
//! })?;
//! assert!(rows.iter().any(|r| r.path == "ferry-ovn"));
//! # Ok(()) }
//! ```

pub mod control_plane;
pub mod dataplane;
pub mod durability;
mod error;
pub mod hollow;
pub mod metrics_cost;

pub use error::{Error, Result};
