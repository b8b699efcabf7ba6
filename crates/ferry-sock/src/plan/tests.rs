use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;

use super::*;
use crate::model::{Backend, Protocol};

const CAP: Capacity = Capacity {
    services: 100,
    slots: 1000,
    members: 1000,
};

fn key(vpc: u32, last: u8) -> ServiceKey {
    ServiceKey {
        vpc,
        vip: Ipv4Addr::new(10, 96, 0, last),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn be(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), 8080)
}

fn spec(backends: &[u8]) -> ServiceSpec {
    ServiceSpec {
        backends: backends.iter().map(|&b| Backend::new(be(b))).collect(),
        ..ServiceSpec::default()
    }
}

fn desired(services: &[(ServiceKey, ServiceSpec)]) -> Desired {
    Desired {
        services: services.iter().cloned().collect(),
    }
}

fn value(id: u32, set: u32, count: u32) -> ServiceValue {
    ServiceValue {
        id,
        set,
        count,
        affinity_timeout_s: 0,
        algorithm: Algorithm::Random,
    }
}

/// Plans `steps` one after the other and returns the last plan.
fn after(steps: &[Desired], cap: Capacity) -> Plan {
    let mut current = Programmed::default();
    let mut last = plan(&current, &Desired::default(), cap);
    for d in steps {
        last = plan(&current, d, cap);
        current.commit(&last);
    }
    last
}

struct Case {
    name: &'static str,
    /// Applied first, their ops are not checked.
    before: Vec<Desired>,
    desired: Desired,
    cap: Capacity,
    want_ops: Vec<MapOp>,
    want_rejected: Vec<Rejected>,
}

