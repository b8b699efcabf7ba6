//! Ferry's network model, pure: from the cluster's network state (VPCs, subnets, ports,
//! the external network, services and their ready backends) to the complete set of OVN
//! Northbound rows Ferry owns ([`build_desired`]), and from those plus the rows the NB holds
//! to the minimal OVSDB operations that converge them ([`diff`], in bounded transactions).
//!
//! No I/O, no clock, no async: the network controller feeds it plain data read from the API
//! and from an OVSDB monitor mirror, and sends what it returns. It must not talk to OVSDB or
//! the API itself. Placement follows `architecture.md`: scenario 1 in a per-VPC
//! Load_Balancer_Group on every switch of the VPC, scenario 2 through the default VPC's join
//! switch, scenario 3 on the VPC router (distributed, with a gateway port on its transit
//! link to `eip-gateway`), scenario 4 on the `service-gateway` router with
//! `lb_force_snat_ip=router_ip`.
//!
//! Tests: `tests/scenarios.rs` (tables of inputs and the rows or errors they give),
//! `tests/diff.rs` (the diff on a pure OVSDB simulator, with proptests), `tests/ovn.rs` (a
//! real ovsdb-server, ovn-northd and ovn-trace; ignored without OVN binaries).

mod build;
mod diff;
mod model;
mod names;
pub mod scenario;
mod topology;

pub use build::{build_desired, group_name};
pub use diff::{CurrentRow, Plan, diff, owned_key, plan, row_uuid};
pub use model::*;
pub use names::{PortKind, link, mac_from, port_name};
pub use topology::INFRA_OWNER;
