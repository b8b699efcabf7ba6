//! `ferry bench metrics-cost`: what Prometheus metrics cost on the hot path. Runs the
//! control-plane benchmark ([`crate::control_plane`]: a real API server and controller
//! against a real OVN NB) with `FERRY_METRICS=off` and on, interleaved over `rounds`
//! (the order flips each round, so a machine that slows down during the run weighs on
//! both), and sets the figures side by side: the leader's pass times (from its own log
//! line, written either way), API GET latency under 8 clients, change and flip delays,
//! acknowledged writes, memory. Then, because a shared machine's load swings between
//! runs, the API server once more side by side: three `ferry apiserver`s running at the
//! same time, two with metrics off (their difference is the noise floor) and one on,
//! timed in rotating batches of GETs so all see the same load. Prints a table and JSON;
//! asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::control_plane::{
    Children, ControlPlaneOptions, ControlPlaneResult, api_latency, client_of, control_plane,
    percentile, spawn, wait_file,
};

/// Side by side: batches per server, GETs per batch, concurrent clients.
const AB_BATCHES: usize = 20;
const AB_GETS: usize = 500;
const AB_CLIENTS: usize = 8;

/// GET latency of one API server in [`api_side_by_side`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerGets {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_s: f64,
}

/// GET latency of three API servers run side by side: two with metrics off (their
/// difference is the measurement's own noise floor) and one on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideBySide {
    /// Whether the server with metrics on was started first (the comparison is made both
    /// ways: the first-started process may be favoured).
    pub on_started_first: bool,
    pub batches: usize,
    pub gets_per_batch: usize,
    pub clients: usize,
    pub off: ServerGets,
    /// The second server with metrics off (the A/A control).
    pub off_again: ServerGets,
    pub on: ServerGets,
}

/// One figure in both modes: each run's value and the medians.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    pub figure: &'static str,
    pub off: Vec<f64>,
    pub on: Vec<f64>,
    pub off_median: f64,
    pub on_median: f64,
    /// `on_median / off_median` (0 when off is 0).
    pub on_over_off: f64,
}

/// Every run and the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsCostResult {
    pub services: usize,
    pub backends: usize,
    pub rounds: usize,
    pub rows: Vec<CostRow>,
    /// Off started first, then on started first.
    pub side_by_side: Vec<SideBySide>,
    pub runs: Vec<ControlPlaneResult>,
}

