//! Table cases for the CNI protocol: environment, configuration, results, errors and the
//! dispatcher, each comparing whole values.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::plumb::{PlumbRequest, host_ifname};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ADD_ENV: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/pod1"),
    ("CNI_IFNAME", "eth0"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee",
    ),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
];

fn with(over: &[(&'static str, Option<&'static str>)]) -> Vec<(String, String)> {
    let mut v: Vec<(&str, &str)> = ADD_ENV.to_vec();
    for (k, val) in over {
        v.retain(|(kk, _)| kk != k);
        if let Some(val) = val {
            v.push((k, val));
        }
    }
    vars(&v)
}

#[test]
fn env_table() {
    let full = CniEnv {
        command: CniCommand::Add,
        container_id: "c0ffee".into(),
        netns: Some(PathBuf::from("/var/run/netns/pod1")),
        ifname: "eth0".into(),
        args: CniArgs {
            k8s_pod_namespace: Some("default".into()),
            k8s_pod_name: Some("web-0".into()),
            k8s_pod_infra_container_id: Some("c0ffee".into()),
            k8s_pod_uid: None,
            pairs: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), "web-0".into()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), "c0ffee".into()),
            ],
        },
        path: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
    };
    let del_no_netns = CniEnv {
        command: CniCommand::Del,
        netns: None,
        ..full.clone()
    };
    type Case = (
        &'static str,
        Vec<(String, String)>,
        Result<Invocation, (u32, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "full ADD",
            with(&[]),
            Ok(Invocation::Op(Box::new(full.clone()))),
        ),
        (
            "CHECK",
            with(&[("CNI_COMMAND", Some("CHECK"))]),
            Ok(Invocation::Op(Box::new(CniEnv {
                command: CniCommand::Check,
                ..full.clone()
            }))),
        ),
        (
            "DEL without netns is allowed",
            with(&[("CNI_COMMAND", Some("DEL")), ("CNI_NETNS", None)]),
            Ok(Invocation::Op(Box::new(del_no_netns.clone()))),
        ),
        (
            "DEL with empty netns is allowed",
            with(&[("CNI_COMMAND", Some("DEL")), ("CNI_NETNS", Some(""))]),
            Ok(Invocation::Op(Box::new(del_no_netns))),
        ),
        (
            "VERSION needs nothing else",
            vars(&[("CNI_COMMAND", "VERSION")]),
            Ok(Invocation::Version),
        ),
        (
            "ADD without netns",
            with(&[("CNI_NETNS", None)]),
            Err((4, "CNI_NETNS is not set")),
        ),
        (
            "no command",
            with(&[("CNI_COMMAND", None)]),
            Err((4, "CNI_COMMAND is not set")),
        ),
        (
            "GC is a later spec",
            with(&[("CNI_COMMAND", Some("GC"))]),
            Err((4, "CNI_COMMAND=\"GC\" is not supported")),
        ),
        (
            "no container id",
            with(&[("CNI_CONTAINERID", None)]),
            Err((4, "CNI_CONTAINERID is not set")),
        ),
        (
            "no ifname",
            with(&[("CNI_IFNAME", None)]),
            Err((4, "CNI_IFNAME is not set")),
        ),
        (
            "ifname too long",
            with(&[("CNI_IFNAME", Some("a-very-long-ifname"))]),
            Err((
                4,
                "CNI_IFNAME=\"a-very-long-ifname\" is not a valid interface name",
            )),
        ),
        (
            "ifname with slash",
            with(&[("CNI_IFNAME", Some("eth/0"))]),
            Err((4, "CNI_IFNAME=\"eth/0\" is not a valid interface name")),
        ),
        (
            "bad CNI_ARGS pair",
            with(&[("CNI_ARGS", Some("K8S_POD_NAME"))]),
            Err((4, "CNI_ARGS: \"K8S_POD_NAME\" is not KEY=VALUE")),
        ),
    ];
    for (name, input, want) in cases {
        let got = parse_env(input).map_err(|e| (e.code, e.msg));
        let want = want.map_err(|(c, m)| (c, m.to_string()));
        assert_eq!(got, want, "case {name}");
    }
}

#[test]
fn empty_cni_args_and_path() {
    let got = parse_env(with(&[("CNI_ARGS", None), ("CNI_PATH", None)]));
    let Ok(Invocation::Op(env)) = got else {
        panic!("{got:?}")
    };
    assert_eq!(env.args, CniArgs::default());
    assert!(env.path.is_empty());
}

