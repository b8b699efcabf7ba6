//! The federation control plane's API server: Ferry's own API server (`ferry-apiserver`)
//! in its own data dir, serving only the federation's CRDs (none of Ferry's member kinds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry_apiserver::{ApiServer, ApiServerError, Config, StoreBackend};

/// Errors starting the federation API server or reaching an API server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    ApiServer(#[from] ApiServerError),
    #[error("the federation CRDs as JSON: {0}")]
    Crds(#[from] serde_json::Error),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
}

/// Starts an API server in `data_dir` on `listen` with the federation CRDs installed.
pub async fn start_server(data_dir: &Path, listen: SocketAddr) -> Result<ApiServer, ServerError> {
    start_server_on(data_dir, listen, &StoreBackend::Embedded).await
}

/// [`start_server`] on the store `backend` names. With etcd, several federation API servers
/// (each its own data dir, for its PKI and tokens) serve one federation.
pub async fn start_server_on(
    data_dir: &Path,
    listen: SocketAddr,
    backend: &StoreBackend,
) -> Result<ApiServer, ServerError> {
    let server = ApiServer::start_on(
        Config {
            data_dir: data_dir.to_path_buf(),
            listen,
            limits: Default::default(),
            services: Default::default(),
        },
        backend,
    )
    .await?;
    let crds: Vec<serde_json::Value> = crate::crds()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    server.install_crds(&crds).await?;
    Ok(server)
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(path: &Path) -> Result<kube::Client, ServerError> {
    let err = |message: String| ServerError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
}
