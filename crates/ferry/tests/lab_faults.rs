//! `ferry lab faults --quick` end to end (issue 15 part 4), in private mount and network
//! namespaces (`scripts/lab-isolated.sh`, so it runs beside any other lab): `ferry lab up
//! --chassis-per-node --ovn-raft 3` with the roles as processes, then a shorter campaign
//! (one chassis per data-plane daemon, a 10 s partition) while scenario 1, scenario 3 and
//! DNS traffic runs, then `ferry lab down`. Asserts what a user would lose: no failed
//! request on already-programmed services through a control-plane kill (northd, the NB
//! and SB leaders, the controller leader with a standby, the API server), the next change
//! programmed after each of them, the EIP answering again after the gateway chassis is
//! lost, every killed part running again, and a clean state audit after every fault. The
//! times against the targets are printed in the table, not asserted here.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

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
         {ferry} lab faults --dir {lab} --quick --partition-s 10 --out {out}; \
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
            "partition node2|API 10s",
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
        assert_eq!(r["audit"], serde_json::json!([]), "{name}: audit: {r}");
        assert!(r["restoredS"].is_number(), "{name}: never ran again: {r}");
        let failed =
            r["failed"].as_u64().unwrap_or(u64::MAX) - r["failedDuringAbort"].as_u64().unwrap_or(0);
        match r["class"].as_str() {
            Some("controlPlane") => {
                assert_eq!(
                    failed, 0,
                    "{name}: requests failed on programmed services: {r}"
                );
                assert!(
                    r["changeProgrammedS"].is_number(),
                    "{name}: the next change was never programmed: {r}"
                );
            }
            Some("gateway") => {
                assert!(
                    r["eipMovedS"].is_number(),
                    "{name}: the EIP never answered again: {r}"
                )
            }
            Some("dataPlane") => {
                assert!(r["recoveryS"].is_number(), "{name}: never recovered: {r}")
            }
            _ => {}
        }
    }
}