#[test]
fn conf_table() {
    let base = json!({"cniVersion": "1.0.0", "name": "ferry", "type": "ferry"});
    let merged = |extra: Value| {
        let mut v = base.clone();
        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        v.to_string()
    };
    let defaults = NetConf {
        cni_version: "1.0.0".into(),
        name: "ferry".into(),
        plugin_type: "ferry".into(),
        ovs_db_sock: PathBuf::from(DEFAULT_OVS_DB_SOCK),
        bridge: DEFAULT_BRIDGE.into(),
        kubeconfig: None,
        ovs_port_type: String::new(),
        ovs_netns: None,
        prev_result: None,
        sandbox_dir: PathBuf::from("/run/ferry/sandboxes"),
        dns: None,
        mode: crate::dpu::AgentMode::Full,
    };
    type Case = (&'static str, String, Result<NetConf, (u32, &'static str)>);
    let cases: Vec<Case> = vec![
        ("defaults", base.to_string(), Ok(defaults.clone())),
        (
            "all Ferry fields",
            merged(json!({"ovsDbSock": "/run/ovs/db.sock", "bridge": "br-x",
                "kubeconfig": "/etc/ferry/kubeconfig", "ovsPortType": "afxdp",
                "ovsNetns": "/var/run/netns/lab-ovs", "sandboxDir": "/tmp/sb",
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"], "options": ["ndots:5"]},
                "capabilities": {"portMappings": true}})),
            Ok(NetConf {
                dns: Some(crate::cni::result::Dns {
                    nameservers: vec!["10.96.0.10".parse().expect("ip")],
                    search: vec!["svc.cluster.local".into()],
                    options: vec!["ndots:5".into()],
                    domain: None,
                }),
                sandbox_dir: "/tmp/sb".into(),
                ovs_db_sock: "/run/ovs/db.sock".into(),
                ovs_netns: Some("/var/run/netns/lab-ovs".into()),
                bridge: "br-x".into(),
                kubeconfig: Some("/etc/ferry/kubeconfig".into()),
                ovs_port_type: "afxdp".into(),
                ..defaults.clone()
            }),
        ),
        (
            "dpu-host mode",
            merged(json!({"mode": "dpu-host"})),
            Ok(NetConf {
                mode: crate::dpu::AgentMode::DpuHost,
                ..defaults.clone()
            }),
        ),
        (
            "0.4.0 accepted",
            merged(json!({"cniVersion": "0.4.0"})),
            Ok(NetConf {
                cni_version: "0.4.0".into(),
                ..defaults.clone()
            }),
        ),
        (
            "unknown version",
            merged(json!({"cniVersion": "2.0.0"})),
            Err((1, "cniVersion \"2.0.0\" is not supported")),
        ),
        (
            "not JSON",
            "cniVersion: 1.0.0".into(),
            Err((
                6,
                "network configuration on stdin is not valid JSON for Ferry",
            )),
        ),
        (
            "missing name",
            json!({"cniVersion": "1.0.0", "type": "ferry"}).to_string(),
            Err((
                6,
                "network configuration on stdin is not valid JSON for Ferry",
            )),
        ),
        (
            "empty name",
            merged(json!({"name": ""})),
            Err((7, "network configuration field \"name\" is invalid")),
        ),
        (
            "relative ovsDbSock",
            merged(json!({"ovsDbSock": "db.sock"})),
            Err((7, "network configuration field \"ovsDbSock\" is invalid")),
        ),
        (
            "bad bridge",
            merged(json!({"bridge": "br int"})),
            Err((7, "network configuration field \"bridge\" is invalid")),
        ),
        (
            "unknown port type",
            merged(json!({"ovsPortType": "dpdk"})),
            Err((2, "ovsPortType \"dpdk\" is not supported")),
        ),
    ];
    for (name, input, want) in cases {
        let got = parse_conf(input.as_bytes()).map_err(|e| (e.code, e.msg));
        let want = want.map_err(|(c, m)| (c, m.to_string()));
        assert_eq!(got, want, "case {name}");
    }
}

fn env() -> CniEnv {
    match parse_env(with(&[])) {
        Ok(Invocation::Op(env)) => *env,
        other => panic!("{other:?}"),
    }
}

