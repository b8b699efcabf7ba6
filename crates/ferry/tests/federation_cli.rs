//! The federation through the `ferry` binary and `kubectl`, as a user runs it:
//! `ferry federation up`, two member `ferry apiserver`s (Ferry's CRDs applied with kubectl)
//! registered with `ferry federation member add` and joined with `ferry federation join`
//! using their own tokens (members c1 of tenant t1, c2 of tenant t2), one
//! FederatedYusurService of t1 placed on both; c1's token checked with kubectl against
//! what it may and may not do. No root, no OVN.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped with SIGTERM (by PID) on drop, SIGKILL after 10 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ferry(dir: &Path, log: &str, args: &[&str]) -> Proc {
    let out = std::fs::File::create(dir.join(log)).expect("log file");
    Proc(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("starting ferry"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Polls until `check` returns Some, or panics after 60 s with the last output.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `kubectl get` output cut at its header's column starts (cells may be empty).
fn columns(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| *c != ' ' && (*i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    std::iter::once(header)
        .chain(lines)
        .map(|l| {
            starts
                .iter()
                .enumerate()
                .map(|(k, &a)| {
                    let b = starts.get(k + 1).copied().unwrap_or(l.len()).min(l.len());
                    l.get(a.min(l.len())..b)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

fn wait_file(path: &Path) -> PathBuf {
    eventually(&format!("{}", path.display()), || {
        path.exists()
            .then(|| path.to_path_buf())
            .ok_or_else(|| "missing".to_string())
    })
}

#[test]
fn federation_up_join_and_kubectl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");

    let fport = free_port().to_string();
    let _fed = ferry(
        d,
        "fed.log",
        &[
            "federation",
            "up",
            "--data-dir",
            "fed",
            "--listen",
            &format!("127.0.0.1:{fport}"),
        ],
    );
    let fkc = wait_file(&d.join("fed/kubeconfig"));
    let mut members = Vec::new();
    for (name, tenant) in [("c1", "t1"), ("c2", "t2")] {
        let port = free_port().to_string();
        let server = ferry(
            d,
            &format!("{name}.log"),
            &[
                "apiserver",
                "--data-dir",
                name,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ],
        );
        let kc = wait_file(&d.join(name).join("kubeconfig"));
        eventually("Ferry's CRDs applied in the member", || {
            let (ok, out) = kubectl(&kc, &["apply", "-f", crds.to_str().unwrap_or_default()]);
            ok.then_some(()).ok_or(out)
        });
        // The admin registers the member and hands it its own kubeconfig.
        let own = d.join(format!("{name}-federation.kubeconfig"));
        let add = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["federation", "member", "add", name, "--kubeconfig"])
            .arg(&fkc)
            .args(["--tenant", tenant, "--workspace", "w1", "--cell"])
            .arg(format!("{name}-cell=ns-{name}"))
            .arg("--out")
            .arg(&own)
            .output()
            .expect("ferry federation member add");
        assert!(
            add.status.success(),
            "member add: {}",
            String::from_utf8_lossy(&add.stderr)
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&own)
                .expect("member kubeconfig")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the member's kubeconfig is private");
        }
        let join = ferry(
            d,
            &format!("join-{name}.log"),
            &[
                "federation",
                "join",
                "--federation-kubeconfig",
                own.to_str().unwrap_or_default(),
                "--kubeconfig",
                kc.to_str().unwrap_or_default(),
                "--name",
                name,
                "--tenant",
                tenant,
                "--workspace",
                "w1",
                "--cell",
                &format!("{name}-cell=ns-{name}"),
                "--heartbeat-s",
                "1",
            ],
        );
        members.push((name, kc, server, join));
    }

    // kubectl get mc: tenant, cells, readiness.
    let mc = eventually("both members Ready in kubectl get mc", || {
        let (_, out) = kubectl(&fkc, &["get", "mc"]);
        let ready = out
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some("True"))
            .count();
        (ready == 2).then_some(out.clone()).ok_or(out)
    });
    let rows: Vec<Vec<String>> = columns(&mc).into_iter().map(|r| r[..5].to_vec()).collect();
    assert_eq!(
        rows,
        [
            ["NAME", "TENANT", "WORKSPACE", "CELLS", "READY"],
            ["c1", "t1", "w1", "c1-cell", "True"],
            ["c2", "t2", "w1", "c2-cell", "True"],
        ]
        .map(|r| r.map(String::from).to_vec())
        .to_vec()
    );

    let fysvc = d.join("web.yaml");
    std::fs::write(
        &fysvc,
        r#"apiVersion: federation.iaas.yusur.io/v1
kind: FederatedYusurService
metadata:
  name: web
  namespace: default
  labels: {iaas.yusur.io/tenant: t1, iaas.yusur.io/workspace: w1}
spec:
  template:
    spec: {type: LoadBalancer, vpc: vpc1, ports: [{port: 80}], selector: {app: web}}
  placement: {topologyType: cluster, clusters: [c1, c2]}
  placementMask: [c1]
  overrides:
  - target: c1
    patches: [{op: add, path: /spec/eip, value: 198.18.1.120}]
"#,
    )
    .expect("writing web.yaml");
    let (ok, out) = kubectl(&fkc, &["apply", "-f", fysvc.to_str().unwrap_or_default()]);
    assert!(ok, "{out}");

    // Only c1 (tenant t1) holds it, with its override; c2 belongs to t2.
    let (_, c1kc, _, _) = &members[0];
    let (_, c2kc, _, _) = &members[1];
    let eip = eventually("web in c1", || {
        let (ok, out) = kubectl(c1kc, &["get", "ysvc", "web", "-o", "jsonpath={.spec.eip}"]);
        ok.then_some(out.clone()).ok_or(out)
    });
    assert_eq!(eip, "198.18.1.120");
    let (_, out) = kubectl(c2kc, &["get", "ysvc", "-A", "-o", "name"]);
    assert_eq!(out.trim(), "", "nothing in the other tenant's cluster");

    // kubectl get fysvc: placement, mask, updated and ready targets.
    let table = eventually("web's row with 1/1 updated", || {
        let (_, out) = kubectl(&fkc, &["get", "fysvc", "web"]);
        let t = columns(&out);
        (t.get(1).and_then(|r| r.get(5)).map(String::as_str) == Some("1/1"))
            .then_some(t)
            .ok_or(out)
    });
    assert_eq!(
        (table[0][..7].to_vec(), table[1][..7].to_vec()),
        (
            [
                "NAME", "TOPOLOGY", "CLUSTERS", "CELLS", "MASK", "UPDATED", "READY"
            ]
            .map(String::from)
            .to_vec(),
            ["web", "cluster", "c1,c2", "", "c1", "1/1", "0/1"]
                .map(String::from)
                .to_vec()
        )
    );
    let (_, out) = kubectl(
        &fkc,
        &[
            "get",
            "fysvc",
            "web",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Placement")].reason}"#,
        ],
    );
    assert_eq!(out, "NotInTenant");

    // c1's own token through kubectl: its own objects, its status; a 403 for c2's objects,
    // any spec, any list outside its namespace.
    let c1fed = d.join("c1-federation.kubeconfig");
    let allowed: [&[&str]; 4] = [
        &["get", "mc", "c1"],
        &["get", "works", "-n", "ferry-member-c1"],
        &[
            "get",
            "works.federation.iaas.yusur.io",
            "default.default.web",
            "-n",
            "ferry-member-c1",
        ],
        &[
            "patch",
            "mc",
            "c1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"version":"probe"}}"#,
        ],
    ];
    for args in allowed {
        let (ok, out) = kubectl(&c1fed, args);
        assert!(ok, "c1's token refused {args:?}: {out}");
    }
    let refused: [&[&str]; 10] = [
        &["get", "mc", "c2"],
        &["get", "mc"],
        &["get", "works", "-n", "ferry-member-c2"],
        &["get", "works", "-A"],
        &["get", "fysvc", "-A"],
        &["get", "secrets", "-n", "ferry-system"],
        &[
            "patch",
            "mc",
            "c2",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"version":"forged"}}"#,
        ],
        &[
            "label",
            "mc",
            "c1",
            "iaas.yusur.io/tenant=t2",
            "--overwrite",
        ],
        &[
            "patch",
            "works.federation.iaas.yusur.io",
            "default.default.web",
            "-n",
            "ferry-member-c1",
            "--type=merge",
            "-p",
            r#"{"spec":{"generation":99}}"#,
        ],
        &[
            "delete",
            "works.federation.iaas.yusur.io",
            "default.default.web",
            "-n",
            "ferry-member-c1",
        ],
    ];
    for args in refused {
        let (ok, out) = kubectl(&c1fed, args);
        assert!(
            !ok && out.contains("Forbidden"),
            "c1's token not refused {args:?}: {out}"
        );
    }
    // Revoked: the token no longer authenticates at all.
    let revoke = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["federation", "member", "revoke", "c1", "--kubeconfig"])
        .arg(&fkc)
        .output()
        .expect("ferry federation member revoke");
    assert_eq!(
        String::from_utf8_lossy(&revoke.stdout).trim(),
        "member c1: 1 token(s) revoked"
    );
    let (ok, out) = kubectl(&c1fed, &["get", "mc", "c1"]);
    assert!(!ok && out.contains("Unauthorized"), "after revoke: {out}");
}

/// A FederatedYusurService of tenant t1 named `name`, placed on a cluster that is no member
/// (so the controller answers with `Placement=False/NotInTenant`, no member needed).
fn fysvc_yaml(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: federation.iaas.yusur.io/v1
kind: FederatedYusurService
metadata:
  name: {name}
  namespace: default
  labels: {{iaas.yusur.io/tenant: t1, iaas.yusur.io/workspace: w1}}
spec:
  template:
    spec: {{type: LoadBalancer, vpc: vpc1, ports: [{{port: 80}}], selector: {{app: web}}}}
  placement: {{topologyType: cluster, clusters: [nowhere]}}
"#
        ),
    )
    .expect("writing a fysvc");
    path
}

