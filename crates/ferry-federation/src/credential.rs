//! Registering a member and issuing its own credential (`ferry federation member add`).
//!
//! The federation's admin registers each member: its MemberCluster (tenant, workspace and
//! cells are the admin's to set: a member that could write them could claim another
//! tenant's objects), its Work namespace, the RBAC of [`crate::rbac::member_rbac`], and a
//! token of its own. The token is 256 random bits; the federation API server keeps only
//! its SHA-256 (a Secret, see [`ferry_apiserver::member_token`]), and the plaintext goes
//! once into a kubeconfig file (mode 0600) the admin hands to the member. Registering a
//! member again issues a new token and revokes the old ones.
//!
//! The federation holds nothing reversible about a member: members dial out, so it needs no
//! member credential at all, only the hashes that let it recognise theirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::plan::member_namespace;
use crate::types::{Cell, LABEL_TENANT, LABEL_WORKSPACE, MemberCluster, MemberClusterSpec};
use ferry_apiserver::member_token;

/// Label on a member's token Secrets and namespace: the member's name.
pub const LABEL_MEMBER: &str = "federation.iaas.yusur.io/member";

/// What the admin registers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberSpec {
    pub name: String,
    pub tenant: Option<String>,
    pub workspace: Option<String>,
    pub cells: Vec<Cell>,
}

/// Errors registering a member or writing its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{0:?} is not a valid member name (lower-case letters, digits and '-', at most 40)")]
    Name(String),
    #[error("the admin kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("no random bytes for the member's token")]
    Random,
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("the member RBAC: {0}")]
    Rbac(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `name` can name a member: it is part of a namespace name and a user name.
pub fn valid_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The federation API server's address and CA as the admin's kubeconfig names them.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub server: String,
    /// Base64 PEM, as `certificate-authority-data`.
    pub ca_data: String,
}

/// Reads the current context's cluster of a kubeconfig (the CA embedded or in a file).
pub fn endpoint_of(path: &Path) -> Result<Endpoint, CredentialError> {
    use base64::Engine;
    let err = |message: String| CredentialError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| err(format!("no context {ctx_name:?}")))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| err(format!("no cluster {:?}", ctx.cluster)))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| err("the cluster has no server".into()))?;
    let ca_data = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => d.clone(),
        (None, Some(file)) => base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(file).map_err(|e| err(format!("{file}: {e}")))?),
        (None, None) => return Err(err("the cluster names no CA".into())),
    };
    Ok(Endpoint { server, ca_data })
}

/// The member's kubeconfig for the federation: its own token, nothing else.
pub fn member_kubeconfig(endpoint: &Endpoint, member: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: federation\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: federation-member-{member}\n  user:\n    token: {token}\ncontexts:\n- name: federation\n  context:\n    cluster: federation\n    user: federation-member-{member}\n    namespace: {}\ncurrent-context: federation\n",
        endpoint.server,
        endpoint.ca_data,
        member_namespace(member),
    )
}

/// Registers (or re-registers) member `spec.name` through the admin's `client` and returns
/// its new token; every older token of the member stops working once this returns.
pub async fn add_member(client: &Client, spec: &MemberSpec) -> Result<String, CredentialError> {
    if !valid_member_name(&spec.name) {
        return Err(CredentialError::Name(spec.name.clone()));
    }
    let name = &spec.name;
    let api_err = |what: &str| {
        let what = what.to_string();
        move |source| CredentialError::Api { what, source }
    };
    // The MemberCluster: the admin's record of tenancy and cells wins over what is there.
    let mut labels = BTreeMap::new();
    for (k, v) in [
        (LABEL_TENANT, &spec.tenant),
        (LABEL_WORKSPACE, &spec.workspace),
    ] {
        if let Some(v) = v {
            labels.insert(k.to_string(), v.clone());
        }
    }
    let mcs: Api<MemberCluster> = Api::all(client.clone());
    match mcs.get_opt(name).await.map_err(api_err("MemberCluster"))? {
        None => {
            let mut mc = MemberCluster::new(
                name,
                MemberClusterSpec {
                    cells: spec.cells.clone(),
                },
            );
            mc.metadata.labels = Some(labels);
            mcs.create(&PostParams::default(), &mc)
                .await
                .map_err(api_err("creating the MemberCluster"))?;
        }
        Some(cur) => {
            let mut all_labels: BTreeMap<String, Value> = cur
                .labels()
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            for k in [LABEL_TENANT, LABEL_WORKSPACE] {
                all_labels.insert(
                    k.into(),
                    labels.get(k).map_or(Value::Null, |v| v.clone().into()),
                );
            }
            let patch = serde_json::json!({
                "metadata": {"labels": all_labels},
                "spec": {"cells": spec.cells},
            });
            mcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("updating the MemberCluster"))?;
        }
    }
    let ns = member_namespace(name);
    for (namespace, member_label) in [
        (ns.as_str(), Some(name.as_str())),
        (ferry_apiserver::SYSTEM_NAMESPACE, None),
    ] {
        let labels = member_label
            .map(|m| BTreeMap::from([(LABEL_MEMBER.to_string(), m.to_string())]))
            .unwrap_or_default();
        if !crate::server::create_namespace(client, namespace, labels).await {
            return Err(CredentialError::Rbac(format!(
                "namespace {namespace} could not be created"
            )));
        }
    }
    apply_rbac(client, &crate::rbac::member_rbac(name)).await?;
    // The new token first, then the old ones go: the member never holds a token that
    // is neither issued nor revoked.
    let token = member_token::new_token().map_err(|_| CredentialError::Random)?;
    let secret: Secret = serde_json::from_value(member_token::secret_manifest(name, &token))
        .map_err(|e| CredentialError::Rbac(e.to_string()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ferry_apiserver::SYSTEM_NAMESPACE);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(api_err("storing the token's hash"))?;
    revoke_except(client, name, Some(&secret.name_any())).await?;
    Ok(token)
}

