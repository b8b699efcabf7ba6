//! [`TestOvn`]: a `ferry_ovn_stack::OvnStack` in a temp dir, the same code `ferry up`, the
//! lab and the benchmarks run. [`TestOvn::central`] is NB, SB and `ovn-northd` (no root);
//! [`TestOvn::start`] with [`chassis_options`] adds the OVS database, `ovs-vswitchd` and
//! `ovn-controller` (root). On drop the stack is stopped, then its directory is torn down
//! from its registry ([`StackDir`]), so even a stack a test detached or a host it created
//! leaves nothing behind.

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_ovn_stack::{Daemon, OvnOptions, OvnStack, stop_from_dir};

use crate::netns::unique;
use crate::wait::eventually;

/// A temporary stack directory; dropping it runs `stop_from_dir` on it (every process,
/// namespace, link and OVS port its `state.json` records), then removes it.
#[derive(Debug)]
pub struct StackDir {
    /// The directory.
    pub dir: tempfile::TempDir,
}

impl StackDir {
    /// A fresh directory under the system temp dir, named `ferry-PREFIX-*`.
    pub fn new(prefix: &str) -> Result<StackDir> {
        Ok(StackDir {
            dir: tempfile::Builder::new()
                .prefix(&format!("ferry-{prefix}-"))
                .tempdir()
                .context("create a temp dir")?,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for StackDir {
    fn drop(&mut self) {
        if let Err(e) = stop_from_dir(self.dir.path()) {
            eprintln!("cleanup of {}: {e}", self.dir.path().display());
        }
    }
}

/// Options for a full chassis whose names are unique to this test process and `tag`:
/// chassis `ft-<pid>-<tag>`, `ovs-vswitchd` in the namespace `ft-<pid>-<tag>-ovs`,
/// bridge `br-int` (inside that namespace). Tests that need `ovs-vswitchd` in their own
/// namespace set `ovs_netns: None` and a unique `bridge` (see [`unique_bridge`]).
pub fn chassis_options(tag: &str) -> OvnOptions {
    OvnOptions::new(unique(tag))
}

/// A bridge name unique to this test process, short enough for an interface name (the
/// userspace datapath creates a tap of that name): `ft<pid><tag>`, at most 15 bytes.
pub fn unique_bridge(tag: &str) -> String {
    let mut name = format!("ft{}{tag}", std::process::id());
    name.truncate(15);
    name
}

/// A running stack in its own temp dir; derefs to the [`OvnStack`].
#[derive(Debug)]
pub struct TestOvn {
    // Dropped in this order: the stack (stops its daemons), then the directory (tears down
    // whatever is still recorded, then deletes the files).
    stack: OvnStack,
    dir: StackDir,
}

impl TestOvn {
    /// NB, SB and `ovn-northd`, each answering on its socket; needs no root.
    pub fn central() -> Result<TestOvn> {
        TestOvn::start(OvnOptions::central())
    }

    /// A stack with these options (see [`chassis_options`]), ready: with a chassis, its
    /// `ovn-controller` is registered in the SB.
    pub fn start(opts: OvnOptions) -> Result<TestOvn> {
        let dir = StackDir::new("ovn")?;
        let stack = OvnStack::start(dir.path(), opts).context("start the OVN stack")?;
        Ok(TestOvn { stack, dir })
    }

    /// The stack directory (`db/`, `run/`, `logs/`, `state.json`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the logical switch port is bound to a chassis (30 s at most).
    pub fn wait_bound(&self, lsp: &str) -> Result<()> {
        eventually(
            &format!("logical port {lsp} bound"),
            Duration::from_secs(30),
            || {
                let out = self.sbctl(&[
                    "--bare",
                    "--columns=chassis",
                    "find",
                    "Port_Binding",
                    &format!("logical_port={lsp}"),
                ])?;
                if out.trim().is_empty() {
                    Err(anyhow::anyhow!("not bound"))
                } else {
                    Ok(())
                }
            },
        )
    }

    /// The last lines of a daemon's log, for failure messages.
    pub fn log_tail(&self, d: Daemon) -> String {
        crate::tail(&self.paths().log(d), 20)
    }
}

impl Deref for TestOvn {
    type Target = OvnStack;

    fn deref(&self) -> &OvnStack {
        &self.stack
    }
}

/// A pod's logical port for [`vpc_with_ports`]: (switch, port, MAC, address/prefix,
/// gateway).
pub type PodPort<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// Programs the VPC the CNI tests plumb pods into: a router `vpc` with one switch per
/// `(switch, router port MAC, router port address/prefix)` joined to it, and one logical
/// port per pod (its MAC and address, so port security admits it).
pub fn vpc_with_ports(
    stack: &OvnStack,
    subnets: &[(&str, &str, &str)],
    pods: &[PodPort<'_>],
) -> Result<()> {
    let n = |args: &[&str]| stack.nbctl(args).map(drop);
    n(&["lr-add", "vpc"])?;
    for (sw, mac, cidr) in subnets {
        let (lrp, lsp) = (format!("vpc-{sw}"), format!("{sw}-vpc"));
        n(&["ls-add", sw])?;
        n(&["lrp-add", "vpc", &lrp, mac, cidr])?;
        n(&["lsp-add", sw, &lsp])?;
        n(&["lsp-set-type", &lsp, "router"])?;
        n(&["lsp-set-addresses", &lsp, "router"])?;
        n(&["lsp-set-options", &lsp, &format!("router-port={lrp}")])?;
    }
    for (sw, lsp, mac, cidr, _) in pods {
        n(&["lsp-add", sw, lsp])?;
        let ip = cidr.split('/').next().unwrap_or(cidr);
        n(&["lsp-set-addresses", lsp, &format!("{mac} {ip}")])?;
    }
    Ok(())
}