/// Three API servers at once, two with `FERRY_METRICS=off` and one on, each timed in
/// turn (the order rotates every batch) over [`AB_BATCHES`] batches of [`AB_GETS`] GETs
/// by [`AB_CLIENTS`] clients.
pub async fn api_side_by_side(ferry: &Path, on_started_first: bool) -> Result<SideBySide, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut children = Children(Vec::new());
    // Servers 0 and 1: off; 2: on.
    let start_order = if on_started_first {
        [2, 0, 1]
    } else {
        [0, 1, 2]
    };
    let mut clients: Vec<Option<kube::Client>> = vec![None, None, None];
    for i in start_order {
        let mode = if i == 2 { "on" } else { "off" };
        let data = dir.path().join(format!("api-{i}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut c = Command::new(ferry);
        c.args(["apiserver", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("FERRY_METRICS", mode);
        children
            .0
            .push(spawn(&mut c, &dir.path().join(format!("api-{i}.log")))?);
        wait_file(&data.join("kubeconfig"), Duration::from_secs(30)).await?;
        clients[i] = Some(client_of(&data.join("kubeconfig")).await?);
    }
    let clients: Vec<kube::Client> = clients.into_iter().flatten().collect();
    // Warm each (connections, caches) before timing.
    for c in &clients {
        api_latency(c, AB_GETS, AB_CLIENTS).await?;
    }
    let mut lat = [Vec::new(), Vec::new(), Vec::new()];
    let mut secs = [0.0f64; 3];
    for b in 0..AB_BATCHES {
        for j in 0..3 {
            let k = (b + j) % 3;
            let t = std::time::Instant::now();
            let (l, _) = api_latency(&clients[k], AB_GETS, AB_CLIENTS).await?;
            secs[k] += t.elapsed().as_secs_f64();
            lat[k].extend(l);
        }
        ferry_lab::progress::count("side-by-side GET batches", b + 1, AB_BATCHES, "");
    }
    drop(children);
    let total = (AB_BATCHES * AB_GETS) as f64;
    let mut gets = lat.into_iter().zip(secs).map(|(mut l, s)| ServerGets {
        p50_ms: percentile(&mut l, 0.5),
        p99_ms: percentile(&mut l, 0.99),
        per_s: if s > 0.0 { total / s } else { 0.0 },
    });
    let mut next = || {
        gets.next().unwrap_or(ServerGets {
            p50_ms: 0.0,
            p99_ms: 0.0,
            per_s: 0.0,
        })
    };
    Ok(SideBySide {
        on_started_first,
        batches: AB_BATCHES,
        gets_per_batch: AB_GETS,
        clients: AB_CLIENTS,
        off: next(),
        off_again: next(),
        on: next(),
    })
}

/// One figure of a [`ServerGets`].
type GetFigure = fn(&ServerGets) -> f64;

/// The figures compared, and how to read each from a run.
type Figure = (&'static str, fn(&ControlPlaneResult) -> f64);

const FIGURES: [Figure; 12] = [
    ("pass_incremental_p50_ms", |r| r.pass_incremental_p50_ms),
    ("pass_incremental_p99_ms", |r| r.pass_incremental_p99_ms),
    ("pass_full_p50_ms", |r| r.pass_full_p50_ms),
    ("api_get_p50_ms", |r| r.api_get_p50_ms),
    ("api_get_p99_ms", |r| r.api_get_p99_ms),
    ("api_gets_per_s", |r| r.api_gets_per_s),
    ("change_p50_ms", |r| r.change_p50_ms),
    ("endpoint_flip_p99_ms", |r| r.endpoint_flip_p99_ms),
    ("acked_writes_per_s", |r| r.acked_writes_per_s),
    ("full_sync_s", |r| r.full_sync_s),
    ("apiserver_rss_mib", |r| r.apiserver_rss_mib),
    ("controller_rss_mib", |r| r.controller_rss_mib),
];

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The comparison of `runs` (each says whether metrics were on).
pub fn compare(runs: &[ControlPlaneResult]) -> Vec<CostRow> {
    FIGURES
        .iter()
        .map(|(figure, get)| {
            let pick = |on: bool| -> Vec<f64> {
                runs.iter().filter(|r| r.metrics == on).map(get).collect()
            };
            let (off, on) = (pick(false), pick(true));
            let (off_median, on_median) = (median(&off), median(&on));
            CostRow {
                figure,
                off,
                on,
                off_median,
                on_median,
                on_over_off: if off_median > 0.0 {
                    on_median / off_median
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// The order of the runs: off/on in round 0, on/off in round 1, ...
pub fn schedule(rounds: usize) -> Vec<bool> {
    (0..rounds)
        .flat_map(|r| {
            if r % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            }
        })
        .collect()
}

/// Runs the control-plane benchmark `2 x rounds` times (no standby, no failover) with
/// metrics off and on (none for 0 rounds), then [`api_side_by_side`]; `base.metrics` and
/// `base.failover` are ignored.
pub async fn metrics_cost(
    base: &ControlPlaneOptions,
    rounds: usize,
) -> Result<MetricsCostResult, String> {
    let mut runs = Vec::new();
    let order = schedule(rounds);
    for (i, metrics) in order.iter().enumerate() {
        ferry_lab::progress::count(
            "metrics-cost runs",
            i,
            order.len(),
            if *metrics {
                "(next: on)"
            } else {
                "(next: off)"
            },
        );
        let opts = ControlPlaneOptions {
            metrics: *metrics,
            failover: false,
            out: None,
            ..base.clone()
        };
        runs.push(control_plane(&opts).await?);
    }
    ferry_lab::progress::count("metrics-cost runs", order.len(), order.len(), "");
    let side_by_side = vec![
        api_side_by_side(&base.ferry, false).await?,
        api_side_by_side(&base.ferry, true).await?,
    ];
    let result = MetricsCostResult {
        services: base.services,
        backends: base.backends,
        rounds,
        rows: compare(&runs),
        side_by_side,
        runs,
    };
    if let Some(out) = &base.out {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(result)
}

/// The readable table, then the comparison as one JSON line.
pub fn print_metrics_cost(r: &MetricsCostResult) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "figure",
            "off (each run)",
            "on (each run)",
            "off median",
            "on median",
            "on/off",
        ]);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for row in &r.rows {
        t.add_row([
            row.figure.to_string(),
            list(&row.off),
            list(&row.on),
            format!("{:.2}", row.off_median),
            format!("{:.2}", row.on_median),
            format!("{:.3}", row.on_over_off),
        ]);
    }
    println!(
        "metrics cost: {} services x {} backends, {} round(s) of off and on",
        r.services, r.backends, r.rounds
    );
    println!("{t}");
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "API GET, three servers side by side",
            "off",
            "off (2nd server)",
            "on",
            "on/off",
            "off 2nd/off (noise)",
        ]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for ab in &r.side_by_side {
        let first = if ab.on_started_first { "on" } else { "off" };
        let rows: [(&str, GetFigure); 3] = [
            ("p50 ms", |g| g.p50_ms),
            ("p99 ms", |g| g.p99_ms),
            ("GETs/s", |g| g.per_s),
        ];
        for (k, get) in rows {
            let (off, off2, on) = (get(&ab.off), get(&ab.off_again), get(&ab.on));
            t.add_row([
                format!("{k} ({first} started first)"),
                format!("{off:.3}"),
                format!("{off2:.3}"),
                format!("{on:.3}"),
                format!("{:.3}", ratio(on, off)),
                format!("{:.3}", ratio(off2, off)),
            ]);
        }
    }
    if let Some(ab) = r.side_by_side.first() {
        println!(
            "{} alternating batches of {} GETs per server, {} clients",
            ab.batches, ab.gets_per_batch, ab.clients
        );
    }
    println!("{t}");
    println!(
        "{}",
        serde_json::to_string(
            &serde_json::json!({"services": r.services, "backends": r.backends,
            "rounds": r.rounds, "rows": r.rows, "side_by_side": r.side_by_side})
        )
        .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::pass_times;

    #[test]
    fn runs_alternate_their_order_each_round() {
        assert_eq!(schedule(1), vec![false, true]);
        assert_eq!(schedule(3), vec![false, true, true, false, false, true]);
    }

    #[test]
    fn medians_of_each_mode() {
        let cases: [(&str, &[f64], f64); 4] = [
            ("empty", &[], 0.0),
            ("one", &[3.0], 3.0),
            ("odd", &[5.0, 1.0, 3.0], 3.0),
            ("even", &[4.0, 1.0, 3.0, 2.0], 2.5),
        ];
        for (name, v, want) in cases {
            assert_eq!(median(v), want, "{name}");
        }
    }

    #[test]
    fn pass_times_come_from_the_controllers_debug_lines() {
        let log = "\
2026-11-29T01:00:00.1Z DEBUG ferry_controller::pass: reconcile pass full=true services=3 plan_ms=1 nb_ms=2 elapsed_ms=12.5
2026-11-29T01:00:00.2Z  INFO ferry_controller::writer: status written
2026-11-29T01:00:00.3Z DEBUG ferry_controller::pass: reconcile pass full=false services=1 plan_ms=0 nb_ms=1 elapsed_ms=1.25
\u{1b}[2m2026-11-29T01:00:00.4Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mferry_controller::pass\u{1b}[0m\u{1b}[2m:\u{1b}[0m reconcile pass \u{1b}[3mfull\u{1b}[0m\u{1b}[2m=\u{1b}[0mfalse \u{1b}[3melapsed_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m2.5
";
        assert_eq!(pass_times(log), (vec![1.25, 2.5], vec![12.5]));
    }
}
