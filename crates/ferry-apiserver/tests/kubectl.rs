//! Real kubectl (1.27, 1.32, 1.33) against the server, doing what issue 3's "done when" lists:
//! apply / re-apply `unchanged`, the `get` columns, `get -w`, `explain`, `api-resources`,
//! `edit`, `label`, `patch --subresource=status`, `delete`, 422s that name the field and
//! store nothing, strict unknown-field checks, server-side dry-run and re-apply of built-in
//! kinds (strategic merge), plus 401/403 on raw HTTPS.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The seed manifest, vendored into the repository (README).
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/ysvc1.yaml");

fn seed() -> PathBuf {
    let seed = PathBuf::from(SEED);
    assert!(seed.exists(), "seed manifest not found at {SEED}");
    seed
}

struct Kubectl {
    bin: String,
    kubeconfig: PathBuf,
    cache: PathBuf,
    work: PathBuf,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG");
        c
    }

    fn run_with(&self, mut c: Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = c
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin));
        Run {
            ok: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.cmd(args))
    }

    /// Runs and insists on success, returning stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            r.ok,
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin, r.stdout, r.stderr
        );
        r.stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.work.join(name);
        std::fs::write(&p, text).expect("writing manifest");
        p.display().to_string()
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let mut a = args.to_vec();
        let o = format!("jsonpath={path}");
        a.extend(["-o", &o]);
        self.ok(&a)
    }

    fn not_found(&self, args: &[&str]) {
        let r = self.run(args);
        assert!(
            !r.ok && r.stderr.contains("NotFound"),
            "expected NotFound for {args:?}, got ok={} stdout={} stderr={}",
            r.ok,
            r.stdout,
            r.stderr
        );
    }
}

/// The cells of the row starting with `name`, cut at the header's column offsets (empty
/// cells stay empty strings).
fn cells(table: &str, name: &str) -> Vec<String> {
    let header = table.lines().next().unwrap_or_default();
    let mut starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"));
    starts.push(usize::MAX);
    starts
        .windows(2)
        .map(|w| {
            let end = w[1].min(row.len());
            row.get(w[0].min(end)..end)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect()
}

const BUILTINS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80, protocol: TCP}]
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
      - name: sidecar
        image: busybox
        args: [sleep, infinity]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ferry-test-reader}
rules:
- apiGroups: [""]
  resources: [pods, services]
  verbs: [get, list, watch]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      tolerations: [{operator: Exists}]
      containers:
      - name: agent
        image: busybox
        args: [sleep, infinity]
        securityContext: {privileged: true}
"#;

fn bad_ysvc(name: &str, spec_extra: &str, port: u32, type_: &str) -> String {
    format!(
        "apiVersion: iaas.yusur.io/v1\nkind: YusurService\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  scope: vpc\n  vpc: vpc1\n{spec_extra}  ports:\n  - port: {port}\n    name: p\n    protocol: TCP\n  selector:\n    app: x\n"
    )
}

