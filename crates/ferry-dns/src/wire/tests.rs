use super::*;
use proptest::prelude::*;

fn n(s: &str) -> Name {
    Name::parse(s).expect("name")
}

#[test]
fn names_table() {
    let long_label = "a".repeat(64);
    let long_name = vec!["abcdefghij"; 24].join(".");
    let cases: Vec<(&str, Result<&str, WireError>)> = vec![
        (
            "Web.Default.SVC.cluster.local.",
            Ok("web.default.svc.cluster.local"),
        ),
        (
            "web.default.svc.cluster.local",
            Ok("web.default.svc.cluster.local"),
        ),
        (".", Ok("")),
        ("", Ok("")),
        ("_http._tcp.x", Ok("_http._tcp.x")),
        ("a..b", Err(WireError::BadLabelLength(String::new()))),
        (
            &long_label,
            Err(WireError::BadLabelLength(long_label.clone())),
        ),
        (&long_name, Err(WireError::NameTooLong)),
    ];
    for (input, want) in cases {
        assert_eq!(
            Name::parse(input).map(|n| n.key()),
            want.map(str::to_string),
            "{input:?}"
        );
    }
}

#[test]
fn a_label_holding_a_dot_cannot_alias_a_longer_name() {
    let mut dotted = n("x");
    dotted.labels[0] = b"web.default".to_vec();
    assert_eq!(dotted.key(), "web\\046default");
    assert_ne!(dotted.key(), n("web.default").key());
}

/// A query as `dig web.default.svc.cluster.local` sends it: RD and AD set, an OPT record
/// with a cookie option.
const DIG_QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    3, b'w', b'e', b'b', 7, b'd', b'e', b'f', b'a', b'u', b'l', b't', 3, b's', b'v', b'c', 7, b'c',
    b'l', b'u', b's', b't', b'e', b'r', 5, b'l', b'o', b'c', b'a', b'l', 0, //
    0x00, 0x01, 0x00, 0x01, //
    0, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, //
    0x00, 0x0a, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8,
];

#[test]
fn parses_a_dig_query_whole() {
    let got = Message::parse(DIG_QUERY).expect("parses");
    let want = Message {
        header: Header {
            id: 0x1234,
            rd: true,
            ad: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: n("web.default.svc.cluster.local"),
            qtype: TYPE_A,
            qclass: CLASS_IN,
        }],
        edns: Some(Edns {
            udp_size: 1232,
            ext_rcode: 0,
            version: 0,
            dnssec_ok: false,
            options: vec![0x00, 0x0a, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8],
        }),
        ..Default::default()
    };
    assert_eq!(got, want);
    // And back, byte for byte.
    assert_eq!(want.encode(MAX_MESSAGE), DIG_QUERY);
}

fn every_kind() -> Message {
    let rec = |name: &str, data| Record {
        name: n(name),
        class: CLASS_IN,
        ttl: 5,
        data,
    };
    Message {
        header: Header {
            id: 7,
            qr: true,
            aa: true,
            rd: true,
            ra: true,
            rcode: RCODE_NXDOMAIN,
            ..Default::default()
        },
        questions: vec![Question {
            name: n("Web.default.svc.cluster.local"),
            qtype: TYPE_ANY,
            qclass: CLASS_IN,
        }],
        answers: vec![
            rec(
                "Web.default.svc.cluster.local",
                RData::A(Ipv4Addr::new(10, 96, 0, 20)),
            ),
            rec(
                "web.default.svc.cluster.local",
                RData::Aaaa("fd00::20".parse().expect("ip")),
            ),
            rec(
                "x.default.svc.cluster.local",
                RData::Cname(n("web.default.svc.cluster.local")),
            ),
            rec(
                "20.0.96.10.in-addr.arpa",
                RData::Ptr(n("web.default.svc.cluster.local")),
            ),
            rec(
                "_http._tcp.web.default.svc.cluster.local",
                RData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 80,
                    target: n("web.default.svc.cluster.local"),
                },
            ),
            rec("cluster.local", RData::Ns(n("ns.dns.cluster.local"))),
            rec(
                "web.default.svc.cluster.local",
                RData::Other {
                    rtype: 16,
                    data: b"\x05hello".to_vec(),
                },
            ),
        ],
        authority: vec![rec(
            "cluster.local",
            RData::Soa(Soa {
                mname: n("ns.dns.cluster.local"),
                rname: n("hostmaster.cluster.local"),
                serial: 42,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: 5,
            }),
        )],
        additional: vec![rec(
            "ns.dns.cluster.local",
            RData::A(Ipv4Addr::new(10, 96, 0, 10)),
        )],
        edns: Some(Edns {
            udp_size: 1232,
            ext_rcode: 1,
            version: 0,
            dnssec_ok: true,
            options: Vec::new(),
        }),
    }
}

