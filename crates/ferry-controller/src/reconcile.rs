//! One reconcile pass, level-triggered: allocate what lacks an address, then converge every
//! service's generated objects and status with what the caches hold. Writes happen only
//! where something differs, so a pass over an unchanged cluster writes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ferry_api::{
    Condition, NetworkProbe, ProbePhase, ServiceType, YusurService, YusurServiceStatus,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Event, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::index::Index;
use crate::ipam::{self, Pool};
use crate::service::{self, Backend};
use crate::world::{self, Caches, SubnetInfo};

/// Addresses the controller hands out for services.
#[derive(Debug, Clone)]
pub struct ServicePools {
    pub cluster_ips: Pool,
    pub eips: Option<Pool>,
}

/// Memory of allocations written but not yet seen in the caches, so a lagging cache never
/// leads to an address being handed out twice.
#[derive(Debug, Default)]
pub struct Pending {
    /// subnet -> object key -> address
    workload: HashMap<String, HashMap<String, Ipv4Addr>>,
    cluster_ips: HashMap<String, Ipv4Addr>,
    eips: HashMap<String, Ipv4Addr>,
}

/// What one pass decided about a service, for the network controller and for status.
#[derive(Debug, Clone)]
pub struct ServiceOutcome {
    pub key: String,
    pub service: Arc<YusurService>,
    pub cluster_ip: Option<Ipv4Addr>,
    pub eip: Option<Ipv4Addr>,
    pub ready: Vec<Backend>,
    pub total: usize,
    /// `(reason, message)` when the service cannot be served.
    pub problem: Option<(String, String)>,
    /// The objects to write for it, and the probes it has now.
    pub objects: service::ServiceObjects,
    pub existing_probes: Vec<Arc<NetworkProbe>>,
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default()
    )
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some("ferry-controller".into()),
        ..Default::default()
    }
}

/// Creates `desired` or replaces the cached copy when `differs` says so.
async fn converge<K>(
    api: Api<K>,
    current: Option<Arc<K>>,
    mut desired: K,
    differs: impl Fn(&K, &K) -> bool,
) -> kube::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    match current {
        None => match api.create(&pp(), &desired).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Some(cur) if differs(&cur, &desired) => {
            desired.meta_mut().resource_version = cur.meta().resource_version.clone();
            desired.meta_mut().uid = cur.meta().uid.clone();
            let name = desired.meta().name.clone().unwrap_or_default();
            match api.replace(&name, &pp(), &desired).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(_) => Ok(()),
    }
}

// === IPAM ===

