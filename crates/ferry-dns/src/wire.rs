//! DNS messages on the wire: RFC 1035 §4 (header, question, resource records, name
//! compression) and the EDNS(0) OPT record of RFC 6891, for the record types a cluster
//! resolver serves (A, AAAA, CNAME, PTR, NS, SRV, SOA); anything else is carried as raw bytes.
//!
//! Hand-written rather than `hickory-proto`: that crate (0.26, minimal features) resolves
//! and would build, but brings 28 crates new to this workspace (idna with the ICU4X tables,
//! url, tinyvec, ...) for the ~400 lines we need here. Owns parsing and encoding only; which
//! records to answer is `answer`'s job.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;

pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// The classic UDP limit, used when the query carries no OPT record.
pub const UDP_MIN: usize = 512;
/// The EDNS buffer size Ferry advertises and caps answers at (the 2020 DNS flag day value:
/// fits a 1280-byte IPv6 MTU without fragmentation).
pub const UDP_EDNS: u16 = 1232;
/// Largest DNS message (TCP's two-byte length prefix).
pub const MAX_MESSAGE: usize = 65535;

const MAX_NAME_WIRE: usize = 255;
const MAX_LABEL: usize = 63;

/// Why bytes are not a DNS message (or a string not a name).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message ends at byte {at}, inside a field")]
    Truncated { at: usize },
    #[error("label type {byte:#04x} at byte {at} is not supported")]
    BadLabel { at: usize, byte: u8 },
    #[error("compression pointer at byte {at} does not point backwards")]
    BadPointer { at: usize },
    #[error("name longer than 255 bytes on the wire")]
    NameTooLong,
    #[error("label {0:?} is empty or longer than 63 bytes")]
    BadLabelLength(String),
}

// === impl Name ===

/// A domain name as its labels, case preserved (answers echo the asker's case; lookups use
/// [`Name::key`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name::default()
    }

    /// `a.b.c` or `a.b.c.`; `.` and `` are the root.
    pub fn parse(dotted: &str) -> Result<Name, WireError> {
        let trimmed = dotted.strip_suffix('.').unwrap_or(dotted);
        if trimmed.is_empty() {
            return Ok(Name::root());
        }
        let mut labels = Vec::new();
        for l in trimmed.split('.') {
            if l.is_empty() || l.len() > MAX_LABEL {
                return Err(WireError::BadLabelLength(l.to_string()));
            }
            labels.push(l.as_bytes().to_vec());
        }
        let n = Name { labels };
        if n.wire_len() > MAX_NAME_WIRE {
            return Err(WireError::NameTooLong);
        }
        Ok(n)
    }

    pub fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    /// Bytes on the wire without compression.
    pub fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    /// The lookup key: lower-case, dotted, no trailing dot (`` for the root). Bytes other
    /// than letters, digits, `-`, `_` and `*` are written `\DDD`, so a label holding a dot
    /// can never alias a longer name.
    pub fn key(&self) -> String {
        let mut out = String::with_capacity(self.wire_len());
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for &b in l {
                match b {
                    b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' => out.push(b as char),
                    b'A'..=b'Z' => out.push(b.to_ascii_lowercase() as char),
                    _ => out.push_str(&format!("\\{b:03}")),
                }
            }
        }
        out
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            return f.write_str(".");
        }
        for l in &self.labels {
            f.write_str(&String::from_utf8_lossy(l))?;
            f.write_str(".")?;
        }
        Ok(())
    }
}

// === message types ===

/// The fixed 12-byte header, counts excluded (they follow from the sections).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub ad: bool,
    pub cd: bool,
    /// The low four bits of the response code.
    pub rcode: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub class: u16,
    pub ttl: u32,
    pub data: RData,
}

/// SOA fields (RFC 1035 §3.3.13); `minimum` is the negative-caching TTL (RFC 2308).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    Ptr(Name),
    Ns(Name),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Soa(Soa),
    Other {
        rtype: u16,
        data: Vec<u8>,
    },
}

impl RData {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Cname(_) => TYPE_CNAME,
            RData::Ptr(_) => TYPE_PTR,
            RData::Ns(_) => TYPE_NS,
            RData::Srv { .. } => TYPE_SRV,
            RData::Soa(_) => TYPE_SOA,
            RData::Other { rtype, .. } => *rtype,
        }
    }
}

/// The OPT pseudo-record (RFC 6891 §6), kept apart from the additional section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Options, raw; Ferry sets none.
    pub options: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    pub header: Header,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    pub edns: Option<Edns>,
}

