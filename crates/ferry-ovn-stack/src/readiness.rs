//! Readiness probes: a daemon is ready when it answers on its socket, never merely
//! because its process is alive (an `ovsdb-server` whose listen failed keeps running).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::jsonrpc;

pub(crate) fn probe_db(sock: &Path, name: &str) -> Result<(), String> {
    let dbs = jsonrpc::call(sock, "list_dbs", json!([]), Duration::from_secs(2))?;
    if dbs.as_array().is_some_and(|a| a.iter().any(|d| d == name)) {
        Ok(())
    } else {
        Err(format!("{} serves {dbs}, not {name}", sock.display()))
    }
}

pub(crate) fn probe_chassis(sb_sock: &Path, system_id: &str) -> Result<(), String> {
    let select = json!({"op": "select", "table": "Chassis",
        "where": [["name", "==", system_id]], "columns": ["name"]});
    let res = jsonrpc::call(
        sb_sock,
        "transact",
        json!(["OVN_Southbound", select]),
        Duration::from_secs(2),
    )?;
    let rows = res
        .get(0)
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_array);
    if rows.is_some_and(|r| !r.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "chassis {system_id:?} not registered in the SB yet"
        ))
    }
}