/// Gives every pod, BareMetal, VNicIP and node that lacks one an address (and MAC) in its
/// subnet, one object at a time so two never get the same address.
pub async fn allocate_workloads(client: &Client, c: &Caches, pending: &mut Pending) {
    let subnets = world::subnets(c);
    let namespaces: BTreeMap<String, _> = c
        .namespaces
        .state()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    // Used addresses per subnet, from what the caches show plus what we wrote.
    let mut used: HashMap<String, BTreeSet<Ipv4Addr>> = HashMap::new();
    let mut seen_keys: HashMap<String, BTreeSet<String>> = HashMap::new();
    let pods = c.pods.state();
    for pod in &pods {
        let ns = pod.namespace().unwrap_or_default();
        if let (Some(s), Some(ip)) = (
            world::pod_subnet(pod, namespaces.get(&ns).map(|n| n.as_ref()), &subnets),
            pod.annotations()
                .get(ferry_api::ANNOTATION_IP)
                .and_then(|i| i.parse().ok()),
        ) {
            used.entry(s.name.clone()).or_default().insert(ip);
            seen_keys
                .entry(s.name.clone())
                .or_default()
                .insert(format!("pod/{}", key_of(pod.as_ref())));
        }
    }
    for bm in c.baremetals.state() {
        if let Some(ip) = bm
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .and_then(|i| i.parse().ok())
        {
            used.entry(bm.spec.subnet.clone()).or_default().insert(ip);
            seen_keys
                .entry(bm.spec.subnet.clone())
                .or_default()
                .insert(format!("bm/{}", key_of(bm.as_ref())));
        }
    }
    for v in c.vnicips.state() {
        if let Some(ip) = v
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .and_then(|i| i.parse().ok())
        {
            used.entry(v.spec.subnet.clone()).or_default().insert(ip);
            seen_keys
                .entry(v.spec.subnet.clone())
                .or_default()
                .insert(format!("vnic/{}", key_of(v.as_ref())));
        }
    }
    for n in c.nodes.state() {
        for (vpc, port) in probe_ports(&n) {
            if let Ok(ip) = port.ip.parse() {
                used.entry(port.subnet.clone()).or_default().insert(ip);
                seen_keys
                    .entry(port.subnet.clone())
                    .or_default()
                    .insert(format!("probe/{}/{vpc}", n.name_any()));
            }
        }
    }
    let join = subnets.get("subnet0").cloned();
    for n in c.nodes.state() {
        if let (Some(j), Some(ip)) = (
            &join,
            n.annotations()
                .get(ferry_api::ANNOTATION_IP)
                .and_then(|i| i.parse().ok()),
        ) {
            used.entry(j.name.clone()).or_default().insert(ip);
            seen_keys
                .entry(j.name.clone())
                .or_default()
                .insert(format!("node/{}", n.name_any()));
        }
    }
    // Forget pending allocations once the cache shows them.
    for (subnet, map) in pending.workload.iter_mut() {
        let seen = seen_keys.get(subnet);
        map.retain(|k, _| !seen.is_some_and(|s| s.contains(k)));
        used.entry(subnet.clone())
            .or_default()
            .extend(map.values().copied());
    }

    let alloc = |subnet: &SubnetInfo,
                 key: String,
                 preset: Option<Ipv4Addr>,
                 used: &mut HashMap<String, BTreeSet<Ipv4Addr>>,
                 pending: &mut Pending|
     -> Result<(Ipv4Addr, String), String> {
        let pool = Pool::subnet(&subnet.cidr, subnet.gateway, &subnet.exclude)
            .map_err(|e| e.to_string())?;
        let set = used.entry(subnet.name.clone()).or_default();
        let ip = match preset {
            Some(ip) => {
                if !pool.contains(ip) {
                    return Err(format!(
                        "{ip} is outside subnet {} ({})",
                        subnet.name, subnet.cidr
                    ));
                }
                ip
            }
            None => pool.allocate(set).map_err(|e| e.to_string())?,
        };
        set.insert(ip);
        pending
            .workload
            .entry(subnet.name.clone())
            .or_default()
            .insert(key, ip);
        Ok((ip, ipam::mac_for(&subnet.name, ip)))
    };

    for pod in pods {
        if !world::on_pod_network(&pod) {
            continue;
        }
        let ann = pod.annotations();
        if ann.contains_key(ferry_api::ANNOTATION_MAC) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let Some(subnet) =
            world::pod_subnet(&pod, namespaces.get(&ns).map(|n| n.as_ref()), &subnets)
        else {
            continue;
        };
        let key = format!("pod/{}", key_of(pod.as_ref()));
        if pending
            .workload
            .get(&subnet.name)
            .is_some_and(|m| m.contains_key(&key))
        {
            continue;
        }
        let preset = ann
            .get(ferry_api::ANNOTATION_IP)
            .and_then(|i| i.parse().ok());
        match alloc(subnet, key, preset, &mut used, pending) {
            Ok((ip, mac)) => {
                let patch = json!({"metadata": {"annotations": {
                    ferry_api::ANNOTATION_IP: ip.to_string(), ferry_api::ANNOTATION_MAC: mac,
                    ferry_api::ANNOTATION_SUBNET: subnet.name, "iaas.yusur.io/vpc": subnet.vpc,
                    "iaas.yusur.io/gateway": subnet.gateway.map(|g| g.to_string()).unwrap_or_else(|| default_gw(&subnet.cidr)),
                    "iaas.yusur.io/cidr": subnet.cidr}}});
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if let Err(e) = api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(pod = %key_of(pod.as_ref()), error = %e, "writing the pod's address failed");
                }
            }
            Err(msg) => {
                tracing::warn!(pod = %key_of(pod.as_ref()), reason = %msg, "cannot allocate an address")
            }
        }
    }
    for vmi in c.vmis.iter().flat_map(|s| s.state()) {
        let ann = vmi.annotations();
        if vmi.metadata.deletion_timestamp.is_some() || ann.contains_key(ferry_api::ANNOTATION_MAC)
        {
            continue;
        }
        let ns = vmi.namespace().unwrap_or_default();
        let Some(subnet) =
            world::vmi_subnet(&vmi, namespaces.get(&ns).map(|n| n.as_ref()), &subnets)
        else {
            continue;
        };
        let key = format!("vmi/{}", key_of(vmi.as_ref()));
        if pending
            .workload
            .get(&subnet.name)
            .is_some_and(|m| m.contains_key(&key))
        {
            continue;
        }
        let preset = ann
            .get(ferry_api::ANNOTATION_IP)
            .and_then(|i| i.parse().ok());
        if let Ok((ip, mac)) = alloc(subnet, key, preset, &mut used, pending) {
            let patch = json!({"metadata": {"annotations": {
                ferry_api::ANNOTATION_IP: ip.to_string(), ferry_api::ANNOTATION_MAC: mac,
                ferry_api::ANNOTATION_SUBNET: subnet.name, "iaas.yusur.io/vpc": subnet.vpc,
                "iaas.yusur.io/gateway": subnet.gateway.map(|g| g.to_string()).unwrap_or_else(|| default_gw(&subnet.cidr)),
                "iaas.yusur.io/cidr": subnet.cidr}}});
            let api: Api<ferry_api::VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);
            if let Err(e) = api
                .patch(
                    &vmi.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(vmi = %key_of(vmi.as_ref()), error = %e, "writing the VMI's address failed");
            }
        }
    }
    // BareMetal and VNicIP hosts take their address in status, the same way.
    let hosts = c
        .baremetals
        .state()
        .iter()
        .filter(|h| h.status.as_ref().is_none_or(|s| s.mac_address.is_none()))
        .map(|h| {
            (
                HostKind::BareMetal,
                h.metadata.clone(),
                h.spec.subnet.clone(),
                h.spec.ip_address.clone(),
                h.spec.mac_address.clone(),
            )
        })
        .chain(
            c.vnicips
                .state()
                .iter()
                .filter(|h| h.status.as_ref().is_none_or(|s| s.mac_address.is_none()))
                .map(|h| {
                    (
                        HostKind::VNicIP,
                        h.metadata.clone(),
                        h.spec.subnet.clone(),
                        h.spec.ip_address.clone(),
                        h.spec.mac_address.clone(),
                    )
                }),
        )
        .collect::<Vec<_>>();
    for (kind, meta, subnet, preset_ip, preset_mac) in hosts {
        let Some(subnet) = subnets.get(&subnet) else {
            continue;
        };
        let (ns, name) = (
            meta.namespace.unwrap_or_default(),
            meta.name.unwrap_or_default(),
        );
        let key = format!("{}/{ns}/{name}", kind.key_prefix());
        if pending
            .workload
            .get(&subnet.name)
            .is_some_and(|m| m.contains_key(&key))
        {
            continue;
        }
        let preset = preset_ip.as_deref().and_then(|i| i.parse().ok());
        if let Ok((ip, mac)) = alloc(subnet, key, preset, &mut used, pending) {
            let status = json!({"status": {"ipAddress": ip.to_string(), "macAddress": preset_mac.unwrap_or(mac)}});
            let (pp, patch) = (PatchParams::default(), Patch::Merge(&status));
            let written = match kind {
                HostKind::BareMetal => Api::<ferry_api::BareMetal>::namespaced(client.clone(), &ns)
                    .patch_status(&name, &pp, &patch)
                    .await
                    .map(|_| ()),
                HostKind::VNicIP => Api::<ferry_api::VNicIP>::namespaced(client.clone(), &ns)
                    .patch_status(&name, &pp, &patch)
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = written {
                tracing::warn!(host = %format!("{ns}/{name}"), error = %e, "writing the host's address failed");
            }
        }
    }
    if let Some(j) = &join {
        for n in c.nodes.state() {
            if n.annotations().contains_key(ferry_api::ANNOTATION_MAC) {
                continue;
            }
            let key = format!("node/{}", n.name_any());
            if pending
                .workload
                .get(&j.name)
                .is_some_and(|m| m.contains_key(&key))
            {
                continue;
            }
            if let Ok((ip, mac)) = alloc(j, key, None, &mut used, pending) {
                let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
                let patch = json!({"metadata": {"annotations": {ferry_api::ANNOTATION_IP: ip.to_string(), ferry_api::ANNOTATION_MAC: mac,
                    "iaas.yusur.io/gateway": j.gateway.map(|g| g.to_string()).unwrap_or_else(|| default_gw(&j.cidr)), "iaas.yusur.io/cidr": j.cidr}}});
                let _ = api
                    .patch(
                        &n.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
    }
}

/// One probe port of a node in a VPC: the address the agent probes that VPC's backends from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbePort {
    pub subnet: String,
    pub ip: String,
    pub mac: String,
    pub gateway: String,
    pub cidr: String,
}

/// Annotation on a Node: VPC -> its probe port (JSON).
pub const PROBE_PORTS_ANNOTATION: &str = "iaas.yusur.io/probe-ports";

pub fn probe_ports(n: &k8s_openapi::api::core::v1::Node) -> BTreeMap<String, ProbePort> {
    n.annotations()
        .get(PROBE_PORTS_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// Gives every node a probe port in every VPC that has a subnet, so its agent can probe
/// backends from inside each VPC (overlapping CIDRs are probed in the right one).
pub async fn allocate_probe_ports(client: &Client, c: &Caches, pending: &mut Pending) {
    let subnets = world::subnets(c);
    let mut first_subnet: BTreeMap<String, SubnetInfo> = BTreeMap::new();
    for s in subnets.values().filter(|s| s.name != "subnet0") {
        first_subnet
            .entry(s.vpc.clone())
            .or_insert_with(|| s.clone());
    }
    let mut used: HashMap<String, BTreeSet<Ipv4Addr>> = HashMap::new();
    for pod in c.pods.state() {
        if let (Some(sn), Some(ip)) = (
            pod.annotations().get(ferry_api::ANNOTATION_SUBNET),
            pod.annotations()
                .get(ferry_api::ANNOTATION_IP)
                .and_then(|i| i.parse().ok()),
        ) {
            used.entry(sn.clone()).or_default().insert(ip);
        }
    }
    for vmi in c.vmis.iter().flat_map(|s| s.state()) {
        if let (Some(sn), Some(ip)) = (
            vmi.annotations().get(ferry_api::ANNOTATION_SUBNET),
            vmi.annotations()
                .get(ferry_api::ANNOTATION_IP)
                .and_then(|i| i.parse().ok()),
        ) {
            used.entry(sn.clone()).or_default().insert(ip);
        }
    }
    for bm in c.baremetals.state() {
        if let Some(ip) = bm
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .and_then(|i| i.parse().ok())
        {
            used.entry(bm.spec.subnet.clone()).or_default().insert(ip);
        }
    }
    for v in c.vnicips.state() {
        if let Some(ip) = v
            .status
            .as_ref()
            .and_then(|s| s.ip_address.as_ref())
            .and_then(|i| i.parse().ok())
        {
            used.entry(v.spec.subnet.clone()).or_default().insert(ip);
        }
    }
    for n in c.nodes.state() {
        for port in probe_ports(&n).values() {
            if let Ok(ip) = port.ip.parse() {
                used.entry(port.subnet.clone()).or_default().insert(ip);
            }
        }
    }
    for (subnet, map) in &pending.workload {
        used.entry(subnet.clone())
            .or_default()
            .extend(map.values().copied());
    }
    for n in c.nodes.state() {
        let mut ports = probe_ports(&n);
        let mut changed = false;
        for (vpc, s) in &first_subnet {
            if ports.contains_key(vpc) {
                continue;
            }
            let key = format!("probe/{}/{vpc}", n.name_any());
            if pending
                .workload
                .get(&s.name)
                .is_some_and(|m| m.contains_key(&key))
            {
                continue;
            }
            let Ok(pool) = Pool::subnet(&s.cidr, s.gateway, &s.exclude) else {
                continue;
            };
            let set = used.entry(s.name.clone()).or_default();
            let Ok(ip) = pool.allocate(set) else { continue };
            set.insert(ip);
            pending
                .workload
                .entry(s.name.clone())
                .or_default()
                .insert(key, ip);
            ports.insert(
                vpc.clone(),
                ProbePort {
                    subnet: s.name.clone(),
                    ip: ip.to_string(),
                    mac: ipam::mac_for(&s.name, ip),
                    gateway: s
                        .gateway
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| default_gw(&s.cidr)),
                    cidr: s.cidr.clone(),
                },
            );
            changed = true;
        }
        if changed {
            let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
            let value = serde_json::to_string(&ports).unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {PROBE_PORTS_ANNOTATION: value}}});
            if let Err(e) = api
                .patch(
                    &n.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(node = %n.name_any(), error = %e, "writing probe ports failed");
            }
        }
    }
}

