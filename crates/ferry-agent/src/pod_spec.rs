//! A Pod's containers as the lab runtime runs them, resolved from the Pod spec the way the
//! kubelet resolves them: init containers first (run to completion, in order), argv from
//! `command` + `args` with `$(VAR)` expanded from the container's environment, the
//! environment from the API server's service variables, `envFrom` and `env` (values, the
//! downward API's fieldRefs, ConfigMap and Secret keys), `workingDir`, the image,
//! `hostPath` volume mounts and the ServiceAccount token directory, and readiness and
//! liveness probes with named ports resolved. Pure: what the API holds (ConfigMaps,
//! Secrets, the token) comes in [`PodInputs`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::lab_image::Mount;
use crate::runtime::{COMMAND_ANNOTATION, ContainerSpec, Probe, ProbeAction};

/// Where a Pod finds its ServiceAccount's token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What a container's `env` may read through `valueFrom.fieldRef` (the downward API).
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub pod_ip: String,
    pub service_account: String,
}

/// What the API server holds that a Pod's containers read, fetched when the Pod starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInputs {
    /// ConfigMap name -> data, of the Pod's namespace.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret name -> decoded data.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// A directory with the ServiceAccount's `token`, `ca.crt` and `namespace`, mounted
    /// at [`SERVICE_ACCOUNT_DIR`].
    pub token_dir: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`: every container gets them.
    pub api_env: Vec<(String, String)>,
}

/// Expands `$(VAR)` from `env` as the kubelet does: an unknown name stays as written and
/// `$$` is a literal `$`.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 3 + end]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// One `env` entry's value; `None` when its source is missing (left out).
fn env_value(e: &EnvVar, fields: &PodFields, inputs: &PodInputs) -> Option<String> {
    if let Some(v) = &e.value {
        return Some(v.clone());
    }
    let from = e.value_from.as_ref()?;
    if let Some(f) = &from.field_ref {
        return Some(match f.field_path.as_str() {
            "metadata.name" => fields.name.clone(),
            "metadata.namespace" => fields.namespace.clone(),
            "metadata.uid" => fields.uid.clone(),
            "spec.nodeName" => fields.node_name.clone(),
            "spec.serviceAccountName" => fields.service_account.clone(),
            "status.podIP" => fields.pod_ip.clone(),
            _ => return None,
        });
    }
    if let Some(k) = &from.config_map_key_ref {
        return inputs.config_maps.get(&k.name)?.get(&k.key).cloned();
    }
    if let Some(k) = &from.secret_key_ref {
        return inputs.secrets.get(&k.name)?.get(&k.key).cloned();
    }
    None
}

/// A container's environment in the kubelet's order: service variables, `envFrom`, then
/// `env` (later entries win; values may refer to earlier ones with `$(VAR)`).
fn environment(c: &Container, fields: &PodFields, inputs: &PodInputs) -> Vec<(String, String)> {
    let mut env = inputs.api_env.clone();
    for src in c.env_from.iter().flatten() {
        let prefix = src.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &src.config_map_ref {
            inputs.config_maps.get(&r.name)
        } else if let Some(r) = &src.secret_ref {
            inputs.secrets.get(&r.name)
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            env.push((format!("{prefix}{k}"), v.clone()));
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(e, fields, inputs) {
            let v = expand(&v, &env);
            env.push((e.name.clone(), v));
        }
    }
    // One entry per name, the last one, in first-seen order.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match seen.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                seen.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

/// The container's `hostPath` volume mounts, and the token directory unless the Pod opts
/// out (`automountServiceAccountToken: false`) or mounts that path itself.
fn mounts(pod: &PodSpec, c: &Container, inputs: &PodInputs) -> Vec<Mount> {
    let mut out: Vec<Mount> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|vm| {
            let v = pod.volumes.iter().flatten().find(|v| v.name == vm.name)?;
            let host = PathBuf::from(&v.host_path.as_ref()?.path);
            let host = match vm.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => host.join(sub),
                _ => host,
            };
            Some(Mount {
                host,
                container: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only == Some(true),
            })
        })
        .collect();
    let own = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|vm| vm.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR);
    if let (Some(dir), false, false) = (
        &inputs.token_dir,
        own,
        pod.automount_service_account_token == Some(false),
    ) {
        out.push(Mount {
            host: dir.clone(),
            container: SERVICE_ACCOUNT_DIR.into(),
            read_only: true,
        });
    }
    out
}

fn container(
    pod: &PodSpec,
    c: &Container,
    init: bool,
    fields: &PodFields,
    inputs: &PodInputs,
) -> ContainerSpec {
    let port = |p: &IntOrString| match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    };
    let probe = |p: &k8s_openapi::api::core::v1::Probe| {
        let action = if let Some(h) = &p.http_get {
            ProbeAction::Http {
                port: port(&h.port)?,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            }
        } else if let Some(t) = &p.tcp_socket {
            ProbeAction::Tcp {
                port: port(&t.port)?,
            }
        } else if let Some(e) = &p.exec {
            ProbeAction::Exec {
                command: e.command.clone().unwrap_or_default(),
            }
        } else {
            return None;
        };
        let secs = |v: Option<i32>, d: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(d).max(0)).unwrap_or(0))
        };
        let count = |v: Option<i32>, d: i32| u32::try_from(v.unwrap_or(d).max(1)).unwrap_or(1);
        Some(Probe {
            action,
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        })
    };
    let env = environment(c, fields, inputs);
    let argv = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    ContainerSpec {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        argv,
        env,
        working_dir: c.working_dir.clone(),
        readiness: c.readiness_probe.as_ref().and_then(probe),
        liveness: c.liveness_probe.as_ref().and_then(probe),
        init,
        mounts: mounts(pod, c, inputs),
    }
}

/// The containers of a pod: its init containers (`init: true`) first, then its containers.
pub fn containers_of(pod: &PodSpec, fields: &PodFields, inputs: &PodInputs) -> Vec<ContainerSpec> {
    pod.init_containers
        .iter()
        .flatten()
        .map(|c| container(pod, c, true, fields, inputs))
        .chain(
            pod.containers
                .iter()
                .map(|c| container(pod, c, false, fields, inputs)),
        )
        .collect()
}

/// The argv of a host from its annotation.
pub fn host_command(annotations: &BTreeMap<String, String>) -> Vec<ContainerSpec> {
    let argv: Vec<String> = annotations
        .get(COMMAND_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    vec![ContainerSpec {
        name: "host".into(),
        argv,
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dollar_references_expand_like_the_kubelet() {
        let e = env(&[("NODE_NAME", "n1"), ("A", "x")]);
        let cases = [
            ("--node=$(NODE_NAME)", "--node=n1"),
            ("$(A)$(A)", "xx"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(NODE_NAME)", "$(NODE_NAME)"),
            ("cost $5", "cost $5"),
            ("$(unclosed", "$(unclosed"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &e), want, "{input}");
        }
    }

    /// deploy/agent.yaml's shape: an init container, envFrom a ConfigMap, a fieldRef used
    /// in args, hostPath volumes, the token directory.
    #[test]
    fn a_daemonset_pod_resolves_env_args_and_mounts() {
        let spec: PodSpec = serde_json::from_value(json!({
            "hostNetwork": true,
            "initContainers": [{"name": "install", "image": "ferry:dev", "command": ["ferry", "cni-install"],
                "envFrom": [{"configMapRef": {"name": "cfg"}}],
                "volumeMounts": [{"name": "bin", "mountPath": "/host/opt/cni/bin"}]}],
            "containers": [{"name": "agent", "image": "ferry:dev", "command": ["ferry", "agent"],
                "args": ["--node=$(NODE_NAME)"],
                "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}, "prefix": "S_"}],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "A", "value": "override"},
                        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}}],
                "volumeMounts": [{"name": "bin", "mountPath": "/host/opt/cni/bin", "readOnly": true}]}],
            "volumes": [{"name": "bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}}]
        }))
        .expect("pod spec");
        let fields = PodFields {
            node_name: "n1".into(),
            ..Default::default()
        };
        let inputs = PodInputs {
            config_maps: [(
                "cfg".to_string(),
                [("A", "1"), ("B", "2")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
            )]
            .into(),
            secrets: [(
                "sec".to_string(),
                [("T".to_string(), "t".to_string())].into(),
            )]
            .into(),
            token_dir: Some("/state/tokens/u1".into()),
            api_env: env(&[("KUBERNETES_SERVICE_HOST", "127.0.0.1")]),
        };
        let got = containers_of(&spec, &fields, &inputs);
        let token = Mount {
            host: "/state/tokens/u1".into(),
            container: SERVICE_ACCOUNT_DIR.into(),
            read_only: true,
        };
        let bin = |ro| Mount {
            host: "/opt/cni/bin".into(),
            container: "/host/opt/cni/bin".into(),
            read_only: ro,
        };
        let want = vec![
            ContainerSpec {
                name: "install".into(),
                image: "ferry:dev".into(),
                argv: vec!["ferry".into(), "cni-install".into()],
                env: env(&[
                    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                    ("A", "1"),
                    ("B", "2"),
                ]),
                init: true,
                mounts: vec![bin(false), token.clone()],
                ..Default::default()
            },
            ContainerSpec {
                name: "agent".into(),
                image: "ferry:dev".into(),
                argv: vec!["ferry".into(), "agent".into(), "--node=n1".into()],
                env: env(&[
                    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                    ("A", "override"),
                    ("B", "2"),
                    ("S_T", "t"),
                    ("NODE_NAME", "n1"),
                    ("K", "2"),
                ]),
                mounts: vec![bin(true), token],
                ..Default::default()
            },
        ];
        assert_eq!(got, want);
    }
}
