//! The write path shared by create, update, patch, delete and the garbage collector:
//! metadata rules, validation, optimistic concurrency and finalizers, over the store.
//!
//! Over 600 lines: one write path (create, update, patch, delete) kept together so its
//! preconditions read in one place.

use std::sync::Arc;

use bytes::Bytes;
use ferry_store::{Store, StoreError};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::resources::ResourceType;
use crate::schema;
use crate::service_admission::{Refused, Reservation, ServiceAdmission};
use crate::status::ApiError;

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Options common to every write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
}

/// The outcome of a write: the object as stored (resourceVersion set) and warnings.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// The object is gone (deleted, or its last finalizer was removed).
    pub deleted: bool,
}

pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(&rt.group, &rt.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(&rt.group, &rt.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(&rt.group, &rt.plural, name),
        other => ApiError::internal(format!("storage: {other}")),
    }
}

/// Checks a DNS-1123 subdomain name, as Kubernetes requires of object names.
fn check_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("Required value: name or generateName is required".into());
    }
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
}

/// Checks a name that need only be a URL path segment (RBAC objects).
fn check_path_segment(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("Required value: name or generateName is required".into());
    }
    if name == "." || name == ".." {
        return Some(format!("Invalid value: {name:?}: may not be '.' or '..'"));
    }
    name.contains(['/', '%'])
        .then(|| format!("Invalid value: {name:?}: may not contain '/' or '%'"))
}

/// Whether `a` and `b` are equal but for the top-level fields in `skip` and the metadata
/// fields in `skip_meta`. Compares in place: the write path asks this twice per update
/// (did the spec change? is the update a no-op?), and cloning whole objects to strip them
/// first was a measurable share of each write.
fn equal_except(a: &Value, b: &Value, skip: &[&str], skip_meta: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let fields = |m: &'_ serde_json::Map<String, Value>, skip: &[&str]| -> usize {
        m.keys().filter(|k| !skip.contains(&k.as_str())).count()
    };
    if fields(a, skip) != fields(b, skip) {
        return false;
    }
    a.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .all(|(k, va)| match (k.as_str(), b.get(k)) {
            (_, None) => false,
            ("metadata", Some(vb)) if !skip_meta.is_empty() => equal_except(va, vb, skip_meta, &[]),
            (_, Some(vb)) => va == vb,
        })
}

/// Whether the parts of two objects that are not metadata or status differ (a change
/// bumps generation).
fn spec_changed(a: &Value, b: &Value) -> bool {
    !equal_except(a, b, &["metadata", "status"], &[])
}

/// Schema + Ferry validation; returns warnings (pruned fields) or the error.
fn validate(
    rt: &ResourceType,
    object: &mut Value,
    opts: &WriteOptions,
) -> Result<Vec<String>, ApiError> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    // RBAC names are path segments, as in Kubernetes (`system:discovery`).
    let name_error = if rt.group == "rbac.authorization.k8s.io" {
        check_path_segment(&name)
    } else {
        check_name(&name)
    };
    if let Some(msg) = name_error {
        causes.push(("metadata.name".to_string(), msg));
    }
    let mut warnings = Vec::new();
    if let Some(s) = &rt.schema {
        let out = schema::check(s, object);
        if !out.unknown.is_empty() {
            match opts.field_validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = out
                        .unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in body is invalid: strict decoding error: {}",
                        rt.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(out.unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        causes.extend(out.invalid);
    }
    if rt.group == ferry_api::GROUP && causes.is_empty() {
        causes.extend(
            ferry_api::validate(&rt.kind, object)
                .into_iter()
                .map(|e| (e.field, e.message)),
        );
    }
    if rt.plural == "customresourcedefinitions" {
        causes.extend(check_crd(object));
    }
    if causes.is_empty() {
        Ok(warnings)
    } else {
        Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes))
    }
}

