//! `kubectl` against a Ferry API server, for tests that run the `ferry` binary (`ferry up`)
//! and talk to it as a user would: wait until a resource is served, apply a manifest, and
//! the default VPC with its subnet (`ovn-cluster`, `ovn-default` 10.16.0.0/16), the
//! smallest network that makes the controller write a logical switch.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::wait::eventually;

/// The default VPC and its default subnet, as one `kubectl apply` manifest (JSON).
pub const DEFAULT_SUBNET: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": "ovn-cluster"}, "spec": {}},
  {"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": "ovn-default"},
   "spec": {"vpc": "ovn-cluster", "cidrBlock": "10.16.0.0/16", "default": true}}]}"#;

/// The logical switch [`DEFAULT_SUBNET`] becomes.
pub const DEFAULT_SWITCH: &str = "ovn-default";

/// Waits (up to 90 s) until `kubectl get RESOURCE` succeeds: the server is up and serves it
/// (a CRD is established).
pub fn wait_served(kubeconfig: &Path, resource: &str) -> Result<()> {
    eventually(
        &format!("{resource} served"),
        Duration::from_secs(90),
        || {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", resource])
                .output()
                .context("run kubectl")?;
            if out.status.success() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        },
    )
}

/// `kubectl apply -f -` with `manifest` on stdin.
pub fn apply(kubeconfig: &Path, manifest: &str) -> Result<()> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("run kubectl apply")?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(manifest.as_bytes())
        .context("write the manifest to kubectl")?;
    let status = child.wait().context("wait for kubectl apply")?;
    if !status.success() {
        bail!("kubectl apply failed ({status})");
    }
    Ok(())
}

/// Waits until Ferry's CRDs are served, then applies [`DEFAULT_SUBNET`].
pub fn create_default_subnet(kubeconfig: &Path) -> Result<()> {
    wait_served(kubeconfig, "subnets.iaas.yusur.io")?;
    apply(kubeconfig, DEFAULT_SUBNET)
}
