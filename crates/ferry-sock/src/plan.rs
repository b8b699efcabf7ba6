//! The pure planner: from what the maps hold ([`Programmed`]) and what is wanted
//! ([`Desired`]) to the ordered map operations that get there ([`MapOp`]), touching only
//! the services that changed.
//!
//! Order matters because the hooks read the maps while they change:
//! * a changed backend list goes to a **new backend set**, written before the service
//!   entry points at it, and the old set is deleted after, so a hook never sees a slot
//!   count that does not match the slots;
//! * set ids are never reused within a run of ids (a monotonically increasing counter that
//!   skips live ids), so a hook still holding an old service value cannot read another
//!   service's slots (which could belong to another VPC);
//! * affinity members are added before and removed after the service entry changes;
//! * removed services go first, so their slots free room for the rest.
//!
//! A service that cannot be programmed (a map would overflow, too many weighted slots)
//! keeps its previous programming and is reported in [`Plan::rejected`]; every other
//! service is still applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use crate::maglev::{maglev_size, maglev_slots, random_slots};
use crate::model::{Algorithm, Desired, ServiceKey, ServiceSpec};
use crate::wire::ServiceValue;

/// Most slots one service may take (weights are reduced by their gcd first).
pub const MAX_SLOTS_PER_SERVICE: usize = 65536;

/// How many entries the size-limited maps can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub services: u32,
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
    pub services: BTreeMap<ServiceKey, ProgrammedService>,
    pub next_service_id: u32,
    pub next_set: u32,
}

impl Default for Programmed {
    fn default() -> Self {
        Programmed {
            services: BTreeMap::new(),
            next_service_id: 1,
            next_set: 1,
        }
    }
}

impl Programmed {
    /// Entries used in each map.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for s in self.services.values() {
            u.services += 1;
            u.slots += s.slots.len() as u64;
            u.members += s.members.len() as u64;
        }
        u
    }
}

/// Entries in use per map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub services: u64,
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
}

/// Why a service was not (re)programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The service map holds `max` services.
    ServicesFull {
        max: u32,
    },
    /// The slot map cannot take `need` more slots (the new set is written before the old
    /// one is freed).
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
                "backend slot map full: {need} more slots needed, {used} of {max} used; resize the maps"
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
    /// What the maps hold once `ops` ran.
    pub next: Programmed,
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

/// Next id from `counter` that is neither 0 nor in `in_use`; marks it used.
fn alloc(counter: &mut u32, in_use: &mut BTreeSet<u32>) -> u32 {
    loop {
        let id = *counter;
        *counter = counter.wrapping_add(1).max(1);
        if id != 0 && in_use.insert(id) {
            return id;
        }
    }
}

/// Plans the map operations that turn `current` into `desired` within `cap`.
pub fn plan(current: &Programmed, desired: &Desired, cap: Capacity) -> Plan {
    let mut next = current.clone();
    let mut ops = Vec::new();
    let mut rejected = Vec::new();
    let mut usage = current.usage();
    let mut ids: BTreeSet<u32> = current.services.values().map(|s| s.id).collect();
    let mut sets: BTreeSet<u32> = current.services.values().map(|s| s.set).collect();

    let mut shapes: BTreeMap<ServiceKey, Shape> = BTreeMap::new();
    for (key, spec) in &desired.services {
        match shape(spec) {
            Ok(Some(s)) => {
                shapes.insert(*key, s);
            }
            Ok(None) => {}
            Err(reason) => {
                rejected.push(Rejected { key: *key, reason });
                // Keep whatever it had: treat as unchanged.
                if let Some(old) = current.services.get(key) {
                    shapes.insert(
                        *key,
                        Shape {
                            slots: old.slots.clone(),
                            algorithm: old.algorithm,
                            affinity_timeout_s: old.affinity_timeout_s,
                            members: old.members.clone(),
                        },
                    );
                }
            }
        }
    }

    // Removals first: they free room.
    for (key, old) in &current.services {
        if shapes.contains_key(key) {
            continue;
        }
        ops.push(MapOp::DeleteService { key: *key });
        if !old.members.is_empty() {
            ops.push(MapOp::DeleteMembers {
                service: old.id,
                backends: old.members.iter().copied().collect(),
            });
        }
        ops.push(MapOp::DeleteSlots {
            set: old.set,
            count: old.slots.len() as u32,
        });
        usage.services -= 1;
        usage.slots -= old.slots.len() as u64;
        usage.members -= old.members.len() as u64;
        next.services.remove(key);
    }

    for (key, want) in shapes {
        let old = current.services.get(&key);
        if let Some(old) = old
            && old.slots == want.slots
            && old.algorithm == want.algorithm
            && old.affinity_timeout_s == want.affinity_timeout_s
            && old.members == want.members
        {
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
            want.slots.len() as u64
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
            None => alloc(&mut next.next_service_id, &mut ids),
        };
        let set = if slots_change {
            alloc(&mut next.next_set, &mut sets)
        } else {
            old.map_or(0, |o| o.set)
        };
        let programmed = ProgrammedService {
            id,
            set,
            slots: want.slots,
            algorithm: want.algorithm,
            affinity_timeout_s: want.affinity_timeout_s,
            members: want.members,
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
            ops.push(MapOp::DeleteMembers {
                service: id,
                backends: removed.clone(),
            });
        }
        match old {
            Some(o) if slots_change => {
                ops.push(MapOp::DeleteSlots {
                    set: o.set,
                    count: o.slots.len() as u32,
                });
                usage.slots -= o.slots.len() as u64;
            }
            Some(_) => {}
            None => usage.services += 1,
        }
        usage.slots += new_slots;
        usage.members = usage.members + added.len() as u64 - removed.len() as u64;
        next.services.insert(key, programmed);
    }

    Plan {
        ops,
        next,
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
