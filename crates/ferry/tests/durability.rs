//! The durability campaign in small (`ferry bench durability --cycles 5 --writers 16`):
//! a real `ferry apiserver` is killed with SIGKILL under 16 concurrent writers and
//! restarted, five times; no acknowledged write may be missing afterwards and no
//! resourceVersion may go back. The full 100-cycle figures are in docs/benchmarks.md.

mod common;

use std::process::Command;

use common::ferry_bin;

#[test]
#[ignore = "kills a real API server process 5 times (about 10 s)"]
fn kill_9_of_the_api_server_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("durability.json");
    let run = Command::new(ferry_bin())
        .args([
            "bench",
            "durability",
            "--cycles",
            "5",
            "--writers",
            "16",
            "--out",
        ])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "ferry bench durability failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    eprintln!("{stdout}");
    assert_eq!(r["cycles"], 5);
    assert!(
        r["acknowledged_writes"].as_u64().unwrap_or(0) > 0,
        "writes were acknowledged: {r}"
    );
    assert_eq!(r["missing_writes"], 0, "{r}");
    assert_eq!(r["rv_regressions"], 0, "{r}");
    assert_eq!(r["unexplained_states"], 0, "{r}");
    assert_eq!(r["problems"], serde_json::json!([]), "{r}");
    Ok(())
}
