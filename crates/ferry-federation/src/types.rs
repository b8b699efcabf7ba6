//! The federation's resources (group `federation.iaas.yusur.io/v1`): what users write
//! (`FederatedYusurService`), what members are (`MemberCluster`), what the controller hands
//! to one member (`Work`), and the per-type annotation policy (`FederatedTypeConfig`).

use std::collections::BTreeMap;

use ferry_api::YusurServiceSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Label naming the tenant of a member cluster or a federated object.
pub const LABEL_TENANT: &str = "iaas.yusur.io/tenant";
/// Label naming the workspace (group) of a member cluster or a federated object.
pub const LABEL_WORKSPACE: &str = "iaas.yusur.io/workspace";

/// A schema that accepts any JSON value and keeps it whole (no pruning).
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// An object whose fields are kept as written.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

// === MemberCluster ===

/// A member cluster. Its tenant and workspace are labels set by the federation's admin
/// (a member may write only its status); its cells are namespaces of the member.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "federation.iaas.yusur.io",
    version = "v1",
    kind = "MemberCluster",
    status = "MemberClusterStatus",
    shortname = "mc",
    category = "federation",
    derive = "PartialEq",
    doc = "A Ferry cluster that joined the federation (it dials out; nothing dials in)",
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".metadata.labels.iaas\\.yusur\\.io/tenant"
    ),
    printcolumn(
        name = "Workspace",
        type_ = "string",
        json_path = ".metadata.labels.iaas\\.yusur\\.io/workspace"
    ),
    printcolumn(name = "Cells", type_ = "string", json_path = ".spec.cells[*].name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastHeartbeatTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterSpec {
    /// The deployment units this cluster holds: each a namespace of the member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<Cell>,
}

/// One cell: a name unique in the federation's eyes and the member namespace it maps to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Cell {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// What the member's join agent reports about itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    /// `Ready`: the join agent reaches both API servers. The federation controller turns it
    /// `Unknown` when heartbeats stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// Ferry's version on the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

// === FederatedYusurService ===

/// A YusurService placed over member clusters or cells.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "federation.iaas.yusur.io",
    version = "v1",
    kind = "FederatedYusurService",
    namespaced,
    status = "FederatedYusurServiceStatus",
    shortname = "fysvc",
    category = "federation",
    derive = "PartialEq",
    doc = "A YusurService template placed on member clusters or cells, with per-target overrides and a placement mask for gray release",
    printcolumn(
        name = "Topology",
        type_ = "string",
        json_path = ".spec.placement.topologyType"
    ),
    printcolumn(
        name = "Clusters",
        type_ = "string",
        json_path = ".spec.placement.clusters[*]"
    ),
    printcolumn(
        name = "Cells",
        type_ = "string",
        json_path = ".spec.placement.cells[*]"
    ),
    printcolumn(name = "Mask", type_ = "string", json_path = ".spec.placementMask[*]"),
    printcolumn(
        name = "Updated",
        type_ = "string",
        json_path = ".status.updatedTargets"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.readyTargets"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FederatedYusurServiceSpec {
    /// The YusurService every target gets (before its overrides).
    pub template: YusurServiceTemplate,
    /// Where it goes.
    pub placement: Placement,
    /// Gray release: when set, a change reaches only the targets of `placement` that are
    /// also named here (a cluster name covers all its cells); the others keep what they
    /// have. `[]` freezes every target. Removing a target from `placement` deletes it
    /// there whatever the mask says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_mask: Option<Vec<String>>,
    /// Per-target JSON patches applied to the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// The YusurService of a federated object: labels, annotations and spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct YusurServiceTemplate {
    #[serde(default)]
    pub metadata: TemplateMetadata,
    pub spec: YusurServiceSpec,
}

/// The metadata a template propagates (name and namespace come from the federated object
/// or the cell).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Only keys the type's annotation policy calls spec are propagated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where a federated object goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default)]
    pub topology_type: TopologyType,
    /// Member clusters (topology `cluster`): the object lands in its own namespace there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Cells (topology `cell`) as `cluster/cell`, or a bare cell name held by exactly one
    /// member of the object's tenant: the object lands in the cell's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<String>,
}

/// Whether placement names clusters or cells.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TopologyType {
    #[default]
    #[serde(rename = "cluster")]
    Cluster,
    #[serde(rename = "cell")]
    Cell,
}

/// JSON patches for one target (`c1`, or `c1/cell-a`; a cluster name covers its cells).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Override {
    pub target: String,
    pub patches: Vec<PatchOperation>,
}

/// One RFC 6902 operation on the target's YusurService (paths like `/spec/eip`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PatchOperation {
    pub op: PatchOp,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// RFC 6902 operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

