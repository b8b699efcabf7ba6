//! How fast the socket LB programs its maps (issue 18: "programs 10k services in under
//! 1 s"; "a probe flip reaches the maps within 100 ms").
//!
//!     cargo run --release -p ferry-sock --example bench_apply -- [SERVICES] [BACKENDS] [FLIPS]
//!
//! Needs root and cgroup v2. Attaches to a fresh child cgroup (removed at the end) that
//! no process is in, so nothing on the machine is translated. Prints a table and one JSON
//! line:
//! * `program_s`: first `apply` of SERVICES x BACKENDS (random) into empty maps;
//! * `plan_s`: the pure planning part of that first apply (the rest is `bpf()` writes);
//! * `noop_apply_s`: `apply` of the same desired state again (what every Endpoints
//!   event costs when nothing changed for this node);
//! * `flip_*_ms`: one backend of one service goes unhealthy (and back): from calling
//!   `apply` with the whole desired state until a read of the kernel map shows the new
//!   slots, over FLIPS flips; `flip_changes_*_ms` the same through `apply_changes` with
//!   just that service (for a caller that knows what changed);
//! * `maglev_program_s`: 1/10 of the services (at most what fits the default slot
//!   budget) with Maglev tables, into fresh maps.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry_sock::{
    Algorithm, Backend, Desired, MapSizes, Protocol, ServiceKey, ServiceSpec, SocketLb,
    cgroup2_mount,
};

