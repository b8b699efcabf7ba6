//! End to end: a tiny `--matrix` run over two OVS/veth configurations. Pins why Ferry's
//! veths either have transmit checksum offload off or run with userspace TSO: with
//! offload on and no TSO, TCP through the userspace datapath never connects (the
//! configuration's rows carry the error and no figures); with TSO and offload on, every
//! figure is there. Each configuration has its own `direct` row.

use ferry_bench::dataplane::{
    BenchPath, DataplaneOptions, leftover_namespaces, namespace_prefix, parse_matrix, run_matrix,
};

#[test]
#[ignore = "needs root, netns, OVN"]
fn offload_without_tso_breaks_tcp_and_with_tso_carries_it() -> anyhow::Result<()> {
    let out = tempfile::NamedTempFile::new()?;
    let opts = DataplaneOptions {
        services: 10,
        duration_s: 1,
        rounds: 1,
        paths: vec![BenchPath::Direct, BenchPath::OvnDirect],
        out: Some(out.path().to_owned()),
        print_table: true,
        ..DataplaneOptions::default()
    };
    let configs = parse_matrix("veth+csum,veth+tso+csum")?;
    let rows = run_matrix(&opts, &configs, &[10])?;

    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.ovs_config.as_deref().unwrap_or("-"), r.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("veth+csum", "direct"),
            ("veth+csum", "ovn-direct"),
            ("veth+tso+csum", "direct"),
            ("veth+tso+csum", "ovn-direct"),
        ]
    );
    for r in &rows[..2] {
        assert!(r.throughput_gbps.is_none(), "{r:?}");
        assert!(
            r.errors.iter().any(|e| e.contains("not reachable")),
            "{:?}",
            r.errors
        );
    }
    for r in &rows[2..] {
        for (name, v) in [
            ("throughput_gbps", r.throughput_gbps),
            ("latency_p50_us", r.latency_p50_us),
            ("cps_new_conn", r.cps_new_conn),
        ] {
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{}: {name} = {v:?}; errors: {:?}",
                r.path,
                r.errors
            );
        }
    }
    // The OVN row counted its datapath work during the new-connection measurement.
    assert!(
        rows[3].ovs_packets_per_conn.is_some_and(|p| p > 0.0),
        "{:?}",
        rows[3]
    );
    // The JSON file holds every row, labelled.
    let written: Vec<ferry_bench::dataplane::Row> =
        serde_json::from_str(&std::fs::read_to_string(out.path())?)?;
    assert_eq!(written.len(), 4);
    assert_eq!(written[2].ovs_config.as_deref(), Some("veth+tso+csum"));
    assert_eq!(
        leftover_namespaces(&namespace_prefix()),
        Vec::<String>::new()
    );
    Ok(())
}
