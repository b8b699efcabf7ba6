//! The health-probe engine: a pure thresholded state machine ([`ProbeState`]), executors
//! for TCP, HTTP, UDP and ICMP ([`execute`]), and a [`ProbeRunner`] that schedules many
//! probes on a small tokio runtime, creating their sockets inside the target VPC's
//! probe namespace ([`crate::netns`]), and emits only phase transitions; [`report`]
//! decides which results the agent writes (again) to the status.

mod exec;
pub mod icmp;
pub mod report;
mod runner;
mod state;
mod target;

pub use exec::execute;
pub use runner::{ProbeEvent, ProbeRunner, RunnerError};
pub use state::{Phase, ProbeResult, ProbeState, Thresholds, Transition};
pub use target::{ProbeKind, ProbeSpec, ProbeTarget};
