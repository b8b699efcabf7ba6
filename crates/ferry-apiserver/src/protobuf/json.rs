//! Protobuf message <-> the JSON Go's `encoding/json` writes for the same Go value: field
//! names, `omitempty`, pointers and `inline` from the schema's flags, and the handful of
//! apimachinery types whose JSON is not their message (Time, IntOrString, Quantity, ...).

use base64::Engine;
use serde_json::{Map, Value};

use super::ProtobufError;
use super::wire::{
    self, INLINE, Message, OMITEMPTY, POINTER, Raw, Reader, Ty, put_bytes_field, put_varint_field,
};

/// Deeper nesting than any Kubernetes type has: a body nesting further is hostile.
const MAX_DEPTH: usize = 64;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const VERBS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

// === decoding ===

/// The JSON object of one message.
pub fn decode(
    msg: &Message,
    buf: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    // One slot per schema field: the last value of a singular field, every element of a
    // repeated one, every entry of a map.
    let mut slots: Vec<Option<Value>> = vec![None; msg.fields.len()];
    let mut r = Reader::new(buf);
    while let Some((number, raw)) = r.next_field()? {
        let Ok(i) = msg.fields.binary_search_by_key(&number, |f| f.number) else {
            continue; // a field newer than the schema: Go would drop it too
        };
        let f = &msg.fields[i];
        let at = |e: ProtobufError| {
            e.at(if f.json.is_empty() {
                "(inline)"
            } else {
                f.json
            })
        };
        match f.ty {
            Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
                let Raw::Bytes(entry) = raw else {
                    return Err(at(ProtobufError::WireType));
                };
                let (k, v) = map_entry(f.ty, entry, depth).map_err(at)?;
                let slot = slots[i].get_or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert(k, v);
                }
            }
            _ if f.repeated => {
                let values = match (f.ty, raw) {
                    (Ty::Bool | Ty::Int32 | Ty::Int64, Raw::Bytes(packed)) => {
                        Reader::packed_varints(packed)
                            .map_err(at)?
                            .into_iter()
                            .map(|v| scalar(f.ty, Raw::Varint(v)))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(at)?
                    }
                    _ => vec![value(f.ty, raw, depth).map_err(at)?.unwrap_or(Value::Null)],
                };
                let slot = slots[i].get_or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = slot {
                    a.extend(values);
                }
            }
            _ => slots[i] = Some(value(f.ty, raw, depth).map_err(at)?.unwrap_or(Value::Null)),
        }
    }
    let mut out = Map::new();
    for (f, slot) in msg.fields.iter().zip(slots) {
        let Some(v) = slot else { continue };
        if f.has(INLINE) {
            if let Value::Object(inner) = v {
                out.extend(inner);
            }
            continue;
        }
        if v.is_null() || (!f.repeated && !f.has(POINTER) && f.has(OMITEMPTY) && is_zero_scalar(&v))
        {
            continue;
        }
        out.insert(f.json.to_string(), v);
    }
    Ok(out)
}

fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

fn scalar(ty: Ty, raw: Raw) -> Result<Value, ProtobufError> {
    Ok(match (ty, raw) {
        (Ty::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
        // A negative int32 is sign-extended to ten bytes on the wire.
        (Ty::Int32, Raw::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::Int64, Raw::Varint(v)) => Value::from(v as i64),
        (Ty::String, Raw::Bytes(b)) => Value::String(
            std::str::from_utf8(b)
                .map_err(|_| ProtobufError::Utf8)?
                .to_string(),
        ),
        (Ty::Bytes, Raw::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        _ => return Err(ProtobufError::WireType),
    })
}

/// A field's JSON value; `None` when Go's JSON has nothing for it (a zero Time).
fn value(ty: Ty, raw: Raw, depth: usize) -> Result<Option<Value>, ProtobufError> {
    match ty {
        Ty::Message(name) => {
            let Raw::Bytes(b) = raw else {
                return Err(ProtobufError::WireType);
            };
            message_value(name, b, depth + 1)
        }
        _ => scalar(ty, raw).map(Some),
    }
}

fn map_entry(ty: Ty, entry: &[u8], depth: usize) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut val = None;
    let mut r = Reader::new(entry);
    while let Some((n, raw)) = r.next_field()? {
        match n {
            1 => {
                if let Value::String(s) = scalar(Ty::String, raw)? {
                    key = s;
                }
            }
            2 => {
                val = match ty {
                    Ty::MapString => Some(scalar(Ty::String, raw)?),
                    Ty::MapBytes => Some(scalar(Ty::Bytes, raw)?),
                    Ty::MapMessage(name) => value(Ty::Message(name), raw, depth)?,
                    _ => return Err(ProtobufError::WireType),
                }
            }
            _ => {}
        }
    }
    let val = val.unwrap_or_else(|| match ty {
        Ty::MapMessage(_) => Value::Object(Map::new()),
        _ => Value::String(String::new()),
    });
    Ok((key, val))
}

/// The scalar fields of a small message, by number (for the special types).
fn fields_of(buf: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, ProtobufError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field()? {
        out.push(f);
    }
    Ok(out)
}

fn varint_of(fields: &[(u32, Raw)], n: u32) -> u64 {
    fields
        .iter()
        .rev()
        .find_map(|(k, r)| match r {
            Raw::Varint(v) if *k == n => Some(*v),
            _ => None,
        })
        .unwrap_or(0)
}

fn bytes_of<'a>(fields: &[(u32, Raw<'a>)], n: u32) -> &'a [u8] {
    fields
        .iter()
        .rev()
        .find_map(|(k, r)| match r {
            Raw::Bytes(b) if *k == n => Some(*b),
            _ => None,
        })
        .unwrap_or_default()
}