/// Backends that are not pods and carry their address in status.
#[derive(Debug, Clone, Copy)]
enum HostKind {
    BareMetal,
    VNicIP,
}

impl HostKind {
    /// The prefix of its key in [`Pending`] (matching the keys of the used-address scan).
    fn key_prefix(self) -> &'static str {
        match self {
            HostKind::BareMetal => "bm",
            HostKind::VNicIP => "vnic",
        }
    }
}

fn default_gw(cidr: &str) -> String {
    cidr.parse::<ipnet::Ipv4Net>()
        .map(|n| ipam::default_gateway(&n).to_string())
        .unwrap_or_default()
}

// === services ===

/// A service's (ClusterIP, EIP), or the (reason, message) it cannot have them.
type AddressOutcome = Result<(Ipv4Addr, Option<Ipv4Addr>), (String, String)>;

/// Which service holds each ClusterIP and EIP, kept across passes so that a pass over a
/// few services need not read every other one.
#[derive(Debug, Default)]
pub struct Claims {
    vips: BTreeMap<Ipv4Addr, String>,
    eips: BTreeMap<Ipv4Addr, String>,
}

impl Claims {
    /// Forgets what `keys` hold (they are about to be decided again).
    pub fn release(&mut self, keys: &BTreeSet<String>) {
        self.vips.retain(|_, k| !keys.contains(k));
        self.eips.retain(|_, k| !keys.contains(k));
    }
}

