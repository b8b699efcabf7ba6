//! Errors of the kernel adapter.

use std::io;
use std::path::PathBuf;

/// A failure to load, attach or program the socket load balancer.
#[derive(Debug, thiserror::Error)]
pub enum SockLbError {
    #[error("load the socket LB BPF object into the kernel: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the socket LB BPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("open cgroup v2 directory {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} in BPF map {map}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("BPF map {map} is full ({max} entries); resize the maps (SocketLb::resize)")]
    Full { map: &'static str, max: u32 },
    #[error("resize: map {map} would get {want} entries but holds {used}")]
    TooSmall {
        map: &'static str,
        want: u32,
        used: u64,
    },
    #[error("pinning the socket LB at {path}: {detail}")]
    Pin { path: PathBuf, detail: String },
    #[error("network namespace cookie of {what}: {source}")]
    NetnsCookie {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl SockLbError {
    pub(crate) fn map(map: &'static str, op: &'static str, source: aya::maps::MapError) -> Self {
        SockLbError::Map {
            map,
            op,
            source: Box::new(source),
        }
    }
}
