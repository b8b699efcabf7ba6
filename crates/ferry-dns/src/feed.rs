//! The Kubernetes side: [`run_feed`] mirrors Services, EndpointSlices and YusurServices with
//! kube-rs reflectors and publishes freshly built [`Zones`] on a watch channel whenever they
//! change (bursts coalesced for a few milliseconds). Works against any API server: Ferry's
//! own or a real cluster's kube-apiserver.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::YusurService;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::zones::{Snapshot, Zones, build_zones};

/// How long a change waits for more changes before the zones are rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(5);

/// Why the feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the {kind} watch stopped before its first list completed")]
    NeverReady { kind: &'static str },
    #[error("building the zones failed: {0}")]
    Build(String),
}

fn reflect<K>(client: &Client, wake: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let wake = wake.clone();
    tasks.spawn(async move {
        stream
            .for_each(|ev| {
                if let Err(e) = &ev {
                    tracing::debug!(error = %e, "DNS feed watch error (retrying)");
                }
                wake.notify_one();
                futures::future::ready(())
            })
            .await;
    });
    reader
}

/// The current objects of the three stores.
fn snapshot(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    ysvcs: &Store<YusurService>,
) -> Snapshot {
    Snapshot {
        services: services.state().iter().map(|s| (**s).clone()).collect(),
        slices: slices.state().iter().map(|s| (**s).clone()).collect(),
        ysvcs: ysvcs.state().iter().map(|s| (**s).clone()).collect(),
    }
}

/// Watches the cluster through `client` and publishes the zones of `domain` on `zones`
/// after every change that alters them, and once as soon as all three lists are in (so
/// `changed()` on a receiver means "ready", even for an empty cluster). Returns when every
/// receiver is gone.
pub async fn run_feed(
    client: Client,
    domain: String,
    zones: watch::Sender<Arc<Zones>>,
) -> Result<(), FeedError> {
    let wake = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let services = reflect::<Service>(&client, &wake, &mut tasks);
    let slices = reflect::<EndpointSlice>(&client, &wake, &mut tasks);
    let ysvcs = reflect::<YusurService>(&client, &wake, &mut tasks);
    services
        .wait_until_ready()
        .await
        .map_err(|_| FeedError::NeverReady { kind: "Service" })?;
    slices
        .wait_until_ready()
        .await
        .map_err(|_| FeedError::NeverReady {
            kind: "EndpointSlice",
        })?;
    ysvcs
        .wait_until_ready()
        .await
        .map_err(|_| FeedError::NeverReady {
            kind: "YusurService",
        })?;
    let mut first = true;
    loop {
        // Building is CPU work proportional to the cluster: keep it off the async workers.
        let (s, e, y, d) = (
            services.clone(),
            slices.clone(),
            ysvcs.clone(),
            domain.clone(),
        );
        let built =
            match tokio::task::spawn_blocking(move || build_zones(&d, &snapshot(&s, &e, &y))).await
            {
                Ok(z) => z,
                Err(e) => return Err(FeedError::Build(e.to_string())),
            };
        // The first build is always sent, even when it equals what the channel started
        // with (an empty cluster): a caller waits for it before opening its sockets.
        let changed = zones.send_if_modified(|current| {
            if !first && **current == built {
                return false;
            }
            *current = Arc::new(built);
            true
        });
        first = false;
        if changed {
            tracing::debug!(serial = zones.borrow().soa().serial, "DNS zones rebuilt");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = zones.closed() => return Ok(()),
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
