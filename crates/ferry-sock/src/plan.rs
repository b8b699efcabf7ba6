//! The pure planner: from what the maps hold ([`Programmed`]) and what is wanted
//! ([`Desired`]) to the ordered map operations that get there ([`MapOp`]), touching only
//! the services that changed.
//!
//! Order matters because the hooks read the maps while they change:
//! * a changed backend list goes to a **new backend set**, written before the service
//!   entry points at it, so a hook never sees a slot count that does not match the slots;
//! * what the old service values point at (old sets, removed members) is deleted only at
//!   the end of a plan, after one [`MapOp::WaitForReaders`]: a hook that read a service
//!   value just before it changed still finds that value's slots (deleting them at once
//!   left such a connect untranslated, and it failed with "network unreachable");
//! * set ids are never reused within a run of ids (a monotonically increasing counter that
//!   skips live ids), so a hook still holding an old service value cannot read another
//!   service's slots (which could belong to another VPC);
//! * affinity members are added before the service entry changes;
//! * removed services' entries go first; their slots and members go with the rest at the
//!   end, so capacity is counted at the plan's peak, with everything old still there.
//!
//! Planning is incremental: a service whose desired spec equals the one it was programmed
//! from is not looked at again, so a probe flip costs one service's work whatever the
//! number of services ([`plan_changes`] skips even the comparison when the caller knows
//! which services changed).
//!
//! A service that cannot be programmed (a map would overflow, too many weighted slots)
//! keeps its previous programming and is reported in [`Plan::rejected`]; every other
//! service is still applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use crate::maglev::{maglev_size, maglev_slots, random_slots};
use crate::model::{Algorithm, Desired, ServiceKey, ServiceSpec};
use crate::wire::{ServiceValue, slot_entries};

/// Most slots one service may take (weights are reduced by their gcd first).
pub const MAX_SLOTS_PER_SERVICE: usize = 65536;

/// How many entries the size-limited maps can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub services: u32,
    /// Slot-map entries, of [`crate::wire::SLOTS_PER_ENTRY`] slots each.
    pub slots: u32,
    pub members: u32,
}

/// One service as it is in the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammedService {
    pub id: u32,
    pub set: u32,
    pub slots: Vec<SocketAddrV4>,
    pub algorithm: Algorithm,
    pub affinity_timeout_s: u32,
    /// Backends in the member map (only for services with affinity).
    pub members: BTreeSet<SocketAddrV4>,
    /// The spec this was programmed from: an equal desired spec needs no work.
    pub spec: ServiceSpec,
}

impl ProgrammedService {
    fn value(&self) -> ServiceValue {
        ServiceValue {
            id: self.id,
            set: self.set,
            count: self.slots.len() as u32,
            affinity_timeout_s: self.affinity_timeout_s,
            algorithm: self.algorithm,
        }
    }
}

/// What the service, slot and member maps hold, plus the id counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    services: BTreeMap<ServiceKey, ProgrammedService>,
    next_service_id: u32,
    next_set: u32,
    /// A counter went past `u32::MAX`: from then on fresh ids are checked against the
    /// live ones (before, every id below the counter was handed out once, so none is).
    wrapped: bool,
    /// Kept with `services` by [`Programmed::commit`], so planning a flip is not O(n).
    usage: Usage,
}

impl Default for Programmed {
    fn default() -> Self {
        Programmed {
            services: BTreeMap::new(),
            next_service_id: 1,
            next_set: 1,
            wrapped: false,
            usage: Usage::default(),
        }
    }
}

impl Programmed {
    /// Entries used in each map.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The programmed services.
    pub fn services(&self) -> &BTreeMap<ServiceKey, ProgrammedService> {
        &self.services
    }

    /// Records that `plan`'s operations ran.
    pub fn commit(&mut self, plan: &Plan) {
        for (key, update) in &plan.updates {
            if let Some(old) = self.services.remove(key) {
                self.usage.services -= 1;
                self.usage.slots -= slot_entries(old.slots.len());
                self.usage.members -= old.members.len() as u64;
            }
            if let Some(new) = update {
                self.usage.services += 1;
                self.usage.slots += slot_entries(new.slots.len());
                self.usage.members += new.members.len() as u64;
                self.services.insert(*key, new.clone());
            }
        }
        self.next_service_id = plan.next_service_id;
        self.next_set = plan.next_set;
        self.wrapped |= plan.wrapped;
    }

