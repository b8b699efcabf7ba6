//! [`EtcdCluster`]: a real etcd cluster (Debian's `etcd-server`, 3.4) of N members on
//! loopback, each a child process of the test with its own data dir and ports in one temp
//! dir. Members can be killed (SIGKILL, by PID through `Child`) and started again on their
//! data; everything is killed on drop. [`EtcdCluster::start_tls`] runs it on HTTPS (clients
//! and peers) with client-certificate authentication, with a CA and certificates made for the
//! test ([`EtcdPki`]).

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
    /// Plain HTTP `/health` (and `/metrics`), also when clients must use TLS.
    pub metrics_port: u16,
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
    /// Set when the cluster speaks TLS.
    pub pki: Option<EtcdPki>,
}

/// PEM files of a TLS cluster, in `DIR/pki`: a CA, the members' certificate (for
/// `127.0.0.1` and `localhost`, used for serving and between peers) and a client
/// certificate.
#[derive(Debug, Clone)]
pub struct EtcdPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: a client trusting only it must fail.
    pub other_ca: PathBuf,
}

impl EtcdPki {
    /// Makes the CA and certificates under `dir`.
    pub fn create(dir: &std::path::Path) -> EtcdPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca = |cn: &str| {
            let key = KeyPair::generate().expect("CA key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = p.self_signed(&key).expect("CA cert");
            (cert.pem(), Issuer::new(p, key))
        };
        let (ca_pem, issuer) = ca("ferry-test-etcd-ca");
        let (other_pem, _) = ca("ferry-test-other-ca");
        let leaf = |cn: &str, ip: bool| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            if ip {
                p.subject_alt_names
                    .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            }
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.signed_by(&key, &issuer).expect("cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf("etcd", true);
        let (client, client_key) = leaf("ferry", false);
        let pki = EtcdPki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
        };
        for (path, text) in [
            (&pki.ca, &ca_pem),
            (&pki.server_cert, &server),
            (&pki.server_key, &server_key),
            (&pki.client_cert, &client),
            (&pki.client_key, &client_key),
            (&pki.other_ca, &other_pem),
        ] {
            std::fs::write(path, text).expect("writing a PEM file");
        }
        pki
    }
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
        EtcdCluster::start_with(n, false)
    }

    /// Like [`EtcdCluster::start`], on HTTPS between clients and members and between peers,
    /// with `--client-cert-auth`: a client needs [`EtcdPki::client_cert`].
    pub fn start_tls(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, true)
    }

    fn start_with(n: usize, tls: bool) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let pki = tls.then(|| EtcdPki::create(&dir.path().join("pki")));
        let scheme = if tls { "https" } else { "http" };
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={scheme}://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
            pki,
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
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("{scheme}://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(ETCD);
        if let Some(pki) = &self.pki {
            for (flag, path) in [
                ("--cert-file", &pki.server_cert),
                ("--key-file", &pki.server_key),
                ("--trusted-ca-file", &pki.ca),
                ("--peer-cert-file", &pki.server_cert),
                ("--peer-key-file", &pki.server_key),
                ("--peer-trusted-ca-file", &pki.ca),
            ] {
                cmd.arg(flag).arg(path);
            }
            cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
        }
        let child = cmd
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
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", m.metrics_port),
            ])
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
        let port = self.members[i].metrics_port;
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

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,...` followed by `suffix` (a key prefix or ""); on
    /// a TLS cluster `etcds://...` with the CA and the client certificate as the query.
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
        match &self.pki {
            None => format!("etcd://{}{suffix}", hosts.join(",")),
            Some(p) => format!(
                "etcds://{}{suffix}?cacert={}&cert={}&key={}",
                hosts.join(","),
                p.ca.display(),
                p.client_cert.display(),
                p.client_key.display()
            ),
        }
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
