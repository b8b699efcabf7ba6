use serde_json::{Value, json};

use super::json::{go_duration, parse_go_duration};
use super::wire::{put_bytes_field, put_varint_field};
use super::*;

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("fixtures/", $name, ".pb")),
            include_str!(concat!("fixtures/", $name, ".json")),
        )
    };
}

/// The bodies kubectl 1.33 sent for `kubectl create ...` (fixtures/capture.py), with the JSON
/// the same kubectl writes for the same object under `--dry-run=client -o json`.
const FIXTURES: &[(&str, &[u8], &str)] = &[
    fixture!("configmap"),
    fixture!("namespace"),
    fixture!("secret"),
    fixture!("deployment"),
    fixture!("deployment_zero_replicas"),
    fixture!("service_clusterip"),
    fixture!("service_nodeport"),
    fixture!("job"),
    fixture!("cronjob"),
    fixture!("serviceaccount"),
    fixture!("role"),
    fixture!("rolebinding"),
    fixture!("clusterrole"),
    fixture!("clusterrolebinding"),
];

/// Go writes a zero Time as `null`; absent means the same.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        v => v,
    }
}

#[test]
fn kubectl_bodies_decode_to_the_json_kubectl_writes_for_the_same_object() {
    for (name, pb, want) in FIXTURES {
        let want = without_nulls(serde_json::from_str(want).expect("fixture JSON"));
        let got = decode_object(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn objects_survive_encode_then_decode() {
    for (name, pb, _) in FIXTURES {
        let decoded = decode_object(pb).expect("decodes");
        let encoded = encode_object(&decoded).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(encoded.starts_with(MAGIC), "{name}");
        assert_eq!(
            decode_object(&encoded).expect("re-decodes"),
            decoded,
            "{name}"
        );
    }
}

fn envelope_of(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    put_bytes_field(&mut tm, 1, api_version.as_bytes());
    put_bytes_field(&mut tm, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes_field(&mut out, 1, &tm);
    put_bytes_field(&mut out, 2, raw);
    out
}

fn msg(fields: &[(u32, Field)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, f) in fields {
        match f {
            Field::V(v) => put_varint_field(&mut out, *n, *v),
            Field::S(s) => put_bytes_field(&mut out, *n, s.as_bytes()),
            Field::M(m) => put_bytes_field(&mut out, *n, m),
        }
    }
    out
}

enum Field {
    V(u64),
    S(&'static str),
    M(Vec<u8>),
}
use Field::{M, S, V};

/// A nested message field value.
fn obj(fields: &[(u32, Field)]) -> Field {
    M(msg(fields))
}

fn int_or_string(v: Result<u64, &'static str>) -> Field {
    match v {
        Ok(i) => obj(&[(1, V(0)), (2, V(i))]),
        Err(s) => obj(&[(1, V(1)), (3, S(s))]),
    }
}

#[test]
fn go_json_rules_apply_to_decoded_fields() {
    let cases: Vec<(&str, Vec<u8>, Value)> = vec![
        (
            "a pointer zero (replicas) is kept, plain omitempty zeros (minReadySeconds, paused) are dropped",
            envelope_of(
                "apps/v1",
                "Deployment",
                &msg(&[(2, obj(&[(1, V(0)), (5, V(0)), (7, V(0))]))]),
            ),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 0}}),
        ),
        (
            "inline structs join their parent (Volume.volumeSource, ConfigMapKeySelector.localObjectReference)",
            envelope_of(
                "v1",
                "Pod",
                &msg(&[
                    // name, an empty generateName, namespace, a zero creationTimestamp
                    (
                        1,
                        obj(&[(1, S("p")), (2, S("")), (3, S("default")), (8, obj(&[]))]),
                    ),
                    (
                        2,
                        obj(&[
                            // volumes: name + volumeSource{emptyDir{medium: ""}}
                            (
                                1,
                                obj(&[(1, S("data")), (2, obj(&[(2, obj(&[(1, S(""))]))]))]),
                            ),
                            // containers: name + env{name, valueFrom{configMapKeyRef{localObjectReference{name}, key}}}
                            (
                                2,
                                obj(&[
                                    (1, S("c")),
                                    (
                                        7,
                                        obj(&[
                                            (1, S("A")),
                                            (
                                                3,
                                                obj(&[(
                                                    3,
                                                    obj(&[(1, obj(&[(1, S("cm"))])), (2, S("k"))]),
                                                )]),
                                            ),
                                        ]),
                                    ),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            ),
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]
            }}),
        ),
        (
            "Time, IntOrString and Quantity have Go's JSON, not their messages'",
            envelope_of(
                "v1",
                "Pod",
                &msg(&[
                    (
                        1,
                        obj(&[(1, S("p")), (8, obj(&[(1, V(1_700_000_000)), (2, V(5))]))]),
                    ),
                    (
                        2,
                        obj(&[(
                            2,
                            obj(&[
                                (1, S("c")),
                                // resources.limits{cpu: 250m}
                                (
                                    8,
                                    obj(&[(1, obj(&[(1, S("cpu")), (2, obj(&[(1, S("250m"))]))]))]),
                                ),
                                // livenessProbe.handler.httpGet.port "http"
                                (
                                    10,
                                    obj(&[(
                                        1,
                                        obj(&[(2, obj(&[(2, int_or_string(Err("http")))]))]),
                                    )]),
                                ),
                                // readinessProbe.handler.tcpSocket.port 8080
                                (
                                    11,
                                    obj(&[(1, obj(&[(3, obj(&[(1, int_or_string(Ok(8080)))]))]))]),
                                ),
                            ]),
                        )]),
                    ),
                ]),
            ),
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {"containers": [{
                "name": "c",
                "resources": {"limits": {"cpu": "250m"}},
                "livenessProbe": {"httpGet": {"port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 8080}},
            }]}}),
        ),
        (
            "a negative int32 (a ten-byte varint) and a large int64",
            envelope_of(
                "v1",
                "Pod",
                &msg(&[(2, obj(&[(4, V(-5i64 as u64)), (5, V(1 << 40))]))]),
            ),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"terminationGracePeriodSeconds": -5, "activeDeadlineSeconds": 1_099_511_627_776i64}}),
        ),
        (
            "managedFields' fieldsV1 is embedded JSON; unknown field numbers are skipped",
            envelope_of(
                "v1",
                "ConfigMap",
                &msg(&[
                    (
                        1,
                        obj(&[
                            (1, S("c")),
                            (
                                17,
                                obj(&[
                                    (1, S("kubectl")),
                                    (6, S("FieldsV1")),
                                    (7, obj(&[(1, S("{\"f:data\":{}}"))])),
                                ]),
                            ),
                        ]),
                    ),
                    (99, S("from a newer Kubernetes")),
                ]),
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": [{"manager": "kubectl", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}}),
        ),
        (
            "DeleteOptions of any group version are meta's (a typed client-go delete sends them)",
            envelope_of(
                "apps/v1",
                "DeleteOptions",
                &msg(&[(1, V(0)), (4, S("Foreground")), (5, S("All"))]),
            ),
            json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"]}),
        ),
    ];
    for (name, body, want) in cases {
        let got = decode_object(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        let again = decode_object(&encode_object(&got).expect("encodes")).expect("decodes");
        assert_eq!(again, want, "{name}: after encode and decode");
    }
}

#[test]
fn bodies_that_cannot_be_decoded_say_why() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no magic",
            b"{\"kind\":\"Pod\"}".to_vec(),
            "the body does not start with the Kubernetes protobuf prefix k8s\\x00",
        ),
        (
            "no kind",
            MAGIC.to_vec(),
            "the protobuf envelope (runtime.Unknown) names no apiVersion and kind",
        ),
        (
            "a custom resource",
            envelope_of("iaas.yusur.io/v1", "YusurService", b""),
            "protobuf is not supported for YusurService (iaas.yusur.io/v1); send it as JSON",
        ),
        (
            "a kind the group does not have",
            envelope_of("apps/v1", "Frobnicator", b""),
            "protobuf is not supported for Frobnicator (apps/v1); send it as JSON",
        ),
        (
            "a truncated nested message names the field",
            envelope_of(
                "apps/v1",
                "Deployment",
                &[0x12, 0x04, 0x1a, 0x02, 0x0a, 0x05],
            ),
            "spec.template: the message is cut short",
        ),
        (
            "a string field sent as a varint",
            envelope_of("v1", "ConfigMap", &msg(&[(1, obj(&[(1, V(3))]))])),
            "metadata.name: the wire type does not match the field's type",
        ),
        (
            "gzip content encoding",
            {
                let mut b = envelope_of("v1", "ConfigMap", b"");
                put_bytes_field(&mut b, 3, b"gzip");
                b
            },
            "protobuf content encoding \"gzip\" is not supported",
        ),
    ];
    for (name, body, want) in cases {
        let got = decode_object(&body).expect_err(name);
        assert_eq!(got.to_string(), want, "{name}");
    }
}

/// Hostile or damaged bodies get an error, never a panic: every prefix of every fixture, and
/// every fixture with any one byte replaced.
#[test]
fn cut_or_damaged_kubectl_bodies_never_panic() {
    let mut decoded = 0;
    for (_, pb, _) in FIXTURES {
        for len in 0..pb.len() {
            let _ = decode_object(&pb[..len]);
        }
        for i in 0..pb.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xff, pb[i] ^ 0x08] {
                let mut damaged = pb.to_vec();
                damaged[i] = b;
                decoded += usize::from(decode_object(&damaged).is_ok());
            }
        }
    }
    // Some single-byte changes still make valid messages (a changed letter in a value).
    assert!(decoded > 0);
}

#[test]
fn protobuf_answers_only_to_clients_that_accept_nothing_else() {
    let cases = [
        ("application/vnd.kubernetes.protobuf", true),
        ("application/vnd.kubernetes.protobuf;q=1", true),
        (
            "application/vnd.kubernetes.protobuf,application/json",
            false,
        ),
        ("application/vnd.kubernetes.protobuf, */*", false),
        ("application/json, */*", false),
        ("", false),
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            false,
        ),
    ];
    for (accept, want) in cases {
        assert_eq!(wants_protobuf(accept), want, "{accept:?}");
    }
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(!is_protobuf("application/json"));
}

#[test]
fn go_durations_print_and_parse_like_go() {
    let cases: &[(i64, &str)] = &[
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-3_723_000_000_000, "-1h2m3s"),
    ];
    for (ns, s) in cases {
        assert_eq!(go_duration(*ns), *s);
        assert_eq!(parse_go_duration(s), Some(*ns), "{s}");
    }
    assert_eq!(parse_go_duration("1h"), Some(3_600_000_000_000));
    assert_eq!(parse_go_duration("2x"), None);
    assert_eq!(parse_go_duration(""), None);
}