/// The controller's Placement reason on a fysvc, as seen through `kubeconfig`.
fn placement_reason(kubeconfig: &Path, name: &str) -> Result<(), String> {
    let (_, out) = kubectl(
        kubeconfig,
        &[
            "get",
            "fysvc",
            name,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Placement")].reason}"#,
        ],
    );
    (out == "NotInTenant").then_some(()).ok_or(out)
}

/// Issue 17's replicated control plane: two `ferry federation up` on one 3-member etcd
/// cluster serve one federation. An object written through server A reaches a `kubectl get
/// -w` on server B; with one etcd member killed (SIGKILL) writes go on and nothing
/// acknowledged is lost; with server A killed (SIGKILL), server B still has everything and
/// its controller replica takes over the Lease and reconciles new objects.
#[test]
fn federation_on_etcd_survives_a_killed_etcd_member_and_a_killed_api_server() {
    let mut etcd = ferry_testkit::etcd::EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let store = etcd.url("/ferry-federation");
    let up = |name: &str| {
        let port = free_port().to_string();
        ferry(
            d,
            &format!("{name}.log"),
            &[
                "federation",
                "up",
                "--data-dir",
                name,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                &store,
            ],
        )
    };
    let mut fed_a = up("fed-a");
    let akc = wait_file(&d.join("fed-a/kubeconfig"));
    let _fed_b = up("fed-b");
    let bkc = wait_file(&d.join("fed-b/kubeconfig"));
    eventually("server B serving fysvc", || {
        let (ok, out) = kubectl(&bkc, &["get", "fysvc", "-A"]);
        ok.then_some(()).ok_or(out)
    });

    // B's watch sees what is written through A.
    let watch_out = d.join("watch-b.out");
    let _watch = Proc(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&bkc)
            .args(["get", "fysvc", "-n", "default", "-w", "-o", "name"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&watch_out).expect("watch output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let apply = |kc: &Path, name: &str| {
        let file = fysvc_yaml(d, name);
        eventually(&format!("{name} applied"), || {
            let (ok, out) = kubectl(kc, &["apply", "-f", file.to_str().unwrap_or_default()]);
            ok.then_some(()).ok_or(out)
        });
    };
    apply(&akc, "one");
    eventually("one in B's watch", || {
        let out = std::fs::read_to_string(&watch_out).unwrap_or_default();
        out.contains("federatedyusurservice.federation.iaas.yusur.io/one")
            .then_some(())
            .ok_or(out)
    });
    eventually("one reconciled", || placement_reason(&bkc, "one"));

    // One etcd member killed: the first one, which both servers dial first.
    etcd.kill(0);
    apply(&akc, "two");
    apply(&bkc, "three");
    eventually("two reconciled", || placement_reason(&bkc, "two"));

    // Server A killed: B has every object and its controller replica takes over.
    let _ = fed_a.0.kill();
    let _ = fed_a.0.wait();
    apply(&bkc, "four");
    eventually("four reconciled by B's controller", || {
        placement_reason(&bkc, "four")
    });
    let (_, names) = kubectl(&bkc, &["get", "fysvc", "-n", "default", "-o", "name"]);
    let names: Vec<&str> = names
        .lines()
        .map(|l| l.trim_start_matches("federatedyusurservice.federation.iaas.yusur.io/"))
        .collect();
    assert_eq!(names, ["four", "one", "three", "two"]);
    let watched = std::fs::read_to_string(&watch_out).unwrap_or_default();
    for name in ["one", "two", "three", "four"] {
        assert!(
            watched.contains(&format!("/{name}\n")),
            "B's watch saw {name}: {watched}"
        );
    }
}
