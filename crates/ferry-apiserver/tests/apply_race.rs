//! Regression test for d77084b: a server-side apply that *creates* its object records the
//! applier's managedFields in a second write, and a controller that wrote the object in
//! between (it reacts to the ADDED event at once) made that second write fail its
//! precondition: the applier got a 409 although nothing of its own conflicted. Seen in CI
//! as `kubectl apply --server-side` of a YusurService failing while the controller wrote
//! its status. Without the fix, 12 of these 300 applies got the 409 here.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;
use tokio::sync::Mutex;

/// Objects created by server-side apply; enough that the writer lands in the window
/// between the create and the managedFields write for many of them.
const OBJECTS: usize = 300;
/// Concurrent appliers.
const APPLIERS: usize = 8;
/// Merge patches the writer sends per object, as soon as it sees the object.
const WRITES_PER_OBJECT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_apply_create_is_not_a_409_when_a_controller_writes_in_between() {
    let ts = common::start(Default::default()).await;
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    // The "controller": on every ADDED, patch the object at once, several times.
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = cms
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .expect("watch")
        .boxed();
    let writer_api = cms.clone();
    let writer = tokio::spawn(async move {
        let mut seen = 0;
        let mut writes = Vec::new();
        while seen < OBJECTS {
            let Some(ev) = events.next().await else { break };
            if let Ok(WatchEvent::Added(cm)) = ev {
                seen += 1;
                let api = writer_api.clone();
                writes.push(tokio::spawn(async move {
                    let name = cm.name_any();
                    for i in 0..WRITES_PER_OBJECT {
                        let patch = json!({"metadata": {"labels": {"writer": i.to_string()}}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .expect("the writer's merge patch");
                    }
                }));
            }
        }
        for w in writes {
            w.await.expect("writer task");
        }
        seen
    });

    // The appliers: each object is created by a server-side apply.
    let failures = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let interleaved = Arc::new(Mutex::new(0usize));
    let mut appliers = Vec::new();
    for a in 0..APPLIERS {
        let cms = cms.clone();
        let failures = failures.clone();
        let interleaved = interleaved.clone();
        appliers.push(tokio::spawn(async move {
            for i in (a..OBJECTS).step_by(APPLIERS) {
                let name = format!("race-{i:03}");
                let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"owner": "applier"}});
                match cms
                    .patch(
                        &name,
                        &PatchParams::apply("applier"),
                        &Patch::Apply(&manifest),
                    )
                    .await
                {
                    Ok(cm) => {
                        if cm.labels().contains_key("writer") {
                            *interleaved.lock().await += 1;
                        }
                    }
                    Err(e) => {
                        failures.lock().await.insert(name, e.to_string());
                    }
                }
            }
        }));
    }
    for a in appliers {
        a.await.expect("applier task");
    }
    let seen = writer.await.expect("writer");
    let failures = failures.lock().await.clone();
    eprintln!(
        "{OBJECTS} applies; the writer saw {seen}; {} answers already carried the writer's label",
        *interleaved.lock().await
    );
    assert!(
        failures.is_empty(),
        "{} server-side applies that create failed ({:?}); the first: {:?}",
        failures.len(),
        failures.keys().collect::<Vec<_>>(),
        failures.values().next()
    );

    // Both writers' fields are kept, and the applier owns its own.
    for i in 0..OBJECTS {
        let cm = cms.get(&format!("race-{i:03}")).await.expect("get");
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("owner"))
                .map(String::as_str),
            Some("applier")
        );
        assert_eq!(
            cm.labels().get("writer").map(String::as_str),
            Some((WRITES_PER_OBJECT - 1).to_string().as_str()),
            "{}",
            cm.name_any()
        );
        let managers: Vec<&str> = cm
            .managed_fields()
            .iter()
            .filter_map(|m| m.manager.as_deref())
            .collect();
        assert!(
            managers.contains(&"applier"),
            "{}: managedFields {managers:?}",
            cm.name_any()
        );
    }
    ts.stop().await;
}