#[test]
fn every_record_kind_round_trips() {
    let m = every_kind();
    assert_eq!(Message::parse(&m.encode(MAX_MESSAGE)), Ok(m));
}

#[test]
fn compression_points_answers_at_the_question_and_keeps_srv_targets_whole() {
    let q = n("web.default.svc.cluster.local");
    let mut m = every_kind();
    m.questions[0].name = q.clone();
    m.answers = vec![
        Record {
            name: q.clone(),
            class: CLASS_IN,
            ttl: 5,
            data: RData::A(Ipv4Addr::new(10, 96, 0, 20)),
        },
        Record {
            name: q.clone(),
            class: CLASS_IN,
            ttl: 5,
            data: RData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: q.clone(),
            },
        },
    ];
    m.authority.clear();
    m.additional.clear();
    m.edns = None;
    let bytes = m.encode(MAX_MESSAGE);
    let question_end = 12 + q.wire_len() + 4;
    // The first answer's owner is a pointer to offset 12.
    assert_eq!(&bytes[question_end..question_end + 2], &[0xC0, 12]);
    // header + question + (2 + 10 + 4) + (2 + 10 + 6 + uncompressed target)
    assert_eq!(bytes.len(), question_end + 16 + 18 + q.wire_len());
    assert_eq!(Message::parse(&bytes), Ok(m));
}

#[test]
fn pointers_must_point_backwards() {
    // Header with one question whose name is a pointer to itself.
    let mut b = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&b), Err(WireError::BadPointer { at: 12 }));
    // A forward pointer.
    b[13] = 14;
    assert_eq!(Message::parse(&b), Err(WireError::BadPointer { at: 12 }));
    // Extended label types (0x40, 0x80) are refused.
    b[12] = 0x41;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadLabel { at: 12, byte: 0x41 })
    );
}

fn many_addresses(count: u8, edns: bool) -> Message {
    let q = n("db.default.svc.cluster.local");
    Message {
        header: Header {
            id: 1,
            qr: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: q.clone(),
            qtype: TYPE_A,
            qclass: CLASS_IN,
        }],
        answers: (0..count)
            .map(|i| Record {
                name: q.clone(),
                class: CLASS_IN,
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 16, 0, i)),
            })
            .collect(),
        authority: Vec::new(),
        additional: Vec::new(),
        edns: edns.then(|| Edns {
            udp_size: 1232,
            ext_rcode: 0,
            version: 0,
            dnssec_ok: false,
            options: Vec::new(),
        }),
    }
}

#[test]
fn truncation_keeps_whole_answers_that_fit_and_sets_tc() {
    // Header and question: 12 + 30 + 4 = 46 bytes; OPT 11; each answer 16 (compressed owner).
    // (512 - 46) / 16 = 29; (512 - 46 - 11) / 16 = 28; (1232 - 46 - 11) / 16 = 73.
    for (limit, edns, want_answers) in [(512, false, 29), (512, true, 28), (1232, true, 73)] {
        let m = many_addresses(200, edns);
        let bytes = m.encode(limit);
        assert!(bytes.len() <= limit, "{limit}: {} bytes", bytes.len());
        let got = Message::parse(&bytes).expect("parses");
        assert!(got.header.tc, "{limit}: TC");
        assert_eq!(got.answers.len(), want_answers, "{limit}");
        assert_eq!(got.answers[..], m.answers[..want_answers]);
        assert_eq!(got.edns.is_some(), edns);
    }
    // What fits is not truncated.
    let small = many_addresses(20, false);
    let got = Message::parse(&small.encode(512)).expect("parses");
    assert_eq!(got, small);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
        let _ = Header::parse(&bytes);
    }

    #[test]
    fn mutated_real_queries_never_panic(at in 0usize..DIG_QUERY.len(), byte in any::<u8>()) {
        let mut b = DIG_QUERY.to_vec();
        b[at] = byte;
        let _ = Message::parse(&b);
    }

    #[test]
    fn encode_then_parse_is_identity(
        labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6),
        ips in proptest::collection::vec(any::<u32>(), 0..20),
        id in any::<u16>(),
    ) {
        let name = n(&labels.join("."));
        let mut m = many_addresses(0, true);
        m.header.id = id;
        m.questions[0].name = name.clone();
        m.answers = ips.iter().map(|&ip| Record {
            name: name.clone(),
            class: CLASS_IN,
            ttl: 5,
            data: RData::A(Ipv4Addr::from(ip)),
        }).collect();
        prop_assert_eq!(Message::parse(&m.encode(MAX_MESSAGE)), Ok(m));
    }
}
