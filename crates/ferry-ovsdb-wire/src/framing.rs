//! Splits a byte stream of concatenated JSON values (OVSDB sends no delimiter) into values.
//!
//! A small scanner finds where each top-level object or array ends, remembering its state
//! between reads, so a large message arriving in many pieces is scanned once; the complete
//! prefix is then parsed with serde_json's `StreamDeserializer`, whose byte offset tells how
//! much of the buffer was consumed.

use serde_json::Value;

use crate::error::{Error, Result};

/// Accumulates bytes and yields complete JSON values.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// End (exclusive) of the last complete top-level value found by the scanner.
    complete: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Framer {
    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes every complete value out of the buffer.
    pub fn drain(&mut self) -> Result<Vec<Value>> {
        self.scan()?;
        if self.complete == 0 {
            return Ok(Vec::new());
        }
        let mut values = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.buf[..self.complete]).into_iter::<Value>();
        for v in stream.by_ref() {
            values.push(v.map_err(|e| Error::Protocol(format!("invalid JSON from server: {e}")))?);
        }
        let used = stream.byte_offset();
        self.buf.drain(..used);
        self.scanned -= used;
        self.complete -= used;
        Ok(values)
    }

    fn scan(&mut self) -> Result<()> {
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.checked_sub(1).ok_or_else(|| {
                        Error::Protocol("unbalanced closing bracket from server".into())
                    })?;
                    if self.depth == 0 {
                        self.complete = i;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 => {
                    return Err(Error::Protocol(format!(
                        "server sent a top-level JSON value that is not an object (byte {b:#04x})"
                    )));
                }
                _ => {}
            }
        }
        self.scanned = i;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_concatenated_values_across_arbitrary_chunks() {
        let msgs = [
            json!({"id": 1, "result": ["a\"}{", "b\\"], "error": null}),
            json!({"method": "echo", "params": [], "id": "echo"}),
            json!({"id": 2, "result": {"x": [[1, 2], {"y": "]"}]}, "error": null}),
        ];
        let bytes: Vec<u8> = msgs
            .iter()
            .flat_map(|m| serde_json::to_vec(m).expect("ser"))
            .collect();
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                f.push(piece);
                got.extend(f.drain().expect("drain"));
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
            assert!(f.buf.is_empty());
        }
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let mut f = Framer::default();
        f.push(b"hello");
        assert!(matches!(f.drain(), Err(Error::Protocol(_))));
    }
}
