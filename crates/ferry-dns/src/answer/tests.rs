use super::*;
use crate::fixtures::sample;
use crate::wire::{Question, TYPE_NS, TYPE_PTR, TYPE_SRV};
use crate::zones::build_zones;

const D: &str = "ovn-cluster";

fn query(id: u16, name: &str, qtype: u16) -> Message {
    Message {
        header: Header {
            id,
            rd: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: Name::parse(name).expect("name"),
            qtype,
            qclass: CLASS_IN,
        }],
        ..Default::default()
    }
}

fn rcode_name(m: &Message) -> String {
    let ext = m.edns.as_ref().map_or(0, |e| u16::from(e.ext_rcode));
    match (ext << 4) | u16::from(m.header.rcode) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

pub(crate) fn rdata_text(d: &RData) -> String {
    match d {
        RData::A(a) => format!("A {a}"),
        RData::Aaaa(a) => format!("AAAA {a}"),
        RData::Cname(n) => format!("CNAME {n}"),
        RData::Ptr(n) => format!("PTR {n}"),
        RData::Ns(n) => format!("NS {n}"),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => format!("SRV {priority} {weight} {port} {target}"),
        // The serial is a hash of the records; tables pin everything else.
        RData::Soa(s) => format!("SOA {} {} {}", s.mname, s.rname, s.minimum),
        RData::Other { rtype, data } => format!("TYPE{rtype} {data:?}"),
    }
}

/// A whole reply as text, one line per header, record and OPT, like dig's sections.
pub(crate) fn render(m: &Message) -> Vec<String> {
    let mut flags = vec![rcode_name(m)];
    for (name, on) in [
        ("qr", m.header.qr),
        ("aa", m.header.aa),
        ("tc", m.header.tc),
        ("rd", m.header.rd),
        ("ra", m.header.ra),
    ] {
        if on {
            flags.push(name.into());
        }
    }
    let mut out = vec![flags.join(" ")];
    for (sec, recs) in [
        ("an", &m.answers),
        ("ns", &m.authority),
        ("ar", &m.additional),
    ] {
        for r in recs {
            out.push(format!(
                "{sec} {} {} {}",
                r.name,
                r.ttl,
                rdata_text(&r.data)
            ));
        }
    }
    if let Some(e) = &m.edns {
        out.push(format!("opt {}", e.udp_size));
    }
    out
}

fn decide(zones: &Zones, vpc: &str, q: &Message) -> Vec<String> {
    match answer(zones, vpc, q) {
        Decision::Reply(m) => render(&m),
        Decision::Forward => vec!["FORWARD".into()],
        Decision::Chase {
            reply,
            target,
            qtype,
        } => {
            let mut v = render(&reply);
            v.push(format!("CHASE {target} {qtype}"));
            v
        }
    }
}

const OK: &str = "NOERROR qr aa rd ra";
const NX: &str = "NXDOMAIN qr aa rd ra";
const SOA: &str = "ns cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 5";

#[test]
fn answers_table() {
    let zones = build_zones("cluster.local", &sample());
    struct Case {
        name: &'static str,
        vpc: &'static str,
        id: u16,
        qname: &'static str,
        qtype: u16,
        want: &'static [&'static str],
    }
    let c = |name, vpc, qname, qtype, want| Case {
        name,
        vpc,
        id: 0,
        qname,
        qtype,
        want,
    };
    let cases = [
        c(
            "ClusterIP A",
            D,
            "web.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an web.default.svc.cluster.local. 5 A 10.96.0.20"],
        ),
        c(
            "any letter case, trailing dot; owner echoes the asker's case",
            D,
            "WEB.Default.SVC.cluster.LOCAL.",
            TYPE_A,
            &[OK, "an WEB.Default.SVC.cluster.LOCAL. 5 A 10.96.0.20"],
        ),
        c(
            "no AAAA for an IPv4 service: NODATA with SOA",
            D,
            "web.default.svc.cluster.local",
            TYPE_AAAA,
            &[OK, SOA],
        ),
        c(
            "SRV of a named TCP port",
            D,
            "_http._tcp.web.default.svc.cluster.local",
            TYPE_SRV,
            &[
                OK,
                "an _http._tcp.web.default.svc.cluster.local. 5 SRV 0 100 80 web.default.svc.cluster.local.",
            ],
        ),
        c(
            "SRV of a named UDP port",
            D,
            "_dns._udp.web.default.svc.cluster.local",
            TYPE_SRV,
            &[
                OK,
                "an _dns._udp.web.default.svc.cluster.local. 5 SRV 0 100 53 web.default.svc.cluster.local.",
            ],
        ),
        c(
            "SRV with the wrong protocol",
            D,
            "_http._udp.web.default.svc.cluster.local",
            TYPE_SRV,
            &[NX, SOA],
        ),
        c(
            "PTR of a cluster IP",
            D,
            "20.0.96.10.in-addr.arpa",
            TYPE_PTR,
            &[
                OK,
                "an 20.0.96.10.in-addr.arpa. 5 PTR web.default.svc.cluster.local.",
            ],
        ),
        c(
            "NodePort",
            D,
            "np.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an np.default.svc.cluster.local. 5 A 10.96.0.30"],
        ),
        c(
            "LoadBalancer",
            D,
            "lb.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an lb.default.svc.cluster.local. 5 A 10.96.0.40"],
        ),
        c(
            "headless: ready endpoints only (ready unset counts)",
            D,
            "db.default.svc.cluster.local",
            TYPE_A,
            &[
                OK,
                "an db.default.svc.cluster.local. 5 A 10.16.0.5",
                "an db.default.svc.cluster.local. 5 A 10.16.0.6",
            ],
        ),
        c(
            "headless endpoint by hostname",
            D,
            "db-0.db.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an db-0.db.default.svc.cluster.local. 5 A 10.16.0.5"],
        ),
        c(
            "headless endpoint without hostname: dashed address",
            D,
            "10-16-0-6.db.default.svc.cluster.local",
            TYPE_A,
            &[
                OK,
                "an 10-16-0-6.db.default.svc.cluster.local. 5 A 10.16.0.6",
            ],
        ),
        c(
            "not-ready endpoint has no name",
            D,
            "db-2.db.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "headless SRV: one per endpoint",
            D,
            "_pg._tcp.db.default.svc.cluster.local",
            TYPE_SRV,
            &[
                OK,
                "an _pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 10-16-0-6.db.default.svc.cluster.local.",
                "an _pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
            ],
        ),
        c(
            "PTR of a headless endpoint",
            D,
            "5.0.16.10.in-addr.arpa",
            TYPE_PTR,
            &[
                OK,
                "an 5.0.16.10.in-addr.arpa. 5 PTR db-0.db.default.svc.cluster.local.",
            ],
        ),
        c(
            "ExternalName outside the cluster: CNAME, then upstream",
            D,
            "ext.default.svc.cluster.local",
            TYPE_A,
            &[
                OK,
                "an ext.default.svc.cluster.local. 5 CNAME db.example.org.",
                "CHASE db.example.org. 1",
            ],
        ),
        c(
            "ExternalName asked for its CNAME",
            D,
            "ext.default.svc.cluster.local",
            TYPE_CNAME,
            &[
                OK,
                "an ext.default.svc.cluster.local. 5 CNAME db.example.org.",
            ],
        ),
        c(
            "ExternalName inside the cluster: chain followed",
            D,
            "alias.default.svc.cluster.local",
            TYPE_A,
            &[
                OK,
                "an alias.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
                "an web.default.svc.cluster.local. 5 A 10.96.0.20",
            ],
        ),
        c(
            "generated Service of a vpc1 YusurService: not in the default VPC",
            D,
            "ysvc1.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "generated slice's backend: no PTR leaks",
            D,
            "10.1.168.192.in-addr.arpa",
            TYPE_PTR,
            &["FORWARD"],
        ),
        c(
            "clash, YusurService elsewhere: the user Service keeps the default VPC",
            D,
            "dup.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an dup.default.svc.cluster.local. 5 A 10.96.0.50"],
        ),
        c(
            "clash in the default VPC: the YusurService wins",
            D,
            "both.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an both.default.svc.cluster.local. 5 A 10.96.0.103"],
        ),
        c(
            "unknown name in the cluster domain",
            D,
            "nothing.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "namespace: empty non-terminal, NODATA",
            D,
            "default.svc.cluster.local",
            TYPE_A,
            &[OK, SOA],
        ),
        c(
            "apex SOA",
            D,
            "cluster.local",
            TYPE_SOA,
            &[
                OK,
                "an cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 5",
            ],
        ),
        c("apex NS: NODATA", D, "cluster.local", TYPE_NS, &[OK, SOA]),
        c(
            "outside the cluster domain",
            D,
            "example.com",
            TYPE_A,
            &["FORWARD"],
        ),
        c(
            "a reverse name Ferry does not hold",
            D,
            "1.1.1.1.in-addr.arpa",
            TYPE_PTR,
            &["FORWARD"],
        ),
        c(
            "zone transfer",
            D,
            "cluster.local",
            TYPE_AXFR,
            &["REFUSED qr rd ra"],
        ),
        c(
            "vpc1: its YusurService",
            "vpc1",
            "ysvc1.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an ysvc1.default.svc.cluster.local. 5 A 10.96.0.100"],
        ),
        c(
            "vpc1: its YusurService's SRV",
            "vpc1",
            "_http._tcp.ysvc1.default.svc.cluster.local",
            TYPE_SRV,
            &[
                OK,
                "an _http._tcp.ysvc1.default.svc.cluster.local. 5 SRV 0 100 80 ysvc1.default.svc.cluster.local.",
            ],
        ),
        c(
            "vpc1: its PTR",
            "vpc1",
            "100.0.96.10.in-addr.arpa",
            TYPE_PTR,
            &[
                OK,
                "an 100.0.96.10.in-addr.arpa. 5 PTR ysvc1.default.svc.cluster.local.",
            ],
        ),
        c(
            "vpc1: multi-VPC service",
            "vpc1",
            "shared.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an shared.default.svc.cluster.local. 5 A 10.96.0.101"],
        ),
        c(
            "vpc1: clash, the YusurService there",
            "vpc1",
            "dup.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an dup.default.svc.cluster.local. 5 A 10.96.0.102"],
        ),
        c(
            "vpc1: default-VPC Services are not visible",
            "vpc1",
            "web.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "vpc1: nor their PTR",
            "vpc1",
            "20.0.96.10.in-addr.arpa",
            TYPE_PTR,
            &["FORWARD"],
        ),
        c(
            "vpc2: vpc1's YusurService is NXDOMAIN",
            "vpc2",
            "ysvc1.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "vpc2: nor its SRV",
            "vpc2",
            "_http._tcp.ysvc1.default.svc.cluster.local",
            TYPE_SRV,
            &[NX, SOA],
        ),
        c(
            "vpc2: nor its PTR",
            "vpc2",
            "100.0.96.10.in-addr.arpa",
            TYPE_PTR,
            &["FORWARD"],
        ),
        c(
            "vpc2: multi-VPC service",
            "vpc2",
            "shared.default.svc.cluster.local",
            TYPE_A,
            &[OK, "an shared.default.svc.cluster.local. 5 A 10.96.0.101"],
        ),
        c(
            "vpc2: YusurService without a cluster IP yet",
            "vpc2",
            "pending.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
        c(
            "a VPC with no names: NXDOMAIN, still authoritative",
            "vpc9",
            "web.default.svc.cluster.local",
            TYPE_A,
            &[NX, SOA],
        ),
    ];
    for case in cases {
        let got = decide(&zones, case.vpc, &query(case.id, case.qname, case.qtype));
        assert_eq!(got, case.want, "case {:?}", case.name);
    }
}

