//! [`NbServer`]: one real `ovsdb-server` serving the OVN Northbound schema in a temp dir
//! (standalone, a one-member RAFT cluster, or a cluster of N members), listening on a
//! unix socket and on `ptcp:0` on loopback. It is a child of the test, killed (by PID,
//! through `Child`) on drop; [`NbServer::kill`] and [`NbServer::start`] restart it on the
//! same database and socket, for reconnect tests. [`NbServer::standalone_tls`] listens on
//! `pssl:0` instead of `ptcp:0`, with a PKI made by `ovs-pki` in its directory. For a whole NB + SB + `ovn-northd`, see
//! [`crate::ovn::TestOvn::central`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_ovn_stack::{CertPair, OvsPki};

/// The OVN Northbound schema as Debian installs it.
pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// A running (or, after [`NbServer::kill`], stopped) NB `ovsdb-server`.
#[derive(Debug)]
pub struct NbServer {
    /// Its directory (database, sockets, log), removed on drop.
    pub dir: tempfile::TempDir,
    /// The database file.
    pub db: PathBuf,
    /// The unix socket.
    pub sock: PathBuf,
    /// The loopback port of the latest start (TCP, or TLS with [`NbServer::standalone_tls`]).
    pub tcp_port: u16,
    /// The PKI of a TLS server: `ovs-pki` under `DIR/pki`, the server's pair `server`,
    /// a client pair `client`.
    pub pki: Option<TestPki>,
    child: Option<Child>,
}

/// What a TLS [`NbServer`] and its clients use.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub pki: OvsPki,
    pub server: CertPair,
    /// A pair for clients, signed by the same CA.
    pub client: CertPair,
}

impl TestPki {
    /// `ovs-pki init` in `dir`, a `server` and a `client` pair.
    fn create(dir: &Path) -> TestPki {
        let pki = OvsPki::open_or_init(dir).expect("ovs-pki init");
        TestPki {
            server: pki.issue("server").expect("ovs-pki server pair"),
            client: pki.issue("client").expect("ovs-pki client pair"),
            pki,
        }
    }
}

impl NbServer {
    /// A standalone NB database.
    pub fn standalone() -> NbServer {
        NbServer::create(false)
    }

    /// A one-member RAFT cluster NB database (real transaction ids, `_Server` leader info).
    pub fn clustered() -> NbServer {
        NbServer::create(true)
    }

    /// A standalone NB database listening on `pssl:0:127.0.0.1` (mutual TLS; see
    /// [`NbServer::ssl_remote`] and [`NbServer::pki`]) and on its unix socket.
    pub fn standalone_tls() -> NbServer {
        NbServer::create_with(false, true)
    }

    fn create(clustered: bool) -> NbServer {
        NbServer::create_with(clustered, false)
    }

    fn create_with(clustered: bool, tls: bool) -> NbServer {
        let dir = tempfile::Builder::new()
            .prefix("ovsdb-")
            .tempdir()
            .expect("tempdir");
        let db = dir.path().join("nb.db");
        let mut cmd = Command::new("ovsdb-tool");
        if clustered {
            let raft = format!("unix:{}", dir.path().join("raft.sock").display());
            cmd.arg("create-cluster").arg(&db).arg(NB_SCHEMA).arg(raft);
        } else {
            cmd.arg("create").arg(&db).arg(NB_SCHEMA);
        }
        let out = cmd
            .output()
            .expect("run ovsdb-tool (install openvswitch-common)");
        assert!(out.status.success(), "ovsdb-tool: {out:?}");
        let sock = dir.path().join("nb.sock");
        let pki = tls.then(|| TestPki::create(&dir.path().join("pki")));
        let mut s = NbServer {
            dir,
            db,
            sock,
            tcp_port: 0,
            pki,
            child: None,
        };
        s.start();
        s
    }

