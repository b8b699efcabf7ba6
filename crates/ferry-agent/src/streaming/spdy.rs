//! SPDY/3.1 framing, as kubectl 1.27-1.29 speak it for `exec` (and every version falls back
//! to when a WebSocket upgrade fails): control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and data frames, with header blocks
//! compressed by one zlib stream per direction and connection, primed with SPDY/3's
//! dictionary. Pure: bytes in, frames out, frames in, bytes out; no socket here.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Largest frame payload accepted (the 24-bit length allows 16 MiB).
pub const MAX_FRAME: usize = 1 << 24;
const FLAG_FIN: u8 = 0x01;

/// The header names and values SPDY/3's dictionary lists, each sent with its length.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: common values, without lengths.
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// SPDY/3's zlib dictionary for header blocks (1423 bytes).
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// Header names (lowercase) and values; several values of one name are NUL-separated.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Settings are read and ignored (kubectl sends none that matter here).
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("SPDY {frame} frame is too short")]
    Short { frame: &'static str },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

/// One connection's framing state: the two header compression contexts.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Codec {
    pub fn new() -> Codec {
        let dictionary = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        // Only fails when called after compressing started.
        let _ = deflate.set_dictionary(&dictionary);
        Codec {
            inflate: Decompress::new(true),
            deflate,
            dictionary,
        }
    }

    /// Takes one frame off the front of `buf` if it holds a whole one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32_at(buf, 4) & 0x00ff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let fin = flags & FLAG_FIN != 0;
        let payload: Vec<u8> = buf[8..8 + len].to_vec();
        let control = buf[0] & 0x80 != 0;
        let first = u32_at(buf, 0);
        buf.drain(..8 + len);
        if !control {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize, frame: &'static str| {
            if payload.len() < n {
                Err(SpdyError::Short { frame })
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            1 => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    associated_to: u32_at(&payload, 4) & 0x7fff_ffff,
                    priority: payload[8] >> 5,
                    fin,
                    headers: self.inflate_headers(&payload[10..])?,
                }
            }
            2 => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    fin,
                    headers: self.inflate_headers(&payload[4..])?,
                }
            }
            3 => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    status: u32_at(&payload, 4),
                }
            }
            4 => Frame::Settings,
            6 => {
                need(4, "PING")?;
                Frame::Ping {
                    id: u32_at(&payload, 0),
                }
            }
            7 => {
                need(8, "GOAWAY")?;
                Frame::GoAway {
                    last_good_stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    status: u32_at(&payload, 4),
                }
            }
            8 => {
                need(4, "HEADERS")?;
                Frame::Headers {
                    stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    fin,
                    headers: self.inflate_headers(&payload[4..])?,
                }
            }
            9 => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: u32_at(&payload, 0) & 0x7fff_ffff,
                    delta: u32_at(&payload, 4) & 0x7fff_ffff,
                }
            }
            // Unknown control frames are ignored, as the spec says.
            _ => Frame::Settings,
        }))
    }

    /// Appends the bytes of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(payload);
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&stream_id.to_be_bytes());
                p.extend_from_slice(&associated_to.to_be_bytes());
                p.push(priority << 5);
                p.push(0);
                p.extend(self.deflate_headers(headers)?);
                control(out, 1, fin_flag(*fin), &p);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(out, 2, fin_flag(*fin), &p);
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, 3, 0, &p);
            }
            Frame::Settings => control(out, 4, 0, &0u32.to_be_bytes()),
            Frame::Ping { id } => control(out, 6, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = last_good_stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, 7, 0, &p);
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(out, 8, fin_flag(*fin), &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&delta.to_be_bytes());
                control(out, 9, 0, &p);
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() >= MAX_FRAME {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(fin_flag(*fin));
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }

    fn inflate_headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let err = |m: String| SpdyError::HeaderBlock(m);
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| err(e.to_string()))?;
                }
                Err(e) => return Err(err(e.to_string())),
            }
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            let produced = self.inflate.total_out() - before_out;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && produced == 0 && out.len() < out.capacity() {
                return Err(err("the compressed block does not decompress".into()));
            }
            if out.len() > MAX_FRAME {
                return Err(err("too large".into()));
            }
        }
        parse_header_block(&out).ok_or_else(|| err("malformed name/value block".into()))
    }

    fn deflate_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            block.extend_from_slice(&(k.len() as u32).to_be_bytes());
            block.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all input is in and the flush fit (room was left over).
            if input.is_empty() && out.len() < out.capacity() && status != Status::BufError {
                break;
            }
        }
        Ok(out)
    }
}

fn parse_header_block(b: &[u8]) -> Option<Headers> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    let mut take = |b: &[u8]| -> Option<String> {
        let len = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        let s = String::from_utf8_lossy(b.get(at..at + len)?).into_owned();
        at += len;
        Some(s)
    };
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = take(b)?;
        let v = take(b)?;
        headers.push((k, v));
    }
    Some(headers)
}

/// The first value of header `name` (values of one name are NUL-separated).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.split('\0').next())
}

#[cfg(test)]
mod tests;
