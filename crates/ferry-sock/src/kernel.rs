//! The thin kernel adapter: loads the BPF object, attaches its four programs to a
//! cgroup v2, owns the maps and executes the planner's [`MapOp`]s. Every decision is in
//! [`crate::plan`]; this module only turns operations into `bpf()` calls.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use aya::maps::{ArrayOfMaps, HashMap, MapData, MapError};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socket};
use tracing::{debug, info};

use crate::error::SockLbError;
use crate::model::{Desired, ServiceKey, ServiceSpec, VpcId};
use crate::plan::{
    Capacity, MapOp, Plan, Programmed, RejectReason, Rejected, Usage, fill, plan, plan_changes,
};
use crate::wire::{self, ServiceValue};

pub mod pinned;

/// The compiled C programs (see build.rs).
static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sock_lb.o"));

/// The programs; each one's hook comes from its ELF section. The `*6` ones translate
/// IPv4-mapped addresses of AF_INET6 sockets (dual-stack applications).
const PROGRAMS: [&str; 8] = [
    "ferry_connect4",
    "ferry_sendmsg4",
    "ferry_recvmsg4",
    "ferry_getpeername4",
    "ferry_connect6",
    "ferry_sendmsg6",
    "ferry_recvmsg6",
    "ferry_getpeername6",
];

/// `BPF_F_NO_PREALLOC`: hash entries are allocated on insert, so a map sized for 1M
/// backends costs memory only for the backends it holds. Must equal the C templates' flags.
pub(crate) const NO_PREALLOC: u32 = 1;

/// `SO_NETNS_COOKIE` (Linux 5.14+; not in every libc release).
const SO_NETNS_COOKIE: libc::c_int = 71;

// The macro calls itself and its helper unqualified, so both must be in scope.
use nix::{getsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// The cookie of the network namespace a socket lives in (what
    /// `bpf_get_netns_cookie` returns in the hooks).
    NetnsCookie,
    GetOnly,
    libc::SOL_SOCKET,
    SO_NETNS_COOKIE,
    u64
);

/// Entries per map. Services, slots, members and netns sit behind a map-of-maps and can
/// be resized live ([`SocketLb::resize`]); affinity and reverse entries are LRU maps that
/// evict their oldest entries instead of filling up, sized once at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// Pod network namespaces on this node.
    pub netns: u32,
    /// Service ports (VPC, VIP, port, protocol).
    pub services: u32,
    /// Backend slot-map entries, 16 slots each (a backend takes its weight in slots, a
    /// Maglev service its table; a service takes at least one entry).
    pub slots: u32,
    /// (service, backend) pairs of services with ClientIP affinity.
    pub members: u32,
    /// ClientIP affinity entries (client netns x service), LRU.
    pub affinity: u32,
    /// Reverse translations (socket x backend) for `recvmsg` and `getpeername`, LRU.
    pub reverse: u32,
}

impl Default for MapSizes {
    /// 64k services and 1M backends, as issue 18 asks: 128k slot entries hold 2M slots
    /// when full, and let each of 64k services (up to 16 slots each) change at once.
    fn default() -> Self {
        MapSizes {
            netns: 65536,
            services: 65536,
            slots: 1 << 17,
            members: 1 << 20,
            affinity: 1 << 16,
            reverse: 1 << 18,
        }
    }
}

impl MapSizes {
    fn capacity(&self) -> Capacity {
        Capacity {
            services: self.services,
            slots: self.slots,
            members: self.members,
        }
    }

