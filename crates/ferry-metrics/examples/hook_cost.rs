//! What each metrics hook costs, per call, with recording on and off (`FERRY_METRICS=off`
//! semantics through `set_enabled`), and what one exposition costs. Prints figures only.
//!
//! `cargo run -p ferry-metrics --example hook_cost`

use std::time::{Duration, Instant};

use ferry_metrics::Component;

fn per_call(n: u32, mut f: impl FnMut(u32)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let n = 200_000;
    let paths = [
        "/api/v1/namespaces/default/pods/p1",
        "/apis/iaas.yusur.io/v1/namespaces/default/networkprobes/p/status",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node1",
        "/apis/iaas.yusur.io/v1/yusurservices",
    ];
    let methods = ["GET", "PATCH", "PUT", "GET"];
    println!("hook                                   on (ns/call)  off (ns/call)");
    let mut rows = Vec::new();
    for on in [true, false] {
        ferry_metrics::set_enabled(on);
        let api = per_call(n, |i| {
            let k = (i % 4) as usize;
            let t = ferry_metrics::apiserver().request(methods[k], paths[k], false);
            let _ = t.finish(axum::response::Response::new(axum::body::Body::empty()));
        });
        let store = per_call(n, |_| {
            ferry_metrics::store().committed(
                8,
                Duration::from_micros(900),
                Duration::from_micros(700),
            )
        });
        let since = Instant::now();
        let pass = per_call(n, |_| {
            ferry_metrics::controller().nb_committed(Some(since), Some(since));
            ferry_metrics::controller().pass(false, Duration::from_millis(2));
        });
        let rows_set = per_call(n / 10, |_| {
            ferry_metrics::controller().set_nb_rows([
                ("Load_Balancer", 1000),
                ("Logical_Switch", 10),
                ("Logical_Switch_Port", 5000),
                ("Logical_Router", 4),
                ("Load_Balancer_Group", 4),
                ("NAT", 3),
            ])
        });
        let probe = per_call(n, |i| {
            ferry_metrics::agent().probe_result(
                if i % 2 == 0 { "TCP" } else { "HTTP" },
                true,
                Duration::from_micros(300),
            )
        });
        rows.push((api, store, pass, rows_set, probe));
    }
    let (on, off) = (rows[0], rows[1]);
    println!(
        "API request (timer + finish)           {:>12.0} {:>14.0}",
        on.0, off.0
    );
    println!(
        "store batch committed                  {:>12.0} {:>14.0}",
        on.1, off.1
    );
    println!(
        "controller pass (nb_committed + pass)  {:>12.0} {:>14.0}",
        on.2, off.2
    );
    println!(
        "NB rows (6 tables)                     {:>12.0} {:>14.0}",
        on.3, off.3
    );
    println!(
        "probe result                           {:>12.0} {:>14.0}",
        on.4, off.4
    );
    ferry_metrics::set_enabled(true);
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..100 {
        bytes = ferry_metrics::encode(&[
            Component::ApiServer,
            Component::Controller,
            Component::Agent,
        ])
        .len();
    }
    println!(
        "exposition of every family: {:.2} ms, {bytes} bytes",
        t.elapsed().as_secs_f64() * 1000.0 / 100.0
    );
}
