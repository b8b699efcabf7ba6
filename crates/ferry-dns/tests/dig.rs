//! The resolver end to end with the real `dig` (package dnsutils): one socket pair per VPC on
//! loopback addresses (127.0.0.1 = vpc1, 127.0.0.2 = vpc2, 127.0.0.4 = the default VPC),
//! queried over UDP and TCP; a second Ferry resolver for another domain on 127.0.0.3 plays
//! the upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_dns::fixtures;
use ferry_dns::{Upstreams, VpcListener, Zones, build_zones, serve};
use tokio::sync::watch;

/// TCP and UDP on the same free port of `ip`.
fn bind_pair(vpc: &str, ip: &str) -> (VpcListener, SocketAddr) {
    let addr = SocketAddr::new(ip.parse().expect("ip"), 0);
    let l = VpcListener::bind(vpc, addr).expect("bind on loopback");
    let addr = l.local_addr().expect("address");
    (l, addr)
}

/// What dig printed, reduced to what a user reads: status, flags, answer and authority
/// lines with single spaces.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .await
        .expect("dig runs (scripts/setup.sh installs dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dig {args:?} failed:\n{text}");
    let line_after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest.to_string()))
            .unwrap_or_else(|| panic!("no {prefix:?} in dig output:\n{text}"))
    };
    let status = line_after("status: ")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let flags = line_after(";; flags: ")
        .split(';')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let section = |title: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    Dig {
        status,
        flags,
        answer: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
    }
}