    /// Sizes that make room for what `rejected` could not fit (each full map at least
    /// doubled), or `None` when no rejection is about a full map. For an agent that
    /// grows instead of refusing: `apply`, then `resize(grown)` and `apply` again.
    pub fn grown_for(&self, rejected: &[Rejected]) -> Option<MapSizes> {
        let grow = |now: u32, want: u64| (now as u64 * 2).max(want).min(u32::MAX as u64) as u32;
        let mut next = *self;
        for r in rejected {
            match r.reason {
                RejectReason::ServicesFull { .. } => next.services = grow(self.services, 0),
                RejectReason::SlotsFull { need, used, .. } => {
                    next.slots = next.slots.max(grow(self.slots, need + used))
                }
                RejectReason::MembersFull { need, used, .. } => {
                    next.members = next.members.max(grow(self.members, need + used))
                }
                RejectReason::TooManySlots { .. } => {}
            }
        }
        (next != *self).then_some(next)
    }
}

/// What one [`SocketLb::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Map operations executed (each is one or more `bpf()` calls).
    pub ops: usize,
    /// Services that did not fit and keep their previous programming.
    pub rejected: Vec<Rejected>,
    /// The maps were rebuilt and swapped in whole (after an earlier failed apply).
    pub rebuilt: bool,
}

type NetnsMap = HashMap<MapData, wire::NetnsKey, wire::NetnsValue>;
type SvcMap = HashMap<MapData, wire::SvcKey, wire::SvcValue>;
type SlotMap = HashMap<MapData, wire::SlotKey, wire::SlotValue>;
type MemberMap = HashMap<MapData, wire::MemberKey, wire::MemberValue>;

/// The swappable maps (the values of the four map-of-maps).
struct Inner {
    netns: NetnsMap,
    services: SvcMap,
    slots: SlotMap,
    members: MemberMap,
}

impl Inner {
    fn create(sizes: &MapSizes) -> Result<Inner, SockLbError> {
        let mk = |map: &'static str| move |e: MapError| SockLbError::map(map, "create", e);
        Ok(Inner {
            netns: HashMap::create(sizes.netns, NO_PREALLOC).map_err(mk("netns"))?,
            services: HashMap::create(sizes.services, NO_PREALLOC).map_err(mk("services"))?,
            slots: HashMap::create(sizes.slots, NO_PREALLOC).map_err(mk("slots"))?,
            members: HashMap::create(sizes.members, NO_PREALLOC).map_err(mk("members"))?,
        })
    }

    /// Fills maps that the programs do not see yet (nothing reads them, so nothing to
    /// wait for).
    fn fill(&mut self, ops: &[MapOp]) -> Result<(), SockLbError> {
        for op in ops {
            self.run_one(op)?;
        }
        Ok(())
    }

    /// Runs `ops` on these maps, which `outer` points the programs at.
    fn run(&mut self, ops: &[MapOp], outer: &mut Outer) -> Result<(), SockLbError> {
        for op in ops {
            match op {
                MapOp::WaitForReaders => outer.wait_for_readers(&self.services)?,
                op => self.run_one(op)?,
            }
        }
        Ok(())
    }

    fn run_one(&mut self, op: &MapOp) -> Result<(), SockLbError> {
        let put = |map: &'static str| move |e: MapError| SockLbError::map(map, "insert", e);
        match op {
            MapOp::PutSlots { set, slots } => {
                for (chunk, addrs) in slots.chunks(wire::SLOTS_PER_ENTRY).enumerate() {
                    self.slots
                        .insert(
                            wire::slot_key(*set, chunk as u32),
                            wire::slot_value(addrs),
                            0,
                        )
                        .map_err(put("slots"))?;
                }
            }
            MapOp::PutMembers { service, backends } => {
                for b in backends {
                    self.members
                        .insert(wire::member_key(*service, *b), [1], 0)
                        .map_err(put("members"))?;
                }
            }
            MapOp::PutService { key, value } => {
                self.services
                    .insert(wire::svc_key(key), wire::svc_value(value), 0)
                    .map_err(put("services"))?;
            }
            MapOp::DeleteService { key } => {
                remove(&mut self.services, &wire::svc_key(key), "services")?;
            }
            MapOp::DeleteMembers { service, backends } => {
                for b in backends {
                    remove(
                        &mut self.members,
                        &wire::member_key(*service, *b),
                        "members",
                    )?;
                }
            }
            MapOp::DeleteSlots { set, count } => {
                for chunk in 0..wire::slot_entries(*count as usize) {
                    remove(
                        &mut self.slots,
                        &wire::slot_key(*set, chunk as u32),
                        "slots",
                    )?;
                }
            }
            // Only live maps have readers; `Inner::run` waits for those.
            MapOp::WaitForReaders => {}
        }
        Ok(())
    }
}

