//! The protobuf wire format (varints, tags, length-delimited fields) and the shape of the
//! generated schema table: what [`super::json`] walks.

use super::ProtobufError;

/// A Go pointer field: present on the wire means set, even to its zero value.
pub const POINTER: u8 = 1;
/// A Go `omitempty` field: a zero scalar is left out of the JSON.
pub const OMITEMPTY: u8 = 2;
/// A Go embedded struct with `json:",inline"`: its fields join the parent's JSON object.
pub const INLINE: u8 = 4;

/// One message of the schema.
#[derive(Debug)]
pub struct Message {
    /// Full protobuf name, e.g. `k8s.io.api.core.v1.ConfigMap`.
    pub name: &'static str,
    /// Sorted by number.
    pub fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub number: u32,
    /// The JSON name (empty for an inline field).
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    pub flags: u8,
}

/// A field's type; map keys are always strings in the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Message(&'static str),
    MapString,
    MapBytes,
    MapMessage(&'static str),
}

impl Field {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The message called `name`, if the schema has it.
pub fn message(name: &str) -> Option<&'static Message> {
    let all = super::schema::MESSAGES;
    all.binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &all[i])
}

// === reading ===

/// A field value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads `(field number, value)` pairs from a message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtobufError::BadVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.buf.len() < n {
            return Err(ProtobufError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Raw<'a>)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| ProtobufError::BadTag(key))?;
        if number == 0 {
            return Err(ProtobufError::BadTag(key));
        }
        let raw = match key & 7 {
            0 => Raw::Varint(self.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(
                self.take(8)?
                    .try_into()
                    .map_err(|_| ProtobufError::Truncated)?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Truncated)?;
                Raw::Bytes(self.take(len)?)
            }
            5 => Raw::Fixed32(u32::from_le_bytes(
                self.take(4)?
                    .try_into()
                    .map_err(|_| ProtobufError::Truncated)?,
            )),
            _ => return Err(ProtobufError::BadTag(key)),
        };
        Ok(Some((number, raw)))
    }

    /// Every varint of a packed repeated field.
    pub fn packed_varints(buf: &'a [u8]) -> Result<Vec<u64>, ProtobufError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.buf.is_empty() {
            out.push(r.varint()?);
        }
        Ok(out)
    }
}

// === writing ===

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_sorted_and_every_message_reference_resolves() {
        let all = super::super::schema::MESSAGES;
        for w in all.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for m in all {
            for w in m.fields.windows(2) {
                assert!(w[0].number < w[1].number, "{}: fields out of order", m.name);
            }
            for f in m.fields {
                if let Ty::Message(t) | Ty::MapMessage(t) = f.ty {
                    assert!(
                        message(t).is_some(),
                        "{}.{}: no message {t}",
                        m.name,
                        f.json
                    );
                }
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint_field(&mut out, 7, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.next_field().unwrap(), Some((7, Raw::Varint(v))));
            assert_eq!(r.next_field().unwrap(), None);
        }
    }

    #[test]
    fn truncated_and_bad_input_are_errors_not_panics() {
        let cases: &[(&str, &[u8], ProtobufError)] = &[
            (
                "length past the end",
                &[0x0a, 0x05, b'a'],
                ProtobufError::Truncated,
            ),
            ("varint cut short", &[0x08, 0x80], ProtobufError::Truncated),
            ("field number zero", &[0x00, 0x01], ProtobufError::BadTag(0)),
            ("wire type 3 (groups)", &[0x0b], ProtobufError::BadTag(0x0b)),
            (
                "eleven-byte varint",
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                ProtobufError::BadVarint,
            ),
        ];
        for (name, input, want) in cases {
            let mut r = Reader::new(input);
            let got = loop {
                match r.next_field() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{name}: read to the end without an error"),
                    Err(e) => break e,
                }
            };
            assert_eq!(&got, want, "{name}");
        }
    }
}
