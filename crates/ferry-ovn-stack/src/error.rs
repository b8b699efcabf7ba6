//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running a stack or a lab. Each variant names the operation
/// and the object (path, process, namespace) it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"create directory"`, `"write"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started at all (missing binary, permissions).
    #[error(
        "cannot run `{program}`: {source} (are the OVN/OVS packages installed? see scripts/setup.sh)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (`ip`, `ovs-vsctl`, `ovsdb-tool`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A supervised daemon did not answer in time.
    #[error("{process} did not become ready within {timeout:?}: {detail}; see its log {}", log.display())]
    NotReady {
        /// The daemon's name (`ovn-northd`, ...).
        process: String,
        /// How long we waited.
        timeout: Duration,
        /// The last readiness probe failure.
        detail: String,
        /// The daemon's log file.
        log: PathBuf,
    },
    /// A supervised daemon exited while we waited for it to become ready.
    #[error("{process} exited during start-up ({status}); see its log {}: {tail}", log.display())]
    Exited {
        /// The daemon's name.
        process: String,
        /// Its exit status.
        status: String,
        /// The daemon's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The lab state file could not be read or written.
    #[error("lab state {}: {source}", path.display())]
    State {
        /// `DIR/state.json`.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An argument was rejected before anything was created.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which argument (`"interface name"`, `"lab directory"`, ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Something the lab would create already exists and is not the lab's.
    #[error(
        "{what} {name:?} already exists and was not created by this lab; remove it or pick another name"
    )]
    AlreadyExists {
        /// `"network namespace"`, `"link"`, ...
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Sending a signal to a recorded process failed.
    #[error("signal {signal} to {process} (pid {pid}): {source}")]
    Signal {
        /// The process name.
        process: String,
        /// Its PID.
        pid: i32,
        /// The signal.
        signal: &'static str,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// A process ignored SIGTERM and SIGKILL.
    #[error("{process} (pid {pid}) still runs after SIGKILL")]
    Unkillable {
        /// The process name.
        process: String,
        /// Its PID.
        pid: i32,
    },
    /// [`crate::OvnStack::start_cancellable`] was told to stop (a signal during start-up);
    /// what it had started is stopped again.
    #[error("OVN start-up cancelled")]
    Cancelled,
    /// Teardown finished but could not remove some recorded resources.
    #[error("teardown of {} left resources behind: {}", dir.display(), failures.join("; "))]
    Teardown {
        /// The lab directory.
        dir: PathBuf,
        /// One message per resource that could not be removed.
        failures: Vec<String>,
    },
}

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
