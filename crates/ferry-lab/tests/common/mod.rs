//! Lab-specific helpers of the integration tests: a two-subnet topology, a web server in
//! a host, curl until it answers. The lab directory torn down from its registry whatever
//! happens to the test, unique names and waiting come from `ferry-testkit`.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use ferry_lab::{Host, HostSpec};
use ferry_ovn_stack::OvnStack;
use ferry_testkit::eventually;
use ferry_testkit::netns::unique;

/// A namespace name unique to this test process.
pub fn ns(tag: &str, host: &str) -> String {
    unique(&format!("{tag}-{host}"))
}

/// A router `r1` with switches `s1` (10.251.1.0/24) and `s2` (10.251.2.0/24), ports `p1`
/// (10.251.1.10) and `p2` (10.251.2.10); returns the two host specs for those ports.
pub fn two_subnets(stack: &OvnStack, tag: &str) -> anyhow::Result<(HostSpec, HostSpec)> {
    let n = |args: &[&str]| stack.nbctl(args);
    n(&["lr-add", "r1"])?;
    for (sw, mac, cidr) in [
        ("s1", "0a:00:00:fb:01:01", "10.251.1.1/24"),
        ("s2", "0a:00:00:fb:02:01", "10.251.2.1/24"),
    ] {
        let lrp = format!("r1-{sw}");
        let lsp = format!("{sw}-r1");
        n(&["ls-add", sw])?;
        n(&["lrp-add", "r1", &lrp, mac, cidr])?;
        n(&["lsp-add", sw, &lsp])?;
        n(&["lsp-set-type", &lsp, "router"])?;
        n(&["lsp-set-addresses", &lsp, "router"])?;
        n(&["lsp-set-options", &lsp, &format!("router-port={lrp}")])?;
    }
    n(&["lsp-add", "s1", "p1"])?;
    n(&["lsp-set-addresses", "p1", "0a:00:00:fb:01:0a 10.251.1.10"])?;
    n(&["lsp-add", "s2", "p2"])?;
    n(&["lsp-set-addresses", "p2", "0a:00:00:fb:02:0a 10.251.2.10"])?;

    let mut a = HostSpec::new(
        &ns(tag, "a"),
        "0a:00:00:fb:01:0a",
        "10.251.1.10/24",
        "10.251.1.1".parse().ok(),
    );
    a.iface_id = "p1".into();
    a.port = format!("{tag}-a");
    let mut b = HostSpec::new(
        &ns(tag, "b"),
        "0a:00:00:fb:02:0a",
        "10.251.2.10/24",
        "10.251.2.1".parse().ok(),
    );
    b.iface_id = "p2".into();
    b.port = format!("{tag}-b");
    Ok((a, b))
}

/// Serves `DIR/www-NAME/index.html` containing `NAME` on port 8080 inside the host.
pub fn http_server(host: &Host, lab: &Path) -> anyhow::Result<ferry_lab::HostProcess> {
    let www = lab.join(format!("www-{}", host.name()));
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), format!("{}\n", host.name()))?;
    Ok(host.spawn(&["python3", "-m", "http.server", "8080"], Some(&www))?)
}

/// `curl` from `client` until it answers (the first connections may race flow setup).
pub fn curl_until_ok(client: &Host, url: &str, timeout: Duration) -> anyhow::Result<String> {
    eventually(&format!("curl {url}"), timeout, || {
        let out = client
            .exec(&["curl", "-s", "-m", "2", url])
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("curl {url}: {}", out.status))
        }
    })
}

/// Whether a PID is still a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    !ferry_ovn_stack::process::is_gone(pid)
}