/// What the federation knows about each target and overall.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederatedYusurServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per target of placement (and per target still holding the object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
    /// `n/m`: targets applied at the object's current generation / targets placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_targets: Option<String>,
    /// `n/m`: targets whose member is ready and reports ready endpoints / targets placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_targets: Option<String>,
    /// `Ready` (every placed target applied and ready), `UpToDate` (every placed target at
    /// the current generation; False with reason `Masked` during a gray release) and
    /// `Placement` (False when placement names what the object may not use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The state of one target, fed back by its member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// `c1` or `c1/cell-a`.
    pub name: String,
    pub cluster: String,
    /// The member namespace the object lives in.
    pub namespace: String,
    /// The generation of the federated object the federation has handed to this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_generation: Option<i64>,
    /// The generation of the federated object the member has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the member reported in the target's Work status.
    #[serde(flatten)]
    pub report: ObjectReport,
    /// `Ready` and `Applied`, and the member object's own conditions prefixed `Member`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// === Work ===

/// What one member must hold for one federated object at one target: the rendered
/// object and the annotation policy to apply it with. Works live in the namespace
/// `ferry-member-<cluster>` so that a member can be allowed to read only its own Works and
/// write only their status (Karmada's Work, one per target).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "federation.iaas.yusur.io",
    version = "v1",
    kind = "Work",
    namespaced,
    status = "WorkStatus",
    shortname = "fwork",
    category = "federation",
    derive = "PartialEq",
    doc = "One federated object rendered for one target, pulled by the member",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.manifest.kind"),
    printcolumn(name = "Generation", type_ = "integer", json_path = ".spec.generation"),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.appliedGeneration"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkSpec {
    pub cluster: String,
    /// `c1` or `c1/cell-a`.
    pub target: String,
    /// The federated object this was rendered from.
    pub owner: WorkOwner,
    /// The federated object's generation this manifest was rendered from.
    pub generation: i64,
    pub annotation_policy: AnnotationPolicy,
    /// The object to hold: apiVersion, kind, metadata (name, namespace, labels,
    /// annotations) and spec.
    #[schemars(schema_with = "any_object")]
    pub manifest: Value,
}

/// Which federated object a Work belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WorkOwner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What the member reports about the object it holds for a Work.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkStatus {
    /// `spec.generation` of the Work the member object currently matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// The member object's own metadata.generation and status.observedGeneration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_observed_generation: Option<i64>,
    #[serde(flatten)]
    pub report: ObjectReport,
    /// `Applied` (False with the member API's error, or `Conflict` when an object of that
    /// name exists there and is not the federation's) and the member object's conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a member reports about the object it holds, the same in a Work's status (written
/// by the member) and in the federated object's per-target status (copied from it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<String>,
    #[serde(default)]
    pub ready_endpoints: i32,
    #[serde(default)]
    pub total_endpoints: i32,
    /// Annotations the member wrote under the type's status keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_annotations: BTreeMap<String, String>,
}

// === FederatedTypeConfig ===

/// Per federated type: which annotation keys are spec (propagated and enforced) and which
/// are status (left as the member writes them). Named `<plural>.<group>` of the member
/// kind, e.g. `yusurservices.iaas.yusur.io`; absent means [`AnnotationPolicy::default`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "federation.iaas.yusur.io",
    version = "v1",
    kind = "FederatedTypeConfig",
    shortname = "ftc",
    category = "federation",
    derive = "PartialEq",
    doc = "How one member kind is federated (its annotation propagation policy)",
    printcolumn(
        name = "Spec-Annotations",
        type_ = "string",
        json_path = ".spec.annotationPolicy.spec[*]"
    ),
    printcolumn(
        name = "Status-Annotations",
        type_ = "string",
        json_path = ".spec.annotationPolicy.status[*]"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FederatedTypeConfigSpec {
    #[serde(default)]
    pub annotation_policy: AnnotationPolicy,
}

/// Annotation keys by role, with `*` wildcards (`*.iaas.yusur.io/*`, `lb.example/*`). A key
/// is spec when it matches a `spec` pattern and no `status` pattern; every other key is
/// status. Keys under `federation.iaas.yusur.io/` are the join agent's own bookkeeping and
/// are neither.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AnnotationPolicy {
    #[serde(default)]
    pub spec: Vec<String>,
    #[serde(default)]
    pub status: Vec<String>,
}

impl Default for AnnotationPolicy {
    /// Every annotation is spec except the conventional status and tool-owned ones.
    fn default() -> Self {
        AnnotationPolicy {
            spec: vec!["*".into()],
            status: vec![
                "status.*".into(),
                "*.status.*".into(),
                "kubectl.kubernetes.io/*".into(),
            ],
        }
    }
}
