//! WebSocket (RFC 6455) framing, server side, as much as the Kubernetes channel protocols
//! need: the handshake's accept key, client frames (masked) in, server frames (unmasked)
//! out, fragmented messages reassembled, ping answered by the caller. Pure: bytes in,
//! frames out; no socket here.

use base64::Engine;

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message accepted from a client (stdin chunks and resize events are small).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{ACCEPT_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }
    fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }
}

/// A whole message (data messages reassembled) or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("unknown websocket opcode {0:#x}")]
    Opcode(u8),
    #[error("websocket message of {0} bytes is too large")]
    TooLarge(u64),
    #[error("client websocket frames must be masked")]
    Unmasked,
    #[error("websocket continuation frame without a message")]
    Continuation,
}

/// Reassembles client messages from the bytes received so far.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    partial: Option<Message>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if the bytes hold one.
    pub fn next_message(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some(((fin, opcode, payload), used)) = parse_frame(&self.buf)? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            match opcode {
                Opcode::Close | Opcode::Ping | Opcode::Pong => {
                    return Ok(Some(Message { opcode, payload }));
                }
                Opcode::Continuation => {
                    let Some(m) = self.partial.as_mut() else {
                        return Err(WsError::Continuation);
                    };
                    m.payload.extend_from_slice(&payload);
                    if m.payload.len() > MAX_MESSAGE {
                        return Err(WsError::TooLarge(m.payload.len() as u64));
                    }
                }
                Opcode::Text | Opcode::Binary => self.partial = Some(Message { opcode, payload }),
            }
            if fin {
                return Ok(self.partial.take());
            }
        }
    }
}

/// One frame: whether it is final, its opcode and unmasked payload.
type RawFrame = (bool, Opcode, Vec<u8>);

/// The frame at the start of `buf` and the bytes it used.
fn parse_frame(buf: &[u8]) -> Result<Option<(RawFrame, usize)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = Opcode::from_u8(buf[0] & 0x0f).ok_or(WsError::Opcode(buf[0] & 0x0f))?;
    if buf[1] & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some(((fin, opcode, payload), at + len)))
}

/// A server frame (final, unmasked) carrying `payload`.
pub fn encode(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode.as_u8());
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame with a status code (1000: normal closure).
pub fn close_frame(code: u16) -> Vec<u8> {
    encode(Opcode::Close, &code.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked as a client must.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_frames_decode_into_messages() {
        let big = vec![7u8; 70_000];
        struct Case {
            name: &'static str,
            bytes: Vec<u8>,
            want: Vec<Message>,
        }
        let msg = |opcode, payload: &[u8]| Message {
            opcode,
            payload: payload.to_vec(),
        };
        let cases = vec![
            Case {
                name: "stdin on channel 0",
                bytes: client_frame(true, 2, b"\x00hi\n"),
                want: vec![msg(Opcode::Binary, b"\x00hi\n")],
            },
            Case {
                name: "fragmented with a ping between",
                bytes: [
                    client_frame(false, 2, b"\x00ab"),
                    client_frame(true, 9, b"p"),
                    client_frame(true, 0, b"cd"),
                ]
                .concat(),
                want: vec![msg(Opcode::Ping, b"p"), msg(Opcode::Binary, b"\x00abcd")],
            },
            Case {
                name: "16-bit and 64-bit lengths",
                bytes: [
                    client_frame(true, 2, &big[..300]),
                    client_frame(true, 2, &big),
                ]
                .concat(),
                want: vec![msg(Opcode::Binary, &big[..300]), msg(Opcode::Binary, &big)],
            },
            Case {
                name: "v5 close of stdin, then close",
                bytes: [
                    client_frame(true, 2, &[255, 0]),
                    client_frame(true, 8, &[3, 232]),
                ]
                .concat(),
                want: vec![
                    msg(Opcode::Binary, &[255, 0]),
                    msg(Opcode::Close, &[3, 232]),
                ],
            },
        ];
        for c in cases {
            // Fed one byte at a time: a frame split anywhere still decodes.
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for b in &c.bytes {
                d.push(std::slice::from_ref(b));
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn unmasked_client_frames_are_refused() {
        let mut d = Decoder::default();
        d.push(&encode(Opcode::Binary, b"x"));
        assert_eq!(d.next_message(), Err(WsError::Unmasked));
    }

    #[test]
    fn server_frames_carry_their_length() {
        assert_eq!(
            encode(Opcode::Binary, b"\x01ok"),
            vec![0x82, 3, 1, b'o', b'k']
        );
        let f = encode(Opcode::Binary, &[0u8; 200]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 200]);
        assert_eq!(close_frame(1000), vec![0x88, 2, 0x03, 0xe8]);
    }
}
