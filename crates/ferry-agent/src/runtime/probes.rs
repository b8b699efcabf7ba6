//! The kubelet's container probes of the lab runtime: exec in the workload's namespace,
//! HTTP and TCP to its own address from inside it.

use std::net::IpAddr;
use std::process::Stdio;

use super::{Probe, ProbeAction};
use crate::netns::SocketSource;
use crate::probe::{self, ProbeKind, ProbeTarget};

/// Runs one probe; false on failure or timeout.
pub(super) async fn run_probe(
    p: &Probe,
    ip: Option<IpAddr>,
    sockets: Option<&SocketSource>,
    netns: &str,
) -> bool {
    match &p.action {
        ProbeAction::Exec { command } => {
            let (program, rest) = match netns.is_empty() {
                true => (
                    command.first().cloned().unwrap_or_default(),
                    &command[command.len().min(1)..],
                ),
                false => ("ip".to_string(), command.as_slice()),
            };
            let mut cmd = tokio::process::Command::new(program);
            if !netns.is_empty() {
                cmd.args(["netns", "exec", netns]);
            }
            cmd.args(rest)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            matches!(
                tokio::time::timeout(p.timeout, cmd.status()).await,
                Ok(Ok(s)) if s.success()
            )
        }
        ProbeAction::Http { port, path } => {
            socket_probe(
                ProbeKind::Http { path: path.clone() },
                *port,
                p,
                ip,
                sockets,
            )
            .await
        }
        ProbeAction::Tcp { port } => socket_probe(ProbeKind::Tcp, *port, p, ip, sockets).await,
    }
}

/// An HTTP or TCP probe from inside the workload's namespace to its own address.
async fn socket_probe(
    kind: ProbeKind,
    port: u16,
    p: &Probe,
    ip: Option<IpAddr>,
    sockets: Option<&SocketSource>,
) -> bool {
    let (Some(ip), Some(sockets)) = (ip, sockets) else {
        return false;
    };
    probe::execute(sockets, &ProbeTarget { kind, ip, port }, p.timeout)
        .await
        .success
}
