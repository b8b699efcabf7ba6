//! The one seam through which the agent runs system tools (`ip`, `ethtool`, `ovs-vsctl`,
//! `nsenter`). Every failure becomes a [`CommandError`] naming the command line and
//! carrying its stderr, so an error message says exactly what was attempted.

use std::path::Path;
use std::process::{Command, Stdio};

/// A failed tool invocation.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

impl CommandError {
    /// The command line that failed.
    pub fn command(&self) -> &str {
        match self {
            CommandError::Spawn { command, .. } | CommandError::Failed { command, .. } => command,
        }
    }

    /// True when the tool ran and its stderr contains one of `needles` (used to recognise
    /// "already gone" answers such as `Cannot find device`).
    pub fn stderr_says(&self, needles: &[&str]) -> bool {
        match self {
            CommandError::Failed { stderr, .. } => needles.iter().any(|n| stderr.contains(n)),
            CommandError::Spawn { .. } => false,
        }
    }
}

/// Runs `program args...` in the agent's own network namespace; returns stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String, CommandError> {
    exec(program, args)
}

/// Runs `program args...` inside the network namespace at `netns` (via
/// `nsenter --net=PATH`); returns stdout.
pub fn run_in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String, CommandError> {
    let net = format!("--net={}", netns.display());
    let mut full = vec![net.as_str(), "--", program];
    full.extend_from_slice(args);
    exec("nsenter", &full)
}

fn exec(program: &str, args: &[&str]) -> Result<String, CommandError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "run");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
