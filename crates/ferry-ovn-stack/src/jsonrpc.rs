//! One JSON-RPC request over a unix socket: how readiness is probed. `ovsdb-server`
//! answers `list_dbs`/`transact`, and every OVS/OVN daemon's `--unixctl` socket answers
//! its appctl commands (`version`, `status`, `connection-status`) the same way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Sends one request and returns its `result`, or a one-line description of the failure
/// (readiness probes retry, so the reason only ends up in a timeout error).
pub fn call(sock: &Path, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
    let mut stream =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let req = json!({"method": method, "params": params, "id": 0});
    stream
        .write_all(req.to_string().as_bytes())
        .map_err(|e| format!("send {method}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("read reply to {method}: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed before the reply to {method}"));
        }
        buf.extend_from_slice(&chunk[..n]);
        // Replies carry no framing: a reply is complete when it parses.
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        if let Some(Ok(reply)) = values.next() {
            if reply.get("id") != Some(&json!(0)) {
                // A server request (e.g. echo) ahead of our reply: drop it and read on.
                let used = values.byte_offset();
                buf.drain(..used);
                continue;
            }
            return match reply.get("error") {
                Some(err) if !err.is_null() => Err(format!("{method}: {err}")),
                _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
            };
        }
    }
}
