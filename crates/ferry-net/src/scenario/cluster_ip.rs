//! Scenarios 1 and 2: a service's cluster IP, one load balancer per VPC of the service
//! (to that VPC's backends) in the VPC's `Load_Balancer_Group`, which is attached to every
//! switch of the VPC. A switch load balancer acts on traffic entering from a VIF, so a
//! client in any subnet of the VPC, and a node on the default VPC's join switch
//! (`subnet0`, scenario 2), meets it on its own switch. (A Kubernetes Service's node ports
//! on a node's join address are not here: a switch load balancer cannot serve a VIP that is
//! a port's own address on that switch, the request keeps the port's MAC. The node's agent
//! DNATs them to the cluster IP, as kube-proxy does.)

use crate::build::group_name;
use crate::model::{Backend, ServiceState};
use crate::topology::Builder;

pub(crate) fn build(b: &mut Builder, svc: &ServiceState, vpcs: &[String]) {
    let Some(cip) = svc.cluster_ip else {
        return;
    };
    for v in vpcs {
        let local: Vec<&Backend> = svc.backends.iter().filter(|be| &be.vpc == v).collect();
        for proto in super::protocols(svc) {
            let entries = super::port_entries(svc, cip, &proto, &local);
            let k = super::load_balancer_of(b, svc, &format!("cip-{v}"), &proto, entries);
            b.group_lbs.entry(group_name(v)).or_default().push(k);
        }
    }
}
