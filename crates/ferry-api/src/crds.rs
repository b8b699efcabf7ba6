//! The CustomResourceDefinitions of every Ferry resource, as objects and as the YAML
//! manifests committed under `deploy/crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{BareMetal, Eip, NetworkProbe, Subnet, VNicIP, Vpc, YusurService};

/// Every CRD Ferry serves, in install order (networks before what lives in them).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Vpc::crd(),
        Subnet::crd(),
        Eip::crd(),
        BareMetal::crd(),
        VNicIP::crd(),
        YusurService::crd(),
        NetworkProbe::crd(),
    ]
}

/// One CRD as a YAML manifest.
pub fn crd_manifest(crd: &CustomResourceDefinition) -> String {
    // Serializing a k8s-openapi object to YAML cannot fail: every field is plain data.
    let body = serde_saphyr::to_string(crd).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!(
        "# Generated from crates/ferry-api by `ferry crds --out deploy/crds`; do not edit.\n{body}"
    )
}

/// `(file name, manifest)` for every CRD, as written into `deploy/crds/`.
pub fn crd_manifests() -> Vec<(String, String)> {
    all_crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            (format!("{name}.yaml"), crd_manifest(crd))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed manifests must be what the types generate, or `kubectl apply -f deploy/`
    /// installs a schema the controllers do not speak.
    #[test]
    fn deploy_crds_are_not_stale() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
        for (file, want) in crd_manifests() {
            let path = dir.join(&file);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{} is stale or missing: run `cargo run -p ferry -- crds --out deploy/crds`",
                path.display()
            );
        }
    }

    #[test]
    fn yusur_service_crd_has_short_name_status_and_columns() {
        let crd = YusurService::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("yusurservices.iaas.yusur.io")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["ysvc".to_string()]));
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.to_uppercase())
            .collect();
        assert_eq!(
            cols,
            [
                "TYPE",
                "SCOPE",
                "VPC",
                "CLUSTER-IP",
                "EIP",
                "PORT(S)",
                "READY",
                "AGE"
            ]
        );
    }
}
