//! `kubectl get` tables (`as=Table`): each kind's printer columns evaluated per object.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::resources::{Column, ResourceType};

/// Evaluates the simple JSONPath of a printer column (`.spec.ports[*].port`, `.a.b[0]`,
/// escaped dots in keys as in `.metadata.labels.iaas\\.yusur\\.io/tenant`, and equality
/// filters as in `.status.conditions[?(@.type=="Ready")].status`), the subset
/// kube-apiserver's printer columns use.
pub fn json_path(object: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![object.clone()];
    let path = path.trim_start_matches('{').trim_end_matches('}');
    for (field, indexes) in path_segments(path) {
        let mut next = Vec::new();
        for v in current {
            let v = if field.is_empty() {
                Some(v)
            } else {
                v.get(&field).cloned()
            };
            let Some(v) = v else { continue };
            let mut values = vec![v];
            for index in &indexes {
                values = values.into_iter().flat_map(|v| select(&v, index)).collect();
            }
            next.extend(values);
        }
        current = next;
    }
    current
}

/// Splits a path into `(field, [bracket contents])` at unescaped dots outside brackets.
fn path_segments(path: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut chars = path.chars().peekable();
    let mut field = String::new();
    let mut indexes = Vec::new();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    field.push(n);
                }
            }
            '.' => {
                if started {
                    out.push((std::mem::take(&mut field), std::mem::take(&mut indexes)));
                }
                started = true;
            }
            '[' => {
                started = true;
                let mut depth = 1;
                let mut quote: Option<char> = None;
                let mut inner = String::new();
                for c in chars.by_ref() {
                    match (quote, c) {
                        (Some(q), c) if c == q => quote = None,
                        (None, '"' | '\'') => quote = Some(c),
                        (None, '[') => depth += 1,
                        (None, ']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    inner.push(c);
                }
                indexes.push(inner);
            }
            c => {
                started = true;
                field.push(c);
            }
        }
    }
    if started {
        out.push((field, indexes));
    }
    out
}

/// The values one bracket selects from `v`: `*`, an index, or `?(@.path==literal)`.
fn select(v: &Value, index: &str) -> Vec<Value> {
    let items = v.as_array().cloned().unwrap_or_default();
    if index == "*" {
        return items;
    }
    if let Some(filter) = index.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let Some((left, right)) = filter.split_once("==") else {
            return Vec::new();
        };
        let left = left.trim().trim_start_matches('@');
        let right = right.trim();
        let want = match right.strip_prefix(['"', '\'']) {
            Some(s) => Value::String(s[..s.len().saturating_sub(1)].to_string()),
            None => serde_json::from_str(right).unwrap_or(Value::Null),
        };
        return items
            .into_iter()
            .filter(|item| json_path(item, left).first() == Some(&want))
            .collect();
    }
    match index.parse::<usize>() {
        Ok(i) => items.get(i).cloned().into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// Kubernetes' short human durations: `45s`, `3m12s`, `5h`, `2d3h`, `400d`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => match (s / 60) % 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h{m}m", s / 3600),
        },
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => match (s / 3600) % 24 {
            0 => format!("{}d", s / 86400),
            h => format!("{}d{h}h", s / 86400),
        },
        s if s < 2 * 365 * 86400 => format!("{}d", s / 86400),
        s => format!("{}y{}d", s / (365 * 86400), (s / 86400) % 365),
    }
}

fn age(object: &Value, path: &str) -> Value {
    let ts = json_path(object, path).into_iter().next();
    match ts
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())
    {
        Some(t) => Value::String(human_duration(Timestamp::now().as_second() - t.as_second())),
        None => Value::String("<unknown>".into()),
    }
}

