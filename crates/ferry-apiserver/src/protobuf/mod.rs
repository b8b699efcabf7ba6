//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) for the built-in kinds: request
//! bodies decoded to the JSON the server stores, and single objects encoded for a client that
//! accepts nothing else.
//!
//! What clients send: client-go's typed clientsets use protobuf for built-in kinds since
//! Kubernetes 1.31 (`kubectl create configmap|deployment|...` from 1.32 on), with
//! `Accept: application/vnd.kubernetes.protobuf,application/json`. A body is the magic
//! `k8s\x00` and a `runtime.Unknown` message: `typeMeta {apiVersion, kind}` and `raw`, the
//! object's own message (which has no TypeMeta). kubectl 1.27-1.31 send JSON. Because JSON is
//! acceptable to such clients (client-go decodes whatever Content-Type comes back), the server
//! answers JSON unless protobuf is all a client accepts; then single objects (get, create,
//! update, delete) come back in protobuf, while lists, watches and error Statuses stay JSON,
//! which client-go decodes all the same.
//!
//! Why a generated table and not a crate: decoding is the easy half; the JSON must be what
//! Go's `encoding/json` writes for the same Go value, or a protobuf create stores something
//! else than a JSON create. That needs what no `.proto` says: the JSON name, `omitempty`,
//! whether the Go field is a pointer (a pointer `replicas: 0` is kept, a plain zero
//! `minReadySeconds` is dropped) and `json:",inline"` (Volume's `volumeSource`, Probe's
//! `handler`, the selectors' `localObjectReference` are nested messages on the wire and
//! flat in JSON). k8s-pb has prost structs without any JSON mapping, and prost-reflect's
//! JSON is the protobuf JSON mapping (int64 as strings, no inline). So `generate.py` reads
//! the `.proto` files and the `types.go` struct tags of one k8s.io/api release into
//! `schema.rs`, and `wire.rs`/`json.rs` walk it (no new dependency). CustomResourceDefinitions
//! (apiextensions) and custom resources are not in the table: their protobuf bodies get a
//! 415 naming the kind, as kube-apiserver gives for custom resources.

mod json;
mod schema;
mod wire;

use serde_json::{Map, Value};

/// The media type of Kubernetes protobuf.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf object.
pub const MAGIC: &[u8; 4] = b"k8s\x00";

/// Why a protobuf body could not be read, or an object not written as protobuf.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf prefix k8s\\x00")]
    NoMagic,
    #[error("the protobuf envelope (runtime.Unknown) names no apiVersion and kind")]
    NoKind,
    #[error("protobuf content encoding {0:?} is not supported")]
    ContentEncoding(String),
    #[error("protobuf is not supported for {kind} ({api_version}); send it as JSON")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("the message is cut short")]
    Truncated,
    #[error("a varint is longer than ten bytes")]
    BadVarint,
    #[error("invalid field key {0}")]
    BadTag(u64),
    #[error("the wire type does not match the field's type")]
    WireType,
    #[error("a string is not valid UTF-8")]
    Utf8,
    #[error("the embedded JSON is invalid: {0}")]
    EmbeddedJson(String),
    #[error("invalid time: {0}")]
    Time(String),
    #[error("expected {0}")]
    Json(&'static str),
    #[error("the schema has no message {0}")]
    NoMessage(String),
    #[error("messages nest too deeply")]
    TooDeep,
    #[error("{path}: {source}")]
    At {
        path: String,
        source: Box<ProtobufError>,
    },
}

impl ProtobufError {
    /// The same error, inside field `segment`.
    fn at(self, segment: &str) -> Self {
        match self {
            ProtobufError::At { path, source } => ProtobufError::At {
                path: format!("{segment}.{path}"),
                source,
            },
            e => ProtobufError::At {
                path: segment.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// Whether a Content-Type is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    media_type(content_type) == CONTENT_TYPE
}

fn media_type(s: &str) -> String {
    s.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether to answer in protobuf: only when the Accept header lists protobuf and nothing
/// JSON can satisfy (no JSON, no wildcard). kube-apiserver would also pick protobuf for
/// `protobuf,json`, but every client that lists both decodes JSON too.
pub fn wants_protobuf(accept: &str) -> bool {
    let types: Vec<String> = accept.split(',').map(media_type).collect();
    types.iter().any(|t| t == CONTENT_TYPE)
        && !types.iter().any(|t| {
            matches!(
                t.as_str(),
                "application/json" | "*/*" | "application/*" | ""
            )
        })
}

/// The `apiVersion` and `kind` an envelope names, for error messages.
pub fn envelope_kind(body: &[u8]) -> Option<(String, String)> {
    let (type_meta, _) = envelope(body).ok()?;
    Some(type_meta)
}

type Envelope<'a> = ((String, String), &'a [u8]);

fn envelope(body: &[u8]) -> Result<Envelope<'_>, ProtobufError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut r = wire::Reader::new(unknown);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, v)) = r.next_field()? {
        match (n, v) {
            (1, wire::Raw::Bytes(tm)) => {
                let mut t = wire::Reader::new(tm);
                while let Some((n, v)) = t.next_field()? {
                    if let wire::Raw::Bytes(s) = v {
                        let s = std::str::from_utf8(s).map_err(|_| ProtobufError::Utf8)?;
                        match n {
                            1 => api_version = s.to_string(),
                            2 => kind = s.to_string(),
                            _ => {}
                        }
                    }
                }
            }
            (2, wire::Raw::Bytes(b)) => raw = b,
            (3, wire::Raw::Bytes(enc)) if !enc.is_empty() => {
                return Err(ProtobufError::ContentEncoding(
                    String::from_utf8_lossy(enc).into_owned(),
                ));
            }
            _ => {}
        }
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(ProtobufError::NoKind);
    }
    Ok(((api_version, kind), raw))
}

/// A protobuf object (`k8s\x00` + runtime.Unknown) as the JSON Go would write for it, with
/// `apiVersion` and `kind` from the envelope.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let ((api_version, kind), raw) = envelope(body)?;
    let msg =
        json::message_for(&api_version, &kind).ok_or_else(|| ProtobufError::UnsupportedKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut obj = json::decode(msg, raw, 0)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

/// A JSON object (with `apiVersion` and `kind`) as a protobuf object; fields the message has
/// no place for are left out, as a Go server's typed object would leave them.
pub fn encode_object(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let msg =
        json::message_for(api_version, kind).ok_or_else(|| ProtobufError::UnsupportedKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    let empty = Map::new();
    let raw = json::encode(msg, obj.as_object().unwrap_or(&empty), 0)?;
    let mut type_meta = Vec::new();
    wire::put_bytes_field(&mut type_meta, 1, api_version.as_bytes());
    wire::put_bytes_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    wire::put_bytes_field(&mut out, 1, &type_meta);
    wire::put_bytes_field(&mut out, 2, &raw);
    // Go writes the two empty strings too (non-pointer fields); readers accept either.
    wire::put_bytes_field(&mut out, 3, b"");
    wire::put_bytes_field(&mut out, 4, b"");
    Ok(out)
}

#[cfg(test)]
mod tests;
