//! Sockets inside another network namespace without a thread per probe.
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread, and a socket stays in the
//! namespace it was created in for its whole life. So a [`NetnsSocketFactory`] owns one
//! dedicated thread that has entered the namespace and does nothing but create sockets on
//! request; the sockets (non-blocking, close-on-exec) are handed back and driven by the
//! tokio runtime like any other. Thousands of probes in one namespace share that thread.
//!
//! No `unsafe` is needed: `nix::sched::setns` and `socket2::Socket::new` are safe wrappers.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

/// Opening a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enter network namespace {path} (setns): {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("start the socket thread for {path}: {source}")]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

struct SocketRequest {
    domain: Domain,
    ty: Type,
    protocol: Option<Protocol>,
    reply: oneshot::Sender<io::Result<Socket>>,
}

/// Creates sockets inside one network namespace. Cheap to clone; the thread ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct NetnsSocketFactory {
    path: Arc<PathBuf>,
    tx: mpsc::Sender<SocketRequest>,
}

impl std::fmt::Debug for NetnsSocketFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsSocketFactory")
            .field("path", &self.path)
            .finish()
    }
}

impl NetnsSocketFactory {
    /// Starts the namespace's socket thread (e.g. for `/var/run/netns/NAME`) and waits
    /// until it has entered the namespace.
    pub fn open(path: &Path) -> Result<NetnsSocketFactory, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), nix::Error>>(1);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET);
                drop(file);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                while let Ok(req) = rx.recv() {
                    let _ = req.reply.send(new_socket(req.domain, req.ty, req.protocol));
                }
            })
            .map_err(|source| NetnsError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetnsSocketFactory {
                path: Arc::new(path.to_path_buf()),
                tx,
            }),
            Ok(Err(source)) => Err(NetnsError::Enter {
                path: path.to_path_buf(),
                source,
            }),
            Err(_) => Err(NetnsError::Enter {
                path: path.to_path_buf(),
                source: nix::Error::ECHILD,
            }),
        }
    }

    /// The namespace path this factory serves.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new non-blocking socket inside the namespace.
    pub async fn socket(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        let rx = self.request(domain, ty, protocol)?;
        rx.await.map_err(|_| gone(&self.path))?
    }

    /// Like [`NetnsSocketFactory::socket`], for code outside the runtime (it blocks).
    pub fn socket_blocking(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        let rx = self.request(domain, ty, protocol)?;
        rx.blocking_recv().map_err(|_| gone(&self.path))?
    }

    fn request(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<oneshot::Receiver<io::Result<Socket>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SocketRequest {
                domain,
                ty,
                protocol,
                reply,
            })
            .map_err(|_| gone(&self.path))?;
        Ok(rx)
    }
}

fn gone(path: &Path) -> io::Error {
    io::Error::other(format!(
        "socket thread for network namespace {} has stopped",
        path.display()
    ))
}

fn new_socket(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
    let s = Socket::new(domain, ty, protocol)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Where a probe's sockets come from: the agent's own namespace or a VPC namespace.
#[derive(Debug, Clone)]
pub enum SocketSource {
    Host,
    Netns(NetnsSocketFactory),
}

impl SocketSource {
    /// A new non-blocking socket in this source's namespace.
    pub async fn socket(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        match self {
            SocketSource::Host => new_socket(domain, ty, protocol),
            SocketSource::Netns(f) => f.socket(domain, ty, protocol).await,
        }
    }
}
