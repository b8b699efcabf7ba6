//! The watch cache: every stored object in memory, kept current by one store watch, with
//! indexes (namespace via key order, labels, owners, `spec.nodeName`). Reads and watches are
//! served from here, not from the store (the 10k-node lesson), except a GET of a
//! leader-election Lease, which reads the store; one store watch fans out to any number of
//! API watchers.
//!
//! Over 600 lines with its tests (~540 without): the cache's apply, indexes, waiters and
//! watch fan-out share one lock and one revision, so they stay together.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use ferry_api::CompactMap;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

/// One cached object: its JSON (resourceVersion filled in) plus the fields indexes need.
///
/// Kept compact: at 10,000 nodes the cache holds ~450,000 objects, and a `String` per field,
/// a `BTreeMap` of labels and a copy of the key in every index cost ~2.3 kB per object beyond
/// its JSON (1 GiB); the key is shared with the indexes and the rest are boxed slices.
#[derive(Debug)]
pub struct Cached {
    pub key: Arc<str>,
    pub json: Bytes,
    pub mod_revision: u64,
    pub namespace: Option<Box<str>>,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub labels: CompactMap,
    pub owners: Box<[Box<str>]>,
    pub node_name: Option<Box<str>>,
    /// `metadata.deletionTimestamp` is set (the garbage collector looks only at these).
    pub deleting: bool,
}

impl Cached {
    /// Builds the cached form of a stored value, stamping `metadata.resourceVersion`.
    pub fn from_stored(key: &str, stored: &[u8], mod_revision: u64) -> Option<Cached> {
        let mut v: Value = serde_json::from_slice(stored).ok()?;
        v["metadata"]["resourceVersion"] = Value::String(mod_revision.to_string());
        let meta = &v["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let owners = meta["ownerReferences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["uid"].as_str().map(Box::from))
                    .collect()
            })
            .unwrap_or_default();
        Some(Cached {
            key: Arc::from(key),
            namespace: meta["namespace"].as_str().map(Box::from),
            name: meta["name"].as_str().unwrap_or_default().into(),
            uid: meta["uid"].as_str().unwrap_or_default().into(),
            labels,
            owners,
            node_name: v["spec"]["nodeName"].as_str().map(Box::from),
            deleting: meta["deletionTimestamp"].is_string(),
            // Shrunk to its length: `to_vec` doubles its buffer as it writes, and the cache
            // would keep the slack of each of its ~450,000 objects at 10,000 nodes.
            json: Bytes::from(serde_json::to_vec(&v).ok()?.into_boxed_slice()),
            mod_revision,
        })
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// An index a list may walk instead of the whole key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexHint {
    Label(String, String),
    Node(String),
}

/// What happened to one key at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// A change as watchers see it. For deletes `object` is the last state, stamped with the
/// delete's revision.
#[derive(Debug)]
pub struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub object: Arc<Cached>,
    pub prev: Option<Arc<Cached>>,
}

/// A set of keys in an index: the keys are the cached objects' own (shared).
type Keys = BTreeSet<Arc<str>>;

#[derive(Default)]
struct State {
    objects: BTreeMap<Arc<str>, Arc<Cached>>,
    /// owner uid -> keys of dependents, for garbage collection.
    dependents: BTreeMap<Box<str>, Keys>,
    /// uid -> key, to find an owner by uid (hashed: uids are never walked in order).
    by_uid: HashMap<Box<str>, Arc<str>>,
    /// `label=value` -> keys, for label-selected lists.
    by_label: BTreeMap<(Box<str>, Box<str>), Keys>,
    /// `spec.nodeName` -> keys, for what an agent lists (its pods, its probes).
    by_node: BTreeMap<Box<str>, Keys>,
    revision: u64,
    /// Recent changes; a watch may start from any revision >= `oldest`.
    history: VecDeque<Arc<Change>>,
    oldest: u64,
    ready: bool,
}

