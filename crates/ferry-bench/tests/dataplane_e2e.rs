//! End to end: a tiny run (10 services, 1-second measurements, one round) of every path
//! with real namespaces, real tools and a real OVN stack; every figure must be a number
//! above zero and nothing the run created may be left behind.

use ferry_bench::dataplane::{
    BenchPath, DataplaneOptions, leftover_namespaces, namespace_prefix, run,
};

#[test]
#[ignore = "needs root, netns, OVN"]
fn tiny_run_measures_every_path_and_cleans_up() -> anyhow::Result<()> {
    let out = tempfile::NamedTempFile::new()?;
    let opts = DataplaneOptions {
        services: 10,
        duration_s: 1,
        rounds: 1,
        out: Some(out.path().to_owned()),
        print_table: true,
        ..DataplaneOptions::default()
    };
    let rows = run(&opts)?;

    let names: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(names, BenchPath::ALL.map(BenchPath::name).to_vec());
    for r in &rows {
        let figures = [
            ("throughput_gbps", r.throughput_gbps),
            ("latency_p50_us", r.latency_p50_us),
            ("latency_p99_us", r.latency_p99_us),
            ("rps_keepalive", r.rps_keepalive),
            ("cps_new_conn", r.cps_new_conn),
        ];
        for (name, v) in figures {
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{}: {name} = {v:?}; errors: {:?}",
                r.path,
                r.errors
            );
        }
        match r.path.as_str() {
            "direct" | "ovn-direct" => assert_eq!(r.program_s, None, "{}", r.path),
            _ => {
                assert!(
                    r.program_s.is_some_and(|s| s > 0.0),
                    "{}: {:?}",
                    r.path,
                    r.program_s
                );
                assert_eq!(r.services, 10);
            }
        }
        // ferry-sock paths run on the OVN fabric too.
        let ovn = r.path.contains("ovn") || r.path.starts_with("ferry-sock");
        assert_eq!(
            r.ovs_port_type.as_deref(),
            ovn.then_some("system"),
            "{}",
            r.path
        );
    }

    // The JSON file holds the same rows (floats to within their printed precision).
    let written: Vec<ferry_bench::dataplane::Row> =
        serde_json::from_str(&std::fs::read_to_string(out.path())?)?;
    assert_eq!(written.len(), rows.len());
    for (w, r) in written.iter().zip(&rows) {
        assert_eq!(
            (&w.path, w.services, &w.detail),
            (&r.path, r.services, &r.detail)
        );
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            (a, b) => a == b,
        };
        assert!(close(w.throughput_gbps, r.throughput_gbps), "{}", r.path);
        assert!(close(w.cps_new_conn, r.cps_new_conn), "{}", r.path);
        assert!(close(w.program_s, r.program_s), "{}", r.path);
    }

    // Nothing left: no namespace with our prefix, no daemon or server we started.
    assert_eq!(
        leftover_namespaces(&namespace_prefix()),
        Vec::<String>::new()
    );
    let me = std::process::id();
    let ours: Vec<String> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(me)
        })
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        })
        .filter(|cmd| !cmd.is_empty())
        .collect();
    assert!(ours.is_empty(), "children still running: {ours:?}");
    Ok(())
}
