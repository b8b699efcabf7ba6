//! Which names exist in which VPC: [`build_zones`] turns Services, EndpointSlices and
//! YusurServices into one record set per VPC. Pure; no client, socket or clock.
//!
//! Visibility follows reachability ("a name resolves only where the service is reachable"):
//! - an ordinary `v1 Service` lives in the default VPC `ovn-cluster` and is named only there
//!   (default-VPC pods and the nodes, whose resolver socket is the default VPC's);
//! - a YusurService is named in each of its VPCs (`spec.vpc`, default `ovn-cluster`, or every
//!   `spec.vpcs` for `scope: multi-vpc`) and nowhere else, once `status.clusterIP` is set;
//! - the headless `v1 Service` the controller generates for each YusurService (label
//!   `iaas.yusur.io/service`, or owned by a YusurService) is never published itself: its
//!   endpoints sit in the YusurService's VPCs, so treating it as an ordinary headless Service
//!   would leak them into the default VPC;
//! - a YusurService and a user `v1 Service` with the same namespace/name: inside the
//!   YusurService's VPCs the YusurService's records win (the v1 Service's are dropped there);
//!   in the default VPC, when the YusurService is not there, the v1 Service keeps the name;
//! - a `v1 Service` labelled [`GLOBAL_LABEL`] (a federated service's global name, whose
//!   addresses are the EIPs of the members that serve it, kept by the federation's join
//!   agent) is in the *global zone*, named in every VPC, including VPCs that have no other
//!   name; a VPC's own record of the same owner name wins over the global one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ferry_api::{Scope, YusurService};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::wire::{Name, RData, Soa};

/// The label the service controller puts on everything it generates for a YusurService
/// (`ferry_controller::service::SERVICE_LABEL`; repeated here so this crate does not pull
/// the controller and OVSDB crates in).
pub const SERVICE_LABEL: &str = "iaas.yusur.io/service";
/// The label of a federated service's global name (`ferry_federation::global::LABEL_GLOBAL`,
/// repeated here so this crate does not pull the federation in): its addresses are EIPs on
/// the external network, reachable from any VPC, so the name is in every VPC's zone.
pub const GLOBAL_LABEL: &str = "federation.iaas.yusur.io/global";
/// The builder's key of the global zone: not a Kubernetes name, so no VPC is called so.
const GLOBAL_ZONE: &str = "*";
/// The label tying an EndpointSlice to its Service.
pub const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// TTL of every record and of negative answers (CoreDNS's `kubernetes` plugin default):
/// short, because Services come and go and a stale name costs more than a repeated query.
pub const TTL: u32 = 5;

/// The objects the zones are built from, as the API server holds them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub ysvcs: Vec<YusurService>,
}

/// The records of one VPC, by lookup key ([`Name::key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpcZone {
    records: BTreeMap<String, BTreeSet<RData>>,
    /// Names under the cluster domain that hold no records but have descendants that do
    /// (`default.svc.cluster.local`): NODATA rather than NXDOMAIN (RFC 8020).
    ents: BTreeSet<String>,
}

impl VpcZone {
    pub fn records(&self, key: &str) -> Option<&BTreeSet<RData>> {
        self.records.get(key)
    }
    pub fn is_empty_non_terminal(&self, key: &str) -> bool {
        self.ents.contains(key)
    }
    /// Every owner name with records, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }
}

/// Every VPC's records plus the cluster domain's SOA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zones {
    domain: Name,
    domain_key: String,
    soa: Soa,
    /// Each VPC with a name of its own, the global zone's names merged in.
    vpcs: BTreeMap<String, VpcZone>,
    /// The global names alone: what a VPC with no name of its own sees.
    global: VpcZone,
}

