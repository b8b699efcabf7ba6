//! kube-controller-manager's ServiceAccount controller, its one job Ferry needs: every
//! namespace has a `default` ServiceAccount, so `kubectl create token default -n NS` and
//! in-cluster clients find one. Re-created if deleted; nothing in a terminating namespace.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::EmbeddedError;
use crate::cache::reflect;

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The namespaces (active, not terminating) that lack a `default` ServiceAccount.
pub fn lacking_default(
    namespaces: &[Arc<Namespace>],
    accounts: &[Arc<ServiceAccount>],
) -> Vec<String> {
    let have: BTreeSet<String> = accounts
        .iter()
        .filter(|a| a.name_any() == DEFAULT_SERVICE_ACCOUNT)
        .filter_map(|a| a.namespace())
        .collect();
    namespaces
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating"))
        .map(|n| n.name_any())
        .filter(|n| !have.contains(n))
        .collect()
}

/// Runs until `shutdown` turns true.
pub async fn run(client: Client, mut shutdown: watch::Receiver<bool>) -> Result<(), EmbeddedError> {
    let wake = Arc::new(Notify::new());
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        wake.clone(),
    );
    let accounts = reflect(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        wake.clone(),
    );
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        for ns in lacking_default(&namespaces.state(), &accounts.state()) {
            let sa: ServiceAccount = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns}}))
            .unwrap_or_default();
            match Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) => {}
                // Already there (the cache lags) or the namespace just went.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "creating the default ServiceAccount failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, terminating: bool) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"phase": if terminating { "Terminating" } else { "Active" }}}))
            .expect("namespace"),
        )
    }

    fn sa(ns: &str, name: &str) -> Arc<ServiceAccount> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}}))
                .expect("service account"),
        )
    }

    #[test]
    fn only_active_namespaces_without_a_default_account() {
        let namespaces = [
            ns("a", false),
            ns("b", false),
            ns("c", true),
            ns("d", false),
        ];
        let accounts = [sa("a", "default"), sa("b", "builder"), sa("x", "default")];
        assert_eq!(lacking_default(&namespaces, &accounts), ["b", "d"]);
    }
}
