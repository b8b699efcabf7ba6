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

pub mod bench;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod join;
pub mod lease;
pub mod member;
pub mod plan;
pub mod policy;
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

#[cfg(test)]
mod tests {
    use super::*;

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