fn conf() -> NetConf {
    parse_conf(br#"{"cniVersion":"1.0.0","name":"ferry","type":"ferry","ovsDbSock":"/t/db.sock"}"#)
        .expect("conf")
}

fn pod() -> PodNetwork {
    PodNetwork {
        ip: "10.0.1.10/24".parse().expect("ip"),
        mac: "0a:00:00:01:01:0a".parse().expect("mac"),
        gateway: "10.0.1.1".parse().expect("gw"),
        iface_id: "web-0.default".into(),
    }
}

#[test]
fn plumb_request_from_assignment() {
    let want = PlumbRequest {
        netns_path: "/var/run/netns/pod1".into(),
        ifname: "eth0".into(),
        host_ifname: host_ifname("c0ffee", "eth0"),
        mac: pod().mac,
        ip_cidr: pod().ip,
        gateway: pod().gateway,
        default_route: true,
        routes: vec![],
        iface_id: "web-0.default".into(),
        bridge: "br-int".into(),
        ovs_db: "/t/db.sock".into(),
        ovs_netns: None,
        port_type: String::new(),
    };
    assert_eq!(
        plumb_request(&env(), &conf(), &pod()).map_err(|e| e.msg),
        Ok(want)
    );

    type Case = (&'static str, PodNetwork, &'static str);
    let cases: Vec<Case> = vec![
        (
            "gateway outside subnet",
            PodNetwork {
                gateway: "10.0.2.1".parse().expect("gw"),
                ..pod()
            },
            "gateway 10.0.2.1 is outside the pod's subnet 10.0.1.0/24",
        ),
        (
            "multicast MAC",
            PodNetwork {
                mac: "01:00:5e:00:00:01".parse().expect("mac"),
                ..pod()
            },
            "assigned MAC 01:00:5e:00:00:01 is not a unicast address",
        ),
        (
            "address is the gateway",
            PodNetwork {
                ip: "10.0.1.1/24".parse().expect("ip"),
                ..pod()
            },
            "address 10.0.1.1/24 is the gateway itself",
        ),
        (
            "mixed families",
            PodNetwork {
                gateway: "fd00::1".parse().expect("gw"),
                ..pod()
            },
            "gateway fd00::1 and address 10.0.1.10/24 are of different IP families",
        ),
        (
            "no iface-id",
            PodNetwork {
                iface_id: String::new(),
                ..pod()
            },
            "the logical switch port name (iface-id) is empty",
        ),
    ];
    for (name, p, want) in cases {
        let err = plumb_request(&env(), &conf(), &p).expect_err(name);
        assert_eq!((err.code, err.msg.as_str()), (102, want), "case {name}");
        assert_eq!(
            err.details, "pod default/web-0 (container c0ffee)",
            "case {name}"
        );
    }
}

#[test]
fn add_result_json() {
    let req = plumb_request(&env(), &conf(), &pod()).expect("req");
    let host_mac = "ae:12:34:56:78:9a".parse().ok();
    let got: Value =
        serde_json::from_str(&add_result("1.0.0", &req, host_mac).to_json()).expect("json");
    let want = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": host_ifname("c0ffee", "eth0"), "mac": "ae:12:34:56:78:9a"},
            {"name": "eth0", "mac": "0a:00:00:01:01:0a", "sandbox": "/var/run/netns/pod1"}
        ],
        "ips": [{"address": "10.0.1.10/24", "gateway": "10.0.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.1.1"}]
    });
    assert_eq!(got, want);

    // 0.4.0 results carry ips[].version; no host MAC known -> container is index 0.
    let got: Value =
        serde_json::from_str(&add_result("0.4.0", &req, None).to_json()).expect("json");
    assert_eq!(
        got["ips"],
        json!([{"version": "4", "address": "10.0.1.10/24", "gateway": "10.0.1.1", "interface": 0}])
    );
    assert_eq!(got["cniVersion"], "0.4.0");

    // A result round-trips as prevResult.
    let r = add_result("1.0.0", &req, host_mac);
    let v: Value = serde_json::from_str(&r.to_json()).expect("json");
    assert_eq!(
        CniResult::from_prev(Some(&v)).map_err(|e| e.msg),
        Ok(Some(r))
    );
    assert_eq!(
        CniResult::from_prev(Some(&json!({"ips": 3}))).map_err(|e| e.code),
        Err(6)
    );
}

#[test]
fn error_and_version_json() {
    let e = CniError::new(ErrorCode::UnknownContainer, "netns gone", "pod a/b");
    let got: Value = serde_json::from_str(&e.to_json()).expect("json");
    assert_eq!(
        got,
        json!({"cniVersion": "1.0.0", "code": 3, "msg": "netns gone", "details": "pod a/b"})
    );
    let got: Value = serde_json::from_str(&CniError::new(ErrorCode::IoFailure, "x", "").to_json())
        .expect("json");
    assert_eq!(got, json!({"cniVersion": "1.0.0", "code": 5, "msg": "x"}));
    assert_eq!(
        serde_json::to_value(version_info()).expect("json"),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    );
}

/// A plugin that records calls and answers from a script.
#[derive(Default)]
struct Recorder {
    calls: Vec<(CniCommand, String)>,
    fail: Option<CniError>,
}