impl Zones {
    /// No records at all (what a resolver serves before its first snapshot): every cluster
    /// name is NXDOMAIN.
    pub fn empty(domain: &str) -> Zones {
        build_zones(domain, &Snapshot::default())
    }
    /// The cluster domain, lower-case, no trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain_key
    }
    pub fn domain_name(&self) -> &Name {
        &self.domain
    }
    pub fn soa(&self) -> &Soa {
        &self.soa
    }
    /// The zone of `vpc`; the global names alone for a VPC nothing else is named in.
    pub fn vpc(&self, vpc: &str) -> &VpcZone {
        self.vpcs.get(vpc).unwrap_or(&self.global)
    }
    /// The VPCs that have at least one name.
    pub fn vpcs(&self) -> impl Iterator<Item = &str> {
        self.vpcs.keys().map(String::as_str)
    }
    /// Whether `key` is the cluster domain or below it (Ferry is authoritative there).
    pub fn in_domain(&self, key: &str) -> bool {
        key == self.domain_key
            || (key.len() > self.domain_key.len()
                && key.ends_with(&self.domain_key)
                && key.as_bytes()[key.len() - self.domain_key.len() - 1] == b'.')
    }
}

/// `d.c.b.a.in-addr.arpa` / the nibble form under `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0x0F, b >> 4);
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(a) => RData::A(a),
        IpAddr::V6(a) => RData::Aaaa(a),
    }
}

/// The label for an endpoint without a hostname: its address with `-` for `.`/`:`, as
/// CoreDNS names them.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

struct Builder<'a> {
    domain: &'a str,
    vpcs: BTreeMap<String, VpcZone>,
}

impl Builder<'_> {
    fn add(&mut self, vpc: &str, owner: &str, data: RData) {
        // Owners are built from Kubernetes names (lower-case DNS labels): most are their own
        // key already, and checking that is much cheaper than parsing.
        let key = if is_plain_key(owner) {
            owner.to_string()
        } else {
            match Name::parse(owner) {
                Ok(name) => name.key(),
                Err(_) => return, // longer than DNS allows: not nameable
            }
        };
        let zone = match self.vpcs.get_mut(vpc) {
            Some(z) => z,
            None => self.vpcs.entry(vpc.to_string()).or_default(),
        };
        zone.records.entry(key).or_default().insert(data);
    }

    fn name(&self, target: &str) -> Option<Name> {
        Name::parse(target).ok().filter(|n| n.key() == target)
    }

    /// A (or AAAA), PTR and SRV records for a service with a virtual IP.
    fn virtual_ip(&mut self, vpc: &str, base: &str, ips: &[IpAddr], ports: &[(String, &str, u16)]) {
        let Some(target) = self.name(base) else {
            return;
        };
        for &ip in ips {
            self.add(vpc, base, address(ip));
            self.add(vpc, &reverse_name(ip), RData::Ptr(target.clone()));
        }
        if ips.is_empty() {
            return;
        }
        for (pname, proto, port) in ports {
            self.add(
                vpc,
                &format!("_{pname}._{proto}.{base}"),
                RData::Srv {
                    priority: 0,
                    weight: 100,
                    port: *port,
                    target: target.clone(),
                },
            );
        }
    }
}

/// Whether `s` is a valid name that is its own lookup key: labels of 1-63 bytes of
/// `a-z 0-9 - _`, at most 253 bytes in all.
fn is_plain_key(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

fn proto_label(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_ascii_lowercase()
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn ysvc_vpcs(y: &YusurService) -> Vec<String> {
    match y.spec.scope {
        Scope::Vpc => vec![
            y.spec
                .vpc
                .clone()
                .unwrap_or_else(|| ferry_api::DEFAULT_VPC.to_string()),
        ],
        Scope::MultiVpc => y.spec.vpcs.clone().unwrap_or_default(),
    }
}

/// Whether the service controller generated this Service for a YusurService.
pub fn is_generated(svc: &Service) -> bool {
    let labelled = svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_LABEL));
    let owned = svc
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "YusurService" && o.api_version.starts_with("iaas.yusur.io/"));
    labelled || owned
}