    /// A RAFT cluster of `n` members (raft traffic over unix sockets), all started.
    /// Member 0 created the cluster; the others joined it.
    pub fn cluster(n: usize) -> Vec<NbServer> {
        NbServer::cluster_with(n, false)
    }

    /// [`NbServer::cluster`] whose members listen on `pssl:` instead of `ptcp:`, all with
    /// one PKI (made by `ovs-pki` in member 0's directory).
    pub fn cluster_tls(n: usize) -> Vec<NbServer> {
        NbServer::cluster_with(n, true)
    }

    fn cluster_with(n: usize, tls: bool) -> Vec<NbServer> {
        let mut members: Vec<NbServer> = Vec::new();
        let mut pki: Option<TestPki> = None;
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix(&format!("ovsdb-m{i}-"))
                .tempdir()
                .expect("tempdir");
            let db = dir.path().join("nb.db");
            let raft = |d: &Path| format!("unix:{}", d.join("raft.sock").display());
            let mut cmd = Command::new("ovsdb-tool");
            if i == 0 {
                cmd.arg("create-cluster")
                    .arg(&db)
                    .arg(NB_SCHEMA)
                    .arg(raft(dir.path()));
            } else {
                cmd.arg("join-cluster")
                    .arg(&db)
                    .arg("OVN_Northbound")
                    .arg(raft(dir.path()))
                    .arg(raft(members[0].dir.path()));
            }
            let out = cmd.output().expect("run ovsdb-tool");
            assert!(out.status.success(), "ovsdb-tool: {out:?}");
            let sock = dir.path().join("nb.sock");
            if tls && pki.is_none() {
                pki = Some(TestPki::create(&dir.path().join("pki")));
            }
            let mut s = NbServer {
                dir,
                db,
                sock,
                tcp_port: 0,
                pki: pki.clone(),
                child: None,
            };
            s.start();
            members.push(s);
        }
        members
    }

    /// Starts ovsdb-server on the same DB file and socket path.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = self.dir.path();
        let log = d.join("ovsdb-server.log");
        // A SIGKILLed server leaves its socket file behind; ovsdb-server replaces it.
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(&self.db)
            .arg(format!("--remote=punix:{}", self.sock.display()));
        match &self.pki {
            // A restart keeps the port, so that clients can reconnect to the same remote.
            Some(p) => {
                cmd.arg(format!("--remote=pssl:{}:127.0.0.1", self.tcp_port))
                    .args(p.pki.ssl_args(&p.server));
            }
            None => {
                cmd.arg("--remote=ptcp:0:127.0.0.1");
            }
        }
        let child = cmd
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--pidfile={}",
                d.join("ovsdb-server.pid").display()
            ))
            .arg(format!("--log-file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server (install openvswitch-switch)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = self.listening_port(&log)
                && std::os::unix::net::UnixStream::connect(&self.sock).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                self.tcp_port = port;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ovsdb-server did not start; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port of the latest `ptcp:0` listener, from the log.
    fn listening_port(&self, log: &Path) -> Option<u16> {
        let text = std::fs::read_to_string(log).ok()?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(": listening on port"))?;
        line.rsplit(' ').next()?.trim().parse().ok()
    }

    /// SIGKILL (`Child::kill`) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `unix:SOCK`.
    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// `tcp:127.0.0.1:PORT`.
    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
    }

    /// `ssl:127.0.0.1:PORT` (a [`NbServer::standalone_tls`] server).
    pub fn ssl_remote(&self) -> String {
        format!("ssl:127.0.0.1:{}", self.tcp_port)
    }

    /// Runs `ovn-nbctl --db=unix:SOCK ARGS` and asserts it succeeded.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let out: Output = Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.unix_remote()))
            .arg("--timeout=10")
            .args(args)
            .output()
            .expect("run ovn-nbctl (install ovn-central)");
        assert!(out.status.success(), "ovn-nbctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for NbServer {
    fn drop(&mut self) {
        self.kill();
    }
}
