//! What the integration tests share: a real server in a temp dir and clients for it (from
//! `ferry-testkit`), the server as its own process (for restarts), and raw HTTPS through
//! `curl` (for requests no well-behaved client would send).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[allow(unused_imports)]
pub use ferry_testkit::api::{TestApiServer as TestServer, client_for};

/// A versioned kubectl (`kubectl.1.27`, ...), installed beside the `kubectl` on PATH.
pub fn kubectl_for(version: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())
        .expect("kubectl on PATH");
    let dir = std::fs::canonicalize(&kubectl)
        .expect("resolving kubectl")
        .with_file_name("");
    let bin = dir.join(format!("kubectl.{version}"));
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// Starts a server on 127.0.0.1:0 in a fresh temp dir, with Ferry's CRDs installed.
pub async fn start(limits: ferry_apiserver::Limits) -> TestServer {
    TestServer::start_with(limits).await
}

/// The server as its own process (killed and reaped when dropped), for restarts: an
/// in-process server keeps its store open until the test process ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ferry-apiserver --data-dir DIR --listen 127.0.0.1:0` and waits for its
/// `serving https://...` line.
pub fn spawn_server(dir: &Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-apiserver"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning ferry-apiserver");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the server's first line");
    assert!(line.starts_with("serving https://"), "unexpected: {line:?}");
    Process(child)
}

/// The answer to one raw HTTPS request.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// One request with `curl -k` (blocking); `token` becomes a bearer token.
pub fn curl(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    curl_with(&[], method, url, token, body)
}

/// Like [`curl`], with extra curl arguments first.
pub fn curl_with(
    extra: &[&str],
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let tmp = tempfile::tempdir().expect("temp dir");
    let headers = tmp.path().join("headers");
    let out = tmp.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(extra)
        .args(["-sS", "-k", "-X", method, "-o"])
        .arg(&out)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}", "-H", "Content-Type: application/json"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    cmd.arg(url);
    let o = cmd.output().expect("running curl");
    assert!(
        o.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Reply {
        code: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("HTTP code"),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&out).unwrap_or_default(),
    }
}
