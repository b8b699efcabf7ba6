//! kube-rs 5 against the server, with the generated kubeconfig: paginated lists, the
//! kube-runtime watcher (list-then-watch and streaming lists), bookmarks, server-side apply,
//! status patches, optimistic concurrency, 410 for a watch older than the cache's history,
//! ownerReference garbage collection, finalizers, and a kube-runtime Controller.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::YusurService;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": name},
    }))
    .expect("a ConfigMap")
}

fn ysvc(name: &str, port: u16) -> YusurService {
    serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": name},
        "spec": {"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1",
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": name}},
    }))
    .expect("a YusurService")
}

/// Polls `check` until it returns Some, or fails after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_with_limit_and_continue_over_1100_objects() {
    let ts = common::start(Default::default()).await;
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created: Vec<String> = futures::stream::iter(0..1110)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let labels = if i < 1100 {
                    json!({"batch": "page"})
                } else {
                    json!({"batch": "other"})
                };
                cms.create(
                    &PostParams::default(),
                    &configmap(&format!("cm-{i:05}"), labels),
                )
                .await
                .expect("create")
                .name_any()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(created.len(), 1110);

    let mut names = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().labels("batch=page").limit(100);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.expect("list page");
        pages += 1;
        assert!(page.items.len() <= 100, "page {pages} too long");
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        names.extend(page.items.iter().map(|c| c.name_any()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
        assert!(pages < 50, "pagination does not end");
    }
    assert_eq!(pages, 11);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!((names.len(), unique.len()), (1100, 1100));
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "pages are in key order"
    );
    assert!(first_rv.flatten().is_some_and(|rv| !rv.is_empty()));

    // kube-runtime's initial list pages too (500 per page by default).
    let seen = watcher(cms.clone(), watcher::Config::default().labels("batch=page"))
        .try_take_while(|e| futures::future::ready(Ok(!matches!(e, watcher::Event::InitDone))))
        .try_fold(0usize, |n, e| {
            futures::future::ready(Ok(n + usize::from(matches!(
                e,
                watcher::Event::InitApply(_)
            ))))
        })
        .await
        .expect("watcher initial list");
    assert_eq!(seen, 1100);
    ts.stop().await;
}

