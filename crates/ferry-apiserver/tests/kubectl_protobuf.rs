//! `kubectl create` of built-in kinds with kubectl 1.27 (JSON bodies), 1.32 and 1.33
//! (Kubernetes protobuf bodies), checked field by field with `kubectl get -o json`; a rich
//! Pod template that kubectl copies from a CronJob into a Job (`create job --from`), so every
//! Go-to-protobuf rule (pointers, inline structs, IntOrString, Quantity) meets real bytes; and
//! raw HTTPS for what kubectl never sends (protobuf-only Accept, undecodable bodies).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The versioned kubectl binaries live beside the `kubectl` on PATH (`kubectl.1.27`, ...).
fn kubectl_for(version: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())?;
    let dir = std::fs::canonicalize(&kubectl)
        .ok()?
        .parent()?
        .to_path_buf();
    let bin = dir.join(format!("kubectl.{version}"));
    bin.exists().then_some(bin)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl get -o json prints JSON")
    }
}

/// A CronJob whose Pod template uses the fields where Go JSON and protobuf differ: pointer
/// zeros (`optional: false`, `terminationGracePeriodSeconds: 0`, `backoffLimit: 0`), inline
/// structs (volume sources, probe handlers, key selectors), IntOrString ports, quantities.
const RICH_CRONJOB: &str = r#"{
  "apiVersion": "batch/v1", "kind": "CronJob",
  "metadata": {"name": "rich", "namespace": "t1"},
  "spec": {
    "schedule": "*/5 * * * *",
    "jobTemplate": {
      "metadata": {"labels": {"app": "rich"}},
      "spec": {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 600,
        "template": {
          "metadata": {"labels": {"app": "rich"}, "annotations": {"a": "b"}},
          "spec": {
            "restartPolicy": "OnFailure",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
              {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"], "resources": {}}],
            "containers": [{
              "name": "main",
              "image": "web:1",
              "imagePullPolicy": "IfNotPresent",
              "workingDir": "/srv",
              "args": ["--port", "8080"],
              "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
              "env": [
                {"name": "PLAIN", "value": "1"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a", "optional": false}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}
              ],
              "envFrom": [{"prefix": "S_", "secretRef": {"name": "s", "optional": true}}],
              "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
              "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10},
              "readinessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 1},
              "startupProbe": {"exec": {"command": ["cat", "/ready"]}, "failureThreshold": 30},
              "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/cfg", "readOnly": true}],
              "securityContext": {"runAsNonRoot": false, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [
              {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
              {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420, "items": [{"key": "a", "path": "a.txt"}]}},
              {"name": "sec", "secret": {"secretName": "s", "optional": true}}
            ]
          }
        }
      }
    }
  }
}"#;

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

async fn kubectl_create_stores_what_was_asked(version: &str) {
    let Some(bin) = kubectl_for(version) else {
        eprintln!(
            "SKIPPED: kubectl {version} is not installed (no kubectl.{version} beside kubectl)"
        );
        return;
    };
    let ts = common::start(Default::default()).await;
    let k = Kubectl {
        bin,
        kubeconfig: ts.kubeconfig.clone(),
        cache: ts.dir.path().join("kubectl-cache"),
    };
    let created = |out: String, what: &str| {
        assert!(out.contains(&format!("{what} created")), "{out}");
    };

    created(k.ok(&["create", "namespace", "t1"]), "namespace/t1");
    assert_eq!(k.get(&["namespace", "t1"])["metadata"]["name"], "t1");

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "configmap",
            "cm",
            "--from-literal=a=b",
            "--from-literal=c=d",
        ]),
        "configmap/cm",
    );
    assert_eq!(
        k.get(&["-n", "t1", "configmap", "cm"])["data"],
        json!({"a": "b", "c": "d"})
    );

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=user=admin",
        ]),
        "secret/s",
    );
    let s = k.get(&["-n", "t1", "secret", "s"]);
    assert_eq!(
        s["data"],
        json!({"user": "YWRtaW4="}),
        "base64 of admin: {s}"
    );

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "deployment",
            "web",
            "--image=web",
            "--replicas=3",
            "--port=8080",
            "--",
            "python3",
            "-m",
            "http.server",
            "8080",
        ]),
        "deployment.apps/web",
    );
    let d = k.get(&["-n", "t1", "deployment", "web"]);
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}), "{d}");
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}}),
        "{d}"
    );
    let t = &d["spec"]["template"];
    assert_eq!(t["metadata"]["labels"], json!({"app": "web"}), "{d}");
    assert_eq!(
        t["spec"]["containers"],
        json!([{"name": "web", "image": "web", "command": ["python3", "-m", "http.server", "8080"],
                "ports": [{"containerPort": 8080}], "resources": {}}]),
        "{d}"
    );

    // replicas is a Go pointer: an explicit 0 must survive (a plain int32 zero would not).
    k.ok(&[
        "-n",
        "t1",
        "create",
        "deployment",
        "idle",
        "--image=busybox",
        "--replicas=0",
    ]);
    let idle = k.get(&["-n", "t1", "deployment", "idle"]);
    assert_eq!(idle["spec"]["replicas"], 0, "{idle}");

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "service",
            "clusterip",
            "svc",
            "--tcp=80:8080",
        ]),
        "service/svc",
    );
    let svc = k.get(&["-n", "t1", "service", "svc"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
    assert_eq!(svc["spec"]["selector"], json!({"app": "svc"}), "{svc}");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (
            &port["name"],
            &port["port"],
            &port["targetPort"],
            &port["protocol"]
        ),
        (&json!("80-8080"), &json!(80), &json!(8080), &json!("TCP")),
        "{svc}"
    );

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "job",
            "j",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ]),
        "job.batch/j",
    );
    let j = k.get(&["-n", "t1", "job", "j"]);
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&c["image"], &c["command"]),
        (&json!("busybox"), &json!(["echo", "hi"])),
        "{j}"
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["restartPolicy"], "Never",
        "{j}"
    );

    k.ok(&["-n", "t1", "create", "serviceaccount", "robot"]);
    assert_eq!(
        k.get(&["-n", "t1", "serviceaccount", "robot"])["metadata"]["namespace"],
        "t1"
    );
    k.ok(&[
        "-n",
        "t1",
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods,deployments.apps",
    ]);
    assert_eq!(
        k.get(&["-n", "t1", "role", "reader"])["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
               {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}])
    );
    k.ok(&[
        "-n",
        "t1",
        "create",
        "rolebinding",
        "rb",
        "--role=reader",
        "--serviceaccount=t1:robot",
    ]);
    let rb = k.get(&["-n", "t1", "rolebinding", "rb"]);
    assert_eq!(
        (&rb["roleRef"], &rb["subjects"]),
        (
            &json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}),
            &json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "t1"}])
        ),
        "{rb}"
    );
    k.ok(&[
        "create",
        "clusterrole",
        "node-reader",
        "--verb=get",
        "--resource=nodes",
    ]);
    assert_eq!(
        k.get(&["clusterrole", "node-reader"])["rules"],
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
    );
    k.ok(&[
        "create",
        "clusterrolebinding",
        "nr",
        "--clusterrole=node-reader",
        "--group=devs",
    ]);
    assert_eq!(
        k.get(&["clusterrolebinding", "nr"])["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}])
    );

    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "cronjob",
            "cj",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "date",
        ]),
        "cronjob.batch/cj",
    );
    assert_eq!(
        k.get(&["-n", "t1", "cronjob", "cj"])["spec"]["schedule"],
        "*/5 * * * *"
    );

    k.ok(&[
        "-n",
        "t1",
        "run",
        "p",
        "--image=nginx",
        "--port=80",
        "--env=A=1",
    ]);
    let p = k.get(&["-n", "t1", "pod", "p"]);
    let c = &p["spec"]["containers"][0];
    assert_eq!(
        (&c["image"], &c["env"], &c["ports"]),
        (
            &json!("nginx"),
            &json!([{"name": "A", "value": "1"}]),
            &json!([{"containerPort": 80}])
        ),
        "{p}"
    );

    // The rich template: stored from JSON, read by kubectl, sent back (as protobuf from 1.32
    // on) inside a Job. The Job's spec must be the CronJob's jobTemplate spec, whole.
    let manifest = ts.dir.path().join("rich.json");
    std::fs::write(&manifest, RICH_CRONJOB).expect("writing the manifest");
    k.ok(&["apply", "-f", manifest.to_str().expect("utf-8 path")]);
    created(
        k.ok(&[
            "-n",
            "t1",
            "create",
            "job",
            "rich-now",
            "--from=cronjob/rich",
        ]),
        "job.batch/rich-now",
    );
    let cj = k.get(&["-n", "t1", "cronjob", "rich"]);
    let job = k.get(&["-n", "t1", "job", "rich-now"]);
    // (kubectl 1.27 sends JSON with Go's `creationTimestamp: null`, the same as absent.)
    assert_eq!(
        without_nulls(job["spec"].clone()),
        cj["spec"]["jobTemplate"]["spec"],
        "kubectl {version}"
    );
    // The owner reference is the one this kubectl builds (1.32+ add `controller: true`, a
    // pointer bool), as its own client-side dry run prints it.
    let dry: Value = serde_json::from_str(&k.ok(&[
        "-n",
        "t1",
        "create",
        "job",
        "rich-now",
        "--from=cronjob/rich",
        "--dry-run=client",
        "-o",
        "json",
    ]))
    .expect("dry run prints JSON");
    assert_eq!(
        job["metadata"]["ownerReferences"], dry["metadata"]["ownerReferences"],
        "{job}"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "rich");

    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_create_of_builtin_kinds() {
    kubectl_create_stores_what_was_asked("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_create_of_builtin_kinds_over_protobuf() {
    kubectl_create_stores_what_was_asked("1.32").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_create_of_builtin_kinds_over_protobuf() {
    kubectl_create_stores_what_was_asked("1.33").await;
}

/// `curl -k` with a bearer token and raw bytes; returns (code, content type, body).
fn curl_bytes(
    url: &str,
    token: &str,
    args: &[&str],
    body: Option<&Path>,
) -> (u16, String, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code} %{content_type}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(args);
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    let o = cmd.arg(url).output().expect("running curl");
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, ct) = w.split_once(' ').unwrap_or((&w, ""));
    (
        code.parse().expect("HTTP code"),
        ct.to_string(),
        std::fs::read(&out).unwrap_or_default(),
    )
}

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, n: u8, b: &[u8]) {
        out.push(n << 3 | 2);
        assert!(b.len() < 128, "short fields only");
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    let mut tm = Vec::new();
    field(&mut tm, 1, api_version.as_bytes());
    field(&mut tm, 2, kind.as_bytes());
    let mut out = b"k8s\x00".to_vec();
    field(&mut out, 1, &tm);
    field(&mut out, 2, raw);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_only_clients_get_protobuf_and_bad_bodies_get_a_status_naming_the_kind() {
    let ts = common::start(Default::default()).await;
    let token = ts.tokens().admin.clone();
    let pb = ["-H", "Content-Type: application/vnd.kubernetes.protobuf"];
    let dir = ts.dir.path();

    // A ConfigMap {metadata{name: pcm}, data{k: v}} sent by hand, answered in protobuf.
    let raw = [
        &[0x0a, 0x05, 0x0a, 0x03][..],
        b"pcm",
        &[0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v'],
    ]
    .concat();
    let body = dir.join("cm.pb");
    std::fs::write(&body, envelope("v1", "ConfigMap", &raw)).expect("writing body");
    let mut args = pb.to_vec();
    args.extend([
        "-H",
        "Accept: application/vnd.kubernetes.protobuf",
        "-X",
        "POST",
    ]);
    let (code, ct, out) = curl_bytes(
        &ts.url("/api/v1/namespaces/default/configmaps"),
        &token,
        &args,
        Some(&body),
    );
    assert_eq!(
        (code, ct.as_str()),
        (201, "application/vnd.kubernetes.protobuf"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(out.starts_with(b"k8s\x00"), "{out:?}");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("ConfigMap") && text.contains("pcm") && text.contains("default"),
        "{text}"
    );

    // Clients that also take JSON (kubectl, client-go) get JSON.
    let (code, ct, out) = curl_bytes(
        &ts.url("/api/v1/namespaces/default/configmaps/pcm"),
        &token,
        &[
            "-H",
            "Accept: application/vnd.kubernetes.protobuf,application/json",
        ],
        None,
    );
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let cm: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(cm["data"], json!({"k": "v"}));

    // An update (PUT) in protobuf, carrying the resourceVersion it read.
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion");
    let meta = [
        &[0x0a, 0x03][..],
        b"pcm",
        &[0x32, rv.len() as u8],
        rv.as_bytes(),
    ]
    .concat();
    let raw = [
        &[0x0a, meta.len() as u8][..],
        &meta,
        &[0x12, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, b'v', b'2'],
    ]
    .concat();
    std::fs::write(&body, envelope("v1", "ConfigMap", &raw)).expect("writing body");
    let mut args = pb.to_vec();
    args.extend(["-X", "PUT"]);
    let (code, ct, out) = curl_bytes(
        &ts.url("/api/v1/namespaces/default/configmaps/pcm"),
        &token,
        &args,
        Some(&body),
    );
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let cm: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(cm["data"], json!({"k": "v2"}), "{cm}");
    assert_ne!(cm["metadata"]["resourceVersion"], rv, "{cm}");

    // A custom resource has no protobuf form: 415 naming the kind.
    std::fs::write(&body, envelope("iaas.yusur.io/v1", "YusurService", b"")).expect("writing body");
    let mut args = pb.to_vec();
    args.extend(["-X", "POST"]);
    let (code, _, out) = curl_bytes(
        &ts.url("/apis/iaas.yusur.io/v1/namespaces/default/yusurservices"),
        &token,
        &args,
        Some(&body),
    );
    let status: Value = serde_json::from_slice(&out).expect("a Status");
    assert_eq!(
        (code, &status["reason"]),
        (415, &json!("UnsupportedMediaType")),
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("YusurService"),
        "{status}"
    );

    // A cut-short ConfigMap: 400 naming the kind and the field.
    std::fs::write(
        &body,
        envelope("v1", "ConfigMap", &[0x0a, 0x03, 0x0a, 0x09, b'x']),
    )
    .expect("writing body");
    let (code, _, out) = curl_bytes(
        &ts.url("/api/v1/namespaces/default/configmaps"),
        &token,
        &args,
        Some(&body),
    );
    let status: Value = serde_json::from_slice(&out).expect("a Status");
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "the protobuf body of the ConfigMap (v1) is invalid: metadata: the message is cut short",
        "{status}"
    );
    ts.stop().await;
}
