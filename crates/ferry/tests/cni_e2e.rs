//! `ferry cni` end to end, run the way a container runtime runs a CNI plugin: the built
//! binary, a clean environment with the `CNI_*` variables, the network configuration on
//! stdin, against a private `ferry up` (API server, controllers, its own OVN/OVS). Pods are
//! created through the API, the controller annotates them, ADD plumbs them into real
//! namespaces, TCP flows between them through OVN, then CHECK, DEL (twice), CHECK after a
//! hand-removed veth, and a CNI_ARGS without the pod's name.

mod common;

use std::process::Output;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use common::{FerryUp, Netns, annotation, cni, http_get};
use ferry_agent::plumb::host_ifname;

/// One invocation; `args` is CNI_ARGS.
fn invoke(
    command: &str,
    container: &str,
    netns: Option<&Netns>,
    args: &str,
    conf: &Value,
) -> Result<Output> {
    let path = netns.map(Netns::path);
    let mut vars = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if let Some(p) = &path {
        vars.push(("CNI_NETNS", p.to_str().unwrap_or_default()));
    }
    cni(&vars, conf)
}

fn pod_args(name: &str, container: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container}"
    )
}

fn stdout_json(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "stdout is not JSON: {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a success with empty stdout (CHECK and DEL).
fn assert_quiet_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "{what} printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What the controller assigned: (address/prefix, MAC, gateway).
fn assignment(pod: &k8s_openapi::api::core::v1::Pod) -> (String, String, String) {
    let prefix = annotation(pod, "iaas.yusur.io/cidr")
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (
        format!("{}/{prefix}", annotation(pod, "iaas.yusur.io/ip_address")),
        annotation(pod, "iaas.yusur.io/mac_address"),
        annotation(pod, "iaas.yusur.io/gateway"),
    )
}

/// The ADD result and the interface in the namespace match the pod's assignment.
fn assert_plumbed(
    out: &Output,
    container: &str,
    ns: &Netns,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Result<()> {
    assert!(
        out.status.success(),
        "ADD {container}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (cidr, mac, gw) = assignment(pod);
    let result = stdout_json(out)?;
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    assert_eq!(
        result["interfaces"][0]["name"],
        host_ifname(container, "eth0"),
        "{result}"
    );
    assert_eq!(
        result["interfaces"][1],
        json!({"name": "eth0", "mac": mac, "sandbox": ns.path()}),
        "{result}"
    );
    assert_eq!(
        result["ips"],
        json!([{"address": cidr, "gateway": gw, "interface": 1}]),
        "{result}"
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": gw}]),
        "{result}"
    );
    let links: Value = serde_json::from_str(&ns.ip(&["-j", "addr", "show", "dev", "eth0"])?)?;
    let link = &links[0];
    assert_eq!(link["address"], mac.as_str(), "{link}");
    let (ip, prefix) = cidr.split_once('/').context("cidr")?;
    assert!(
        link["addr_info"].as_array().is_some_and(|a| a
            .iter()
            .any(|i| i["local"] == ip && i["prefixlen"].as_u64() == prefix.parse().ok())),
        "{cidr} not on eth0: {link}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn ferry_cni_as_a_container_runtime_runs_it() -> Result<()> {
    let pid = std::process::id();
    let up = FerryUp::start("fce")?;
    up.default_vpc(false)?;
    let conf = up.cni_conf();
    let ovs_ns = up.ovs_netns();

    let version = cni(&[("CNI_COMMAND", "VERSION")], &conf)?;
    assert!(version.status.success());
    let v = stdout_json(&version)?;
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0"))),
        "{v}"
    );

    // Pod a: created, annotated by the controller, then ADD.
    up.pod("cni-a", json!({"app": "cni"}), None, true)?;
    let pod_a = up.annotated_pod("cni-a")?;
    let ns_a = Netns::add(&format!("fce{pid}-a"))?;
    let cid_a = format!("fce{pid}containera");
    let add_a = invoke(
        "ADD",
        &cid_a,
        Some(&ns_a),
        &pod_args("cni-a", &cid_a),
        &conf,
    )?;
    assert_plumbed(&add_a, &cid_a, &ns_a, &pod_a)?;

    // Pod b: ADD right after the pod is created, as a kubelet would; the plugin waits for
    // the controller's annotations.
    up.pod("cni-b", json!({"app": "cni"}), None, false)?;
    let ns_b = Netns::add(&format!("fce{pid}-b"))?;
    let cid_b = format!("fce{pid}containerb");
    let add_b = invoke(
        "ADD",
        &cid_b,
        Some(&ns_b),
        &pod_args("cni-b", &cid_b),
        &conf,
    )?;
    let pod_b = up.annotated_pod("cni-b")?;
    assert_plumbed(&add_b, &cid_b, &ns_b, &pod_b)?;
    let (cidr_a, _, _) = assignment(&pod_a);
    let (cidr_b, _, _) = assignment(&pod_b);
    assert_ne!(cidr_a, cidr_b, "two pods, one address");

    // Real TCP from a to b through OVN.
    let ip_b = cidr_b.split('/').next().context("ip")?;
    let _server = ns_b.spawn(
        &["python3", "-m", "http.server", "8080", "--bind", ip_b],
        None,
    )?;
    let body = http_get(&ns_a, &format!("http://{ip_b}:8080/")).with_context(|| up.log_tail())?;
    assert!(body.contains("Directory listing"), "{body}");

    // CHECK passes on both.
    for (cid, ns, name) in [(&cid_a, &ns_a, "cni-a"), (&cid_b, &ns_b, "cni-b")] {
        let out = invoke("CHECK", cid, Some(ns), &pod_args(name, cid), &conf)?;
        assert_quiet_success(&out, &format!("CHECK {name}"));
    }

    // DEL a, twice: everything gone, the second a no-op success.
    for round in 1..=2 {
        let out = invoke(
            "DEL",
            &cid_a,
            Some(&ns_a),
            &pod_args("cni-a", &cid_a),
            &conf,
        )?;
        assert_quiet_success(&out, &format!("DEL cni-a #{round}"));
    }
    let host_a = host_ifname(&cid_a, "eth0");
    assert!(
        ns_a.ip(&["link", "show", "eth0"]).is_err(),
        "eth0 left in a"
    );
    assert!(
        common::tool("ip", &["-n", &ovs_ns, "link", "show", &host_a]).is_err(),
        "host end {host_a} left"
    );
    let ports = up.vsctl(&["list-ports", "br-int"])?;
    assert!(!ports.contains(&host_a), "OVS port left: {ports}");
    assert!(ports.contains(&host_ifname(&cid_b, "eth0")), "{ports}");

    // b's veth removed by hand: CHECK fails with a CNI error naming it.
    let host_b = host_ifname(&cid_b, "eth0");
    common::tool("ip", &["-n", &ovs_ns, "link", "del", &host_b])?;
    let out = invoke(
        "CHECK",
        &cid_b,
        Some(&ns_b),
        &pod_args("cni-b", &cid_b),
        &conf,
    )?;
    assert!(!out.status.success(), "CHECK passed without a veth");
    let err = stdout_json(&out)?;
    assert_eq!(err["cniVersion"], "1.0.0", "{err}");
    assert_eq!(err["code"], 101, "{err}");
    assert_eq!(
        err["msg"],
        format!("host end {host_b} does not exist"),
        "{err}"
    );
    assert_eq!(
        err["details"],
        format!("pod default/cni-b (container {cid_b})"),
        "{err}"
    );
    let out = invoke(
        "DEL",
        &cid_b,
        Some(&ns_b),
        &pod_args("cni-b", &cid_b),
        &conf,
    )?;
    assert_quiet_success(&out, "DEL cni-b after the veth was gone");
    let ports = up.vsctl(&["list-ports", "br-int"])?;
    assert!(!ports.contains(&host_b), "OVS port left: {ports}");

    // CNI_ARGS without the pod's name: a clear error, nothing plumbed.
    let ns_c = Netns::add(&format!("fce{pid}-c"))?;
    let cid_c = format!("fce{pid}containerc");
    let out = invoke(
        "ADD",
        &cid_c,
        Some(&ns_c),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default",
        &conf,
    )?;
    assert_eq!(out.status.code(), Some(1));
    let err = stdout_json(&out)?;
    assert_eq!(err["cniVersion"], "1.0.0", "{err}");
    assert_eq!(err["code"], 4, "{err}");
    assert_eq!(err["msg"], "CNI_ARGS has no K8S_POD_NAME", "{err}");
    assert!(
        err["details"].as_str().is_some_and(|d| d
            .contains("K8S_POD_NAMESPACE=NS;K8S_POD_NAME=NAME")
            && d.contains(&cid_c)),
        "{err}"
    );
    assert!(
        ns_c.ip(&["link", "show", "eth0"]).is_err(),
        "eth0 plumbed anyway"
    );
    assert!(
        common::tool(
            "ip",
            &["-n", &ovs_ns, "link", "show", &host_ifname(&cid_c, "eth0")]
        )
        .is_err(),
        "host end plumbed anyway"
    );
    Ok(())
}