fn check_crd(crd: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    for (field, v) in [
        ("spec.group", group),
        ("spec.names.plural", plural),
        (
            "spec.names.kind",
            spec["names"]["kind"].as_str().unwrap_or_default(),
        ),
    ] {
        if v.is_empty() {
            causes.push((field.to_string(), "Required value".to_string()));
        }
    }
    let want = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(want.as_str()) {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: must be spec.names.plural+\".\"+spec.group ({want})"),
        ));
    }
    if spec["versions"].as_array().is_none_or(|v| v.is_empty()) {
        causes.push((
            "spec.versions".into(),
            "Required value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        causes.push((
            "spec.scope".into(),
            "Unsupported value: supported values: \"Cluster\", \"Namespaced\"".into(),
        ));
    }
    causes
}

fn set_managed_fields(
    object: &mut Value,
    manager: Option<&str>,
    operation: &str,
    applied: &Value,
    rt: &ResourceType,
    subresource: Option<&str>,
) {
    let Some(manager) = manager else { return };
    let entry = json!({"manager": manager, "operation": operation, "apiVersion": rt.api_version(),
        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": crate::patch::fields_v1(applied)});
    let mut entry = entry;
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    let list = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut list: Vec<Value> = list
        .into_iter()
        .filter(|e| {
            !(e["manager"] == manager
                && e["operation"] == operation
                && e.get("subresource").and_then(Value::as_str) == subresource)
        })
        .collect();
    list.push(entry);
    object["metadata"]["managedFields"] = Value::Array(list);
}

fn encode(object: &Value) -> Bytes {
    let mut o = object.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&o).unwrap_or_default())
}

fn stamp(object: &mut Value, revision: u64) {
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
}

/// Subnets and VPCs as the cache holds them, for tenancy admission.
struct CachedNetworks<'a>(&'a Cache);

impl CachedNetworks<'_> {
    fn spec(&self, plural: &str, name: &str) -> Option<Value> {
        let key = format!("/registry/{}/{plural}/_/{name}", ferry_api::GROUP);
        self.0.get(&key).map(|c| c.value()["spec"].clone())
    }
}