async fn kubectl_does_what_a_user_tries(bin: &str) {
    assert!(
        Path::new(bin).exists() || bin == "kubectl",
        "kubectl binary {bin} is missing"
    );
    let ts = common::start(Default::default()).await;
    let work = ts.dir.path().join("kubectl-work");
    std::fs::create_dir_all(&work).expect("work dir");
    let k = Kubectl {
        bin: bin.to_string(),
        kubeconfig: ts.kubeconfig.clone(),
        cache: ts.dir.path().join("kubectl-cache"),
        work,
    };
    let seed = seed();
    let seed = seed.to_str().expect("utf-8 path");

    // apply, then apply again: unchanged.
    let out = k.ok(&["apply", "-f", seed]);
    assert!(
        out.contains("yusurservice.iaas.yusur.io/ysvc1 created"),
        "{out}"
    );
    let out = k.ok(&["apply", "-f", seed]);
    assert!(
        out.contains("yusurservice.iaas.yusur.io/ysvc1 unchanged"),
        "second apply must be a no-op: {out}"
    );

    // get: the printer columns.
    let out = k.ok(&["get", "ysvc", "ysvc1"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "SCOPE",
            "VPC",
            "CLUSTER-IP",
            "EIP",
            "PORT(S)",
            "READY",
            "AGE"
        ],
        "{out}"
    );
    // VPC is `status.vpcs`, which the controller writes (none runs here).
    let row = cells(&out, "ysvc1");
    assert_eq!(
        &row[..7],
        ["ysvc1", "ClusterIP", "vpc", "", "", "", "5001"],
        "{out}"
    );

    // get -w streams a change made by another command.
    let mut watch = k
        .cmd(&["get", "ysvc", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl get -w");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watch.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_line = |what: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("kubectl get -w never printed a line with {what:?}"),
            }
        }
    };
    let first = wait_line("ysvc1");
    assert!(first.contains("ADDED"), "{first}");

    // patch --subresource=status: a status field shows in the watch and in get.
    let out = k.ok(&[
        "patch",
        "ysvc",
        "ysvc1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"clusterIP":"10.96.0.50","ready":"2/3"}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let line = wait_line("10.96.0.50");
    assert!(line.contains("MODIFIED") && line.contains("2/3"), "{line}");
    assert_eq!(
        k.jsonpath(&["get", "ysvc", "ysvc1"], "{.status.clusterIP}"),
        "10.96.0.50"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();

    // explain and api-resources.
    let out = k.ok(&["explain", "ysvc.spec"]);
    assert!(out.contains("ports"), "{out}");
    let out = k.ok(&["api-resources"]);
    assert!(
        out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"yusurservices") && f.get(1) == Some(&"ysvc")
        }),
        "{out}"
    );

    // edit through an EDITOR script.
    let mut c = k.cmd(&["edit", "ysvc", "ysvc1"]);
    c.env(
        "KUBE_EDITOR",
        "sed -i -e 's/targetPort: 5001/targetPort: 5002/'",
    )
    .env_remove("EDITOR");
    let r = k.run_with(c);
    assert!(
        r.ok && r.stdout.contains("edited"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        k.jsonpath(&["get", "ysvc", "ysvc1"], "{.spec.ports[0].targetPort}"),
        "5002"
    );
    assert_eq!(
        k.jsonpath(&["get", "ysvc", "ysvc1"], "{.metadata.generation}"),
        "2"
    );

    // label.
    let out = k.ok(&["label", "ysvc", "ysvc1", "tier=gold"]);
    assert!(out.contains("labeled"), "{out}");
    let out = k.ok(&["get", "ysvc", "-l", "tier=gold", "-o", "name"]);
    assert_eq!(out.trim(), "yusurservice.iaas.yusur.io/ysvc1");

    // Bad values: 422 naming the field, nothing stored.
    for (name, text, field) in [
        (
            "bad-port",
            bad_ysvc("bad-port", "", 70000, "ClusterIP"),
            "spec.ports[0].port",
        ),
        ("bad-type", bad_ysvc("bad-type", "", 80, "Foo"), "spec.type"),
    ] {
        let f = k.file(&format!("{name}.yaml"), &text);
        let r = k.run(&["apply", "-f", &f, "-v=6"]);
        assert!(!r.ok, "{name} was accepted: {}", r.stdout);
        assert!(
            r.stderr.contains("422 Unprocessable Entity"),
            "{name}: expected a 422 in:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("is invalid") && r.stderr.contains(field),
            "{name}: the error must name {field}:\n{}",
            r.stderr
        );
        k.not_found(&["get", "ysvc", name]);
    }

    // An unknown field is refused under kubectl's default (strict) validation.
    let f = k.file(
        "unknown-field.yaml",
        &bad_ysvc("unknown-field", "  bogusField: 1\n", 80, "ClusterIP"),
    );
    let r = k.run(&["apply", "-f", &f]);
    assert!(!r.ok, "unknown field accepted: {}", r.stdout);
    assert!(r.stderr.contains("bogusField"), "{}", r.stderr);
    k.not_found(&["get", "ysvc", "unknown-field"]);

    // Built-in kinds: server dry-run stores nothing; apply, then re-apply unchanged.
    let f = k.file("builtins.yaml", BUILTINS);
    let out = k.ok(&["apply", "--dry-run=server", "-f", &f]);
    for obj in [
        "deployment.apps/web",
        "clusterrole.rbac.authorization.k8s.io/ferry-test-reader",
        "daemonset.apps/agent",
    ] {
        assert!(
            out.contains(&format!("{obj} created (server dry run)")),
            "{obj}: {out}"
        );
    }
    k.not_found(&["get", "deployment", "web"]);
    k.not_found(&["get", "clusterrole", "ferry-test-reader"]);
    k.not_found(&["get", "daemonset", "agent"]);
    let out = k.ok(&["apply", "-f", &f]);
    assert_eq!(out.matches(" created").count(), 3, "{out}");
    let out = k.ok(&["apply", "-f", &f]);
    assert_eq!(out.matches(" unchanged").count(), 3, "{out}");
    // A change to one list element goes through the strategic merge path.
    let changed = BUILTINS.replace("value: \"2\"", "value: \"3\"");
    let f2 = k.file("builtins2.yaml", &changed);
    let out = k.ok(&["apply", "-f", &f2]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(
        k.jsonpath(
            &["get", "deployment", "web"],
            "{.spec.template.spec.containers[0].env[1].value}"
        ),
        "3"
    );
    assert_eq!(
        k.jsonpath(
            &["get", "deployment", "web"],
            "{.spec.template.spec.containers[*].name}"
        ),
        "web sidecar"
    );

    // delete.
    let out = k.ok(&["delete", "ysvc", "ysvc1"]);
    assert!(out.contains("deleted"), "{out}");
    k.not_found(&["get", "ysvc", "ysvc1"]);

    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27() {
    kubectl_does_what_a_user_tries(&common::kubectl_for("1.27").display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_preinstalled() {
    kubectl_does_what_a_user_tries("kubectl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33() {
    kubectl_does_what_a_user_tries(&common::kubectl_for("1.33").display().to_string()).await;
}

/// The project's own `deploy/` manifests apply with kubectl's default validation, and
/// re-apply as `unchanged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_apply_and_reapply_unchanged() {
    let ts = common::start(Default::default()).await;
    let k = Kubectl {
        bin: "kubectl".into(),
        kubeconfig: ts.kubeconfig.clone(),
        cache: ts.dir.path().join("kubectl-cache"),
        work: ts.dir.path().to_path_buf(),
    };
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let files: Vec<String> = [
        "namespace.yaml",
        "rbac.yaml",
        "controller.yaml",
        "agent.yaml",
    ]
    .iter()
    .map(|f| deploy.join(f).display().to_string())
    .collect();
    let mut args = vec!["apply"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let out = k.ok(&args);
    assert!(
        !out.contains("unchanged") && out.contains(" created"),
        "{out}"
    );
    let n = out.lines().count();
    let out = k.ok(&args);
    assert_eq!(out.matches(" unchanged").count(), n, "{out}");
    // A server-side dry run of the workloads validates them and stores nothing.
    let workloads = [files[2].as_str(), files[3].as_str()];
    k.ok(&["delete", "-f", workloads[0], "-f", workloads[1]]);
    let out = k.ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        workloads[0],
        "-f",
        workloads[1],
    ]);
    assert_eq!(out.matches("created (server dry run)").count(), 2, "{out}");
    let listed = k.run(&[
        "get",
        "deployments,daemonsets",
        "-n",
        "ferry-system",
        "-o",
        "name",
    ]);
    assert!(
        listed.ok && listed.stdout.trim().is_empty(),
        "dry run stored something: {}",
        listed.stdout
    );
    ts.stop().await;
}

/// No token: 401. The agent's token may not read secrets: 403. Admin may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_https_without_token_is_401_and_agent_reading_secrets_is_403() {
    let ts = common::start(Default::default()).await;
    let url = ts.url("/api/v1/namespaces/default/secrets");
    let r = common::curl("GET", &url, None, None);
    assert_eq!(r.code, 401, "{}", r.body);
    assert_eq!(r.json()["reason"], "Unauthorized");
    let r = common::curl("GET", &url, Some("not-a-token"), None);
    assert_eq!(r.code, 401, "{}", r.body);
    let r = common::curl("GET", &url, Some(&ts.tokens().agent), None);
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "Forbidden");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains(
                "secrets is forbidden: User \"system:serviceaccount:ferry-system:ferry-agent\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
            ),
        "{}",
        r.body
    );
    let r = common::curl("GET", &url, Some(&ts.tokens().admin), None);
    assert_eq!(r.code, 200, "{}", r.body);
    ts.stop().await;
}

