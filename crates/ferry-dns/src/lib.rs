//! Ferry's cluster DNS, per VPC. Pods (and nodes) resolve `NAME.NAMESPACE.svc.cluster.local`
//! for ordinary Services and for YusurServices, but a name resolves only where its service
//! is reachable: a YusurService of vpc1 is NXDOMAIN from vpc2.
//!
//! - [`zones`]: [`build_zones`] turns Services, EndpointSlices and YusurServices into one
//!   record set per VPC (pure);
//! - [`answer`]: [`answer()`](answer::answer) decides the reply to one query from one VPC
//!   (pure);
//! - [`wire`]: the DNS message format (pure);
//! - [`server`]: [`serve`] answers UDP and TCP on one socket pair per VPC;
//! - [`feed`]: [`run_feed`] keeps the zones current from the API server.
//!
//! This crate does not open namespaces, program OVN or pick addresses: the agent binds the
//! sockets inside each VPC's namespace and hands them over; docs/dns.md has the deployment.

pub mod answer;
pub mod feed;
#[doc(hidden)]
pub mod fixtures;
pub mod server;
pub mod wire;
pub mod zones;

pub use answer::{Decision, answer};
pub use feed::{FeedError, run_feed};
pub use server::{BadUpstream, ServeError, Upstreams, VpcListener, serve};
pub use wire::{Message, Name};
pub use zones::{Snapshot, Zones, build_zones};