#[test]
fn plan_cases() {
    let affinity = |b: &[u8]| ServiceSpec {
        affinity_timeout_s: 10800,
        ..spec(b)
    };
    let cases = vec![
        Case {
            name: "nothing to nothing",
            before: vec![],
            desired: Desired::default(),
            cap: CAP,
            want_ops: vec![],
            want_rejected: vec![],
        },
        Case {
            name: "new service: slots, then the entry pointing at them",
            before: vec![],
            desired: desired(&[(key(1, 1), spec(&[2, 1]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutSlots {
                    set: 1,
                    slots: vec![be(1), be(2)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: value(1, 1, 2),
                },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "same backends in another order: no writes",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 1), spec(&[2, 1]))]),
            cap: CAP,
            want_ops: vec![],
            want_rejected: vec![],
        },
        Case {
            name: "backend gone: new set, repoint, free the old set",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 1), spec(&[1]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutSlots {
                    set: 2,
                    slots: vec![be(1)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: value(1, 2, 1),
                },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 1, count: 2 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "no healthy backend left: the service leaves the maps (OVN answers)",
            before: vec![desired(&[(key(1, 1), spec(&[1]))])],
            desired: desired(&[(key(1, 1), spec(&[]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::DeleteService { key: key(1, 1) },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 1, count: 1 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "only one of two services changes",
            before: vec![desired(&[(key(1, 1), spec(&[1])), (key(2, 1), spec(&[1]))])],
            desired: desired(&[(key(1, 1), spec(&[1])), (key(2, 1), spec(&[1, 3]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutSlots {
                    set: 3,
                    slots: vec![be(1), be(3)],
                },
                MapOp::PutService {
                    key: key(2, 1),
                    value: value(2, 3, 2),
                },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 2, count: 1 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "affinity switched on: members, then the entry; slots untouched",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 1), affinity(&[1, 2]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutMembers {
                    service: 1,
                    backends: vec![be(1), be(2)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: ServiceValue {
                        affinity_timeout_s: 10800,
                        ..value(1, 1, 2)
                    },
                },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "affinity service loses a backend: its member goes after the repoint",
            before: vec![desired(&[(key(1, 1), affinity(&[1, 2]))])],
            desired: desired(&[(key(1, 1), affinity(&[2]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutSlots {
                    set: 2,
                    slots: vec![be(2)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: ServiceValue {
                        affinity_timeout_s: 10800,
                        ..value(1, 2, 1)
                    },
                },
                MapOp::WaitForReaders,
                MapOp::DeleteMembers {
                    service: 1,
                    backends: vec![be(1)],
                },
                MapOp::DeleteSlots { set: 1, count: 2 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "ids are not reused: a removed service's id and set stay retired",
            before: vec![desired(&[(key(1, 1), spec(&[1]))])],
            desired: desired(&[(key(1, 2), spec(&[1]))]),
            cap: CAP,
            want_ops: vec![
                MapOp::DeleteService { key: key(1, 1) },
                MapOp::PutSlots {
                    set: 2,
                    slots: vec![be(1)],
                },
                MapOp::PutService {
                    key: key(1, 2),
                    value: value(2, 2, 1),
                },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 1, count: 1 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "service map full: the extra service is rejected, the others applied",
            before: vec![],
            desired: desired(&[(key(1, 1), spec(&[1])), (key(1, 2), spec(&[1]))]),
            cap: Capacity { services: 1, ..CAP },
            want_ops: vec![
                MapOp::PutSlots {
                    set: 1,
                    slots: vec![be(1)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: value(1, 1, 1),
                },
            ],
            want_rejected: vec![Rejected {
                key: key(1, 2),
                reason: RejectReason::ServicesFull { max: 1 },
            }],
        },
        Case {
            name: "slot map full at the peak of a change: the service keeps its old backends",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 1), spec(&[1, 2, 3]))]),
            cap: Capacity { slots: 1, ..CAP },
            want_ops: vec![],
            want_rejected: vec![Rejected {
                key: key(1, 1),
                reason: RejectReason::SlotsFull {
                    need: 1,
                    used: 1,
                    max: 1,
                },
            }],
        },
        Case {
            name: "a removal frees its service entry for an addition in the same plan",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 2), spec(&[1, 2]))]),
            cap: Capacity {
                services: 1,
                slots: 2,
                members: 0,
            },
            want_ops: vec![
                MapOp::DeleteService { key: key(1, 1) },
                MapOp::PutSlots {
                    set: 2,
                    slots: vec![be(1), be(2)],
                },
                MapOp::PutService {
                    key: key(1, 2),
                    value: value(2, 2, 2),
                },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 1, count: 2 },
            ],
            want_rejected: vec![],
        },
        Case {
            name: "a removed service's slots count until the plan's end (a hook may read them)",
            before: vec![desired(&[(key(1, 1), spec(&[1, 2]))])],
            desired: desired(&[(key(1, 2), spec(&[1, 2]))]),
            cap: Capacity {
                services: 1,
                slots: 1,
                members: 0,
            },
            want_ops: vec![
                MapOp::DeleteService { key: key(1, 1) },
                MapOp::WaitForReaders,
                MapOp::DeleteSlots { set: 1, count: 2 },
            ],
            want_rejected: vec![Rejected {
                key: key(1, 2),
                reason: RejectReason::SlotsFull {
                    need: 1,
                    used: 1,
                    max: 1,
                },
            }],
        },
        Case {
            name: "weights needing too many slots are rejected",
            before: vec![],
            desired: desired(&[(
                key(1, 1),
                ServiceSpec {
                    backends: vec![
                        Backend {
                            addr: be(1),
                            weight: 65535,
                        },
                        Backend {
                            addr: be(2),
                            weight: 65534,
                        },
                    ],
                    ..ServiceSpec::default()
                },
            )]),
            cap: CAP,
            want_ops: vec![],
            want_rejected: vec![Rejected {
                key: key(1, 1),
                reason: RejectReason::TooManySlots {
                    slots: 131069,
                    max: MAX_SLOTS_PER_SERVICE,
                },
            }],
        },
        Case {
            name: "weights repeat slots; weight 0 drops a backend",
            before: vec![],
            desired: desired(&[(
                key(1, 1),
                ServiceSpec {
                    backends: vec![
                        Backend {
                            addr: be(1),
                            weight: 2,
                        },
                        Backend {
                            addr: be(2),
                            weight: 1,
                        },
                        Backend {
                            addr: be(3),
                            weight: 0,
                        },
                    ],
                    ..ServiceSpec::default()
                },
            )]),
            cap: CAP,
            want_ops: vec![
                MapOp::PutSlots {
                    set: 1,
                    slots: vec![be(1), be(1), be(2)],
                },
                MapOp::PutService {
                    key: key(1, 1),
                    value: value(1, 1, 3),
                },
            ],
            want_rejected: vec![],
        },
    ];
    for c in cases {
        let mut steps = c.before.clone();
        steps.push(c.desired.clone());
        let got = after(&steps, c.cap);
        assert_eq!(got.ops, c.want_ops, "{}: ops", c.name);
        assert_eq!(got.rejected, c.want_rejected, "{}: rejected", c.name);
    }
}

#[test]
fn maglev_service_takes_a_prime_table() {
    let d = desired(&[(
        key(1, 1),
        ServiceSpec {
            algorithm: Algorithm::Maglev,
            ..spec(&[1, 2, 3])
        },
    )]);
    let p = plan(&Programmed::default(), &d, CAP);
    let s = &Programmed::default().after(&p).services[&key(1, 1)];
    assert_eq!(s.slots.len(), 251);
    assert_eq!(
        s.slots.iter().copied().collect::<BTreeSet<_>>(),
        [be(1), be(2), be(3)].into_iter().collect()
    );
}

#[test]
fn fill_writes_every_service_of_a_programmed_state() {
    let d = desired(&[
        (
            key(1, 1),
            ServiceSpec {
                affinity_timeout_s: 60,
                ..spec(&[1])
            },
        ),
        (key(2, 1), spec(&[2])),
    ]);
    let next = Programmed::default().after(&plan(&Programmed::default(), &d, CAP));
    let mut m = Maps::default();
    for op in fill(&next) {
        m.apply(&op);
    }
    assert_eq!(m, Maps::of(&next));
}

/// A model of the three maps, to replay plans op by op.
#[derive(Debug, Default, PartialEq, Eq)]
struct Maps {
    services: BTreeMap<ServiceKey, ServiceValue>,
    slots: BTreeMap<(u32, u32), SocketAddrV4>,
    members: BTreeSet<(u32, SocketAddrV4)>,
}

impl Maps {
    fn apply(&mut self, op: &MapOp) {
        match op {
            MapOp::PutSlots { set, slots } => {
                for (i, s) in slots.iter().enumerate() {
                    self.slots.insert((*set, i as u32), *s);
                }
            }
            MapOp::PutMembers { service, backends } => {
                for b in backends {
                    self.members.insert((*service, *b));
                }
            }
            MapOp::PutService { key, value } => {
                self.services.insert(*key, *value);
            }
            MapOp::DeleteService { key } => {
                self.services.remove(key);
            }
            MapOp::DeleteMembers { service, backends } => {
                for b in backends {
                    assert!(self.members.remove(&(*service, *b)), "member not there");
                }
            }
            MapOp::DeleteSlots { set, count } => {
                for i in 0..*count {
                    assert!(self.slots.remove(&(*set, i)).is_some(), "slot not there");
                }
            }
            MapOp::WaitForReaders => {}
        }
    }

    fn of(p: &Programmed) -> Maps {
        let mut m = Maps::default();
        for (k, s) in &p.services {
            m.services.insert(*k, s.value());
            for (i, a) in s.slots.iter().enumerate() {
                m.slots.insert((s.set, i as u32), *a);
            }
            for b in &s.members {
                m.members.insert((s.id, *b));
            }
        }
        m
    }

    /// What a hook could read at this instant is whole: every service's slots exist,
    /// and no two services share a set (a stale read can never reach another VPC).
    fn check_readable(&self) {
        let mut sets = BTreeSet::new();
        for (k, v) in &self.services {
            assert!(sets.insert(v.set), "{k}: set {} shared", v.set);
            for i in 0..v.count {
                assert!(
                    self.slots.contains_key(&(v.set, i)),
                    "{k}: slot {i} missing"
                );
            }
        }
    }

    /// A hook still holding any of `held` (values it read before they changed) finds
    /// that value's slots.
    fn check_held(&self, held: &[(ServiceKey, ServiceValue)]) {
        for (k, v) in held {
            for i in 0..v.count {
                assert!(
                    self.slots.contains_key(&(v.set, i)),
                    "{k}: slot {i} of set {} gone while a hook may still read it",
                    v.set
                );
            }
        }
    }

    /// Entries per map; slots are counted in map entries of 16.
    fn usage(&self) -> (usize, usize, usize) {
        let mut per_set: BTreeMap<u32, usize> = BTreeMap::new();
        for (set, _) in self.slots.keys() {
            *per_set.entry(*set).or_default() += 1;
        }
        let entries = per_set
            .values()
            .map(|&n| crate::wire::slot_entries(n) as usize)
            .sum();
        (self.services.len(), entries, self.members.len())
    }
}

/// Usage counted from scratch, to check the kept count.
fn recount(p: &Programmed) -> Usage {
    let mut u = Usage::default();
    for s in p.services.values() {
        u.services += 1;
        u.slots += crate::wire::slot_entries(s.slots.len());
        u.members += s.members.len() as u64;
    }
    u
}

fn arb_desired() -> impl Strategy<Value = Desired> {
    let svc = (
        1u32..3,
        1u8..6,
        proptest::collection::vec((1u8..8, 0u16..4), 0..5),
        prop_oneof![Just(Algorithm::Random), Just(Algorithm::Maglev)],
        prop_oneof![Just(0u32), Just(30u32)],
    )
        .prop_map(|(vpc, vip, backends, algorithm, affinity_timeout_s)| {
            (
                key(vpc, vip),
                ServiceSpec {
                    backends: backends
                        .into_iter()
                        .map(|(b, weight)| Backend {
                            addr: be(b),
                            weight,
                        })
                        .collect(),
                    algorithm,
                    affinity_timeout_s,
                },
            )
        });
    proptest::collection::vec(svc, 0..8).prop_map(|v| Desired {
        services: v.into_iter().collect(),
    })
}

proptest! {
    /// Replaying the plan from A to B on maps holding A gives maps holding B, every
    /// intermediate state is readable (also by a hook that read a service value before
    /// it changed), and no map ever exceeds its capacity.
    #[test]
    fn replaying_a_plan_reaches_its_next_state(a in arb_desired(), b in arb_desired(), slots in 12u32..200) {
        let cap = Capacity { services: 6, slots, members: 12 };
        let na = Programmed::default().after(&plan(&Programmed::default(), &a, cap));
        let pb = plan(&na, &b, cap);
        let nb = na.after(&pb);
        let mut maps = Maps::of(&na);
        // Service values a running hook may hold: all it could have read since the last
        // wait for readers.
        let mut held: Vec<_> = maps.services.iter().map(|(k, v)| (*k, *v)).collect();
        for op in &pb.ops {
            maps.apply(op);
            match op {
                MapOp::PutService { key, value } => held.push((*key, *value)),
                MapOp::WaitForReaders => {
                    held = maps.services.iter().map(|(k, v)| (*k, *v)).collect();
                }
                _ => {}
            }
            maps.check_readable();
            maps.check_held(&held);
            let (s, sl, m) = maps.usage();
            prop_assert!(s <= 6 && sl <= slots as usize && m <= 12);
        }
        prop_assert_eq!(&maps, &Maps::of(&nb));
        prop_assert_eq!(nb.usage(), recount(&nb));
        // Everything wanted and not rejected is programmed.
        let rejected: BTreeSet<_> = pb.rejected.iter().map(|r| r.key).collect();
        for (k, s) in &b.services {
            let healthy = s.backends.iter().any(|b| b.weight > 0);
            if healthy && !rejected.contains(k) {
                prop_assert!(nb.services.contains_key(k), "{} missing", k);
            }
            if !healthy {
                prop_assert!(!nb.services.contains_key(k), "{} should be gone", k);
            }
        }
        // A second plan to the same state writes nothing (unless something was rejected,
        // which is retried and may fit now that the plan freed room).
        if pb.rejected.is_empty() {
            prop_assert_eq!(plan(&nb, &b, cap).ops, vec![]);
        }
    }
}

#[test]
fn plan_changes_touches_only_the_listed_services() {
    let d = desired(&[(key(1, 1), spec(&[1, 2])), (key(1, 2), spec(&[1, 2]))]);
    let current = Programmed::default().after(&plan(&Programmed::default(), &d, CAP));
    let changes: BTreeMap<_, _> = [(key(1, 2), Some(spec(&[2]))), (key(1, 3), None)].into();
    let p = plan_changes(&current, &changes, CAP);
    assert_eq!(
        p.ops,
        vec![
            MapOp::PutSlots {
                set: 3,
                slots: vec![be(2)],
            },
            MapOp::PutService {
                key: key(1, 2),
                value: value(2, 3, 1),
            },
            MapOp::WaitForReaders,
            MapOp::DeleteSlots { set: 2, count: 2 },
        ]
    );
    let next = current.after(&p);
    assert_eq!(next.services[&key(1, 1)], current.services[&key(1, 1)]);
    assert_eq!(next.usage(), recount(&next));
}

#[test]
fn a_reordered_spec_is_remembered_without_writes() {
    let current = Programmed::default().after(&plan(
        &Programmed::default(),
        &desired(&[(key(1, 1), spec(&[1, 2]))]),
        CAP,
    ));
    let d = desired(&[(key(1, 1), spec(&[2, 1]))]);
    let p = plan(&current, &d, CAP);
    assert_eq!(p.ops, vec![]);
    let next = current.after(&p);
    assert_eq!(next.services[&key(1, 1)].spec, spec(&[2, 1]));
    // Now it is the remembered spec: the next plan does not even look at it.
    assert_eq!(plan(&next, &d, CAP).updates, vec![]);
}

#[test]
fn after_the_set_counter_wraps_live_sets_are_skipped() {
    let mut current = Programmed::default().after(&plan(
        &Programmed::default(),
        &desired(&[(key(1, 1), spec(&[1])), (key(1, 2), spec(&[2]))]),
        CAP,
    ));
    // Sets 1 and 2 are live; the counter is about to wrap.
    current.next_set = u32::MAX;
    let d = desired(&[
        (key(1, 1), spec(&[1])),
        (key(1, 2), spec(&[2])),
        (key(1, 3), spec(&[3])),
        (key(1, 4), spec(&[4])),
    ]);
    let p = plan(&current, &d, CAP);
    let next = current.after(&p);
    assert!(next.wrapped);
    assert_eq!(next.services[&key(1, 3)].set, u32::MAX);
    // 0 is never used, 1 and 2 are live.
    assert_eq!(next.services[&key(1, 4)].set, 3);
}