/// A Pod's STATUS as kubectl's printer words it: the phase, or the reason of a waiting or
/// terminated container (`ContainerCreating`, `CrashLoopBackOff`, `Completed`, `Error`),
/// `Terminating` once deleted.
fn pod_status_reason(pod: &Value) -> String {
    let mut reason = pod["status"]["reason"]
        .as_str()
        .or(pod["status"]["phase"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut running = false;
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The first container's state wins, as kubectl walks them from the last.
    for c in statuses.iter().rev() {
        let state = &c["state"];
        if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if state["terminated"].is_object() {
            let t = &state["terminated"];
            reason = match (t["reason"].as_str(), t["signal"].as_i64()) {
                (Some(r), _) if !r.is_empty() => r.to_string(),
                (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                _ => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        } else if state["running"].is_object() && c["ready"].as_bool() == Some(true) {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    reason
}

/// Cells computed in code for built-in columns that a JSONPath cannot express.
fn builtin_cell(rt: &ResourceType, column: &Column, object: &Value) -> Value {
    match (rt.plural.as_str(), column.name.as_str()) {
        ("pods", "Ready") => {
            let statuses = object["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|s| s["ready"].as_bool() == Some(true))
                .count();
            json!(format!("{ready}/{total}"))
        }
        ("pods", "Status") => json!(pod_status_reason(object)),
        ("deployments", "Ready") => json!(format!(
            "{}/{}",
            object["status"]["readyReplicas"].as_i64().unwrap_or(0),
            object["spec"]["replicas"].as_i64().unwrap_or(1)
        )),
        ("deployments", "Up-to-date") => {
            json!(object["status"]["updatedReplicas"].as_i64().unwrap_or(0))
        }
        ("deployments", "Available") => {
            json!(object["status"]["availableReplicas"].as_i64().unwrap_or(0))
        }
        ("replicasets", "Desired") => json!(object["spec"]["replicas"].as_i64().unwrap_or(1)),
        ("replicasets", "Current") => json!(object["status"]["replicas"].as_i64().unwrap_or(0)),
        ("replicasets", "Ready") => json!(object["status"]["readyReplicas"].as_i64().unwrap_or(0)),
        ("daemonsets", col @ ("Desired" | "Current" | "Ready" | "Up-to-date" | "Available")) => {
            let field = match col {
                "Desired" => "desiredNumberScheduled",
                "Current" => "currentNumberScheduled",
                "Ready" => "numberReady",
                "Up-to-date" => "updatedNumberScheduled",
                _ => "numberAvailable",
            };
            json!(object["status"][field].as_i64().unwrap_or(0))
        }
        ("daemonsets", "Node Selector") => {
            let sel = object["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            json!(if sel.is_empty() {
                "<none>".to_string()
            } else {
                sel
            })
        }
        ("pods", "Restarts") => {
            let statuses = object["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            json!(
                statuses
                    .iter()
                    .filter_map(|s| s["restartCount"].as_i64())
                    .sum::<i64>()
            )
        }
        ("services", "Cluster-IP") => json!(
            object["spec"]["clusterIPs"][0]
                .as_str()
                .or(object["spec"]["clusterIP"].as_str())
                .filter(|ip| !ip.is_empty())
                .unwrap_or("<none>")
        ),
        ("services", "Selector") => {
            let sel: Vec<String> = object["spec"]["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            json!(if sel.is_empty() {
                "<none>".to_string()
            } else {
                sel.join(",")
            })
        }
        // As kubectl's printer: `80,443` (`<unset>` without ports) and the first three
        // addresses (`+ N more...`).
        ("endpointslices", "Ports") => {
            let ports: Vec<String> = object["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                .collect();
            json!(if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            })
        }
        ("endpointslices", "Endpoints") => {
            let addrs: Vec<&str> = object["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            json!(match addrs.len() {
                0 => "<unset>".to_string(),
                n if n > 3 => format!("{} + {} more...", addrs[..3].join(","), n - 3),
                _ => addrs.join(","),
            })
        }
        // As kubectl's printer: the load balancer's addresses (pending until it has one),
        // the external IPs, or the name an ExternalName Service points at.
        ("services", "External-IP") => {
            let strings = |v: Vec<Value>| -> Vec<String> {
                v.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            };
            let mut ips = strings(json_path(object, ".spec.externalIPs[*]"));
            let ty = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if ty == "LoadBalancer" {
                let mut lb = strings(json_path(object, ".status.loadBalancer.ingress[*].ip"));
                lb.extend(strings(json_path(
                    object,
                    ".status.loadBalancer.ingress[*].hostname",
                )));
                lb.append(&mut ips);
                ips = lb;
            }
            json!(match (ty, ips.is_empty()) {
                ("ExternalName", _) => object["spec"]["externalName"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_string(),
                ("LoadBalancer", true) => "<pending>".to_string(),
                (_, true) => "<none>".to_string(),
                (_, false) => ips.join(","),
            })
        }
        // `80/TCP`, or `80:30080/TCP` with a node port.
        ("services", "Port(s)") => {
            let ports: Vec<String> = object["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64().filter(|n| *n != 0) {
                        Some(n) => format!("{}:{n}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect();
            json!(if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(",")
            })
        }
        ("endpoints", "Endpoints") => {
            let mut eps = Vec::new();
            for s in object["subsets"].as_array().into_iter().flatten() {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    for p in s["ports"].as_array().into_iter().flatten() {
                        eps.push(format!(
                            "{}:{}",
                            a["ip"].as_str().unwrap_or_default(),
                            p["port"]
                        ));
                    }
                }
            }
            json!(if eps.is_empty() {
                "<none>".to_string()
            } else {
                eps.join(",")
            })
        }
        ("nodes", "Status") => {
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True");
            json!(match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            })
        }
        ("events", "Object") => {
            json!(format!(
                "{}/{}",
                object["involvedObject"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                object["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or_default()
            ))
        }
        _ => Value::Null,
    }
}

/// One row's cells: the name, then each column.
pub fn cells(rt: &ResourceType, object: &Value) -> Vec<Value> {
    let mut cells = vec![object["metadata"]["name"].clone()];
    for c in &rt.columns {
        let cell = if c.json_path.is_empty() {
            builtin_cell(rt, c, object)
        } else if c.type_ == "date" {
            age(object, &c.json_path)
        } else {
            let values = json_path(object, &c.json_path);
            match values.len() {
                0 => Value::Null,
                1 => values.into_iter().next().unwrap_or(Value::Null),
                _ => Value::String(
                    values
                        .iter()
                        .map(|v| match v {
                            Value::String(s) => s.clone(),
                            o => o.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            }
        };
        cells.push(cell);
    }
    cells
}

pub fn column_definitions(rt: &ResourceType) -> Value {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in &rt.columns {
        defs.push(json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
            "format": "", "description": c.description, "priority": c.priority}));
    }
    Value::Array(defs)
}

/// How much of each object a table row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

pub fn row(rt: &ResourceType, object: &Value, include: Include) -> Value {
    let mut row = json!({"cells": cells(rt, object)});
    match include {
        Include::None => {}
        Include::Object => row["object"] = object.clone(),
        Include::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]});
        }
    }
    row
}

pub fn table(rt: &ResourceType, objects: &[Value], include: Include, list_meta: Value) -> Value {
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": column_definitions(rt),
        "rows": objects.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_walks_arrays() {
        let o = json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            json_path(&o, ".spec.ports[*].port"),
            vec![json!(80), json!(443)]
        );
        assert_eq!(json_path(&o, ".spec.ports[1].port"), vec![json!(443)]);
        assert!(json_path(&o, ".status.x").is_empty());
    }

    #[test]
    fn json_path_takes_escaped_dots_and_filters() {
        let o = json!({
            "metadata": {"labels": {"iaas.yusur.io/tenant": "t1"}},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]},
        });
        assert_eq!(
            json_path(&o, r".metadata.labels.iaas\.yusur\.io/tenant"),
            vec![json!("t1")]
        );
        assert_eq!(
            json_path(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert!(json_path(&o, r#".status.conditions[?(@.type=="Gone")].status"#).is_empty());
    }

    #[test]
    fn pod_status_reads_like_kubectls() {
        let cases = [
            (json!({"status": {"phase": "Pending"}}), "Pending"),
            (
                json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
                "ContainerCreating",
            ),
            (
                json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}}),
                "Running",
            ),
            (
                json!({"status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
                "CrashLoopBackOff",
            ),
            (
                json!({"status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}}),
                "Completed",
            ),
            (
                json!({"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}}),
                "ExitCode:3",
            ),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}}),
                "Terminating",
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(pod_status_reason(&pod), want, "{pod}");
        }
    }

    #[test]
    fn human_durations_match_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (3600, "60m"),
            (4 * 3600, "4h"),
            (4 * 3600 + 60, "4h1m"),
            (30 * 3600, "30h"),
            (3 * 86400, "3d"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }
}
