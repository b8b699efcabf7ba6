//! The subresources that are not `status`: `pods/binding` (how a scheduler assigns a Pod to
//! a node: it sets `spec.nodeName` once, and a second binding is a 409) and the `scale`
//! of Deployments and ReplicaSets (an `autoscaling/v1 Scale` view of `spec.replicas`, which
//! `kubectl scale` reads and patches).

use serde_json::{Value, json};

use crate::objects::{Objects, WriteOptions};
use crate::resources::ResourceType;
use crate::status::ApiError;

/// Whether `rt` has a `scale` subresource.
pub fn has_scale(rt: &ResourceType) -> bool {
    rt.builtin && rt.group == "apps" && matches!(rt.plural.as_str(), "deployments" | "replicasets")
}

/// Whether `rt` has a `binding` subresource.
pub fn has_binding(rt: &ResourceType) -> bool {
    rt.builtin && rt.group.is_empty() && rt.plural == "pods"
}

/// A label selector (`matchLabels` and `matchExpressions`) in its string form, as
/// `Scale.status.selector` carries it.
pub fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    parts.join(",")
}

/// The `autoscaling/v1 Scale` of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"])},
    })
}

/// Writes the `spec.replicas` of `scale` (a whole Scale, or the patched one) to the object,
/// at the resourceVersion the Scale names if it names one.
pub async fn write_scale(
    objects: &Objects,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    current: (Value, u64),
    scale: &Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            vec![(
                "spec.replicas".into(),
                "Required value: must be a non-negative integer".into(),
            )],
        )
    })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            vec![(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let mut obj = current.0.clone();
    obj["spec"]["replicas"] = json!(replicas);
    obj["metadata"]["resourceVersion"] = match scale["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() => json!(rv),
        _ => json!(current.1.to_string()),
    };
    let w = objects
        .update(rt, namespace, name, obj, current, None, opts, "Update")
        .await?;
    Ok(scale_of(&w.object))
}

/// Binds a Pod to the node a `v1 Binding` names: sets `spec.nodeName` and a
/// `PodScheduled=True` condition, as kube-apiserver does; 409 if the Pod is already bound.
pub async fn bind(
    objects: &Objects,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    binding: &Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    if binding["metadata"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return Err(ApiError::bad_request(format!(
            "the name of the binding ({}) does not match the pod on the URL ({name})",
            binding["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                "",
                name,
                vec![("target.name".into(), "Required value".into())],
            )
        })?;
    if binding["target"]["kind"]
        .as_str()
        .is_some_and(|k| !k.is_empty() && k != "Node")
    {
        return Err(ApiError::invalid(
            "Binding",
            "",
            name,
            vec![("target.kind".into(), "must be empty or 'Node'".into())],
        ));
    }
    for _ in 0..16 {
        let Some(current) = objects.current(rt, namespace, name).await? else {
            return Err(ApiError::not_found("", "pods", name));
        };
        let pod = &current.0;
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::conflict_message(
                "",
                "pods/binding",
                name,
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(bound) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_message(
                "",
                "pods/binding",
                name,
                format!("pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        if let Some(uid) = binding["metadata"]["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            && pod["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict_message(
                "",
                "pods/binding",
                name,
                format!("the UID of pod {name} is not {uid}"),
            ));
        }
        let mut updated = pod.clone();
        updated["spec"]["nodeName"] = json!(node);
        for (k, v) in binding["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            updated["metadata"]["annotations"][k] = v.clone();
        }
        set_condition(
            &mut updated["status"],
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": crate::objects::now()}),
        );
        updated["metadata"]["resourceVersion"] = json!(current.1.to_string());
        match objects
            .update(
                rt,
                namespace,
                name,
                updated,
                current,
                Some("binding"),
                opts,
                "Update",
            )
            .await
        {
            Ok(_) => {
                return Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201}));
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict("", "pods", name))
}

/// Sets a condition in `status.conditions`, replacing one of the same type.
fn set_condition(status: &mut Value, cond: Value) {
    if !status.is_object() {
        *status = json!({});
    }
    let conds = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = conds
        .into_iter()
        .filter(|c| c["type"] != cond["type"])
        .collect();
    out.push(cond);
    status["conditions"] = Value::Array(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_strings() {
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), "app=web"),
            (
                json!({"matchLabels": {"a": "1", "b": "2"},
                    "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]},
                        {"key": "e", "operator": "Exists"}, {"key": "n", "operator": "DoesNotExist"},
                        {"key": "o", "operator": "NotIn", "values": ["z"]}]}),
                "a=1,b=2,t in (x,y),e,!n,o notin (z)",
            ),
            (json!({}), ""),
        ];
        for (sel, want) in cases {
            assert_eq!(selector_string(&sel), want, "{sel}");
        }
    }

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "t1", "uid": "u", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        assert_eq!(
            scale_of(&d),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "t1", "uid": "u", "resourceVersion": "7",
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}})
        );
    }

    #[test]
    fn set_condition_replaces_the_same_type() {
        let mut s = json!({"conditions": [{"type": "PodScheduled", "status": "False"}, {"type": "Ready", "status": "False"}]});
        set_condition(&mut s, json!({"type": "PodScheduled", "status": "True"}));
        assert_eq!(
            s,
            json!({"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]})
        );
    }
}
