//! [`FerryCni`]: the CNI operations, joining the protocol ([`crate::cni`]) to the plumbing
//! ([`crate::plumb`]). Where a pod's assignment comes from is an [`AssignmentSource`]
//! (the Kubernetes glue reads the pod's `iaas.yusur.io/ip_address` and `mac_address`
//! annotations; tests use a table).

use crate::cni::{
    CniEnv, CniError, CniPlugin, CniResult, ErrorCode, NetConf, PodNetwork, add_result,
    plumb_request, pod_ref, unplumb_request,
};
use crate::plumb::{self, Discrepancy, PlumbError};

/// Where ADD and CHECK learn the pod's address, MAC, gateway and logical port.
pub trait AssignmentSource {
    /// The assignment for the pod of this invocation; an error (typically
    /// [`ErrorCode::NoAssignment`] or [`ErrorCode::TryAgainLater`]) if there is none yet.
    fn pod_network(&mut self, env: &CniEnv, conf: &NetConf) -> Result<PodNetwork, CniError>;

    /// `dpu-host` mode: whether a new pod may be plumbed now (the DPU agent's Lease is
    /// live, [`crate::dpu::admit`]); an error names why not. Default: always.
    fn admit(&mut self, _env: &CniEnv, _conf: &NetConf) -> Result<(), CniError> {
        Ok(())
    }

    /// `dpu-host` mode: tells the DPU which representor to bind for this pod
    /// ([`crate::dpu::ANNOTATION_VF`]); `None` withdraws it (DEL). Default: nothing.
    fn announce_vf(
        &mut self,
        _env: &CniEnv,
        _conf: &NetConf,
        _representor: Option<&str>,
    ) -> Result<(), CniError> {
        Ok(())
    }
}

/// Ferry's CNI plugin.
#[derive(Debug)]
pub struct FerryCni<A> {
    pub assignments: A,
}

impl<A: AssignmentSource> CniPlugin for FerryCni<A> {
    fn add(&mut self, env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
        let needs_dpu = crate::dpu::duties(conf.mode).needs_dpu;
        if needs_dpu {
            self.assignments.admit(env, conf)?;
        }
        let pod = self.assignments.pod_network(env, conf)?;
        let req = plumb_request(env, conf, &pod)?;
        let outcome = plumb::add(&req).map_err(|e| plumb_error(env, e))?;
        if needs_dpu {
            // The representor is the host end: the DPU binds it with the pod's iface-id.
            if let Err(e) = self
                .assignments
                .announce_vf(env, conf, Some(&req.host_ifname))
            {
                let _ = plumb::del(&req.unplumb());
                return Err(e);
            }
        }
        // For the agent's socket LB (`ferry agent --socket-lb`); never fails ADD.
        crate::socket_lb::cni_added(
            &conf.sandbox_dir,
            &env.container_id,
            &req.netns_path,
            env.args.k8s_pod_namespace.as_deref().unwrap_or_default(),
            env.args.k8s_pod_name.as_deref().unwrap_or_default(),
        );
        let mut result = add_result(&conf.cni_version, &req, outcome.host_mac);
        result.dns = conf.dns.clone();
        Ok(result)
    }

    fn del(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        plumb::del(&unplumb_request(env, conf)).map_err(|e| plumb_error(env, e))?;
        if crate::dpu::duties(conf.mode).needs_dpu {
            // Best effort: the pod may be gone already, and DEL must succeed regardless.
            let _ = self.assignments.announce_vf(env, conf, None);
        }
        crate::socket_lb::cni_deleted(&conf.sandbox_dir, &env.container_id);
        Ok(())
    }

    fn check(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        let pod = self.assignments.pod_network(env, conf)?;
        let req = plumb_request(env, conf, &pod)?;
        plumb::check(&req).map_err(|d| {
            let code = match d {
                Discrepancy::NetnsMissing { .. } => ErrorCode::UnknownContainer,
                Discrepancy::Inspect(_) | Discrepancy::Output { .. } => ErrorCode::IoFailure,
                _ => ErrorCode::CheckFailed,
            };
            CniError::new(code, d.to_string(), pod_ref(env))
        })
    }
}

fn plumb_error(env: &CniEnv, e: PlumbError) -> CniError {
    let code = match e {
        PlumbError::NetnsMissing { .. } => ErrorCode::UnknownContainer,
        PlumbError::Command { .. } | PlumbError::Output { .. } => ErrorCode::PlumbingFailed,
    };
    CniError::new(code, e.to_string(), pod_ref(env))
}

/// The plugin process's main: reads the environment and stdin, runs [`crate::cni::dispatch`],
/// prints the reply on stdout and returns the exit status.
pub fn run_stdio<P: CniPlugin>(plugin: &mut P) -> i32 {
    use std::io::{Read, Write};
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(ErrorCode::IoFailure, "could not read stdin", e.to_string());
        let _ = writeln!(std::io::stdout(), "{}", err.to_json());
        return 1;
    }
    let reply = crate::cni::dispatch(std::env::vars(), &stdin, plugin);
    if !reply.stdout.is_empty() {
        let _ = writeln!(std::io::stdout(), "{}", reply.stdout);
    }
    reply.exit_code
}