/// Events of one watcher, forwarded from a background task.
struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<watcher::Event<YusurService>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    fn start(api: Api<YusurService>, config: watcher::Config) -> Events {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut s = watcher(api, config).boxed();
            while let Some(e) = s.next().await {
                match e {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("watcher error: {e}"),
                }
            }
        });
        Events { rx, task }
    }

    async fn next_where(
        &mut self,
        what: &str,
        pred: impl Fn(&watcher::Event<YusurService>) -> bool,
    ) -> watcher::Event<YusurService> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(_)) => {}
                _ => panic!("the watcher never delivered {what}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn applied(e: &watcher::Event<YusurService>, name: &str) -> bool {
    matches!(e, watcher::Event::Apply(o) if o.name_any() == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_create_update_delete_with_list_watch_and_streaming_lists() {
    let ts = common::start(ferry_apiserver::Limits {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let client = ts.client().await;
    let api: Api<YusurService> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &ysvc("before", 80))
        .await
        .expect("create");

    let mut listwatch = Events::start(api.clone(), watcher::Config::default());
    let mut streaming = Events::start(api.clone(), watcher::Config::default().streaming_lists());
    for w in [&mut listwatch, &mut streaming] {
        w.next_where(
            "the existing object",
            |e| matches!(e, watcher::Event::InitApply(o) if o.name_any() == "before"),
        )
        .await;
        w.next_where("InitDone", |e| matches!(e, watcher::Event::InitDone))
            .await;
    }

    api.create(&PostParams::default(), &ysvc("w1", 80))
        .await
        .expect("create");
    for w in [&mut listwatch, &mut streaming] {
        w.next_where("the create", |e| applied(e, "w1")).await;
    }
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .expect("patch");
    for w in [&mut listwatch, &mut streaming] {
        w.next_where("the update", |e| {
            applied(e, "w1")
                && matches!(e, watcher::Event::Apply(o) if o.labels().get("seen").is_some())
        })
        .await;
    }
    api.delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    for w in [&mut listwatch, &mut streaming] {
        w.next_where(
            "the delete",
            |e| matches!(e, watcher::Event::Delete(o) if o.name_any() == "w1"),
        )
        .await;
    }

    // Bookmarks, as kube-runtime asks for them (allowWatchBookmarks=true).
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut raw = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .expect("watch")
        .boxed();
    let bookmark = tokio::time::timeout(WAIT, async {
        while let Some(e) = raw.next().await {
            if let Ok(WatchEvent::Bookmark(b)) = e {
                return b;
            }
        }
        panic!("watch ended without a bookmark")
    })
    .await
    .expect("a bookmark within the timeout");
    assert!(
        bookmark
            .metadata
            .resource_version
            .parse::<u64>()
            .expect("numeric rv")
            >= rv.parse::<u64>().expect("numeric rv")
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_twice_changes_nothing() {
    let ts = common::start(Default::default()).await;
    let api: Api<YusurService> = Api::namespaced(ts.client().await, "default");
    let pp = PatchParams::apply("ferry-test");
    let first = api
        .patch("ssa1", &pp, &Patch::Apply(ysvc("ssa1", 80)))
        .await
        .expect("first apply creates");
    let second = api
        .patch("ssa1", &pp, &Patch::Apply(ysvc("ssa1", 80)))
        .await
        .expect("second apply");
    assert_eq!(first.resource_version(), second.resource_version());
    assert_eq!(second.metadata.generation, Some(1));
    let managers: Vec<(String, String)> = second
        .managed_fields()
        .iter()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("ferry-test".into(), "Apply".into())),
        "{managers:?}"
    );
    let third = api
        .patch("ssa1", &pp, &Patch::Apply(ysvc("ssa1", 81)))
        .await
        .expect("a changed apply");
    assert_ne!(third.resource_version(), second.resource_version());
    assert_eq!(third.metadata.generation, Some(2));
    assert_eq!(third.spec.ports[0].port, 81);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_status_and_409_on_a_stale_replace() {
    let ts = common::start(Default::default()).await;
    let api: Api<YusurService> = Api::namespaced(ts.client().await, "default");
    let created = api
        .create(&PostParams::default(), &ysvc("st1", 80))
        .await
        .expect("create");
    let patched = api
        .patch_status(
            "st1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"clusterIP": "10.96.0.7", "readyEndpoints": 1, "totalEndpoints": 2}})),
        )
        .await
        .expect("patch_status");
    let status = patched.status.clone().expect("status set");
    assert_eq!(status.cluster_ip.as_deref(), Some("10.96.0.7"));
    assert_eq!((status.ready_endpoints, status.total_endpoints), (1, 2));
    assert_eq!(patched.metadata.generation, Some(1), "status is not spec");
    // A status write through the main resource is ignored, as with kube-apiserver.
    let mut via_main = patched.clone();
    via_main.status.as_mut().expect("status").ready_endpoints = 9;
    let replaced = api
        .replace("st1", &PostParams::default(), &via_main)
        .await
        .expect("replace");
    assert_eq!(replaced.status.expect("status").ready_endpoints, 1);

    // Optimistic concurrency: a replace carrying an old resourceVersion is refused.
    let mut fresh = api.get("st1").await.expect("get");
    fresh.spec.ports[0].port = 90;
    api.replace("st1", &PostParams::default(), &fresh)
        .await
        .expect("replace at the current version");
    let mut stale = created;
    stale.spec.ports[0].port = 91;
    let err = api
        .replace("st1", &PostParams::default(), &stale)
        .await
        .expect_err("stale replace must fail");
    assert_eq!(api_code(&err), Some(409), "{err}");
    assert_eq!(api.get("st1").await.expect("get").spec.ports[0].port, 90);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_resource_version_older_than_the_history_gets_410() {
    let ts = common::start(ferry_apiserver::Limits {
        watch_cache_history: 10,
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    let first = cms
        .create(&PostParams::default(), &configmap("hist", json!({})))
        .await
        .expect("create");
    let old_rv = first.resource_version().expect("rv");
    let mut rvs = Vec::new();
    for i in 0..30 {
        let cm = cms
            .patch(
                "hist",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": i.to_string()}})),
            )
            .await
            .expect("patch");
        rvs.push(cm.resource_version().expect("rv"));
    }
    // As kube-apiserver: a 200 whose one event is the 410 (kube-runtime's watcher re-lists
    // on that event, but retries an HTTP 410 at the watch's start forever).
    let s = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .expect("a too old watch is answered with an ERROR event");
    let events: Vec<_> = s.boxed().collect().await;
    assert!(
        matches!(&events[..], [Ok(WatchEvent::Error(e))] if e.code == 410 && e.reason == "Expired"),
        "{events:?}"
    );
    // A resourceVersion still in the history resumes exactly after it, skipping nothing.
    let from = &rvs[24];
    let got: Vec<String> = cms
        .watch(&WatchParams::default().timeout(5), from)
        .await
        .expect("watch from a recent rv")
        .take(5)
        .map(|e| match e {
            Ok(WatchEvent::Modified(c)) => c.resource_version().expect("rv"),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
        .await;
    assert_eq!(got, rvs[25..]);
    ts.stop().await;
}

fn owned_by(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut cm = configmap(name, json!({}));
    cm.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.name_any(),
            uid: owner.uid().expect("owner uid"),
            ..Default::default()
        },
    ]);
    cm
}

async fn gone(cms: &Api<ConfigMap>, name: &str) -> bool {
    cms.get_opt(name).await.expect("get").is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_collects_dependents_in_background_and_foreground() {
    let ts = common::start(Default::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    let pp = PostParams::default();

    // Background (the default): the owner goes at once, the dependent soon after.
    let owner = cms
        .create(&pp, &configmap("owner-bg", json!({})))
        .await
        .expect("owner");
    cms.create(&pp, &owned_by("dep-bg", &owner))
        .await
        .expect("dependent");
    cms.delete("owner-bg", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(gone(&cms, "owner-bg").await);
    eventually("the background dependent to go", || async {
        gone(&cms, "dep-bg").await.then_some(())
    })
    .await;

    // Foreground: the owner waits, marked, until its dependents are gone.
    let owner = cms
        .create(&pp, &configmap("owner-fg", json!({})))
        .await
        .expect("owner");
    cms.create(&pp, &owned_by("dep-fg-1", &owner))
        .await
        .expect("dependent");
    cms.create(&pp, &owned_by("dep-fg-2", &owner))
        .await
        .expect("dependent");
    let marked = cms
        .delete("owner-fg", &DeleteParams::foreground())
        .await
        .expect("delete")
        .left()
        .expect("the owner stays while dependents exist");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    eventually("the foreground owner and dependents to go", || async {
        (gone(&cms, "dep-fg-1").await
            && gone(&cms, "dep-fg-2").await
            && gone(&cms, "owner-fg").await)
            .then_some(())
    })
    .await;

    // Orphan: the dependent stays, released.
    let owner = cms
        .create(&pp, &configmap("owner-or", json!({})))
        .await
        .expect("owner");
    cms.create(&pp, &owned_by("dep-or", &owner))
        .await
        .expect("dependent");
    cms.delete("owner-or", &DeleteParams::orphan())
        .await
        .expect("delete");
    eventually("the orphaning owner to go", || async {
        gone(&cms, "owner-or").await.then_some(())
    })
    .await;
    let dep = cms.get("dep-or").await.expect("the orphan stays");
    assert!(
        dep.owner_references().is_empty(),
        "{:?}",
        dep.owner_references()
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_holds_a_deleted_object_until_removed() {
    let ts = common::start(Default::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    let mut cm = configmap("held", json!({}));
    cm.metadata.finalizers = Some(vec!["ferry.test/keep".into()]);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let marked = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete")
        .left()
        .expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let still = cms.get("held").await.expect("the object stays");
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(still.finalizers(), ["ferry.test/keep"]);
    // A second delete changes nothing.
    let again = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete again")
        .left()
        .expect("still there");
    assert_eq!(
        again.metadata.deletion_timestamp,
        marked.metadata.deletion_timestamp
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "ferry.test/keep"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ]))
            .expect("json patch"),
        ),
    )
    .await
    .expect("removing the finalizer");
    assert!(
        gone(&cms, "held").await,
        "removing the last finalizer deletes"
    );
    ts.stop().await;
}

struct Ctx {
    client: Client,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(obj: Arc<YusurService>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let api: Api<YusurService> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let ports = obj.spec.ports.len();
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": obj.metadata.generation,
            "ready": format!("0/{ports}"),
            "readyEndpoints": 0, "totalEndpoints": ports,
        }})),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<YusurService>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_runtime_controller_reconciles_by_writing_status() {
    let ts = common::start(Default::default()).await;
    let client = ts.client().await;
    let api: Api<YusurService> = Api::namespaced(client.clone(), "default");
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(
                reconcile,
                error_policy,
                Arc::new(Ctx {
                    client: client.clone(),
                }),
            )
            .for_each(|_| async {}),
    );
    api.create(&PostParams::default(), &ysvc("ctl1", 80))
        .await
        .expect("create");
    let observed = |generation: i64| {
        let api = api.clone();
        async move {
            let o = api.get_status("ctl1").await.expect("get");
            o.status
                .filter(|s| s.observed_generation == Some(generation))
                .map(|s| s.ready)
        }
    };
    let ready = eventually("the controller's status", || observed(1)).await;
    assert_eq!(ready.as_deref(), Some("0/1"));
    api.patch(
        "ctl1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ports": [
            {"name": "a", "port": 80, "protocol": "TCP"},
            {"name": "b", "port": 81, "protocol": "TCP"}]}})),
    )
    .await
    .expect("spec change");
    let ready = eventually("the status of generation 2", || observed(2)).await;
    assert_eq!(ready.as_deref(), Some("0/2"));
    controller.abort();
    ts.stop().await;
}

/// A bookmark promises that everything up to its resourceVersion was delivered; a client
/// that resumes from it must miss nothing. So along one watch stream, resourceVersions
/// never go backwards, bookmarks included, even when a slow reader lets events queue up
/// while the bookmark ticker fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_never_overtake_undelivered_events() {
    let ts = common::start(ferry_apiserver::Limits {
        bookmark_interval: Duration::from_millis(1),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let stream = cms
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .expect("watch");
    const WRITERS: usize = 16;
    const WRITES: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let cms = cms.clone();
            tokio::spawn(async move {
                let name = format!("tick-{w}");
                cms.create(&PostParams::default(), &configmap(&name, json!({})))
                    .await
                    .expect("create");
                for i in 1..WRITES {
                    cms.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"i": i.to_string()}})),
                    )
                    .await
                    .expect("patch");
                }
            })
        })
        .collect();
    let mut last: u64 = rv.parse().expect("numeric rv");
    let mut changes = 0;
    let mut bookmarks = 0;
    let mut stream = stream.boxed();
    while changes < WRITERS * WRITES {
        let e = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the watch stalled")
            .expect("the watch ended")
            .expect("a watch event");
        let (kind, rv) = match &e {
            WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                changes += 1;
                ("change", c.resource_version().expect("rv"))
            }
            WatchEvent::Bookmark(b) => {
                bookmarks += 1;
                ("BOOKMARK", b.metadata.resource_version.clone())
            }
            other => panic!("unexpected {other:?}"),
        };
        let rv: u64 = rv.parse().expect("numeric rv");
        assert!(
            rv >= last,
            "{kind} at {rv} after resourceVersion {last} was already promised"
        );
        last = rv;
        // A slow reader: the server's send buffer fills and changes queue behind it.
        if changes < 400 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert!(bookmarks > 0, "no bookmarks were sent");
    ts.stop().await;
}

