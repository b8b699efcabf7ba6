//! The controller's caches: one reflector store per kind it reads, fed by watches that
//! record what changed ([`crate::changes`]) and wake the pass driver; and the readers that
//! turn the stores into the plain data the pure modules decide on (subnets, the addresses
//! held and asked for, live nodes). Nothing here decides anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use ferry_api::{
    BackendKind, BareMetal, Eip, ProbePort, StrLookup, Subnet, VNicIP, Vpc, YusurService,
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::allocate::{Held, Holder, Request};
use crate::cached::{CachedEndpoints, CachedPod, CachedProbe, CachedSlice};
use crate::changes::{self, Changes, Feed, KubeObject};
use crate::world::{self, SubnetInfo, lease_lapsed, subnet_info};

/// The reflector stores the controller reads from.
#[derive(Clone)]
pub struct Caches {
    pub services: Store<YusurService>,
    /// Projections ([`CachedPod`]), not full objects.
    pub pods: Store<CachedPod>,
    pub namespaces: Store<Namespace>,
    pub nodes: Store<Node>,
    pub vpcs: Store<Vpc>,
    pub subnets: Store<Subnet>,
    pub eips: Store<Eip>,
    pub baremetals: Store<BareMetal>,
    pub vnicips: Store<VNicIP>,
    /// Projections ([`CachedProbe`]), not full objects.
    pub probes: Store<CachedProbe>,
    pub k8s_services: Store<Service>,
    /// Projections ([`CachedEndpoints`], [`CachedSlice`]): a digest of what Ferry generated.
    pub endpoints: Store<CachedEndpoints>,
    pub slices: Store<CachedSlice>,
    /// The node agents' Leases.
    pub agent_leases: Store<Lease>,
    /// Since when the Lease watch has been broken (an error, and no event since): see
    /// [`lease_clock`].
    pub leases_stale_since: Arc<Mutex<Option<jiff::Timestamp>>>,
    /// KubeVirt VMIs, when that API exists.
    pub vmis: Option<Store<ferry_api::VirtualMachineInstance>>,
}

/// Every subnet by name.
pub fn subnets(c: &Caches) -> BTreeMap<String, SubnetInfo> {
    c.subnets
        .state()
        .iter()
        .map(|s| (s.name_any(), subnet_info(s)))
        .collect()
}

/// The namespace object of `name`, from the cache.
pub fn namespace(c: &Caches, name: &str) -> Option<std::sync::Arc<Namespace>> {
    c.namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(name))
}

/// The time at which agent Leases are judged: now, or while the Lease watch is broken
/// (the API server down or restarting) the moment it broke. A Lease cache that stopped
/// receiving renewals says nothing about the agents: judged by the wall clock, every agent
/// would look lapsed after 10 s of an API outage (issue 15: the full pass after the API
/// server's restart removed the socket-LB port groups and marked every probe Unknown).
/// Held until the watch delivers again (a resumed watch or a re-list).
pub fn lease_clock(stale_since: Option<jiff::Timestamp>, now: jiff::Timestamp) -> jiff::Timestamp {
    stale_since.map_or(now, |t| t.min(now))
}

fn lease_now(c: &Caches) -> jiff::Timestamp {
    let stale = c.leases_stale_since.lock().map(|s| *s).unwrap_or(None);
    lease_clock(stale, jiff::Timestamp::now())
}

/// Nodes whose Ferry agent Lease exists and has lapsed.
pub fn lapsed_agents(c: &Caches) -> BTreeSet<String> {
    let now = lease_now(c);
    c.agent_leases
        .state()
        .iter()
        .filter(|l| lease_lapsed(l, now))
        .filter_map(|l| {
            l.name_any()
                .strip_prefix(&ferry_api::agent_lease_name(""))
                .map(String::from)
        })
        .collect()
}

/// Nodes that run probes: not reported un-Ready (a `Ready` condition, when there is one,
/// is `True`: a node registered by a Ferry agent outside the lab carries only the agent's
/// own condition) and, where the node has a Ferry
/// agent (its Lease exists), with that Lease renewed in time. A node whose agent Lease
/// lapsed is not among them: its probes go Unknown, and backends that name no node move
/// to the others.
pub fn ready_nodes(c: &Caches) -> BTreeSet<String> {
    let now = lease_now(c);
    c.nodes
        .state()
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_none_or(|c| c.status == "True")
        })
        .filter(|n| {
            let lease = ObjectRef::new(&ferry_api::agent_lease_name(&n.name_any()))
                .within(ferry_api::AGENT_LEASE_NAMESPACE);
            c.agent_leases
                .get(&lease)
                .is_none_or(|l| !lease_lapsed(&l, now))
        })
        .map(|n| n.name_any())
        .collect()
}