// === decoding ===

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(WireError::Truncated { at: self.buf.len() })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name; pointers must point strictly backwards, which also rules
    /// out loops.
    fn name(&mut self) -> Result<Name, WireError> {
        let mut labels = Vec::new();
        let mut wire = 1;
        let mut pos = self.pos;
        let mut resume = None;
        loop {
            let len = *self.buf.get(pos).ok_or(WireError::Truncated { at: pos })?;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    pos += 1;
                    break;
                }
                0x00 => {
                    let start = pos + 1;
                    let end = start + len as usize;
                    let l = self
                        .buf
                        .get(start..end)
                        .ok_or(WireError::Truncated { at: pos })?;
                    wire += l.len() + 1;
                    if wire > MAX_NAME_WIRE {
                        return Err(WireError::NameTooLong);
                    }
                    labels.push(l.to_vec());
                    pos = end;
                }
                0xC0 => {
                    let lo = *self
                        .buf
                        .get(pos + 1)
                        .ok_or(WireError::Truncated { at: pos })?;
                    let target = (((len & 0x3F) as usize) << 8) | lo as usize;
                    if target >= pos {
                        return Err(WireError::BadPointer { at: pos });
                    }
                    resume.get_or_insert(pos + 2);
                    pos = target;
                }
                _ => return Err(WireError::BadLabel { at: pos, byte: len }),
            }
        }
        self.pos = resume.unwrap_or(pos);
        Ok(Name { labels })
    }
}

impl Header {
    fn read(r: &mut Reader<'_>) -> Result<(Header, [u16; 4]), WireError> {
        let id = r.u16()?;
        let f1 = r.u8()?;
        let f2 = r.u8()?;
        let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
        Ok((
            Header {
                id,
                qr: f1 & 0x80 != 0,
                opcode: (f1 >> 3) & 0x0F,
                aa: f1 & 0x04 != 0,
                tc: f1 & 0x02 != 0,
                rd: f1 & 0x01 != 0,
                ra: f2 & 0x80 != 0,
                ad: f2 & 0x20 != 0,
                cd: f2 & 0x10 != 0,
                rcode: f2 & 0x0F,
            },
            counts,
        ))
    }

    /// Only the header of `buf`, for answering a message whose body does not parse.
    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        Ok(Header::read(&mut Reader { buf, pos: 0 })?.0)
    }
}

fn read_rdata(r: &mut Reader<'_>, rtype: u16, len: usize) -> Result<RData, WireError> {
    let start = r.pos;
    let end = start + len;
    if end > r.buf.len() {
        return Err(WireError::Truncated { at: r.buf.len() });
    }
    let data = match rtype {
        TYPE_A if len == 4 => {
            let b = r.take(4)?;
            RData::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        TYPE_AAAA if len == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(r.take(16)?);
            RData::Aaaa(Ipv6Addr::from(o))
        }
        TYPE_CNAME => RData::Cname(r.name()?),
        TYPE_PTR => RData::Ptr(r.name()?),
        TYPE_NS => RData::Ns(r.name()?),
        TYPE_SRV => RData::Srv {
            priority: r.u16()?,
            weight: r.u16()?,
            port: r.u16()?,
            target: r.name()?,
        },
        TYPE_SOA => RData::Soa(Soa {
            mname: r.name()?,
            rname: r.name()?,
            serial: r.u32()?,
            refresh: r.u32()?,
            retry: r.u32()?,
            expire: r.u32()?,
            minimum: r.u32()?,
        }),
        _ => RData::Other {
            rtype,
            data: r.take(len)?.to_vec(),
        },
    };
    if r.pos != end {
        // The typed reading disagreed with RDLENGTH.
        return Err(WireError::Truncated { at: end });
    }
    Ok(data)
}

impl Message {
    /// Parses a whole message; the first OPT record of the additional section becomes
    /// [`Message::edns`].
    pub fn parse(buf: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { buf, pos: 0 };
        let (header, [qd, an, ns, ar]) = Header::read(&mut r)?;
        let mut m = Message {
            header,
            ..Default::default()
        };
        for _ in 0..qd {
            m.questions.push(Question {
                name: r.name()?,
                qtype: r.u16()?,
                qclass: r.u16()?,
            });
        }
        for (section, count) in [(0, an), (1, ns), (2, ar)] {
            for _ in 0..count {
                let name = r.name()?;
                let rtype = r.u16()?;
                let class = r.u16()?;
                let ttl = r.u32()?;
                let len = r.u16()? as usize;
                if rtype == TYPE_OPT && section == 2 {
                    let options = r.take(len)?.to_vec();
                    if m.edns.is_none() {
                        m.edns = Some(Edns {
                            udp_size: class,
                            ext_rcode: (ttl >> 24) as u8,
                            version: (ttl >> 16) as u8,
                            dnssec_ok: ttl & 0x8000 != 0,
                            options,
                        });
                    }
                    continue;
                }
                let data = read_rdata(&mut r, rtype, len)?;
                let rec = Record {
                    name,
                    class,
                    ttl,
                    data,
                };
                match section {
                    0 => m.answers.push(rec),
                    1 => m.authority.push(rec),
                    _ => m.additional.push(rec),
                }
            }
        }
        Ok(m)
    }
}

