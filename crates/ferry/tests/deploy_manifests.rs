//! `deploy/` installed for real, following deploy/README.md step by step against a
//! `ferry apiserver` standing in for the cluster's API server: the TLS Secret made with
//! `kubectl create secret`, `kubectl apply -k` with kubectl 1.32 and then 1.27 (nothing
//! left to change), the stored objects checked, the DaemonSet's `install-cni` init
//! container and `cni` container commands run as a node runs them (the built binary, the
//! ConfigMap's environment, in-cluster credentials of the `ferry-agent` ServiceAccount), the
//! installed plugin reading the API with the kubeconfig it was given, the `agent`
//! container's command beside a kubelet's Node conditions, and `kubectl delete -k`. No
//! root, no OVN.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process stopped with SIGTERM (by PID) on drop, SIGKILL after 10 s.
struct Proc(Child);

impl Proc {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                return self.0.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A versioned kubectl (`kubectl.1.27`) installed beside the `kubectl` on PATH, or that
/// `kubectl` itself for `None`.
fn kubectl_bin(version: Option<&str>) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())
        .expect("kubectl on PATH");
    let Some(v) = version else { return kubectl };
    let bin = std::fs::canonicalize(&kubectl)
        .expect("resolving kubectl")
        .with_file_name(format!("kubectl.{v}"));
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// kubectl `args` with `kubeconfig`; panics with its output unless it succeeds.
fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let o = run(Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args));
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{}",
        bin.display(),
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn get_json(kubeconfig: &Path, args: &[&str]) -> Value {
    let out = kubectl(
        &kubectl_bin(None),
        kubeconfig,
        &[args, &["-o", "json"]].concat(),
    );
    serde_json::from_str(&out).expect("kubectl -o json")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Replaces the one occurrence of `from` in `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).expect("read");
    assert_eq!(s.matches(from).count(), 1, "{from:?} in {}", path.display());
    std::fs::write(path, s.replace(from, to)).expect("write");
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The user token and CA of a kubeconfig `ferry apiserver` wrote.
fn credentials(kubeconfig: &Path) -> (String, Vec<u8>) {
    let kc = get_json_file(kubeconfig);
    let token = kc["users"][0]["user"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let ca_b64 = kc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .expect("CA data");
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(ca_b64.as_bytes()).expect("write");
    }
    let ca = child.wait_with_output().expect("base64 -d").stdout;
    (token, ca)
}

/// A kubeconfig (YAML) as JSON, through `kubectl config view`.
fn get_json_file(kubeconfig: &Path) -> Value {
    let out = kubectl(
        &kubectl_bin(None),
        kubeconfig,
        &["config", "view", "--raw", "-o", "json"],
    );
    serde_json::from_str(&out).expect("config json")
}

#[test]
fn deploy_readme_steps_against_ferrys_api_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let k132 = kubectl_bin(None);
    let k127 = kubectl_bin(Some("1.27"));

    // The cluster's API server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(d.join("apiserver.log")).expect("log");
    let _server = Proc(
        Command::new(ferry)
            .args(["apiserver", "--data-dir"])
            .arg(d.join("api"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ferry apiserver"),
    );
    let admin = d.join("api/kubeconfig");
    eventually("the API server", || {
        let o = Command::new(&k132)
            .arg("--kubeconfig")
            .arg(&admin)
            .args(["get", "--raw", "/healthz"])
            .output()
            .ok()?;
        o.status.success().then_some(())
    });

    // Step 3 of the README: a copy of deploy/ with this cluster's settings.
    let deploy = d.join("deploy");
    copy_dir(&repo().join("deploy"), &deploy);
    edit(
        &deploy.join("kustomization.yaml"),
        "  newName: ferry\n  newTag: latest",
        "  newName: localhost/ferry\n  newTag: dev",
    );
    edit(
        &deploy.join("config.yaml"),
        r#"FERRY_OVN_NB: "ssl:ovn-nb-0.ovn:6641,ssl:ovn-nb-1.ovn:6641,ssl:ovn-nb-2.ovn:6641""#,
        r#"FERRY_OVN_NB: "ssl:192.0.2.10:6641""#,
    );

    // Step 4: the namespace and the OVN TLS Secret.
    let pki = d.join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    for f in ["ovn-privkey.pem", "ovn-cert.pem", "cacert.pem"] {
        std::fs::write(pki.join(f), format!("{f} contents\n")).expect("pem");
    }
    let from = |f: &str| format!("--from-file={f}={}", pki.join(f).display());
    kubectl(
        &k132,
        &admin,
        &[
            "apply",
            "-f",
            &deploy.join("namespace.yaml").display().to_string(),
        ],
    );
    kubectl(
        &k132,
        &admin,
        &[
            "-n",
            "ferry-system",
            "create",
            "secret",
            "generic",
            "ferry-ovn-tls",
            &from("ovn-privkey.pem"),
            &from("ovn-cert.pem"),
            &from("cacert.pem"),
        ],
    );

    // Step 5: kubectl apply -k, with kubectl 1.32 ...
    let deploy_arg = deploy.to_str().expect("utf-8 path");
    let applied = kubectl(&k132, &admin, &["apply", "-k", deploy_arg]);
    eprintln!("kubectl 1.32 apply -k:\n{applied}");
    let lines: Vec<&str> = applied.lines().collect();
    // (The embedded server bootstraps Ferry's ServiceAccounts and RBAC itself, so those
    // may be "configured" or "unchanged" rather than "created".)
    for want in [
        "namespace/ferry-system",
        "customresourcedefinition.apiextensions.k8s.io/yusurservices.iaas.yusur.io",
        "customresourcedefinition.apiextensions.k8s.io/networkprobes.iaas.yusur.io",
        "serviceaccount/ferry-agent",
        "serviceaccount/ferry-controller",
        "clusterrole.rbac.authorization.k8s.io/ferry-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/ferry-agent",
        "role.rbac.authorization.k8s.io/ferry-controller-leader",
        "configmap/ferry-config",
        "deployment.apps/ferry-controller",
        "daemonset.apps/ferry-agent",
    ] {
        assert!(
            ["created", "configured", "unchanged"]
                .iter()
                .any(|verb| lines.contains(&format!("{want} {verb}").as_str())),
            "no {want:?} in:\n{applied}"
        );
    }
    for want in [
        "configmap/ferry-config created",
        "deployment.apps/ferry-controller created",
        "daemonset.apps/ferry-agent created",
    ] {
        assert!(lines.contains(&want), "no {want:?} in:\n{applied}");
    }
    // ... and again with kubectl 1.27: nothing left to change.
    let again = kubectl(&k127, &admin, &["apply", "-k", deploy_arg]);
    eprintln!("kubectl 1.27 apply -k:\n{again}");
    assert_eq!(again.lines().count(), lines.len(), "{again}");
    for l in again.lines() {
        assert!(l.ends_with(" unchanged"), "1.27 changed {l:?}:\n{again}");
    }

    // What is stored is what the README promises.
    let ds = get_json(&admin, &["-n", "ferry-system", "get", "ds", "ferry-agent"]);
    let pod = &ds["spec"]["template"]["spec"];
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&pod["initContainers"]), ["install-cni"]);
    assert_eq!(names(&pod["containers"]), ["agent", "dns", "cni"]);
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], "localhost/ferry:dev", "{init}");
    assert_eq!(init["command"], serde_json::json!(["ferry", "cni-install"]));
    assert_eq!(
        pod["containers"][1]["command"],
        serde_json::json!(["ferry", "dns"])
    );
    assert_eq!(
        pod["containers"][2]["command"],
        serde_json::json!(["ferry", "cni-install", "--watch"])
    );
    let deploy_obj = get_json(
        &admin,
        &["-n", "ferry-system", "get", "deploy", "ferry-controller"],
    );
    let ctl = &deploy_obj["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ctl["envFrom"][0]["configMapRef"]["name"], "ferry-config");
    assert_eq!(
        deploy_obj["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "ferry-ovn-tls"
    );
    let cm = get_json(&admin, &["-n", "ferry-system", "get", "cm", "ferry-config"]);
    assert_eq!(cm["data"]["FERRY_OVN_NB"], "ssl:192.0.2.10:6641");
    let role = get_json(&admin, &["get", "clusterrole", "ferry-controller"]);
    let grants = |resource: &str, verb: &str| {
        role["rules"].as_array().into_iter().flatten().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|x| x == verb))
        })
    };
    for (resource, verb) in [
        ("networkprobes/status", "patch"),
        ("yusurservices/status", "patch"),
        ("endpointslices", "create"),
        ("pods", "patch"),
    ] {
        assert!(
            grants(resource, verb),
            "ferry-controller may not {verb} {resource}"
        );
    }

    // The DaemonSet's containers as a node runs them: the image's binary, the ConfigMap's
    // environment, in-cluster credentials of the ferry-agent ServiceAccount, host paths
    // under a temp dir.
    let sa = d.join("serviceaccount");
    std::fs::create_dir_all(&sa).expect("mkdir");
    let (token, ca) = credentials(&d.join("api/kubeconfig-agent"));
    std::fs::write(sa.join("token"), &token).expect("token");
    std::fs::write(sa.join("ca.crt"), &ca).expect("ca");
    let host = d.join("host");
    let env: BTreeMap<String, String> = cm["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .chain([
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("FERRY_SERVICEACCOUNT_DIR".into(), sa.display().to_string()),
            (
                "FERRY_CNI_BIN_DIR".into(),
                host.join("opt/cni/bin").display().to_string(),
            ),
            (
                "FERRY_CNI_CONF_DIR".into(),
                host.join("etc/cni/net.d").display().to_string(),
            ),
            (
                "FERRY_CNI_HOST_CONF_DIR".into(),
                host.join("etc/cni/net.d").display().to_string(),
            ),
            ("FERRY_CNI_REFRESH_S".into(), "1".into()),
        ])
        .collect();
    let container = |c: &Value| -> Command {
        let argv: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(c["args"].as_array().into_iter().flatten())
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(argv[0], "ferry", "{c}");
        let mut cmd = Command::new(ferry);
        cmd.args(&argv[1..]).env_clear().envs(&env);
        cmd
    };
    let out = run(&mut container(init));
    assert!(out.status.success(), "install-cni: {}", text(&out));
    let plugin = host.join("opt/cni/bin/ferry");
    let conflist: Value = serde_json::from_slice(
        &std::fs::read(host.join("etc/cni/net.d/10-ferry.conflist")).expect("conflist"),
    )
    .expect("conflist json");
    let cni_kubeconfig = host.join("etc/cni/net.d/ferry-kubeconfig");
    assert_eq!(
        conflist["plugins"][0]["kubeconfig"],
        cni_kubeconfig.display().to_string()
    );
    assert_eq!(
        conflist["plugins"][0]["dns"],
        serde_json::json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local", "cluster.local"]})
    );
    assert_eq!(
        std::fs::metadata(&plugin).expect("plugin").len(),
        std::fs::metadata(ferry).expect("ferry").len()
    );
    // The kubeconfig is the agent's own identity, and it works.
    let listed = kubectl(&k132, &cni_kubeconfig, &["get", "pods", "-A", "-o", "name"]);
    assert!(listed.is_empty(), "{listed}");
    assert_eq!(
        get_json_file(&cni_kubeconfig)["users"][0]["user"]["token"],
        token
    );

    // The installed plugin, run as a runtime runs it (no arguments), reads the pod through
    // that kubeconfig: a pod that does not exist is a clear CNI error.
    let mut conf = conflist["plugins"][0].clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let mut child = Command::new(&plugin)
        .env_clear()
        .envs([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "deploytest"),
            ("CNI_NETNS", "/var/run/netns/deploytest-none"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nobody",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the installed plugin");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(conf.to_string().as_bytes())
            .expect("write conf");
    }
    let out = child.wait_with_output().expect("plugin output");
    let err: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("plugin printed no JSON: {}", text(&out)));
    assert_eq!(err["msg"], "pod default/nobody does not exist", "{err}");

    // The `cni` container: refreshes the kubeconfig when the token rotates, removes the
    // three files on SIGTERM.
    let mut watch = Proc(
        container(&pod["containers"][2])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cni container"),
    );
    std::fs::write(sa.join("token"), "rotated-token").expect("rotate");
    eventually("the rotated token in the CNI kubeconfig", || {
        (get_json_file(&cni_kubeconfig)["users"][0]["user"]["token"] == "rotated-token")
            .then_some(())
    });
    let status = watch.terminate();
    assert!(status.success(), "cni container exited {status}");
    for p in [
        plugin.clone(),
        cni_kubeconfig.clone(),
        host.join("etc/cni/net.d/10-ferry.conflist"),
    ] {
        assert!(!p.exists(), "{} left after SIGTERM", p.display());
    }

    // The `agent` container's command on a node the kubelet registered: the agent adds its
    // own FerryAgentReady condition beside the kubelet's (never replacing them) and renews
    // its Lease, with the ferry-agent ServiceAccount's identity. (Its metrics port is
    // moved to a free loopback port; there is no OVS here, and the Node carries no address
    // annotations, so it plumbs nothing.)
    let node = format!("deploy-test-{}", std::process::id());
    let node_file = d.join("node.json");
    std::fs::write(
        &node_file,
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
            .to_string(),
    )
    .expect("node manifest");
    kubectl(
        &k132,
        &admin,
        &["create", "-f", &node_file.display().to_string()],
    );
    let kubelet = serde_json::json!({"status": {"conditions": [
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
        {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    kubectl(
        &k132,
        &admin,
        &[
            "patch",
            "node",
            &node,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &kubelet.to_string(),
        ],
    );
    let agent_c = &pod["containers"][0];
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut agent_cmd = Command::new(ferry);
    for a in agent_c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .chain(agent_c["args"].as_array().into_iter().flatten())
    {
        let a = a.as_str().unwrap_or_default();
        let a = a.replace("$(NODE_NAME)", &node);
        let a = match a.strip_prefix("--metrics-listen=") {
            Some(_) => format!("--metrics-listen={metrics}"),
            None => a,
        };
        agent_cmd.arg(a);
    }
    let mut agent = Proc(
        agent_cmd
            .env_clear()
            .envs(&env)
            .env("KUBECONFIG", d.join("api/kubeconfig-agent"))
            .args(["--state-dir", &d.join("agent-state").display().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("agent.log")).expect("log"))
            .spawn()
            .expect("the agent container's command"),
    );
    let conditions = eventually("the agent's FerryAgentReady condition", || {
        let n = get_json(&admin, &["get", "node", &node]);
        let cs = n["status"]["conditions"].as_array()?.clone();
        cs.iter()
            .any(|c| c["type"] == "FerryAgentReady" && c["status"] == "True")
            .then_some(cs)
    });
    let kinds: Vec<(&str, &str, &str)> = conditions
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("Ready", "True", "KubeletReady"),
            ("FerryAgentReady", "True", "FerryAgentReady"),
        ],
        "the kubelet's conditions must stay as they were"
    );
    let lease = eventually("the agent's Lease", || {
        let o = Command::new(&k132)
            .arg("--kubeconfig")
            .arg(&admin)
            .args([
                "-n",
                ferry_api::AGENT_LEASE_NAMESPACE,
                "get",
                "lease",
                &ferry_api::agent_lease_name(&node),
                "-o",
                "json",
            ])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&o.stdout).ok())?
    });
    assert_eq!(lease["spec"]["holderIdentity"], node.as_str(), "{lease}");
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exited {status}: {}",
        std::fs::read_to_string(d.join("agent.log")).unwrap_or_default()
    );

    // Step 7: uninstall.
    // (--ignore-not-found: Ferry's API server removes a namespace's objects with it at
    // once, where kube-apiserver's namespace controller leaves them to the later deletes.)
    let deleted = kubectl(
        &k127,
        &admin,
        &["delete", "-k", deploy_arg, "--ignore-not-found"],
    );
    assert!(
        deleted.contains("namespace \"ferry-system\" deleted")
            && deleted.contains("clusterrole.rbac.authorization.k8s.io \"ferry-agent\" deleted"),
        "{deleted}"
    );
    let left = kubectl(
        &k132,
        &admin,
        &[
            "get",
            "ds,deploy,cm",
            "-n",
            "ferry-system",
            "-o",
            "name",
            "--ignore-not-found",
        ],
    );
    assert!(
        !left.contains("ferry-agent") && !left.contains("ferry-controller"),
        "{left}"
    );
}

/// `path` relative to `base` (both absolute): kustomize refuses absolute resource paths.
fn relative(path: &Path, base: &Path) -> PathBuf {
    let (p, b) = (
        std::fs::canonicalize(path).expect("canonical path"),
        std::fs::canonicalize(base).expect("canonical base"),
    );
    let common = p
        .components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = PathBuf::new();
    for _ in b.components().skip(common) {
        out.push("..");
    }
    out.extend(p.components().skip(common));
    out
}

/// The `deploy/dpu` Component (docs/dpu.md) in a kustomization of one's own beside
/// `deploy/`, as deploy/README.md says: the DPU host role bound to the nodes, and the
/// agents' mode `dpu-host` in `ferry-config`; everything of `deploy/` is still there.
#[test]
fn dpu_component_renders_with_deploy() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let rel = |p: &str| relative(&repo().join(p), dir.path()).display().to_string();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}]\n",
            rel("deploy"),
            rel("deploy/dpu")
        ),
    )
    .expect("write kustomization");
    let o = run(Command::new(kubectl_bin(None))
        .arg("kustomize")
        .arg(dir.path()));
    assert!(o.status.success(), "kubectl kustomize:\n{}", text(&o));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&o.stdout)).expect("rendered YAML");
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
    };
    let role = find("ClusterRole", "ferry-dpu-host");
    assert!(
        role["rules"][0]["verbs"]
            .as_array()
            .is_some_and(|v| v.contains(&Value::from("patch"))),
        "{role}"
    );
    let binding = find("ClusterRoleBinding", "ferry-dpu-host");
    assert_eq!(binding["subjects"][0]["name"], "system:nodes", "{binding}");
    let config = find("ConfigMap", "ferry-config");
    assert_eq!(config["data"]["FERRY_AGENT_MODE"], "dpu-host", "{config}");
    find("DaemonSet", "ferry-agent");
    find("ClusterRole", "ferry-agent");
}