/// Removes a key; a key that is already gone is fine (the goal is its absence).
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), SockLbError> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(SockLbError::map(name, "remove", e)),
    }
}

/// The four map-of-maps the programs look their maps up in.
struct Outer {
    netns: ArrayOfMaps<MapData, NetnsMap>,
    services: ArrayOfMaps<MapData, SvcMap>,
    slots: ArrayOfMaps<MapData, SlotMap>,
    members: ArrayOfMaps<MapData, MemberMap>,
}

impl Outer {
    /// Takes the four outer maps out of a loaded object.
    fn take(ebpf: &mut Ebpf) -> Result<Outer, SockLbError> {
        Ok(Outer {
            netns: take_outer(ebpf, "ferry_netns")?,
            services: take_outer(ebpf, "ferry_svc")?,
            slots: take_outer(ebpf, "ferry_slots")?,
            members: take_outer(ebpf, "ferry_members")?,
        })
    }

    /// Points the programs at `inner`. Each swap is one atomic map update; programs
    /// already running finish on the maps they looked up. Mixing old and new maps
    /// between two swaps is harmless because both hold the same programming.
    fn point_at(&mut self, inner: &Inner) -> Result<(), SockLbError> {
        let set = |map: &'static str| move |e: MapError| SockLbError::map(map, "swap", e);
        self.slots
            .set(0, &inner.slots, 0)
            .map_err(set("ferry_slots"))?;
        self.members
            .set(0, &inner.members, 0)
            .map_err(set("ferry_members"))?;
        self.services
            .set(0, &inner.services, 0)
            .map_err(set("ferry_svc"))?;
        self.netns
            .set(0, &inner.netns, 0)
            .map_err(set("ferry_netns"))?;
        Ok(())
    }

    /// Returns once every program that may have looked a map up before the call has
    /// returned. Updating a map-of-maps makes the kernel wait for a grace period
    /// (`synchronize_rcu` in `maybe_wait_bpf_programs`) before the syscall returns, so
    /// pointing `ferry_svc` at the service map it already holds is such a wait.
    fn wait_for_readers(&mut self, services: &SvcMap) -> Result<(), SockLbError> {
        self.services
            .set(0, services, 0)
            .map_err(|e| SockLbError::map("ferry_svc", "wait for readers", e))
    }
}

fn take_outer<V: aya::maps::InnerMap>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<ArrayOfMaps<MapData, V>, SockLbError>
where
    ArrayOfMaps<MapData, V>: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(SockLbError::Missing { kind: "map", name })?;
    ArrayOfMaps::try_from(map).map_err(|e| SockLbError::map(name, "open", e))
}