// === encoding ===

struct Writer {
    buf: Vec<u8>,
    /// Uncompressed wire form of every name suffix written so far -> its offset.
    suffixes: HashMap<Vec<u8>, u16>,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes `n`, pointing at an earlier identical suffix when `compress` (RFC 1035 §4.1.4).
    /// Suffixes match byte for byte, so the asker's letter case survives.
    fn name(&mut self, n: &Name, compress: bool) {
        for i in 0..n.labels.len() {
            let mut suffix = Vec::new();
            for l in &n.labels[i..] {
                suffix.push(l.len() as u8);
                suffix.extend_from_slice(l);
            }
            if compress && let Some(&off) = self.suffixes.get(&suffix) {
                self.u16(0xC000 | off);
                return;
            }
            if self.buf.len() < 0x3FFF {
                self.suffixes.insert(suffix, self.buf.len() as u16);
            }
            let l = &n.labels[i];
            self.buf.push(l.len() as u8);
            self.buf.extend_from_slice(l);
        }
        self.buf.push(0);
    }

    fn record(&mut self, r: &Record) {
        self.name(&r.name, true);
        self.u16(r.data.rtype());
        self.u16(r.class);
        self.u32(r.ttl);
        let len_at = self.buf.len();
        self.u16(0);
        match &r.data {
            RData::A(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Cname(n) | RData::Ptr(n) | RData::Ns(n) => self.name(n, true),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                // RFC 2782: the target is not compressed.
                self.name(target, false);
            }
            RData::Soa(s) => {
                self.name(&s.mname, true);
                self.name(&s.rname, true);
                for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                    self.u32(v);
                }
            }
            RData::Other { data, .. } => self.buf.extend_from_slice(data),
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    fn opt(&mut self, e: &Edns) {
        self.buf.push(0);
        self.u16(TYPE_OPT);
        self.u16(e.udp_size);
        let ttl = (u32::from(e.ext_rcode) << 24)
            | (u32::from(e.version) << 16)
            | if e.dnssec_ok { 0x8000 } else { 0 };
        self.u32(ttl);
        self.u16(e.options.len() as u16);
        self.buf.extend_from_slice(&e.options);
    }

    fn set_count(&mut self, index: usize, v: u16) {
        let at = 4 + 2 * index;
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

impl Message {
    /// The message in at most `limit` bytes (at least [`UDP_MIN`] is assumed). When it does
    /// not fit, it keeps as many whole answers as fit, drops authority and additional
    /// records, and sets TC so the client retries over TCP (RFC 2181 §9).
    pub fn encode(&self, limit: usize) -> Vec<u8> {
        let limit = limit.clamp(UDP_MIN, MAX_MESSAGE);
        let mut w = Writer {
            buf: Vec::with_capacity(512),
            suffixes: HashMap::new(),
        };
        let h = &self.header;
        w.u16(h.id);
        let mut f1 = (h.opcode & 0x0F) << 3;
        for (bit, on) in [(0x80, h.qr), (0x04, h.aa), (0x02, h.tc), (0x01, h.rd)] {
            if on {
                f1 |= bit;
            }
        }
        let mut f2 = h.rcode & 0x0F;
        for (bit, on) in [(0x80, h.ra), (0x20, h.ad), (0x10, h.cd)] {
            if on {
                f2 |= bit;
            }
        }
        w.buf.push(f1);
        w.buf.push(f2);
        let counts = [
            self.questions.len(),
            self.answers.len(),
            self.authority.len(),
            self.additional.len() + usize::from(self.edns.is_some()),
        ];
        for c in counts {
            w.u16(c.min(u16::MAX as usize) as u16);
        }
        for q in &self.questions {
            w.name(&q.name, true);
            w.u16(q.qtype);
            w.u16(q.qclass);
        }
        let mut answer_ends = vec![w.buf.len()];
        for r in &self.answers {
            w.record(r);
            answer_ends.push(w.buf.len());
        }
        for r in self.authority.iter().chain(&self.additional) {
            w.record(r);
        }
        let opt_len = self.edns.as_ref().map_or(0, |e| 11 + e.options.len());
        if w.buf.len() + opt_len <= limit {
            if let Some(e) = &self.edns {
                w.opt(e);
            }
            return w.buf;
        }
        let keep = answer_ends
            .iter()
            .rposition(|&end| end + opt_len <= limit)
            .unwrap_or(0);
        w.buf.truncate(answer_ends[keep]);
        w.buf[2] |= 0x02;
        w.set_count(1, keep as u16);
        w.set_count(2, 0);
        w.set_count(3, u16::from(self.edns.is_some()));
        if let Some(e) = &self.edns {
            w.opt(e);
        }
        w.buf
    }
}

#[cfg(test)]
mod tests;
