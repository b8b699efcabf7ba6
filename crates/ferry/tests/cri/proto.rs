//! The few protobuf wire rules the CRI messages below need (proto3: varints, strings, bytes,
//! nested messages, `map<string,string>` entries, repeated strings), so the test needs no
//! code generator and no protobuf crate. Field numbers are from the CRI's
//! `runtime/v1/api.proto`.

/// An encoded message, built field by field. Default values are omitted, as proto3 does.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Msg(pub Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    pub fn new() -> Msg {
        Msg::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn uint(mut self, field: u32, v: u64) -> Msg {
        if v != 0 {
            self.key(field, 0);
            varint(&mut self.0, v);
        }
        self
    }

    pub fn bool(self, field: u32, v: bool) -> Msg {
        self.uint(field, u64::from(v))
    }

    pub fn bytes(mut self, field: u32, v: &[u8]) -> Msg {
        self.key(field, 2);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn string(self, field: u32, v: &str) -> Msg {
        if v.is_empty() {
            return self;
        }
        self.bytes(field, v.as_bytes())
    }

    pub fn strings(self, field: u32, vs: &[&str]) -> Msg {
        vs.iter().fold(self, |m, v| m.bytes(field, v.as_bytes()))
    }

    pub fn message(self, field: u32, m: Msg) -> Msg {
        self.bytes(field, &m.0)
    }

    /// One `map<string,string>` entry (a message with key = 1, value = 2).
    pub fn entry(self, field: u32, k: &str, v: &str) -> Msg {
        self.message(field, Msg::new().string(1, k).string(2, v))
    }
}

/// A decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Every field of a message in order; `None` if it is not valid protobuf (or uses the
/// fixed-width wire types, which no message read here has).
pub fn fields(b: &[u8]) -> Option<Vec<(u32, Value<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        let field = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => out.push((field, Value::Varint(read_varint(b, &mut pos)?))),
            2 => {
                let len = usize::try_from(read_varint(b, &mut pos)?).ok()?;
                let v = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                out.push((field, Value::Bytes(v)));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The last bytes value of `field` (proto3: the last one wins), or empty.
pub fn bytes_of(b: &[u8], field: u32) -> &[u8] {
    fields(b)
        .unwrap_or_default()
        .into_iter()
        .filter(|(f, _)| *f == field)
        .filter_map(|(_, v)| match v {
            Value::Bytes(b) => Some(b),
            Value::Varint(_) => None,
        })
        .next_back()
        .unwrap_or_default()
}

pub fn string_of(b: &[u8], field: u32) -> String {
    String::from_utf8_lossy(bytes_of(b, field)).into_owned()
}

pub fn uint_of(b: &[u8], field: u32) -> u64 {
    fields(b)
        .unwrap_or_default()
        .into_iter()
        .filter(|(f, _)| *f == field)
        .filter_map(|(_, v)| match v {
            Value::Varint(v) => Some(v),
            Value::Bytes(_) => None,
        })
        .next_back()
        .unwrap_or_default()
}

/// Every value of a repeated message (or string) field.
pub fn repeated_of(b: &[u8], field: u32) -> Vec<&[u8]> {
    fields(b)
        .unwrap_or_default()
        .into_iter()
        .filter(|(f, _)| *f == field)
        .filter_map(|(_, v)| match v {
            Value::Bytes(b) => Some(b),
            Value::Varint(_) => None,
        })
        .collect()
}

/// A `map<string,string>` field as pairs.
pub fn map_of(b: &[u8], field: u32) -> Vec<(String, String)> {
    repeated_of(b, field)
        .into_iter()
        .map(|e| (string_of(e, 1), string_of(e, 2)))
        .collect()
}

#[test]
fn round_trips_and_matches_protobuf_encoding() {
    // PodSandboxMetadata{name: "a", uid: "u", namespace: "default", attempt: 300}, as
    // protoc encodes it: 0a 01 61 12 01 75 1a 07 "default" 20 ac 02.
    let m = Msg::new()
        .string(1, "a")
        .string(2, "u")
        .string(3, "default")
        .uint(4, 300);
    let mut want = vec![0x0a, 1, b'a', 0x12, 1, b'u', 0x1a, 7];
    want.extend_from_slice(b"default");
    want.extend_from_slice(&[0x20, 0xac, 0x02]);
    assert_eq!(m.0, want);
    assert_eq!(string_of(&m.0, 3), "default");
    assert_eq!(uint_of(&m.0, 4), 300);
    assert_eq!(string_of(&m.0, 9), "");
    let outer = Msg::new()
        .message(1, m.clone())
        .entry(6, "k", "v")
        .strings(3, &["x", "y"]);
    assert_eq!(bytes_of(&outer.0, 1), m.0.as_slice());
    assert_eq!(map_of(&outer.0, 6), vec![("k".into(), "v".into())]);
    assert_eq!(repeated_of(&outer.0, 3), vec![b"x".as_slice(), b"y"]);
    assert_eq!(fields(&[0x0a, 5, 1]), None, "truncated");
    assert_eq!(
        Msg::new().uint(4, 0).bool(2, false).string(1, "").0,
        Vec::<u8>::new()
    );
}
