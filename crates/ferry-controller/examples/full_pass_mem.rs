//! What a full pass costs the controller in memory: the caches filled as at the end of
//! `ferry bench control-plane --services N --backends M --nodes N` (every probe Healthy,
//! every service addressed), then one full pass planned as a standby plans it (`Pass::run`,
//! shadow: no writes), then the whole desired NB state a full convergence builds, and two
//! full convergences on a real NB (`ovsdb-server`): one that fills it, one that finds it
//! converged. Prints each step's RSS growth and its peak within (mimalloc, as the `ferry`
//! binary).
//!
//! `cargo run --release -p ferry-controller --example full_pass_mem -- 10000 20`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use ferry_api::{Subnet, Vpc};
use ferry_controller::cached::{CachedEndpoints, CachedPod, CachedProbe, CachedSlice};
use ferry_controller::caches::Caches;
use ferry_controller::changes::Changes;
use ferry_controller::ipam::Pool;
use ferry_controller::pass::{Pass, PassState};
use ferry_controller::service_ips::ServicePools;
use ferry_controller::writer::Writes;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde_json::json;

mod shapes;

/// mimalloc, as the `ferry` binary: RSS and its peak read as the bench reads them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// (VmRSS, VmHWM) in MiB.
fn rss_and_peak() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Each step's (name, RSS growth, peak growth), for the JSON printed at the end.
static STEPS: std::sync::Mutex<Vec<serde_json::Value>> = std::sync::Mutex::new(Vec::new());

/// Runs `f`, printing the RSS after it and its peak within it, above the RSS before it
/// (the peak is reset first: `clear_refs` 5).
fn step<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (before, _) = rss_and_peak();
    let started = std::time::Instant::now();
    let r = f();
    let secs = started.elapsed().as_secs_f64();
    // mimalloc returns freed pages after a delay.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (rss, peak) = rss_and_peak();
    println!(
        "{what:<48} RSS {:>+8.1} MiB  peak within {:>+8.1} MiB  RSS {:>8.1} MiB  {secs:>6.2} s",
        rss - before,
        peak - before,
        rss
    );
    STEPS
        .lock()
        .unwrap()
        .push(json!({"step": what.trim(), "rss_mib": rss - before,
        "peak_mib": peak - before, "rss_after_mib": rss, "seconds": secs}));
    r
}

fn store<K>(objects: impl Iterator<Item = K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store::<K>();
    for o in objects {
        writer.apply_watcher_event(&Event::Apply(o));
    }
    std::mem::forget(writer);
    reader
}

fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (n, m) = (arg(1, 10_000), arg(2, 20));
    assert_eq!(
        m,
        shapes::BACKENDS,
        "the shapes are of {} backends",
        shapes::BACKENDS
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let c = step("caches (as the bench leaves them)", || {
        Caches {
        services: store((0..n).map(shapes::service)),
        pods: store((0..n * m).map(|b| CachedPod::from(shapes::pod(b, n)))),
        namespaces: store(std::iter::once(obj::<Namespace>(
            json!({"metadata": {"name": "default"}}),
        ))),
        nodes: store((0..n).map(|i| shapes::node(i, n))),
        vpcs: store(std::iter::once(obj::<Vpc>(json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": "vpc1"}, "spec": {}})))),
        subnets: store((0..shapes::SUBNETS).map(|s| obj::<Subnet>(json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": format!("bench-{s}")},
            "spec": {"vpc": "vpc1", "cidrBlock": format!("10.{}.0.0/16", 100 + s)}})))),
        eips: store(std::iter::empty()),
        baremetals: store(std::iter::empty()),
        vnicips: store(std::iter::empty()),
        probes: store((0..n * m).map(|b| CachedProbe::from(shapes::probe(b, n)))),
        k8s_services: store((0..n).map(|i| shapes::generated(i, n).service)),
        endpoints: store((0..n).map(|i| CachedEndpoints::from(shapes::generated(i, n).endpoints))),
        slices: store((0..n).map(|i| CachedSlice::from(shapes::generated(i, n).slice))),
        agent_leases: store(std::iter::empty()),
        leases_stale_since: Default::default(),
        vmis: None,
    }
    });
    let client =
        kube::Client::try_from(kube::Config::new("https://127.0.0.1:9".parse().unwrap())).unwrap();
    let pools = ServicePools {
        cluster_ips: Pool::subnet("10.96.0.0/12", None, &[]).unwrap(),
        eips: None,
    };
    let pass = Pass {
        client: &client,
        c: &c,
        pools: &pools,
        eip_range: None,
        cluster_dns: None,
        shadow: true,
        beside: None,
    };
    let (wake, _woken) = tokio::sync::mpsc::channel(1);
    let writes = Writes::new(wake);
    let full_pass =
        |st: &mut PassState| rt.block_on(pass.run(Changes::everything(), st, None, &writes));
    let mut st = PassState::default();
    step("a full pass planned as a standby (Pass::run)", || {
        full_pass(&mut st)
    });
    let services: Vec<ferry_net::ServiceState> = st.net.values().cloned().collect();
    println!(
        "  {} services planned, {} with every backend",
        st.net.len(),
        services.iter().filter(|s| s.backends.len() == m).count()
    );
    let state = step("the desired NB state of a full convergence", || {
        ferry_controller::net_model::network_state(
            ferry_controller::caches::net_objects(&c),
            services,
            &ferry_controller::network::NetworkConfig {
                remotes: Vec::new(),
                tls: None,
                gateway_chassis: "ch".into(),
                external: None,
                max_lb_per_txn: 1000,
            },
            None,
        )
    });
    // The full convergence's own cost, on a real NB (the test kit's `ovsdb-server`): the
    // first one fills the NB, the second finds it converged, as the last full pass of a
    // bench run does.
    let server = ferry_testkit::ovsdb::NbServer::standalone();
    let nb = rt
        .block_on(ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config(vec![
            server.unix_remote(),
        ])))
        .unwrap();
    let applier = ferry_nb::Applier::new(nb, 1000);
    let first = step("a full convergence into an empty NB", || {
        rt.block_on(applier.ensure_state(state.clone())).unwrap()
    });
    println!(
        "  {} desired rows, {} transactions, converged {}",
        first.0.rows.len(),
        first.1.transactions(),
        first.1.converged
    );
    drop(first);
    let (rows, bytes) = applier
        .client()
        .with_mirror(|m| (m.len(), m.estimated_bytes()));
    println!(
        "  the mirror: {rows} rows, {:.1} MiB by its own estimate",
        bytes as f64 / 1048576.0
    );
    let again = step("a full convergence of a converged NB", || {
        rt.block_on(applier.ensure_state(state.clone())).unwrap()
    });
    assert_eq!(again.1.transactions(), 0, "the NB was converged");
    drop(again);
    // Its parts, one by one.
    let desired = step("  its desired rows (build_desired)", || {
        ferry_net::build_desired(&state)
    });
    // Whole rows, as the applier read them before 141f129, beside what it reads now.
    let whole = step("  the mirror's rows whole", || {
        applier.client().with_mirror(ferry_nb::current_rows)
    });
    let plan = step("  the diff on them", || {
        ferry_net::diff(&desired, &whole, 1000)
    });
    assert!(plan.is_empty(), "the NB was converged");
    step("  both dropped", || drop((whole, plan)));
    let current = step("  the mirror's rows as the diff indexes them", || {
        applier.client().with_mirror(ferry_nb::indexed_rows)
    });
    let plan = step("  the diff (compared rows read one by one)", || {
        let full: ferry_net::FullRow = &|r| {
            let row = applier.client().with_mirror(|m| m.row(&r.table, &r.uuid));
            Some(std::borrow::Cow::Owned(row?))
        };
        ferry_net::diff_fenced_with(&desired, &current, full, 1000, &Default::default())
    });
    assert!(plan.is_empty(), "the NB was converged");
    step("  all three dropped (desired, index, diff)", || {
        drop((desired, current, plan))
    });
    step("  the NB mirror dropped", || drop(applier));
    step("  dropped", || drop(state));
    step("a second full pass on the warm state", || {
        full_pass(&mut st)
    });
    let PassState {
        index, claims, net, ..
    } = st;
    step("  its index dropped", || drop(index));
    step("  its claims dropped", || drop(claims));
    step("  its NB states dropped", || drop(net));
    println!(
        "{}",
        json!({"services": n, "backends": m, "steps": *STEPS.lock().unwrap()})
    );
}
