//! Authentication and RBAC as a kubectl user meets them (kubectl 1.27, 1.32 and 1.33):
//! `auth can-i` (with and without `--as`), `auth whoami`, `create token` and the
//! ServiceAccount token it prints, a RoleBinding taking effect, the 403 wording, and a node
//! agent's identity that may write the status of its own probes only (issue 13, part 5).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn with(&self, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            bin: self.bin.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            cache: self.cache.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            r.ok,
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin.display(),
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    /// Runs and insists on failure, returning stderr.
    fn fails(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(
            !r.ok,
            "{} {args:?} succeeded, expected a refusal:\nstdout: {}",
            self.bin.display(),
            r.stdout
        );
        r
    }
}

fn probe(name: &str, node: &str) -> serde_json::Value {
    json!({"apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"target": {"kind": "Pod", "name": "b", "vpc": "vpc1", "ip": "10.0.0.5"},
            "type": "TCP", "port": 80, "nodeName": node, "periodSeconds": 5, "timeoutSeconds": 1,
            "successThreshold": 1, "failureThreshold": 3}})
}

async fn kubectl_meets_rbac(bin: PathBuf) {
    assert!(bin.exists(), "{} is missing", bin.display());
    let ts = common::start(Default::default()).await;
    let admin = Kubectl {
        bin,
        kubeconfig: ts.kubeconfig.clone(),
        cache: ts.dir.path().join("kubectl-cache"),
    };
    admin.ok(&["create", "namespace", "t1"]);

    // can-i: the administrator may, a namespace's default ServiceAccount may not.
    assert_eq!(admin.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let r = admin.fails(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--as",
        "system:serviceaccount:t1:default",
    ]);
    assert_eq!(r.stdout.trim(), "no", "stderr: {}", r.stderr);
    // The agents' ServiceAccount may write probe status and nothing of secrets
    // (deploy/rbac.yaml, enforced here as on a real cluster).
    let sa_agent = "system:serviceaccount:ferry-system:ferry-agent";
    let out = admin.ok(&[
        "auth",
        "can-i",
        "patch",
        "networkprobes.iaas.yusur.io",
        "--subresource=status",
        "--as",
        sa_agent,
    ]);
    assert_eq!(out.trim(), "yes");
    let r = admin.fails(&["auth", "can-i", "get", "secrets", "--as", sa_agent]);
    assert_eq!(r.stdout.trim(), "no");

    // whoami: the user and its groups, also as someone else.
    let me = admin.ok(&["auth", "whoami"]);
    assert!(
        me.contains("ferry:admin") && me.contains("system:masters"),
        "{me}"
    );
    let other = admin.ok(&[
        "auth",
        "whoami",
        "--as",
        "system:serviceaccount:t1:default",
        "-o",
        "json",
    ]);
    let other: serde_json::Value = serde_json::from_str(&other).expect("whoami JSON");
    assert_eq!(
        other["status"]["userInfo"]["username"],
        "system:serviceaccount:t1:default"
    );
    assert_eq!(
        other["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:t1",
            "system:authenticated"
        ])
    );

    // A ServiceAccount's token, a Role and a RoleBinding: it may read pods in t1 and
    // nothing else.
    admin.ok(&["-n", "t1", "create", "serviceaccount", "robot"]);
    admin.ok(&[
        "-n",
        "t1",
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
    ]);
    admin.ok(&[
        "-n",
        "t1",
        "create",
        "rolebinding",
        "robot-reads-pods",
        "--role=pod-reader",
        "--serviceaccount=t1:robot",
    ]);
    let token = admin.ok(&["-n", "t1", "create", "token", "robot"]);
    let token = token.trim();
    assert!(!token.is_empty(), "no token printed");
    let robot = |args: &[&str]| {
        let mut a = vec!["--token", token];
        a.extend_from_slice(args);
        admin.run(&a)
    };
    let who = robot(&["auth", "whoami"]);
    assert!(
        who.ok && who.stdout.contains("system:serviceaccount:t1:robot"),
        "{} {}",
        who.stdout,
        who.stderr
    );
    let r = robot(&["-n", "t1", "get", "pods"]);
    assert!(r.ok, "reading pods with the RoleBinding: {}", r.stderr);
    // `can-i --list`: the Role's rule in t1, and discovery for everyone.
    let list = robot(&["-n", "t1", "auth", "can-i", "--list"]);
    assert!(list.ok, "{}", list.stderr);
    let pods_row = list
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("no pods row in:\n{}", list.stdout));
    assert!(pods_row.contains("[get list watch]"), "{pods_row}");
    assert!(list.stdout.contains("/apis/*"), "{}", list.stdout);
    let r = robot(&["-n", "default", "get", "pods"]);
    assert!(
        !r.ok && r.stderr.contains(
            "pods is forbidden: User \"system:serviceaccount:t1:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        r.stderr
    );
    let r = robot(&["-n", "t1", "create", "configmap", "x", "--from-literal=a=b"]);
    assert!(
        !r.ok && r.stderr.contains("cannot create resource \"configmaps\""),
        "{}",
        r.stderr
    );
    // Impersonation needs the `impersonate` verb.
    let r = robot(&[
        "-n",
        "t1",
        "get",
        "pods",
        "--as",
        "system:serviceaccount:t1:default",
    ]);
    assert!(
        !r.ok
            && r.stderr.contains(
                "User \"system:serviceaccount:t1:robot\" cannot impersonate resource \"serviceaccounts\""
            ),
        "{}",
        r.stderr
    );
    // The token dies with its ServiceAccount.
    admin.ok(&["-n", "t1", "delete", "serviceaccount", "robot"]);
    let r = robot(&["-n", "t1", "get", "pods"]);
    assert!(!r.ok && r.stderr.contains("Unauthorized"), "{}", r.stderr);

    // One identity per node: node1's agent writes the status of its own probe only.
    let client = ts.client().await;
    for (name, node) in [("p-node1", "node1"), ("p-node2", "node2")] {
        ferry_testkit::api::apply(&client, &probe(name, node))
            .await
            .expect("creating a probe");
    }
    let node1 = admin.with(&ts.node_kubeconfig("node1"));
    let status = r#"{"status":{"phase":"Healthy","message":"ok"}}"#;
    let patch = |name: &str| {
        node1.run(&[
            "patch",
            "networkprobe",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ])
    };
    let own = patch("p-node1");
    assert!(own.ok, "own probe status: {}", own.stderr);
    let other = patch("p-node2");
    assert!(
        !other.ok
            && other.stderr.contains(
                "networkprobes.iaas.yusur.io \"p-node2\" is forbidden: node \"node1\" can only update the status of networkprobes with spec.nodeName set to itself"
            ),
        "{}",
        other.stderr
    );
    let phase = admin.ok(&[
        "get",
        "networkprobe",
        "p-node2",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(phase, "", "node1 must not have written node2's probe");
    // Nor the probe itself (RBAC: the agent role has only the status).
    let r = node1.fails(&["label", "networkprobe", "p-node1", "x=y"]);
    assert!(r.stderr.contains("system:node:node1"), "{}", r.stderr);
    let me = node1.ok(&["auth", "whoami"]);
    assert!(
        me.contains("system:node:node1") && me.contains("system:nodes"),
        "{me}"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_meets_rbac() {
    kubectl_meets_rbac(common::kubectl_for("1.27")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_meets_rbac() {
    kubectl_meets_rbac(common::kubectl_for("1.32")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_meets_rbac() {
    kubectl_meets_rbac(common::kubectl_for("1.33")).await;
}

/// The rest of the node rule, through kube-rs as the agent calls it: its own Node and
/// Lease, the status of Pods bound to it, and nothing of another node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_writes_only_its_own_node_lease_and_pods() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let ts = common::start(Default::default()).await;
    let admin = ts.client().await;
    let node1 = common::client_for(&ts.node_kubeconfig("node1")).await;
    let code = |r: kube::Result<()>| match r {
        Ok(()) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    let nodes: Api<Node> = Api::all(node1.clone());
    let node = |n: &str| -> Node {
        serde_json::from_value(json!({"metadata": {"name": n}})).expect("node")
    };
    let pp = PostParams::default();
    assert_eq!(code(nodes.create(&pp, &node("node1")).await.map(drop)), 200);
    assert_eq!(code(nodes.create(&pp, &node("node2")).await.map(drop)), 403);
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let merge = PatchParams::default();
    assert_eq!(
        code(
            nodes
                .patch_status("node1", &merge, &Patch::Merge(&ready))
                .await
                .map(drop)
        ),
        200
    );
    Api::<Node>::all(admin.clone())
        .create(&pp, &node("node2"))
        .await
        .expect("admin creates node2");
    assert_eq!(
        code(
            nodes
                .patch_status("node2", &merge, &Patch::Merge(&ready))
                .await
                .map(drop)
        ),
        403
    );

    let leases: Api<Lease> = Api::namespaced(node1.clone(), "kube-node-lease");
    let lease = |n: &str| -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": n, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "x"}}),
        )
        .expect("lease")
    };
    assert_eq!(
        code(
            leases
                .create(&pp, &lease("ferry-agent-node1"))
                .await
                .map(drop)
        ),
        200
    );
    assert_eq!(
        code(
            leases
                .create(&pp, &lease("ferry-agent-node2"))
                .await
                .map(drop)
        ),
        403
    );

    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    for (name, on) in [("on1", "node1"), ("on2", "node2")] {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"nodeName": on, "containers": [{"name": "c", "image": "x"}]}}))
        .expect("pod");
        admin_pods
            .create(&pp, &p)
            .await
            .expect("admin creates a pod");
    }
    let pods: Api<Pod> = Api::namespaced(node1.clone(), "default");
    let running = json!({"status": {"phase": "Running"}});
    assert_eq!(
        code(
            pods.patch_status("on1", &merge, &Patch::Merge(&running))
                .await
                .map(drop)
        ),
        200
    );
    assert_eq!(
        code(
            pods.patch_status("on2", &merge, &Patch::Merge(&running))
                .await
                .map(drop)
        ),
        403
    );
    // Nor may it delete a pod, even its own (RBAC gives the agent only pod status).
    assert_eq!(
        code(pods.delete("on1", &Default::default()).await.map(drop)),
        403
    );
    ts.stop().await;
}

/// A new binding is enforced as soon as it is stored, and a removed one stops granting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_take_effect_when_written_and_removed() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Api, DeleteParams, ListParams};

    let ts = common::start(Default::default()).await;
    let admin = ts.client().await;
    let agent = common::client_for(&ts.agent_kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(agent, "default");
    let denied = cms
        .list(&ListParams::default())
        .await
        .expect_err("no rule yet");
    assert!(
        matches!(denied, kube::Error::Api(ref e) if e.code == 403),
        "{denied}"
    );
    ferry_testkit::api::apply(
        &admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
    )
    .await
    .expect("role");
    ferry_testkit::api::apply(
        &admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "agent-reads-cms"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": "ferry-system"}]}),
    )
    .await
    .expect("binding");
    cms.list(&ListParams::default())
        .await
        .expect("allowed once the binding is stored");
    Api::<ClusterRoleBinding>::all(admin)
        .delete("agent-reads-cms", &DeleteParams::default())
        .await
        .expect("delete binding");
    let denied = cms
        .list(&ListParams::default())
        .await
        .expect_err("binding gone");
    assert!(
        matches!(denied, kube::Error::Api(ref e) if e.code == 403),
        "{denied}"
    );
    ts.stop().await;
}
