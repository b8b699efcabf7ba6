//! Ferry's network model, pure: from the cluster's network state (VPCs, subnets, ports,
//! the external network, services and their ready backends) to the complete set of OVN
//! Northbound rows Ferry owns ([`build_desired`]), and from those plus the rows the NB holds
//! to the minimal OVSDB operations that converge them ([`plan`]).
//!
//! No I/O, no clock, no async: the network controller feeds it plain data read from the API
//! and from an OVSDB monitor mirror, and sends what it returns. Placement follows
//! `architecture.md`: scenario 1 in a per-VPC Load_Balancer_Group on every switch of the VPC,
//! scenario 2 through the default VPC's join switch, scenario 3 on the VPC router (distributed,
//! with a gateway port on its transit link to `eip-gateway`), scenario 4 on the
//! `service-gateway` router with `lb_force_snat_ip=router_ip`.

mod build;
mod diff;
mod model;
mod names;

pub use build::build_desired;
pub use diff::{CurrentRow, plan};
pub use model::*;
pub use names::{PortKind, port_name};