fn str_of<'a>(fields: &[(u32, Raw<'a>)], n: u32) -> Result<&'a str, ProtobufError> {
    std::str::from_utf8(bytes_of(fields, n)).map_err(|_| ProtobufError::Utf8)
}

fn message_value(name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, ProtobufError> {
    let special = |f: Special| fields_of(buf).and_then(|fs| f(&fs));
    match name {
        TIME => special(|f| time_json(varint_of(f, 1) as i64, varint_of(f, 2) as i32, false)),
        MICRO_TIME => special(|f| time_json(varint_of(f, 1) as i64, varint_of(f, 2) as i32, true)),
        DURATION => special(|f| Ok(Some(Value::String(go_duration(varint_of(f, 1) as i64))))),
        QUANTITY => special(|f| Ok(Some(Value::String(str_of(f, 1)?.to_string())))),
        INT_OR_STRING => special(|f| {
            Ok(Some(if varint_of(f, 1) == 1 {
                Value::String(str_of(f, 3)?.to_string())
            } else {
                Value::from(varint_of(f, 2) as i64 as i32)
            }))
        }),
        RAW_EXTENSION | FIELDS_V1 => special(|f| {
            let raw = bytes_of(f, 1);
            if raw.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(raw)
                .map(Some)
                .map_err(|e| ProtobufError::EmbeddedJson(e.to_string()))
        }),
        VERBS => special(|f| {
            f.iter()
                .filter(|(n, _)| *n == 1)
                .map(|(_, r)| scalar(Ty::String, *r))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(Value::Array(v)))
        }),
        _ => {
            let msg = wire::message(name).ok_or_else(|| ProtobufError::NoMessage(name.into()))?;
            decode(msg, buf, depth).map(|m| Some(Value::Object(m)))
        }
    }
}

/// How a special type's JSON is made from its fields.
type Special = fn(&[(u32, Raw)]) -> Result<Option<Value>, ProtobufError>;

/// metav1.Time is RFC 3339 to the second, MicroTime to the microsecond, both in UTC; the
/// zero time is `null` in Go, which is the same as leaving it out.
fn time_json(seconds: i64, nanos: i32, micro: bool) -> Result<Option<Value>, ProtobufError> {
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    let ts = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 })
        .map_err(|e| ProtobufError::Time(e.to_string()))?;
    let fmt = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Some(Value::String(ts.strftime(fmt).to_string())))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5s`, `300ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| {
        let p = 10u64.pow(digits);
        let f = format!("{:0width$}", v % p, width = digits as usize);
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            format!("{}", v / p)
        } else {
            format!("{}.{f}", v / p)
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let secs = u / 1_000_000_000;
    let s = frac(secs % 60 * 1_000_000_000 + u % 1_000_000_000, 9);
    let mins = secs / 60;
    if mins == 0 {
        return format!("{sign}{s}s");
    }
    let hours = mins / 60;
    if hours == 0 {
        return format!("{sign}{}m{s}s", mins % 60);
    }
    format!("{sign}{hours}h{}m{s}s", mins % 60)
}

/// Parses a Go duration (`1h2m3.5s`, `-300ms`, `0`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut part = whole * scale;
        let mut div = 1i128;
        for c in fraction.chars() {
            div *= 10;
            part += i128::from(c.to_digit(10)?) * scale / div;
        }
        total += part;
        rest = tail;
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok()
}

// === encoding ===

/// The message's bytes for a JSON object.
pub fn encode(
    msg: &Message,
    obj: &Map<String, Value>,
    depth: usize,
) -> Result<Vec<u8>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let mut out = Vec::new();
    for f in msg.fields {
        if f.has(INLINE) {
            let Ty::Message(name) = f.ty else { continue };
            let inner = wire::message(name).ok_or_else(|| ProtobufError::NoMessage(name.into()))?;
            put_bytes_field(&mut out, f.number, &encode(inner, obj, depth + 1)?);
            continue;
        }
        let Some(v) = obj.get(f.json).filter(|v| !v.is_null()) else {
            continue;
        };
        let at = |e: ProtobufError| e.at(f.json);
        match f.ty {
            Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
                let Value::Object(m) = v else {
                    return Err(at(ProtobufError::Json("an object")));
                };
                for (k, val) in m {
                    let mut entry = Vec::new();
                    put_bytes_field(&mut entry, 1, k.as_bytes());
                    let vt = match f.ty {
                        Ty::MapString => Ty::String,
                        Ty::MapBytes => Ty::Bytes,
                        Ty::MapMessage(n) => Ty::Message(n),
                        _ => continue,
                    };
                    put_value(&mut entry, 2, vt, val, depth).map_err(|e| at(e.at(k)))?;
                    put_bytes_field(&mut out, f.number, &entry);
                }
            }
            _ if f.repeated => {
                let Value::Array(items) = v else {
                    return Err(at(ProtobufError::Json("an array")));
                };
                for item in items {
                    put_value(&mut out, f.number, f.ty, item, depth).map_err(at)?;
                }
            }
            _ => put_value(&mut out, f.number, f.ty, v, depth).map_err(at)?,
        }
    }
    Ok(out)
}

