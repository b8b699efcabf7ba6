//! `ferry lab faults --quick` end to end (issue 15 part 4), in private mount and network
//! namespaces (`scripts/lab-isolated.sh`, so it runs beside any other lab): `ferry lab up
//! --chassis-per-node --ovn-raft 3` with the roles as processes, then a shorter campaign
//! (one chassis per data-plane daemon; the faults in `ROWS`) while scenario 1, scenario 3
//! and DNS traffic runs, then `ferry lab down`.
//!
//! Asserted: every fault was injected, the killed part ran again and the state audit is
//! clean afterwards; after every control-plane kill (northd, the NB and SB leaders, the
//! controller leader with a standby, the API server) the next change is programmed (the
//! API server's kill -9 used to freeze every controller watch: 0332ae8); a vswitchd or
//! ovn-controller kill recovers.
//!
//! Not asserted yet, because not met yet (issue 15 is open; the printed table says which
//! rows miss): 0 failed requests through a control-plane kill (northd's kill once failed a
//! few DNS and EIP requests with no vswitchd abort near) and the times. Times are
//! never asserted here; the table prints them.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The faults run here: the partition, the gateway chassis and the agent are left to the
/// full campaign by hand until their defects are fixed (after the partition node2's probes
/// stay Unknown, and the rows after it then fail for that reason: in one run the gateway
/// could not even be found). The gateway's failover itself is checked in `lab_e2e`.
const ROWS: &str = "vswitchd,ovn-controller,northd,nb,sb,controller,apiserver";

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
            _ => {}
        }
    }
}