/// The watch of one kind: a reflector store, each event recorded in `changes` and a
/// wake-up sent.
#[derive(Clone)]
pub struct Watches {
    pub client: Client,
    pub changes: Arc<Mutex<Changes>>,
    pub wake: mpsc::Sender<()>,
}

impl Watches {
    fn reflect<K>(&self, feed: Feed, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        self.reflect_api(Api::all(self.client.clone()), feed, config, |_| {}, None)
    }

    /// `project` trims each object to what the controller reads before it is stored;
    /// `stale_since`, when given, records since when this watch has been broken.
    fn reflect_api<K>(
        &self,
        api: Api<K>,
        feed: Feed,
        config: watcher::Config,
        project: fn(&mut K),
        stale_since: Option<Arc<Mutex<Option<jiff::Timestamp>>>>,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let (reader, writer) = reflector::store();
        // managedFields are kept out of the stores: nothing here reads them, and they are
        // often the larger part of an object (memory at 200k objects per kind).
        let events = relisting_watcher(api, config).modify(move |o| {
            o.managed_fields_mut().clear();
            project(o);
        });
        // Retried from 100 ms up to 2 s (kube's default: 0.8 s up to 30 s cost ~4 s
        // after an API server restart; issue 15's target for the next change is 3 s).
        let stream =
            reflector::reflector(writer, events).backoff(ferry_api::WatchBackoff::default());
        let (changes, wake) = (self.changes.clone(), self.wake.clone());
        tokio::spawn(async move {
            stream
                .for_each(|ev| {
                    match &ev {
                        Ok(ev) => changes::record(&changes, feed, ev),
                        Err(e) => tracing::debug!(error = %e, "watch error (retrying)"),
                    }
                    if let Some(Ok(mut s)) = stale_since.as_ref().map(|s| s.lock()) {
                        match &ev {
                            Err(_) => *s = s.or(Some(jiff::Timestamp::now())),
                            // Mid-list: the store is not replaced yet.
                            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                            Ok(_) => *s = None,
                        }
                    }
                    if !matches!(feed, Feed::AgentLease) {
                        let _ = wake.try_send(());
                    }
                    futures::future::ready(())
                })
                .await;
        });
        reader
    }
}

/// Whether a watch error means the watch must start over with a list: the API server
/// refused to resume from the last resourceVersion (410, older than its history, as after
/// its restart) when the watch started.
pub fn must_relist(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// `watcher`, started again (with a list) after an error [`must_relist`] says ends it.
/// kube-runtime's watcher re-lists when the 410 arrives as a watch event (what
/// kube-apiserver sends), but retries an HTTP 410 answering the watch request itself with
/// the same resourceVersion forever: the cache would stay frozen (issue 15: after the API
/// server's restart no event reached the controller, no new YusurService was seen, and
/// every agent Lease looked lapsed).
fn relisting_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    futures::stream::repeat_with(move || {
        watcher(api.clone(), config.clone()).scan(false, |ended, ev| {
            let out = if *ended {
                None
            } else {
                *ended = matches!(&ev, Err(e) if must_relist(e));
                Some(ev)
            };
            futures::future::ready(out)
        })
    })
    .flatten()
}

