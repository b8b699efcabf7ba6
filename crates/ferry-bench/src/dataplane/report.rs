//! Result rows, their JSON, and the readable table with ratios.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

/// One path's figures. JSON keys are part of Ferry's outside contract (issue 8); fields
/// after `program_s` are additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `direct`, `iptables`, `nftables`, `ovn-direct` or `ferry-ovn`.
    pub path: String,
    /// Services installed on this path when it was measured.
    pub services: usize,
    /// One iperf3 TCP stream, Gbit/s (median of the rounds).
    pub throughput_gbps: Option<f64>,
    /// sockperf TCP ping-pong, median half round trip, microseconds.
    pub latency_p50_us: Option<f64>,
    /// sockperf TCP ping-pong, 99th percentile half round trip, microseconds.
    pub latency_p99_us: Option<f64>,
    /// wrk, keep-alive HTTP requests per second.
    pub rps_keepalive: Option<f64>,
    /// wrk with `Connection: close`: one request per TCP connection, connections per second.
    pub cps_new_conn: Option<f64>,
    /// Seconds to install the services until the data path uses them (`None`: nothing to
    /// install).
    pub program_s: Option<f64>,
    /// The OVS interface type of the OVN rows' ports (`None` for kernel rows).
    pub ovs_port_type: Option<String>,
    /// Cores busy machine-wide during the iperf3 run (median).
    pub throughput_cpu_cores: Option<f64>,
    /// Cores `ovs-vswitchd` used during the iperf3 run (OVN rows).
    pub ovs_cpu_cores_throughput: Option<f64>,
    /// Cores `ovs-vswitchd` used while no traffic flowed (OVN rows).
    pub ovs_cpu_cores_idle: Option<f64>,
    /// How many measurement rounds the medians come from.
    pub rounds: usize,
    /// What was installed and how.
    pub detail: String,
    /// Measurements that failed (the figure is then `null`) and wrk errors.
    pub errors: Vec<String>,
    /// The OVS/veth configuration of a `--matrix` run (`None` in a plain run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovs_config: Option<String>,
    /// The machine's 1-minute load average during the measurements (median).
    #[serde(default)]
    pub load_avg_1m: Option<f64>,
    /// OVN rows, over the new-connection measurement: datapath passes per packet
    /// (1 + recirculations per packet; each conntrack action is one recirculation).
    #[serde(default)]
    pub ovs_dp_passes_per_packet: Option<f64>,
    /// Packets `ovs-vswitchd` received per new connection (both directions).
    #[serde(default)]
    pub ovs_packets_per_conn: Option<f64>,
    /// Flow-table misses sent to the slow path (upcalls) per new connection.
    #[serde(default)]
    pub ovs_upcalls_per_conn: Option<f64>,
}

impl Row {
    /// An empty row for a path.
    pub fn new(path: &str, services: usize) -> Row {
        Row {
            path: path.to_owned(),
            services,
            throughput_gbps: None,
            latency_p50_us: None,
            latency_p99_us: None,
            rps_keepalive: None,
            cps_new_conn: None,
            program_s: None,
            ovs_port_type: None,
            throughput_cpu_cores: None,
            ovs_cpu_cores_throughput: None,
            ovs_cpu_cores_idle: None,
            rounds: 0,
            detail: String::new(),
            errors: Vec::new(),
            ovs_config: None,
            load_avg_1m: None,
            ovs_dp_passes_per_packet: None,
            ovs_packets_per_conn: None,
            ovs_upcalls_per_conn: None,
        }
    }

    /// The five traffic figures, in table order.
    pub(crate) fn figures(&self) -> [Option<f64>; 5] {
        [
            self.throughput_gbps,
            self.latency_p50_us,
            self.latency_p99_us,
            self.rps_keepalive,
            self.cps_new_conn,
        ]
    }
}

