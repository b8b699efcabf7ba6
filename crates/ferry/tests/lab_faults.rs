//! `ferry lab faults --quick` end to end (issue 15 part 4), in private mount and network
//! namespaces (`scripts/lab-isolated.sh`, so it runs beside any other lab): `ferry lab up
//! --chassis-per-node --ovn-raft 3` with the roles as processes, then a shorter campaign
//! (one chassis per data-plane daemon; the 30 s partition) while scenario 1,
//! scenario 3 and DNS traffic runs, then `ferry lab down`.
//!
//! Asserted, for every fault: it was injected, the killed part ran again and the state
//! audit is clean afterwards (NB rows, every probe Healthy, endpoints ready, hosts bound,
//! each process once). Per kind: after every control-plane kill (northd, the NB and SB
//! leaders, the controller leader with a standby, the API server) the next change is
//! programmed (the API server's kill -9 used to freeze every controller watch: 0332ae8); a
//! vswitchd or ovn-controller kill recovers; after node2's agent was cut off the API server
//! its probes are Healthy again (they stayed Unknown: 693e744); losing the gateway chassis
//! moves the EIP; after a node agent's kill -9 its node's pods and probe ports carry
//! traffic again (the restarted agent made their veths again under the same names and the
//! userspace vswitchd kept reading the deleted ones: `plumb::ensure`), which the audit's
//! probes and endpoints show.
//!
//! Not asserted: 0 failed requests through a control-plane kill, the partition or the
//! agent (rare failures remain that no vswitchd abort explains; a partition takes node2's
//! backends out of the load balancers while its Lease has lapsed; the agent serves its
//! node's DNS and its socket LB detaches while it is down), and the times. Times
//! are never asserted here; the printed table says which rows miss.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The faults run here: all of the quick campaign's.
const ROWS: &str =
    "vswitchd,ovn-controller,northd,nb,sb,controller,apiserver,partition,gateway,agent";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
#[ignore = "needs root, OVN/OVS, nftables and network namespaces"]
fn lab_faults_quick_campaign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("lab");
    let out = dir.path().join("faults.json");
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let script = format!(
        "{ferry} lab up --dir {lab} --chassis-per-node --ovn-raft 3 && \
         {ferry} lab faults --dir {lab} --quick --only {ROWS} --out {out}; \
         rc=$?; {ferry} lab down --dir {lab} >/dev/null; exit $rc",
        lab = lab.display(),
        out = out.display()
    );
    let run = Command::new(repo().join("scripts/lab-isolated.sh"))
        .args(["sh", "-c", &script])
        .env("FERRY_ROLE_PROCESSES", "true")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run scripts/lab-isolated.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON report ({e}); lab up or faults failed:\n{stdout}"));
    let rows = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "ovs-vswitchd@node2",
            "ovn-controller@node1",
            "ovn-northd",
            "NB leader",
            "SB leader",
            "controller leader",
            "API server",
            "partition node2|API 30s",
            "gateway chassis",
            "agent@node1",
        ],
        "{report}"
    );
    assert_eq!(report["baselineAudit"], serde_json::json!([]), "{report}");
    for r in rows {
        let name = r["name"].as_str().unwrap_or_default();
        assert!(
            !r["target"].as_str().unwrap_or_default().is_empty(),
            "{name}: nothing was injected: {r}"
        );
        assert!(r["restoredS"].is_number(), "{name}: never ran again: {r}");
        assert_eq!(r["audit"], serde_json::json!([]), "{name}: audit: {r}");
        match r["class"].as_str() {
            Some("controlPlane") => assert!(
                r["changeProgrammedS"].is_number(),
                "{name}: the next change was never programmed: {r}"
            ),
            Some("dataPlane") => {
                assert!(r["recoveryS"].is_number(), "{name}: never recovered: {r}")
            }
            Some("gateway") => assert!(
                r["eipMovedS"].is_number(),
                "{name}: the EIP never answered again: {r}"
            ),
            _ => {}
        }
    }
}