impl CniPlugin for Recorder {
    fn add(&mut self, env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
        self.calls.push((env.command, conf.name.clone()));
        if let Some(e) = self.fail.clone() {
            return Err(e);
        }
        let req = plumb_request(env, conf, &pod())?;
        Ok(add_result(CNI_VERSION, &req, None))
    }
    fn del(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        self.calls.push((env.command, conf.name.clone()));
        self.fail.clone().map_or(Ok(()), Err)
    }
    fn check(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        self.calls.push((env.command, conf.name.clone()));
        self.fail.clone().map_or(Ok(()), Err)
    }
}

#[test]
fn dispatch_table() {
    let conf10 = br#"{"cniVersion":"1.0.0","name":"ferry","type":"ferry"}"#.as_slice();
    let conf040 = br#"{"cniVersion":"0.4.0","name":"ferry","type":"ferry"}"#.as_slice();
    let conf031 = br#"{"cniVersion":"0.3.1","name":"ferry","type":"ferry"}"#.as_slice();
    struct Case {
        name: &'static str,
        env: Vec<(String, String)>,
        stdin: &'static [u8],
        fail: Option<CniError>,
        want_code: i32,
        want_stdout: Value,
        want_calls: usize,
    }
    let cases = vec![
        Case {
            name: "VERSION",
            env: vars(&[("CNI_COMMAND", "VERSION")]),
            stdin: conf10,
            fail: None,
            want_code: 0,
            want_stdout: serde_json::to_value(version_info()).expect("json"),
            want_calls: 0,
        },
        Case {
            name: "ADD in 0.4.0 answers in 0.4.0",
            env: with(&[]),
            stdin: conf040,
            fail: None,
            want_code: 0,
            want_stdout: json!({
                "cniVersion": "0.4.0",
                "interfaces": [{"name": "eth0", "mac": "0a:00:00:01:01:0a", "sandbox": "/var/run/netns/pod1"}],
                "ips": [{"version": "4", "address": "10.0.1.10/24", "gateway": "10.0.1.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.1.1"}]
            }),
            want_calls: 1,
        },
        Case {
            name: "DEL prints nothing",
            env: with(&[("CNI_COMMAND", Some("DEL"))]),
            stdin: conf10,
            fail: None,
            want_code: 0,
            want_stdout: Value::Null,
            want_calls: 1,
        },
        Case {
            name: "CHECK failure is a CNI error in the request's version",
            env: with(&[("CNI_COMMAND", Some("CHECK"))]),
            stdin: conf040,
            fail: Some(CniError::new(
                ErrorCode::CheckFailed,
                "host end fy1 does not exist",
                "",
            )),
            want_code: 1,
            want_stdout: json!({"cniVersion": "0.4.0", "code": 101, "msg": "host end fy1 does not exist"}),
            want_calls: 1,
        },
        Case {
            name: "CHECK is not in 0.3.1",
            env: with(&[("CNI_COMMAND", Some("CHECK"))]),
            stdin: conf031,
            fail: None,
            want_code: 1,
            want_stdout: json!({"cniVersion": "0.3.1", "code": 1,
                "msg": "CHECK is not defined for cniVersion 0.3.1",
                "details": "CHECK exists since cniVersion 0.4.0"}),
            want_calls: 0,
        },
        Case {
            name: "bad env is reported before the plugin runs",
            env: with(&[("CNI_IFNAME", None)]),
            stdin: conf040,
            fail: None,
            want_code: 1,
            want_stdout: json!({"cniVersion": "0.4.0", "code": 4, "msg": "CNI_IFNAME is not set",
                "details": "the container runtime must set CNI_IFNAME (CNI spec 1.0.0, Parameters)"}),
            want_calls: 0,
        },
        Case {
            name: "garbage stdin",
            env: with(&[]),
            stdin: b"not json",
            fail: None,
            want_code: 1,
            want_stdout: json!({"cniVersion": "1.0.0", "code": 6,
                "msg": "network configuration on stdin is not valid JSON for Ferry",
                "details": "expected ident at line 1 column 2"}),
            want_calls: 0,
        },
    ];
    for c in cases {
        let mut p = Recorder {
            fail: c.fail,
            ..Recorder::default()
        };
        let reply = dispatch(c.env, c.stdin, &mut p);
        assert_eq!(reply.exit_code, c.want_code, "case {}", c.name);
        let got: Value = if reply.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&reply.stdout).expect("stdout is JSON")
        };
        assert_eq!(got, c.want_stdout, "case {}", c.name);
        assert_eq!(p.calls.len(), c.want_calls, "case {}", c.name);
    }
}