#[test]
fn headless_addresses_rotate_with_the_query_id() {
    let zones = build_zones("cluster.local", &sample());
    let got = decide(&zones, D, &query(1, "db.default.svc.cluster.local", TYPE_A));
    assert_eq!(
        got,
        [
            OK,
            "an db.default.svc.cluster.local. 5 A 10.16.0.6",
            "an db.default.svc.cluster.local. 5 A 10.16.0.5",
        ]
    );
}

#[test]
fn protocol_edges_table() {
    let zones = build_zones("cluster.local", &sample());
    let web = || query(9, "web.default.svc.cluster.local", TYPE_A);
    let edns = |version| Edns {
        udp_size: 4096,
        ext_rcode: 0,
        version,
        dnssec_ok: false,
        options: Vec::new(),
    };
    let mut status = web();
    status.header.opcode = 2;
    let mut two = web();
    two.questions.push(two.questions[0].clone());
    let mut none = web();
    none.questions.clear();
    let mut chaos = web();
    chaos.questions[0].qclass = 3;
    let mut with_edns = web();
    with_edns.edns = Some(edns(0));
    let mut badvers = web();
    badvers.edns = Some(edns(1));
    let mut response = web();
    response.header.qr = true;
    let cases: [(&str, Message, &[&str]); 7] = [
        ("opcode STATUS", status, &["NOTIMP qr rd ra"]),
        ("two questions", two, &["FORMERR qr rd ra"]),
        ("no question", none, &["FORMERR qr rd ra"]),
        ("class CH", chaos, &["REFUSED qr rd ra"]),
        (
            "EDNS: our OPT with 1232",
            with_edns,
            &[
                OK,
                "an web.default.svc.cluster.local. 5 A 10.96.0.20",
                "opt 1232",
            ],
        ),
        ("EDNS version 1", badvers, &["BADVERS qr rd ra", "opt 1232"]),
        ("a response is not a query", response, &["FORMERR qr rd ra"]),
    ];
    for (name, q, want) in cases {
        assert_eq!(decide(&zones, D, &q), want, "case {name:?}");
    }
}