pub async fn caches(w: &Watches) -> Caches {
    // VMIs are watched only where the KubeVirt API exists (a watch of a missing API would
    // never become ready).
    let vmi_gvk = kube::api::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let vmis = match kube::discovery::pinned_kind(&w.client, &vmi_gvk).await {
        Ok(_) => Some(w.reflect(
            Feed::Workload(BackendKind::VirtualMachineInstance),
            watcher::Config::default(),
        )),
        Err(_) => None,
    };
    let generated = watcher::Config::default().labels(ferry_api::SERVICE_LABEL);
    let all = watcher::Config::default();
    let leases_stale_since = Arc::new(Mutex::new(None));
    let c = Caches {
        services: w.reflect(Feed::Service, all.clone()),
        pods: w.reflect(Feed::Workload(BackendKind::Pod), all.clone()),
        namespaces: w.reflect(Feed::Global, all.clone()),
        nodes: w.reflect_api(
            Api::all(w.client.clone()),
            Feed::Global,
            all.clone(),
            world::project_node,
            None,
        ),
        vpcs: w.reflect(Feed::Global, all.clone()),
        subnets: w.reflect(Feed::Global, all.clone()),
        eips: w.reflect(Feed::Global, all.clone()),
        baremetals: w.reflect(Feed::Workload(BackendKind::BareMetal), all.clone()),
        vnicips: w.reflect(Feed::Workload(BackendKind::VNicIP), all.clone()),
        probes: w.reflect(Feed::Probe, generated.clone()),
        // Every Service and EndpointSlice: those generated for YusurServices and ordinary
        // Services' own (their feed tells them apart).
        k8s_services: w.reflect(Feed::Kube(KubeObject::Service), all.clone()),
        endpoints: w.reflect(Feed::Generated, generated),
        slices: w.reflect(Feed::Kube(KubeObject::EndpointSlice), all.clone()),
        agent_leases: w.reflect_api(
            Api::namespaced(w.client.clone(), ferry_api::AGENT_LEASE_NAMESPACE),
            Feed::AgentLease,
            all,
            |_| {},
            Some(leases_stale_since.clone()),
        ),
        leases_stale_since,
        vmis,
    };
    let probes = c.probes.clone();
    ferry_metrics::controller().probes_from(move || probe_phases(&probes));
    c
}

/// NetworkProbes by phase, for `ferry_probes{phase}` (counted at scrape time).
fn probe_phases(probes: &Store<CachedProbe>) -> Vec<(String, i64)> {
    let mut n: BTreeMap<&'static str, i64> = [("Healthy", 0), ("Unhealthy", 0), ("Unknown", 0)]
        .into_iter()
        .collect();
    for p in probes.state() {
        *n.entry(p.phase.as_str()).or_default() += 1;
    }
    n.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub async fn wait_ready(c: &Caches) {
    let _ = tokio::join!(
        c.services.wait_until_ready(),
        c.pods.wait_until_ready(),
        c.namespaces.wait_until_ready(),
        c.nodes.wait_until_ready(),
        c.vpcs.wait_until_ready(),
        c.subnets.wait_until_ready(),
        c.eips.wait_until_ready(),
        c.baremetals.wait_until_ready(),
        c.vnicips.wait_until_ready(),
        c.probes.wait_until_ready(),
        c.k8s_services.wait_until_ready(),
        c.endpoints.wait_until_ready(),
        c.slices.wait_until_ready(),
        c.agent_leases.wait_until_ready(),
    );
    if let Some(v) = &c.vmis {
        let _ = v.wait_until_ready().await;
    }
}

/// The cached object `namespace/name`, if any.
pub fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    store.get(&ObjectRef::new(name).within(ns))
}

/// Every node's probe ports, by node.
pub fn probe_ports(c: &Caches) -> BTreeMap<String, BTreeMap<String, ProbePort>> {
    c.nodes
        .state()
        .iter()
        .map(|n| (n.name_any(), ferry_api::probe_ports(n.annotations())))
        .collect()
}

fn parse(ip: Option<&String>) -> Option<Ipv4Addr> {
    ip.and_then(|i| i.parse().ok())
}

