//! A pass's writes of addresses and of the network objects' statuses: the workload
//! addresses IPAM gives (`allocate`), the Subnets', Vpcs' and Eips' statuses, and the
//! LoadBalancer addresses of ordinary Services.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use kube::Client;

use super::{Pass, PassState};
use crate::allocate::{self, Held, Holder};
use crate::caches::{self, Caches};
use crate::kube_service;
use crate::service_ips;

impl Pass<'_> {
    /// Writes each LoadBalancer Service's address to its status (when it changed), as a
    /// cloud's load-balancer controller does; a Service that cannot have one gets an Event.
    pub(super) async fn write_lb_ips(
        &self,
        kube: &BTreeMap<String, Option<caches::KubeService>>,
        lb_ips: &BTreeMap<String, Result<Ipv4Addr, crate::problem::Problem>>,
    ) {
        for (k, found) in kube {
            let Some((svc, _)) = found else { continue };
            let Some(r) = lb_ips.get(k) else { continue };
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            match r {
                Ok(ip) if kube_service::lb_ip_in_status(svc) != Some(*ip) => {
                    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}});
                    let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), &ns);
                    if let Err(e) = api
                        .patch_status(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&patch),
                        )
                        .await
                    {
                        tracing::warn!(service = %k, error = %e, "writing the LoadBalancer address failed");
                    }
                }
                Ok(_) => {}
                Err(p) => {
                    tracing::warn!(service = %k, reason = p.reason(), message = %p.message(), "no LoadBalancer address")
                }
            }
        }
    }

    /// Writes the Subnets', Vpcs' and Eips' statuses that changed
    /// ([`crate::network_status`]); a failed write waits for the next pass that changes
    /// addresses or for the next full pass.
    pub(super) async fn write_network_statuses(&self) {
        let (held, _) = caches::address_book(self.c);
        write_status_patches(self.client, status_patches(self.c, &held)).await;
    }

    /// Gives every holder that lacks an address one, and schedules a retry of those whose
    /// write failed.
    pub(super) async fn allocate(&self, st: &mut PassState) {
        let subnets = caches::subnets(self.c);
        let (held, requests) = caches::address_book(self.c);
        let mut assignments = Vec::new();
        for (holder, decided) in allocate::plan(&subnets, &held, &requests, &mut st.address_pending)
        {
            match decided {
                Ok(a) => assignments.push(a),
                Err(e) => {
                    tracing::warn!(holder = %holder, reason = %e, "cannot allocate an address")
                }
            }
        }
        if assignments.is_empty() {
            return;
        }
        let written: Vec<Holder> = assignments.iter().map(|a| a.holder.clone()).collect();
        let failed = allocate::write(
            self.client,
            assignments,
            &caches::probe_ports(self.c),
            &mut st.address_pending,
        )
        .await;
        let now = Instant::now();
        for h in written {
            if failed.contains(&h) {
                st.address_retries.failed(h, now);
            } else {
                st.address_retries.succeeded(&h);
            }
        }
    }
}

/// Merge-patches the status of the cluster-scoped object `name`; a failure is logged (the
/// next pass that writes statuses tries again).
async fn patch_status<K>(client: &Client, name: &str, status: &impl serde::Serialize)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch = serde_json::json!({ "status": status });
    let result = kube::Api::<K>::all(client.clone())
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(kind = %K::kind(&()), %name, error = %e, "writing a status failed");
    }
}

/// A network object's status to write.
pub(crate) enum StatusPatch {
    Subnet(String, ferry_api::SubnetStatus),
    Vpc(String, ferry_api::VpcStatus),
    Eip(String, ferry_api::EipStatus),
}

/// The Subnets', Vpcs' and Eips' statuses that differ from what the caches and `held`
/// (the address book) say they should be. Reads only: a full pass planned off the loop
/// computes them there.
pub(crate) fn status_patches(c: &Caches, held: &[Held]) -> Vec<StatusPatch> {
    use crate::network_status::{differs, eip_status, subnet_statuses, vpc_statuses};
    use kube::ResourceExt;
    let mut out = Vec::new();
    let subnets = caches::subnets(c);
    let want = subnet_statuses(&subnets, held);
    for s in c.subnets.state() {
        if let Some(w) = want.get(&s.name_any())
            && differs(s.status.as_ref(), w)
        {
            out.push(StatusPatch::Subnet(s.name_any(), w.clone()));
        }
    }
    let vpcs = c.vpcs.state();
    let want = vpc_statuses(
        vpcs.iter().filter_map(|v| v.metadata.name.as_deref()),
        &subnets,
    );
    for v in &vpcs {
        if let Some(w) = want.get(&v.name_any())
            && differs(v.status.as_ref(), w)
        {
            out.push(StatusPatch::Vpc(v.name_any(), w.clone()));
        }
    }
    let bound: BTreeMap<Ipv4Addr, String> = c
        .services
        .state()
        .iter()
        .filter_map(|s| {
            let ip = s.status.as_ref()?.eip.as_deref()?.parse().ok()?;
            Some((ip, service_ips::key_of(s)))
        })
        .collect();
    for e in c.eips.state() {
        let w = eip_status(
            e.spec.address.as_deref().and_then(|a| a.parse().ok()),
            &bound,
        );
        if differs(e.status.as_ref(), &w) {
            out.push(StatusPatch::Eip(e.name_any(), w));
        }
    }
    out
}

/// Writes `patches`; a failure is logged.
pub(crate) async fn write_status_patches(client: &Client, patches: Vec<StatusPatch>) {
    use ferry_api::{Eip, Subnet, Vpc};
    for p in patches {
        match &p {
            StatusPatch::Subnet(name, w) => patch_status::<Subnet>(client, name, w).await,
            StatusPatch::Vpc(name, w) => patch_status::<Vpc>(client, name, w).await,
            StatusPatch::Eip(name, w) => patch_status::<Eip>(client, name, w).await,
        }
    }
}
