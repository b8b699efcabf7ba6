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

/// Creates namespace `ns` with `labels` unless it exists; whether it exists now (a failure
/// is logged, and the caller tries again on its next pass).
pub(crate) async fn create_namespace(
    client: &kube::Client,
    ns: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> bool {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let obj = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(ns.into()),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&Default::default(), &obj).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 409 => true,
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "creating a namespace");
            false
        }
    }
}
