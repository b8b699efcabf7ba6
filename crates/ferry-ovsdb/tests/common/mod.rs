//! A real `ovsdb-server` serving the OVN NB schema in a temp dir, for integration tests.
//! It is a child process of the test; it is killed (by PID, through `Child`) in `Drop`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

pub struct Server {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub sock: PathBuf,
    pub tcp_port: u16,
    child: Option<Child>,
}

impl Server {
    /// A standalone NB database.
    pub fn standalone() -> Server {
        Server::create(false)
    }

    /// A one-member RAFT cluster NB database (real transaction ids, `_Server` leader info).
    pub fn clustered() -> Server {
        Server::create(true)
    }

    fn create(clustered: bool) -> Server {
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
        let mut s = Server {
            dir,
            db,
            sock,
            tcp_port: 0,
            child: None,
        };
        s.start();
        s
    }

    /// A RAFT cluster of `n` members (raft traffic over unix sockets), all started.
    /// Member 0 created the cluster; the others joined it.
    pub fn cluster(n: usize) -> Vec<Server> {
        let mut members: Vec<Server> = Vec::new();
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
            let mut s = Server {
                dir,
                db,
                sock,
                tcp_port: 0,
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
        let child = Command::new("ovsdb-server")
            .arg(&self.db)
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .arg("--remote=ptcp:0:127.0.0.1")
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

    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
