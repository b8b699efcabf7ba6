//! `ferry-lab` owns the one-machine lab: lab hosts (a network namespace plugged into the
//! integration bridge as an OVN logical port: [`Host`]) and `ferry lab
//! up/status/check/exec/down` ([`lab`], [`topology`]): the lab's topology is written as
//! Ferry objects through the API, and the controllers and agents make it real.
//!
//! The OVN/OVS daemons, the lab directory's registry (`DIR/state.json`) and teardown
//! belong to `ferry-ovn-stack`; a host records what it creates in that registry, so
//! `ferry_ovn_stack::stop_from_dir` (`ferry lab down`) removes it too. This crate must
//! not program OVN itself (the controllers do) nor touch anything it did not create.
//!
//! Needs root and the programs of [`prerequisites`].
//!
//! ```no_run
//! # fn demo() -> ferry_lab::Result<()> {
//! use ferry_lab::{Host, HostSpec};
//! use ferry_ovn_stack::{OvnOptions, OvnStack};
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
//! ferry_ovn_stack::stop_from_dir(dir)?; // or web.delete() and stack.stop()
//! # Ok(()) }
//! ```

pub mod chassis;
pub mod dpu;
pub mod faults;
pub mod lab;
pub mod netns;
mod prereq;
pub mod progress;
pub mod services;
pub mod topology;

/// The lab shares the stack's error type: a host fails the way a daemon does (a command,
/// a file, a name that exists).
pub use ferry_ovn_stack::{Error, Result};
pub use netns::{Host, HostProcess, HostSpec, PortType};
pub use prereq::{PREREQUISITES, Prerequisite, prerequisites};
