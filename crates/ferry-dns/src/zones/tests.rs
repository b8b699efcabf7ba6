use super::*;
use crate::answer::{Decision, answer};
use crate::fixtures::{self, sample};
use crate::wire::{CLASS_IN, Header, Message, Question, RCODE_NXDOMAIN, TYPE_ANY, TYPE_PTR};
use proptest::prelude::*;

fn names(z: &Zones, vpc: &str) -> Vec<String> {
    z.vpc(vpc).names().map(str::to_string).collect()
}

#[test]
fn each_vpc_holds_exactly_its_names() {
    let z = build_zones("cluster.local", &sample());
    assert_eq!(
        z.vpcs().collect::<Vec<_>>(),
        ["ovn-cluster", "vpc1", "vpc2"]
    );
    assert_eq!(
        names(&z, "vpc1"),
        [
            "100.0.96.10.in-addr.arpa",
            "101.0.96.10.in-addr.arpa",
            "102.0.96.10.in-addr.arpa",
            "_http._tcp.ysvc1.default.svc.cluster.local",
            "dup.default.svc.cluster.local",
            "shared.default.svc.cluster.local",
            "ysvc1.default.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(&z, "vpc2"),
        [
            "101.0.96.10.in-addr.arpa",
            "shared.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        names(&z, "ovn-cluster"),
        [
            "10-16-0-6.db.default.svc.cluster.local",
            "103.0.96.10.in-addr.arpa",
            "20.0.96.10.in-addr.arpa",
            "30.0.96.10.in-addr.arpa",
            "40.0.96.10.in-addr.arpa",
            "5.0.16.10.in-addr.arpa",
            "50.0.96.10.in-addr.arpa",
            "6.0.16.10.in-addr.arpa",
            "_dns._udp.web.default.svc.cluster.local",
            "_http._tcp.np.default.svc.cluster.local",
            "_http._tcp.web.default.svc.cluster.local",
            "_pg._tcp.db.default.svc.cluster.local",
            "alias.default.svc.cluster.local",
            "both.default.svc.cluster.local",
            "db-0.db.default.svc.cluster.local",
            "db.default.svc.cluster.local",
            "dup.default.svc.cluster.local",
            "ext.default.svc.cluster.local",
            "lb.default.svc.cluster.local",
            "np.default.svc.cluster.local",
            "web.default.svc.cluster.local",
        ]
    );
}

#[test]
fn the_generated_services_backends_appear_nowhere() {
    let z = build_zones("cluster.local", &sample());
    let leaked = RData::A("192.168.1.10".parse().expect("ip"));
    for vpc in ["ovn-cluster", "vpc1", "vpc2"] {
        let zone = z.vpc(vpc);
        for name in zone.names() {
            let set = zone.records(name).expect("records");
            assert!(!set.contains(&leaked), "{vpc} {name}");
            assert!(!name.starts_with("10.1.168.192"), "{vpc} {name}");
        }
    }
}

#[test]
fn empty_non_terminals_are_per_vpc() {
    let z = build_zones("cluster.local", &sample());
    let ent = |vpc: &str, key: &str| z.vpc(vpc).is_empty_non_terminal(key);
    assert!(ent("ovn-cluster", "default.svc.cluster.local"));
    assert!(ent("ovn-cluster", "_tcp.web.default.svc.cluster.local"));
    assert!(ent("vpc2", "svc.cluster.local"));
    assert!(!ent("vpc2", "_tcp.ysvc1.default.svc.cluster.local"));
    assert!(!ent("vpc9", "default.svc.cluster.local"));
}

/// A federated service's global name (a headless Service labelled [`GLOBAL_LABEL`] whose
/// slice holds the serving members' EIPs) answers those EIPs in every VPC: the default one,
/// vpc1 and vpc2, and a VPC with no other name (vpc9), where a YusurService's name still
/// does not leak. A VPC's own record wins over a global one of the same owner name.
#[test]
fn global_names_are_in_every_vpc() {
    let mut snap = sample();
    let mut global = fixtures::headless("default", "web-global", &[]);
    global.metadata.labels = Some(std::collections::BTreeMap::from([(
        GLOBAL_LABEL.to_string(),
        "true".to_string(),
    )]));
    snap.services.push(global);
    snap.slices.push(fixtures::slice(
        "default",
        "web-global",
        &[
            ("198.18.1.151", None, Some(true)),
            ("198.18.2.152", None, Some(true)),
            ("198.18.3.153", None, Some(false)),
        ],
        &[],
    ));
    // A YusurService of vpc1 of the same name: vpc1 answers its address instead.
    snap.ysvcs.push(fixtures::ysvc(
        "default",
        "web-global",
        &["vpc1"],
        Some("10.96.0.99"),
        &[],
    ));
    let z = build_zones("cluster.local", &snap);
    let name = "web-global.default.svc.cluster.local";
    let got = |vpc: &str| {
        let (rcode, ips) = addresses(&answer(&z, vpc, &query(name, crate::wire::TYPE_A)));
        (rcode, ips.into_iter().collect::<Vec<_>>())
    };
    let eips = (
        Some(0),
        vec!["A 198.18.1.151".to_string(), "A 198.18.2.152".into()],
    );
    for vpc in ["ovn-cluster", "vpc2", "vpc9"] {
        assert_eq!(got(vpc), eips, "{vpc}");
        assert!(
            z.vpc(vpc).records("151.1.18.198.in-addr.arpa").is_some(),
            "{vpc}"
        );
        assert!(
            z.vpc(vpc)
                .records("ysvc1.default.svc.cluster.local")
                .is_none(),
            "{vpc}"
        );
    }
    assert_eq!(got("vpc1"), (Some(0), vec!["A 10.96.0.99".to_string()]));
    assert!(
        z.vpc("vpc9")
            .is_empty_non_terminal("default.svc.cluster.local")
    );
    assert_eq!(
        z.vpcs().collect::<Vec<_>>(),
        ["ovn-cluster", "vpc1", "vpc2"],
        "the global zone is no VPC"
    );
}

#[test]
fn reverse_names_table() {
    for (ip, want) in [
        ("10.96.0.20", "20.0.96.10.in-addr.arpa"),
        (
            "fd00::1",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        ),
    ] {
        assert_eq!(reverse_name(ip.parse().expect("ip")), want);
    }
}

#[test]
fn in_domain_table() {
    let z = Zones::empty("Cluster.Local.");
    assert_eq!(z.domain(), "cluster.local");
    for (key, want) in [
        ("cluster.local", true),
        ("x.cluster.local", true),
        ("a.b.svc.cluster.local", true),
        ("xcluster.local", false),
        ("local", false),
        ("example.com", false),
    ] {
        assert_eq!(z.in_domain(key), want, "{key}");
    }
}

#[test]
fn a_custom_cluster_domain_names_everything_under_it() {
    let z = build_zones("corp.internal", &sample());
    assert!(
        z.vpc("vpc1")
            .records("ysvc1.default.svc.corp.internal")
            .is_some()
    );
    assert!(
        z.vpc("vpc1")
            .records("ysvc1.default.svc.cluster.local")
            .is_none()
    );
}

#[test]
fn ipv6_and_dual_stack_cluster_ips_give_aaaa_too() {
    let mut svc = fixtures::service("default", "v6", "ClusterIP", "10.96.0.9", &[]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ips = Some(vec!["10.96.0.9".into(), "fd00::9".into()]);
    }
    let z = build_zones(
        "cluster.local",
        &Snapshot {
            services: vec![svc],
            ..Default::default()
        },
    );
    let set = z.vpc("ovn-cluster").records("v6.default.svc.cluster.local");
    let want = BTreeSet::from([
        RData::A("10.96.0.9".parse().expect("ip")),
        RData::Aaaa("fd00::9".parse().expect("ip")),
    ]);
    assert_eq!(set, Some(&want));
}

#[test]
fn serial_follows_the_records() {
    let a = build_zones("cluster.local", &sample());
    let b = build_zones("cluster.local", &sample());
    assert_eq!(a.soa().serial, b.soa().serial);
    let mut changed = sample();
    changed.ysvcs[0].status.as_mut().expect("status").cluster_ip = Some("10.96.0.99".into());
    let c = build_zones("cluster.local", &changed);
    assert_ne!(a.soa().serial, c.soa().serial);
}

// === VPC isolation, as a property ===

const VPCS: [&str; 4] = ["ovn-cluster", "vpc1", "vpc2", "vpc3"];

/// One generated object: a user Service (default VPC), a generated headless Service with
/// an endpoint, or a YusurService in some VPCs; each with its own address.
#[derive(Debug, Clone)]
enum Obj {
    Service {
        name: usize,
    },
    Generated {
        name: usize,
    },
    Ysvc {
        name: usize,
        vpcs: Vec<usize>,
        ip: bool,
    },
}

fn obj() -> impl Strategy<Value = Obj> {
    prop_oneof![
        (0..6usize).prop_map(|name| Obj::Service { name }),
        (0..6usize).prop_map(|name| Obj::Generated { name }),
        (
            0..6usize,
            proptest::collection::vec(0..VPCS.len(), 0..3),
            any::<bool>()
        )
            .prop_map(|(name, vpcs, ip)| Obj::Ysvc { name, vpcs, ip }),
    ]
}

fn svc_name(i: usize) -> String {
    format!("s{i}")
}

fn query(name: &str, qtype: u16) -> Message {
    Message {
        header: Header {
            rd: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: crate::wire::Name::parse(name).expect("name"),
            qtype,
            qclass: CLASS_IN,
        }],
        ..Default::default()
    }
}

fn addresses(d: &Decision) -> (Option<u8>, BTreeSet<String>) {
    match d {
        Decision::Reply(m) => (
            Some(m.header.rcode),
            m.answers
                .iter()
                .map(|r| crate::answer::tests::rdata_text(&r.data))
                .collect(),
        ),
        _ => (None, BTreeSet::new()),
    }
}

proptest! {
    /// Against a model of the visibility rules: from every VPC, `sN.ns.svc.cluster.local`
    /// answers exactly the address of the object that owns the name there (a YusurService
    /// of that VPC; else, in the default VPC, a user Service), and NXDOMAIN when none does.
    /// So a name of vpc1 is never answered in vpc2, and generated Services never answer.
    #[test]
    fn a_name_resolves_only_where_its_service_is(
        objs in proptest::collection::vec(obj(), 0..14),
    ) {
        let mut snap = Snapshot::default();
        let ip_of = |i: usize| format!("10.96.1.{}", i + 1);
        let mut model: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut ysvc_claims: BTreeSet<(String, String)> = BTreeSet::new();
        let mut user: BTreeMap<String, String> = BTreeMap::new();
        for (i, o) in objs.iter().enumerate() {
            let ip = ip_of(i);
            match o {
                Obj::Service { name } => {
                    if user.contains_key(&svc_name(*name)) {
                        continue; // one Service per name, as in Kubernetes
                    }
                    user.insert(svc_name(*name), ip.clone());
                    snap.services.push(fixtures::service("ns", &svc_name(*name), "ClusterIP", &ip, &[]));
                }
                Obj::Generated { name } => {
                    snap.services.push(fixtures::generated("ns", &svc_name(*name), &[]));
                    let mut s = fixtures::slice("ns", &svc_name(*name), &[(&ip, None, Some(true))], &[]);
                    if let Some(l) = s.metadata.labels.as_mut() {
                        l.insert(SERVICE_LABEL.into(), svc_name(*name));
                    }
                    snap.slices.push(s);
                }
                Obj::Ysvc { name, vpcs, ip: has_ip } => {
                    // One YusurService per name, as in Kubernetes.
                    if snap.ysvcs.iter().any(|y| y.metadata.name.as_deref() == Some(svc_name(*name).as_str())) {
                        continue;
                    }
                    let vpc_names: Vec<&str> = {
                        let mut v: Vec<&str> = vpcs.iter().map(|&i| VPCS[i]).collect();
                        v.sort();
                        v.dedup();
                        v
                    };
                    // `[]` means spec.vpc omitted: the default VPC.
                    let effective: Vec<&str> = if vpc_names.is_empty() { vec![VPCS[0]] } else { vpc_names.clone() };
                    for v in &effective {
                        ysvc_claims.insert((v.to_string(), svc_name(*name)));
                        if *has_ip {
                            model.insert((v.to_string(), svc_name(*name)), ip.clone());
                        }
                    }
                    snap.ysvcs.push(fixtures::ysvc(
                        "ns", &svc_name(*name), &vpc_names,
                        has_ip.then_some(ip.as_str()), &[("", 80)],
                    ));
                }
            }
        }
        for (name, ip) in &user {
            if !ysvc_claims.contains(&(VPCS[0].to_string(), name.clone())) {
                model.insert((VPCS[0].to_string(), name.clone()), ip.clone());
            }
        }
        let zones = build_zones("cluster.local", &snap);
        for vpc in VPCS {
            for i in 0..6 {
                let fqdn = format!("{}.ns.svc.cluster.local", svc_name(i));
                let got = addresses(&answer(&zones, vpc, &query(&fqdn, TYPE_ANY)));
                let want = match model.get(&(vpc.to_string(), svc_name(i))) {
                    Some(ip) => (Some(0), BTreeSet::from([format!("A {ip}")])),
                    None => (Some(RCODE_NXDOMAIN), BTreeSet::new()),
                };
                prop_assert_eq!(got, want, "{} from {}", fqdn, vpc);
            }
            // And no address of another VPC has a PTR here.
            for (j, _) in objs.iter().enumerate() {
                let ip = ip_of(j);
                let rev = reverse_name(ip.parse().expect("ip"));
                let d = answer(&zones, vpc, &query(&rev, TYPE_PTR));
                let owned = model.iter().any(|((v, _), a)| v == vpc && *a == ip);
                prop_assert_eq!(matches!(d, Decision::Reply(_)), owned, "PTR {} from {}", ip, vpc);
            }
        }
    }
}