    /// Nothing programmed, with fresh service ids above `max_service_id` and sets above
    /// `max_set`: for maps adopted from another owner, whose entries keep their ids until
    /// they are replaced, so old and new entries never share one.
    pub fn above(max_service_id: u32, max_set: u32) -> Programmed {
        Programmed {
            next_service_id: max_service_id.saturating_add(1),
            next_set: max_set.saturating_add(1),
            ..Programmed::default()
        }
    }

    /// This state after `plan`.
    pub fn after(&self, plan: &Plan) -> Programmed {
        let mut next = self.clone();
        next.commit(plan);
        next
    }
}

/// Entries in use per map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub services: u64,
    /// Slot-map entries (a service takes `ceil(slots / 16)`).
    pub slots: u64,
    pub members: u64,
}

/// One change to the maps. Executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Write slots `(set, 0..)`.
    PutSlots {
        set: u32,
        slots: Vec<SocketAddrV4>,
    },
    PutMembers {
        service: u32,
        backends: Vec<SocketAddrV4>,
    },
    PutService {
        key: ServiceKey,
        value: ServiceValue,
    },
    DeleteService {
        key: ServiceKey,
    },
    DeleteMembers {
        service: u32,
        backends: Vec<SocketAddrV4>,
    },
    /// Delete slots `(set, 0..count)`.
    DeleteSlots {
        set: u32,
        count: u32,
    },
    /// Wait until every hook that may have read a map before this point has returned, so
    /// that what follows can delete what such a hook may still look up.
    WaitForReaders,
}

/// Why a service was not (re)programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The service map holds `max` services.
    ServicesFull {
        max: u32,
    },
    /// The slot map cannot take `need` more entries (the new set is written before the
    /// old one is freed).
    SlotsFull {
        need: u64,
        used: u64,
        max: u32,
    },
    MembersFull {
        need: u64,
        used: u64,
        max: u32,
    },
    /// The weights need more slots than one service may take.
    TooManySlots {
        slots: usize,
        max: usize,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::ServicesFull { max } => {
                write!(f, "service map full ({max} services); resize the maps")
            }
            RejectReason::SlotsFull { need, used, max } => write!(
                f,
                "backend slot map full: {need} more entries needed, {used} of {max} used; resize the maps"
            ),
            RejectReason::MembersFull { need, used, max } => write!(
                f,
                "affinity member map full: {need} more needed, {used} of {max} used; resize the maps"
            ),
            RejectReason::TooManySlots { slots, max } => write!(
                f,
                "weights need {slots} slots, more than {max} per service; use smaller or rounder weights"
            ),
        }
    }
}

/// A service left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub key: ServiceKey,
    pub reason: RejectReason,
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    /// Services whose programming changes (`None`: removed), for
    /// [`Programmed::commit`] once `ops` ran.
    pub updates: Vec<(ServiceKey, Option<ProgrammedService>)>,
    pub next_service_id: u32,
    pub next_set: u32,
    pub wrapped: bool,
    pub rejected: Vec<Rejected>,
}

/// What one desired service becomes in the maps, before ids are given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    slots: Vec<SocketAddrV4>,
    algorithm: Algorithm,
    affinity_timeout_s: u32,
    members: BTreeSet<SocketAddrV4>,
}

/// Distinct backends with weight > 0 (duplicates' weights add up), sorted, so the same
/// set of backends always gives the same slots whatever order the caller lists them in.
fn normalize(spec: &ServiceSpec) -> Vec<(SocketAddrV4, u16)> {
    let mut by_addr: BTreeMap<SocketAddrV4, u16> = BTreeMap::new();
    for b in spec.backends.iter().filter(|b| b.weight > 0) {
        let w = by_addr.entry(b.addr).or_default();
        *w = w.saturating_add(b.weight);
    }
    by_addr.into_iter().collect()
}