#[test]
fn malformed_queries_get_formerr_with_their_id_and_responses_get_nothing() {
    let mut bytes = query(0xBEEF, "web.default.svc.cluster.local", TYPE_A).encode(512);
    bytes.truncate(20); // the question is cut
    let m = malformed(&bytes).expect("a FORMERR");
    assert_eq!(m.header.id, 0xBEEF);
    assert_eq!(render(&m), ["FORMERR qr rd ra"]);
    bytes[2] |= 0x80;
    assert_eq!(malformed(&bytes), None);
    assert_eq!(malformed(&[0, 1, 2]), None);
}

#[test]
fn a_chased_cname_gets_the_upstream_answers_and_its_nxdomain() {
    let zones = build_zones("cluster.local", &sample());
    let Decision::Chase { reply, target, .. } = answer(
        &zones,
        D,
        &query(3, "ext.default.svc.cluster.local", TYPE_A),
    ) else {
        panic!("expected a chase");
    };
    let mut upstream = query(3, &target.to_string(), TYPE_A);
    upstream.header.qr = true;
    upstream.answers.push(Record {
        name: target.clone(),
        class: CLASS_IN,
        ttl: 300,
        data: RData::A("192.0.2.7".parse().expect("ip")),
    });
    assert_eq!(
        render(&complete_chase(reply.clone(), Some(&upstream))),
        [
            OK,
            "an ext.default.svc.cluster.local. 5 CNAME db.example.org.",
            "an db.example.org. 300 A 192.0.2.7",
        ]
    );
    upstream.answers.clear();
    upstream.header.rcode = RCODE_NXDOMAIN;
    assert_eq!(
        render(&complete_chase(reply.clone(), Some(&upstream))),
        [
            NX,
            "an ext.default.svc.cluster.local. 5 CNAME db.example.org."
        ]
    );
    assert_eq!(
        render(&complete_chase(reply, None)),
        [
            OK,
            "an ext.default.svc.cluster.local. 5 CNAME db.example.org."
        ]
    );
}

