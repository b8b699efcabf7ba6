//! `kubectl port-forward`, server side, as the kubelet serves it: SPDY/3.1 with protocol
//! `portforward.k8s.io` (kubectl 1.27-1.30, and the fallback of later ones), or the same
//! SPDY bytes tunnelled in WebSocket binary messages (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, kubectl 1.31+). Each forwarded connection is a pair of
//! SPDY streams sharing a `requestid`: `error` (a message if the pod's port cannot be
//! reached, then closed) and `data` (the bytes), connected to `localhost:PORT` inside the
//! pod's network namespace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Frame};
use super::websocket::{self, Opcode};
use crate::netns::NetnsSocketFactory;

/// The SPDY protocol of port forwarding.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// What one half of a forwarded connection receives from the client.
#[derive(Debug)]
enum FromClient {
    Data(Vec<u8>),
    /// FIN: the client sends no more.
    End,
    /// RST: drop the connection.
    Reset,
}

/// The streams of one forwarded connection, keyed by `requestid`.
#[derive(Debug, Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    started: bool,
}

/// The key pairing a connection's streams: its `requestid`, or (old clients) its port.
fn pair_key(headers: &spdy::Headers) -> String {
    spdy::header(headers, "requestid")
        .map(String::from)
        .unwrap_or_else(|| format!("port-{}", spdy::header(headers, "port").unwrap_or("0")))
}

/// Serves port forwarding for the pod whose network namespace is `netns_path`.
pub async fn spdy_session<IO>(io: IO, netns_path: PathBuf, pod: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sockets = match NetnsSocketFactory::open(&netns_path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(pod = %pod, error = %e, "port-forward: cannot enter the pod's namespace");
            None
        }
    };
    let (mut rd, mut wr) = tokio::io::split(io);
    let (wtx, mut wrx) = mpsc::channel::<Frame>(256);
    let writer = tokio::spawn(async move {
        let mut codec = spdy::Codec::new();
        while let Some(f) = wrx.recv().await {
            let mut out = Vec::new();
            if codec.encode(&f, &mut out).is_err() || wr.write_all(&out).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut codec = spdy::Codec::new();
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    let mut to_conn: BTreeMap<u32, mpsc::Sender<FromClient>> = BTreeMap::new();
    let mut rbuf = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    'session: loop {
        let n = match rd.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        rbuf.extend_from_slice(&buf[..n]);
        loop {
            let f = match codec.decode(&mut rbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward SPDY protocol error");
                    break 'session;
                }
            };
            match f {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let _ = wtx
                        .send(Frame::SynReply {
                            stream_id,
                            fin: false,
                            headers: vec![],
                        })
                        .await;
                    let key = pair_key(&headers);
                    let pair = pairs.entry(key.clone()).or_default();
                    pair.port = spdy::header(&headers, "port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    match spdy::header(&headers, "streamtype") {
                        Some("error") => pair.error = Some(stream_id),
                        Some("data") => pair.data = Some(stream_id),
                        _ => {}
                    }
                    if let (Some(error), Some(data), false) = (pair.error, pair.data, pair.started)
                    {
                        pair.started = true;
                        let (tx, rx) = mpsc::channel(64);
                        to_conn.insert(data, tx);
                        tokio::spawn(forward(
                            sockets.clone(),
                            pair.port,
                            pod.clone(),
                            error,
                            data,
                            rx,
                            wtx.clone(),
                        ));
                        pairs.remove(&key);
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    if let Some(tx) = to_conn.get(&stream_id) {
                        if !data.is_empty() {
                            let _ = tx.send(FromClient::Data(data)).await;
                        }
                        if fin {
                            let _ = tx.send(FromClient::End).await;
                        }
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(tx) = to_conn.remove(&stream_id) {
                        let _ = tx.send(FromClient::Reset).await;
                    }
                }
                Frame::Ping { id } => {
                    let _ = wtx.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                _ => {}
            }
        }
    }
    for (_, tx) in to_conn {
        let _ = tx.send(FromClient::Reset).await;
    }
    drop(wtx);
    let _ = writer.await;
}

/// One forwarded connection: `localhost:port` in the pod's namespace <-> the data stream.
async fn forward(
    sockets: Option<NetnsSocketFactory>,
    port: u16,
    pod: String,
    error_stream: u32,
    data_stream: u32,
    mut from_client: mpsc::Receiver<FromClient>,
    wtx: mpsc::Sender<Frame>,
) {
    let data = |stream_id: u32, d: &[u8], fin: bool| Frame::Data {
        stream_id,
        fin,
        data: d.to_vec(),
    };
    let tcp = match connect(sockets.as_ref(), port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {pod}: failed to connect to localhost:{port} inside the pod's network namespace: {e}"
            );
            let _ = wtx.send(data(error_stream, msg.as_bytes(), false)).await;
            let _ = wtx.send(data(error_stream, &[], true)).await;
            let _ = wtx.send(data(data_stream, &[], true)).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    // Client -> pod.
    let inbound = tokio::spawn(async move {
        while let Some(m) = from_client.recv().await {
            match m {
                FromClient::Data(d) => {
                    if wr.write_all(&d).await.is_err() {
                        return;
                    }
                }
                FromClient::End => {
                    let _ = wr.shutdown().await;
                }
                FromClient::Reset => return,
            }
        }
    });
    // Pod -> client, then both streams closed.
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    if wtx.send(data(data_stream, &buf[..n], false)).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            _ = wtx.closed() => break,
        }
        if inbound.is_finished() {
            // The client reset the stream: nothing more goes back.
            break;
        }
    }
    let _ = wtx.send(data(data_stream, &[], true)).await;
    let _ = wtx.send(data(error_stream, &[], true)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), inbound).await;
}

