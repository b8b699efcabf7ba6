//! `ferry bench dataplane --matrix`: the OVN paths under several OVS/veth configurations
//! (issue 18, part 1), and the same paths at several service counts side by side. Each
//! configuration (and each count) is one complete sub-run with its own `direct` row, so
//! every figure is a ratio to kernel routing measured minutes earlier on the same
//! machine. A configuration that cannot carry traffic (e.g. checksum offload on without
//! userspace TSO) gives rows that say why instead of stopping the run.

use std::collections::BTreeSet;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use super::report::ratio;
use super::{
    DataplaneOptions, OvsTuning, PortType, Row, check_programs, port_type_name, run_one,
    runtime_and_stop, to_json,
};
use crate::error::{Error, Result};

/// One OVS/veth configuration of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixConfig {
    /// Its name in the table and the JSON (`ovs_config`).
    pub name: &'static str,
    pub port_type: PortType,
    pub tuning: OvsTuning,
}

/// The configurations issue 18 asks for, today's first: veth ports with checksum offload
/// off; offload on alone; userspace TSO with offload off and on; more handler and
/// revalidator threads (the default on 2 cores is 1 and 1); AF_XDP without and with PMD.
pub fn matrix_configs() -> Vec<MatrixConfig> {
    let veth = |name, tso, csum| MatrixConfig {
        name,
        port_type: PortType::System,
        tuning: OvsTuning {
            userspace_tso: Some(tso),
            tx_checksum_offload: Some(csum),
            ..Default::default()
        },
    };
    let afxdp = |name, port_type| MatrixConfig {
        name,
        port_type,
        tuning: OvsTuning {
            userspace_tso: Some(false),
            tx_checksum_offload: Some(false),
            ..Default::default()
        },
    };
    vec![
        veth("veth", false, false),
        veth("veth+csum", false, true),
        veth("veth+tso", true, false),
        veth("veth+tso+csum", true, true),
        MatrixConfig {
            name: "veth+tso+csum+threads2",
            port_type: PortType::System,
            tuning: OvsTuning {
                userspace_tso: Some(true),
                tx_checksum_offload: Some(true),
                handler_threads: Some(2),
                revalidator_threads: Some(2),
            },
        },
        afxdp("afxdp-nonpmd", PortType::AfxdpNonPmd),
        afxdp("afxdp", PortType::Afxdp),
        MatrixConfig {
            name: "default",
            port_type: PortType::System,
            tuning: OvsTuning::default(),
        },
    ]
}

/// Parses `--matrix`: `all` (every configuration but `default`), `none` (only the
/// options' own configuration, labelled `default`: for several `--services` side by
/// side), or names separated by commas.
pub fn parse_matrix(list: &str) -> Result<Vec<MatrixConfig>> {
    let all = matrix_configs();
    let pick = |name: &str| all.iter().find(|c| c.name == name).cloned();
    match list.trim() {
        "all" => Ok(all
            .iter()
            .filter(|c| c.name != "default")
            .cloned()
            .collect()),
        "none" | "" => Ok(pick("default").into_iter().collect()),
        names => names
            .split(',')
            .map(|n| {
                pick(n.trim()).ok_or_else(|| Error::Invalid {
                    option: "--matrix",
                    reason: format!(
                        "unknown configuration {n:?}; use all, none or {}",
                        all.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
                    ),
                })
            })
            .collect(),
    }
}

