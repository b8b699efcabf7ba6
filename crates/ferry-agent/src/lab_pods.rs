//! The lab runtime's Pods: a Pod bound to the node becomes a [`Workload`] (its address
//! from the controller's annotations, or the agent's own namespace for `hostNetwork`), and
//! a Pod that runs an image of the lab's layout ([`crate::lab_image`]) first gets what the
//! kubelet fetches for it when it starts: the ConfigMaps and Secrets its environment
//! reads, and a token of its ServiceAccount bound to the Pod (TokenRequest), written with
//! the API server's CA as the Pod's ServiceAccount directory. Fetched once per Pod (uid),
//! as the kubelet resolves a container's environment at its start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::pod_spec::PodInputs;
use crate::runtime::{self, RestartPolicy, Workload};

/// A token's lifetime (the lab does not rotate them).
const TOKEN_SECONDS: i64 = 24 * 3600;

/// The workload of a Pod; `None` until the controller gave a non-`hostNetwork` Pod its
/// address.
pub fn pod_workload(pod: &Pod, inputs: &PodInputs) -> Option<Workload> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let host = spec.host_network == Some(true);
    let a = match host {
        true => None,
        false => Some(ferry_api::WorkloadAddress::from_annotations(
            pod.annotations(),
        )?),
    };
    let fields = runtime::PodFields {
        name: pod.name_any(),
        namespace: ns.clone(),
        uid: pod.uid().unwrap_or_default(),
        node_name: spec.node_name.clone().unwrap_or_default(),
        pod_ip: a.as_ref().map(|a| a.ip.to_string()).unwrap_or_default(),
        service_account: spec.service_account_name.clone().unwrap_or_default(),
    };
    Some(Workload {
        key: format!("pod/{ns}/{}", pod.name_any()),
        uid: pod.uid().unwrap_or_default(),
        netns: match host {
            true => String::new(),
            false => runtime::netns_name(&ns, &pod.name_any()),
        },
        iface_id: match host {
            true => String::new(),
            false => ferry_net::port_name(ferry_net::PortKind::Pod, &ns, &pod.name_any()),
        },
        mac: a.as_ref().map(|a| a.mac.clone()).unwrap_or_default(),
        // Probes of a hostNetwork Pod reach it on the agent's loopback.
        ip_cidr: a
            .as_ref()
            .map_or_else(|| "127.0.0.1/8".into(), |a| a.ip_cidr()),
        gateway: a
            .as_ref()
            .map(|a| a.gateway.to_string())
            .unwrap_or_default(),
        routes: vec![],
        containers: runtime::containers_of(spec, &fields, inputs),
        restart: match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        },
    })
}

/// Why a Pod's inputs could not be fetched (its start waits, as the kubelet's
/// `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{kind} {namespace}/{name}: {source}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("{kind} {namespace}/{name} does not exist")]
    Missing {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("a token for ServiceAccount {namespace}/{name}: {source}")]
    Token {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The ConfigMaps and Secrets a Pod's containers read (`envFrom`, `env` key references):
/// name -> optional.
fn references(pod: &Pod) -> (BTreeMap<String, bool>, BTreeMap<String, bool>) {
    let (mut cms, mut secrets) = (BTreeMap::new(), BTreeMap::new());
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    let add = |map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>| {
        let e = map.entry(name.to_string()).or_insert(true);
        *e &= optional == Some(true);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                add(&mut cms, &r.name, r.optional);
            }
            if let Some(r) = &f.secret_ref {
                add(&mut secrets, &r.name, r.optional);
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                add(&mut cms, &r.name, r.optional);
            }
            if let Some(r) = &from.secret_key_ref {
                add(&mut secrets, &r.name, r.optional);
            }
        }
    }
    (cms, secrets)
}

/// The inputs of the lab's image Pods, by uid.
#[derive(Debug)]
pub struct PodPrep {
    /// Token directories live under here, one per Pod uid.
    token_root: PathBuf,
    ready: BTreeMap<String, PodInputs>,
    /// The last failure logged per Pod (not logged every pass).
    failed: BTreeMap<String, String>,
}

