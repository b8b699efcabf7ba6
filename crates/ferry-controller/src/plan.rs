//! Planning, pure: what each YusurService resolves to in this pass (its addresses, the
//! backends it selects, which of them are ready, its problem; the objects to write are
//! built from these when written: [`ServiceOutcome::objects`]), from
//! plain data ([`PlanInput`]) and the indexes ([`Index`]). No client, no cache, no clock.
//!
//! A probe result reaches Endpoints here: the probe's phase (looked up through
//! [`ProbeView`]) decides whether its backend is in `ready` (`service::ready`), which
//! becomes the load balancers' backends and, through `service::build`, Endpoints and the
//! EndpointSlice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ferry_api::{NetworkProbe, ProbePhase, YusurService};

use crate::cached::CachedProbe;
use crate::index::Index;
use crate::problem::Problem;
use crate::service::{self, Backend};
use crate::service_ips::{self, Claims, Pending, ServicePools, key_of};

/// Looks up a NetworkProbe, as cached, by namespace and name (the reflector store in the
/// controller, a map of full objects in tests).
pub trait ProbeView {
    fn probe(&self, namespace: &str, name: &str) -> Option<Arc<CachedProbe>>;
}

impl ProbeView for BTreeMap<(String, String), Arc<NetworkProbe>> {
    fn probe(&self, namespace: &str, name: &str) -> Option<Arc<CachedProbe>> {
        self.get(&(namespace.to_string(), name.to_string()))
            .map(|p| Arc::new(CachedProbe::from(NetworkProbe::clone(p))))
    }
}

/// What one pass plans from.
pub struct PlanInput<'a> {
    /// The services to plan: every one in a full pass (`full`), the changed ones else.
    pub services: Vec<Arc<YusurService>>,
    pub full: bool,
    /// Addresses of the Eip objects, by name.
    pub eips: BTreeMap<String, Ipv4Addr>,
    /// VPCs that exist (the default VPC always does).
    pub vpcs: BTreeSet<String>,
    pub probes: &'a (dyn ProbeView + Sync),
}

/// What one pass decided about a service, for the network controller and for status.
#[derive(Debug, Clone)]
pub struct ServiceOutcome {
    pub key: String,
    pub service: Arc<YusurService>,
    pub cluster_ip: Option<Ipv4Addr>,
    pub eip: Option<Ipv4Addr>,
    pub ready: Vec<Backend>,
    pub problem: Option<Problem>,
    /// Every backend selected, and its probe's phase by probe name: what [`Self::objects`]
    /// builds from.
    pub selected: Vec<Backend>,
    pub phases: BTreeMap<String, ProbePhase>,
    /// The probes it has now.
    pub existing_probes: Vec<Arc<CachedProbe>>,
}

impl ServiceOutcome {
    /// How many backends it selected, healthy or not.
    pub fn total(&self) -> usize {
        self.selected.len()
    }

    /// The objects to write for it, built when written rather than held: a full pass
    /// plans every service, and its outcomes wait in the writer's queue. Held, their
    /// objects (20 NetworkProbes, Endpoints, EndpointSlice and Service per service) were
    /// ~0.5 GiB at 10,000 x 20 (`examples/full_pass_mem.rs`).
    pub fn objects(&self) -> service::ServiceObjects {
        service::build(
            &self.service,
            &self.selected,
            &self.phases,
            self.cluster_ip,
            self.eip,
        )
    }
}

impl ServiceOutcome {
    /// Whether its load balancers belong in OVN.
    pub fn programmable(&self) -> bool {
        self.problem
            .as_ref()
            .is_none_or(|p| !p.blocks_programming())
    }
}

/// Plans `input.services`; `claims` holds the addresses of the services not planned now
/// (in a full pass, the caller starts it afresh).
pub fn plan_services(
    input: &PlanInput<'_>,
    pools: &ServicePools,
    pending: &mut Pending,
    claims: &mut Claims,
    index: &Index,
) -> Vec<ServiceOutcome> {
    if !input.full {
        claims.release(&input.services.iter().map(|s| key_of(s)).collect());
    }
    let addresses =
        service_ips::service_addresses(&input.services, pools, &input.eips, pending, claims);
    let mut outcomes = Vec::new();
    for svc in &input.services {
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let key = key_of(svc);
        let _span = tracing::debug_span!("plan", service = %key).entered();
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let missing: Vec<String> = service::service_vpcs(svc)
            .into_iter()
            .filter(|v| !input.vpcs.contains(v))
            .collect();
        let mut problem = (!missing.is_empty()).then_some(Problem::VpcNotFound(missing));
        let (cluster_ip, eip) = match addresses.get(&key) {
            Some(Ok((v, e))) => (Some(*v), *e),
            Some(Err(p)) => {
                problem.get_or_insert(p.clone());
                (None, None)
            }
            None => (None, None),
        };
        let candidates: Vec<&Backend> = match svc.spec.selector.iter().next() {
            Some((k, v)) => index.candidates(&ns, k, v),
            None => Vec::new(),
        };
        let selected = service::select_backends(svc, &candidates);
        let phases: BTreeMap<String, ProbePhase> = selected
            .iter()
            .map(|b| {
                let pn = service::probe_name(&name, b);
                let phase = input
                    .probes
                    .probe(&ns, &pn)
                    .map(|p| p.phase)
                    .unwrap_or_default();
                (pn, phase)
            })
            .collect();
        let ready = service::ready(&name, &selected, &phases);
        if problem.is_none() && selected.is_empty() {
            problem = Some(Problem::NoBackends {
                empty_selector: svc.spec.selector.is_empty(),
            });
        }
        let existing_probes = index
            .probes_of(&key)
            .filter_map(|n| input.probes.probe(&ns, n))
            .collect();
        outcomes.push(ServiceOutcome {
            key,
            service: svc.clone(),
            cluster_ip,
            eip,
            ready,
            problem,
            selected,
            phases,
            existing_probes,
        });
    }
    outcomes
}

#[cfg(test)]
mod tests;