/// Requests waiting for the cache to reach a revision (see [`Cache::wait_for`]).
#[derive(Default)]
struct Waiters {
    /// The newest revision the cache has applied and announced.
    reached: u64,
    /// revision -> the waiters for it. Only those whose revision is reached are woken: a
    /// `tokio::sync::watch` woke every waiter on every applied change, which with a
    /// thousand writes in flight (10,000 nodes renewing their Leases) made each applied
    /// change cost a thousand wake-ups.
    pending: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

/// The cache shared by every request handler.
pub struct Cache {
    state: RwLock<State>,
    changes: broadcast::Sender<Arc<Change>>,
    waiters: Mutex<Waiters>,
    history_limit: usize,
}

/// Why a watch cannot start.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchStartError {
    NotReady,
    TooOld { requested: u64, oldest: u64 },
}

/// A consistent snapshot plus the live changes after it.
pub struct Subscription {
    pub revision: u64,
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

impl Cache {
    pub fn new(history_limit: usize, fanout_buffer: usize) -> Arc<Cache> {
        let (changes, _) = broadcast::channel(fanout_buffer);
        Arc::new(Cache {
            state: RwLock::new(State::default()),
            changes,
            waiters: Mutex::new(Waiters::default()),
            history_limit,
        })
    }

    /// Wakes the waiters of every revision up to `revision`.
    fn reached(&self, revision: u64) {
        let ready = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            w.reached = w.reached.max(revision);
            let after = w.reached + 1;
            let later = w.pending.split_off(&after);
            std::mem::replace(&mut w.pending, later)
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the whole content (start-up, or after the store watch was lost).
    pub fn reset(&self, objects: Vec<Cached>, revision: u64) {
        let mut s = self.write();
        s.objects.clear();
        s.dependents.clear();
        s.by_uid.clear();
        s.by_label.clear();
        s.by_node.clear();
        for o in objects {
            index(&mut s, Arc::new(o));
        }
        s.revision = revision;
        s.history.clear();
        s.oldest = revision;
        s.ready = true;
        drop(s);
        self.reached(revision);
    }

    /// Applies one change from the store watch and fans it out.
    pub fn apply(&self, revision: u64, key: &str, new: Option<Cached>) {
        let mut s = self.write();
        let prev = s.objects.get(key).cloned();
        let change = match new {
            Some(obj) => {
                let obj = Arc::new(obj);
                match &prev {
                    // Most changes (a Lease renewal, a status write) leave every indexed
                    // field as it was: replace the object in place, with one look-up, instead
                    // of taking it out of every index and putting it back (a tenth of the
                    // server's CPU at 10,000 node renewals/s beside 64 writers).
                    Some(p) if same_index_fields(p, &obj) => {
                        if let Some(slot) = s.objects.get_mut(key) {
                            *slot = obj.clone();
                        }
                    }
                    Some(p) => {
                        unindex(&mut s, p);
                        index(&mut s, obj.clone());
                    }
                    None => index(&mut s, obj.clone()),
                }
                let kind = if prev.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                Arc::new(Change {
                    revision,
                    kind,
                    object: obj,
                    prev,
                })
            }
            None => {
                if let Some(p) = &prev {
                    unindex(&mut s, p);
                }
                let Some(p) = prev else {
                    s.revision = revision;
                    drop(s);
                    self.reached(revision);
                    return;
                };
                let mut v = p.value();
                v["metadata"]["resourceVersion"] = Value::String(revision.to_string());
                let last =
                    Cached::from_stored(key, &serde_json::to_vec(&v).unwrap_or_default(), revision)
                        .unwrap_or_else(|| Cached {
                            key: p.key.clone(),
                            json: p.json.clone(),
                            mod_revision: revision,
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            uid: p.uid.clone(),
                            labels: p.labels.clone(),
                            owners: p.owners.clone(),
                            node_name: p.node_name.clone(),
                            deleting: p.deleting,
                        });
                Arc::new(Change {
                    revision,
                    kind: ChangeKind::Deleted,
                    object: Arc::new(last),
                    prev: Some(p),
                })
            }
        };
        s.revision = revision;
        s.history.push_back(change.clone());
        while s.history.len() > self.history_limit {
            if let Some(old) = s.history.pop_front() {
                s.oldest = old.revision;
            }
        }
        // Sent under the lock so subscribers see each change exactly once (snapshot or live).
        let _ = self.changes.send(change);
        drop(s);
        self.reached(revision);
    }

    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Objects held (for the `ferry_apiserver_cache_objects` gauge).
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// The oldest revision a watch (or a list's continue token) may resume from.
    pub fn oldest(&self) -> u64 {
        self.read().oldest
    }

    /// Waits until the cache has seen `revision` (read-your-writes for every client).
    pub async fn wait_for(&self, revision: u64) {
        let rx = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if w.reached >= revision {
                return;
            }
            let (tx, rx) = oneshot::channel();
            w.pending.entry(revision).or_default().push(tx);
            rx
        };
        let _ = rx.await;
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.read().objects.get(key).cloned()
    }