/// Allocates (or confirms) the ClusterIP and EIP of `services`, given what the others
/// hold in `claims` (which then holds theirs too).
fn service_addresses(
    services: &[Arc<YusurService>],
    pools: &ServicePools,
    eips: &BTreeMap<String, Ipv4Addr>,
    pending: &mut Pending,
    claims: &mut Claims,
) -> BTreeMap<String, AddressOutcome> {
    let Claims {
        vips: used_vip,
        eips: used_eip,
    } = claims;
    let current = |s: &YusurService| {
        s.status
            .as_ref()
            .and_then(|st| st.cluster_ip.as_deref())
            .and_then(|i| i.parse().ok())
    };
    // Services that already hold an address keep it: claim those first, oldest first.
    let mut order: Vec<&Arc<YusurService>> = services.iter().collect();
    order.sort_by_cached_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            key_of(s.as_ref()),
        )
    });
    for s in &order {
        let k = key_of(s.as_ref());
        let want: Option<Ipv4Addr> = s
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|i| i.parse().ok())
            .or_else(|| current(s))
            .or_else(|| pending.cluster_ips.get(&k).copied());
        if let Some(ip) = want {
            used_vip.entry(ip).or_insert(k.clone());
        }
        let e = s
            .status
            .as_ref()
            .and_then(|st| st.eip.as_deref())
            .and_then(|i| i.parse().ok())
            .or_else(|| pending.eips.get(&k).copied());
        if let Some(ip) = e {
            used_eip.entry(ip).or_insert(k);
        }
    }
    let mut out = BTreeMap::new();
    for s in order {
        let k = key_of(s.as_ref());
        let want: Option<Ipv4Addr> = s
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|i| i.parse().ok())
            .or_else(|| current(s))
            .or_else(|| pending.cluster_ips.get(&k).copied());
        let vip = match want {
            Some(ip) if used_vip.get(&ip) != Some(&k) => {
                out.insert(
                    k.clone(),
                    Err((
                        "ClusterIPConflict".into(),
                        format!("clusterIP {ip} is already used by {}", used_vip[&ip]),
                    )),
                );
                continue;
            }
            Some(ip) if !pools.cluster_ips.contains(ip) => {
                out.insert(
                    k.clone(),
                    Err((
                        "ClusterIPOutOfRange".into(),
                        format!("clusterIP {ip} is outside the service CIDR"),
                    )),
                );
                continue;
            }
            Some(ip) => ip,
            None => {
                match pools
                    .cluster_ips
                    .allocate_where(|ip| used_vip.contains_key(ip))
                {
                    Ok(ip) => {
                        used_vip.insert(ip, k.clone());
                        pending.cluster_ips.insert(k.clone(), ip);
                        ip
                    }
                    Err(e) => {
                        out.insert(k.clone(), Err(("ClusterIPExhausted".into(), e.to_string())));
                        continue;
                    }
                }
            }
        };
        if s.spec.type_ != ServiceType::LoadBalancer {
            out.insert(k, Ok((vip, None)));
            continue;
        }
        let Some(pool) = &pools.eips else {
            out.insert(
                k,
                Err((
                    "NoEipPool".into(),
                    "this controller has no EIP pool (--eip-pool)".into(),
                )),
            );
            continue;
        };
        let requested: Option<Result<Ipv4Addr, String>> =
            s.spec.eip.as_ref().map(|e| match e.parse::<Ipv4Addr>() {
                Ok(ip) => Ok(ip),
                Err(_) => eips
                    .get(e)
                    .copied()
                    .ok_or_else(|| format!("Eip {e:?} does not exist or has no address")),
            });
        let held = s
            .status
            .as_ref()
            .and_then(|st| st.eip.as_deref())
            .and_then(|i| i.parse().ok())
            .or_else(|| pending.eips.get(&k).copied());
        let eip = match requested {
            Some(Err(msg)) => {
                out.insert(k, Err(("EipNotFound".into(), msg)));
                continue;
            }
            Some(Ok(ip)) if !pool.contains(ip) => {
                out.insert(
                    k,
                    Err((
                        "EipOutOfPool".into(),
                        format!("EIP {ip} is outside the pool"),
                    )),
                );
                continue;
            }
            Some(Ok(ip)) if used_eip.get(&ip).is_some_and(|o| o != &k) => {
                out.insert(
                    k,
                    Err((
                        "EipConflict".into(),
                        format!("EIP {ip} is already used by {}", used_eip[&ip]),
                    )),
                );
                continue;
            }
            Some(Ok(ip)) => ip,
            None => match held {
                Some(ip) => ip,
                None => match pool.allocate_where(|ip| used_eip.contains_key(ip)) {
                    Ok(ip) => {
                        used_eip.insert(ip, k.clone());
                        pending.eips.insert(k.clone(), ip);
                        ip
                    }
                    Err(e) => {
                        out.insert(k, Err(("EipExhausted".into(), e.to_string())));
                        continue;
                    }
                },
            },
        };
        used_eip.insert(eip, k.clone());
        out.insert(k, Ok((vip, Some(eip))));
    }
    out
}