/// Every address in use and every holder that lacks one: the one scan of the caches that
/// IPAM decides on (`allocate::plan`).
pub fn address_book(c: &Caches) -> (Vec<Held>, Vec<Request>) {
    let subnets = subnets(c);
    let namespaces: BTreeMap<String, Arc<Namespace>> = c
        .namespaces
        .state()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let (mut held, mut requests) = (Vec::new(), Vec::new());
    let none = BTreeMap::new();
    let mut annotated =
        |holder: Holder, a: &dyn StrLookup, subnet: Option<&SubnetInfo>, wants: bool| {
            let Some(subnet) = subnet else { return };
            let ip = a
                .lookup(ferry_api::ANNOTATION_IP)
                .and_then(|s| s.parse().ok());
            if let Some(ip) = ip {
                held.push(Held {
                    subnet: subnet.name.clone(),
                    ip,
                    holder: holder.clone(),
                });
            }
            if wants && a.lookup(ferry_api::ANNOTATION_MAC).is_none() {
                requests.push(Request {
                    holder,
                    subnet: subnet.name.clone(),
                    preset_ip: ip,
                    preset_mac: None,
                });
            }
        };
    for pod in c.pods.state() {
        let ns = pod.namespace().unwrap_or_default();
        let subnet = world::pod_subnet(&pod, namespaces.get(&ns).map(|n| n.as_ref()), &subnets);
        let holder = Holder::Pod {
            namespace: ns,
            name: pod.name_any(),
        };
        annotated(
            holder,
            &pod.annotations,
            subnet,
            world::on_pod_network(&pod),
        );
    }
    for vmi in c.vmis.iter().flat_map(|s| s.state()) {
        let ns = vmi.namespace().unwrap_or_default();
        let subnet = world::vmi_subnet(&vmi, namespaces.get(&ns).map(|n| n.as_ref()), &subnets);
        let holder = Holder::Vmi {
            namespace: ns,
            name: vmi.name_any(),
        };
        annotated(
            holder,
            vmi.metadata.annotations.as_ref().unwrap_or(&none),
            subnet,
            vmi.metadata.deletion_timestamp.is_none(),
        );
    }
    let join = subnets.get(ferry_api::JOIN_SUBNET);
    for n in c.nodes.state() {
        annotated(
            Holder::Node(n.name_any()),
            n.metadata.annotations.as_ref().unwrap_or(&none),
            join,
            true,
        );
    }
    // Hosts carry their address in status; the spec may preset it.
    let hosts = c
        .baremetals
        .state()
        .iter()
        .map(|h| {
            let holder = Holder::BareMetal {
                namespace: h.namespace().unwrap_or_default(),
                name: h.name_any(),
            };
            (holder, h.host_spec(), h.host_status())
        })
        .chain(c.vnicips.state().iter().map(|h| {
            let holder = Holder::VNicIP {
                namespace: h.namespace().unwrap_or_default(),
                name: h.name_any(),
            };
            (holder, h.host_spec(), h.host_status())
        }))
        .collect::<Vec<_>>();
    for (holder, spec, status) in hosts {
        if let Some(ip) = parse(status.ip_address.as_ref()) {
            held.push(Held {
                subnet: spec.subnet.clone(),
                ip,
                holder: holder.clone(),
            });
        }
        if status.mac_address.is_none() && subnets.contains_key(&spec.subnet) {
            requests.push(Request {
                holder,
                subnet: spec.subnet,
                preset_ip: parse(spec.ip_address.as_ref()),
                preset_mac: spec.mac_address,
            });
        }
    }
    // Every node gets a probe port in the first subnet of every VPC (not the join subnet).
    let mut first_subnet: BTreeMap<&str, &SubnetInfo> = BTreeMap::new();
    for s in subnets
        .values()
        .filter(|s| s.name != ferry_api::JOIN_SUBNET)
    {
        first_subnet.entry(s.vpc.as_str()).or_insert(s);
    }
    for (node, ports) in probe_ports(c) {
        for (vpc, p) in &ports {
            if let Ok(ip) = p.ip.parse() {
                held.push(Held {
                    subnet: p.subnet.clone(),
                    ip,
                    holder: Holder::ProbePort {
                        node: node.clone(),
                        vpc: vpc.clone(),
                    },
                });
            }
        }
        for (vpc, s) in &first_subnet {
            if !ports.contains_key(*vpc) {
                requests.push(Request {
                    holder: Holder::ProbePort {
                        node: node.clone(),
                        vpc: vpc.to_string(),
                    },
                    subnet: s.name.clone(),
                    preset_ip: None,
                    preset_mac: None,
                });
            }
        }
    }
    (held, requests)
}

/// The addresses of the Eip objects, by name.
pub fn eip_addresses(c: &Caches) -> BTreeMap<String, Ipv4Addr> {
    c.eips
        .state()
        .iter()
        .filter_map(|e| {
            let a = e.status.as_ref().and_then(|s| s.address.as_deref());
            Some((e.name_any(), a.or(e.spec.address.as_deref())?.parse().ok()?))
        })
        .collect()
}

/// The VPCs that exist; the default VPC always does.
pub fn vpcs(c: &Caches) -> BTreeSet<String> {
    let mut vpcs: BTreeSet<String> = c.vpcs.state().iter().map(|v| v.name_any()).collect();
    vpcs.insert(ferry_api::DEFAULT_VPC.to_string());
    vpcs
}

/// An ordinary Service with its EndpointSlices.
pub type KubeService = (Arc<Service>, Vec<Arc<EndpointSlice>>);

