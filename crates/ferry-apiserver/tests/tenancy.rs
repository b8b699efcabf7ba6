//! Tenancy admission through real kubectl (1.27, 1.32, 1.33): a VPC that lists its
//! namespaces refuses a Pod, a VNicIP or a YusurService of another namespace that names it
//! (or one of its subnets), with a 422 naming the field, the namespace and the VPC; the
//! namespaces it lists, and VPCs that list none, are open; nothing refused is stored.

mod common;

use std::path::Path;
use std::process::Command;

fn kubectl(version: &str, kubeconfig: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(common::kubectl_for(version))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writing the manifest");
    let o = child.wait_with_output().expect("kubectl output");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

const NETWORKS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: t1}
---
apiVersion: v1
kind: Namespace
metadata: {name: tenant-b}
---
apiVersion: iaas.yusur.io/v1
kind: Vpc
metadata: {name: vpc2}
spec: {namespaces: [tenant-b]}
---
apiVersion: iaas.yusur.io/v1
kind: Vpc
metadata: {name: vpc1}
spec: {}
---
apiVersion: iaas.yusur.io/v1
kind: Subnet
metadata: {name: vpc2-subnet1}
spec: {vpc: vpc2, cidrBlock: 10.0.1.0/24}
---
apiVersion: iaas.yusur.io/v1
kind: Subnet
metadata: {name: vpc1-subnet1}
spec: {vpc: vpc1, cidrBlock: 10.0.1.0/24}
"#;

fn pod(ns: &str, name: &str, subnet: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "{ns}",
          "annotations": {{"iaas.yusur.io/subnet": "{subnet}"}}}},
          "spec": {{"containers": [{{"name": "c", "image": "x"}}]}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpc_admits_only_its_namespaces() {
    let server = common::start(Default::default()).await;
    let kc = server.kubeconfig.clone();
    let (ok, out) = kubectl("1.32", &kc, &["apply", "-f", "-"], NETWORKS);
    assert!(ok, "{out}");
    for version in ["1.27", "1.32", "1.33"] {
        let v = version.replace('.', "-");
        let refused = format!("p-{v}");
        let (ok, out) = kubectl(
            version,
            &kc,
            &["apply", "-f", "-"],
            &pod("t1", &refused, "vpc2-subnet1"),
        );
        assert!(
            !ok,
            "kubectl {version}: a t1 pod in vpc2 was admitted: {out}"
        );
        for part in [
            "metadata.annotations[iaas.yusur.io/subnet]",
            "namespace \"t1\"",
            "\"vpc2-subnet1\"",
            "VPC \"vpc2\"",
            "tenant-b",
        ] {
            assert!(out.contains(part), "kubectl {version}: {part} not in {out}");
        }
        let (found, _) = kubectl(version, &kc, &["-n", "t1", "get", "pod", &refused], "");
        assert!(!found, "kubectl {version}: the refused pod was stored");
        // The namespace vpc2 lists, and a VPC that lists none.
        let (ok, out) = kubectl(
            version,
            &kc,
            &["apply", "-f", "-"],
            &pod("tenant-b", &format!("b-{v}"), "vpc2-subnet1"),
        );
        assert!(ok, "kubectl {version}: {out}");
        let (ok, out) = kubectl(
            version,
            &kc,
            &["apply", "-f", "-"],
            &pod("t1", &format!("open-{v}"), "vpc1-subnet1"),
        );
        assert!(ok, "kubectl {version}: {out}");
    }
    let vnic = r#"{"apiVersion": "iaas.yusur.io/v1", "kind": "VNicIP",
        "metadata": {"name": "v", "namespace": "t1"}, "spec": {"subnet": "vpc2-subnet1"}}"#;
    let (ok, out) = kubectl("1.32", &kc, &["apply", "-f", "-"], vnic);
    assert!(!ok && out.contains("spec.subnet"), "{out}");
    let ysvc = r#"{"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "s", "namespace": "t1"},
        "spec": {"type": "ClusterIP", "scope": "multi-vpc", "vpcs": ["vpc1", "vpc2"], "selector": {"a": "b"},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}}"#;
    let (ok, out) = kubectl("1.32", &kc, &["apply", "-f", "-"], ysvc);
    assert!(
        !ok && out.contains("spec.vpcs[1]") && out.contains("VPC \"vpc2\""),
        "{out}"
    );
    // A pod placed before the VPC narrowed its list stays writable.
    let (ok, out) = kubectl(
        "1.32",
        &kc,
        &["-n", "t1", "label", "pod", "open-1-32", "x=y"],
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        "1.32",
        &kc,
        &[
            "patch",
            "vpc",
            "vpc1",
            "--type=merge",
            "-p",
            r#"{"spec":{"namespaces":["tenant-b"]}}"#,
        ],
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        "1.32",
        &kc,
        &["-n", "t1", "annotate", "pod", "open-1-32", "note=kept"],
        "",
    );
    assert!(ok, "an admitted pod became unwritable: {out}");
    server.stop().await;
}
