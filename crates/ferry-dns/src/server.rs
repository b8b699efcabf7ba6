//! The socket side: [`serve`] answers UDP and TCP on one socket pair per VPC. The VPC of a
//! query is the VPC of the socket it arrived on (the agent opens each pair inside a network
//! namespace attached to that VPC, so overlapping client CIDRs cannot confuse it); the
//! records come from the newest [`Zones`] on the watch channel. Names outside the cluster
//! domain are relayed to the upstreams, or REFUSED when there are none.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::answer::{self, Decision};
use crate::wire::{
    CLASS_IN, Edns, Header, MAX_MESSAGE, Message, Name, Question, UDP_EDNS, UDP_MIN,
};
use crate::zones::Zones;

/// One VPC's sockets, already bound (inside that VPC's namespace).
#[derive(Debug)]
pub struct VpcListener {
    pub vpc: String,
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

impl VpcListener {
    /// UDP and TCP sockets on `addr` for `vpc`, on the same port (port 0: the first port free
    /// for both). Call it on a thread that has entered the VPC's network namespace: a socket
    /// stays in the namespace it was created in.
    pub fn bind(vpc: &str, addr: SocketAddr) -> io::Result<VpcListener> {
        let mut last = None;
        for _ in 0..if addr.port() == 0 { 50 } else { 1 } {
            let tcp = std::net::TcpListener::bind(addr)?;
            match std::net::UdpSocket::bind(tcp.local_addr()?) {
                Ok(udp) => {
                    return Ok(VpcListener {
                        vpc: vpc.to_string(),
                        udp,
                        tcp,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
    }

    /// The address both sockets listen on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Where names outside the cluster domain go.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Tried in order; empty means REFUSED.
    pub servers: Vec<SocketAddr>,
    /// Per upstream and attempt.
    pub timeout: Duration,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A `--dns-upstream` value that is not an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--dns-upstream {0:?} is not IP, IP:PORT or [IPv6]:PORT")]
pub struct BadUpstream(pub String);

impl Upstreams {
    /// From `--dns-upstream` values: `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`; a value may
    /// hold several, comma-separated.
    pub fn from_flags(values: &[String]) -> Result<Upstreams, BadUpstream> {
        let mut servers = Vec::new();
        for v in values.iter().flat_map(|v| v.split(',')) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let addr = v
                .parse::<SocketAddr>()
                .or_else(|_| {
                    v.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| BadUpstream(v.to_string()))?;
            servers.push(addr);
        }
        Ok(Upstreams {
            servers,
            ..Default::default()
        })
    }
}

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("handing the {vpc} {transport} socket to tokio: {source}")]
    Socket {
        vpc: String,
        transport: &'static str,
        source: io::Error,
    },
    #[error("accepting TCP on the {vpc} socket: {source}")]
    Accept { vpc: String, source: io::Error },
}

/// Idle time after which a TCP client is dropped (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once per VPC.
const TCP_MAX: usize = 256;
/// UDP queries waiting on an upstream at once per VPC; beyond, SERVFAIL at once.
const UDP_UPSTREAM_MAX: usize = 1024;

/// Serves every listener until one fails fatally (or the future is dropped, which stops all).
pub async fn serve(
    listeners: Vec<VpcListener>,
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Upstreams,
) -> Result<(), ServeError> {
    let upstreams = Arc::new(upstreams);
    let mut tasks = JoinSet::new();
    for l in listeners {
        let vpc: Arc<str> = Arc::from(l.vpc.as_str());
        let sock_err = |transport, source| ServeError::Socket {
            vpc: l.vpc.clone(),
            transport,
            source,
        };
        l.udp
            .set_nonblocking(true)
            .map_err(|e| sock_err("UDP", e))?;
        l.tcp
            .set_nonblocking(true)
            .map_err(|e| sock_err("TCP", e))?;
        let udp = UdpSocket::from_std(l.udp).map_err(|e| sock_err("UDP", e))?;
        let tcp = tokio::net::TcpListener::from_std(l.tcp).map_err(|e| sock_err("TCP", e))?;
        tasks.spawn(serve_udp(
            vpc.clone(),
            Arc::new(udp),
            zones.clone(),
            upstreams.clone(),
        ));
        tasks.spawn(serve_tcp(vpc, tcp, zones.clone(), upstreams.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(e);
        }
    }
    Ok(())
}

/// What to do with one received message.
enum Step {
    Send(Vec<u8>),
    Drop,
    Forward(Message),
    Chase {
        reply: Message,
        target: Name,
        qtype: u16,
    },
}

/// The UDP size limit for a reply to `query`.
fn udp_limit(query: &Message) -> usize {
    query.edns.as_ref().map_or(UDP_MIN, |e| {
        usize::from(e.udp_size).clamp(UDP_MIN, usize::from(UDP_EDNS))
    })
}

/// The step for `bytes` and the size limit of its reply (UDP: the client's EDNS size
/// within 512..=1232; TCP: 64 KiB).
fn step(zones: &Zones, vpc: &str, bytes: &[u8], tcp: bool) -> (Step, usize) {
    let limit_of = |q: Option<&Message>| match (tcp, q) {
        (true, _) => MAX_MESSAGE,
        (false, Some(q)) => udp_limit(q),
        (false, None) => UDP_MIN,
    };
    let query = match Message::parse(bytes) {
        Ok(q) if !q.header.qr => q,
        Ok(_) => return (Step::Drop, UDP_MIN),
        Err(_) => {
            let limit = limit_of(None);
            return match answer::malformed(bytes) {
                Some(m) => (Step::Send(m.encode(limit)), limit),
                None => (Step::Drop, limit),
            };
        }
    };
    let limit = limit_of(Some(&query));
    let step = match answer::answer(zones, vpc, &query) {
        Decision::Reply(m) => Step::Send(m.encode(limit)),
        Decision::Forward => Step::Forward(query),
        Decision::Chase {
            reply,
            target,
            qtype,
        } => Step::Chase {
            reply,
            target,
            qtype,
        },
    };
    (step, limit)
}

async fn serve_udp(
    vpc: Arc<str>,
    sock: Arc<UdpSocket>,
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Arc<Upstreams>,
) -> Result<(), ServeError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let in_flight = Arc::new(Semaphore::new(UDP_UPSTREAM_MAX));
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; none is fatal.
                tracing::debug!(vpc = %vpc, error = %e, "UDP receive");
                continue;
            }
        };
        let bytes = &buf[..n];
        let current = zones.borrow().clone();
        let (next, limit) = step(&current, &vpc, bytes, false);
        match next {
            Step::Send(out) => send_udp(&sock, &out, peer, &vpc).await,
            Step::Drop => {}
            other => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    // Too many upstream exchanges at once: fail fast rather than queue.
                    if let Ok(q) = Message::parse(bytes) {
                        send_udp(&sock, &answer::servfail(&q).encode(limit), peer, &vpc).await;
                    }
                    continue;
                };
                let (sock, upstreams, vpc, raw) =
                    (sock.clone(), upstreams.clone(), vpc.clone(), bytes.to_vec());
                tokio::spawn(async move {
                    let out = upstream_step(other, &raw, &upstreams, false, limit).await;
                    send_udp(&sock, &out, peer, &vpc).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn send_udp(sock: &UdpSocket, out: &[u8], peer: SocketAddr, vpc: &str) {
    if let Err(e) = sock.send_to(out, peer).await {
        tracing::debug!(vpc = %vpc, %peer, error = %e, "UDP send");
    }
}

async fn serve_tcp(
    vpc: Arc<str>,
    listener: tokio::net::TcpListener,
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Arc<Upstreams>,
) -> Result<(), ServeError> {
    let slots = Arc::new(Semaphore::new(TCP_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if is_transient(&e) => {
                tracing::debug!(vpc = %vpc, error = %e, "TCP accept (retrying)");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => {
                return Err(ServeError::Accept {
                    vpc: vpc.to_string(),
                    source: e,
                });
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // full: the client retries
        };
        let (vpc, zones, upstreams) = (vpc.clone(), zones.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, &vpc, &zones, &upstreams).await {
                tracing::debug!(vpc = %vpc, %peer, error = %e, "TCP connection");
            }
            drop(permit);
        });
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

/// RFC 7766: length-prefixed messages, answered in order, until the client closes or idles.
async fn tcp_connection(
    mut stream: TcpStream,
    vpc: &str,
    zones: &watch::Receiver<Arc<Zones>>,
    upstreams: &Upstreams,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut bytes))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let current = zones.borrow().clone();
        let out = match step(&current, vpc, &bytes, true) {
            (Step::Send(out), _) => out,
            (Step::Drop, _) => continue,
            (other, limit) => upstream_step(other, &bytes, upstreams, true, limit).await,
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}

/// Finishes a Forward or Chase step through the upstreams.
async fn upstream_step(
    step: Step,
    raw: &[u8],
    upstreams: &Upstreams,
    tcp: bool,
    limit: usize,
) -> Vec<u8> {
    match step {
        Step::Forward(query) => {
            if upstreams.servers.is_empty() {
                return answer::refused(&query).encode(limit);
            }
            // A UDP client gets the upstream's UDP answer, TC and all, and retries over TCP
            // itself; only an answer over its limit (a misbehaving upstream) is cut here.
            let how = if tcp { Via::Tcp } else { Via::Udp };
            match exchange(raw, upstreams, how).await {
                Some(reply) if reply.len() <= limit => reply,
                Some(reply) => match Message::parse(&reply) {
                    Ok(m) => m.encode(limit),
                    Err(_) => answer::servfail(&query).encode(limit),
                },
                None => answer::servfail(&query).encode(limit),
            }
        }
        Step::Chase {
            reply,
            target,
            qtype,
        } => {
            let upstream = if upstreams.servers.is_empty() {
                None
            } else {
                let q = Message {
                    header: Header {
                        id: reply.header.id ^ 0x5a5a,
                        rd: true,
                        ..Default::default()
                    },
                    questions: vec![Question {
                        name: target,
                        qtype,
                        qclass: CLASS_IN,
                    }],
                    edns: Some(Edns {
                        udp_size: UDP_EDNS,
                        ext_rcode: 0,
                        version: 0,
                        dnssec_ok: false,
                        options: Vec::new(),
                    }),
                    ..Default::default()
                };
                let how = if tcp { Via::Tcp } else { Via::UdpThenTcp };
                exchange(&q.encode(MAX_MESSAGE), upstreams, how)
                    .await
                    .and_then(|b| Message::parse(&b).ok())
            };
            answer::complete_chase(reply, upstream.as_ref()).encode(limit)
        }
        Step::Send(out) => out,
        Step::Drop => Vec::new(),
    }
}

/// How an exchange with an upstream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
    /// UDP, and TCP again when the UDP answer is truncated (for Ferry's own queries).
    UdpThenTcp,
}

/// Asks each upstream in turn until one answers with the query's id (each exchange uses its
/// own socket, so the id is the client's).
async fn exchange(query: &[u8], upstreams: &Upstreams, via: Via) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for &server in &upstreams.servers {
        let got = match via {
            Via::Tcp => exchange_tcp(query, server, upstreams.timeout).await,
            Via::Udp => exchange_udp(query, server, upstreams.timeout).await,
            Via::UdpThenTcp => match exchange_udp(query, server, upstreams.timeout).await {
                Ok(r) if r.get(2).is_some_and(|f| f & 0x02 != 0) => {
                    exchange_tcp(query, server, upstreams.timeout).await
                }
                other => other,
            },
        };
        match got {
            Ok(r) if r.get(..2) == Some(id) => return Some(r),
            Ok(_) => tracing::debug!(%server, "upstream answered another id"),
            Err(e) => tracing::debug!(%server, error = %e, "upstream"),
        }
    }
    None
}

async fn exchange_udp(query: &[u8], server: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    buf.truncate(n);
    Ok(buf)
}

async fn exchange_tcp(query: &[u8], server: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let run = async {
        let mut s = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TYPE_A;

    fn query(edns: Option<u16>) -> Message {
        Message {
            header: Header {
                id: 7,
                rd: true,
                ..Default::default()
            },
            questions: vec![Question {
                name: Name::parse("web.default.svc.cluster.local").expect("name"),
                qtype: TYPE_A,
                qclass: CLASS_IN,
            }],
            edns: edns.map(|udp_size| Edns {
                udp_size,
                ext_rcode: 0,
                version: 0,
                dnssec_ok: false,
                options: Vec::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn udp_limit_follows_edns_within_512_and_1232() {
        let cases = [
            (None, 512),
            (Some(100), 512),
            (Some(1000), 1000),
            (Some(4096), 1232),
        ];
        for (edns, want) in cases {
            assert_eq!(udp_limit(&query(edns)), want, "edns {edns:?}");
        }
    }

    #[test]
    fn upstream_flags_table() {
        let ok = |v: &[&str]| {
            Upstreams::from_flags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|u| u.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(ok(&[]), Ok(vec![]));
        assert_eq!(ok(&["10.0.0.2"]), Ok(vec!["10.0.0.2:53".to_string()]));
        assert_eq!(
            ok(&["10.0.0.2:5353, fd00::1", "[fd00::2]:54"]),
            Ok(vec![
                "10.0.0.2:5353".to_string(),
                "[fd00::1]:53".to_string(),
                "[fd00::2]:54".to_string()
            ])
        );
        assert_eq!(ok(&["dns.google"]), Err(BadUpstream("dns.google".into())));
    }

    #[test]
    fn bind_gives_one_port_for_both_transports() {
        let l = VpcListener::bind("vpc1", "127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert_eq!(l.udp.local_addr().ok(), l.tcp.local_addr().ok());
        assert_eq!(l.vpc, "vpc1");
    }

    #[test]
    fn responses_and_runts_are_dropped_not_answered() {
        let zones = Zones::empty("cluster.local");
        let mut response = query(None);
        response.header.qr = true;
        assert!(matches!(
            step(&zones, "vpc1", &response.encode(512), false).0,
            Step::Drop
        ));
        assert!(matches!(
            step(&zones, "vpc1", &[1, 2, 3], false).0,
            Step::Drop
        ));
    }
}
