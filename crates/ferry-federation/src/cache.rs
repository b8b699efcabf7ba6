//! The one seam both loops read the API servers through: a kube-runtime reflector per kind
//! that wakes its loop on every change, and a record of writes still in flight so a
//! cache that lags behind our own write does not cause the same write twice.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Starts a reflector over `api` and returns its store; `on_change` hears of every object
/// that changed, or `None` when the watch (re)listed everything.
pub fn reflect<K, F>(api: Api<K>, config: watcher::Config, on_change: F) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Option<&K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => on_change(Some(&o)),
                Ok(watcher::Event::InitDone) => on_change(None),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(e) => tracing::debug!(error = %e, "watch error; the watcher retries"),
            }
        }
    });
    reader
}

/// What changed since the last pass: some keys, or everything; each mark wakes the loop
/// (a bounded channel of one: a burst becomes one pass).
#[derive(Debug)]
pub struct Dirty<Key> {
    marks: std::sync::Mutex<(bool, HashSet<Key>)>,
    wake: mpsc::Sender<()>,
}

impl<Key: Hash + Eq> Dirty<Key> {
    pub fn new(wake: mpsc::Sender<()>) -> Self {
        Dirty {
            marks: std::sync::Mutex::new((true, HashSet::new())),
            wake,
        }
    }

    pub fn mark(&self, key: Key) {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .insert(key);
        let _ = self.wake.try_send(());
    }

    pub fn mark_all(&self) {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        let _ = self.wake.try_send(());
    }

    /// Wakes the loop without marking anything (it re-reads what it always reads).
    pub fn poke(&self) {
        let _ = self.wake.try_send(());
    }

    /// `(everything?, keys)` since the last call.
    pub fn take(&self) -> (bool, HashSet<Key>) {
        std::mem::take(&mut *self.marks.lock().unwrap_or_else(|e| e.into_inner()))
    }
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
