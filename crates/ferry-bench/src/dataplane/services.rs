//! The service catalogue every load-balancing path installs: `N` services, of which one
//! (in the middle, see [`measured_index`]) is the one traffic is sent to. The others are
//! fillers with [`Catalogue::filler_backends`] endpoints that do not exist: they are there
//! to make the rule sets, maps and Northbound tables as large as a cluster with `N`
//! services would have them.

use std::net::Ipv4Addr;

/// The TCP port iperf3 listens on (service port = target port).
pub const IPERF_PORT: u16 = 5201;
/// The TCP port `sockperf server` listens on.
pub const SOCKPERF_PORT: u16 = 11111;
/// The port nginx listens on.
pub const HTTP_PORT: u16 = 80;
/// Target port of the filler services' (non-existent) endpoints.
pub const FILLER_TARGET_PORT: u16 = 8080;

/// First cluster IP: service `i` gets `SERVICE_BASE + 10 + i`.
pub const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
/// The service CIDR the cluster IPs come from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Most services the scheme can address (the /16 minus the first ten addresses).
pub const MAX_SERVICES: usize = 65_000;

/// One port of a service: `port` on the cluster IP, `target_port` on the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub name: &'static str,
    pub port: u16,
    pub target_port: u16,
}

/// One TCP service with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `bench/svc-00042` (namespace/name, as kube-proxy and Ferry key services).
    pub key: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Ipv4Addr>,
}

/// The whole catalogue of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    pub services: Vec<Service>,
    /// Index of the measured service in [`Catalogue::services`].
    pub measured: usize,
    /// Endpoints per filler service.
    pub filler_backends: usize,
}

impl Catalogue {
    /// The measured service.
    pub fn measured(&self) -> &Service {
        &self.services[self.measured]
    }

    /// Service ports in total (what kube-proxy counts as services).
    pub fn service_ports(&self) -> usize {
        self.services.iter().map(|s| s.ports.len()).sum()
    }
}

/// Where the measured service sits: the middle, so that iptables' linear `KUBE-SERVICES`
/// walk costs what it costs on average (kube-proxy writes services in no particular order).
pub fn measured_index(n: usize) -> usize {
    n / 2
}

/// The cluster IP of service `i`.
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SERVICE_BASE) + 10 + i as u32)
}

/// `n` services (at least one): the measured one, with ports for iperf3, sockperf and HTTP
/// and the single real `backend`, and `n - 1` fillers with `filler_backends` endpoints each,
/// taken from `filler_pool` (a /24 whose `.100`..`.199` nobody uses).
pub fn catalogue(
    n: usize,
    backend: Ipv4Addr,
    filler_pool: Ipv4Addr,
    filler_backends: usize,
) -> Catalogue {
    let n = n.clamp(1, MAX_SERVICES);
    let measured = measured_index(n);
    let pool = u32::from(filler_pool) & 0xffff_ff00;
    let services = (0..n)
        .map(|i| {
            if i == measured {
                Service {
                    key: format!("bench/svc-{i:05}"),
                    cluster_ip: cluster_ip(i),
                    ports: [
                        ("iperf", IPERF_PORT),
                        ("sockperf", SOCKPERF_PORT),
                        ("http", HTTP_PORT),
                    ]
                    .into_iter()
                    .map(|(name, port)| Port {
                        name,
                        port,
                        target_port: port,
                    })
                    .collect(),
                    endpoints: vec![backend],
                }
            } else {
                Service {
                    key: format!("bench/svc-{i:05}"),
                    cluster_ip: cluster_ip(i),
                    ports: vec![Port {
                        name: "http",
                        port: HTTP_PORT,
                        target_port: FILLER_TARGET_PORT,
                    }],
                    endpoints: (0..filler_backends)
                        .map(|j| Ipv4Addr::from(pool + 100 + ((i * 7 + j) % 100) as u32))
                        .collect(),
                }
            }
        })
        .collect();
    Catalogue {
        services,
        measured,
        filler_backends,
    }
}

/// A short stable hash of a name, as uppercase base32 (kube-proxy names its chains after
/// a hash of the service port and endpoint; FNV-1a here, stable across releases).
pub fn chain_hash(name: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = String::with_capacity(len);
    for i in 0..len {
        if i > 0 && i % 12 == 0 {
            h = (h ^ i as u64).wrapping_mul(0x100_0000_01b3).rotate_left(29);
        }
        out.push(char::from(ALPHABET[(h & 31) as usize]));
        h = h.rotate_right(5);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_service_is_in_the_middle_and_points_at_the_backend() {
        let backend = Ipv4Addr::new(10, 240, 2, 2);
        let c = catalogue(1000, backend, Ipv4Addr::new(10, 240, 3, 0), 2);
        assert_eq!(c.services.len(), 1000);
        assert_eq!(c.measured, 500);
        let m = c.measured();
        assert_eq!(m.endpoints, vec![backend]);
        assert_eq!(
            m.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            vec![IPERF_PORT, SOCKPERF_PORT, HTTP_PORT]
        );
        assert_eq!(c.service_ports(), 999 + 3);
        let filler = &c.services[0];
        assert_eq!(filler.endpoints.len(), 2);
        assert!(
            filler
                .endpoints
                .iter()
                .all(|e| e.octets()[..3] == [10, 240, 3] && e.octets()[3] >= 100)
        );
    }

    #[test]
    fn cluster_ips_are_unique_and_inside_the_service_cidr() {
        let c = catalogue(
            10_000,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 3, 0),
            1,
        );
        let mut ips: Vec<_> = c.services.iter().map(|s| s.cluster_ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 10_000);
        let cidr: ipnet::Ipv4Net = SERVICE_CIDR.parse().unwrap();
        assert!(ips.iter().all(|ip| cidr.contains(ip)));
    }

    #[test]
    fn one_service_is_the_measured_one_and_zero_means_one() {
        let c = catalogue(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 3, 0), 2);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.measured, 0);
    }

    #[test]
    fn chain_hashes_are_stable_and_distinct() {
        assert_eq!(
            chain_hash("bench/svc-00001:http", 8),
            chain_hash("bench/svc-00001:http", 8)
        );
        assert_ne!(
            chain_hash("bench/svc-00001:http", 8),
            chain_hash("bench/svc-00002:http", 8)
        );
        assert_eq!(chain_hash("x", 16).len(), 16);
        assert!(
            chain_hash("x", 8)
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }
}
