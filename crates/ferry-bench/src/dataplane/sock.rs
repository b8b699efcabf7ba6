//! The `ferry-sock` path: Ferry's socket-level load balancer (`ferry-sock`, what
//! `ferry agent --socket-lb` runs) on the OVN fabric of `ferry-ovn`. Its client is one
//! more port in the `fbv` VPC, registered with the socket LB; the catalogue's `N`
//! services are programmed into the BPF maps (timed: `program_s`). Its packets carry the
//! backend's address, so they never match OVN's load balancers, but they still cross
//! switches that carry the VPC's load balancer group, as a pod's would.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Instant;

use ferry_sock::{
    Algorithm, Backend, Desired, MapSizes, Protocol, ServiceKey, ServiceSpec, SocketLb,
};

use super::services::Catalogue;
use crate::error::{Error, Result};

/// The VPC number of `fbv` in the bench's maps.
const VPC: u32 = 1;
/// The VPC number of `fbd` (`ferry-sock-bare`).
const VPC_BARE: u32 = 2;

/// The attached socket LB; dropping it detaches the programs.
pub struct SockPath {
    _lb: SocketLb,
    /// Seconds to write the `N` services into the maps (the data path uses them at once).
    pub program_s: f64,
    /// Of which planning (pure, no `bpf()` call).
    pub plan_s: f64,
    pub detail: String,
}

impl std::fmt::Debug for SockPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockPath")
            .field("program_s", &self.program_s)
            .finish_non_exhaustive()
    }
}

/// What the maps should hold for `catalogue`, every service port in VPC [`VPC`].
pub fn desired(catalogue: &Catalogue) -> Desired {
    let mut d = Desired::default();
    add(&mut d, VPC, catalogue);
    d
}

/// Adds `catalogue`'s service ports in `vpc`.
fn add(d: &mut Desired, vpc: u32, catalogue: &Catalogue) {
    for s in &catalogue.services {
        for p in &s.ports {
            d.services.insert(
                ServiceKey {
                    vpc,
                    vip: s.cluster_ip,
                    port: p.port,
                    protocol: Protocol::Tcp,
                },
                ServiceSpec {
                    backends: s
                        .endpoints
                        .iter()
                        .map(|ip| Backend::new(SocketAddrV4::new(*ip, p.target_port)))
                        .collect(),
                    algorithm: Algorithm::Random,
                    affinity_timeout_s: 0,
                },
            );
        }
    }
}

fn sock_err(step: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        option: "ferry-sock",
        reason: format!("{step}: {e}"),
    }
}

impl SockPath {
    /// Attaches the socket LB at the cgroup v2 root, registers the `client_ns` namespaces
    /// in `fbv` and programs `catalogue`; with `bare` = (ovn-direct's client namespace, its backend),
    /// also that namespace in `fbd`, with the catalogue's measured service led to that
    /// backend.
    pub fn create(
        client_ns: &[&str],
        catalogue: &Catalogue,
        bare: Option<(&str, std::net::Ipv4Addr)>,
    ) -> Result<SockPath> {
        let root = ferry_sock::cgroup2_mount()
            .ok_or_else(|| sock_err("cgroup v2", "no cgroup2 mount in /proc/self/mountinfo"))?;
        let mut lb = SocketLb::load(&root, MapSizes::default()).map_err(|e| sock_err("load", e))?;
        for ns in client_ns {
            let cookie = ferry_sock::netns_cookie_of_path(&PathBuf::from("/run/netns").join(ns))
                .map_err(|e| sock_err("netns cookie", e))?;
            lb.set_netns_vpc(cookie, VPC)
                .map_err(|e| sock_err("register the client", e))?;
        }
        let mut d = desired(catalogue);
        if let Some((ns, backend)) = bare {
            let cookie = ferry_sock::netns_cookie_of_path(&PathBuf::from("/run/netns").join(ns))
                .map_err(|e| sock_err("netns cookie", e))?;
            lb.set_netns_vpc(cookie, VPC_BARE)
                .map_err(|e| sock_err("register the bare client", e))?;
            let mut c = catalogue.clone();
            c.services[c.measured].endpoints = vec![backend];
            add(&mut d, VPC_BARE, &c);
        }
        let t0 = Instant::now();
        let plan = ferry_sock::plan(
            lb.programmed(),
            &d,
            ferry_sock::Capacity {
                services: MapSizes::default().services,
                slots: MapSizes::default().slots,
                members: MapSizes::default().members,
            },
        );
        let plan_s = t0.elapsed().as_secs_f64();
        drop(plan);
        let t0 = Instant::now();
        let report = lb.apply(&d).map_err(|e| sock_err("program", e))?;
        let program_s = t0.elapsed().as_secs_f64();
        if !report.rejected.is_empty() {
            return Err(sock_err(
                "program",
                format!("{} services did not fit", report.rejected.len()),
            ));
        }
        Ok(SockPath {
            _lb: lb,
            program_s,
            plan_s,
            detail: format!(
                "ferry-sock (cgroup connect4/sendmsg4 at the cgroup2 root): {} service ports in \
                 the BPF maps, {} map operations, planning {:.3} s of it; OVN fabric of \
                 ferry-ovn (its switches carry the LB group)",
                d.services.len(),
                report.ops,
                plan_s
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::services::catalogue;
    use std::net::Ipv4Addr;

    #[test]
    fn every_service_port_goes_to_its_endpoints_target_port() {
        let c = catalogue(
            3,
            Ipv4Addr::new(10, 253, 2, 10),
            Ipv4Addr::new(10, 253, 2, 0),
            2,
        );
        let d = desired(&c);
        assert_eq!(d.services.len(), c.service_ports());
        let m = c.measured();
        for p in &m.ports {
            let key = ServiceKey {
                vpc: VPC,
                vip: m.cluster_ip,
                port: p.port,
                protocol: Protocol::Tcp,
            };
            assert_eq!(
                d.services[&key].backends,
                vec![Backend::new(SocketAddrV4::new(
                    Ipv4Addr::new(10, 253, 2, 10),
                    p.target_port
                ))]
            );
        }
    }
}
