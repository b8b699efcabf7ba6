//! Probe executors: one attempt of a TCP, HTTP, UDP or ICMP probe, with its sockets
//! created by a [`SocketSource`] (so inside a VPC's namespace when asked), bounded by the
//! probe's timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Type};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::Instant;

use super::icmp;
use super::state::ProbeResult;
use super::target::{ProbeKind, ProbeTarget};
use crate::netns::SocketSource;

/// Runs one attempt. Never panics and never errors: every failure is a failed result
/// with a message.
pub async fn execute(
    sockets: &SocketSource,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let addr = SocketAddr::new(target.ip, target.port);
    let outcome = match &target.kind {
        ProbeKind::Tcp => heard(tokio::time::timeout(timeout, tcp(sockets, addr)).await),
        ProbeKind::Http { path } => {
            heard(tokio::time::timeout(timeout, http(sockets, addr, path)).await)
        }
        ProbeKind::Udp { silence } => Ok(udp(sockets, addr, timeout, *silence).await),
        ProbeKind::Icmp => {
            heard(tokio::time::timeout(timeout, icmp_echo(sockets, target.ip)).await)
        }
    };
    let latency = start.elapsed();
    let (success, inconclusive, message) = match outcome {
        Ok(Ok(Heard::Yes(msg))) => (true, false, msg),
        Ok(Ok(Heard::Nothing(msg))) => (false, true, msg),
        Ok(Err(msg)) => (false, false, msg),
        Err(_) => (
            false,
            false,
            format!("timed out after {}ms", timeout.as_millis()),
        ),
    };
    ProbeResult {
        success,
        inconclusive,
        latency,
        message,
    }
}

/// What an attempt heard: an answer, or nothing that decides (a silent UDP port).
enum Heard {
    Yes(String),
    Nothing(String),
}

/// An attempt that either answered or failed.
fn heard<E>(r: Result<Outcome, E>) -> Result<Result<Heard, String>, E> {
    r.map(|o| o.map(Heard::Yes))
}

type Outcome = Result<String, String>;

async fn connect(sockets: &SocketSource, addr: SocketAddr) -> io::Result<TcpStream> {
    let s = sockets
        .socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .await?;
    // Close with RST: thousands of probes per second must not pile up TIME_WAIT sockets.
    s.set_linger(Some(Duration::ZERO))?;
    s.set_tcp_nodelay(true)?;
    let std_stream: std::net::TcpStream = s.into();
    TcpSocket::from_std_stream(std_stream).connect(addr).await
}

async fn tcp(sockets: &SocketSource, addr: SocketAddr) -> Outcome {
    connect(sockets, addr)
        .await
        .map(|_| format!("connected to {addr}"))
        .map_err(|e| format!("connect to {addr}: {e}"))
}

async fn http(sockets: &SocketSource, addr: SocketAddr, path: &str) -> Outcome {
    let stream = connect(sockets, addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    let driver = tokio::spawn(conn);
    let _abort = AbortOnDrop(driver);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let req = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "ferry-probe/1")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("build GET {path}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let status = resp.status();
    let msg = format!("GET http://{addr}{path}: HTTP {status}");
    if status.is_success() || status.is_redirection() {
        Ok(msg)
    } else {
        Err(msg)
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// UDP has no handshake: send one datagram on a connected socket and wait. A reply is
/// success; an ICMP port-unreachable surfaces as `ECONNREFUSED` on the connected socket
/// and is failure; silence for the whole timeout proves nothing, so `silence` decides
/// (by default the result is inconclusive and the backend's phase Unknown).
async fn udp(
    sockets: &SocketSource,
    addr: SocketAddr,
    timeout: Duration,
    silence: ferry_api::UdpSilence,
) -> Result<Heard, String> {
    let sock = async {
        let s = sockets
            .socket(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .await?;
        let std_sock: std::net::UdpSocket = s.into();
        let u = UdpSocket::from_std(std_sock)?;
        u.connect(addr).await?;
        u.send(b"ferry-probe\n").await?;
        Ok::<_, io::Error>(u)
    };
    let deadline = Instant::now() + timeout;
    let u = match tokio::time::timeout_at(deadline, sock).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return Err(refused_or(addr, e)),
        Err(_) => return Err(format!("UDP send to {addr} timed out")),
    };
    let mut buf = [0u8; 512];
    match tokio::time::timeout_at(deadline, u.recv(&mut buf)).await {
        Ok(Ok(n)) => Ok(Heard::Yes(format!("UDP reply from {addr} ({n} bytes)"))),
        Ok(Err(e)) => Err(refused_or(addr, e)),
        Err(_) => {
            let msg = format!(
                "no reply from {addr} and no ICMP port unreachable within {}ms",
                timeout.as_millis()
            );
            match silence {
                ferry_api::UdpSilence::Healthy => Ok(Heard::Yes(msg)),
                ferry_api::UdpSilence::Unhealthy => Err(msg),
                ferry_api::UdpSilence::Unknown => Ok(Heard::Nothing(msg)),
            }
        }
    }
}

fn refused_or(addr: SocketAddr, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        format!("UDP {addr}: port unreachable (ICMP)")
    } else {
        format!("UDP {addr}: {e}")
    }
}

static ICMP_SEQ: AtomicU16 = AtomicU16::new(1);

/// One echo request. Prefers an unprivileged `SOCK_DGRAM` ICMP socket (allowed when
/// `net.ipv4.ping_group_range` in the namespace covers our gid; the kernel then picks the
/// identifier and filters replies); falls back to `SOCK_RAW` (root), where replies for
/// every socket arrive and are matched by source, identifier, sequence and payload.
async fn icmp_echo(sockets: &SocketSource, ip: IpAddr) -> Outcome {
    let IpAddr::V4(v4) = ip else {
        return Err(format!("ICMP probe to {ip}: IPv6 echo is not implemented"));
    };
    let (sock, raw) = match sockets
        .socket(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))
        .await
    {
        Ok(s) => (s, false),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let s = sockets
                .socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
                .await
                .map_err(|e| format!("ICMP socket (dgram not permitted, raw failed): {e}"))?;
            (s, true)
        }
        Err(e) => return Err(format!("ICMP socket: {e}")),
    };
    let how = if raw { "raw" } else { "dgram" };
    let seq = ICMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let ident = (std::process::id() as u16) ^ seq.rotate_left(8);
    let token = token(seq);
    let pkt = icmp::echo_request(ident, seq, &token);
    // Driven through tokio's UdpSocket: it only calls sendto/recvfrom on the descriptor,
    // which is exactly what ICMP datagram and raw sockets need, and it needs no unsafe
    // registration of a raw file descriptor.
    let std_sock: std::net::UdpSocket = sock.into();
    let sock = UdpSocket::from_std(std_sock).map_err(|e| format!("ICMP socket: {e}"))?;
    sock.send_to(&pkt, SocketAddr::new(ip, 0))
        .await
        .map_err(|e| format!("ICMP echo to {ip}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| format!("ICMP echo to {ip}: {e}"))?;
        let reply = if raw {
            icmp::parse_ipv4_reply(&buf[..n])
                .filter(|(src, r)| *src == v4 && r.ident == ident)
                .map(|(_, r)| r)
        } else {
            icmp::parse_reply(&buf[..n])
        };
        if let Some(r) = reply
            && r.seq == seq
            && r.payload == token
        {
            return Ok(format!("ICMP echo reply from {ip} ({how} socket)"));
        }
    }
}

fn token(seq: u16) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut t = b"ferry".to_vec();
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&nanos.to_be_bytes());
    t
}