/// A TCP connection to `localhost:port` inside the namespace.
async fn connect(
    sockets: Option<&NetnsSocketFactory>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let f = sockets.ok_or_else(|| std::io::Error::other("the pod's namespace is gone"))?;
    let s = f
        .socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .await?;
    let std_stream: std::net::TcpStream = s.into();
    let sock = tokio::net::TcpSocket::from_std_stream(std_stream);
    tokio::time::timeout(
        Duration::from_secs(10),
        sock.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

/// The bytes of a WebSocket that tunnels SPDY, as a plain duplex stream: binary messages
/// in become bytes, bytes out become binary messages; pings are answered.
pub fn websocket_tunnel<IO>(io: IO) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut ws_rd, mut ws_wr) = tokio::io::split(io);
        let (mut t_rd, mut t_wr) = tokio::io::split(ours);
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Vec<u8>>(16);
        // Client -> session.
        let inbound = tokio::spawn(async move {
            let mut d = websocket::Decoder::default();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match ws_rd.read(&mut buf).await {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                d.push(&buf[..n]);
                while let Ok(Some(m)) = d.next_message() {
                    match m.opcode {
                        Opcode::Binary if t_wr.write_all(&m.payload).await.is_err() => return,
                        Opcode::Binary => {}
                        Opcode::Ping => {
                            let _ = ctl_tx
                                .send(websocket::encode(Opcode::Pong, &m.payload))
                                .await;
                        }
                        Opcode::Close => {
                            let _ = ctl_tx.send(websocket::close_frame(1000)).await;
                            let _ = t_wr.shutdown().await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
            let _ = t_wr.shutdown().await;
        });
        // Session -> client.
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                n = t_rd.read(&mut buf) => match n {
                    Ok(n) if n > 0 => {
                        if ws_wr.write_all(&websocket::encode(Opcode::Binary, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                    _ => {
                        let _ = ws_wr.write_all(&websocket::close_frame(1000)).await;
                        break;
                    }
                },
                Some(c) = ctl_rx.recv() => {
                    if ws_wr.write_all(&c).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_wr.shutdown().await;
        inbound.abort();
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_pair_by_request_id_or_port() {
        let h = |kv: &[(&str, &str)]| -> spdy::Headers {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pair_key(&h(&[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", "3")
            ])),
            "3"
        );
        assert_eq!(
            pair_key(&h(&[("streamtype", "error"), ("port", "8080")])),
            "port-8080"
        );
    }
}