fn service_differs(cur: &Service, want: &Service) -> bool {
    cur.spec.as_ref().map(|s| (&s.ports, &s.cluster_ip))
        != want.spec.as_ref().map(|s| (&s.ports, &s.cluster_ip))
        || cur.metadata.annotations != want.metadata.annotations
        || cur.metadata.labels != want.metadata.labels
}

/// Plans every service, or only those in `only`; returns what each one resolved to.
pub fn plan_services(
    c: &Caches,
    pools: &ServicePools,
    pending: &mut Pending,
    known_vpcs: &BTreeSet<String>,
    index: &mut Index,
    only: Option<&BTreeSet<String>>,
) -> Vec<ServiceOutcome> {
    let eips: BTreeMap<String, Ipv4Addr> = c
        .eips
        .state()
        .iter()
        .filter_map(|e| {
            Some((
                e.name_any(),
                e.status
                    .as_ref()
                    .and_then(|s| s.address.as_deref())
                    .or(e.spec.address.as_deref())?
                    .parse()
                    .ok()?,
            ))
        })
        .collect();
    let services: Vec<Arc<YusurService>> = match only {
        None => {
            index.claims = Claims::default();
            c.services.state()
        }
        Some(keys) => {
            index.claims.release(keys);
            keys.iter()
                .filter_map(|k| {
                    let (ns, name) = k.split_once('/')?;
                    cached(&c.services, ns, name)
                })
                .collect()
        }
    };
    let addresses = service_addresses(&services, pools, &eips, pending, &mut index.claims);
    let mut outcomes = Vec::new();
    for svc in services {
        let key = key_of(svc.as_ref());
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let vpcs = service::service_vpcs(&svc);
        let missing: Vec<&String> = vpcs.iter().filter(|v| !known_vpcs.contains(*v)).collect();
        let mut problem = None;
        if !missing.is_empty() {
            problem = Some((
                "VpcNotFound".to_string(),
                format!(
                    "VPC {} does not exist",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let (cluster_ip, eip) = match addresses.get(&key) {
            Some(Ok((v, e))) => (Some(*v), *e),
            Some(Err(p)) => {
                problem.get_or_insert(p.clone());
                (None, None)
            }
            None => (None, None),
        };
        let candidates: Vec<Backend> = match svc.spec.selector.iter().next() {
            Some((k, v)) => index.candidates(&ns, k, v),
            None => Vec::new(),
        };
        let selected = service::select_backends(&svc, &candidates);
        let local_phases: BTreeMap<String, ProbePhase> = selected
            .iter()
            .map(|b| {
                let pn = service::probe_name(&name, b);
                let phase = cached(&c.probes, &ns, &pn)
                    .and_then(|p| p.status.as_ref().map(|s| s.phase))
                    .unwrap_or_default();
                (pn, phase)
            })
            .collect();
        let objs = service::build(&svc, &selected, &local_phases, cluster_ip, eip);
        if problem.is_none() && selected.is_empty() {
            problem = Some((
                "NoBackends".into(),
                if svc.spec.selector.is_empty() {
                    "the selector is empty".into()
                } else {
                    "the selector matches no backend in the service's VPC(s)".into()
                },
            ));
        }
        let existing_probes = index
            .probes_of(&key)
            .filter_map(|n| cached(&c.probes, &ns, n))
            .collect();
        outcomes.push(ServiceOutcome {
            key,
            service: svc,
            cluster_ip,
            eip,
            ready: objs.ready.clone(),
            total: objs.total,
            problem,
            existing_probes,
            objects: objs,
        });
    }
    outcomes
}

/// Writes every service's generated objects, a few services at a time.
pub async fn write_service_objects(client: &Client, c: &Caches, outcomes: &[ServiceOutcome]) {
    use futures::StreamExt;
    futures::stream::iter(outcomes)
        .for_each_concurrent(16, |o| async move {
            let ns = o.service.namespace().unwrap_or_default();
            if let Err(e) = write_objects(client, c, &ns, &o.objects, &o.existing_probes).await {
                tracing::warn!(service = %o.key, error = %e, "writing generated objects failed");
            }
        })
        .await;
}

/// Probes of backends on a node whose agent stopped renewing its Lease go Unknown (so
/// the backends leave the load balancers, as Kubernetes takes a lost node's endpoints out
/// of service); probes of backends naming no node have already moved to a live agent.
pub async fn mark_orphaned_probes(client: &Client, c: &Caches, outcomes: &[ServiceOutcome]) {
    let lapsed = world::lapsed_agents(c);
    if lapsed.is_empty() {
        return;
    }
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    for o in outcomes {
        for p in &o.objects.probes {
            let Some(node) = p.spec.node_name.as_ref().filter(|n| lapsed.contains(*n)) else {
                continue;
            };
            let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
            let Some(cur) = cached(&c.probes, &ns, &name) else {
                continue;
            };
            if cur
                .status
                .as_ref()
                .is_none_or(|s| s.phase == ProbePhase::Unknown)
            {
                continue;
            }
            let status = json!({"status": {"phase": "Unknown", "lastTransitionTime": now,
                "message": format!("the agent of node {node} stopped renewing its Lease")}});
            let api: Api<NetworkProbe> = Api::namespaced(client.clone(), &ns);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::warn!(probe = %format!("{ns}/{name}"), error = %e, "marking a probe Unknown failed");
            }
        }
    }
}

fn cached<K>(store: &kube::runtime::reflector::Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
}

async fn write_objects(
    client: &Client,
    c: &Caches,
    ns: &str,
    objs: &service::ServiceObjects,
    existing_probes: &[Arc<NetworkProbe>],
) -> kube::Result<()> {
    let name = objs.service.metadata.name.clone().unwrap_or_default();
    converge(
        Api::<Service>::namespaced(client.clone(), ns),
        cached(&c.k8s_services, ns, &name),
        objs.service.clone(),
        service_differs,
    )
    .await?;
    converge(
        Api::<Endpoints>::namespaced(client.clone(), ns),
        cached(&c.endpoints, ns, &name),
        objs.endpoints.clone(),
        |a, b| a.subsets != b.subsets || a.metadata.labels != b.metadata.labels,
    )
    .await?;
    let slice_name = objs.slice.metadata.name.clone().unwrap_or_default();
    converge(
        Api::<EndpointSlice>::namespaced(client.clone(), ns),
        cached(&c.slices, ns, &slice_name),
        objs.slice.clone(),
        |a, b| a.endpoints != b.endpoints || a.ports != b.ports,
    )
    .await?;
    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), ns);
    let want: BTreeSet<String> = objs
        .probes
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for p in &objs.probes {
        let pname = p.metadata.name.clone().unwrap_or_default();
        let cur = existing_probes
            .iter()
            .find(|e| e.metadata.name.as_deref() == Some(pname.as_str()))
            .cloned();
        converge(probes.clone(), cur, p.clone(), |a, b| a.spec != b.spec).await?;
    }
    for stale in existing_probes
        .iter()
        .filter(|p| !want.contains(&p.name_any()))
    {
        match probes
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// === status ===

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The status a service should show; `programmed` is `None` when no network controller runs.
pub fn desired_status(
    o: &ServiceOutcome,
    programmed: Option<Result<(), String>>,
) -> YusurServiceStatus {
    let svc = &o.service;
    let previous = svc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = svc.metadata.generation;
    let ready = o.ready.len() as i32;
    let mut conditions = Vec::new();
    match &o.problem {
        Some((reason, msg)) if reason != "NoBackends" => conditions.push(condition(
            "Ready", false, reason, msg, generation, &previous,
        )),
        Some((reason, msg)) => conditions.push(condition(
            "Ready", false, reason, msg, generation, &previous,
        )),
        None if ready == 0 => conditions.push(condition(
            "Ready",
            false,
            "NoReadyEndpoints",
            &format!("0 of {} backends are healthy", o.total),
            generation,
            &previous,
        )),
        None => conditions.push(condition(
            "Ready",
            true,
            "EndpointsReady",
            &format!("{ready} of {} backends are healthy", o.total),
            generation,
            &previous,
        )),
    }
    match programmed {
        Some(Ok(())) => conditions.push(condition(
            "Programmed",
            true,
            "Programmed",
            "load balancers are in the OVN Northbound database",
            generation,
            &previous,
        )),
        Some(Err(msg)) => conditions.push(condition(
            "Programmed",
            false,
            "ProgrammingFailed",
            &msg,
            generation,
            &previous,
        )),
        None => {}
    }
    YusurServiceStatus {
        cluster_ip: o.cluster_ip.map(|i| i.to_string()),
        eip: o.eip.map(|i| i.to_string()),
        ready_endpoints: ready,
        total_endpoints: o.total as i32,
        ready: Some(format!("{ready}/{}", o.total)),
        observed_generation: generation,
        conditions,
    }
}

/// Writes `status` unless `before` (the newest status known: the last one this controller
/// wrote, else the cached one) already says it, and an Event for each condition that
/// changed. Transition times of unchanged conditions are kept from `before`. Returns what
/// the service's status now is.
pub async fn write_status(
    client: &Client,
    o: &ServiceOutcome,
    mut status: YusurServiceStatus,
    before: &YusurServiceStatus,
) -> Option<YusurServiceStatus> {
    for c in &mut status.conditions {
        if let Some(b) = before
            .conditions
            .iter()
            .find(|b| b.type_ == c.type_ && b.status == c.status)
        {
            c.last_transition_time = b.last_transition_time.clone();
        }
    }
    if *before == status {
        return Some(status);
    }
    let svc = &o.service;
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<YusurService> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api
        .patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        tracing::warn!(service = %o.key, error = %e, "writing status failed");
        return None;
    }
    for c in &status.conditions {
        let was = before.conditions.iter().find(|p| p.type_ == c.type_);
        if was.map(|b| (&b.status, &b.reason)) != Some((&c.status, &c.reason)) {
            let type_ = if c.status == "True" {
                "Normal"
            } else {
                "Warning"
            };
            event(client, svc, type_, &c.reason, &c.message).await;
        }
    }
    Some(status)
}

async fn event(client: &Client, svc: &YusurService, type_: &str, reason: &str, message: &str) {
    let ns = svc.namespace().unwrap_or_default();
    let now = Time(Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", svc.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("iaas.yusur.io/v1".into()),
            kind: Some("YusurService".into()),
            name: Some(svc.name_any()),
            namespace: Some(ns.clone()),
            uid: svc.uid(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("ferry-controller".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ip: Option<&str>, created: i64) -> Arc<YusurService> {
        let mut s = YusurService::new(
            name,
            serde_json::from_value(json!({"ports": [{"port": 80}], "clusterIP": ip})).unwrap(),
        );
        s.metadata.namespace = Some("default".into());
        s.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        Arc::new(s)
    }

    #[test]
    fn cluster_ips_are_unique_and_a_fixed_ip_clash_is_reported() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/16", None, &[]).unwrap(),
            eips: None,
        };
        let services = vec![
            svc("a", Some("10.96.0.50"), 1),
            svc("b", Some("10.96.0.50"), 2),
            svc("c", None, 3),
            svc("d", None, 4),
        ];
        let mut pending = Pending::default();
        let out = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(out["default/a"], Ok(("10.96.0.50".parse().unwrap(), None)));
        assert_eq!(
            out["default/b"].as_ref().unwrap_err().0,
            "ClusterIPConflict"
        );
        let (c, d) = (
            out["default/c"].clone().unwrap().0,
            out["default/d"].clone().unwrap().0,
        );
        assert_ne!(c, d);
        // A second pass (cache not yet updated) hands out the same addresses again.
        let again = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(again["default/c"].clone().unwrap().0, c);
    }
}
