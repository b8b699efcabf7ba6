//! The namespace, link and OVS-port primitives the stack and its teardown need: each
//! checks before it acts, so removing something already gone is a success. The lab's
//! hosts (`ferry-lab`) build on them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::Result;
use crate::layout::unix_remote;
use crate::process;
use crate::registry::{LinkRecord, OvsPortRecord};

/// Runs `ip ARGS...`; returns stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    process::run_ok(Command::new("ip").args(args))
}

/// `-n NS ARGS...` for `ip`, or plain `ARGS...` for the current namespace.
pub fn with_netns<'a>(ns: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::with_capacity(args.len() + 2);
    if let Some(ns) = ns {
        v.extend(["-n", ns]);
    }
    v.extend_from_slice(args);
    v
}

/// `ip netns exec NS ARGV...`, or plain `ARGV...` for the current namespace.
pub fn in_netns(ns: Option<&str>, argv: &[&str]) -> Command {
    match ns {
        Some(ns) => exec_command(ns, argv),
        None => {
            let mut c = Command::new(argv.first().copied().unwrap_or("true"));
            c.args(argv.iter().skip(1));
            c
        }
    }
}

/// `ip netns exec NS ARGV...` (the PID of the spawned child becomes ARGV's PID: `ip`
/// execs it after entering the namespace). For `ferry lab exec NAME -- CMD`, with the
/// namespace from [`crate::LabState`]'s hosts.
pub fn exec_command<S: AsRef<std::ffi::OsStr>>(ns: &str, argv: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

/// Runs `ovs-vsctl --db=unix:DB_SOCK --timeout=30 ARGS...`; returns stdout.
pub fn vsctl<S: AsRef<std::ffi::OsStr>>(db_sock: &Path, args: &[S]) -> Result<String> {
    process::run_ok(
        Command::new("ovs-vsctl")
            .arg(format!("--db={}", unix_remote(db_sock)))
            .arg("--timeout=30")
            .args(args),
    )
}

/// Whether `/run/netns/NAME` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Deletes a namespace if it exists.
pub fn delete_netns(name: &str) -> Result<()> {
    if netns_exists(name) {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

/// Whether a link exists (in its namespace; a missing namespace means no link).
pub fn link_exists(link: &LinkRecord) -> bool {
    if let Some(ns) = &link.netns
        && !netns_exists(ns)
    {
        return false;
    }
    let args = with_netns(link.netns.as_deref(), &["link", "show", "dev", &link.name]);
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Deletes a link if it exists (deleting one veth end removes its peer too).
pub fn delete_link(link: &LinkRecord) -> Result<()> {
    if link_exists(link) {
        ip(&with_netns(
            link.netns.as_deref(),
            &["link", "del", "dev", &link.name],
        ))?;
    }
    Ok(())
}

/// Removes a port from its bridge if the OVS database still answers; with the database
/// gone the port exists only in its file, which is no longer in use.
pub fn delete_ovs_port(port: &OvsPortRecord) -> Result<()> {
    let alive = crate::jsonrpc::call(
        &port.db_sock,
        "list_dbs",
        serde_json::json!([]),
        Duration::from_secs(1),
    )
    .is_ok();
    if alive {
        vsctl(
            &port.db_sock,
            &[
                "--no-wait",
                "--if-exists",
                "del-port",
                &port.bridge,
                &port.port,
            ],
        )?;
    }
    Ok(())
}
