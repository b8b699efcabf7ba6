//! A unix-socket proxy in front of a RAFT database's current leader, given to
//! `ovn-northd` as its only NB (and SB) remote ([`OvnOptions::northd_leader_proxy`]).
//!
//! Why: northd's client (ovsdb-idl) connects to the leader only, and after losing it walks
//! its list of remotes with a reconnect backoff that doubles after each refused attempt
//! (1, 2, 4, 8 s). A member it tries while the cluster is still electing says "not cluster
//! leader", so the backoff grows while the election (1-2 s with OVSDB's 1 s timer) runs,
//! and northd reached the new NB leader 7.0 s after `kill -9` of the old one in the lab
//! (docs/resilience.md), with every change written to the NB in between waiting for it.
//! No `ovs-appctl` command makes northd reconnect sooner.
//!
//! Given one remote, this socket, northd reconnects once after its minimum backoff (1 s);
//! the proxy holds that connection until some member says it is the connected leader,
//! then splices it to that member's socket byte for byte. When the leader dies (or the
//! client leaves) both sides are closed, so northd sees the loss as before; a leader that
//! steps down without dying is noticed by northd itself from its `_Server` monitor, and
//! its reconnection (immediate in that case) comes back here and finds the new one.
//!
//! [`OvnOptions::northd_leader_proxy`]: crate::OvnOptions::northd_leader_proxy

use std::io;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::unix_remote;

/// How often the accept loop looks at the stop flag, and a waiting connection for a leader.
const POLL: Duration = Duration::from_millis(50);
/// How long a connection waits for a leader before it is closed (the client retries).
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// A running proxy: a thread accepting on [`LeaderProxy::path`], one more per connection
/// (two while it is spliced). Stopped when dropped; connections already spliced run on
/// until either side closes.
#[derive(Debug)]
pub struct LeaderProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl LeaderProxy {
    /// Listens on `listen` (a stale socket file there is replaced) and forwards each
    /// connection to whichever of `members` (their client sockets) is the connected
    /// leader of `db` when it arrives.
    pub fn start(listen: &Path, members: Vec<PathBuf>, db: &'static str) -> Result<LeaderProxy> {
        let _ = std::fs::remove_file(listen);
        let listener = UnixListener::bind(listen).map_err(|e| Error::io("listen on", listen, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", listen, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let members = Arc::new(members);
        let accept = thread::Builder::new()
            .name(format!("ferry-leader-proxy-{db}"))
            .spawn(move || accept_loop(&listener, &members, db, &stop2))
            .map_err(|e| Error::io("spawn leader proxy for", listen, e))?;
        Ok(LeaderProxy {
            path: listen.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }

    /// The socket it listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `unix:PATH`: the remote to give a client.
    pub fn remote(&self) -> String {
        unix_remote(&self.path)
    }
}

impl Drop for LeaderProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take()
            && h.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "leader proxy thread panicked");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: &UnixListener,
    members: &Arc<Vec<PathBuf>>,
    db: &'static str,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((down, _)) => {
                let members = Arc::clone(members);
                let stop = Arc::clone(stop);
                let spawned = thread::Builder::new()
                    .name(format!("ferry-leader-proxy-{db}-conn"))
                    .spawn(move || serve(down, &members, db, &stop));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, db, "leader proxy: no thread for a connection");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => {
                tracing::warn!(error = %e, db, "leader proxy: accept failed");
                thread::sleep(POLL);
            }
        }
    }
}

/// Waits for a leader, connects to it and splices; closing `down` without a word when no
/// leader appears within [`LEADER_WAIT`] (or the proxy stops).
fn serve(down: UnixStream, members: &[PathBuf], db: &'static str, stop: &AtomicBool) {
    let started = Instant::now();
    let up = loop {
        if stop.load(Ordering::SeqCst) || started.elapsed() > LEADER_WAIT {
            tracing::warn!(
                db,
                waited_ms = started.elapsed().as_millis() as u64,
                "leader proxy: no leader; closing the client"
            );
            return;
        }
        if let Some(sock) = members.iter().find(|s| crate::raft::is_leader(s, db))
            && let Ok(up) = UnixStream::connect(sock)
        {
            tracing::info!(db, leader = %sock.display(), waited_ms = started.elapsed().as_millis() as u64, "leader proxy: client spliced to the leader");
            break up;
        }
        thread::sleep(POLL);
    };
    if let Err(e) = splice(down, up) {
        tracing::warn!(error = %e, db, "leader proxy: splice failed");
    }
}

/// Copies bytes both ways until either side closes, then closes both.
fn splice(down: UnixStream, up: UnixStream) -> io::Result<()> {
    down.set_nonblocking(false)?;
    let (mut down_r, mut up_w) = (down.try_clone()?, up.try_clone()?);
    let to_leader = thread::Builder::new()
        .name("ferry-leader-proxy-up".into())
        .spawn(move || {
            let _ = io::copy(&mut down_r, &mut up_w);
            let _ = up_w.shutdown(Shutdown::Both);
            let _ = down_r.shutdown(Shutdown::Both);
        })?;
    let (mut up_r, mut down_w) = (up, down);
    let _ = io::copy(&mut up_r, &mut down_w);
    let _ = up_r.shutdown(Shutdown::Both);
    let _ = down_w.shutdown(Shutdown::Both);
    let _ = to_leader.join();
    Ok(())
}