#[test]
fn publish_not_ready_addresses_names_every_endpoint() {
    let mut snap = sample();
    for s in snap.services.iter_mut() {
        if s.metadata.name.as_deref() == Some("db")
            && let Some(spec) = s.spec.as_mut()
        {
            spec.publish_not_ready_addresses = Some(true);
        }
    }
    let zones = build_zones("cluster.local", &snap);
    assert_eq!(
        decide(&zones, D, &query(0, "db.default.svc.cluster.local", TYPE_A)),
        [
            OK,
            "an db.default.svc.cluster.local. 5 A 10.16.0.5",
            "an db.default.svc.cluster.local. 5 A 10.16.0.6",
            "an db.default.svc.cluster.local. 5 A 10.16.0.7",
        ]
    );
    assert_eq!(
        decide(
            &zones,
            D,
            &query(0, "db-2.db.default.svc.cluster.local", TYPE_A)
        ),
        [OK, "an db-2.db.default.svc.cluster.local. 5 A 10.16.0.7"]
    );
}

#[test]
fn a_cname_loop_inside_the_zone_is_servfail() {
    let mut snap = sample();
    snap.services.push(crate::fixtures::external_name(
        "default",
        "loop-a",
        "loop-b.default.svc.cluster.local",
    ));
    snap.services.push(crate::fixtures::external_name(
        "default",
        "loop-b",
        "loop-a.default.svc.cluster.local",
    ));
    let zones = build_zones("cluster.local", &snap);
    let got = decide(
        &zones,
        D,
        &query(0, "loop-a.default.svc.cluster.local", TYPE_A),
    );
    assert_eq!(got[0], "SERVFAIL qr aa rd ra");
    assert_eq!(got.len(), 1 + MAX_CHAIN);
}