/// Runs every configuration at every service count (counts outer), prints the matrix
/// table, writes the JSON rows to `opts.out`, and returns them. `opts` gives paths,
/// durations and rounds; its port type and tuning are replaced by each configuration's
/// (the `default` configuration keeps `opts`' own).
pub fn run_matrix(
    opts: &DataplaneOptions,
    configs: &[MatrixConfig],
    sizes: &[usize],
) -> Result<Vec<Row>> {
    if configs.is_empty() || sizes.is_empty() {
        return Err(Error::Invalid {
            option: "--matrix",
            reason: "name at least one configuration and one service count".into(),
        });
    }
    check_programs(opts)?;
    let (rt, stop) = runtime_and_stop()?;
    let mut rows = Vec::new();
    for &services in sizes {
        for c in configs {
            let mut o = sub_options(opts, c);
            o.services = services;
            o.validate()?;
            tracing::info!(config = c.name, services, "matrix: next configuration");
            let got = match run_one(&o, &rt, &stop) {
                Ok(got) => got,
                Err(e @ (Error::Interrupted | Error::Cleanup(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(config = c.name, error = %e, "configuration failed");
                    failed_rows(&o, &e)
                }
            };
            for mut r in got {
                r.ovs_config = Some(c.name.to_owned());
                rows.push(r);
            }
            if let Some(out) = &opts.out {
                // Written after every configuration: a long run keeps what it measured.
                std::fs::write(out, to_json(&rows) + "\n")
                    .map_err(|e| Error::io("write", out, e))?;
            }
        }
    }
    if opts.print_table {
        println!("{}", matrix_table(&rows));
    }
    Ok(rows)
}

/// `opts` with a configuration's port type and tuning (pure).
fn sub_options(opts: &DataplaneOptions, c: &MatrixConfig) -> DataplaneOptions {
    let mut o = opts.clone();
    o.print_table = false;
    o.out = None;
    if c.name != "default" {
        o.ovs_port_type = c.port_type;
        o.ovs = c.tuning.clone();
    }
    o
}

/// Rows for a sub-run that could not be built or measured: every path, no figures, the
/// error.
fn failed_rows(o: &DataplaneOptions, e: &Error) -> Vec<Row> {
    o.paths
        .iter()
        .map(|p| {
            let mut r = Row::new(p.name(), o.services);
            r.ovs_port_type = p.is_ovn().then(|| port_type_name(o.ovs_port_type).into());
            r.errors.push(e.to_string());
            r
        })
        .collect()
}

/// The matrix as a readable table: per configuration and service count, each path's
/// figures with their ratio to that sub-run's `direct` in brackets, and for `ferry-ovn`
/// and `ferry-sock` a line of ratios to `ovn-direct`.
pub fn matrix_table(rows: &[Row]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "config",
        "services",
        "path",
        "Gbit/s (x direct)",
        "p50 us (x direct)",
        "new conn/s (x direct)",
        "keep-alive req/s (x direct)",
        "vswitchd cores (iperf3)",
        "dp passes/pkt, pkts/conn, upcalls/conn (new conn)",
        "load 1m",
        "errors",
    ]);
    let mut seen = BTreeSet::new();
    let groups: Vec<(Option<String>, usize)> = rows
        .iter()
        .map(|r| (r.ovs_config.clone(), r.services.max(sub_services(rows, r))))
        .filter(|k| seen.insert(k.clone()))
        .collect();
    for (config, services) in groups {
        let group: Vec<&Row> = rows
            .iter()
            .filter(|r| r.ovs_config == config && r.services.max(sub_services(rows, r)) == services)
            .collect();
        let direct = group.iter().find(|r| r.path == "direct").copied();
        let ovn_direct = group.iter().find(|r| r.path == "ovn-direct").copied();
        for r in &group {
            let f = r.figures();
            let base = if r.path == "direct" {
                [None; 5]
            } else {
                direct.map(Row::figures).unwrap_or_default()
            };
            let cell = |i: usize, d: usize| match (f[i], ratio(f[i], base[i])) {
                (Some(v), Some(x)) => format!("{v:.d$} ({x:.2})"),
                (Some(v), None) => format!("{v:.d$}"),
                _ => "-".into(),
            };
            let errors = match r.errors.first() {
                None => String::new(),
                Some(e) => {
                    let mut e = e.clone();
                    if e.len() > 60 {
                        e.truncate(60);
                        e.push_str("...");
                    }
                    format!("{}: {e}", r.errors.len())
                }
            };
            t.add_row(vec![
                Cell::new(config.as_deref().unwrap_or("-")),
                Cell::new(services),
                Cell::new(&r.path),
                Cell::new(cell(0, 2)),
                Cell::new(cell(1, 1)),
                Cell::new(cell(4, 0)),
                Cell::new(cell(3, 0)),
                Cell::new(
                    r.ovs_cpu_cores_throughput
                        .map_or("-".into(), |c| format!("{c:.2}")),
                ),
                Cell::new(
                    match (
                        r.ovs_dp_passes_per_packet,
                        r.ovs_packets_per_conn,
                        r.ovs_upcalls_per_conn,
                    ) {
                        (Some(a), Some(b), Some(c)) => format!("{a:.2}, {b:.1}, {c:.2}"),
                        _ => "-".into(),
                    },
                ),
                Cell::new(r.load_avg_1m.map_or("-".into(), |l| format!("{l:.1}"))),
                Cell::new(errors),
            ]);
            if matches!(
                r.path.as_str(),
                "ferry-ovn" | "ferry-sock" | "ferry-sock-bare" | "ferry-sock-stateless"
            ) && let Some(od) = ovn_direct
            {
                let x = |i: usize| {
                    ratio(f[i], od.figures()[i]).map_or("-".into(), |v| format!("{v:.2}"))
                };
                t.add_row(vec![
                    String::new(),
                    String::new(),
                    "  / ovn-direct".into(),
                    x(0),
                    x(1),
                    x(4),
                    x(3),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
    }
    for i in 3..=9 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = t.to_string();
    out.push_str(
        "\n(x.xx) = this row / direct of the same configuration and service count (latency: \
         higher is worse); \"/ ovn-direct\" = this row / ovn-direct of the same configuration.\n",
    );
    out
}

/// The service count of the sub-run a row belongs to: `direct` and `ovn-direct` rows say
/// 0, so they take the count of the next row of their configuration that has one.
fn sub_services(rows: &[Row], r: &Row) -> usize {
    if r.services > 0 {
        return r.services;
    }
    let i = rows
        .iter()
        .position(|x| std::ptr::eq(x, r))
        .unwrap_or_default();
    rows[i..]
        .iter()
        .take_while(|x| x.ovs_config == r.ovs_config)
        .find(|x| x.services > 0)
        .map_or(0, |x| x.services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, path: &str, services: usize, gbps: f64, cps: f64) -> Row {
        Row {
            throughput_gbps: Some(gbps),
            latency_p50_us: Some(10.0),
            latency_p99_us: Some(20.0),
            rps_keepalive: Some(1000.0),
            cps_new_conn: Some(cps),
            ovs_config: Some(config.into()),
            ..Row::new(path, services)
        }
    }

    #[test]
    fn the_issue_18_configurations_are_all_there_and_differ() {
        let c = matrix_configs();
        let names: Vec<&str> = c.iter().map(|c| c.name).collect();
        for want in [
            "veth",
            "veth+tso",
            "veth+tso+csum",
            "afxdp",
            "afxdp-nonpmd",
            "veth+tso+csum+threads2",
        ] {
            assert!(names.contains(&want), "{want}");
        }
        let set: BTreeSet<_> = c
            .iter()
            .map(|c| format!("{:?}{:?}", c.port_type, c.tuning))
            .collect();
        assert_eq!(set.len(), c.len(), "two configurations are the same");
        let threads = c
            .iter()
            .find(|c| c.name == "veth+tso+csum+threads2")
            .unwrap();
        let oc = threads.tuning.other_config();
        for kv in [
            ("userspace-tso-enable", "true"),
            ("n-handler-threads", "2"),
            ("n-revalidator-threads", "2"),
        ] {
            assert!(
                oc.contains(&(kv.0.to_owned(), kv.1.to_owned())),
                "{kv:?} in {oc:?}"
            );
        }
        let veth = c.iter().find(|c| c.name == "veth").unwrap();
        assert!(
            veth.tuning
                .other_config()
                .contains(&("userspace-tso-enable".into(), "false".into()))
        );
    }

    #[test]
    fn matrix_names_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_matrix("all").unwrap().len(),
            matrix_configs().len() - 1
        );
        let none = parse_matrix("none").unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].name, "default");
        let two = parse_matrix("veth, afxdp").unwrap();
        assert_eq!(
            two.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["veth", "afxdp"]
        );
        let e = parse_matrix("dpdk").unwrap_err().to_string();
        assert!(e.contains("--matrix") && e.contains("veth+tso"), "{e}");
    }

    #[test]
    fn the_default_configuration_keeps_the_options_own_tuning() {
        let opts = DataplaneOptions {
            ovs_port_type: PortType::AfxdpNonPmd,
            ..Default::default()
        };
        let c = parse_matrix("none").unwrap();
        let o = sub_options(&opts, &c[0]);
        assert_eq!(o.ovs_port_type, PortType::AfxdpNonPmd);
        assert!(!o.print_table && o.out.is_none());
        let c = parse_matrix("veth+tso").unwrap();
        let o = sub_options(&opts, &c[0]);
        assert_eq!(o.ovs_port_type, PortType::System);
        assert_eq!(o.ovs.userspace_tso, Some(true));
    }

    #[test]
    fn the_table_gives_ratios_to_the_same_configurations_direct() {
        let rows = vec![
            row("veth", "direct", 0, 10.0, 8000.0),
            row("veth", "ovn-direct", 0, 0.5, 4000.0),
            row("veth", "ferry-sock", 1000, 0.5, 2000.0),
            row("veth+tso", "direct", 0, 5.0, 8000.0),
            row("veth+tso", "ovn-direct", 0, 4.0, 4000.0),
        ];
        let t = matrix_table(&rows);
        let line = |config: &str, path: &str| {
            t.lines()
                .find(|l| l.contains(&format!(" {config} ")) && l.contains(&format!("┆ {path} ")))
                .unwrap_or_else(|| panic!("{config} {path} in {t}"))
                .to_owned()
        };
        assert!(line("veth", "ovn-direct").contains("0.50 (0.05)"), "{t}");
        assert!(
            line("veth+tso", "ovn-direct").contains("4.00 (0.80)"),
            "{t}"
        );
        // ferry-sock / ovn-direct: new conn/s 0.50.
        let vs = t.lines().find(|l| l.contains("/ ovn-direct")).unwrap();
        assert!(vs.contains("1.00") && vs.contains("0.50"), "{vs}");
        // The veth group is 1000 services (its direct row says 0).
        assert!(line("veth", "direct").contains("1000"), "{t}");
    }

    #[test]
    fn a_failed_configuration_gives_rows_that_say_why() {
        let o = DataplaneOptions {
            paths: vec![
                super::super::BenchPath::Direct,
                super::super::BenchPath::OvnDirect,
            ],
            ..Default::default()
        };
        let rows = failed_rows(
            &o,
            &Error::Unreachable {
                path: "ovn-direct",
                target: "http://10.252.2.10:80/small".into(),
                waited_s: 60,
                detail: "HTTP 000".into(),
            },
        );
        assert_eq!(rows.len(), 2);
        assert!(rows[1].throughput_gbps.is_none());
        assert!(rows[1].errors[0].contains("not reachable"), "{:?}", rows[1]);
        assert_eq!(rows[1].ovs_port_type.as_deref(), Some("system"));
        assert!(rows[0].ovs_port_type.is_none());
    }
}
