//! What `ferry federation up|controller|join` run, so the `ferry` binary only parses flags.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::watch;

use crate::controller::{self, ControllerConfig};
use crate::join::{self, JoinConfig, JoinError};
use crate::server::{ServerError, client_for, start_server_on};

/// Errors of the federation commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("the federation controller: {0}")]
    Controller(#[from] kube::Error),
    #[error("--store: {0}")]
    Store(#[from] ferry_apiserver::StoreError),
    #[error(transparent)]
    Credential(#[from] crate::credential::CredentialError),
}

/// The federation control plane: the API server with only federation CRDs, and
/// `controllers` controller replicas sharing a Lease, until `shutdown` resolves. `store`:
/// `embedded` (default, `DIR/store.redb`) or `etcd://host:port[,host:port...][/prefix]`;
/// on etcd, more `up`s with other data dirs and ports serve the same federation.
pub async fn up(
    data_dir: &Path,
    listen: SocketAddr,
    store: Option<&str>,
    controllers: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let backend: ferry_apiserver::StoreBackend = store.unwrap_or("embedded").parse()?;
    let server = start_server_on(data_dir, listen, &backend).await?;
    tracing::info!(addr = %server.addr, kubeconfig = %server.kubeconfig.display(), "federation API server");
    eprintln!(
        "ferry: federation API server on https://{}  (kubeconfig: {})",
        server.addr,
        server.kubeconfig.display()
    );
    let client = client_for(&server.kubeconfig).await?;
    let (tx, rx) = watch::channel(false);
    let tasks: Vec<_> = (0..controllers.max(1))
        .map(|i| {
            let config = ControllerConfig::new(format!("federation-{}-{i}", std::process::id()));
            tokio::spawn(controller::run(client.clone(), config, rx.clone()))
        })
        .collect();
    shutdown.await;
    let _ = tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    server.shutdown().await;
    Ok(())
}

/// One more controller replica against a running federation API server.
pub async fn controller(
    kubeconfig: &Path,
    identity: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let client = client_for(kubeconfig).await?;
    let (tx, rx) = watch::channel(false);
    let identity = identity.unwrap_or_else(|| format!("federation-{}", std::process::id()));
    let task = tokio::spawn(controller::run(client, ControllerConfig::new(identity), rx));
    shutdown.await;
    let _ = tx.send(true);
    match task.await {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "controller task"),
    }
    Ok(())
}

/// The member's join agent until `shutdown` resolves.
pub async fn join(
    federation_kubeconfig: &Path,
    kubeconfig: &Path,
    config: JoinConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let federation = client_for(federation_kubeconfig).await?;
    let member = client_for(kubeconfig).await?;
    let (tx, rx) = watch::channel(false);
    let mut task = tokio::spawn(join::run(federation, member, config, rx));
    tokio::pin!(shutdown);
    let finished = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut task => Some(r),
    };
    let result = match finished {
        Some(r) => r,
        None => {
            let _ = tx.send(true);
            task.await
        }
    };
    match result {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "join task"),
    }
    Ok(())
}

/// `ferry federation member add`: registers member `spec.name` through the admin's
/// `kubeconfig` and writes the member's own kubeconfig (mode 0600) to `out`, the only copy
/// of its token (the federation keeps its hash). `server` overrides the federation's
/// address as the member will dial it. Running it again for the same member issues a new
/// token and revokes the old one.
pub async fn member_add(
    kubeconfig: &Path,
    spec: &crate::credential::MemberSpec,
    out: &Path,
    server: Option<&str>,
) -> Result<(), CliError> {
    use crate::credential;
    let mut endpoint = credential::endpoint_of(kubeconfig)?;
    if let Some(s) = server {
        endpoint.server = s.to_string();
    }
    let client = client_for(kubeconfig).await?;
    let token = credential::add_member(&client, spec).await?;
    credential::write_member_kubeconfig(
        out,
        &credential::member_kubeconfig(&endpoint, &spec.name, &token),
    )?;
    Ok(())
}

/// `ferry federation member revoke`: every token of member `name` stops working; how many
/// there were.
pub async fn member_revoke(kubeconfig: &Path, name: &str) -> Result<usize, CliError> {
    let client = client_for(kubeconfig).await?;
    Ok(crate::credential::revoke(&client, name).await?)
}
