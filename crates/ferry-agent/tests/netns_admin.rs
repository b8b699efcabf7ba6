//! Named namespaces the agent creates: a name whose file is no longer a namespace (left
//! by an agent that ran in a private mount namespace and crashed) is replaced, not reused.

use anyhow::Result;

use ferry_agent::netns_admin::{self, Record, is_netns, netns_path};
use ferry_testkit::netns::unique;
use ferry_testkit::tool;

#[test]
#[ignore = "needs root and netns"]
fn create_replaces_a_stale_namespace_file() -> Result<()> {
    let name = unique("stale");
    let path = netns_path(&name);
    std::fs::create_dir_all("/var/run/netns")?;
    std::fs::write(&path, b"")?;
    assert!(!is_netns(&path), "an empty file passed for a namespace");
    let state = tempfile::tempdir()?;
    let record = Record::open(state.path().join("agent.json"));
    let created = netns_admin::create(&name, &record);
    let usable = tool("ip", &["-n", &name, "link", "show", "lo"]);
    let ok_after = is_netns(&path);
    netns_admin::delete(&name, &record);
    assert_eq!(created?, path);
    assert!(
        ok_after,
        "{} is not a namespace after create",
        path.display()
    );
    assert!(usable?.contains("UP"), "lo is not up");
    assert!(!path.exists(), "delete left {}", path.display());
    assert!(record.snapshot().netns.is_empty());
    Ok(())
}
