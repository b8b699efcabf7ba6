//! The Kubernetes remote command protocols over an upgraded connection, server side, as
//! the kubelet serves them to kubectl: WebSocket with the `v5.channel.k8s.io` (or
//! `v4.channel.k8s.io`) subprotocol (kubectl 1.30+: one byte of channel before each
//! message, 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5's 255 closes a channel), and
//! SPDY/3.1 with protocol `v4.channel.k8s.io` (kubectl 1.27-1.29, and the fallback of
//! later ones): one SPDY stream per `streamtype` header. Either way the error channel
//! ends with a `metav1.Status` whose `ExitCode` cause carries a non-zero exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{self, ExecSpec, Input, Output};
use super::spdy::{self, Frame};
use super::websocket::{self, Message, Opcode};

/// WebSocket subprotocols served, preferred first.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// SPDY stream protocols served, preferred first (v5 is v4 on SPDY).
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v5.channel.k8s.io"];

/// The first protocol of `ours` that the client offered (`offered`: header values, each
/// possibly a comma-separated list).
pub fn negotiate<'a>(offered: &[String], ours: &[&'a str]) -> Option<&'a str> {
    let offered: Vec<&str> = offered
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    ours.iter().copied().find(|p| offered.contains(p))
}

/// The Status written on the error channel when the command ended with `code`.
pub fn exit_status(code: i32, argv: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({"metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
}

/// The Status written on the error channel when the command could not start.
pub fn start_failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// A terminal size from the resize channel (`{"Width":80,"Height":24}`).
fn resize_of(v: &Value) -> Option<Input> {
    Some(Input::Resize {
        width: u16::try_from(v["Width"].as_u64()?).ok()?,
        height: u16::try_from(v["Height"].as_u64()?).ok()?,
    })
}

/// Resize events from the bytes of the resize channel so far (JSON objects back to
/// back); consumed bytes are removed.
fn resizes(buf: &mut Vec<u8>) -> Vec<Input> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let mut used = 0;
    while let Some(Ok(v)) = stream.next() {
        used = stream.byte_offset();
        out.extend(resize_of(&v));
    }
    buf.drain(..used);
    out
}

// === impl WebSocket ===

/// Serves one exec over an upgraded WebSocket connection.
pub async fn websocket<IO>(io: IO, spec: ExecSpec)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let send = |channel: u8, data: &[u8]| {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(channel);
        m.extend_from_slice(data);
        websocket::encode(Opcode::Binary, &m)
    };
    let mut ex = match exec::start(&spec) {
        Ok(e) => e,
        Err(e) => {
            let st = start_failure(&format!("starting {:?}: {e}", spec.argv));
            let _ = wtx.send(send(3, st.to_string().as_bytes())).await;
            let _ = wtx.send(websocket::close_frame(1000)).await;
            drop(wtx);
            let _ = writer.await;
            return;
        }
    };
    // As the kubelet: an empty message on the first writable channel says "connected".
    let first = if spec.stdout {
        1
    } else if spec.stderr {
        2
    } else {
        3
    };
    let _ = wtx.send(send(first, &[])).await;
    let mut decoder = websocket::Decoder::default();
    let mut resize_buf = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut client_open = true;
    loop {
        tokio::select! {
            n = rd.read(&mut buf), if client_open => {
                let n = match n { Ok(n) if n > 0 => n, _ => return };
                decoder.push(&buf[..n]);
                loop {
                    let m = match decoder.next_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "exec websocket protocol error");
                            return;
                        }
                    };
                    match m {
                        Message { opcode: Opcode::Ping, payload } => {
                            let _ = wtx.send(websocket::encode(Opcode::Pong, &payload)).await;
                        }
                        Message { opcode: Opcode::Close, .. } => {
                            let _ = wtx.send(websocket::close_frame(1000)).await;
                            client_open = false;
                        }
                        Message { opcode: Opcode::Binary, payload } if !payload.is_empty() => {
                            match payload[0] {
                                0 => { let _ = ex.input.send(Input::Stdin(payload[1..].to_vec())).await; }
                                4 => {
                                    resize_buf.extend_from_slice(&payload[1..]);
                                    for r in resizes(&mut resize_buf) { let _ = ex.input.send(r).await; }
                                }
                                255 if payload.get(1) == Some(&0) => { let _ = ex.input.send(Input::CloseStdin).await; }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
                if !client_open { break; }
            }
            o = ex.output.recv() => match o {
                Some(Output::Stdout(d)) => { let _ = wtx.send(send(1, &d)).await; }
                Some(Output::Stderr(d)) => { let _ = wtx.send(send(2, &d)).await; }
                Some(Output::Exit(code)) => {
                    let st = exit_status(code, &spec.argv);
                    let _ = wtx.send(send(3, st.to_string().as_bytes())).await;
                    let _ = wtx.send(websocket::close_frame(1000)).await;
                    break;
                }
                None => break,
            }
        }
    }
    drop(wtx);
    let _ = writer.await;
    // Give the client its close handshake before the connection goes.
    if client_open {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

// === impl SPDY ===

/// The streams one exec waits for before it starts, by `streamtype`.
fn expected_streams(spec: &ExecSpec) -> Vec<&'static str> {
    let mut want = vec!["error"];
    if spec.stdin {
        want.push("stdin");
    }
    if spec.stdout {
        want.push("stdout");
    }
    if spec.stderr && !spec.tty {
        want.push("stderr");
    }
    if spec.tty {
        want.push("resize");
    }
    want
}

/// How long the client has to open its streams.
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// Data frames carry at most this much.
const DATA_CHUNK: usize = 32 * 1024;

/// Serves one exec over an upgraded SPDY/3.1 connection.
pub async fn spdy<IO>(io: IO, spec: ExecSpec)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (wtx, mut wrx) = mpsc::channel::<Frame>(64);
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
    let want = expected_streams(&spec);
    let mut streams: BTreeMap<String, u32> = BTreeMap::new();
    let mut ex: Option<exec::Exec> = None;
    let mut rbuf = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut resize_buf = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION;
    let data = |id: u32, d: &[u8], fin: bool| Frame::Data {
        stream_id: id,
        fin,
        data: d.to_vec(),
    };
    'session: loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline), if ex.is_none() => {
                tracing::debug!(have = ?streams.keys().collect::<Vec<_>>(), "exec: the client did not open its streams");
                break;
            }
            n = rd.read(&mut buf) => {
                let n = match n { Ok(n) if n > 0 => n, _ => break };
                rbuf.extend_from_slice(&buf[..n]);
                loop {
                    let f = match codec.decode(&mut rbuf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "exec SPDY protocol error");
                            break 'session;
                        }
                    };
                    match f {
                        Frame::SynStream { stream_id, headers, .. } => {
                            let kind = spdy::header(&headers, "streamtype").unwrap_or_default().to_string();
                            let _ = wtx.send(Frame::SynReply { stream_id, fin: false, headers: vec![] }).await;
                            streams.insert(kind, stream_id);
                            if ex.is_none() && want.iter().all(|w| streams.contains_key(*w)) {
                                match exec::start(&spec) {
                                    Ok(e) => ex = Some(e),
                                    Err(e) => {
                                        let st = start_failure(&format!("starting {:?}: {e}", spec.argv));
                                        let id = streams["error"];
                                        let _ = wtx.send(data(id, st.to_string().as_bytes(), false)).await;
                                        let _ = wtx.send(data(id, &[], true)).await;
                                        break 'session;
                                    }
                                }
                            }
                        }
                        Frame::Data { stream_id, fin, data: d } => {
                            let Some(e) = ex.as_ref() else { continue };
                            if streams.get("stdin") == Some(&stream_id) {
                                if !d.is_empty() { let _ = e.input.send(Input::Stdin(d)).await; }
                                if fin { let _ = e.input.send(Input::CloseStdin).await; }
                            } else if streams.get("resize") == Some(&stream_id) {
                                resize_buf.extend_from_slice(&d);
                                for r in resizes(&mut resize_buf) { let _ = e.input.send(r).await; }
                            }
                        }
                        Frame::Ping { id } => { let _ = wtx.send(Frame::Ping { id }).await; }
                        Frame::GoAway { .. } => break 'session,
                        _ => {}
                    }
                }
            }
            o = async {
                match ex.as_mut() {
                    Some(e) => e.output.recv().await,
                    None => std::future::pending().await,
                }
            } => match o {
                Some(Output::Stdout(d)) | Some(Output::Stderr(d)) if d.is_empty() => {}
                Some(Output::Stdout(d)) => {
                    if let Some(id) = streams.get("stdout") {
                        for c in d.chunks(DATA_CHUNK) { let _ = wtx.send(data(*id, c, false)).await; }
                    }
                }
                Some(Output::Stderr(d)) => {
                    if let Some(id) = streams.get("stderr") {
                        for c in d.chunks(DATA_CHUNK) { let _ = wtx.send(data(*id, c, false)).await; }
                    }
                }
                Some(Output::Exit(code)) => {
                    for kind in ["stdout", "stderr"] {
                        if let Some(id) = streams.get(kind) { let _ = wtx.send(data(*id, &[], true)).await; }
                    }
                    if let Some(id) = streams.get("error") {
                        let st = exit_status(code, &spec.argv);
                        let _ = wtx.send(data(*id, st.to_string().as_bytes(), false)).await;
                        let _ = wtx.send(data(*id, &[], true)).await;
                    }
                    break;
                }
                None => break,
            }
        }
    }
    drop(wtx);
    let _ = writer.await;
    // The client closes the connection once it has read the error stream.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    drop(ex);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_negotiated_in_our_order() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &offered(&[
                    "v5.channel.k8s.io",
                    "v4.channel.k8s.io",
                    "v3.channel.k8s.io"
                ]),
                SPDY_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offered(&["v5.channel.k8s.io"]), WEBSOCKET_PROTOCOLS),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            negotiate(
                &offered(&["channel.k8s.io, v4.channel.k8s.io"]),
                SPDY_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offered(&["channel.k8s.io"]), SPDY_PROTOCOLS),
            None
        );
    }

    #[test]
    fn exit_codes_travel_as_status_causes() {
        let argv = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        assert_eq!(
            exit_status(0, &argv),
            json!({"metadata": {}, "status": "Success"})
        );
        let st = exit_status(3, &argv);
        assert_eq!(
            (
                &st["status"],
                &st["reason"],
                &st["details"]["causes"][0]["reason"],
                &st["details"]["causes"][0]["message"]
            ),
            (
                &json!("Failure"),
                &json!("NonZeroExitCode"),
                &json!("ExitCode"),
                &json!("3")
            )
        );
    }

    #[test]
    fn resize_events_parse_back_to_back() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(
            resizes(&mut buf),
            vec![Input::Resize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(br#""Height":30}"#);
        assert_eq!(
            resizes(&mut buf),
            vec![Input::Resize {
                width: 100,
                height: 30
            }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn spdy_waits_for_the_streams_kubectl_opens() {
        let spec = ExecSpec {
            netns: "n".into(),
            hostname: "h".into(),
            argv: vec![],
            env: vec![],
            dir: "/".into(),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(expected_streams(&spec), ["error", "stdout", "stderr"]);
        let it = ExecSpec {
            stdin: true,
            tty: true,
            ..spec
        };
        assert_eq!(
            expected_streams(&it),
            ["error", "stdin", "stdout", "resize"]
        );
    }
}