    pub fn by_uid(&self, uid: &str) -> Option<Arc<Cached>> {
        let s = self.read();
        s.by_uid.get(uid).and_then(|k| s.objects.get(k)).cloned()
    }

    /// Objects whose key starts with `prefix`, from `start` (exclusive) on, at most `limit`
    /// that pass `filter`; returns them, the revision, and whether more remain.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        filter: impl Fn(&Cached) -> bool,
    ) -> (Vec<Arc<Cached>>, u64, bool) {
        self.list_indexed(prefix, start_after, limit, None, filter)
    }

    /// Like [`Cache::list`], but walking only the keys an index names when `hint` is
    /// given (the filter must still imply the hint: the index only narrows the scan).
    pub fn list_indexed(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        hint: Option<&IndexHint>,
        filter: impl Fn(&Cached) -> bool,
    ) -> (Vec<Arc<Cached>>, u64, bool) {
        let s = self.read();
        let indexed = match hint {
            Some(IndexHint::Label(k, v)) => Some(
                s.by_label
                    .get(&(Box::from(k.as_str()), Box::from(v.as_str()))),
            ),
            Some(IndexHint::Node(n)) => Some(s.by_node.get(n.as_str())),
            None => None,
        };
        if let Some(keys) = indexed {
            let mut out = Vec::new();
            let mut more = false;
            let lower = match start_after {
                Some(k) => std::ops::Bound::Excluded(k),
                None => std::ops::Bound::Included(prefix),
            };
            for k in keys
                .into_iter()
                .flat_map(|set| set.range::<str, _>((lower, std::ops::Bound::Unbounded)))
            {
                if !k.starts_with(prefix) {
                    break;
                }
                let Some(v) = s.objects.get(k) else { continue };
                if !filter(v) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(v.clone());
            }
            return (out, s.revision, more);
        }
        let mut out = Vec::new();
        let lower = match start_after {
            Some(k) => std::ops::Bound::Excluded(k),
            None => std::ops::Bound::Included(prefix),
        };
        let mut more = false;
        for (k, v) in s
            .objects
            .range::<str, _>((lower, std::ops::Bound::Unbounded))
        {
            if !k.starts_with(prefix) {
                break;
            }
            if !filter(v) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(v.clone());
        }
        (out, s.revision, more)
    }

