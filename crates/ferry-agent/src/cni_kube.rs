//! The CNI plugin's [`AssignmentSource`] on a real node: the pod's address, MAC, gateway and
//! logical port come from the annotations the network controller writes; ADD waits for them
//! (the controller may not have allocated yet) up to a deadline, then says "try again".

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::cni::{CniEnv, CniError, ErrorCode, NetConf, PodNetwork, pod_ref};
use crate::cni_plugin::AssignmentSource;

/// Reads assignments from the API server named by the network config's `kubeconfig`.
#[derive(Debug)]
pub struct KubeAssignments {
    /// How long ADD waits for the controller's annotations.
    pub wait: Duration,
}

fn assignment(pod: &Pod) -> Option<PodNetwork> {
    let a = ferry_api::WorkloadAddress::from_annotations(pod.annotations())?;
    Some(PodNetwork {
        ip: a.ip_cidr().parse().ok()?,
        mac: a.mac.parse().ok()?,
        gateway: a.gateway.into(),
        iface_id: ferry_net::port_name(
            ferry_net::PortKind::Pod,
            &pod.namespace().unwrap_or_default(),
            &pod.name_any(),
        ),
    })
}

/// The pod's namespace and name from `CNI_ARGS`, or an error naming what is missing.
fn pod_identity(env: &CniEnv) -> Result<(String, String), CniError> {
    let missing: Vec<&str> = [
        ("K8S_POD_NAMESPACE", &env.args.k8s_pod_namespace),
        ("K8S_POD_NAME", &env.args.k8s_pod_name),
    ]
    .into_iter()
    .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
    .map(|(k, _)| k)
    .collect();
    match (&env.args.k8s_pod_namespace, &env.args.k8s_pod_name) {
        (Some(ns), Some(name)) if missing.is_empty() => Ok((ns.clone(), name.clone())),
        _ => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_ARGS has no {}", missing.join(" and no ")),
            format!(
                "Ferry reads the pod's address from the pod object: the container runtime must pass \
                 CNI_ARGS=K8S_POD_NAMESPACE=NS;K8S_POD_NAME=NAME ({})",
                pod_ref(env)
            ),
        )),
    }
}

/// Runs `f` with an API client built from the network config's `kubeconfig` (or the
/// in-cluster config) on a one-off runtime: the plugin is a short-lived process.
fn with_client<T, F, Fut>(conf: &NetConf, f: F) -> Result<T, CniError>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, CniError>>,
{
    let kubeconfig = conf.kubeconfig.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, "starting a runtime", e.to_string()))?;
    rt.block_on(async move {
        let config = match &kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    CniError::new(
                        ErrorCode::InvalidNetworkConfig,
                        format!("reading kubeconfig {}", path.display()),
                        e.to_string(),
                    )
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| {
                        CniError::new(
                            ErrorCode::InvalidNetworkConfig,
                            "using the kubeconfig",
                            e.to_string(),
                        )
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    "no kubeconfig in the network config and no in-cluster config",
                    e.to_string(),
                )
            })?,
        };
        let client = kube::Client::try_from(config).map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                "building the API client",
                e.to_string(),
            )
        })?;
        f(client).await
    })
}

fn api_error(what: String, e: kube::Error) -> CniError {
    CniError::new(ErrorCode::IoFailure, what, e.to_string())
}

impl AssignmentSource for KubeAssignments {
    fn pod_network(&mut self, env: &CniEnv, conf: &NetConf) -> Result<PodNetwork, CniError> {
        let (ns, name) = pod_identity(env)?;
        let wait = self.wait;
        with_client(conf, |client| async move {
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let start = Instant::now();
            loop {
                match pods.get_opt(&name).await {
                    Ok(Some(pod)) => {
                        if let Some(a) = assignment(&pod) {
                            return Ok(a);
                        }
                    }
                    Ok(None) => {
                        return Err(CniError::new(
                            ErrorCode::UnknownContainer,
                            format!("pod {ns}/{name} does not exist"),
                            String::new(),
                        ));
                    }
                    Err(e) => tracing::debug!(error = %e, "reading the pod failed; retrying"),
                }
                if start.elapsed() > wait {
                    return Err(CniError::new(
                        ErrorCode::TryAgainLater,
                        format!(
                            "pod {ns}/{name} has no address yet (the Ferry controller writes iaas.yusur.io/ip_address)"
                        ),
                        String::new(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// The pod's node (`spec.nodeName`) names the DPU Lease that must be live.
    fn admit(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        let (ns, name) = pod_identity(env)?;
        let details = pod_ref(env);
        with_client(conf, |client| async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let pod = pods
                .get(&name)
                .await
                .map_err(|e| api_error(format!("reading pod {ns}/{name}"), e))?;
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
            let leases: Api<Lease> = Api::namespaced(client, crate::dpu::DPU_LEASE_NAMESPACE);
            let lease = leases
                .get_opt(&crate::dpu::dpu_lease_name(&node))
                .await
                .map_err(|e| api_error(format!("reading the DPU Lease of {node}"), e))?;
            crate::dpu::admit(
                &node,
                lease.and_then(|l| l.spec).as_ref(),
                jiff::Timestamp::now(),
            )
            .map_err(|r| CniError::new(ErrorCode::TryAgainLater, r.to_string(), details))
        })
    }

    fn announce_vf(
        &mut self,
        env: &CniEnv,
        conf: &NetConf,
        representor: Option<&str>,
    ) -> Result<(), CniError> {
        let (ns, name) = pod_identity(env)?;
        let patch = serde_json::json!({"metadata": {"annotations": {crate::dpu::ANNOTATION_VF: representor}}});
        with_client(conf, |client| async move {
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| api_error(format!("annotating pod {ns}/{name} with its VF"), e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{CniArgs, CniCommand};

    fn env(args: &str) -> CniEnv {
        CniEnv {
            command: CniCommand::Add,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
            args: CniArgs::parse(args).expect("args"),
            path: vec![],
        }
    }

    #[test]
    fn pod_identity_names_what_cni_args_lack() {
        let cases = [
            (
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
                Ok(("default", "web")),
            ),
            (
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default",
                Err("CNI_ARGS has no K8S_POD_NAME"),
            ),
            ("K8S_POD_NAME=web", Err("CNI_ARGS has no K8S_POD_NAMESPACE")),
            (
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=",
                Err("CNI_ARGS has no K8S_POD_NAME"),
            ),
            (
                "",
                Err("CNI_ARGS has no K8S_POD_NAMESPACE and no K8S_POD_NAME"),
            ),
        ];
        for (args, want) in cases {
            let got = pod_identity(&env(args));
            match (got, want) {
                (Ok((ns, name)), Ok((wns, wname))) => {
                    assert_eq!((ns.as_str(), name.as_str()), (wns, wname), "{args}")
                }
                (Err(e), Err(msg)) => {
                    assert_eq!(e.msg, msg, "{args}");
                    assert_eq!(e.code, 4, "{args}");
                    assert!(
                        e.details.contains("K8S_POD_NAMESPACE=NS;K8S_POD_NAME=NAME"),
                        "{e:?}"
                    );
                }
                (got, want) => panic!("{args}: got {got:?}, want {want:?}"),
            }
        }
    }
}
