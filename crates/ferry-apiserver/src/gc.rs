//! Garbage collection: dependents of a deleted owner are deleted (background propagation),
//! a `foregroundDeletion` owner waits for its dependents, an `orphan` owner releases them,
//! and a deleted namespace takes its objects with it.

use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::cache::{Cache, Cached, ChangeKind};
use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::resources::{Registry, ResourceType};

fn resource_of(registry: &RwLock<Registry>, key: &str) -> Option<ResourceType> {
    let reg = registry.read().unwrap_or_else(|e| e.into_inner());
    reg.all()
        .find(|t| key.starts_with(&t.key_prefix()))
        .cloned()
}

fn internal() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_manager: None,
        field_validation: FieldValidation::Ignore,
    }
}

/// Runs the collector until the cache's change stream closes.
pub async fn run(objects: Objects, cache: Arc<Cache>, registry: Arc<RwLock<Registry>>) {
    let Ok(mut sub) = cache.subscribe("/registry/", Some(cache.revision())) else {
        return;
    };
    full_scan(&objects, &cache, &registry).await;
    loop {
        match sub.live.recv().await {
            Ok(ch) => {
                let obj = &ch.object;
                if ch.kind == ChangeKind::Deleted {
                    collect_dependents_of(&objects, &cache, &registry, &obj.uid).await;
                    if obj.key.starts_with("/registry/core/namespaces/") {
                        delete_namespace_contents(&objects, &cache, &registry, &obj.name).await;
                    }
                    // A dependent going away may release an owner waiting in the foreground.
                    for owner in &obj.owners {
                        if let Some(o) = cache.by_uid(owner) {
                            finish_owner(&objects, &cache, &registry, &o).await;
                        }
                    }
                } else {
                    finish_owner(&objects, &cache, &registry, obj).await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                full_scan(&objects, &cache, &registry).await
            }
            Err(_) => return,
        }
    }
}

async fn full_scan(objects: &Objects, cache: &Arc<Cache>, registry: &Arc<RwLock<Registry>>) {
    let (all, _, _) = cache.list("/registry/", None, usize::MAX, |_| true);
    for o in all {
        if !o.owners.is_empty() && o.owners.iter().all(|u| cache.by_uid(u).is_none()) {
            delete(objects, registry, &o).await;
        }
        finish_owner(objects, cache, registry, &o).await;
    }
}

async fn delete(objects: &Objects, registry: &Arc<RwLock<Registry>>, o: &Cached) {
    if let Some(rt) = resource_of(registry, &o.key) {
        let _ = objects
            .delete(
                &rt,
                o.namespace.as_deref(),
                &o.name,
                Some("Background"),
                None,
                None,
                false,
            )
            .await;
    }
}

async fn collect_dependents_of(
    objects: &Objects,
    cache: &Arc<Cache>,
    registry: &Arc<RwLock<Registry>>,
    uid: &str,
) {
    for dep in cache.dependents(uid) {
        if dep
            .owners
            .iter()
            .all(|u| &**u == uid || cache.by_uid(u).is_none())
        {
            tracing::debug!(key = %dep.key, owner = %uid, "garbage-collecting dependent");
            delete(objects, registry, &dep).await;
        }
    }
}

async fn delete_namespace_contents(
    objects: &Objects,
    cache: &Arc<Cache>,
    registry: &Arc<RwLock<Registry>>,
    ns: &str,
) {
    let (all, _, _) = cache.list("/registry/", None, usize::MAX, |o| {
        o.namespace.as_deref() == Some(ns)
    });
    for o in all {
        delete(objects, registry, &o).await;
    }
}

/// Handles an owner being deleted with `foregroundDeletion` or `orphan` finalizers.
async fn finish_owner(
    objects: &Objects,
    cache: &Arc<Cache>,
    registry: &Arc<RwLock<Registry>>,
    o: &Cached,
) {
    // Called for every change: decide from the cached flag before parsing anything.
    if !o.deleting {
        return;
    }
    let v = o.value();
    let finalizers: Vec<String> = v["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    let Some(rt) = resource_of(registry, &o.key) else {
        return;
    };
    let dependents = cache.dependents(&o.uid);
    let mut remove = None;
    if finalizers.iter().any(|f| f == "orphan") {
        for dep in &dependents {
            if let Some(drt) = resource_of(registry, &dep.key) {
                let mut dv = dep.value();
                if let Some(refs) = dv["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(&*o.uid));
                }
                if let Ok(Some(cur)) = objects
                    .current(&drt, dep.namespace.as_deref(), &dep.name)
                    .await
                {
                    let _ = objects
                        .update(
                            &drt,
                            dep.namespace.as_deref(),
                            &dep.name,
                            dv,
                            cur,
                            None,
                            &internal(),
                            "Update",
                        )
                        .await;
                }
            }
        }
        remove = Some("orphan");
    } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
        if dependents.is_empty() {
            remove = Some("foregroundDeletion");
        } else {
            for dep in &dependents {
                if !dep.value()["metadata"]["deletionTimestamp"].is_string() {
                    delete(objects, registry, dep).await;
                }
            }
        }
    }
    if let Some(f) = remove
        && let Ok(Some(cur)) = objects.current(&rt, o.namespace.as_deref(), &o.name).await
    {
        let mut nv: Value = cur.0.clone();
        let left: Vec<String> = finalizers.into_iter().filter(|x| x != f).collect();
        nv["metadata"]["finalizers"] = json!(left);
        let _ = objects
            .update(
                &rt,
                o.namespace.as_deref(),
                &o.name,
                nv,
                cur,
                None,
                &internal(),
                "Update",
            )
            .await;
    }
}
