//! The one seam both loops read the API servers through: a kube-runtime reflector per kind
//! that wakes its loop on every change, and a record of writes still in flight so a
//! cache that lags behind our own write does not cause the same write twice.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Starts a reflector over `api` and returns its store; every event sends on `wake`
/// (a bounded channel of one: a burst becomes one pass).
pub fn reflect<K>(api: Api<K>, config: watcher::Config, wake: mpsc::Sender<()>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "watch error; the watcher retries");
            }
            let _ = wake.try_send(());
        }
    });
    reader
}

/// Writes sent whose effect the cache may not show yet, by key: the value written and the
/// resourceVersion the cache showed before the write.
#[derive(Debug)]
pub struct InFlight<Key, V> {
    sent: HashMap<Key, (V, Option<String>)>,
}

impl<Key, V> Default for InFlight<Key, V> {
    fn default() -> Self {
        InFlight {
            sent: HashMap::new(),
        }
    }
}

impl<Key: Hash + Eq + Clone, V: PartialEq> InFlight<Key, V> {
    /// Whether writing `value` over a cached object at `rv` repeats a write the cache has
    /// not caught up with yet.
    pub fn repeats(&self, key: &Key, value: &V, rv: Option<&str>) -> bool {
        self.sent
            .get(key)
            .is_some_and(|(v, before)| v == value && before.as_deref() == rv)
    }

    pub fn record(&mut self, key: Key, value: V, rv: Option<String>) {
        self.sent.insert(key, (value, rv));
    }

    pub fn forget(&mut self, key: &Key) {
        self.sent.remove(key);
    }

    pub fn clear(&mut self) {
        self.sent.clear();
    }
}