/// Revokes every token of member `name` (the member can no longer reach the federation;
/// its MemberCluster and Works stay, so `member add` can let it back).
pub async fn revoke(client: &Client, name: &str) -> Result<usize, CredentialError> {
    revoke_except(client, name, None).await
}

async fn revoke_except(
    client: &Client,
    name: &str,
    keep: Option<&str>,
) -> Result<usize, CredentialError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ferry_apiserver::SYSTEM_NAMESPACE);
    let list = secrets
        .list(&ListParams::default().labels(&format!("{LABEL_MEMBER}={name}")))
        .await
        .map_err(|source| CredentialError::Api {
            what: "listing the member's tokens".into(),
            source,
        })?;
    let mut revoked = 0;
    for s in list.items {
        if s.type_.as_deref() != Some(member_token::SECRET_TYPE)
            || Some(s.name_any().as_str()) == keep
        {
            continue;
        }
        match secrets
            .delete(&s.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => revoked += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(CredentialError::Api {
                    what: "revoking an old token".into(),
                    source,
                });
            }
        }
    }
    Ok(revoked)
}

/// Creates or replaces each RBAC object of a multi-document YAML.
async fn apply_rbac(client: &Client, yaml: &str) -> Result<(), CredentialError> {
    for doc in yaml.split("\n---\n") {
        let v: Value =
            serde_saphyr::from_str(doc).map_err(|e| CredentialError::Rbac(e.to_string()))?;
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let c = client.clone();
        match v["kind"].as_str() {
            Some("Role") => put(Api::<Role>::namespaced(c, &ns), v).await?,
            Some("RoleBinding") => put(Api::<RoleBinding>::namespaced(c, &ns), v).await?,
            Some("ClusterRole") => put(Api::<ClusterRole>::all(c), v).await?,
            Some("ClusterRoleBinding") => put(Api::<ClusterRoleBinding>::all(c), v).await?,
            other => return Err(CredentialError::Rbac(format!("unexpected kind {other:?}"))),
        }
    }
    Ok(())
}

async fn put<K>(api: Api<K>, v: Value) -> Result<(), CredentialError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let obj: K = serde_json::from_value(v).map_err(|e| CredentialError::Rbac(e.to_string()))?;
    let name = obj.meta().name.clone().unwrap_or_default();
    let err = |source| CredentialError::Api {
        what: format!("{} {name}", K::kind(&())),
        source,
    };
    match api.get_opt(&name).await.map_err(err)? {
        None => api
            .create(&PostParams::default(), &obj)
            .await
            .map(|_| ())
            .map_err(err),
        Some(cur) => {
            let mut next = obj;
            next.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &next)
                .await
                .map(|_| ())
                .map_err(err)
        }
    }
}

/// Writes the member's kubeconfig readable only by its owner.
pub fn write_member_kubeconfig(path: &Path, text: &str) -> Result<(), CredentialError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CredentialError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // An existing file keeps its mode through open(): make sure it is private.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        let cases = [
            ("c1", true),
            ("edge-west-2", true),
            ("", false),
            ("C1", false),
            ("c1:admin", false),
            ("a.b", false),
            ("-c1", false),
            (&"x".repeat(41), false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_member_name(name), want, "{name:?}");
        }
    }

    #[test]
    fn the_member_kubeconfig_holds_its_token_and_the_federation_ca_only() {
        let text = member_kubeconfig(
            &Endpoint {
                server: "https://127.0.0.1:6450".into(),
                ca_data: "Q0E=".into(),
            },
            "c1",
            "tok",
        );
        let v: Value = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6450"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"], serde_json::json!({"token": "tok"}));
        assert_eq!(v["contexts"][0]["context"]["namespace"], "ferry-member-c1");
    }
}
