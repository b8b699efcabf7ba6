//! `ferry-lab` owns the one-machine lab's plumbing: starting and supervising the OVN and
//! OVS daemons ([`OvnStack`]), creating lab hosts (a network namespace plugged into the
//! integration bridge as an OVN logical port: [`Host`]), and recording everything it
//! creates in `DIR/state.json` ([`Registry`]) so that [`stop_from_dir`] (`ferry lab down`)
//! removes exactly that, also after a crash, and is safe to run twice.
//!
//! [`lab`] and [`topology`] are `ferry lab up/status/check/exec/down`: the lab's topology is
//! written as Ferry objects through the API, and the controllers and agents make it real.
//! This crate must not program OVN itself (the controllers do) nor touch anything it did not create: processes are signalled only
//! by recorded PID after checking `/proc/PID/cmdline` (and start time), and namespaces,
//! links and OVS ports only when recorded.
//!
//! Needs root and the programs of [`prerequisites`]. Verified behaviour this crate relies
//! on (OVS 3.1, OVN 23.03, no OVS kernel module), pinned by the tests under `tests/`:
//! - Relative `punix:` paths are taken relative to `OVS_RUNDIR`, and an `ovsdb-server`
//!   whose listen fails keeps running: readiness is "the socket answers", never "the
//!   process is alive". Every path passed to a daemon here is absolute.
//! - The userspace datapath creates persistent taps (`ovs-netdev`, one per bridge) that
//!   outlive `ovs-vswitchd`; so `ovs-vswitchd` runs in a namespace of its own
//!   ([`OvnOptions::ovs_netns`]), deleted with the lab, which takes the taps and the
//!   bridge-side veth ends with it.
//! - TCP through the userspace datapath needs `ethtool -K DEV tx off` on both veth ends.
//! - `ovn-controller` 23.03 rejects `--unixctl`; its control socket is
//!   `OVN_RUNDIR/ovn-controller.PID.ctl` ([`LabPaths::controller_ctl`]).
//! - After `ovs-vswitchd` is killed and restarted, the taps and veth ends it left in its
//!   namespace are reopened and traffic resumes (about 1.4 s here).
//!
//! Supervision runs on a thread of the process that called [`OvnStack::start`]; a daemon
//! outlives that process (own process group, no parent-death signal) but is no longer
//! restarted once it is gone.
//!
//! ```no_run
//! # fn demo() -> ferry_lab::Result<()> {
//! use ferry_lab::{Host, HostSpec, OvnOptions, OvnStack};
//! let dir = std::path::Path::new("/tmp/lab");
//! let stack = OvnStack::start(dir, OvnOptions::new("ferry-lab-ch1"))?;
//! stack.nbctl(&["ls-add", "sw1"])?; // ... a router, switches and the port "web1"
//! let web = Host::create(
//!     HostSpec::new("web1", "0a:00:00:fb:01:0a", "10.251.1.10/24", "10.251.1.1".parse().ok()),
//!     &stack.bridge(),
//!     stack.registry(),
//! )?;
//! let server = web.spawn(&["python3", "-m", "http.server", "8080"], None)?;
//! // ...
//! ferry_lab::stop_from_dir(dir)?; // or web.delete() and stack.stop()
//! # Ok(()) }
//! ```

pub mod bench;
mod error;
mod jsonrpc;
pub mod lab;
pub mod netns;
pub mod ovn;
mod prereq;
pub mod process;
pub mod registry;
mod teardown;
pub mod topology;

pub use error::{Error, Result};
pub use netns::{Host, HostProcess, HostSpec, PortType};
pub use ovn::{Daemon, LabPaths, OvnOptions, OvnStack, OvsBridge};
pub use prereq::{PREREQUISITES, Prerequisite, prerequisites};
pub use registry::{LabState, Registry};
pub use teardown::{Teardown, purge_dir, stop_from_dir};
