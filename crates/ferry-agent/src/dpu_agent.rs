//! The `dpu` agent's binder: watches the Pods of its host, binds the representors the host
//! announced ([`crate::dpu::ANNOTATION_VF`]) to OVS with the pods' `iface-id`s, unbinds
//! those of pods that are gone, and renews the DPU Lease its host admits pods by. The
//! decisions are [`crate::dpu::desired_bindings`] and [`crate::dpu::plan`]; this module is
//! the loop and the OVSDB read of what is bound ([`parse_present`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

use crate::dpu::{self, DpuOvs, EXTERNAL_ID_VF};

/// Where the DPU's OVS is (owned, for the task).
#[derive(Debug, Clone)]
pub struct OvsPlace {
    pub db: PathBuf,
    pub bridge: String,
    pub netns: Option<PathBuf>,
}

/// The marked representor ports (name -> iface-id) from
/// `ovs-vsctl --format=json --columns=name,external_ids find Interface external_ids:ferry-vf=true`.
pub fn parse_present(json: &str) -> Result<BTreeMap<String, String>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let rows = v["data"].as_array().ok_or("no data array")?;
    let mut out = BTreeMap::new();
    for row in rows {
        let name = row[0].as_str().ok_or("a row without a name")?;
        let pairs = row[1][1].as_array().ok_or("a row without external_ids")?;
        let id = pairs
            .iter()
            .find(|p| p[0] == "iface-id")
            .and_then(|p| p[1].as_str())
            .unwrap_or_default();
        out.insert(name.to_string(), id.to_string());
    }
    Ok(out)
}

fn present(ovs: &OvsPlace) -> Result<BTreeMap<String, String>, String> {
    let db = format!("--db=unix:{}", ovs.db.display());
    let mark = format!("external_ids:{EXTERNAL_ID_VF}=true");
    let out = crate::command::run(
        "ovs-vsctl",
        &[
            &db,
            "--timeout=30",
            "--format=json",
            "--columns=name,external_ids",
            "find",
            "Interface",
            &mark,
        ],
    )
    .map_err(|e| e.to_string())?;
    parse_present(&out)
}

/// One reconciliation: reads what is bound, applies the plan; errors are logged and the
/// next pass retries.
fn reconcile(ovs: &OvsPlace, desired: &BTreeMap<String, String>) {
    let present = match present(ovs) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "reading the bound representors failed");
            return;
        }
    };
    let plan = dpu::plan(desired, &present);
    let place = DpuOvs {
        db: &ovs.db,
        bridge: &ovs.bridge,
        netns: ovs.netns.as_deref(),
    };
    for (rep, iface_id) in &plan.bind {
        match dpu::bind(&place, rep, iface_id) {
            Ok(()) => tracing::info!(%rep, %iface_id, "representor bound"),
            Err(e) => tracing::warn!(%rep, error = %e, "binding the representor failed"),
        }
    }
    for rep in &plan.unbind {
        match dpu::unbind(&place, rep) {
            Ok(()) => tracing::info!(%rep, "representor unbound"),
            Err(e) => tracing::warn!(%rep, error = %e, "unbinding the representor failed"),
        }
    }
}

/// Runs until `shutdown` turns true: binds the representors of host `node`'s pods and
/// renews `ferry-dpu-NODE`.
pub async fn run(client: Client, node: String, ovs: OvsPlace, mut shutdown: watch::Receiver<bool>) {
    let (reader, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector::reflector(writer, watcher(Api::all(client.clone()), config))
        .backoff(ferry_api::WatchBackoff::default());
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        stream
            .for_each(|_| {
                let _ = wake_tx.try_send(());
                futures::future::ready(())
            })
            .await;
    });
    let lease = dpu::dpu_lease_name(&node);
    let holder = format!("{node}-dpu");
    // The DPU Lease stays short whatever the node Lease's timing: the host refuses new
    // pods within 10 s of its DPU agent stopping (docs/dpu.md).
    let timing = ferry_api::AgentLeaseTiming::FAST;
    let mut lease_tick = tokio::time::interval(timing.renew_every);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                let renewal = crate::node::renew_named_lease(
                    &client,
                    &lease,
                    &holder,
                    timing.duration_seconds(),
                );
                if let Err(e) = crate::node::bounded(crate::node::REQUEST_TIMEOUT, renewal).await {
                    tracing::warn!(%lease, error = %e, "renewing the DPU lease failed");
                }
                continue;
            }
            _ = wake.recv() => {}
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let pods: Vec<Pod> = reader.state().iter().map(|p| (**p).clone()).collect();
        let desired = dpu::desired_bindings(&pods, &node);
        let ovs = ovs.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reconcile(&ovs, &desired)).await {
            tracing::warn!(error = %e, "the representor pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_marked_ports_from_ovs_vsctl_json() {
        let cases = [
            (
                r#"{"data":[["fy0000000000001",["map",[["ferry-vf","true"],["iface-id","a.default"]]]],
                    ["fy0000000000002",["map",[["ferry-vf","true"]]]]],"headings":["name","external_ids"]}"#,
                Ok(BTreeMap::from([
                    ("fy0000000000001".to_string(), "a.default".to_string()),
                    ("fy0000000000002".to_string(), String::new()),
                ])),
            ),
            (
                r#"{"data":[],"headings":["name","external_ids"]}"#,
                Ok(BTreeMap::new()),
            ),
            (r#"{"headings":[]}"#, Err("no data array".to_string())),
        ];
        for (json, want) in cases {
            assert_eq!(parse_present(json), want, "{json}");
        }
    }
}
