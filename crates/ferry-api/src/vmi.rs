//! A view of KubeVirt's `VirtualMachineInstance` (kubevirt.io/v1): only the fields Ferry
//! reads. Ferry selects VMIs as backends where KubeVirt runs; the one-machine lab installs
//! [`vmi_crd`] so that VM-like lab hosts are VMIs too.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn open_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// The parts of a VMI's spec Ferry does not read are kept as they are.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances",
    shortname = "vmi",
    namespaced,
    status = "VmiStatus",
    derive = "Default",
    derive = "PartialEq"
)]
pub struct VirtualMachineInstanceSpec {
    #[serde(flatten)]
    #[schemars(schema_with = "open_object")]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// What Ferry reads of a VMI's status: where it runs and its addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmiStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VmiInterface>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmiInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A minimal CRD for `virtualmachineinstances.kubevirt.io`, for the lab where KubeVirt does
/// not run: any content is accepted and kept, and status is part of the object (no status
/// subresource) so the lab can create a VM-like host with its node already set.
pub fn vmi_crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = VirtualMachineInstance::crd();
    if let Some(v) = crd.spec.versions.first_mut() {
        v.subresources = None;
        v.additional_printer_columns = None;
        v.schema = serde_json::from_value(serde_json::json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})).ok();
    }
    crd
}