/// The median of some samples (`None` if there are none).
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_value(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn cell(v: Option<f64>, base: Option<f64>, decimals: usize) -> String {
    match ratio(v, base) {
        Some(r) => format!("{} ({r:.2})", fmt_value(v, decimals)),
        None => fmt_value(v, decimals),
    }
}

/// The table: each figure with its ratio to `direct` in parentheses, and for `ferry-ovn`
/// and `ferry-sock` a second line with their ratios to `ovn-direct`.
pub fn table(rows: &[Row]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "path",
        "services",
        "Gbit/s",
        "p50 us",
        "p99 us",
        "req/s keep-alive",
        "conn/s new",
        "program s",
        "ovs port",
        "CPU cores (ovs) during iperf3",
    ]);
    let direct = rows.iter().find(|r| r.path == "direct");
    let ovn_direct = rows.iter().find(|r| r.path == "ovn-direct");
    let decimals = [2, 1, 1, 0, 0];
    for r in rows {
        let base = direct.map(Row::figures).unwrap_or_default();
        let mut cells: Vec<String> = vec![r.path.clone(), r.services.to_string()];
        for (i, v) in r.figures().into_iter().enumerate() {
            let b = if r.path == "direct" { None } else { base[i] };
            cells.push(cell(v, b, decimals[i]));
        }
        cells.push(fmt_value(r.program_s, 2));
        cells.push(r.ovs_port_type.clone().unwrap_or_else(|| "-".into()));
        cells.push(match (r.throughput_cpu_cores, r.ovs_cpu_cores_throughput) {
            (Some(a), Some(o)) => format!("{a:.2} ({o:.2})"),
            (Some(a), None) => format!("{a:.2}"),
            _ => "-".into(),
        });
        t.add_row(cells.into_iter().map(Cell::new).collect::<Vec<_>>());
        if matches!(
            r.path.as_str(),
            "ferry-ovn" | "ferry-sock" | "ferry-sock-bare" | "ferry-sock-stateless"
        ) && let Some(od) = ovn_direct
        {
            let mut cells = vec!["  / ovn-direct".to_string(), String::new()];
            for (v, b) in r.figures().into_iter().zip(od.figures()) {
                cells.push(ratio(v, b).map_or("-".into(), |x| format!("{x:.2}")));
            }
            cells.extend([String::new(), String::new(), String::new()]);
            t.add_row(cells.into_iter().map(Cell::new).collect::<Vec<_>>());
        }
    }
    for i in 1..=7 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = t.to_string();
    out.push_str(
        "\n(x.xx) = this row / direct (latency: higher is worse); \"/ ovn-direct\" = ferry-ovn (or ferry-sock) / ovn-direct.\n",
    );
    out
}

/// The rows as pretty JSON (a list, as issue 8 specifies).
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, gbps: f64, p50: f64, rps: f64) -> Row {
        Row {
            throughput_gbps: Some(gbps),
            latency_p50_us: Some(p50),
            latency_p99_us: Some(p50 * 2.0),
            rps_keepalive: Some(rps),
            cps_new_conn: Some(rps / 2.0),
            ..Row::new(path, 1000)
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn json_rows_carry_the_contract_keys() {
        let mut r = row("ferry-ovn", 1.0, 30.0, 10_000.0);
        r.program_s = Some(1.5);
        r.ovs_port_type = Some("system".into());
        let v: serde_json::Value = serde_json::from_str(&to_json(&[r.clone()])).unwrap();
        let obj = v[0].as_object().unwrap();
        for key in [
            "path",
            "services",
            "throughput_gbps",
            "latency_p50_us",
            "latency_p99_us",
            "rps_keepalive",
            "cps_new_conn",
            "program_s",
        ] {
            assert!(obj.contains_key(key), "{key}");
        }
        assert_eq!(v[0]["path"], "ferry-ovn");
        assert_eq!(v[0]["services"], 1000);
        assert_eq!(v[0]["program_s"], 1.5);
        let back: Vec<Row> = serde_json::from_value(v).unwrap();
        assert_eq!(back, vec![r]);
        let none: serde_json::Value =
            serde_json::from_str(&to_json(&[Row::new("direct", 0)])).unwrap();
        assert!(none[0]["program_s"].is_null());
    }

    #[test]
    fn the_table_shows_ratios_to_direct_and_ferry_ovn_to_ovn_direct() {
        let rows = vec![
            row("direct", 10.0, 10.0, 20_000.0),
            row("iptables", 9.0, 11.0, 18_000.0),
            row("ovn-direct", 1.0, 40.0, 8_000.0),
            row("ferry-ovn", 0.8, 50.0, 6_000.0),
        ];
        let t = table(&rows);
        let line = |p: &str| t.lines().find(|l| l.contains(p)).unwrap().to_owned();
        assert!(line("iptables").contains("9.00 (0.90)"), "{t}");
        assert!(line("iptables").contains("11.0 (1.10)"), "{t}");
        assert!(
            !line("│ direct").contains('('),
            "direct has no ratio to itself: {t}"
        );
        assert!(line("ferry-ovn").contains("0.80 (0.08)"), "{t}");
        let vs = line("/ ovn-direct");
        assert!(
            vs.contains("0.80") && vs.contains("1.25") && vs.contains("0.75"),
            "{vs}"
        );
    }

    #[test]
    fn missing_figures_print_as_dashes() {
        let t = table(&[Row::new("nftables", 10)]);
        assert!(
            t.lines()
                .any(|l| l.contains("nftables") && l.contains(" - ")),
            "{t}"
        );
    }
}
