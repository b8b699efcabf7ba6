//! Cluster IPs and node ports: who holds what (the ledger, rebuilt from stored objects) and
//! how a Service gets its addresses (kube-apiserver's allocators: requests honoured when
//! free and in range, dynamic picks from the upper part of the range first so that the
//! lower part stays for static requests). Pure: the caller passes the ledger and a seed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::ServiceSpec;
use serde::Deserialize;

use super::Cause;
use super::spec::{
    NONE, allocates_node_ports, is_headless, needs_cluster_ip, needs_health_check,
    needs_node_ports, set,
};

/// The service network of the cluster: where cluster IPs and node ports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// `--service-cidr` (kube-apiserver's `--service-cluster-ip-range`).
    pub cidr: Ipv4Net,
    /// `--service-node-port-range`, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork {
            cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(),
            node_ports: (30000, 32767),
        }
    }
}

impl ServiceNetwork {
    /// The addresses a Service may hold: the CIDR minus its network and broadcast address.
    fn ip_bounds(&self) -> (u32, u32) {
        let (net, bc) = (
            u32::from(self.cidr.network()),
            u32::from(self.cidr.broadcast()),
        );
        if self.cidr.prefix_len() >= 31 {
            (net, bc)
        } else {
            (net + 1, bc - 1)
        }
    }

    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        let (a, b) = self.ip_bounds();
        (a..=b).contains(&u32::from(ip))
    }

    pub fn contains_port(&self, p: i32) -> bool {
        (i32::from(self.node_ports.0)..=i32::from(self.node_ports.1)).contains(&p)
    }
}

