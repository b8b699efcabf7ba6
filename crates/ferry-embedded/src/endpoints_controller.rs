//! The endpoints controller's I/O: reflectors for Services, Pods and the Endpoints and
//! EndpointSlices it wrote; each change marks the Services it concerns, and a pass re-plans
//! them with [`crate::endpoints::plan`] and writes only the difference (create, replace or
//! delete). Level-triggered: a pass reads the caches as they are, whatever woke it, and a
//! full pass runs at start and every few minutes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::EmbeddedError;
use crate::endpoints::{
    ENDPOINTS_MANAGED_BY, MANAGER, SERVICE_NAME, SLICE_MANAGED_BY, hands_off, plan,
};

/// How often every Service is re-planned even if no watch event said so.
const RESYNC: Duration = Duration::from_secs(300);
/// How long a pass waits for more events before it starts (bursts become one pass).
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How long a failed write waits before its Service is planned again.
const RETRY: Duration = Duration::from_secs(1);

/// What a watch event concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    All,
    Namespace(String),
    Service(String, String),
}

/// The Services waiting for a pass.
#[derive(Default)]
struct Queue {
    set: Mutex<BTreeSet<Dirty>>,
    notify: Notify,
}

impl Queue {
    fn push(&self, d: Dirty) {
        if let Ok(mut s) = self.set.lock() {
            s.insert(d);
        }
        self.notify.notify_one();
    }
    fn take(&self) -> BTreeSet<Dirty> {
        self.set
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// A reflector store fed by a watch whose events go to `queue` as `dirty(obj)`.
fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    queue: Arc<Queue>,
    dirty: fn(&K) -> Option<Dirty>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, cfg)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => {
                    if let Some(d) = dirty(&o) {
                        queue.push(d);
                    }
                }
                Ok(Event::InitDone) => queue.push(Dirty::All),
                Ok(Event::Init) => {}
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
            }
        }
    });
    store
}

fn ns_name<K: Resource>(o: &K) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// What this controller last wrote, per object: (resourceVersion returned, object). A
/// cache older than that write is not a reason to write again.
type Written = HashMap<(String, String), (String, serde_json::Value)>;

struct Ctx {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    queue: Arc<Queue>,
    written_endpoints: Written,
    written_slices: Written,
}

/// Runs the Endpoints and EndpointSlice controller until `shutdown` turns true.
pub async fn run(client: Client, mut shutdown: watch::Receiver<bool>) -> Result<(), EmbeddedError> {
    let queue = Arc::new(Queue::default());
    let ours_ep = format!("{ENDPOINTS_MANAGED_BY}={MANAGER}");
    let ours_slice = format!("{SLICE_MANAGED_BY}={MANAGER}");
    let mut ctx = Ctx {
        services: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            queue.clone(),
            |s: &Service| {
                let (ns, n) = ns_name(s);
                Some(Dirty::Service(ns, n))
            },
        ),
        pods: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            queue.clone(),
            |p: &Pod| p.metadata.namespace.clone().map(Dirty::Namespace),
        ),
        endpoints: reflect(
            Api::all(client.clone()),
            watcher::Config::default().labels(&ours_ep),
            queue.clone(),
            |e: &Endpoints| {
                let (ns, n) = ns_name(e);
                Some(Dirty::Service(ns, n))
            },
        ),
        slices: reflect(
            Api::all(client.clone()),
            watcher::Config::default().labels(&ours_slice),
            queue.clone(),
            |s: &EndpointSlice| {
                let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME)?.clone();
                Some(Dirty::Service(s.metadata.namespace.clone()?, svc))
            },
        ),
        client,
        queue: queue.clone(),
        written_endpoints: Written::new(),
        written_slices: Written::new(),
    };
    let ready = async {
        let _ = ctx.services.wait_until_ready().await;
        let _ = ctx.pods.wait_until_ready().await;
        let _ = ctx.endpoints.wait_until_ready().await;
        let _ = ctx.slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    tracing::info!("endpoints controller: caches warm");
    queue.push(Dirty::All);
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = resync.tick() => queue.push(Dirty::All),
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tokio::time::sleep(DEBOUNCE).await;
        let dirty = queue.take();
        if dirty.is_empty() {
            continue;
        }
        ctx.pass(dirty).await;
    }
}

