//! `ferry-ovn-stack` owns running OVN and OVS on one machine: starting and supervising
//! the daemons of one stack ([`OvnStack`]) with everything (databases, sockets, pidfiles,
//! logs) under one directory, recording every process, namespace, link and OVS port
//! started there in `DIR/state.json` ([`Registry`]), and [`stop_from_dir`], which removes
//! exactly what is recorded, also after a crash, and is safe to run twice. The lab
//! (`ferry-lab`), `ferry up`, the benchmarks (`ferry-bench`) and the tests
//! (`ferry-testkit`) all start OVN through it.
//!
//! It must not program OVN (the controllers do) nor touch anything it did not create:
//! processes are signalled only by recorded PID after checking `/proc/PID/cmdline` (and
//! start time), and namespaces, links and OVS ports only when recorded.
//!
//! A stack is either complete (NB and SB `ovsdb-server`, `ovn-northd`, the OVS
//! `ovsdb-server`, `ovs-vswitchd`, `ovn-controller`: needs root) or, with
//! [`OvnOptions::central`], the central part only (NB, SB, `ovn-northd`: no root), which
//! is all a control-plane test or benchmark needs.
//!
//! Verified behaviour this crate relies on (OVS 3.1, OVN 23.03, no OVS kernel module),
//! pinned by the tests under `tests/` and `ferry-lab`'s:
//! - Relative `punix:` paths are taken relative to `OVS_RUNDIR`, and an `ovsdb-server`
//!   whose listen fails keeps running: readiness is "the socket answers", never "the
//!   process is alive". Every path passed to a daemon here is absolute.
//! - The userspace datapath creates persistent taps (`ovs-netdev`, one per bridge) that
//!   outlive `ovs-vswitchd`; so `ovs-vswitchd` runs in a namespace of its own
//!   ([`OvnOptions::ovs_netns`]), deleted with the stack, which takes the taps and the
//!   bridge-side veth ends with it.
//! - TCP through the userspace datapath needs `ethtool -K DEV tx off` on both veth ends,
//!   unless `other_config:userspace-tso-enable=true` was set before the ports were added
//!   (the default, [`default_ovs_other_config`]): then checksum and segmentation offload
//!   stay on and the datapath carries the kernel's offload metadata.
//! - `ovn-controller` 23.03 rejects `--unixctl`; its control socket is
//!   `OVN_RUNDIR/ovn-controller.PID.ctl` ([`LabPaths::controller_ctl`]).
//! - After `ovs-vswitchd` is killed and restarted, the taps and veth ends it left in its
//!   namespace are reopened and traffic resumes (about 1.4 s here).
//!
//! - `ovn-northd`'s ovsdb-idl follows a new RAFT leader only after a doubling backoff
//!   (7 s after a `kill -9` in the lab), and no `ovs-appctl` command shortens it; with
//!   RAFT it is given [`leader_proxy`] sockets instead of the members.
//!
//! Supervision runs on a thread of the process that called [`OvnStack::start`]; a daemon
//! outlives that process (own process group, no parent-death signal) but is no longer
//! restarted once it is gone. So do the leader proxies: with RAFT, northd loses its NB and
//! SB when that process is gone.
//!
//! ```no_run
//! # fn demo() -> ferry_ovn_stack::Result<()> {
//! use ferry_ovn_stack::{OvnOptions, OvnStack};
//! let dir = std::path::Path::new("/tmp/ovn");
//! let stack = OvnStack::start(dir, OvnOptions::new("ferry-lab-ch1"))?;
//! stack.nbctl(&["ls-add", "sw1"])?;
//! println!("NB at {}", stack.nb_remote());
//! stack.stop()?; // or, after a crash: ferry_ovn_stack::stop_from_dir(dir)
//! # Ok(()) }
//! ```

mod error;
pub mod fabric;
pub mod jsonrpc;
mod layout;
pub mod leader_proxy;
pub mod netns;
pub mod pki;
pub mod process;
pub mod raft;
mod readiness;
pub mod registry;
mod stack;
mod supervisor;
mod teardown;

pub use error::{Error, Result};
pub use layout::{
    DEFAULT_BRIDGE, Daemon, LabPaths, OWNER, OvnOptions, OvsBridge, default_ovs_other_config,
    no_tso_ovs_other_config, unix_remote,
};
pub use pki::{CertPair, OvsPki, StackTls};
pub use registry::{LabState, Registry};
pub use stack::OvnStack;
pub use teardown::{Teardown, purge_dir, stop_from_dir};
