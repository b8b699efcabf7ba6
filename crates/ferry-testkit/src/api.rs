//! [`TestApiServer`]: a real Ferry API server (`ferry_apiserver`, the same code `ferry
//! apiserver` runs) on `127.0.0.1:0` with a temp data dir and Ferry's CRDs installed, and
//! `kube::Client`s for the identities its kubeconfigs carry. It runs in the test's tokio
//! runtime and stops when [`TestApiServer::stop`] is awaited or the runtime ends; its
//! data dir goes when the value drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry_apiserver::{ApiServer, Config, Limits, Tokens};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use serde_json::Value;

/// A running server and its data dir.
pub struct TestApiServer {
    /// `None` once stopped.
    pub server: Option<ApiServer>,
    /// The data dir (store, certificates, kubeconfigs).
    pub dir: tempfile::TempDir,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TestApiServer {
    /// Starts a server with default limits and Ferry's CRDs.
    pub async fn start() -> TestApiServer {
        TestApiServer::start_with(Limits::default()).await
    }

    /// Starts a server with these limits and Ferry's CRDs.
    pub async fn start_with(limits: Limits) -> TestApiServer {
        let dir = tempfile::tempdir().expect("temp dir for the API server");
        let server = start_with_crds(Config {
            data_dir: dir.path().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits,
            services: Default::default(),
        })
        .await;
        TestApiServer {
            kubeconfig: server.kubeconfig.clone(),
            addr: server.addr,
            server: Some(server),
            dir,
        }
    }

    /// The identities' tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.server.as_ref().expect("server running").tokens
    }

    /// `https://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The controller's kubeconfig (`ferry controller`'s least-privilege identity).
    pub fn controller_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig-controller")
    }

    /// The node agents' shared kubeconfig: the ServiceAccount `ferry-system/ferry-agent`,
    /// as a DaemonSet agent runs on a real cluster.
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig-agent")
    }

    /// The embedded controllers' kubeconfig (scheduler, workloads, endpoints: what
    /// kube-scheduler and kube-controller-manager may do).
    pub fn embedded_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig-embedded")
    }

    /// The kubeconfig of node `node`'s agent (`system:node:NODE`), minted on first call.
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.server
            .as_ref()
            .expect("server running")
            .node_kubeconfig(node)
            .expect("minting a node identity")
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// Stops serving (the data dir stays until drop).
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Starts a server with this configuration (a data dir the test keeps, e.g. to restart on
/// it) and installs Ferry's CRDs.
pub async fn start_with_crds(config: Config) -> ApiServer {
    let server = ApiServer::start(config)
        .await
        .expect("starting the API server");
    let crds: Vec<Value> = ferry_api::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("CRD as JSON"))
        .collect();
    server.install_crds(&crds).await.expect("installing CRDs");
    server
}

/// A client for any kubeconfig the server wrote.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(cfg).expect("client")
}

/// Server-side applies any manifest (field manager `test`, forced), as `kubectl apply
/// --server-side --force-conflicts` would; namespaced kinds go to `metadata.namespace`
/// or `default`. Returns the object as stored.
pub async fn apply(client: &kube::Client, manifest: &Value) -> kube::Result<DynamicObject> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = manifest["kind"].as_str().unwrap_or_default();
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = manifest["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(manifest),
    )
    .await
}