/// The ordinary Services whose keys are in `keys` (every one when `None`): each with its
/// EndpointSlices. Generated Services are left out; a key whose Service is gone maps to
/// `None`.
pub fn kube_services(
    c: &Caches,
    keys: Option<&BTreeSet<String>>,
) -> BTreeMap<String, Option<KubeService>> {
    use crate::kube_service as ks;
    let mut out: BTreeMap<String, Option<KubeService>> = match keys {
        None => c
            .k8s_services
            .state()
            .into_iter()
            .filter(|s| !ks::generated(s))
            .map(|s| (ks::key(&s), Some((s, Vec::new()))))
            .collect(),
        Some(keys) => keys
            .iter()
            .map(|k| {
                let found = k
                    .strip_prefix("svc/")
                    .and_then(|k| k.split_once('/'))
                    .and_then(|(ns, name)| cached(&c.k8s_services, ns, name))
                    .filter(|s| !ks::generated(s));
                (k.clone(), found.map(|s| (s, Vec::new())))
            })
            .collect(),
    };
    // Most passes find no ordinary Service (the slices of generated ones wake them too):
    // the slices, 10,000 of them at 10,000 services, are read only for one that is, and
    // matched by namespace and name without building a key per slice.
    let mut wanted: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, found) in &out {
        if let Some((svc, _)) = found {
            wanted
                .entry(svc.namespace().unwrap_or_default())
                .or_default()
                .insert(svc.name_any(), k.clone());
        }
    }
    if wanted.is_empty() {
        return out;
    }
    for sl in c.slices.state() {
        let Some(name) = sl.labels().get(ks::SERVICE_NAME_LABEL) else {
            continue;
        };
        let ns = sl.metadata.namespace.as_deref().unwrap_or_default();
        let Some(k) = wanted.get(ns).and_then(|names| names.get(name.as_str())) else {
            continue;
        };
        if let (Some(Some((_, slices))), Some(full)) = (out.get_mut(k), &sl.full) {
            slices.push(full.clone());
        }
    }
    out
}

/// What the network is made of, for `net_model::network_state`.
pub fn net_objects(c: &Caches) -> crate::net_model::NetObjects {
    use crate::net_model as m;
    let mut ports: Vec<ferry_net::PortState> = c
        .pods
        .state()
        .iter()
        .filter_map(|p| m::pod_port(p))
        .collect();
    ports.extend(
        c.vmis
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|v| m::vmi_port(&v)),
    );
    ports.extend(
        c.baremetals
            .state()
            .iter()
            .filter_map(|b| m::baremetal_port(b)),
    );
    ports.extend(c.vnicips.state().iter().filter_map(|v| m::vnicip_port(v)));
    let nodes: Vec<m::NodeInfo> = c
        .nodes
        .state()
        .iter()
        .map(|n| m::NodeInfo {
            name: n.name_any(),
            annotations: n.annotations().clone(),
            external: n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "ExternalIP"))
                .and_then(|a| a.address.parse().ok()),
        })
        .collect();
    // Running pods on socket-LB nodes join their VPC's port group (Running: the agent
    // has started the sandbox, which registers it with the socket LB). A node's
    // announcement or its Lease lapsing makes a full pass (nodes are a global feed, lapses
    // are scanned), so the group follows them; a new pod joins at the next full pass
    // (until then its traffic keeps conntrack, which is always correct).
    let sock_nodes = m::socket_lb_nodes(&nodes, &ready_nodes(c));
    let socket_lb_ports = if sock_nodes.is_empty() {
        BTreeSet::new()
    } else {
        c.pods
            .state()
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| sock_nodes.contains(n))
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .filter_map(|p| m::pod_port(p))
            .map(|p| p.name)
            .collect()
    };
    m::NetObjects {
        vpcs: c.vpcs.state().iter().map(|v| v.name_any()).collect(),
        subnets: subnets(c),
        ports,
        nodes,
        socket_lb_ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: "Expired".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn leases_are_judged_at_the_moment_their_watch_broke() {
        let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        assert_eq!(lease_clock(None, t(30)), t(30));
        assert_eq!(lease_clock(Some(t(5)), t(30)), t(5));
        // A clock step back never moves the judgement into the future.
        assert_eq!(lease_clock(Some(t(40)), t(30)), t(30));
    }

    #[test]
    fn only_a_watch_start_refused_with_410_starts_over_with_a_list() {
        let cases = [
            (refused(410), true),
            (refused(429), false),
            (refused(500), false),
            (
                watcher::Error::WatchFailed(kube::Error::Api(Box::new(kube::core::Status {
                    code: 410,
                    ..Default::default()
                }))),
                false,
            ),
            (watcher::Error::NoResourceVersion, false),
        ];
        let got: Vec<bool> = cases.iter().map(|(e, _)| must_relist(e)).collect();
        let want: Vec<bool> = cases.iter().map(|(_, w)| *w).collect();
        assert_eq!(got, want);
    }
}
