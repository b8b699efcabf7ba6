use super::*;
use proptest::prelude::*;

fn subnet(name: &str, vpc: &str, cidr: &str) -> SubnetInfo {
    SubnetInfo {
        name: name.into(),
        vpc: vpc.into(),
        cidr: cidr.into(),
        gateway: None,
        exclude: vec![],
        namespaces: vec![],
        default: false,
    }
}

fn subnets() -> BTreeMap<String, SubnetInfo> {
    [
        subnet("s1", "vpc1", "10.0.1.0/29"),
        subnet("subnet0", "ovn-cluster", "100.64.0.0/29"),
    ]
    .into_iter()
    .map(|s| (s.name.clone(), s))
    .collect()
}

fn pod(name: &str) -> Holder {
    Holder::Pod {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn ask(holder: Holder, subnet: &str, preset: Option<&str>) -> Request {
    Request {
        holder,
        subnet: subnet.into(),
        preset_ip: preset.map(|p| p.parse().unwrap()),
        preset_mac: None,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The decided addresses, or the error's text, by holder.
fn decide_all(
    held: &[Held],
    requests: &[Request],
    pending: &mut Pending,
) -> Vec<(String, Result<Ipv4Addr, String>)> {
    plan(&subnets(), held, requests, pending)
        .into_iter()
        .map(|(h, r)| (h.to_string(), r.map(|a| a.ip).map_err(|e| e.to_string())))
        .collect()
}

#[test]
fn table() {
    struct Case {
        name: &'static str,
        held: Vec<Held>,
        requests: Vec<Request>,
        want: Vec<(&'static str, Result<&'static str, &'static str>)>,
    }
    let cases = vec![
        Case {
            name: "first free after the gateway, in request order",
            held: vec![],
            requests: vec![ask(pod("a"), "s1", None), ask(pod("b"), "s1", None)],
            want: vec![
                ("pod default/a", Ok("10.0.1.2")),
                ("pod default/b", Ok("10.0.1.3")),
            ],
        },
        Case {
            name: "held addresses of any kind are skipped",
            held: vec![
                Held {
                    subnet: "s1".into(),
                    ip: ip("10.0.1.2"),
                    holder: Holder::BareMetal {
                        namespace: "default".into(),
                        name: "bm".into(),
                    },
                },
                Held {
                    subnet: "s1".into(),
                    ip: ip("10.0.1.3"),
                    holder: Holder::ProbePort {
                        node: "n1".into(),
                        vpc: "vpc1".into(),
                    },
                },
            ],
            requests: vec![ask(pod("a"), "s1", None)],
            want: vec![("pod default/a", Ok("10.0.1.4"))],
        },
        Case {
            name: "a preset address is kept, even the holder's own held one",
            held: vec![Held {
                subnet: "s1".into(),
                ip: ip("10.0.1.5"),
                holder: pod("a"),
            }],
            requests: vec![ask(pod("a"), "s1", Some("10.0.1.5"))],
            want: vec![("pod default/a", Ok("10.0.1.5"))],
        },
        Case {
            name: "a preset address another holder has is refused",
            held: vec![Held {
                subnet: "s1".into(),
                ip: ip("10.0.1.5"),
                holder: pod("a"),
            }],
            requests: vec![ask(pod("b"), "s1", Some("10.0.1.5"))],
            want: vec![(
                "pod default/b",
                Err("10.0.1.5 in subnet s1 is already used by pod default/a"),
            )],
        },
        Case {
            name: "a preset address outside the subnet is refused",
            held: vec![],
            requests: vec![ask(pod("a"), "s1", Some("10.0.2.5"))],
            want: vec![(
                "pod default/a",
                Err("10.0.2.5 is outside subnet s1 (10.0.1.0/29)"),
            )],
        },
        Case {
            name: "an unknown subnet names it",
            held: vec![],
            requests: vec![ask(pod("a"), "nope", None)],
            want: vec![("pod default/a", Err("subnet nope does not exist"))],
        },
        Case {
            name: "an exhausted subnet says so and the others still get theirs",
            held: vec![],
            requests: (0..6)
                .map(|i| ask(pod(&format!("p{i}")), "s1", None))
                .chain([ask(Holder::Node("n1".into()), "subnet0", None)])
                .collect(),
            want: vec![
                ("pod default/p0", Ok("10.0.1.2")),
                ("pod default/p1", Ok("10.0.1.3")),
                ("pod default/p2", Ok("10.0.1.4")),
                ("pod default/p3", Ok("10.0.1.5")),
                ("pod default/p4", Ok("10.0.1.6")),
                (
                    "pod default/p5",
                    Err("subnet s1: no free address left in 10.0.1.0/29"),
                ),
                ("node n1", Ok("100.64.0.2")),
            ],
        },
    ];
    for c in cases {
        let got = decide_all(&c.held, &c.requests, &mut Pending::default());
        let want: Vec<(String, Result<Ipv4Addr, String>)> = c
            .want
            .into_iter()
            .map(|(h, r)| (h.to_string(), r.map(ip).map_err(String::from)))
            .collect();
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn a_pending_address_is_not_given_again_until_seen_or_forgotten() {
    let mut pending = Pending::default();
    let first = decide_all(&[], &[ask(pod("a"), "s1", None)], &mut pending);
    assert_eq!(first[0].1, Ok(ip("10.0.1.2")));
    // The cache does not show it yet: a is not asked again, b gets the next one.
    let second = decide_all(
        &[],
        &[ask(pod("a"), "s1", None), ask(pod("b"), "s1", None)],
        &mut pending,
    );
    assert_eq!(
        second,
        vec![("pod default/b".to_string(), Ok(ip("10.0.1.3")))]
    );
    // a's write failed: it is forgotten, asked again and gets its address back.
    pending.forget(&pod("a"));
    let third = decide_all(&[], &[ask(pod("a"), "s1", None)], &mut pending);
    assert_eq!(
        third,
        vec![("pod default/a".to_string(), Ok(ip("10.0.1.2")))]
    );
}

#[test]
fn a_node_address_has_no_subnet_annotations_and_a_pod_has_them() {
    let out = plan(
        &subnets(),
        &[],
        &[
            ask(Holder::Node("n1".into()), "subnet0", None),
            ask(pod("a"), "s1", None),
        ],
        &mut Pending::default(),
    );
    let node = out[0].1.clone().unwrap().address();
    assert_eq!((node.subnet, node.vpc), (None, None));
    assert_eq!(node.gateway, ip("100.64.0.1"));
    let p = out[1].1.clone().unwrap().address();
    assert_eq!(
        (p.subnet.as_deref(), p.vpc.as_deref(), p.ip_cidr()),
        (Some("s1"), Some("vpc1"), "10.0.1.2/29".to_string())
    );
}

fn any_holder() -> impl Strategy<Value = Holder> {
    let name = "[a-c]";
    prop_oneof![
        name.prop_map(|n| pod(&n)),
        name.prop_map(|n| Holder::Vmi {
            namespace: "default".into(),
            name: n
        }),
        name.prop_map(|n| Holder::BareMetal {
            namespace: "default".into(),
            name: n
        }),
        name.prop_map(|n| Holder::VNicIP {
            namespace: "default".into(),
            name: n
        }),
        name.prop_map(|n| Holder::ProbePort {
            node: n,
            vpc: "vpc1".into()
        }),
    ]
}

proptest! {
    /// Across kinds, passes, presets, forgotten writes and a lagging cache, no address of a
    /// subnet is ever held by two holders.
    #[test]
    fn no_address_is_given_twice_across_kinds(
        steps in proptest::collection::vec(
            (any_holder(), proptest::option::of(2u8..7), any::<bool>(), any::<bool>()), 1..40)
    ) {
        let mut pending = Pending::default();
        // What the cache shows: holder -> address (written and echoed).
        let mut shown: BTreeMap<Holder, Ipv4Addr> = BTreeMap::new();
        for (holder, preset, write_fails, echoed) in steps {
            if shown.contains_key(&holder) {
                continue;
            }
            let held: Vec<Held> = shown
                .iter()
                .map(|(h, ip)| Held { subnet: "s1".into(), ip: *ip, holder: h.clone() })
                .collect();
            let req = Request {
                holder: holder.clone(),
                subnet: "s1".into(),
                preset_ip: preset.map(|p| Ipv4Addr::new(10, 0, 1, p)),
                preset_mac: None,
            };
            for (h, r) in plan(&subnets(), &held, &[req], &mut pending) {
                let Ok(a) = r else { continue };
                if write_fails {
                    pending.forget(&h);
                } else if echoed {
                    shown.insert(h, a.ip);
                }
            }
            // Every address shown or pending belongs to one holder only.
            let mut owners: BTreeMap<Ipv4Addr, BTreeSet<Holder>> = BTreeMap::new();
            for (h, ip) in &shown {
                owners.entry(*ip).or_default().insert(h.clone());
            }
            for h in pending.held() {
                owners.entry(h.ip).or_default().insert(h.holder);
            }
            for (ip, hs) in owners {
                prop_assert!(hs.len() == 1, "{ip} held by {hs:?}");
            }
        }
    }
}