impl PodPrep {
    pub fn new(token_root: PathBuf) -> PodPrep {
        PodPrep {
            token_root,
            ready: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// The workloads of `pods`; a Pod of a lab image whose inputs cannot be fetched yet is
    /// left out this pass.
    pub async fn workloads(&mut self, client: &Client, pods: &[Arc<Pod>]) -> Vec<Workload> {
        let mut out = Vec::new();
        let uids: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        for gone in self
            .ready
            .keys()
            .filter(|u| !uids.contains(*u))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.ready.remove(&gone);
            let _ = std::fs::remove_dir_all(self.token_root.join(&gone));
        }
        self.failed.retain(|u, _| uids.contains(u));
        for pod in pods {
            let uid = pod.uid().unwrap_or_default();
            let images = crate::lab_image::images();
            let in_image = images.is_some_and(|i| {
                pod.spec.iter().any(|s| {
                    s.init_containers
                        .iter()
                        .flatten()
                        .chain(&s.containers)
                        .any(|c| {
                            c.image
                                .as_deref()
                                .is_some_and(|im| i.manifest(im).is_some())
                        })
                })
            });
            let inputs = match (in_image, images) {
                (true, Some(images)) if !self.ready.contains_key(&uid) => {
                    match self.fetch(client, pod, images).await {
                        Ok(i) => {
                            self.failed.remove(&uid);
                            self.ready.entry(uid.clone()).or_insert(i)
                        }
                        Err(e) => {
                            if self.failed.get(&uid) != Some(&e.to_string()) {
                                tracing::warn!(pod = %pod.name_any(), error = %e, "not starting the pod yet");
                                self.failed.insert(uid.clone(), e.to_string());
                            }
                            continue;
                        }
                    }
                }
                (true, Some(_)) => &self.ready[&uid],
                _ => &PodInputs::default(),
            };
            if let Some(w) = pod_workload(pod, inputs) {
                out.push(w);
            }
        }
        out
    }

    async fn fetch(
        &self,
        client: &Client,
        pod: &Pod,
        images: &crate::lab_image::LabImages,
    ) -> Result<PodInputs, InputError> {
        let ns = pod.namespace().unwrap_or_default();
        let (cms, secrets) = references(pod);
        let mut inputs = PodInputs {
            api_env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), images.api_host.clone()),
                (
                    "KUBERNETES_SERVICE_PORT".into(),
                    images.api_port.to_string(),
                ),
            ],
            ..Default::default()
        };
        let read = |kind: &'static str, name: &String| {
            let (ns, name) = (ns.clone(), name.clone());
            move |source| InputError::Read {
                kind,
                namespace: ns,
                name,
                source,
            }
        };
        let missing = |kind: &'static str, name: &String| InputError::Missing {
            kind,
            namespace: ns.clone(),
            name: name.clone(),
        };
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        for (name, optional) in &cms {
            match cm_api
                .get_opt(name)
                .await
                .map_err(read("ConfigMap", name))?
            {
                Some(cm) => {
                    inputs
                        .config_maps
                        .insert(name.clone(), cm.data.unwrap_or_default());
                }
                None if *optional => {}
                None => return Err(missing("ConfigMap", name)),
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for (name, optional) in &secrets {
            match secret_api
                .get_opt(name)
                .await
                .map_err(read("Secret", name))?
            {
                Some(s) => {
                    let data = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    inputs.secrets.insert(name.clone(), data);
                }
                None if *optional => {}
                None => return Err(missing("Secret", name)),
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.automount_service_account_token != Some(false) {
            let sa = spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into());
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.name_any()),
                        uid: pod.uid(),
                    }),
                    expiration_seconds: Some(TOKEN_SECONDS),
                },
                ..Default::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            let token = api
                .create_token_request(&sa, &PostParams::default(), &request)
                .await
                .map_err(|source| InputError::Token {
                    namespace: ns.clone(),
                    name: sa.clone(),
                    source,
                })?
                .status
                .map(|s| s.token)
                .unwrap_or_default();
            let dir = self.token_root.join(pod.uid().unwrap_or_default());
            for (file, body) in [
                ("token", token.as_bytes()),
                ("ca.crt", images.api_ca_pem.as_slice()),
                ("namespace", ns.as_bytes()),
            ] {
                let path = dir.join(file);
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&path, body))
                    .map_err(|source| InputError::Write { path, source })?;
            }
            inputs.token_dir = Some(dir);
        }
        Ok(inputs)
    }
}