/// Program `name` of the object, loaded into the kernel (not attached yet).
fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, SockLbError> {
    let prog_err = |e| SockLbError::Program {
        name,
        source: Box::new(e),
    };
    let program: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or(SockLbError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(prog_err)?;
    program.load().map_err(prog_err)?;
    Ok(program)
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, SockLbError> {
    let map = ebpf
        .take_map(name)
        .ok_or(SockLbError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(|e| SockLbError::map(name, "open", e))
}

/// The socket load balancer attached to one cgroup v2. Dropping it detaches the programs
/// (sockets then keep their VIP and the OVN load balancers answer them), unless it was
/// loaded pinned ([`SocketLb::load_pinned`]).
pub struct SocketLb {
    /// Holds the programs and their cgroup links.
    _ebpf: Ebpf,
    outer: Outer,
    inner: Inner,
    affinity: HashMap<MapData, wire::AffinityKey, wire::AffinityValue>,
    sizes: MapSizes,
    programmed: Programmed,
    netns: BTreeMap<u64, VpcId>,
    /// An apply failed half way (or the maps were adopted from a previous owner): the
    /// maps may not match `programmed`, so the next apply rebuilds them whole.
    stale: bool,
    /// Pinned: the links and the liveness guard ([`pinned`]).
    pins: Option<pinned::Pins>,
    /// The maps were adopted from another owner and not replaced yet: the replacement
    /// carries their slot and member entries over (see [`SocketLb::replace_adopted`]).
    adopted: bool,
    /// Adopted past their deadline: [`SocketLb::keep_alive`] does nothing until the
    /// adopted maps are replaced.
    dormant: bool,
}

impl std::fmt::Debug for SocketLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLb")
            .field("sizes", &self.sizes)
            .field("usage", &self.usage())
            .field("netns", &self.netns.len())
            .field("stale", &self.stale)
            .field("pinned", &self.pins.is_some())
            .finish()
    }
}

impl SocketLb {
    /// Loads the programs, creates the maps and attaches `connect4`, `sendmsg4`,
    /// `recvmsg4` and `getpeername4` and their `*6` twins (IPv4-mapped addresses only) to
    /// the cgroup v2 directory `cgroup` (for the agent:
    /// the root of the cgroup2 mount, so every pod is covered). Attached through BPF links
    /// (aya does so on 5.7+), which the kernel always treats as multi-attach, so other
    /// programs on the same cgroup keep running; the link flags must be 0, hence
    /// `CgroupAttachMode::Single` (`AllowMultiple` is refused with EINVAL). Needs root
    /// (CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN) and kernel 5.8+ (getpeername4).
    pub fn load(cgroup: &Path, sizes: MapSizes) -> Result<SocketLb, SockLbError> {
        let cgroup_dir = File::open(cgroup).map_err(|source| SockLbError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("ferry_affinity", sizes.affinity)
            .map_max_entries("ferry_rev", sizes.reverse)
            .load(BPF_OBJECT)
            .map_err(|e| SockLbError::Load(Box::new(e)))?;
        let mut outer = Outer::take(&mut ebpf)?;
        let affinity = take_hash(&mut ebpf, "ferry_affinity")?;
        let inner = Inner::create(&sizes)?;
        outer.point_at(&inner)?;
        for name in PROGRAMS {
            load_program(&mut ebpf, name)?
                .attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(|e| SockLbError::Program {
                    name,
                    source: Box::new(e),
                })?;
        }
        info!(cgroup = %cgroup.display(), ?sizes, "socket LB attached");
        Ok(SocketLb {
            _ebpf: ebpf,
            outer,
            inner,
            affinity,
            sizes,
            programmed: Programmed::default(),
            netns: BTreeMap::new(),
            stale: false,
            pins: None,
            adopted: false,
            dormant: false,
        })
    }

    /// Records that sockets in the network namespace with this cookie belong to `vpc`
    /// (at CNI ADD). Until then the pod's sockets are not translated.
    pub fn set_netns_vpc(&mut self, netns_cookie: u64, vpc: VpcId) -> Result<(), SockLbError> {
        if self.netns.get(&netns_cookie) == Some(&vpc) {
            return Ok(());
        }
        if !self.netns.contains_key(&netns_cookie) && self.netns.len() >= self.sizes.netns as usize
        {
            return Err(SockLbError::Full {
                map: "netns",
                max: self.sizes.netns,
            });
        }
        self.inner
            .netns
            .insert(wire::netns_key(netns_cookie), wire::netns_value(vpc), 0)
            .map_err(|e| SockLbError::map("netns", "insert", e))?;
        self.netns.insert(netns_cookie, vpc);
        Ok(())
    }

    /// Forgets a network namespace (at CNI DEL); its sockets are no longer translated.
    pub fn remove_netns(&mut self, netns_cookie: u64) -> Result<(), SockLbError> {
        remove(
            &mut self.inner.netns,
            &wire::netns_key(netns_cookie),
            "netns",
        )?;
        self.netns.remove(&netns_cookie);
        Ok(())
    }

    /// Programs `desired` (all services of this node's VPCs with their healthy backends),
    /// writing only what changed since the last apply.
    pub fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, SockLbError> {
        let p = plan(&self.programmed, desired, self.sizes.capacity());
        self.execute(p)
    }

    /// Like [`SocketLb::apply`] when the caller knows which services changed (a probe
    /// flip, one Endpoints event): `changes` maps each to its new spec, `None` when gone.
    /// Services not listed keep their programming.
    pub fn apply_changes(
        &mut self,
        changes: &BTreeMap<ServiceKey, Option<ServiceSpec>>,
    ) -> Result<ApplyReport, SockLbError> {
        let p = plan_changes(&self.programmed, changes, self.sizes.capacity());
        self.execute(p)
    }

    fn execute(&mut self, p: Plan) -> Result<ApplyReport, SockLbError> {
        let rebuilt = self.stale || self.adopted;
        if self.adopted {
            let next = self.programmed.after(&p);
            self.replace_adopted(&next)?;
            self.programmed = next;
        } else if self.stale {
            let next = self.programmed.after(&p);
            self.rebuild(self.sizes, &next)?;
            self.programmed = next;
        } else if let Err(e) = self.inner.run(&p.ops, &mut self.outer) {
            self.stale = true;
            return Err(e);
        } else {
            self.programmed.commit(&p);
        }
        debug!(
            ops = p.ops.len(),
            rejected = p.rejected.len(),
            rebuilt,
            "socket LB applied"
        );
        Ok(ApplyReport {
            ops: p.ops.len(),
            rejected: p.rejected,
            rebuilt,
        })
    }

    /// Moves to maps of `sizes` without dropping anything: fresh inner maps are filled
    /// with the current programming and swapped in atomically. Established connections
    /// never depend on these maps (their sockets are connected to the backend), and the
    /// reverse and affinity maps are kept, so live sockets keep seeing the VIP.
    /// `sizes.affinity` and `sizes.reverse` are fixed at load and ignored here.
    pub fn resize(&mut self, sizes: MapSizes) -> Result<(), SockLbError> {
        let usage = self.usage();
        let checks = [
            ("netns", sizes.netns, self.netns.len() as u64),
            ("services", sizes.services, usage.services),
            ("slots", sizes.slots, usage.slots),
            ("members", sizes.members, usage.members),
        ];
        for (map, want, used) in checks {
            if (want as u64) < used {
                return Err(SockLbError::TooSmall { map, want, used });
            }
        }
        let programmed = self.programmed.clone();
        let sizes = MapSizes {
            affinity: self.sizes.affinity,
            reverse: self.sizes.reverse,
            ..sizes
        };
        self.rebuild(sizes, &programmed)?;
        self.programmed = programmed;
        Ok(())
    }

    /// Replaces adopted maps by `programmed` without a moment where a connection finds a
    /// service without its backends. The four maps are swapped one after the other, so a
    /// program may look a service up in the old map and its slots in the new one: the new
    /// programming's ids are above the old ones ([`Programmed::above`]) and the first new
    /// slot and member maps also hold every old entry, so both generations resolve until
    /// the service map is swapped. A second rebuild then drops the old entries (both
    /// sides of that one hold the same programming).
    fn replace_adopted(&mut self, programmed: &Programmed) -> Result<(), SockLbError> {
        let read = |map: &'static str| move |e: MapError| SockLbError::map(map, "read", e);
        let old_slots: Vec<(wire::SlotKey, wire::SlotValue)> = self
            .inner
            .slots
            .iter()
            .collect::<Result<_, _>>()
            .map_err(read("slots"))?;
        let old_members: Vec<(wire::MemberKey, wire::MemberValue)> = self
            .inner
            .members
            .iter()
            .collect::<Result<_, _>>()
            .map_err(read("members"))?;
        let union = MapSizes {
            slots: self.sizes.slots.saturating_add(old_slots.len() as u32),
            members: self.sizes.members.saturating_add(old_members.len() as u32),
            ..self.sizes
        };
        let mut inner = Inner::create(&union)?;
        let put = |map: &'static str| move |e: MapError| SockLbError::map(map, "insert", e);
        for (k, v) in old_slots {
            inner.slots.insert(k, v, 0).map_err(put("slots"))?;
        }
        for (k, v) in old_members {
            inner.members.insert(k, v, 0).map_err(put("members"))?;
        }
        for (cookie, vpc) in &self.netns {
            inner
                .netns
                .insert(wire::netns_key(*cookie), wire::netns_value(*vpc), 0)
                .map_err(put("netns"))?;
        }
        inner.fill(&fill(programmed))?;
        self.outer.point_at(&inner)?;
        self.inner = inner;
        self.adopted = false;
        // Until the second rebuild succeeds, the next apply rebuilds.
        self.stale = true;
        info!("socket LB: adopted maps replaced");
        self.rebuild(self.sizes, programmed)?;
        // Current again: a dormant guard may move.
        self.dormant = false;
        self.keep_alive()
    }

    fn rebuild(&mut self, sizes: MapSizes, programmed: &Programmed) -> Result<(), SockLbError> {
        let mut inner = Inner::create(&sizes)?;
        for (cookie, vpc) in &self.netns {
            inner
                .netns
                .insert(wire::netns_key(*cookie), wire::netns_value(*vpc), 0)
                .map_err(|e| SockLbError::map("netns", "insert", e))?;
        }
        inner.fill(&fill(programmed))?;
        self.outer.point_at(&inner)?;
        self.inner = inner;
        self.sizes = sizes;
        self.stale = false;
        info!(?sizes, "socket LB maps swapped");
        Ok(())
    }

    /// The next apply rebuilds the maps whole (after a failed apply, or adopted maps not
    /// yet replaced), even if it changes nothing.
    pub fn needs_rebuild(&self) -> bool {
        self.stale || self.adopted
    }

    /// Entries used in the service, slot and member maps.
    pub fn usage(&self) -> Usage {
        self.programmed.usage()
    }

    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// The registered namespaces (cookie -> VPC). Netns cookies are never reused within
    /// a boot, so an entry whose sandbox is gone (a DEL the agent missed) can only waste
    /// room: a repair pass removes the cookies of sandboxes that no longer exist.
    pub fn netns(&self) -> &BTreeMap<u64, VpcId> {
        &self.netns
    }

    /// What the maps hold, as planned.
    pub fn programmed(&self) -> &Programmed {
        &self.programmed
    }

    /// Reads one service back from the kernel maps: its entry and its slots. For checks
    /// and benchmarks; the data path never needs it.
    pub fn kernel_service(
        &self,
        key: &ServiceKey,
    ) -> Result<Option<(ServiceValue, Vec<SocketAddrV4>)>, SockLbError> {
        let value = match self.inner.services.get(&wire::svc_key(key), 0) {
            Ok(v) => wire::parse_svc_value(&v),
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(SockLbError::map("services", "lookup", e)),
        };
        let count = value.count as usize;
        let mut slots = Vec::with_capacity(count);
        for chunk in 0..wire::slot_entries(count) {
            let s = self
                .inner
                .slots
                .get(&wire::slot_key(value.set, chunk as u32), 0)
                .map_err(|e| SockLbError::map("slots", "lookup", e))?;
            slots.extend(wire::parse_slot_value(&s, count - slots.len()));
        }
        Ok(Some((value, slots)))
    }

    /// The backend a client netns is pinned to for a service with ClientIP affinity, as
    /// the kernel recorded it.
    pub fn kernel_affinity(
        &self,
        netns_cookie: u64,
        key: &ServiceKey,
    ) -> Result<Option<SocketAddrV4>, SockLbError> {
        let Some(s) = self.programmed.services().get(key) else {
            return Ok(None);
        };
        match self
            .affinity
            .get(&wire::affinity_key(netns_cookie, s.id), 0)
        {
            Ok(v) => Ok(Some(wire::parse_affinity_value(&v).1)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(SockLbError::map("affinity", "lookup", e)),
        }
    }
}

/// The cookie of the network namespace `netns` (an open `/proc/PID/ns/net` or
/// `/run/netns/NAME`): what the hooks see as `bpf_get_netns_cookie`. A socket is created
/// in that namespace from a short-lived thread (setns switches only the calling thread)
/// and asked for `SO_NETNS_COOKIE` (kernel 5.14+).
pub fn netns_cookie_of(netns: BorrowedFd<'_>) -> Result<u64, SockLbError> {
    let err = |source: io::Error| SockLbError::NetnsCookie {
        what: format!("fd {netns:?}"),
        source,
    };
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<u64> {
            setns(netns, CloneFlags::CLONE_NEWNET)?;
            let sock = socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            Ok(getsockopt(&sock, NetnsCookie)?)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns cookie thread panicked")))
    })
    .map_err(err)
}

/// [`netns_cookie_of`] for a namespace path such as `/run/netns/NAME` or
/// `/proc/PID/ns/net` (the CNI `CNI_NETNS`).
pub fn netns_cookie_of_path(path: &Path) -> Result<u64, SockLbError> {
    let f = File::open(path).map_err(|source| SockLbError::NetnsCookie {
        what: path.display().to_string(),
        source,
    })?;
    netns_cookie_of(f.as_fd()).map_err(|e| match e {
        SockLbError::NetnsCookie { source, .. } => SockLbError::NetnsCookie {
            what: path.display().to_string(),
            source,
        },
        other => other,
    })
}

/// The cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> Result<u64, SockLbError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| SockLbError::NetnsCookie {
        what: "the current namespace".into(),
        source: e.into(),
    })?;
    getsockopt(&sock, NetnsCookie).map_err(|e| SockLbError::NetnsCookie {
        what: "the current namespace".into(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServiceKey};
    use std::net::Ipv4Addr;

    fn rejected(reason: RejectReason) -> Rejected {
        Rejected {
            key: ServiceKey {
                vpc: 1,
                vip: Ipv4Addr::new(10, 96, 0, 1),
                port: 80,
                protocol: Protocol::Tcp,
            },
            reason,
        }
    }

    #[test]
    fn grown_for_doubles_only_the_full_maps_and_fits_the_need() {
        let sizes = MapSizes {
            services: 10,
            slots: 100,
            ..MapSizes::default()
        };
        let cases = [
            ("nothing rejected", vec![], None),
            (
                "weights are not a size problem",
                vec![rejected(RejectReason::TooManySlots {
                    slots: 70000,
                    max: 65536,
                })],
                None,
            ),
            (
                "two full services double once",
                vec![
                    rejected(RejectReason::ServicesFull { max: 10 }),
                    rejected(RejectReason::ServicesFull { max: 10 }),
                ],
                Some(MapSizes {
                    services: 20,
                    ..sizes
                }),
            ),
            (
                "slots grow to the biggest need when doubling is not enough",
                vec![
                    rejected(RejectReason::SlotsFull {
                        need: 50,
                        used: 90,
                        max: 100,
                    }),
                    rejected(RejectReason::SlotsFull {
                        need: 300,
                        used: 90,
                        max: 100,
                    }),
                ],
                Some(MapSizes {
                    slots: 390,
                    ..sizes
                }),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(sizes.grown_for(&input), want, "{name}");
        }
    }
}
