//! `scripts/image.sh` builds Ferry's OCI image from Debian's packages (mmdebstrap, umoci)
//! reproducibly, and podman runs it: `ferry --version`, the agent's OVS/OVN tools, and
//! `ferry up --no-dataplane` answering kubectl on the host network.
//!
//! The image carries the `ferry` binary this test was built with (the debug build, debug
//! info stripped by the script), so CI does not need a release build for it.
//!
//! podman runs with runc: crun refuses this machine's hybrid cgroup layout (v1
//! controllers plus an empty v2 hierarchy). The container's nofile/nproc limits are set
//! explicitly because podman's defaults (raised to the maximum) need CAP_SYS_RESOURCE,
//! which the CI container lacks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds the image of `binary` into `out` and returns its digest (the script's last line).
fn build(binary: &Path, out: &Path, tag: &str, load: bool) -> String {
    let mut cmd = Command::new(repo_root().join("scripts/image.sh"));
    cmd.arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .arg("--tag")
        .arg(tag);
    if !load {
        cmd.arg("--no-load");
    }
    let started = Instant::now();
    let o = run(&mut cmd);
    let digest = stdout(&o).lines().last().unwrap_or_default().to_owned();
    eprintln!(
        "image.sh --out {}: {digest} in {:.0} s; {}",
        out.display(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    assert!(digest.starts_with("sha256:"), "no digest: {o:?}");
    digest
}

/// The config and layer digests of the image in `out`'s OCI layout, to say which part
/// differs when two builds do.
fn parts(out: &Path, digest: &str) -> Vec<String> {
    let blob = |d: &str| -> serde_json::Value {
        let path = out
            .join("oci/blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(&path).expect("read blob")).expect("blob json")
    };
    let manifest = blob(digest);
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .map(|d| d["digest"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `podman run` with the flags this machine needs (see the module doc).
fn podman_run() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args([
        "--runtime",
        "runc",
        "run",
        "--network=host",
        "--ulimit",
        "nofile=8192:8192",
        "--ulimit",
        "nproc=8192:8192",
    ]);
    cmd
}

/// Removes the container and the image (by the names this test made) when dropped.
struct Cleanup {
    image: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "5", &self.container])
            .output();
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

#[test]
#[ignore = "needs root, mmdebstrap/umoci/skopeo/podman and the Debian mirror"]
fn image_builds_reproducibly_runs_ferry_and_serves_the_api() {
    let tag = format!("test-{}", std::process::id());
    let image = format!("localhost/ferry:{tag}");
    let cleanup = Cleanup {
        image: image.clone(),
        container: format!("ferry-image-test-{}", std::process::id()),
    };
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    // A copy: other builds in the same target directory may relink the test's binary.
    let bin_dir = tempfile::tempdir().expect("tempdir");
    let binary = bin_dir.path().join("ferry");
    std::fs::copy(env!("CARGO_BIN_EXE_ferry"), &binary).expect("copy the ferry binary");

    // Two builds from nothing (each runs mmdebstrap) give the same image.
    let first = build(&binary, a.path(), &tag, true);
    let second = build(&binary, b.path(), &tag, false);
    assert_eq!(
        parts(a.path(), &first),
        parts(b.path(), &second),
        "two builds of the same inputs differ (config, then layers)"
    );
    assert_eq!(first, second);

    // The binary inside is the one built here.
    let version = stdout(&run(podman_run().args(["--rm", &image, "--version"])));
    let ours = stdout(&run(Command::new(&binary).arg("--version")));
    assert_eq!(version, ours);

    // The agent's tools are there and run.
    for tool in [
        ["ovs-vsctl", "--version"],
        ["ovs-appctl", "--version"],
        ["ovn-nbctl", "--version"],
        ["ip", "-V"],
        ["ethtool", "--version"],
    ] {
        let out = run(podman_run().args(["--rm", "--entrypoint", tool[0], &image, tool[1]]));
        assert!(!stdout(&out).is_empty(), "{tool:?} printed nothing");
    }

    // `ferry up --no-dataplane` in the container serves the API on the host network.
    let data = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    run(podman_run().args([
        "-d",
        "--name",
        &cleanup.container,
        "-v",
        &format!("{}:/data", data.path().display()),
        &image,
        "up",
        "--data-dir",
        "/data",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--no-dataplane",
    ]));
    let kubeconfig = data.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthz = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "--raw", "/healthz"])
            .output()
            .expect("run kubectl");
        if out.status.success() {
            break stdout(&out);
        }
        if Instant::now() > deadline {
            let logs = Command::new("podman")
                .args(["logs", &cleanup.container])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("ferry up in the container never answered: {out:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(healthz, "ok");
    let version: serde_json::Value = serde_json::from_str(&stdout(&run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["version", "-o", "json"]))))
    .expect("kubectl version json");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.contains("ferry"), "server version {server:?}");
    drop(cleanup);
}