fn shape(spec: &ServiceSpec) -> Result<Option<Shape>, RejectReason> {
    let backends = normalize(spec);
    if backends.is_empty() {
        return Ok(None);
    }
    let slots = match spec.algorithm {
        Algorithm::Random => {
            let total: usize = {
                let g = backends
                    .iter()
                    .fold(0u32, |g, &(_, w)| gcd(g, w as u32))
                    .max(1);
                backends.iter().map(|&(_, w)| (w as u32 / g) as usize).sum()
            };
            if total > MAX_SLOTS_PER_SERVICE {
                return Err(RejectReason::TooManySlots {
                    slots: total,
                    max: MAX_SLOTS_PER_SERVICE,
                });
            }
            random_slots(&backends)
        }
        Algorithm::Maglev => maglev_slots(&backends, maglev_size(backends.len())),
    };
    let members = if spec.affinity_timeout_s > 0 {
        backends.iter().map(|&(a, _)| a).collect()
    } else {
        BTreeSet::new()
    };
    Ok(Some(Shape {
        slots,
        algorithm: spec.algorithm,
        affinity_timeout_s: spec.affinity_timeout_s,
        members,
    }))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Hands out ids from a counter that skips 0 and, once the counter has wrapped, every
/// id still live (or handed out earlier in this plan).
struct Ids<'a> {
    counter: u32,
    wrapped: bool,
    fresh: BTreeSet<u32>,
    live: Option<BTreeSet<u32>>,
    current: &'a Programmed,
    of: fn(&ProgrammedService) -> u32,
}

impl<'a> Ids<'a> {
    fn new(current: &'a Programmed, counter: u32, of: fn(&ProgrammedService) -> u32) -> Self {
        Ids {
            counter,
            wrapped: current.wrapped,
            fresh: BTreeSet::new(),
            live: None,
            current,
            of,
        }
    }

    fn next(&mut self) -> u32 {
        loop {
            let id = self.counter;
            self.counter = self.counter.wrapping_add(1);
            if self.counter == 0 {
                self.counter = 1;
                self.wrapped = true;
            }
            if id == 0 || !self.fresh.insert(id) {
                continue;
            }
            if !self.wrapped {
                return id;
            }
            let (current, of) = (self.current, self.of);
            let live = self
                .live
                .get_or_insert_with(|| current.services.values().map(of).collect());
            if !live.contains(&id) {
                return id;
            }
        }
    }
}

/// Plans the map operations that turn `current` into `desired` within `cap`. Services
/// whose spec equals the one they were programmed from are skipped without further work.
pub fn plan(current: &Programmed, desired: &Desired, cap: Capacity) -> Plan {
    let mut changes: BTreeMap<ServiceKey, Option<&ServiceSpec>> = BTreeMap::new();
    for key in current.services.keys() {
        if !desired.services.contains_key(key) {
            changes.insert(*key, None);
        }
    }
    for (key, spec) in &desired.services {
        if current.services.get(key).is_none_or(|o| &o.spec != spec) {
            changes.insert(*key, Some(spec));
        }
    }
    plan_inner(current, &changes, cap)
}

/// Like [`plan`] for a caller that knows which services changed: `changes` maps each to
/// its new spec, or `None` when it is gone. Services not listed are left as they are.
pub fn plan_changes(
    current: &Programmed,
    changes: &BTreeMap<ServiceKey, Option<ServiceSpec>>,
    cap: Capacity,
) -> Plan {
    let changes = changes.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    plan_inner(current, &changes, cap)
}