/// A paginated list is one consistent view for a client that watches from its
/// resourceVersion: a change made between pages to an item of an earlier page is delivered
/// by a watch from the list's resourceVersion (kube-runtime's watcher relies on this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_list_pages_reaches_the_watch_that_follows() {
    let ts = common::start(Default::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("pg-{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    let page1 = cms
        .list(&ListParams::default().limit(5))
        .await
        .expect("page 1");
    let token = page1.metadata.continue_.clone().expect("a continue token");
    assert_eq!(page1.items[0].name_any(), "pg-0");
    cms.patch(
        "pg-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"changed": "between pages"}})),
    )
    .await
    .expect("patch");
    let page2 = cms
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(page2.items.len(), 5);
    assert_eq!(
        page2.metadata.resource_version, page1.metadata.resource_version,
        "every page reports the first page's resourceVersion"
    );
    let rv = page2.metadata.resource_version.expect("rv");
    let mut w = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(e) = w.next().await {
            if let Ok(WatchEvent::Modified(c)) = e
                && c.name_any() == "pg-0"
            {
                return c;
            }
        }
        panic!("the watch ended without the change to pg-0")
    })
    .await
    .expect("the change between pages was never delivered");
    assert_eq!(
        seen.data.expect("data").get("changed").map(String::as_str),
        Some("between pages")
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continue_token_older_than_the_history_gets_410() {
    let ts = common::start(ferry_apiserver::Limits {
        watch_cache_history: 5,
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await, "default");
    for i in 0..4 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("old-{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    let page1 = cms
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let token = page1.metadata.continue_.expect("a continue token");
    for i in 0..10 {
        cms.patch(
            "old-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .expect("patch");
    }
    let err = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("an expired continue token");
    assert_eq!(api_code(&err), Some(410), "{err}");
    ts.stop().await;
}
