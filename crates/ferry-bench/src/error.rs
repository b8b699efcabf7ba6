//! Errors of the benchmarks: one variant per failure, naming the step and the object.

use std::path::PathBuf;

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while setting up, measuring or cleaning up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An option has a value the benchmark cannot use.
    #[error("option {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
    /// A tool's output could not be read.
    #[error("reading the output of {tool}: {reason}")]
    Parse { tool: &'static str, reason: String },
    /// A path never became reachable.
    #[error("{path}: {target} not reachable from the client after {waited_s} s ({detail})")]
    Unreachable {
        path: &'static str,
        target: String,
        waited_s: u64,
        detail: String,
    },
    /// The OVN lab plumbing (daemons, hosts) failed.
    #[error("OVN lab: {0}")]
    Lab(#[from] ferry_lab::Error),
    /// The Northbound database refused or did not answer.
    #[error("OVN Northbound: {0}")]
    Ovsdb(#[from] ferry_ovsdb::Error),
    /// Writing the Northbound rows (Ferry's applier) failed.
    #[error("OVN Northbound apply: {0}")]
    NbApply(#[from] ferry_nb::Error),
    /// The run was interrupted (SIGINT/SIGTERM); everything was cleaned up.
    #[error("interrupted; namespaces and processes were removed")]
    Interrupted,
    /// Cleaning up left something behind.
    #[error("cleanup left things behind: {0:?}")]
    Cleanup(Vec<String>),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
