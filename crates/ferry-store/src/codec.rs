//! Byte layout of the two record kinds kept in redb.
//!
//! Hand-written fixed layouts (little-endian integers, u64 length prefixes) keep the store free
//! of a serialization dependency and make every decode bounds-checked.
//!
//! - object (`objects` table, key → record): `create_revision | mod_revision | value bytes`.
//! - log row (`log` table, revision → record): one or more events, each
//!   `tag | key | ...` where tag 0 = put, 1 = put with a previous value, 2 = delete.
//!   A put stores `create_revision | value [| prev]`, a delete stores only `prev`; the event's
//!   `mod_revision` is always the row's revision, and a delete's value is its previous value.

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, Result, StoreError};

const TAG_PUT: u8 = 0;
const TAG_PUT_WITH_PREV: u8 = 1;
const TAG_DELETE: u8 = 2;

// === objects ===

pub(crate) fn encode_object(create_revision: u64, mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_object(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let corrupt = |reason| StoreError::Corrupt {
        what: "object",
        at: key.to_owned(),
        reason,
    };
    let mut r = Reader { buf: bytes };
    let create_revision = r.u64().ok_or_else(|| corrupt("short header"))?;
    let mod_revision = r.u64().ok_or_else(|| corrupt("short header"))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(r.buf),
        create_revision,
        mod_revision,
    })
}

// === log ===

/// Encodes all events of one revision. Every event must carry that revision.
pub(crate) fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        match (ev.kind, &ev.prev_kv) {
            (EventKind::Put, None) => out.push(TAG_PUT),
            (EventKind::Put, Some(_)) => out.push(TAG_PUT_WITH_PREV),
            (EventKind::Delete, _) => out.push(TAG_DELETE),
        }
        put_bytes(&mut out, ev.kv.key.as_bytes());
        if ev.kind == EventKind::Put {
            out.extend_from_slice(&ev.kv.create_revision.to_le_bytes());
            put_bytes(&mut out, &ev.kv.value);
        }
        // A delete always has its previous value; the writer guarantees it.
        if let Some(prev) = &ev.prev_kv {
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            put_bytes(&mut out, &prev.value);
        }
    }
    out
}

pub(crate) fn decode_events(revision: u64, bytes: &[u8]) -> Result<Vec<Event>> {
    let corrupt = |reason| StoreError::Corrupt {
        what: "log",
        at: format!("revision {revision}"),
        reason,
    };
    let mut r = Reader { buf: bytes };
    let mut events = Vec::new();
    while !r.buf.is_empty() {
        let tag = r.u8().ok_or_else(|| corrupt("missing tag"))?;
        let key = r.bytes().ok_or_else(|| corrupt("short key"))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| corrupt("key is not UTF-8"))?
            .to_owned();
        let prev = |r: &mut Reader<'_>| -> Option<KeyValue> {
            Some(KeyValue {
                key: key.clone(),
                create_revision: r.u64()?,
                mod_revision: r.u64()?,
                value: Bytes::copy_from_slice(r.bytes()?),
            })
        };
        let event = match tag {
            TAG_PUT | TAG_PUT_WITH_PREV => {
                let create_revision = r.u64().ok_or_else(|| corrupt("short put"))?;
                let value = Bytes::copy_from_slice(r.bytes().ok_or_else(|| corrupt("short put"))?);
                let prev_kv = if tag == TAG_PUT_WITH_PREV {
                    Some(prev(&mut r).ok_or_else(|| corrupt("short previous value"))?)
                } else {
                    None
                };
                Event {
                    revision,
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: revision,
                    },
                    prev_kv,
                }
            }
            TAG_DELETE => {
                let prev_kv = prev(&mut r).ok_or_else(|| corrupt("short delete"))?;
                Event {
                    revision,
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..prev_kv.clone()
                    },
                    prev_kv: Some(prev_kv),
                }
            }
            _ => return Err(corrupt("unknown tag")),
        };
        events.push(event);
    }
    if events.is_empty() {
        return Err(corrupt("no events"));
    }
    Ok(events)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor that returns `None` instead of reading past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: u64, modr: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modr,
        }
    }

    #[test]
    fn object_round_trips() {
        let bytes = encode_object(3, 7, b"hello");
        assert_eq!(
            decode_object("/a", &bytes).unwrap(),
            kv("/a", "hello", 3, 7)
        );
    }

    #[test]
    fn short_object_is_corrupt_not_a_panic() {
        let err = decode_object("/a", &[1, 2, 3]).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { what: "object", .. }),
            "{err}"
        );
    }

    #[test]
    fn log_row_with_every_event_kind_round_trips() {
        let events = vec![
            Event {
                revision: 9,
                kind: EventKind::Put,
                kv: kv("/new", "v", 9, 9),
                prev_kv: None,
            },
            Event {
                revision: 9,
                kind: EventKind::Put,
                kv: kv("/upd", "v2", 2, 9),
                prev_kv: Some(kv("/upd", "v1", 2, 5)),
            },
            Event {
                revision: 9,
                kind: EventKind::Delete,
                kv: kv("/del", "old", 1, 9),
                prev_kv: Some(kv("/del", "old", 1, 4)),
            },
        ];
        let bytes = encode_events(&events);
        assert_eq!(decode_events(9, &bytes).unwrap(), events);
    }

    #[test]
    fn truncated_log_row_is_corrupt() {
        let events = vec![Event {
            revision: 1,
            kind: EventKind::Put,
            kv: kv("/k", "value", 1, 1),
            prev_kv: None,
        }];
        let bytes = encode_events(&events);
        for cut in 0..bytes.len() {
            assert!(decode_events(1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