/// What one stored object holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub ips: BTreeSet<Ipv4Addr>,
    pub node_ports: BTreeSet<u16>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty()
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SlimPort {
    node_port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SlimSpec {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    ports: Option<Vec<SlimPort>>,
    health_check_node_port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SlimStatus {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Slim {
    spec: SlimSpec,
    status: SlimStatus,
}

/// The cluster IPs and node ports a stored `v1 Service` holds.
pub fn held_by_service(stored: &[u8]) -> Held {
    let s: Slim = serde_json::from_slice(stored).unwrap_or_default();
    let mut h = Held::default();
    if s.spec.type_.as_deref() == Some("ExternalName") {
        return h;
    }
    let ips = s.spec.cluster_ips.unwrap_or_default();
    for ip in ips.iter().chain(s.spec.cluster_ip.iter()) {
        if let Ok(ip) = ip.parse() {
            h.ips.insert(ip);
        }
    }
    let ports = s.spec.ports.unwrap_or_default();
    for p in ports
        .iter()
        .filter_map(|p| p.node_port)
        .chain(s.spec.health_check_node_port)
    {
        if let Ok(p) = u16::try_from(p)
            && p != 0
        {
            h.node_ports.insert(p);
        }
    }
    h
}

/// What an admitted Service spec holds.
pub fn held_by_spec(spec: &ServiceSpec) -> Held {
    let mut h = Held::default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return h;
    }
    for ip in spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
    {
        if let Ok(ip) = ip.parse() {
            h.ips.insert(ip);
        }
    }
    for p in spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .chain(spec.health_check_node_port)
    {
        if let Ok(p) = u16::try_from(p)
            && p != 0
        {
            h.node_ports.insert(p);
        }
    }
    h
}

/// The cluster IPs a YusurService object holds (see [`held_by_yusur_service`]).
pub fn held_by_yusur_service_value(v: &serde_json::Value) -> Held {
    let mut h = Held::default();
    for ip in [&v["spec"]["clusterIP"], &v["status"]["clusterIP"]] {
        if let Some(Ok(ip)) = ip.as_str().map(str::parse) {
            h.ips.insert(ip);
        }
    }
    h
}

/// The cluster IPs a stored YusurService holds: the one it asks for and the one Ferry's
/// controller gave it (`status.clusterIP`). They come from the same service CIDR.
pub fn held_by_yusur_service(stored: &[u8]) -> Held {
    let s: Slim = serde_json::from_slice(stored).unwrap_or_default();
    let mut h = Held::default();
    for ip in s.spec.cluster_ip.iter().chain(s.status.cluster_ip.iter()) {
        if let Ok(ip) = ip.parse() {
            h.ips.insert(ip);
        }
    }
    h
}

/// `NAMESPACE/NAME` of a store key `/registry/GROUP/PLURAL/NAMESPACE/NAME`: a Service and
/// a YusurService of the same name are one holder (Ferry's controller names the Service
/// it generates for a YusurService after it).
pub fn owner_of(key: &str) -> String {
    let mut parts = key.rsplitn(3, '/');
    let name = parts.next().unwrap_or_default();
    let ns = parts.next().unwrap_or_default();
    format!("{ns}/{name}")
}

/// Who holds which cluster IP and node port, by store key: what stored objects hold, plus
/// what writes in flight reserved (decided, not yet in the store).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    by_key: HashMap<String, Held>,
    ips: HashMap<Ipv4Addr, BTreeSet<String>>,
    node_ports: HashMap<u16, BTreeSet<String>>,
    pub(super) pending: HashMap<u64, (String, Held)>,
    pub(super) next_token: u64,
}

impl Ledger {
    /// Records what `key` holds now (empty: nothing), replacing what it held before.
    pub fn set(&mut self, key: &str, held: Held) {
        if let Some(old) = self.by_key.remove(key) {
            for ip in old.ips {
                if let Some(s) = self.ips.get_mut(&ip) {
                    s.remove(key);
                    if s.is_empty() {
                        self.ips.remove(&ip);
                    }
                }
            }
            for p in old.node_ports {
                if let Some(s) = self.node_ports.get_mut(&p) {
                    s.remove(key);
                    if s.is_empty() {
                        self.node_ports.remove(&p);
                    }
                }
            }
        }
        if held.is_empty() {
            return;
        }
        for ip in &held.ips {
            self.ips.entry(*ip).or_default().insert(key.to_string());
        }
        for p in &held.node_ports {
            self.node_ports
                .entry(*p)
                .or_default()
                .insert(key.to_string());
        }
        self.by_key.insert(key.to_string(), held);
    }

    /// Reserves `held` for a write of `key` in flight; [`Ledger::release`] it once the
    /// write is in the ledger (or failed).
    pub fn reserve(&mut self, key: &str, held: Held) -> u64 {
        self.next_token += 1;
        self.pending
            .insert(self.next_token, (key.to_string(), held));
        self.next_token
    }

    pub fn release(&mut self, token: u64) {
        self.pending.remove(&token);
    }

    /// A store key other than `owner`'s that holds (or reserved) `ip`.
    pub fn ip_holder(&self, ip: Ipv4Addr, owner: &str) -> Option<&str> {
        self.ip_holders(ip).find(|k| owner_of(k) != owner)
    }

    /// A store key other than `owner`'s that holds (or reserved) node port `p`.
    pub fn port_holder(&self, p: u16, owner: &str) -> Option<&str> {
        let stored = self
            .node_ports
            .get(&p)
            .into_iter()
            .flatten()
            .map(String::as_str);
        let pending = self
            .pending
            .values()
            .filter(move |(_, h)| h.node_ports.contains(&p))
            .map(|(k, _)| k.as_str());
        stored.chain(pending).find(|k| owner_of(k) != owner)
    }

    /// The store keys holding (or having reserved) `ip`.
    pub fn ip_holders(&self, ip: Ipv4Addr) -> impl Iterator<Item = &str> {
        let stored = self.ips.get(&ip).into_iter().flatten().map(String::as_str);
        let pending = self
            .pending
            .values()
            .filter(move |(_, h)| h.ips.contains(&ip))
            .map(|(k, _)| k.as_str());
        stored.chain(pending)
    }

    #[cfg(test)]
    pub fn held(&self, key: &str) -> Option<&Held> {
        self.by_key.get(key)
    }

    /// Every (address, holders) pair (tests).
    #[cfg(test)]
    pub fn ips(&self) -> BTreeMap<Ipv4Addr, BTreeSet<String>> {
        self.ips.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    #[cfg(test)]
    pub fn node_ports(&self) -> BTreeMap<u16, BTreeSet<String>> {
        self.node_ports
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// Addresses and ports taken by someone else.
pub trait Taken {
    fn ip(&self, ip: Ipv4Addr) -> bool;
    fn port(&self, p: u16) -> bool;
}

/// The ledger seen by one owner.
pub struct TakenFor<'a> {
    pub ledger: &'a Ledger,
    pub owner: &'a str,
}

impl Taken for TakenFor<'_> {
    fn ip(&self, ip: Ipv4Addr) -> bool {
        self.ledger.ip_holder(ip, self.owner).is_some()
    }
    fn port(&self, p: u16) -> bool {
        self.ledger.port_holder(p, self.owner).is_some()
    }
}

/// kube-apiserver's static band: the first `clamp(size / step, min, max)` values are left
/// for explicit requests while the rest has room.
fn static_band(size: u64, min: u64, max: u64, step: u64) -> u64 {
    if size < min {
        return 0;
    }
    (size / step).clamp(min, max)
}

/// The first free value of `first..=last`, starting at a seeded offset in the dynamic
/// (upper) band, then the static (lower) band.
fn next_free(
    first: u64,
    last: u64,
    band: u64,
    seed: u64,
    taken: impl Fn(u64) -> bool,
) -> Option<u64> {
    if last < first {
        return None;
    }
    let split = (first + band).min(last + 1);
    let scan = |lo: u64, hi: u64| -> Option<u64> {
        if hi <= lo {
            return None;
        }
        let len = hi - lo;
        let start = seed % len;
        (0..len)
            .map(|i| lo + (start + i) % len)
            .find(|v| !taken(*v))
    };
    scan(split, last + 1).or_else(|| scan(first, split))
}

/// A free cluster IP (never the first address, which Kubernetes gives `kubernetes.default`).
pub fn next_ip(
    net: &ServiceNetwork,
    seed: u64,
    taken: impl Fn(Ipv4Addr) -> bool,
) -> Option<Ipv4Addr> {
    let (a, b) = net.ip_bounds();
    let size = u64::from(b) - u64::from(a) + 1;
    let band = static_band(size, 16, 256, 16);
    next_free(
        u64::from(a) + 1,
        u64::from(b),
        band.saturating_sub(1),
        seed,
        |v| taken(Ipv4Addr::from(v as u32)),
    )
    .map(|v| Ipv4Addr::from(v as u32))
}

pub fn next_port(net: &ServiceNetwork, seed: u64, taken: impl Fn(u16) -> bool) -> Option<u16> {
    let (a, b) = (u64::from(net.node_ports.0), u64::from(net.node_ports.1));
    let band = static_band(b.saturating_sub(a) + 1, 16, 128, 32);
    next_free(a, b, band, seed, |v| taken(v as u16)).map(|v| v as u16)
}

fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
    (field.into(), format!("Invalid value: {value}: {why}"))
}

/// Gives `spec` its cluster IP and node ports: requested values are checked (range, held
/// by someone else), missing ones allocated. `old` is the stored spec on update (what it
/// held stays its own). Errors name the field as kube-apiserver does.
pub fn allocate(
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    net: &ServiceNetwork,
    taken: &dyn Taken,
    seed: u64,
) -> Result<(), Vec<Cause>> {
    let mut errs = Vec::new();
    // Cluster IP.
    if needs_cluster_ip(spec) && !is_headless(spec) {
        let asked = set(&spec.cluster_ip).map(String::from);
        let ip = match asked {
            None => {
                match next_ip(net, seed, |ip| taken.ip(ip)) {
                    Some(ip) => Some(ip),
                    None => {
                        errs.push((
                        "spec.clusterIPs".to_string(),
                        format!("Internal error: failed to allocate a serviceIP: range is full ({})", net.cidr),
                    ));
                        None
                    }
                }
            }
            Some(s) => {
                let ip: Option<Ipv4Addr> = s.parse().ok();
                let kept = old
                    .is_some_and(|o| needs_cluster_ip(o) && set(&o.cluster_ip) == Some(s.as_str()));
                let list = format!("[{s:?}]");
                match ip {
                    // Malformed addresses were refused by validation.
                    None => None,
                    Some(ip) if kept => Some(ip),
                    Some(ip) if !net.contains_ip(ip) => {
                        errs.push(invalid(
                            "spec.clusterIPs",
                            &list,
                            &format!(
                                "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                                net.cidr
                            ),
                        ));
                        None
                    }
                    Some(ip) if taken.ip(ip) => {
                        errs.push(invalid(
                            "spec.clusterIPs",
                            &list,
                            &format!(
                                "failed to allocate IP {ip}: provided IP is already allocated"
                            ),
                        ));
                        None
                    }
                    Some(ip) => Some(ip),
                }
            }
        };
        if let Some(ip) = ip {
            spec.cluster_ip = Some(ip.to_string());
            spec.cluster_ips = Some(vec![ip.to_string()]);
        }
    } else if needs_cluster_ip(spec) {
        spec.cluster_ip = Some(NONE.into());
        spec.cluster_ips = Some(vec![NONE.into()]);
    }
    // Node ports: ports of one Service with the same port number share one node port
    // (TCP and UDP 53 are one `nodePort`).
    let before: BTreeSet<u16> = old
        .map(|o| {
            o.ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port)
                .chain(o.health_check_node_port)
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut mine: BTreeSet<u16> = BTreeSet::new();
    let range = format!("{}-{}", net.node_ports.0, net.node_ports.1);
    let check = |p: i32, mine: &BTreeSet<u16>| -> Result<u16, String> {
        if !net.contains_port(p) {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {range}"
            ));
        }
        let p = p as u16;
        if !before.contains(&p) && !mine.contains(&p) && taken.port(p) {
            return Err("provided port is already allocated".into());
        }
        Ok(p)
    };
    if needs_node_ports(spec) {
        let allocate_new = allocates_node_ports(spec);
        let mut by_port: BTreeMap<i32, u16> = BTreeMap::new();
        let n = spec.ports.as_ref().map_or(0, Vec::len);
        // Requests first, so that a dynamic pick never takes a port asked for later.
        for i in 0..n {
            let Some(p) = spec.ports.as_mut().and_then(|v| v.get_mut(i)) else {
                continue;
            };
            let asked = p.node_port.unwrap_or(0);
            if asked == 0 {
                continue;
            }
            match check(asked, &mine) {
                Ok(np) => {
                    mine.insert(np);
                    by_port.entry(p.port).or_insert(np);
                }
                Err(why) => errs.push(invalid(format!("spec.ports[{i}].nodePort"), asked, &why)),
            }
        }
        for i in 0..n {
            let Some(p) = spec.ports.as_mut().and_then(|v| v.get_mut(i)) else {
                continue;
            };
            if p.node_port.unwrap_or(0) != 0 || !allocate_new {
                continue;
            }
            let np = match by_port.get(&p.port) {
                Some(np) => Some(*np),
                None => next_port(net, seed.rotate_left(17) ^ i as u64, |c| {
                    mine.contains(&c) || taken.port(c)
                }),
            };
            match np {
                Some(np) => {
                    mine.insert(np);
                    by_port.entry(p.port).or_insert(np);
                    p.node_port = Some(i32::from(np));
                }
                None => errs.push((
                    format!("spec.ports[{i}].nodePort"),
                    format!(
                        "Internal error: failed to allocate a nodePort: range is full ({range})"
                    ),
                )),
            }
        }
    }
    if needs_health_check(spec) {
        match spec.health_check_node_port.filter(|h| *h != 0) {
            Some(h) => match check(h, &mine) {
                Ok(np) => {
                    mine.insert(np);
                }
                Err(why) => errs.push(invalid("spec.healthCheckNodePort", h, &why)),
            },
            None => match next_port(net, seed.rotate_left(29), |c| {
                mine.contains(&c) || taken.port(c)
            }) {
                Some(np) => {
                    mine.insert(np);
                    spec.health_check_node_port = Some(i32::from(np));
                }
                None => errs.push((
                    "spec.healthCheckNodePort".to_string(),
                    format!(
                        "Internal error: failed to allocate a nodePort: range is full ({range})"
                    ),
                )),
            },
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