fn key(i: u32) -> ServiceKey {
    let [_, a, b, c] = i.to_be_bytes();
    ServiceKey {
        vpc: 1 + i % 4,
        vip: Ipv4Addr::new(10, 96 + a, b, c),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn backend(i: u32, j: u32) -> SocketAddrV4 {
    let n = i * 16 + j;
    let [_, a, b, c] = n.to_be_bytes();
    SocketAddrV4::new(Ipv4Addr::new(10, 128 + a, b, c), 8080)
}

fn desired(services: u32, backends: u32, algorithm: Algorithm) -> Desired {
    Desired {
        services: (0..services)
            .map(|i| {
                (
                    key(i),
                    ServiceSpec {
                        backends: (0..backends).map(|j| Backend::new(backend(i, j))).collect(),
                        algorithm,
                        affinity_timeout_s: 0,
                    },
                )
            })
            .collect(),
    }
}

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers"))
        .collect::<Result<_>>()?;
    let services = args.first().copied().unwrap_or(10_000);
    let backends = args.get(1).copied().unwrap_or(10);
    let flips = args.get(2).copied().unwrap_or(200);
    ensure!((2..=16).contains(&backends), "2..=16 backends");

    let root = cgroup2_mount().context("no cgroup2 mount")?;
    let cg = Cgroup(root.join(format!("ferry-sock-bench-{}", std::process::id())));
    std::fs::create_dir(&cg.0).with_context(|| format!("mkdir {}", cg.0.display()))?;

    let mut lb = SocketLb::load(&cg.0, MapSizes::default())?;
    let want = desired(services, backends, Algorithm::Random);

    // Planning alone (pure CPU), to split program_s into planning and bpf() writes.
    let sizes = MapSizes::default();
    let cap = ferry_sock::Capacity {
        services: sizes.services,
        slots: sizes.slots,
        members: sizes.members,
    };
    let t = Instant::now();
    let planned = ferry_sock::plan(&ferry_sock::Programmed::default(), &want, cap);
    let plan_s = t.elapsed().as_secs_f64();
    let planned_ops = planned.ops.len();
    drop(planned);

    let t = Instant::now();
    let report = lb.apply(&want)?;
    let program_s = t.elapsed().as_secs_f64();
    ensure!(
        report.rejected.is_empty(),
        "rejected: {:?}",
        report.rejected
    );
    let usage = lb.usage();

    let t = Instant::now();
    let noop = lb.apply(&want)?;
    let noop_apply_s = t.elapsed().as_secs_f64();
    ensure!(noop.ops == 0, "second apply wrote {} ops", noop.ops);

    // Flips: service k loses its backend 0, then gets it back.
    let mut current = want.clone();
    let mut flip = Vec::with_capacity(flips as usize);
    let mut flip_changes = Vec::with_capacity(flips as usize);
    for n in 0..flips * 2 {
        let i = (n / 2 * 7919) % services;
        let k = key(i);
        let spec = current.services.get_mut(&k).context("service")?;
        let gone = backend(i, 0);
        let removing = spec.backends.iter().any(|b| b.addr == gone);
        if removing {
            spec.backends.retain(|b| b.addr != gone);
        } else {
            spec.backends.push(Backend::new(gone));
        }
        let whole = n % 2 == 0;
        let t = Instant::now();
        if whole {
            lb.apply(&current)?;
        } else {
            let changes: BTreeMap<_, _> = [(k, Some(current.services[&k].clone()))].into();
            lb.apply_changes(&changes)?;
        }
        let (_, slots) = lb.kernel_service(&k)?.context("service in map")?;
        let took = t.elapsed();
        ensure!(
            slots.contains(&gone) != removing,
            "map does not show the flip of {gone}"
        );
        if whole {
            flip.push(took);
        } else {
            flip_changes.push(took);
        }
    }
    flip.sort();
    flip_changes.sort();

    // Maglev: fresh maps so the random run does not count against the slot budget.
    drop(lb);
    // As many as fit the default slot budget, at most a tenth of the services.
    let table =
        ferry_sock::wire::slot_entries(ferry_sock::maglev::maglev_size(backends as usize) as usize);
    let maglev_services = (services / 10)
        .min(MapSizes::default().slots / table as u32)
        .max(1);
    let mut lb = SocketLb::load(&cg.0, MapSizes::default())?;
    let t = Instant::now();
    let report = lb.apply(&desired(maglev_services, backends, Algorithm::Maglev))?;
    let maglev_program_s = t.elapsed().as_secs_f64();
    ensure!(
        report.rejected.is_empty(),
        "maglev rejected: {:?}",
        report.rejected
    );
    let maglev_slots = lb.usage().slots;
    drop(lb);

    let rows: Vec<(&str, String)> = vec![
        ("services x backends", format!("{services} x {backends}")),
        ("slot entries programmed", usage.slots.to_string()),
        ("program_s (first apply)", format!("{program_s:.3}")),
        (
            "of which planning (plan_s)",
            format!("{plan_s:.3} ({planned_ops} ops)"),
        ),
        ("noop_apply_s", format!("{noop_apply_s:.4}")),
        (
            "flip via apply p50 / p99 / max ms",
            format!(
                "{:.2} / {:.2} / {:.2}",
                percentile(&flip, 0.5),
                percentile(&flip, 0.99),
                percentile(&flip, 1.0)
            ),
        ),
        (
            "flip via apply_changes p50 / p99 / max ms",
            format!(
                "{:.3} / {:.3} / {:.3}",
                percentile(&flip_changes, 0.5),
                percentile(&flip_changes, 0.99),
                percentile(&flip_changes, 1.0)
            ),
        ),
        (
            "maglev_program_s",
            format!(
                "{maglev_program_s:.3} ({maglev_services} services, {maglev_slots} slot entries)"
            ),
        ),
    ];
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["ferry-sock apply", "value"]);
    for (k, v) in &rows {
        table.add_row(vec![*k, v.as_str()]);
    }
    println!("{table}");
    println!(
        "{}",
        serde_json::json!({
            "services": services,
            "backends": backends,
            "slot_entries": usage.slots,
            "program_s": program_s,
            "plan_s": plan_s,
            "noop_apply_s": noop_apply_s,
            "flips": flips,
            "flip_p50_ms": percentile(&flip, 0.5),
            "flip_p99_ms": percentile(&flip, 0.99),
            "flip_max_ms": percentile(&flip, 1.0),
            "flip_changes_p50_ms": percentile(&flip_changes, 0.5),
            "flip_changes_p99_ms": percentile(&flip_changes, 0.99),
            "flip_changes_max_ms": percentile(&flip_changes, 1.0),
            "maglev_services": maglev_services,
            "maglev_slot_entries": maglev_slots,
            "maglev_program_s": maglev_program_s,
        })
    );
    Ok(())
}
