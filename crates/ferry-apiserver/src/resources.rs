//! The resource types the server serves: built-in kinds (stored generically, as JSON) and
//! the custom resources that stored CustomResourceDefinitions add at run time.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// A printer column: what `kubectl get` shows for a kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

/// One served resource (`group/version/plural`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Built-in kinds accept strategic merge patches; custom resources do not.
    pub builtin: bool,
    /// The openAPIV3Schema of a custom resource: validation, defaults and pruning.
    pub schema: Option<Value>,
    pub columns: Vec<Column>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Prefix of every storage key of this resource.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}/{name}", self.key_prefix(), namespace.unwrap_or("_"))
    }

    pub fn gvk(&self) -> Value {
        json!({"group": self.group, "version": self.version, "kind": self.kind})
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

fn col(name: &str, type_: &str, json_path: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        json_path: json_path.into(),
        description: String::new(),
        priority,
    }
}

/// A built-in kind; `short` and `cats` as in Kubernetes so muscle memory works.
fn builtin(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceType {
    let categories = if [
        "pods",
        "services",
        "deployments",
        "replicasets",
        "daemonsets",
        "jobs",
        "cronjobs",
    ]
    .contains(&plural)
    {
        vec!["all".to_string()]
    } else {
        vec![]
    };
    ResourceType {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories,
        status_subresource: status,
        builtin: true,
        schema: None,
        columns: builtin_columns(plural),
    }
}

fn builtin_columns(plural: &str) -> Vec<Column> {
    match plural {
        "pods" => vec![
            col("Ready", "string", "", 0),
            col("Status", "string", "", 0),
            col("Restarts", "integer", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
            col("IP", "string", ".status.podIP", 1),
            col("Node", "string", ".spec.nodeName", 1),
        ],
        "services" => vec![
            col("Type", "string", ".spec.type", 0),
            col("Cluster-IP", "string", "", 0),
            col("External-IP", "string", "", 0),
            col("Port(s)", "string", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
            col("Selector", "string", "", 1),
        ],
        "endpointslices" => vec![
            col("AddressType", "string", ".addressType", 0),
            col("Ports", "string", "", 0),
            col("Endpoints", "string", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "endpoints" => vec![
            col("Endpoints", "string", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "nodes" => vec![
            col("Status", "string", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "namespaces" => vec![
            col("Status", "string", ".status.phase", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "leases" => vec![
            col("Holder", "string", ".spec.holderIdentity", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "events" => vec![
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Object", "string", "", 0),
            col("Message", "string", ".message", 0),
        ],
        "deployments" => vec![
            col("Ready", "string", "", 0),
            col("Up-to-date", "integer", "", 0),
            col("Available", "integer", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "replicasets" => vec![
            col("Desired", "integer", "", 0),
            col("Current", "integer", "", 0),
            col("Ready", "integer", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        "daemonsets" => vec![
            col("Desired", "integer", "", 0),
            col("Current", "integer", "", 0),
            col("Ready", "integer", "", 0),
            col("Up-to-date", "integer", "", 0),
            col("Available", "integer", "", 0),
            col("Node Selector", "string", "", 0),
            col("Age", "date", ".metadata.creationTimestamp", 0),
        ],
        _ => vec![col("Age", "date", ".metadata.creationTimestamp", 0)],
    }
}

/// Every built-in kind Ferry and its users touch.
pub fn builtins() -> Vec<ResourceType> {
    let mut crd = builtin(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
    );
    crd.columns = vec![col("Created At", "date", ".metadata.creationTimestamp", 0)];
    vec![
        builtin("", "Namespace", "namespaces", false, &["ns"], true),
        builtin("", "Pod", "pods", true, &["po"], true),
        builtin("", "Service", "services", true, &["svc"], true),
        builtin("", "Endpoints", "endpoints", true, &["ep"], false),
        builtin("", "Event", "events", true, &["ev"], false),
        builtin("", "Node", "nodes", false, &["no"], true),
        builtin("", "ConfigMap", "configmaps", true, &["cm"], false),
        builtin("", "Secret", "secrets", true, &[], false),
        builtin(
            "",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
        ),
        builtin("coordination.k8s.io", "Lease", "leases", true, &[], false),
        builtin(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
            false,
        ),
        crd,
        builtin("apps", "Deployment", "deployments", true, &["deploy"], true),
        builtin("apps", "ReplicaSet", "replicasets", true, &["rs"], true),
        builtin("apps", "DaemonSet", "daemonsets", true, &["ds"], true),
        builtin("batch", "Job", "jobs", true, &[], true),
        builtin("batch", "CronJob", "cronjobs", true, &["cj"], true),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "Role",
            "roles",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
        ),
    ]
}

/// The resource types a stored CRD serves (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let mut columns: Vec<Column> = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Column {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                description: c["description"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
            })
            .collect();
        if columns.is_empty() {
            columns.push(col("Age", "date", ".metadata.creationTimestamp", 0));
        }
        out.push(ResourceType {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or_default().into(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            builtin: false,
            schema: v["schema"]["openAPIV3Schema"]
                .as_object()
                .map(|o| Value::Object(o.clone())),
            columns,
        });
    }
    out
}

/// `(group, version, plural)`: the key of a served resource.
type ResourceKey = (String, String, String);

/// All served resources, keyed by `(group, version, plural)`.
///
/// Every request takes a snapshot (a clone): the maps are shared (`Arc`, copied on write
/// when a CRD changes), so a snapshot costs two reference counts, not a deep copy of every
/// schema (which capped the server near 1k requests/s).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Arc<BTreeMap<(String, String, String), ResourceType>>,
    /// CRD name -> the keys it added, so a deleted CRD stops being served.
    by_crd: Arc<BTreeMap<String, Vec<ResourceKey>>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let types = builtins()
            .into_iter()
            .map(|t| ((t.group.clone(), t.version.clone(), t.plural.clone()), t))
            .collect();
        Registry {
            types: Arc::new(types),
            by_crd: Default::default(),
        }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Serves (or re-serves) what a CRD defines.
    pub fn apply_crd(&mut self, crd: &Value) {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.remove_crd(&name);
        let mut keys = Vec::new();
        for t in from_crd(crd) {
            let key = (t.group.clone(), t.version.clone(), t.plural.clone());
            if self.types.get(&key).is_some_and(|old| old.builtin) {
                continue;
            }
            Arc::make_mut(&mut self.types).insert(key.clone(), t);
            keys.push(key);
        }
        Arc::make_mut(&mut self.by_crd).insert(name, keys);
    }

    pub fn remove_crd(&mut self, name: &str) {
        let Some(keys) = Arc::make_mut(&mut self.by_crd).remove(name) else {
            return;
        };
        let types = Arc::make_mut(&mut self.types);
        for key in keys {
            types.remove(&key);
        }
    }

    /// Groups in a stable order: the legacy core group first, then by name.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let versions = groups.entry(t.group.clone()).or_default();
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        groups.into_iter().collect()
    }
}
