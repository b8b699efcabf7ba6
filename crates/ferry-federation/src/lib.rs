//! Ferry's federation (the `multi-cluster-federation` seed): YusurServices placed over
//! member clusters and cells by an independent control plane (Ferry's own API server
//! holding only federation objects), with tenant isolation, gray release by placement
//! mask, per-type annotation policy and status fed back from the members.
//!
//! It owns the federation's resource types ([`types`]), the pure decisions
//! ([`policy`], [`plan`], [`member`]), and two thin I/O loops over plain kube-rs clients:
//! the federation controller ([`controller`]) and the member's join agent ([`join`]),
//! which dials out to the federation so nothing ever dials into a member.

// kube-derive repeats `type_` across printcolumn(...) entries.
#![allow(clippy::duplicated_attributes)]

pub mod access;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod credential;
pub mod global;
pub mod join;
pub mod lab;
pub mod lease;
pub mod member;
pub mod plan;
pub mod policy;
pub mod rbac;
pub mod server;
pub mod types;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every federation resource.
pub const GROUP: &str = "federation.iaas.yusur.io";

/// The CRDs a federation API server serves (and nothing else of Ferry's).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        types::MemberCluster::crd(),
        types::FederatedYusurService::crd(),
        types::Work::crd(),
        types::FederatedTypeConfig::crd(),
    ]
}

/// `(file name, YAML)` of every federation CRD and of the controller's RBAC, as committed
/// under `deploy/federation/`.
pub fn manifests() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body =
                serde_saphyr::to_string(crd).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
            (
                format!("crds/{name}.yaml"),
                format!("# Generated from crates/ferry-federation (ferry_federation::manifests); do not edit.\n{body}"),
            )
        })
        .collect();
    out.push(("rbac-controller.yaml".into(), rbac::CONTROLLER_RBAC.into()));
    out.push(("rbac-member-example.yaml".into(), rbac::member_rbac("c1")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed manifests must be what the code generates. Regenerate with
    /// `FERRY_WRITE_MANIFESTS=1 cargo test -p ferry-federation --lib manifests`.
    #[test]
    fn deploy_manifests_are_not_stale() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/federation");
        for (file, want) in manifests() {
            let path = dir.join(&file);
            if std::env::var_os("FERRY_WRITE_MANIFESTS").is_some() {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, &want).expect("write");
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            // The FederatedYusurService schema embeds ferry-api's YusurServiceSpec, so a
            // change there makes these stale too.
            assert!(
                have == want,
                "{} is stale or missing: FERRY_WRITE_MANIFESTS=1 cargo test -p ferry-federation --lib deploy_manifests",
                path.display()
            );
        }
    }

    /// `kubectl get mc` and `kubectl get fysvc` must show what issue 17 promises.
    #[test]
    fn crds_have_the_promised_names_scopes_and_columns() {
        let got: Vec<(String, String, Vec<String>, Vec<String>)> = crds()
            .into_iter()
            .map(|c| {
                let v = &c.spec.versions[0];
                (
                    c.metadata.name.clone().unwrap_or_default(),
                    c.spec.scope.clone(),
                    c.spec.names.short_names.clone().unwrap_or_default(),
                    v.additional_printer_columns
                        .iter()
                        .flatten()
                        .map(|p| p.name.clone())
                        .collect(),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "memberclusters.federation.iaas.yusur.io".into(),
                    "Cluster".into(),
                    s(&["mc"]),
                    s(&[
                        "Tenant",
                        "Workspace",
                        "Cells",
                        "Ready",
                        "Version",
                        "Heartbeat",
                        "Age"
                    ])
                ),
                (
                    "federatedyusurservices.federation.iaas.yusur.io".into(),
                    "Namespaced".into(),
                    s(&["fysvc"]),
                    s(&[
                        "Topology", "Clusters", "Cells", "Mask", "Updated", "Ready", "Age"
                    ])
                ),
                (
                    "works.federation.iaas.yusur.io".into(),
                    "Namespaced".into(),
                    s(&["fwork"]),
                    s(&["Target", "Kind", "Generation", "Applied", "Age"])
                ),
                (
                    "federatedtypeconfigs.federation.iaas.yusur.io".into(),
                    "Cluster".into(),
                    s(&["ftc"]),
                    s(&["Spec-Annotations", "Status-Annotations"])
                ),
            ]
        );
    }
}