impl Ctx {
    /// Plans and writes every Service `dirty` concerns.
    async fn pass(&mut self, dirty: BTreeSet<Dirty>) {
        let all = dirty.contains(&Dirty::All);
        let namespaces: BTreeSet<&str> = dirty
            .iter()
            .filter_map(|d| match d {
                Dirty::Namespace(ns) => Some(ns.as_str()),
                _ => None,
            })
            .collect();
        let mut keys: BTreeSet<(String, String)> = dirty
            .iter()
            .filter_map(|d| match d {
                Dirty::Service(ns, n) => Some((ns.clone(), n.clone())),
                _ => None,
            })
            .collect();
        for s in self.services.state() {
            let (ns, n) = ns_name(s.as_ref());
            if all || namespaces.contains(ns.as_str()) {
                keys.insert((ns, n));
            }
        }
        if all {
            // What this controller wrote for Services that are gone.
            for e in self.endpoints.state() {
                keys.insert(ns_name(e.as_ref()));
            }
            for s in self.slices.state() {
                if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME)) {
                    keys.insert((
                        s.metadata.namespace.clone().unwrap_or_default(),
                        svc.clone(),
                    ));
                }
            }
        }
        let pods = self.pods.state();
        let mut by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in &pods {
            by_ns
                .entry(p.metadata.namespace.as_deref().unwrap_or_default())
                .or_default()
                .push(p.as_ref());
        }
        for (ns, name) in keys {
            let pods = by_ns
                .get(ns.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Err(e) = self.reconcile(&ns, &name, pods).await {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "writing endpoints failed; retrying");
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY).await;
                    queue.push(Dirty::Service(ns, name));
                });
            }
        }
    }

    /// Converges one Service's Endpoints and EndpointSlices.
    async fn reconcile(
        &mut self,
        ns: &str,
        name: &str,
        pods: &[&Pod],
    ) -> Result<(), EmbeddedError> {
        let svc = self.services.get(&ObjectRef::new(name).within(ns));
        if svc.as_deref().is_some_and(hands_off) {
            return Ok(());
        }
        let desired = svc.as_deref().and_then(|s| plan(s, pods));
        let ep_api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let slice_api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let mine: Vec<String> = self
            .slices
            .state()
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME))
                        .map(String::as_str)
                        == Some(name)
            })
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let Some(d) = desired else {
            if self
                .endpoints
                .get(&ObjectRef::new(name).within(ns))
                .is_some()
            {
                delete(&ep_api, ns, name).await?;
                self.written_endpoints.remove(&(ns.into(), name.into()));
            }
            for s in mine {
                delete(&slice_api, ns, &s).await?;
                self.written_slices.remove(&(ns.into(), s));
            }
            return Ok(());
        };
        upsert(&ep_api, &self.endpoints, &mut self.written_endpoints, d.endpoints, |e| {
            serde_json::json!({"labels": e.metadata.labels, "owners": e.metadata.owner_references, "subsets": e.subsets})
        })
        .await?;
        let want: BTreeSet<String> = d
            .slices
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        for s in d.slices {
            upsert(&slice_api, &self.slices, &mut self.written_slices, s, |s| {
                serde_json::json!({"labels": s.metadata.labels, "owners": s.metadata.owner_references,
                    "type": s.address_type, "endpoints": s.endpoints, "ports": s.ports})
            })
            .await?;
        }
        for s in mine.into_iter().filter(|s| !want.contains(s)) {
            delete(&slice_api, ns, &s).await?;
            self.written_slices.remove(&(ns.into(), s));
        }
        Ok(())
    }
}

/// Whether the cached resourceVersion is newer than the one a write returned (numeric on
/// Ferry's server; an opaque one is taken as newer, so the write is made again).
fn rv_newer(cached: Option<&str>, written: &str) -> bool {
    match (
        cached.and_then(|c| c.parse::<u64>().ok()),
        written.parse::<u64>(),
    ) {
        (Some(c), Ok(w)) => c > w,
        _ => true,
    }
}

/// Creates or replaces `want` unless the cache (or this controller's last write, when the
/// cache is behind it) already has it.
async fn upsert<K>(
    api: &Api<K>,
    store: &Store<K>,
    written: &mut Written,
    mut want: K,
    content: impl Fn(&K) -> serde_json::Value,
) -> Result<(), EmbeddedError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let (ns, name) = ns_name(&want);
    let key = (ns.clone(), name.clone());
    let body = content(&want);
    let cur = store.get(&ObjectRef::new(&name).within(&ns));
    if let Some(c) = &cur {
        if content(c) == body {
            return Ok(());
        }
        // Already written by this controller, and nobody wrote it since (the cache shows
        // that write, or is behind it): the difference is the server's or the cache's lag.
        if let Some((rv, w)) = written.get(&key)
            && *w == body
            && !rv_newer(c.meta().resource_version.as_deref(), rv)
        {
            return Ok(());
        }
    }
    let err = |source| EmbeddedError::Write {
        kind: K::kind(&()).to_string(),
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let done = match cur {
        Some(c) => {
            want.meta_mut().resource_version = c.meta().resource_version.clone();
            api.replace(&name, &pp, &want).await.map_err(err)?
        }
        None => match api.create(&pp, &want).await {
            Ok(o) => o,
            // Someone else's object of that name (say Endpoints written by hand before the
            // Service had a selector): take it over, as kube-controller-manager does.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let theirs = api.get(&name).await.map_err(err)?;
                want.meta_mut().resource_version = theirs.meta().resource_version.clone();
                api.replace(&name, &pp, &want).await.map_err(err)?
            }
            Err(e) => return Err(err(e)),
        },
    };
    written.insert(
        key,
        (
            done.meta().resource_version.clone().unwrap_or_default(),
            body,
        ),
    );
    Ok(())
}

async fn delete<K>(api: &Api<K>, ns: &str, name: &str) -> Result<(), EmbeddedError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(EmbeddedError::Write {
            kind: K::kind(&()).to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}