fn plan_inner(
    current: &Programmed,
    changes: &BTreeMap<ServiceKey, Option<&ServiceSpec>>,
    cap: Capacity,
) -> Plan {
    let mut ops = Vec::new();
    let mut updates = Vec::new();
    let mut rejected = Vec::new();
    let mut usage = current.usage();
    let mut ids = Ids::new(current, current.next_service_id, |s| s.id);
    let mut sets = Ids::new(current, current.next_set, |s| s.set);

    let mut removals = Vec::new();
    let mut wanted = Vec::new();
    for (key, spec) in changes {
        match spec.map(shape) {
            None | Some(Ok(None)) => removals.push(*key),
            Some(Ok(Some(shape))) => wanted.push((*key, shape, *spec)),
            // Keeps whatever it had.
            Some(Err(reason)) => rejected.push(Rejected { key: *key, reason }),
        }
    }

    // What old service values point at, deleted once no hook can be reading them.
    let mut retired = Vec::new();

    // Removed services' entries first: they free room in the service map.
    for key in removals {
        let Some(old) = current.services.get(&key) else {
            continue;
        };
        ops.push(MapOp::DeleteService { key });
        if !old.members.is_empty() {
            retired.push(MapOp::DeleteMembers {
                service: old.id,
                backends: old.members.iter().copied().collect(),
            });
        }
        retired.push(MapOp::DeleteSlots {
            set: old.set,
            count: old.slots.len() as u32,
        });
        usage.services -= 1;
        updates.push((key, None));
    }

    for (key, want, spec) in wanted {
        let spec = spec.cloned().unwrap_or_default();
        let old = current.services.get(&key);
        if let Some(old) = old
            && old.slots == want.slots
            && old.algorithm == want.algorithm
            && old.affinity_timeout_s == want.affinity_timeout_s
            && old.members == want.members
        {
            // Same programming from a different-looking spec (order, duplicates).
            updates.push((
                key,
                Some(ProgrammedService {
                    spec,
                    ..old.clone()
                }),
            ));
            continue;
        }
        let slots_change = old.is_none_or(|o| o.slots != want.slots);
        let empty = BTreeSet::new();
        let old_members = old.map_or(&empty, |o| &o.members);
        let added: Vec<SocketAddrV4> = want.members.difference(old_members).copied().collect();
        let removed: Vec<SocketAddrV4> = old_members.difference(&want.members).copied().collect();

        // Capacity at the peak of this service's change.
        if old.is_none() && usage.services + 1 > cap.services as u64 {
            rejected.push(Rejected {
                key,
                reason: RejectReason::ServicesFull { max: cap.services },
            });
            continue;
        }
        let new_slots = if slots_change {
            slot_entries(want.slots.len())
        } else {
            0
        };
        if usage.slots + new_slots > cap.slots as u64 {
            rejected.push(Rejected {
                key,
                reason: RejectReason::SlotsFull {
                    need: new_slots,
                    used: usage.slots,
                    max: cap.slots,
                },
            });
            continue;
        }
        if usage.members + added.len() as u64 > cap.members as u64 {
            rejected.push(Rejected {
                key,
                reason: RejectReason::MembersFull {
                    need: added.len() as u64,
                    used: usage.members,
                    max: cap.members,
                },
            });
            continue;
        }

        let id = match old {
            Some(o) => o.id,
            None => ids.next(),
        };
        let set = match old {
            Some(o) if !slots_change => o.set,
            _ => sets.next(),
        };
        let programmed = ProgrammedService {
            id,
            set,
            slots: want.slots,
            algorithm: want.algorithm,
            affinity_timeout_s: want.affinity_timeout_s,
            members: want.members,
            spec,
        };
        if slots_change {
            ops.push(MapOp::PutSlots {
                set,
                slots: programmed.slots.clone(),
            });
        }
        if !added.is_empty() {
            ops.push(MapOp::PutMembers {
                service: id,
                backends: added.clone(),
            });
        }
        ops.push(MapOp::PutService {
            key,
            value: programmed.value(),
        });
        if !removed.is_empty() {
            retired.push(MapOp::DeleteMembers {
                service: id,
                backends: removed,
            });
        }
        match old {
            Some(o) if slots_change => retired.push(MapOp::DeleteSlots {
                set: o.set,
                count: o.slots.len() as u32,
            }),
            Some(_) => {}
            None => usage.services += 1,
        }
        usage.slots += new_slots;
        usage.members += added.len() as u64;
        updates.push((key, Some(programmed)));
    }

    if !retired.is_empty() {
        ops.push(MapOp::WaitForReaders);
        ops.append(&mut retired);
    }

    Plan {
        ops,
        updates,
        wrapped: ids.wrapped || sets.wrapped,
        next_service_id: ids.counter,
        next_set: sets.counter,
        rejected,
    }
}

/// Operations that write everything in `programmed` into empty maps: used to fill a
/// fresh (bigger, or rebuilt after a failed apply) map set before it is swapped in.
pub fn fill(programmed: &Programmed) -> Vec<MapOp> {
    let mut ops = Vec::new();
    for (key, s) in &programmed.services {
        ops.push(MapOp::PutSlots {
            set: s.set,
            slots: s.slots.clone(),
        });
        if !s.members.is_empty() {
            ops.push(MapOp::PutMembers {
                service: s.id,
                backends: s.members.iter().copied().collect(),
            });
        }
        ops.push(MapOp::PutService {
            key: *key,
            value: s.value(),
        });
    }
    ops
}

#[cfg(test)]
mod tests;
