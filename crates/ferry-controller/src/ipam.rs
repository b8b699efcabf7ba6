//! Address allocation, pure: a pool of IPv4 addresses (a subnet minus its network,
//! broadcast, gateway and excluded addresses, or an explicit range) and the addresses in use.
//! The controller rebuilds the used set from the objects it sees plus what it allocated
//! but has not seen echoed yet, so an address is never handed out twice, across restarts too.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why an address cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{0} is not a valid CIDR")]
    BadCidr(String),
    #[error("{ip} is outside {pool}")]
    OutOfPool { ip: Ipv4Addr, pool: String },
    #[error("{ip} is already in use")]
    InUse { ip: Ipv4Addr },
    #[error("{ip} is reserved (network, broadcast, gateway or excluded)")]
    Reserved { ip: Ipv4Addr },
    #[error("no free address left in {pool}")]
    Exhausted { pool: String },
}

/// A set of allocatable addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: String,
    first: u32,
    last: u32,
    reserved: BTreeSet<u32>,
}

impl Pool {
    /// A subnet: every host address except the gateway and the `exclude` entries
    /// (`a.b.c.d` or `a.b.c.d..e.f.g.h`).
    pub fn subnet(
        cidr: &str,
        gateway: Option<Ipv4Addr>,
        exclude: &[String],
    ) -> Result<Pool, IpamError> {
        let net: Ipv4Net = cidr.parse().map_err(|_| IpamError::BadCidr(cidr.into()))?;
        let (first, last) = if net.prefix_len() >= 31 {
            (u32::from(net.network()), u32::from(net.broadcast()))
        } else {
            (u32::from(net.network()) + 1, u32::from(net.broadcast()) - 1)
        };
        let mut reserved = BTreeSet::new();
        reserved.insert(u32::from(gateway.unwrap_or_else(|| default_gateway(&net))));
        for e in exclude {
            let (a, b) = match e.split_once("..") {
                Some((a, b)) => (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>()),
                None => (e.trim().parse::<Ipv4Addr>(), e.trim().parse::<Ipv4Addr>()),
            };
            if let (Ok(a), Ok(b)) = (a, b) {
                let (a, b) = (u32::from(a).max(first), u32::from(b).min(last));
                if b >= a && b - a < 1 << 20 {
                    reserved.extend(a..=b);
                }
            }
        }
        Ok(Pool {
            name: cidr.to_string(),
            first,
            last,
            reserved,
        })
    }

    /// An explicit inclusive range such as an EIP pool `198.18.0.100-198.18.0.199`.
    pub fn range(first: Ipv4Addr, last: Ipv4Addr) -> Pool {
        Pool {
            name: format!("{first}-{last}"),
            first: u32::from(first),
            last: u32::from(last),
            reserved: BTreeSet::new(),
        }
    }

    /// Parses `a.b.c.d-e.f.g.h`.
    pub fn parse_range(s: &str) -> Option<Pool> {
        let (a, b) = s.split_once('-')?;
        Some(Pool::range(a.trim().parse().ok()?, b.trim().parse().ok()?))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Checks that a requested address may be used.
    pub fn check(&self, ip: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Result<(), IpamError> {
        if !self.contains(ip) {
            return Err(IpamError::OutOfPool {
                ip,
                pool: self.name.clone(),
            });
        }
        if self.reserved.contains(&u32::from(ip)) {
            return Err(IpamError::Reserved { ip });
        }
        if used.contains(&ip) {
            return Err(IpamError::InUse { ip });
        }
        Ok(())
    }

    /// The lowest free address.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        self.allocate_where(|ip| used.contains(ip))
    }

    /// The first address `used` says is free.
    pub fn allocate_where(&self, used: impl Fn(&Ipv4Addr) -> bool) -> Result<Ipv4Addr, IpamError> {
        (self.first..=self.last)
            .filter(|n| !self.reserved.contains(n))
            .map(Ipv4Addr::from)
            .find(|ip| !used(ip))
            .ok_or_else(|| IpamError::Exhausted {
                pool: self.name.clone(),
            })
    }

    /// Addresses that could ever be allocated.
    pub fn capacity(&self) -> u64 {
        u64::from(self.last - self.first + 1)
            - self
                .reserved
                .iter()
                .filter(|n| (self.first..=self.last).contains(*n))
                .count() as u64
    }
}

/// The first host address, Ferry's default gateway of a subnet.
pub fn default_gateway(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// A deterministic, locally administered MAC for an address in a subnet: unique within the
/// subnet (it embeds the address) and different across subnets that reuse a CIDR.
pub fn mac_for(subnet: &str, ip: Ipv4Addr) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in subnet.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    let o = ip.octets();
    // 0x0a: locally administered, unicast. One byte of subnet hash keeps VPCs apart.
    format!(
        "0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (h & 0xff) as u8,
        o[0],
        o[1],
        o[2],
        o[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_skips_network_gateway_broadcast_and_excludes() {
        let p = Pool::subnet("10.0.1.0/29", None, &["10.0.1.2..10.0.1.3".into()]).unwrap();
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Ok(a) = p.allocate(&used) {
            used.insert(a);
            got.push(a);
        }
        assert_eq!(got, [ip("10.0.1.4"), ip("10.0.1.5"), ip("10.0.1.6")]);
        assert_eq!(p.capacity(), 3);
        assert_eq!(
            p.check(ip("10.0.1.1"), &BTreeSet::new()),
            Err(IpamError::Reserved { ip: ip("10.0.1.1") })
        );
        assert!(matches!(
            p.check(ip("10.0.2.9"), &BTreeSet::new()),
            Err(IpamError::OutOfPool { .. })
        ));
        assert_eq!(
            p.allocate(&used),
            Err(IpamError::Exhausted {
                pool: "10.0.1.0/29".into()
            })
        );
    }

    #[test]
    fn ranges_parse() {
        let p = Pool::parse_range("198.18.0.100-198.18.0.199").unwrap();
        assert!(p.contains(ip("198.18.0.150")) && !p.contains(ip("198.18.0.99")));
        assert_eq!(p.allocate(&BTreeSet::new()), Ok(ip("198.18.0.100")));
    }

    #[test]
    fn macs_differ_across_subnets_with_the_same_cidr() {
        assert_ne!(
            mac_for("vpc1-subnet1", ip("10.0.1.10")),
            mac_for("vpc2-subnet1", ip("10.0.1.10"))
        );
        assert_eq!(mac_for("s", ip("10.0.1.10")).len(), 17);
    }

    proptest! {
        /// IPAM never hands out an address twice, nor a reserved one.
        #[test]
        fn never_double_allocates(frees in proptest::collection::vec(any::<bool>(), 1..200)) {
            let p = Pool::subnet("10.9.0.0/24", None, &["10.9.0.10..10.9.0.20".into()]).unwrap();
            let mut used = BTreeSet::new();
            let mut order = Vec::new();
            for free in frees {
                if free && !order.is_empty() {
                    let a = order.remove(0);
                    used.remove(&a);
                } else if let Ok(a) = p.allocate(&used) {
                    prop_assert!(!used.contains(&a));
                    prop_assert!(p.check(a, &BTreeSet::new()).is_ok());
                    used.insert(a);
                    order.push(a);
                }
            }
        }
    }
}
