//! Load figure for the probe engine: N TCP probes (default 5,000) at a 1 s period
//! against local listeners for ~20 s, then the CPU seconds and memory used.
//!
//! ```text
//! cargo run --release -p ferry-agent --example probe_load -- [--probes N] [--seconds S]
//!     [--listeners L] [--netns PATH]
//! ```
//!
//! `--netns /proc/self/ns/net` (root) routes every socket through a
//! `NetnsSocketFactory` thread, as probes into a VPC namespace do. Probes run on a
//! one-worker tokio runtime (`probe-rt`); listeners on a separate one (`server-rt`), so
//! the figures can be split per thread (from `/proc/self/task/*/stat`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_agent::probe::{Phase, ProbeKind, ProbeRunner, ProbeSpec, ProbeTarget, Thresholds};

struct Args {
    probes: usize,
    seconds: u64,
    listeners: usize,
    netns: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        probes: 5000,
        seconds: 20,
        listeners: 50,
        netns: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--probes" => a.probes = val.parse()?,
            "--seconds" => a.seconds = val.parse()?,
            "--listeners" => a.listeners = val.parse()?,
            "--netns" => a.netns = Some(PathBuf::from(val)),
            _ => bail!("unknown flag {flag} (use --probes, --seconds, --listeners, --netns)"),
        }
    }
    Ok(a)
}

/// CPU seconds (user, system) per thread name, and for the whole process.
fn cpu_by_thread() -> Result<(HashMap<String, f64>, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut per = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let stat = std::fs::read_to_string(entry?.path().join("stat"))?;
        let (name, rest) = parse_stat(&stat)?;
        let key = name
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        *per.entry(key).or_insert(0.0) += rest;
    }
    let (_, total) = parse_stat(&std::fs::read_to_string("/proc/self/stat")?)?;
    Ok((
        per.into_iter().map(|(k, v)| (k, v / tick)).collect(),
        total / tick,
    ))
}

/// `(comm, utime + stime in ticks)` from a `stat` line.
fn parse_stat(stat: &str) -> Result<(String, f64)> {
    let open = stat.find('(').context("stat: no (")?;
    let close = stat.rfind(')').context("stat: no )")?;
    let name = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((name, utime + stime))
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_string())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let a = args()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("server-rt")
        .enable_all()
        .build()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let mut ports = Vec::new();
    for _ in 0..a.listeners {
        let l = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        ports.push(l.local_addr()?.port());
        let accepted = accepted.clone();
        server_rt.spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                drop(c);
            }
        });
    }

    let probe_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("probe-rt")
        .enable_all()
        .build()?;
    let (healthy, unhealthy, per_thread_start, total_start, accepted_start, measured, end, threads) =
        probe_rt.block_on(async {
            let (mut runner, mut rx) = ProbeRunner::new(a.probes + 16);
            let started = Instant::now();
            for i in 0..a.probes {
                runner.upsert(ProbeSpec {
                    id: format!("load/np-{i}"),
                    netns: a.netns.clone(),
                    target: ProbeTarget {
                        kind: ProbeKind::Tcp,
                        ip: [127, 0, 0, 1].into(),
                        port: ports[i % ports.len()],
                    },
                    period: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    thresholds: Thresholds::default(),
                })?;
            }
            let upsert_time = started.elapsed();
            // Warm-up: one period for every probe's first attempt.
            let mut healthy = 0usize;
            let mut unhealthy = 0usize;
            let mut count = |ev: ferry_agent::probe::ProbeEvent| match ev.transition.to {
                Phase::Healthy => healthy += 1,
                _ => unhealthy += 1,
            };
            let warm_until = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Some(ev)) = tokio::time::timeout_at(warm_until, rx.recv()).await {
                count(ev);
            }
            let (per, total) = cpu_by_thread()?;
            let acc = accepted.load(Ordering::Relaxed);
            let measure_from = Instant::now();
            let until = tokio::time::Instant::now() + Duration::from_secs(a.seconds);
            while let Ok(Some(ev)) = tokio::time::timeout_at(until, rx.recv()).await {
                count(ev);
            }
            let measured = measure_from.elapsed();
            // Before the runner (and its namespace socket thread) goes away.
            let end = cpu_by_thread()?;
            let threads = status_field("Threads:");
            println!(
                "scheduled {} probes in {upsert_time:?}; socket threads: {}",
                runner.len(),
                runner.namespaces()
            );
            drop(runner);
            Ok::<_, anyhow::Error>((healthy, unhealthy, per, total, acc, measured, end, threads))
        })?;
    let (per_end, total_end) = end;
    let connections = accepted.load(Ordering::Relaxed) - accepted_start;
    let secs = measured.as_secs_f64();
    println!(
        "{} TCP probes, period 1 s, {} listeners, sockets from {}",
        a.probes,
        a.listeners,
        a.netns
            .as_ref()
            .map_or("the host namespace".to_string(), |p| format!(
                "a NetnsSocketFactory on {}",
                p.display()
            ))
    );
    println!(
        "transitions: {healthy} to Healthy, {unhealthy} other (expected {} and 0)",
        a.probes
    );
    println!(
        "steady state over {secs:.1} s: {connections} connections accepted ({:.0}/s)",
        connections as f64 / secs
    );
    println!(
        "CPU seconds in the window: process {:.2} ({:.1}% of one core)",
        total_end - total_start,
        100.0 * (total_end - total_start) / secs
    );
    let mut names: Vec<&String> = per_end.keys().collect();
    names.sort();
    for name in names {
        let d = per_end[name] - per_thread_start.get(name).copied().unwrap_or(0.0);
        println!(
            "  thread {name:<16} {d:.2} s ({:.1}% of one core)",
            100.0 * d / secs
        );
    }
    println!(
        "memory: VmRSS {}, VmHWM {}; threads while probing: {threads}",
        status_field("VmRSS:"),
        status_field("VmHWM:"),
    );
    Ok(())
}
