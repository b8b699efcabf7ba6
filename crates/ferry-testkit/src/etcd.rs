//! [`EtcdCluster`]: a real etcd cluster (Debian's `etcd-server`, 3.4) of N members on
//! loopback, each a child process of the test with its own data dir and ports in one temp
//! dir. Members can be killed (SIGKILL, by PID through `Child`) and started again on their
//! data; everything is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary the package installs.
pub const ETCD: &str = "etcd";

/// One member's name, ports and process.
#[derive(Debug)]
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    /// Holds every member's data dir and log; removed on drop.
    pub dir: tempfile::TempDir,
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers `/health` on each.
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "ferry-test"])
            // Short elections: a killed leader is replaced within about a second.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd (install Debian's etcd-server: scripts/setup.sh)");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` reports itself healthy (it has a leader).
    pub fn wait_healthy(&self, i: usize) {
        let port = self.members[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if get(port, "/health").is_some_and(|b| b.contains("\"true\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} not healthy after 60 s; see {}",
                self.members[i].name,
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,...` followed by `suffix` (a key prefix or "").
    pub fn url(&self, suffix: &str) -> String {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.url_of(&all, suffix)
    }

    /// Like [`EtcdCluster::url`] with only the members `which`.
    pub fn url_of(&self, which: &[usize], suffix: &str) -> String {
        let hosts: Vec<String> = which
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect();
        format!("etcd://{}{suffix}", hosts.join(","))
    }

    /// Kills member `i` with SIGKILL (by PID) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The body of a plain HTTP GET on loopback, if it answered.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}
