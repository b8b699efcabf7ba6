use super::*;

#[test]
fn finds_the_cgroup2_mount() {
    let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
        26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw\n\
        27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
    let pure = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let cases = [
        ("hybrid v1/v2", hybrid, Some("/sys/fs/cgroup/unified")),
        ("v2 only", pure, Some("/sys/fs/cgroup")),
        (
            "v1 only",
            "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            None,
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(cgroup2_mount(input), want.map(PathBuf::from), "{name}");
    }
}

#[test]
fn reads_usage_from_cpu_stat() {
    let cases = [
        (
            "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
            Some(1234),
        ),
        ("user_usec 1\n", None),
        ("usage_usec x\n", None),
    ];
    for (input, want) in cases {
        assert_eq!(parse_usage_usec(input), want, "{input:?}");
    }
}

#[test]
fn each_process_goes_to_its_side() {
    // ferry up (10) runs the pods (11 -> 12) and started the DPU agents (20, 21; node1's
    // runs a lab host, 22 -> 23) and the daemons (30.. node1's chassis, 40.. node2's, 50
    // the central NB, 51 the witness), one of which (31) has a child (32).
    let parents: BTreeMap<i32, i32> = [
        (10, 1),
        (11, 10),
        (12, 11),
        (20, 10),
        (21, 10),
        (22, 20),
        (23, 22),
        (30, 10),
        (31, 10),
        (32, 31),
        (40, 10),
        (50, 10),
        (51, 10),
        (99, 1),
    ]
    .into_iter()
    .collect();
    let p = Processes {
        host_root: 10,
        parents,
        switching: [
            ("node1".to_string(), vec![30, 31]),
            ("node2".to_string(), vec![40]),
        ]
        .into_iter()
        .collect(),
        dpu_agents: [("node1".to_string(), 20), ("node2".to_string(), 21)]
            .into_iter()
            .collect(),
        infra: vec![50, 51],
    };
    let m = |v: &[(i32, &str)]| -> BTreeMap<i32, String> {
        v.iter().map(|(p, n)| (*p, n.to_string())).collect()
    };
    let dpu = m(&[
        (10, "host"),
        (11, "host"),
        (12, "host"),
        (20, "node1-dpu"),
        (21, "node2-dpu"),
        (22, "lab-hosts"),
        (23, "lab-hosts"),
        (30, "node1-dpu"),
        (31, "node1-dpu"),
        (40, "node2-dpu"),
        (50, "infra"),
        (51, "infra"),
    ]);
    assert_eq!(assign(&p, true), dpu);
    // Full mode: no DPU agents, the switching stays on the host side (NODE-ovs).
    let full = Processes {
        dpu_agents: BTreeMap::new(),
        ..p.clone()
    };
    let want = m(&[
        (10, "host"),
        (11, "host"),
        (12, "host"),
        (20, "host"),
        (21, "host"),
        (22, "host"),
        (23, "host"),
        (30, "node1-ovs"),
        (31, "node1-ovs"),
        (40, "node2-ovs"),
        (50, "infra"),
        (51, "infra"),
    ]);
    assert_eq!(assign(&full, false), want);
}

#[test]
fn cpu_figure_per_side() {
    let before: BTreeMap<String, u64> = [
        ("host", 1_000_000),
        ("infra", 0),
        ("node1-dpu", 2_000_000),
        ("node2-dpu", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let after: BTreeMap<String, u64> = [
        ("host", 1_500_000),
        ("infra", 100_000),
        ("node1-dpu", 4_000_000),
        ("node2-dpu", 1_250_000),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let per = figure(&before, &after);
    let want: BTreeMap<String, f64> = [
        ("host", 0.5),
        ("infra", 0.1),
        ("node1-dpu", 2.0),
        ("node2-dpu", 1.25),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(per, want);
    assert_eq!(sides(&per), (0.5, 0.0, 3.25));
    let full: BTreeMap<String, f64> = [("host", 0.5), ("node1-ovs", 2.0), ("node2-ovs", 1.0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(sides(&full), (0.5, 3.0, 0.0));
}

#[test]
fn dpu_agent_command_line() {
    let spec = DpuSpec {
        ferry: "/bin/ferry".into(),
        data_dir: "/lab/ferry".into(),
        service_cidr: "10.96.0.0/16".into(),
        cluster_dns: "10.96.0.53".into(),
        nodes: vec![],
    };
    let n = DpuNode {
        node: "node1".into(),
        kubeconfig: "/lab/ferry/kubeconfig-node-node1".into(),
        ovs_db: "/lab/ferry/ovn/chassis-node1/run/db.sock".into(),
        ovs_netns: "ferry-node1-ovs".into(),
        external_ip: Some("198.18.0.11".parse().expect("ip")),
    };
    assert_eq!(
        dpu_agent_args(&spec, &n),
        [
            "agent",
            "--mode=dpu",
            "--lab",
            "--hw-offload",
            "--node=node1",
            "--kubeconfig=/lab/ferry/kubeconfig-node-node1",
            "--ovs-db=/lab/ferry/ovn/chassis-node1/run/db.sock",
            "--ovs-netns=ferry-node1-ovs",
            "--state-dir=/lab/ferry/agent-dpu",
            "--service-cidr=10.96.0.0/16",
            "--cluster-dns=10.96.0.53",
            "--external-ip=198.18.0.11",
        ]
    );
}

#[test]
fn lab_cgroups_are_named_after_the_data_dir() {
    let a = lab_cgroup_name(Path::new("/tmp/a/ferry"));
    assert!(
        a.starts_with("ferry-lab-") && a.len() == "ferry-lab-".len() + 8,
        "{a}"
    );
    assert_eq!(a, lab_cgroup_name(Path::new("/tmp/a/ferry")));
    assert_ne!(a, lab_cgroup_name(Path::new("/tmp/b/ferry")));
    assert_eq!(switch_cgroup("node1", true), "node1-dpu");
    assert_eq!(switch_cgroup("node1", false), "node1-ovs");
}

#[test]
fn the_dpu_host_role_is_deploys() {
    let objs = objects();
    let kinds: Vec<(&str, &str)> = objs
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ClusterRole", "ferry-dpu-host"),
            ("ClusterRoleBinding", "ferry-dpu-host")
        ]
    );
    assert_eq!(objs[1]["subjects"][0]["name"], "system:nodes");
}
