//! OpenAPI documents in the forms kubectl reads: v3 (per group-version, used by `explain`
//! and to detect server-side field validation) and v2 (JSON).
//!
//! Custom resources carry their CRD schema; built-in kinds are described as open objects
//! (Ferry stores them generically and does not re-validate their fields).

use serde_json::{Map, Value, json};

use crate::resources::{Registry, ResourceType};

/// The schema name of a kind, in Kubernetes' reverse-domain style.
pub fn definition_name(t: &ResourceType) -> String {
    let group = if t.group.is_empty() {
        "core".to_string()
    } else {
        t.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", t.version, t.kind)
}

fn object_meta() -> Value {
    json!({"description": "Standard object metadata.", "type": "object", "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer", "format": "int64"},
        "creationTimestamp": {"type": "string", "format": "date-time"},
        "deletionTimestamp": {"type": "string", "format": "date-time"},
        "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    }})
}

/// A kind's schema with `apiVersion`, `kind` and `metadata` filled in.
fn kind_schema(t: &ResourceType, meta_ref: &str) -> Value {
    let mut s = t
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let props = s
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = props {
        p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        p.insert(
            "metadata".into(),
            json!({"description": "Standard object's metadata.", "allOf": [{"$ref": meta_ref}]}),
        );
    }
    s["x-kubernetes-group-version-kind"] = json!([t.gvk()]);
    if s.get("description").is_none() {
        s["description"] = json!(format!("{} of {}", t.kind, t.api_version()));
    }
    s
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn v3_root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.groups() {
        for v in versions {
            let p = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(registry, &group, &v))}));
        }
    }
    json!({"paths": paths})
}

fn hash(registry: &Registry, group: &str, version: &str) -> String {
    let doc = v3_group_version(registry, group, version).to_string();
    // FNV-1a: a stable content hash, so clients re-fetch exactly when a document changes.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in doc.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn query_params() -> Value {
    json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ])
}

/// The OpenAPI 3 document of one group-version.
pub fn v3_group_version(registry: &Registry, group: &str, version: &str) -> Value {
    let meta_ref = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    let mut schemas = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        object_meta(),
    );
    let mut paths = Map::new();
    for t in registry
        .all()
        .filter(|t| t.group == group && t.version == version)
    {
        let name = definition_name(t);
        schemas.insert(name.clone(), kind_schema(t, meta_ref));
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let schema_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let op = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": t.gvk(), "parameters": query_params(),
                   "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}}})
        };
        paths.insert(item.clone(), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        if t.status_subresource {
            paths.insert(
                format!("{item}/status"),
                json!({"get": op("get"), "put": op("put"), "patch": op("patch")}),
            );
        }
    }
    json!({"openapi": "3.0.0", "info": {"title": "Ferry", "version": env!("CARGO_PKG_VERSION")},
           "paths": paths, "components": {"schemas": schemas}})
}

/// `/openapi/v2` as JSON (swagger 2.0).
pub fn v2(registry: &Registry) -> Value {
    let meta_ref = "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    let mut defs = Map::new();
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        object_meta(),
    );
    for t in registry.all() {
        defs.insert(definition_name(t), kind_schema(t, meta_ref));
    }
    json!({"swagger": "2.0", "info": {"title": "Ferry", "version": env!("CARGO_PKG_VERSION")}, "paths": {}, "definitions": defs})
}

/// A minimal gnostic `openapi_v2.Document` in protobuf: `swagger: "2.0"`, an `info`, empty
/// `paths`. Hand-encoded: three length-delimited fields are not worth a protobuf dependency.
pub fn v2_protobuf_empty() -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    let info = [
        field(0x0a, b"Ferry"),
        field(0x12, env!("CARGO_PKG_VERSION").as_bytes()),
    ]
    .concat();
    [field(0x0a, b"2.0"), field(0x12, &info), field(0x42, b"")].concat()
}
