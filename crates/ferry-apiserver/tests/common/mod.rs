//! What the integration tests share: a real server in a temp dir, clients for it, and raw
//! HTTPS through `curl` (for requests no well-behaved client would send).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_apiserver::{ApiServer, Config, Limits};

/// A running server, stopped and its data dir removed when dropped.
pub struct TestServer {
    pub server: Option<ApiServer>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub addr: std::net::SocketAddr,
}

/// Starts a server on 127.0.0.1:0 in a fresh temp dir, with Ferry's CRDs installed.
pub async fn start(limits: Limits) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ApiServer::start(Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        limits,
        services: Default::default(),
    })
    .await
    .expect("starting the API server");
    let crds: Vec<serde_json::Value> = ferry_api::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("CRD as JSON"))
        .collect();
    server.install_crds(&crds).await.expect("installing CRDs");
    TestServer {
        kubeconfig: server.kubeconfig.clone(),
        addr: server.addr,
        server: Some(server),
        dir,
    }
}

impl TestServer {
    pub fn tokens(&self) -> &ferry_apiserver::Tokens {
        &self.server.as_ref().expect("server running").tokens
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A kube-rs client with the admin identity of the generated kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(cfg).expect("client")
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
