//! The four PATCH kinds: JSON patch, JSON merge patch, strategic merge patch (built-in kinds
//! only, with the merge keys of the fields Ferry's users touch) and server-side apply.

use serde_json::{Map, Value};

/// Which patch the client sent, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| format!("the JSON patch could not be applied: {e}"))
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The merge key of a list field in built-in kinds, or `None` for lists that are replaced.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "tolerations" | "args" | "command" | "subsets" | "rules" | "subjects" => None,
        // Container ports merge by containerPort, Service ports by port.
        "ports" => match sample {
            Some(v) if v.get("containerPort").is_some() => Some("containerPort"),
            _ => Some("port"),
        },
        _ => None,
    }
}

/// Lists of scalars whose strategy is merge (union) rather than replace.
fn is_merged_scalar_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch, honouring `$patch`, `$retainKeys`,
/// `$setElementOrder/...` and `$deleteFromPrimitiveList/...` directives.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = strip_directives(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *target = strip_directives(&Value::Object(p));
        return;
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), pv.as_array())
            {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv),
            (Some(Value::Array(tl)), Value::Array(pl)) => merge_list(k, tl, pl),
            _ => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

/// The target entry a patch entry merges into. Ports are keyed by number and protocol
/// (as server-side apply keys them), so TCP and UDP 53 of one Service stay two entries; a
/// patch entry without protocol takes the only entry of its number, else the TCP one.
fn position(field: &str, target: &[Value], key: &str, id: &Value, pv: &Value) -> Option<usize> {
    if field != "ports" {
        return target.iter().position(|tv| tv.get(key) == Some(id));
    }
    let proto = |v: &Value| {
        v.get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string()
    };
    let same: Vec<usize> = (0..target.len())
        .filter(|i| target[*i].get(key) == Some(id))
        .collect();
    match pv.get("protocol") {
        Some(_) => same.into_iter().find(|i| proto(&target[*i]) == proto(pv)),
        None if same.len() == 1 => same.first().copied(),
        None => same.into_iter().find(|i| proto(&target[*i]) == "TCP"),
    }
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) {
    if is_merged_scalar_list(field) {
        for v in patch {
            if !target.contains(v) {
                target.push(v.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(field, patch.first().or(target.first())) else {
        *target = patch.iter().map(strip_directives).collect();
        return;
    };
    for pv in patch {
        let Some(id) = pv.get(key) else {
            target.push(strip_directives(pv));
            continue;
        };
        let pos = position(field, target, key, id, pv);
        let directive = pv.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                target.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge(&mut target[i], pv),
            (None, _) => target.push(strip_directives(pv)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// The set of field paths an applied configuration sets, in `fieldsV1` form, for
/// `managedFields`.
pub fn fields_v1(applied: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind"))
                    .map(|(k, v)| (format!("f:{k}"), walk(v)))
                    .collect(),
            ),
            _ => Value::Object(Map::new()),
        }
    }
    let mut v = applied.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| {
            matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            )
        });
    }
    walk(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_honours_directives() {
        let mut live = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y"}]}, "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x2"}, {"name": "b", "$patch": "delete"}]},
            "metadata": {"finalizers": ["f2"]}});
        strategic_merge(&mut live, &patch);
        assert_eq!(
            live,
            json!({"spec": {"containers": [
            {"name": "a", "image": "x2", "ports": [{"containerPort": 80}]}]},
            "metadata": {"finalizers": ["f1", "f2"]}})
        );
    }

    #[test]
    fn service_ports_of_one_number_and_two_protocols_stay_two_entries() {
        let mut live = json!({"spec": {"ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]}});
        // A re-apply of the manifest, and a patch naming no protocol (the TCP entry).
        strategic_merge(
            &mut live,
            &json!({"spec": {"ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
        );
        strategic_merge(
            &mut live,
            &json!({"spec": {"ports": [{"port": 53, "targetPort": 5353}]}}),
        );
        assert_eq!(
            live,
            json!({"spec": {"ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053, "targetPort": 5353}]}})
        );
    }

    #[test]
    fn strategic_merge_null_deletes_and_scalar_lists_replace() {
        let mut live =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"args": ["x", "y"]}});
        strategic_merge(
            &mut live,
            &json!({"metadata": {"labels": {"a": null}}, "spec": {"args": ["z"]}}),
        );
        assert_eq!(
            live,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"args": ["z"]}})
        );
    }

    #[test]
    fn fields_v1_lists_applied_fields() {
        let f = fields_v1(
            &json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "1"}}, "spec": {"x": 1}}),
        );
        assert_eq!(
            f,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:x": {}}})
        );
    }
}