/// Garbage gets a clear 4xx, never a crash: bad JSON, a 10 MB body, an unknown kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_clear_4xx() {
    let ts = common::start(Default::default()).await;
    let admin = ts.tokens().admin.clone();
    let url = ts.url("/api/v1/namespaces/default/configmaps");
    let r = common::curl("POST", &url, Some(&admin), Some("{not json"));
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    let big = ts.dir.path().join("big.json");
    let filler = "x".repeat(10 * 1024 * 1024);
    std::fs::write(
        &big,
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{filler}"}}}}"#),
    )
    .expect("writing the big body");
    // curl 7.88's HTTP/2 reports the server's early answer as a stream error, so this one
    // request goes over HTTP/1.1; kubectl (HTTP/2) below sees the same 413.
    let r = common::curl_with(
        &["--http1.1"],
        "POST",
        &url,
        Some(&admin),
        Some(&format!("@{}", big.display())),
    );
    assert_eq!(r.code, 413, "{}", r.body);
    let big_file = ts.dir.path().join("big-file");
    std::fs::write(&big_file, &filler).expect("writing the big file");
    let o = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&ts.kubeconfig)
        .args(["create", "configmap", "big"])
        .arg(format!("--from-file={}", big_file.display()))
        .output()
        .expect("running kubectl");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("larger than the limit"),
        "{stderr}"
    );
    let r = common::curl(
        "POST",
        &ts.url("/apis/example.com/v1/namespaces/default/widgets"),
        Some(&admin),
        Some(r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"}}"#),
    );
    assert_eq!(r.code, 404, "{}", r.body);
    let r = common::curl(
        "POST",
        &url,
        Some(&admin),
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"wrong-kind"}}"#),
    );
    assert_eq!(r.code, 400, "{}", r.body);
    // Still serving.
    let r = common::curl("GET", &url, Some(&admin), None);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(!r.body.contains("\"big\""));
    ts.stop().await;
}
