//! Ferry's network model, pure: from the cluster's network state (VPCs, subnets, ports,
//! the external network, services and their ready backends) to the complete set of OVN
//! Northbound rows Ferry owns ([`build_desired`]), and from those plus the rows the NB holds
//! to the minimal OVSDB operations that converge them ([`diff`], in bounded transactions).
//! [`diff_fenced`] does the same from an older snapshot while fast paths keep writing: the
//! rows a [`Fence`] names (what they wrote since) are left as the NB has them.
//!
//! No I/O, no clock, no async: the network controller feeds it plain data read from the API
//! and from an OVSDB monitor mirror, and sends what it returns. It must not talk to OVSDB or
//! the API itself. Placement follows `architecture.md`: scenario 1 in a per-VPC
//! Load_Balancer_Group on every switch of the VPC, scenario 2 through the default VPC's join
//! switch, scenario 3 on the VPC router (distributed, with a gateway port on its transit
//! link to `eip-gateway`), scenario 4 on the `service-gateway` router with
//! `lb_force_snat_ip=router_ip`.
//!
//! # Names and addresses (what others plumb against)
//!
//! - One `Logical_Router` per VPC, named after the VPC (distributed); gateway routers
//!   `eip-gateway` (`options:chassis`) and `service-gateway` (`options:chassis`,
//!   `lb_force_snat_ip=router_ip`). One `Logical_Switch` per Subnet, named after it; the
//!   external switch is `external`. VPC names `eip-gateway`/`service-gateway` and subnet
//!   names `external`, `transit-*`, `service-gateway-*` are refused ([`ObjectError::NameClash`]).
//! - A router on a switch: router port `ROUTER-SWITCH` (MAC [`mac_from`] of that name,
//!   `0e:..`), switch port `SWITCH-ROUTER` (type `router`). The subnet gateway is the VPC
//!   router port's address.
//! - Workload ports: [`port_name`] (`NS_NAME` pods, `vmi_`, `bm_`, `vnic_`, `node_NAME` on
//!   `subnet0`, `probe_NODE_VPC`, `ext_NAME` on `external`), `addresses` = `"MAC IP"`; the
//!   agent sets `external_ids:iface-id` to exactly that name.
//! - Transit links are /30s of the transit range (default `100.100.0.0/16`, never inside
//!   any subnet): slot 0 (`100.100.0.0/30`) is `eip-gateway` .1 <-> `service-gateway` .2 on
//!   switch `transit-service-gateway`; switch `transit-VPC` joins `eip-gateway` (.1) and
//!   the VPC router (.2, a distributed gateway port with a `Gateway_Chassis`);
//!   `service-gateway-VPC` joins `service-gateway` (.1, the SNAT source backends see) and
//!   the VPC router (.2). Slots of VPC links are hashed from the VPC name ([`link`]).
//! - Load balancers: `ferry-NS-NAME-cip-VPC-PROTO` (in group `ferry-VPC`) and
//!   `ferry-NS-NAME-eip-PROTO` (on the VPC router or `service-gateway`).
//! - Socket-LB port groups: `ferry_socklb_VPC` ([`socket_lb_group`], `-` as `_`) with the
//!   ports of [`NetworkState::socket_lb_ports`] and two `allow-stateless` ACLs (keys
//!   `GROUP/from-lport`, `GROUP/to-lport`): traffic between members skips conntrack
//!   (why that is safe: the `socket_lb` module).
//! - Every row but groups carries `external_ids` `ferry.io/key` (`TABLE:ID`, stable) and
//!   `ferry.io/owner` (`YusurService/NS/NAME/UID` or [`INFRA_OWNER`]); groups are owned by
//!   their `ferry-` name (the 23.03 schema gives them no `external_ids`).
//!
//! Tests: `tests/scenarios.rs` (tables of inputs and the rows or errors they give),
//! `tests/diff.rs` (the diff on a pure OVSDB simulator, with proptests), `tests/ovn.rs` (a
//! real ovsdb-server, ovn-northd and ovn-trace; ignored without OVN binaries),
//! `tests/real_nb.rs` (the controller's NB applier, `ferry-nb`, through `ferry-ovsdb`'s
//! mirror against a real NB: idempotence, ovn-trace of the four scenarios, a SIGKILLed NB
//! healed without duplicates). `examples/nb_scale.rs` times N services x M backends into a
//! real NB through the same applier. Writing the NB is not this crate's job: `ferry-nb`
//! sends what [`diff`] (or [`diff_fenced`]), [`cluster_ip_delta`] and [`port_delta`] return.

mod build;
mod delta;
mod diff;
mod model;
mod names;
pub mod scenario;
mod socket_lb;
mod topology;

pub use build::{build_desired, group_name};
pub use delta::{cluster_ip_delta, delta_input, port_delta, port_delta_current, port_key};
pub use diff::{
    CurrentRow, Fence, FullRow, Plan, diff, diff_fenced, diff_fenced_with, indexed_column,
    owned_key, plan, row_uuid,
};
pub use model::*;
pub use names::{PortKind, link, mac_from, port_name};
pub use socket_lb::{SOCKET_LB_ACL_PRIORITY, socket_lb_acl_matches, socket_lb_group};
pub use topology::INFRA_OWNER;