impl ferry_api::tenancy::Networks for CachedNetworks<'_> {
    fn subnet_vpc(&self, subnet: &str) -> Option<String> {
        self.spec("subnets", subnet)
            .map(|s| s["vpc"].as_str().unwrap_or_default().to_string())
    }

    fn vpc_namespaces(&self, vpc: &str) -> Option<Vec<String>> {
        self.spec("vpcs", vpc).map(|s| {
            s["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
    }
}

/// Writes go to the store; the cache catches up before the reply (read-your-writes).
#[derive(Clone)]
pub struct Objects {
    pub store: Store,
    pub cache: Arc<Cache>,
    /// `v1 Service` defaults, validation and address allocation.
    pub services: Arc<ServiceAdmission>,
}

impl Objects {
    /// Waits, after a write at `revision`, until the cache has it (read-your-writes for
    /// every client), except for leader-election Leases: those are answered once durable
    /// ([`crate::lanes::leader_election_lease`]; their reads come from the store, and a
    /// watch from their resourceVersion waits for the cache).
    async fn settle(&self, rt: &ResourceType, namespace: Option<&str>, revision: u64) {
        if !crate::lanes::leader_election_lease(&rt.group, &rt.plural, namespace) {
            self.cache.wait_for(revision).await;
        }
    }

    /// Service admission for writes of Services (and of YusurServices that take a cluster
    /// IP). The returned reservation holds the addresses decided: keep it until the write
    /// is in the cache.
    fn admit_addresses(
        &self,
        rt: &ResourceType,
        key: &str,
        object: &mut Value,
        old: Option<&Value>,
        subresource: Option<&str>,
    ) -> Result<Option<Reservation<'_>>, ApiError> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rt.builtin && rt.group.is_empty() && rt.plural == "services" {
            if subresource.is_some() {
                return Ok(None);
            }
            return match self.services.admit_service(key, object, old) {
                Ok(r) => Ok(Some(r)),
                Err(Refused::Decode(m)) => Err(ApiError::bad_request(m)),
                Err(Refused::Invalid(causes)) => {
                    Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes))
                }
            };
        }
        if rt.group == ferry_api::GROUP && rt.plural == "yusurservices" {
            return self
                .services
                .admit_yusur_service(key, object, old)
                .map_err(|causes| ApiError::invalid(&rt.kind, &rt.group, &name, causes));
        }
        Ok(None)
    }

    /// Tenancy admission ([`ferry_api::tenancy`]): an object may name only subnets and
    /// VPCs that admit its namespace. On update only when what it names changed, so that
    /// objects placed before a VPC narrowed its list stay writable (status, annotations).
    fn admit_tenancy(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        use ferry_api::tenancy::{named_networks, refusal};
        let Some(ns) = namespace.filter(|_| rt.namespaced) else {
            return Ok(());
        };
        let named = named_networks(&rt.kind, object);
        if named.is_empty() || old.is_some_and(|o| named_networks(&rt.kind, o) == named) {
            return Ok(());
        }
        match refusal(ns, &named, &CachedNetworks(&self.cache)) {
            None => Ok(()),
            Some(cause) => Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                object["metadata"]["name"].as_str().unwrap_or_default(),
                vec![cause],
            )),
        }
    }

    pub async fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        match object.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind {k:?} in the body does not match the resource {} ({})",
                    rt.plural, rt.kind
                )));
            }
            _ => object["kind"] = json!(rt.kind),
        }
        object["apiVersion"] = json!(rt.api_version());
        // kube-apiserver's Pod strategy: a new Pod is Pending until a kubelet says otherwise.
        if rt.builtin
            && rt.group.is_empty()
            && rt.plural == "pods"
            && object["status"]["phase"].as_str().is_none_or(str::is_empty)
        {
            object["status"]["phase"] = json!("Pending");
        }
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let meta = &mut object["metadata"];
        if rt.namespaced {
            let ns = namespace.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{} is namespaced: use /namespaces/NAMESPACE/{}",
                    rt.kind, rt.plural
                ))
            })?;
            match meta["namespace"].as_str() {
                Some(n) if n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => meta["namespace"] = json!(ns),
            }
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        if meta["name"].as_str().is_none_or(str::is_empty)
            && let Some(prefix) = meta["generateName"].as_str()
        {
            let suffix: String = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .take(5)
                .collect();
            meta["name"] = json!(format!("{prefix}{suffix}"));
        }
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.insert("generation".into(), json!(1));
        }
        if !rt.builtin
            && rt.status_subresource
            && let Some(o) = object.as_object_mut()
        {
            o.remove("status");
        }
        if rt.plural == "customresourcedefinitions" {
            let names = object["spec"]["names"].clone();
            object["status"] = json!({"acceptedNames": names, "storedVersions": [object["spec"]["versions"][0]["name"]],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()}]});
        }
        if rt.plural == "namespaces" {
            object["status"] = json!({"phase": "Active"});
            object["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        let warnings = validate(rt, &mut object, opts)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = rt.key(namespace.filter(|_| rt.namespaced), &name);
        self.admit_tenancy(rt, namespace, &object, None)?;
        let _reserved = self.admit_addresses(rt, &key, &mut object, None, None)?;
        if let Some(ns) = namespace.filter(|_| rt.namespaced) {
            // A live namespace in the cache is enough (kube-apiserver's NamespaceLifecycle
            // admission reads its informer too). Only a namespace the cache lacks, or holds
            // as being deleted, waits for the cache to catch up with the store and is looked
            // at again: waiting on every create doubled each create's wait for the cache.
            let ns_key = format!("/registry/core/namespaces/_/{ns}");
            if self.cache.get(&ns_key).is_none_or(|n| n.deleting) {
                self.cache.wait_for(self.store.current_revision()).await;
                if self.cache.get(&ns_key).is_none() {
                    return Err(ApiError::not_found("", "namespaces", ns));
                }
            }
        }
        if opts.field_manager.is_some() {
            let applied = object.clone();
            set_managed_fields(
                &mut object,
                opts.field_manager.as_deref(),
                "Update",
                &applied,
                rt,
                None,
            );
        }
        if opts.dry_run {
            return Ok(Written {
                object,
                warnings,
                deleted: false,
            });
        }
        let kv = self
            .store
            .create(key, encode(&object))
            .await
            .map_err(|e| store_err(rt, &name, e))?;
        stamp(&mut object, kv.mod_revision);
        self.settle(rt, namespace, kv.mod_revision).await;
        Ok(Written {
            object,
            warnings,
            deleted: false,
        })
    }

    /// Reads the authoritative current value (from the store, for optimistic writes).
    pub async fn current(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, u64)>, ApiError> {
        let key = rt.key(namespace.filter(|_| rt.namespaced), name);
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| store_err(rt, name, e))?;
        Ok(kv.and_then(|kv| {
            let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
            stamp(&mut v, kv.mod_revision);
            Some((v, kv.mod_revision))
        }))
    }

    /// Replaces an object (or only its status, for `subresource = Some("status")`) if it is
    /// still at `expected` (or at the resourceVersion the body names).
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        current: (Value, u64),
        subresource: Option<&str>,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Written, ApiError> {
        let (old, rev) = current;
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(body_rv) = object["metadata"]["resourceVersion"].as_str()
            && !body_rv.is_empty()
            && body_rv != rev.to_string()
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        if object["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        if subresource == Some("status") {
            let mut merged = old.clone();
            merged["status"] = object["status"].clone();
            object = merged;
        } else if rt.status_subresource && subresource != Some("binding") {
            // A binding writes spec.nodeName and the PodScheduled condition together.
            match old.get("status") {
                Some(s) => object["status"] = s.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        object["kind"] = json!(rt.kind);
        object["apiVersion"] = json!(rt.api_version());
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if old["metadata"]["managedFields"].is_array()
            && !object["metadata"]["managedFields"].is_array()
        {
            object["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        }
        let key = rt.key(namespace.filter(|_| rt.namespaced), name);
        if subresource.is_none() {
            self.admit_tenancy(rt, namespace, &object, Some(&old))?;
        }
        let _reserved = self.admit_addresses(rt, &key, &mut object, Some(&old), subresource)?;
        let warnings = validate(rt, &mut object, opts)?;
        if spec_changed(&object, &old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = json!(g + 1);
        }
        if rt.plural == "customresourcedefinitions" {
            object["status"]["acceptedNames"] = object["spec"]["names"].clone();
        }
        if opts.field_manager.is_some() {
            let applied = object.clone();
            set_managed_fields(
                &mut object,
                opts.field_manager.as_deref(),
                operation,
                &applied,
                rt,
                subresource,
            );
        }
        let unchanged = {
            // A no-op Update stays a no-op whoever sends it; an Apply also records who owns
            // what, so a new manager (or the first apply) is a change, a repeated one is not.
            let ownership = |v: &Value| {
                let mut entries = v["metadata"]["managedFields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for e in &mut entries {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
                entries
            };
            equal_except(&object, &old, &[], &["resourceVersion", "managedFields"])
                && (operation != "Apply" || ownership(&object) == ownership(&old))
        };
        if unchanged {
            return Ok(Written {
                object: old,
                warnings,
                deleted: false,
            });
        }
        let finalize = object["metadata"]["deletionTimestamp"].is_string()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if opts.dry_run {
            return Ok(Written {
                object,
                warnings,
                deleted: finalize,
            });
        }
        if finalize {
            let kv = self
                .store
                .delete(&key, Some(rev))
                .await
                .map_err(|e| store_err(rt, name, e))?;
            stamp(&mut object, kv.mod_revision);
            self.settle(rt, namespace, kv.mod_revision).await;
            return Ok(Written {
                object,
                warnings,
                deleted: true,
            });
        }
        let kv = self
            .store
            .update(&key, encode(&object), Some(rev))
            .await
            .map_err(|e| store_err(rt, name, e))?;
        stamp(&mut object, kv.mod_revision);
        self.settle(rt, namespace, kv.mod_revision).await;
        Ok(Written {
            object,
            warnings,
            deleted: false,
        })
    }

    /// Deletes an object, or marks it for deletion while finalizers remain.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<&str>,
        precondition_rv: Option<&str>,
        precondition_uid: Option<&str>,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        for _ in 0..8 {
            let Some((mut obj, rev)) = self.current(rt, namespace, name).await? else {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            };
            if precondition_uid.is_some_and(|u| obj["metadata"]["uid"].as_str() != Some(u))
                || precondition_rv.is_some_and(|r| r != rev.to_string())
            {
                return Err(ApiError::conflict(&rt.group, &rt.plural, name));
            }
            let mut finalizers: Vec<String> = obj["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            let extra = match propagation {
                Some("Foreground")
                    if !self
                        .cache
                        .dependents(obj["metadata"]["uid"].as_str().unwrap_or_default())
                        .is_empty() =>
                {
                    Some("foregroundDeletion")
                }
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            if let Some(f) = extra
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
            let key = rt.key(namespace.filter(|_| rt.namespaced), name);
            if finalizers.is_empty() {
                if dry_run {
                    return Ok(Written {
                        object: obj,
                        warnings: vec![],
                        deleted: true,
                    });
                }
                match self.store.delete(&key, Some(rev)).await {
                    Ok(kv) => {
                        stamp(&mut obj, kv.mod_revision);
                        self.settle(rt, namespace, kv.mod_revision).await;
                        return Ok(Written {
                            object: obj,
                            warnings: vec![],
                            deleted: true,
                        });
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_err(rt, name, e)),
                }
            }
            let already = obj["metadata"]["deletionTimestamp"].is_string();
            obj["metadata"]["finalizers"] = json!(finalizers);
            if !already {
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            if dry_run {
                return Ok(Written {
                    object: obj,
                    warnings: vec![],
                    deleted: false,
                });
            }
            match self.store.update(&key, encode(&obj), Some(rev)).await {
                Ok(kv) => {
                    stamp(&mut obj, kv.mod_revision);
                    self.settle(rt, namespace, kv.mod_revision).await;
                    return Ok(Written {
                        object: obj,
                        warnings: vec![],
                        deleted: false,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(rt, name, e)),
            }
        }
        Err(ApiError::conflict(&rt.group, &rt.plural, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_except_compares_as_if_the_skipped_fields_were_removed() {
        let strip = |v: &Value, skip: &[&str], skip_meta: &[&str]| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                for k in skip {
                    o.remove(*k);
                }
            }
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                for k in skip_meta {
                    m.remove(*k);
                }
            }
            v
        };
        let base = json!({"metadata": {"name": "a", "resourceVersion": "5", "managedFields": [1]},
            "spec": {"x": 1}, "status": {"phase": "A"}});
        let variants = [
            json!({"metadata": {"name": "a", "resourceVersion": "6"}, "spec": {"x": 1}, "status": {"phase": "A"}}),
            json!({"metadata": {"name": "a"}, "spec": {"x": 2}, "status": {"phase": "A"}}),
            json!({"metadata": {"name": "b", "resourceVersion": "5"}, "spec": {"x": 1}, "status": {"phase": "A"}}),
            json!({"metadata": {"name": "a", "resourceVersion": "5", "managedFields": [1]}, "spec": {"x": 1}, "status": {"phase": "B"}}),
            json!({"metadata": {"name": "a", "resourceVersion": "5", "managedFields": [1]}, "spec": {"x": 1}}),
            json!({"metadata": {"name": "a", "resourceVersion": "5", "managedFields": [1]}, "spec": {"x": 1}, "status": {"phase": "A"}, "extra": true}),
            json!({"spec": {"x": 1}, "status": {"phase": "A"}}),
            json!({"metadata": "odd", "spec": {"x": 1}, "status": {"phase": "A"}}),
            json!("not an object"),
        ];
        let cases: [(&[&str], &[&str]); 3] = [
            (&["metadata", "status"], &[]),
            (&[], &["resourceVersion", "managedFields"]),
            (&["status"], &["resourceVersion"]),
        ];
        for v in &variants {
            for (skip, skip_meta) in cases {
                assert_eq!(
                    equal_except(&base, v, skip, skip_meta),
                    strip(&base, skip, skip_meta) == strip(v, skip, skip_meta),
                    "{v} skipping {skip:?} and metadata {skip_meta:?}"
                );
            }
        }
    }
}