fn put_value(
    out: &mut Vec<u8>,
    number: u32,
    ty: Ty,
    v: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    match ty {
        Ty::String => put_bytes_field(out, number, as_str(v)?.as_bytes()),
        Ty::Bytes => {
            let b = base64::engine::general_purpose::STANDARD
                .decode(as_str(v)?)
                .map_err(|_| ProtobufError::Json("base64"))?;
            put_bytes_field(out, number, &b);
        }
        Ty::Bool => put_varint_field(
            out,
            number,
            u64::from(v.as_bool().ok_or(ProtobufError::Json("a boolean"))?),
        ),
        Ty::Int32 | Ty::Int64 => put_varint_field(
            out,
            number,
            v.as_i64().ok_or(ProtobufError::Json("an integer"))? as u64,
        ),
        Ty::Message(name) => {
            if let Some(b) = message_bytes(name, v, depth + 1)? {
                put_bytes_field(out, number, &b);
            }
        }
        Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
            return Err(ProtobufError::Json("no nested map"));
        }
    }
    Ok(())
}

fn as_str(v: &Value) -> Result<&str, ProtobufError> {
    v.as_str().ok_or(ProtobufError::Json("a string"))
}

fn message_bytes(name: &str, v: &Value, depth: usize) -> Result<Option<Vec<u8>>, ProtobufError> {
    let mut out = Vec::new();
    match name {
        TIME | MICRO_TIME => {
            let ts: jiff::Timestamp = as_str(v)?
                .parse()
                .map_err(|e: jiff::Error| ProtobufError::Time(e.to_string()))?;
            put_varint_field(&mut out, 1, ts.as_second() as u64);
            if name == MICRO_TIME && ts.subsec_nanosecond() != 0 {
                put_varint_field(&mut out, 2, ts.subsec_nanosecond() as i64 as u64);
            }
        }
        DURATION => {
            let ns = parse_go_duration(as_str(v)?).ok_or(ProtobufError::Json("a Go duration"))?;
            put_varint_field(&mut out, 1, ns as u64);
        }
        QUANTITY => match v {
            Value::String(s) => put_bytes_field(&mut out, 1, s.as_bytes()),
            Value::Number(n) => put_bytes_field(&mut out, 1, n.to_string().as_bytes()),
            _ => return Err(ProtobufError::Json("a quantity")),
        },
        INT_OR_STRING => match v {
            Value::String(s) => {
                put_varint_field(&mut out, 1, 1);
                put_bytes_field(&mut out, 3, s.as_bytes());
            }
            _ => {
                let i = v
                    .as_i64()
                    .ok_or(ProtobufError::Json("an integer or a string"))?;
                put_varint_field(&mut out, 1, 0);
                put_varint_field(&mut out, 2, i as u64);
            }
        },
        RAW_EXTENSION | FIELDS_V1 => {
            let raw =
                serde_json::to_vec(v).map_err(|e| ProtobufError::EmbeddedJson(e.to_string()))?;
            put_bytes_field(&mut out, 1, &raw);
        }
        VERBS => {
            let Value::Array(items) = v else {
                return Err(ProtobufError::Json("an array"));
            };
            for i in items {
                put_bytes_field(&mut out, 1, as_str(i)?.as_bytes());
            }
        }
        _ => {
            let msg = wire::message(name).ok_or_else(|| ProtobufError::NoMessage(name.into()))?;
            let Value::Object(m) = v else {
                return Err(ProtobufError::Json("an object"));
            };
            out = encode(msg, m, depth)?;
        }
    }
    Ok(Some(out))
}

/// The message for `kind` of `apiVersion`: the package of a group whose .proto the schema
/// has, else the meta kinds every group version carries (DeleteOptions, Status).
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "core",
        "apps" => "apps",
        "batch" => "batch",
        "rbac.authorization.k8s.io" => "rbac",
        "coordination.k8s.io" => "coordination",
        "discovery.k8s.io" => "discovery",
        "authentication.k8s.io" => "authentication",
        "authorization.k8s.io" => "authorization",
        "meta.k8s.io" => "meta",
        _ => return None,
    };
    if kind.is_empty() || version != "v1" {
        return None;
    }
    wire::message(&format!("k8s.io.api.{package}.{version}.{kind}"))
        .or_else(|| wire::message(&format!("{META}{kind}")))
}
