//! `ferry-testkit`: the fixtures Ferry's integration tests share, so that no test crate
//! carries its own copy of an OVN harness. Only ever a dev-dependency (`publish = false`).
//!
//! - [`ovsdb::NbServer`]: one real `ovsdb-server` serving the OVN NB schema in a temp dir
//!   (standalone, clustered, a RAFT cluster of N), killed by PID on drop, restartable on
//!   the same database for reconnect tests.
//! - [`ovn::TestOvn`]: an OVN stack (`ferry_ovn_stack::OvnStack`) in a temp dir: the
//!   central part (NB, SB, `ovn-northd`; no root) or a full chassis (root); stopped on
//!   drop, and the directory then torn down from its registry, so a failing test leaves
//!   no process, namespace or tap behind. [`ovn::StackDir`] is that directory alone.
//! - [`netns`]: network namespaces, host links and child processes removed (by name or
//!   PID) when their guard drops; [`netns::unique`] names per test process.
//! - [`etcd::EtcdCluster`]: a real etcd cluster of N members (Debian's `etcd-server`) on
//!   loopback, members killable and restartable, for the etcd-backed store.
//! - [`kubectl`]: `kubectl apply` and waiting for a served resource against a running
//!   `ferry up`, and the default VPC and subnet that make the controller write a switch.
//! - [`wait::eventually`] and `wait::eventually_async` (feature `api`): poll until a
//!   condition holds.
//! - `browser` (feature `browser`): headless Chromium through chromedriver (WebDriver),
//!   for the tests of the web page.
//! - `api` (feature `api`): a real `ferry_apiserver` on `127.0.0.1:0` with a temp data
//!   dir and Ferry's CRDs, a `kube::Client` for it, and server-side apply of any manifest.
//!
//! Fixtures that a test cannot do without (a server, a client) panic with a clear message
//! when they cannot be set up; steps a test may want to handle return `anyhow::Result`.
//! Everything a fixture starts it stops itself, by PID; it deletes only what it created.

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "browser")]
pub mod browser;
pub mod etcd;
pub mod kubectl;
pub mod netns;
pub mod ovn;
pub mod ovsdb;
pub mod wait;

pub use wait::eventually;
#[cfg(feature = "api")]
pub use wait::eventually_async;

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Runs a tool to completion; its stdout, or an error naming it with its stderr.
pub fn tool(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a text file (empty if unreadable), for failure messages.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