/// The per-VPC zones of `snapshot` under `domain` (e.g. `cluster.local`).
pub fn build_zones(domain: &str, snapshot: &Snapshot) -> Zones {
    let domain_key = Name::parse(domain)
        .map(|n| n.key())
        .unwrap_or_else(|_| "cluster.local".to_string());
    let mut b = Builder {
        domain: &domain_key,
        vpcs: BTreeMap::new(),
    };
    // YusurServices first: which (ns, name) each VPC gives to a YusurService.
    let mut taken: BTreeSet<(String, String, String)> = BTreeSet::new();
    for y in &snapshot.ysvcs {
        let (Some(ns), Some(name)) = (&y.metadata.namespace, &y.metadata.name) else {
            continue;
        };
        let ip = y
            .status
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let vpcs = ysvc_vpcs(y);
        for vpc in &vpcs {
            taken.insert((vpc.clone(), lower(ns), lower(name)));
        }
        let Some(ip) = ip else {
            continue; // no address yet: nothing to name (but the name is still its own)
        };
        let base = format!("{}.{}.svc.{}", lower(name), lower(ns), b.domain);
        let ports: Vec<(String, &str, u16)> = y
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                let name = lower(p.name.as_deref()?);
                let proto = match p.protocol {
                    ferry_api::Protocol::TCP => "tcp",
                    ferry_api::Protocol::UDP => "udp",
                    ferry_api::Protocol::SCTP => "sctp",
                };
                Some((name, proto, u16::try_from(p.port).ok()?))
            })
            .collect();
        for vpc in &vpcs {
            b.virtual_ip(vpc, &base, &[ip], &ports);
        }
    }
    let default_vpc = ferry_api::DEFAULT_VPC;
    // EndpointSlices by (namespace, service), once, rather than a scan per headless Service.
    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in &snapshot.slices {
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SLICE_SERVICE_LABEL));
        if let (Some(ns), Some(service)) = (s.metadata.namespace.as_deref(), service) {
            slices_of.entry((ns, service)).or_default().push(s);
        }
    }
    for svc in &snapshot.services {
        let (Some(ns), Some(name), Some(spec)) =
            (&svc.metadata.namespace, &svc.metadata.name, &svc.spec)
        else {
            continue;
        };
        let global = svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(GLOBAL_LABEL));
        let zone = if global { GLOBAL_ZONE } else { default_vpc };
        if is_generated(svc)
            || (!global && taken.contains(&(default_vpc.to_string(), lower(ns), lower(name))))
        {
            continue;
        }
        let base = format!("{}.{}.svc.{}", lower(name), lower(ns), b.domain);
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .and_then(|t| Name::parse(t).ok())
                .filter(|t| !t.labels().is_empty());
            if let Some(t) = target {
                b.add(zone, &base, RData::Cname(t));
            }
            continue;
        }
        let ports: Vec<(String, String, u16)> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    lower(p.name.as_deref().filter(|n| !n.is_empty())?),
                    proto_label(p.protocol.as_deref()),
                    u16::try_from(p.port).ok()?,
                ))
            })
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let mut ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            ips.sort();
            ips.dedup();
            let ports: Vec<(String, &str, u16)> = ports
                .iter()
                .map(|(n, p, port)| (n.clone(), p.as_str(), *port))
                .collect();
            b.virtual_ip(zone, &base, &ips, &ports);
            continue;
        }
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        let mine = slices_of.get(&(ns.as_str(), name.as_str()));
        headless_records(
            &mut b,
            zone,
            &base,
            mine.map_or(&[][..], Vec::as_slice),
            publish_not_ready,
        );
    }
    let mut vpcs = b.vpcs;
    let mut global = vpcs.remove(GLOBAL_ZONE).unwrap_or_default();
    for zone in vpcs.values_mut() {
        for (key, set) in &global.records {
            zone.records
                .entry(key.clone())
                .or_insert_with(|| set.clone());
        }
    }
    for zone in vpcs.values_mut() {
        finish(zone, &domain_key);
    }
    finish(&mut global, &domain_key);
    let domain_name = Name::parse(&domain_key).unwrap_or_default();
    let soa = Soa {
        mname: Name::parse(&format!("ns.dns.{domain_key}")).unwrap_or_default(),
        rname: Name::parse(&format!("hostmaster.{domain_key}")).unwrap_or_default(),
        serial: serial(&vpcs, &global),
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: TTL,
    };
    Zones {
        domain: domain_name,
        domain_key,
        soa,
        vpcs,
        global,
    }
}