    /// Keys of the objects owned by `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<Arc<Cached>> {
        let s = self.read();
        s.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| s.objects.get(k).cloned())
            .collect()
    }

    /// Starts a watch after `from` (0 = from now, with the current state replayed as ADDED).
    pub fn subscribe(
        &self,
        prefix: &str,
        from: Option<u64>,
    ) -> Result<Subscription, WatchStartError> {
        let s = self.read();
        if !s.ready {
            return Err(WatchStartError::NotReady);
        }
        let live = self.changes.subscribe();
        let replay = match from {
            None | Some(0) => s
                .objects
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, o)| {
                    Arc::new(Change {
                        revision: o.mod_revision,
                        kind: ChangeKind::Added,
                        object: o.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(rv) if rv < s.oldest => {
                return Err(WatchStartError::TooOld {
                    requested: rv,
                    oldest: s.oldest,
                });
            }
            Some(rv) => s
                .history
                .iter()
                .filter(|c| c.revision > rv && c.object.key.starts_with(prefix))
                .cloned()
                .collect(),
        };
        Ok(Subscription {
            revision: s.revision,
            replay,
            live,
        })
    }
}

/// Whether two versions of one object sit in the same places of every index.
fn same_index_fields(a: &Cached, b: &Cached) -> bool {
    a.uid == b.uid && a.labels == b.labels && a.owners == b.owners && a.node_name == b.node_name
}

fn index(s: &mut State, o: Arc<Cached>) {
    for owner in &o.owners {
        s.dependents
            .entry(owner.clone())
            .or_default()
            .insert(o.key.clone());
    }
    if !o.uid.is_empty() {
        s.by_uid.insert(o.uid.clone(), o.key.clone());
    }
    for (k, v) in o.labels.iter() {
        s.by_label
            .entry((k.into(), v.into()))
            .or_default()
            .insert(o.key.clone());
    }
    if let Some(n) = &o.node_name {
        s.by_node
            .entry(n.clone())
            .or_default()
            .insert(o.key.clone());
    }
    s.objects.insert(o.key.clone(), o);
}

fn remove_from<K: Ord>(map: &mut BTreeMap<K, Keys>, k: &K, key: &str) {
    if let Some(set) = map.get_mut(k) {
        set.remove(key);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

fn unindex(s: &mut State, o: &Cached) {
    for owner in &o.owners {
        remove_from(&mut s.dependents, owner, &o.key);
    }
    s.by_uid.remove(&o.uid);
    for (k, v) in o.labels.iter() {
        remove_from(&mut s.by_label, &(k.into(), v.into()), &o.key);
    }
    if let Some(n) = &o.node_name {
        remove_from(&mut s.by_node, n, &o.key);
    }
    s.objects.remove(&o.key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(key: &str, name: &str, uid: &str, owner: Option<&str>) -> Cached {
        let mut v = json!({"metadata": {"name": name, "uid": uid, "namespace": "default"}});
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] = json!([{"uid": o}]);
        }
        Cached::from_stored(key, &serde_json::to_vec(&v).unwrap(), 1).unwrap()
    }

    #[test]
    fn labels_are_looked_up_by_key_whatever_their_order() {
        let v = json!({"metadata": {"name": "a", "labels": {"z": "1", "app": "web", "m": "x"}}});
        let o = Cached::from_stored("/r/a", &serde_json::to_vec(&v).unwrap(), 7).unwrap();
        assert_eq!(o.labels.get("app"), Some("web"));
        assert_eq!(o.labels.get("m"), Some("x"));
        assert_eq!(o.labels.get("z"), Some("1"));
        assert_eq!(o.labels.get("ap"), None);
        let keys: Vec<_> = o.labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["app", "m", "z"]);
        // The cached JSON carries the revision and nothing else changed.
        let back = o.value();
        assert_eq!(back["metadata"]["resourceVersion"], "7");
        assert_eq!(back["metadata"]["labels"], v["metadata"]["labels"]);
        assert_eq!(o.json.len(), serde_json::to_vec(&back).unwrap().len());
    }

    #[test]
    fn watch_replays_history_after_revision_then_live() {
        let c = Cache::new(100, 100);
        c.reset(vec![], 1);
        c.apply(2, "/r/a", Some(obj("/r/a", "a", "u1", None)));
        c.apply(3, "/r/b", Some(obj("/r/b", "b", "u2", Some("u1"))));
        let mut sub = c.subscribe("/r/", Some(2)).unwrap();
        assert_eq!(
            sub.replay.iter().map(|ch| ch.revision).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(c.dependents("u1").len(), 1);
        c.apply(4, "/r/a", None);
        let live = sub.live.try_recv().unwrap();
        assert_eq!((live.revision, live.kind), (4, ChangeKind::Deleted));
        assert_eq!(live.object.value()["metadata"]["resourceVersion"], "4");
    }

    #[test]
    fn watch_from_a_revision_older_than_history_is_gone() {
        let c = Cache::new(1, 100);
        c.reset(vec![], 5);
        c.apply(6, "/r/a", Some(obj("/r/a", "a", "u1", None)));
        c.apply(7, "/r/a", Some(obj("/r/a", "a", "u1", None)));
        assert_eq!(
            c.subscribe("/r/", Some(5)).err(),
            Some(WatchStartError::TooOld {
                requested: 5,
                oldest: 6
            })
        );
        assert!(c.subscribe("/r/", Some(6)).is_ok());
    }

    #[test]
    fn label_and_node_indexes_list_the_same_as_a_scan() {
        let c = Cache::new(100, 100);
        let mk = |key: &str, app: &str, node: &str| {
            let v = json!({"metadata": {"name": key, "uid": key, "namespace": "default", "labels": {"app": app}}, "spec": {"nodeName": node}});
            Cached::from_stored(key, &serde_json::to_vec(&v).unwrap(), 1).unwrap()
        };
        c.reset(
            vec![
                mk("/r/a", "web", "n1"),
                mk("/r/b", "db", "n1"),
                mk("/r/c", "web", "n2"),
                mk("/s/d", "web", "n1"),
            ],
            1,
        );
        let names = |hint: IndexHint, f: &dyn Fn(&Cached) -> bool| -> Vec<String> {
            c.list_indexed("/r/", None, usize::MAX, Some(&hint), f)
                .0
                .iter()
                .map(|o| o.key.to_string())
                .collect()
        };
        assert_eq!(
            names(IndexHint::Label("app".into(), "web".into()), &|o| o
                .labels
                .get("app")
                == Some("web")),
            ["/r/a", "/r/c"]
        );
        assert_eq!(
            names(IndexHint::Node("n1".into()), &|o| o.node_name.as_deref()
                == Some("n1")),
            ["/r/a", "/r/b"]
        );
        c.apply(2, "/r/a", None);
        assert_eq!(
            names(IndexHint::Label("app".into(), "web".into()), &|_| true),
            ["/r/c"]
        );
        let (page, _, more) =
            c.list_indexed("/r/", None, 1, Some(&IndexHint::Node("n1".into())), |_| {
                true
            });
        assert!(page.len() == 1 && !more, "only /r/b is left on n1");
    }

    #[test]
    fn a_change_moves_an_object_between_indexes_only_when_its_indexed_fields_change() {
        let c = Cache::new(100, 100);
        let mk = |app: &str, node: &str, rev: u64| {
            let v = json!({"metadata": {"name": "a", "uid": "u1", "namespace": "default", "labels": {"app": app}}, "spec": {"nodeName": node}});
            Cached::from_stored("/r/a", &serde_json::to_vec(&v).unwrap(), rev).unwrap()
        };
        c.reset(vec![mk("web", "n1", 1)], 1);
        let found = |hint: IndexHint| -> Vec<u64> {
            c.list_indexed("/r/", None, usize::MAX, Some(&hint), |_| true)
                .0
                .iter()
                .map(|o| o.mod_revision)
                .collect()
        };
        let web = || IndexHint::Label("app".into(), "web".into());
        // Same labels and node: replaced in place, found at its new revision.
        c.apply(2, "/r/a", Some(mk("web", "n1", 2)));
        assert_eq!(
            (found(web()), found(IndexHint::Node("n1".into()))),
            (vec![2], vec![2])
        );
        assert_eq!(c.by_uid("u1").map(|o| o.mod_revision), Some(2));
        // A new label and node: out of the old index entries, into the new ones.
        c.apply(3, "/r/a", Some(mk("db", "n2", 3)));
        let db = IndexHint::Label("app".into(), "db".into());
        assert_eq!(
            (
                found(web()),
                found(db),
                found(IndexHint::Node("n1".into())),
                found(IndexHint::Node("n2".into()))
            ),
            (vec![], vec![3], vec![], vec![3])
        );
        c.apply(4, "/r/a", None);
        assert_eq!(
            (c.get("/r/a").is_none(), c.by_uid("u1").is_none()),
            (true, true)
        );
    }

    #[tokio::test]
    async fn wait_for_wakes_only_the_waiters_of_revisions_reached() {
        let c = Cache::new(100, 100);
        c.reset(vec![], 1);
        c.wait_for(1).await;
        let (c2, c3) = (c.clone(), c.clone());
        let early = tokio::spawn(async move { c2.wait_for(2).await });
        let late = tokio::spawn(async move { c3.wait_for(3).await });
        tokio::task::yield_now().await;
        c.apply(2, "/r/a", Some(obj("/r/a", "a", "u1", None)));
        early.await.unwrap();
        assert!(!late.is_finished(), "revision 3 is not in the cache yet");
        assert_eq!(
            c.waiters.lock().unwrap().pending.keys().collect::<Vec<_>>(),
            [&3]
        );
        c.apply(3, "/r/b", Some(obj("/r/b", "b", "u2", None)));
        late.await.unwrap();
        assert!(c.waiters.lock().unwrap().pending.is_empty());
    }

    #[test]
    fn not_ready_until_reset() {
        let c = Cache::new(1, 1);
        assert_eq!(
            c.subscribe("/", None).err(),
            Some(WatchStartError::NotReady)
        );
    }
}