struct Lab {
    vpc1: SocketAddr,
    dead_end: SocketAddr,
    vpc2: SocketAddr,
    default: SocketAddr,
    upstream: SocketAddr,
    zones: watch::Sender<Arc<Zones>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn snapshot() -> ferry_dns::Snapshot {
    let mut s = fixtures::sample();
    s.services.push(fixtures::external_name(
        "default",
        "ext2",
        "web.prod.svc.example.org",
    ));
    // 100 ready endpoints: more than a 512-byte UDP answer holds.
    let ips: Vec<String> = (1..=100).map(|i| format!("10.16.1.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, Option<bool>)> = ips
        .iter()
        .map(|ip| (ip.as_str(), None, Some(true)))
        .collect();
    s.services
        .push(fixtures::headless("default", "big", &[("http", 80, "TCP")]));
    s.slices.push(fixtures::slice(
        "default",
        "big",
        &eps,
        &[("http", 8080, "TCP")],
    ));
    s
}

async fn start() -> Lab {
    let (l1, vpc1) = bind_pair("vpc1", "127.0.0.1");
    let (l2, vpc2) = bind_pair("vpc2", "127.0.0.2");
    let (l0, default) = bind_pair(ferry_api::DEFAULT_VPC, "127.0.0.4");
    let (lu, upstream) = bind_pair(ferry_api::DEFAULT_VPC, "127.0.0.3");
    let (tx, rx) = watch::channel(Arc::new(build_zones("cluster.local", &snapshot())));
    let ips: Vec<String> = (1..=100).map(|i| format!("192.0.2.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, Option<bool>)> = ips
        .iter()
        .map(|ip| (ip.as_str(), None, Some(true)))
        .collect();
    let upstream_zones = build_zones(
        "example.org",
        &ferry_dns::Snapshot {
            services: vec![
                fixtures::service("prod", "web", "ClusterIP", "192.0.2.80", &[]),
                fixtures::headless("prod", "big", &[]),
            ],
            slices: vec![fixtures::slice("prod", "big", &eps, &[])],
            ..Default::default()
        },
    );
    let (_utx, urx) = watch::channel(Arc::new(upstream_zones));
    let ferry = tokio::spawn(async move {
        let ups = Upstreams {
            servers: vec![upstream],
            timeout: Duration::from_secs(2),
        };
        serve(vec![l1, l2, l0], rx, ups).await.expect("serve");
    });
    let up = tokio::spawn(async move {
        let _keep = _utx;
        serve(vec![lu], urx, Upstreams::default())
            .await
            .expect("serve upstream");
    });
    // A resolver whose only upstream is a closed port.
    let (ld, dead_end) = bind_pair("vpc1", "127.0.0.5");
    let closed = {
        let l = VpcListener::bind("none", "127.0.0.5:0".parse().expect("addr")).expect("bind");
        l.local_addr().expect("addr")
    };
    let drx = tx.subscribe();
    let dead = tokio::spawn(async move {
        let ups = Upstreams {
            servers: vec![closed],
            timeout: Duration::from_secs(2),
        };
        serve(vec![ld], drx, ups).await.expect("serve dead end");
    });
    Lab {
        vpc1,
        dead_end,
        vpc2,
        default,
        upstream,
        zones: tx,
        _tasks: vec![ferry, up, dead],
    }
}

/// The answer lines, sorted: address sets rotate with the query id (order within a set
/// carries no meaning; the CNAME-first order is pinned by the unit tables).
fn answers(d: &Dig) -> Vec<&str> {
    let mut v: Vec<&str> = d.answer.iter().map(String::as_str).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_over_udp_and_tcp_sees_each_vpc_its_own_names() {
    let lab = start().await;
    let nx = "NXDOMAIN";
    let soa = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.";
    struct Case {
        name: &'static str,
        server: SocketAddr,
        args: Vec<&'static str>,
        status: &'static str,
        answer: Vec<&'static str>,
    }
    let case = |name, server, args: &[&'static str], status, answer: &[&'static str]| Case {
        name,
        server,
        args: args.to_vec(),
        status,
        answer: answer.to_vec(),
    };
    let cases = vec![
        case(
            "vpc1 A over UDP",
            lab.vpc1,
            &["ysvc1.default.svc.cluster.local", "A"],
            "NOERROR",
            &["ysvc1.default.svc.cluster.local. 5 IN A 10.96.0.100"],
        ),
        case(
            "vpc1 A over TCP",
            lab.vpc1,
            &["+tcp", "ysvc1.default.svc.cluster.local", "A"],
            "NOERROR",
            &["ysvc1.default.svc.cluster.local. 5 IN A 10.96.0.100"],
        ),
        case(
            "vpc1 SRV",
            lab.vpc1,
            &["_http._tcp.ysvc1.default.svc.cluster.local", "SRV"],
            "NOERROR",
            &[
                "_http._tcp.ysvc1.default.svc.cluster.local. 5 IN SRV 0 100 80 ysvc1.default.svc.cluster.local.",
            ],
        ),
        case(
            "vpc1 PTR",
            lab.vpc1,
            &["-x", "10.96.0.100"],
            "NOERROR",
            &["100.0.96.10.in-addr.arpa. 5 IN PTR ysvc1.default.svc.cluster.local."],
        ),
        case(
            "vpc2 NXDOMAIN over UDP",
            lab.vpc2,
            &["ysvc1.default.svc.cluster.local", "A"],
            nx,
            &[],
        ),
        case(
            "vpc2 NXDOMAIN over TCP",
            lab.vpc2,
            &["+tcp", "ysvc1.default.svc.cluster.local", "A"],
            nx,
            &[],
        ),
        case(
            "vpc2 multi-VPC name",
            lab.vpc2,
            &["shared.default.svc.cluster.local"],
            "NOERROR",
            &["shared.default.svc.cluster.local. 5 IN A 10.96.0.101"],
        ),
        case(
            "default VPC ClusterIP, any case",
            lab.default,
            &["WeB.DeFault.SVC.Cluster.Local."],
            "NOERROR",
            &["WeB.DeFault.SVC.Cluster.Local. 5 IN A 10.96.0.20"],
        ),
        case(
            "default VPC SRV over TCP",
            lab.default,
            &["+tcp", "_http._tcp.web.default.svc.cluster.local", "SRV"],
            "NOERROR",
            &[
                "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
            ],
        ),
        case(
            "default VPC PTR",
            lab.default,
            &["-x", "10.96.0.20"],
            "NOERROR",
            &["20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."],
        ),
        case(
            "headless",
            lab.default,
            &["db.default.svc.cluster.local"],
            "NOERROR",
            &[
                "db.default.svc.cluster.local. 5 IN A 10.16.0.5",
                "db.default.svc.cluster.local. 5 IN A 10.16.0.6",
            ],
        ),
        case(
            "ExternalName CNAME",
            lab.default,
            &["ext.default.svc.cluster.local", "CNAME"],
            "NOERROR",
            &["ext.default.svc.cluster.local. 5 IN CNAME db.example.org."],
        ),
        case(
            "ExternalName chased through the upstream",
            lab.default,
            &["ext2.default.svc.cluster.local"],
            "NOERROR",
            &[
                "ext2.default.svc.cluster.local. 5 IN CNAME web.prod.svc.example.org.",
                "web.prod.svc.example.org. 5 IN A 192.0.2.80",
            ],
        ),
        case(
            "default-VPC name from vpc1",
            lab.vpc1,
            &["web.default.svc.cluster.local"],
            nx,
            &[],
        ),
        case(
            "forwarded upstream over UDP",
            lab.vpc1,
            &["web.prod.svc.example.org"],
            "NOERROR",
            &["web.prod.svc.example.org. 5 IN A 192.0.2.80"],
        ),
        case(
            "forwarded upstream over TCP",
            lab.vpc2,
            &["+tcp", "web.prod.svc.example.org"],
            "NOERROR",
            &["web.prod.svc.example.org. 5 IN A 192.0.2.80"],
        ),
        case(
            "no upstream: REFUSED",
            lab.upstream,
            &["example.com"],
            "REFUSED",
            &[],
        ),
        case(
            "upstream down: SERVFAIL",
            lab.dead_end,
            &["example.com"],
            "SERVFAIL",
            &[],
        ),
        case(
            "upstream down, TCP: SERVFAIL",
            lab.dead_end,
            &["+tcp", "example.com"],
            "SERVFAIL",
            &[],
        ),
        case(
            "upstream down, still authoritative here",
            lab.dead_end,
            &["ysvc1.default.svc.cluster.local"],
            "NOERROR",
            &["ysvc1.default.svc.cluster.local. 5 IN A 10.96.0.100"],
        ),
    ];
    for c in cases {
        let got = dig(c.server, &c.args).await;
        assert_eq!(got.status, c.status, "{}: {got:?}", c.name);
        let mut want = c.answer.clone();
        want.sort();
        assert_eq!(answers(&got), want, "{}: {got:?}", c.name);
        if c.status == nx {
            assert!(
                got.authority.iter().any(|l| l.starts_with(soa)),
                "{}: SOA in authority: {got:?}",
                c.name
            );
            assert!(got.flags.contains(&"aa".to_string()), "{}: {got:?}", c.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_arrive_whole_over_tcp() {
    let lab = start().await;
    let name = "big.default.svc.cluster.local";
    let udp = dig(lab.default, &["+ignore", "+noedns", name]).await;
    assert!(udp.flags.contains(&"tc".to_string()), "{udp:?}");
    assert!(!udp.answer.is_empty() && udp.answer.len() < 100, "{udp:?}");
    let tcp = dig(lab.default, &["+tcp", name]).await;
    assert_eq!(tcp.answer.len(), 100, "{tcp:?}");
    // dig's default: UDP, then TCP on TC, as a stub resolver does.
    let retried = dig(lab.default, &[name]).await;
    assert_eq!(retried.answer.len(), 100, "{retried:?}");
    assert!(!retried.flags.contains(&"tc".to_string()), "{retried:?}");
    let srv = dig(lab.default, &["+tcp", &format!("_http._tcp.{name}"), "SRV"]).await;
    assert_eq!(srv.answer.len(), 100, "{srv:?}");
    // Forwarded: the upstream's truncated UDP answer reaches the client as it is, and the
    // client's TCP retry is forwarded over TCP.
    let far = "big.prod.svc.example.org";
    let udp = dig(lab.vpc1, &["+ignore", "+noedns", far]).await;
    assert!(udp.flags.contains(&"tc".to_string()), "{udp:?}");
    assert!(udp.answer.len() < 100, "{udp:?}");
    let retried = dig(lab.vpc1, &["+noedns", far]).await;
    assert_eq!(retried.answer.len(), 100, "{retried:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_zones_on_the_channel_are_answered_at_once() {
    let lab = start().await;
    let name = "ysvc1.default.svc.cluster.local";
    assert_eq!(dig(lab.vpc1, &[name]).await.status, "NOERROR");
    let mut gone = snapshot();
    gone.ysvcs
        .retain(|y| y.metadata.name.as_deref() != Some("ysvc1"));
    lab.zones
        .send_replace(Arc::new(build_zones("cluster.local", &gone)));
    assert_eq!(dig(lab.vpc1, &[name]).await.status, "NXDOMAIN");
    assert_eq!(dig(lab.vpc1, &["+tcp", name]).await.status, "NXDOMAIN");
}