/// A headless Service: the ready endpoints' addresses (all of them with
/// `publishNotReadyAddresses`, as Kubernetes DNS does), a name per endpoint (its hostname
/// or dashed address), their PTRs, and one SRV per endpoint and named port.
fn headless_records(
    b: &mut Builder<'_>,
    vpc: &str,
    base: &str,
    mine: &[&EndpointSlice],
    publish_not_ready: bool,
) {
    for slice in mine {
        let ready: Vec<(IpAddr, String)> = slice
            .endpoints
            .iter()
            .filter(|e| {
                publish_not_ready || e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
            })
            .flat_map(|e| {
                e.addresses.iter().filter_map(move |a| {
                    let ip: IpAddr = a.parse().ok()?;
                    let host = e
                        .hostname
                        .as_deref()
                        .map(lower)
                        .unwrap_or_else(|| dashed(ip));
                    Some((ip, host))
                })
            })
            .collect();
        if ready.is_empty() {
            continue;
        }
        let weight = (100 / ready.len()).max(1) as u16;
        for (ip, host) in &ready {
            let host_name = format!("{host}.{base}");
            b.add(vpc, base, address(*ip));
            b.add(vpc, &host_name, address(*ip));
            let Some(target) = b.name(&host_name) else {
                continue;
            };
            b.add(vpc, &reverse_name(*ip), RData::Ptr(target.clone()));
            for p in slice.ports.iter().flatten() {
                let (Some(pname), Some(port)) = (
                    p.name.as_deref().filter(|n| !n.is_empty()),
                    p.port.and_then(|p| u16::try_from(p).ok()),
                ) else {
                    continue;
                };
                let proto = proto_label(p.protocol.as_deref());
                b.add(
                    vpc,
                    &format!("_{}._{proto}.{base}", lower(pname)),
                    RData::Srv {
                        priority: 0,
                        weight,
                        port,
                        target: target.clone(),
                    },
                );
            }
        }
    }
}

/// Fills in the empty non-terminals under the cluster domain. Each ancestor is a suffix of
/// its descendant's key, so no string is built twice; once an ancestor is known, so are its
/// own ancestors.
fn finish(zone: &mut VpcZone, domain: &str) {
    let mut ents: BTreeSet<String> = BTreeSet::new();
    for key in zone.records.keys() {
        if key.len() <= domain.len() + 1 || !key.ends_with(domain) {
            continue;
        }
        let apex = key.len() - domain.len();
        if key.as_bytes()[apex - 1] != b'.' {
            continue;
        }
        // Walk the dots left to right: key[dot+1..] are the ancestors, longest first.
        for (dot, _) in key[..apex - 1].match_indices('.') {
            let ancestor = &key[dot + 1..];
            if zone.records.contains_key(ancestor) {
                continue;
            }
            if !ents.insert(ancestor.to_string()) {
                break;
            }
        }
    }
    zone.ents = ents;
}

/// A serial that changes whenever the records do (FNV-1a over them), so a secondary or a
/// curious operator can tell two builds apart without a clock.
fn serial(vpcs: &BTreeMap<String, VpcZone>, global: &VpcZone) -> u32 {
    use std::hash::{Hash, Hasher};
    /// FNV-1a: deterministic across runs and builds, unlike std's RandomState.
    struct Fnv(u32);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            u64::from(self.0)
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        }
    }
    let mut h = Fnv(0x811c_9dc5);
    vpcs.iter()
        .for_each(|(vpc, zone)| (vpc, &zone.records).hash(&mut h));
    global.records.hash(&mut h);
    h.0.max(1)
}

#[cfg(test)]
mod tests;
