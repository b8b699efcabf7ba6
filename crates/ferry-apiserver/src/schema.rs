//! OpenAPI v3 structural-schema checks for custom resources: types, enums, ranges, lengths,
//! required fields; defaults applied; unknown fields pruned (or refused under
//! `fieldValidation=Strict`), as kube-apiserver does for CRDs.

use serde_json::{Map, Value};

/// What a schema pass found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `(field path, message)` for each invalid value.
    pub invalid: Vec<(String, String)>,
    /// Paths of fields the schema does not know (pruned unless strict).
    pub unknown: Vec<String>,
}

/// Applies defaults, prunes unknown fields and validates `value` in place. `metadata`,
/// `apiVersion` and `kind` at the root are left to the server.
pub fn check(schema: &Value, value: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object_mut(),
    ) {
        for (k, v) in obj.iter_mut() {
            if matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                continue;
            }
            match props.get(k) {
                Some(s) => walk(s, v, k, &mut out),
                None => out.unknown.push(k.clone()),
            }
        }
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| {
                !matches!(k.as_str(), "metadata" | "apiVersion" | "kind") && !props.contains_key(*k)
            })
            .cloned()
            .collect();
        for k in unknown {
            obj.remove(&k);
        }
        apply_defaults(props, obj, "", &mut out);
        required(schema, obj, "", &mut out);
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn apply_defaults(
    props: &Map<String, Value>,
    obj: &mut Map<String, Value>,
    path: &str,
    out: &mut Outcome,
) {
    for (k, s) in props {
        if !obj.contains_key(k)
            && let Some(d) = s.get("default")
        {
            let mut d = d.clone();
            walk(s, &mut d, &join(path, k), out);
            obj.insert(k.clone(), d);
        }
    }
}

fn required(schema: &Value, obj: &Map<String, Value>, path: &str, out: &mut Outcome) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str()
            && !obj.contains_key(r)
        {
            out.invalid.push((join(path, r), "Required value".into()));
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &mut Value, path: &str, out: &mut Outcome) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        // kube-apiserver drops nulls of non-nullable fields during pruning/defaulting.
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_string() || type_name(value) == "integer") {
            out.invalid.push((
                path.into(),
                format!(
                    "Invalid value: \"{}\": must be an integer or a string",
                    type_name(value)
                ),
            ));
        }
        return;
    }
    let want = schema.get("type").and_then(Value::as_str);
    let have = type_name(value);
    let type_ok = match want {
        None => true,
        Some("number") => matches!(have, "number" | "integer"),
        Some(t) => t == have,
    };
    if !type_ok {
        out.invalid.push((
            path.into(),
            format!(
                "Invalid value: \"{have}\": {path} in body must be of type {}: \"{have}\"",
                want.unwrap_or("?")
            ),
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        out.invalid.push((
            path.into(),
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                out.invalid.push((path.into(), format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}")));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                out.invalid.push((
                    path.into(),
                    format!(
                        "Invalid value: {n}: {path} in body should be less than or equal to {max}"
                    ),
                ));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.invalid.push((
                    path.into(),
                    format!(
                        "Invalid value: {s:?}: {path} in body should be at least {min} chars long"
                    ),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.invalid.push((
                    path.into(),
                    format!("Too long: may not be longer than {max}"),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                out.invalid.push((
                    path.into(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {min} items",
                        items.len()
                    ),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > max
            {
                out.invalid.push((
                    path.into(),
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(obj) => {
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let mut unknown = Vec::new();
                for (k, v) in obj.iter_mut() {
                    match props.get(k) {
                        Some(s) => walk(s, v, &join(path, k), out),
                        None if !preserve => unknown.push(k.clone()),
                        None => {}
                    }
                }
                for k in unknown {
                    out.unknown.push(join(path, &k));
                    obj.remove(&k);
                }
                // Nulls of non-nullable fields are dropped, as kube-apiserver's pruning does.
                let nulls: Vec<String> = obj
                    .iter()
                    .filter(|(k, v)| {
                        v.is_null()
                            && props
                                .get(*k)
                                .and_then(|s| s.get("nullable"))
                                .and_then(Value::as_bool)
                                != Some(true)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in nulls {
                    obj.remove(&k);
                }
                apply_defaults(props, obj, path, out);
                required(schema, obj, path, out);
            } else if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (k, v) in obj.iter_mut() {
                    walk(extra, v, &join(path, k), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["ports"], "properties": {
            "type": {"type": "string", "enum": ["ClusterIP", "LoadBalancer"], "default": "ClusterIP"},
            "ports": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["port"], "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
        }}}})
    }

    #[test]
    fn rejects_out_of_range_port_and_bad_enum_naming_the_field() {
        let mut v = json!({"spec": {"type": "Foo", "ports": [{"port": 70000}]}});
        let out = check(&schema(), &mut v);
        // Order follows map iteration, which serde_json's `preserve_order` feature (enabled
        // or not by other crates in the build) changes; the set of fields is what matters.
        let mut fields: Vec<_> = out.invalid.iter().map(|(f, _)| f.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["spec.ports[0].port", "spec.type"]);
    }

    #[test]
    fn applies_defaults_and_prunes_unknown_fields() {
        let mut v = json!({"spec": {"ports": [{"port": 80, "bogus": 1}]}, "extra": true});
        let out = check(&schema(), &mut v);
        assert!(out.invalid.is_empty(), "{:?}", out.invalid);
        assert_eq!(out.unknown, ["extra", "spec.ports[0].bogus"]);
        assert_eq!(
            v,
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}})
        );
    }

    #[test]
    fn missing_required_field_is_reported() {
        let mut v = json!({"spec": {}});
        let out = check(&schema(), &mut v);
        assert_eq!(out.invalid[0].0, "spec.ports");
    }
}
