//! The RBAC index the server decides with, kept in step with the watch cache: the cache
//! feeder notes the revision of every RBAC change ([`Authorizer::note_change`]) and the next
//! request rebuilds the index from the cache ([`Authorizer::index`]); requests in between
//! share one `Arc<Index>` and take no lock longer than a pointer copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::cache::Cache;
use crate::rbac::Index;

/// The storage prefix of every RBAC object.
pub const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The current RBAC index and the cache revision it was built at.
#[derive(Debug, Default)]
pub struct Authorizer {
    current: RwLock<(u64, Arc<Index>)>,
    /// The newest revision that changed an RBAC object (0: none since start).
    changed: AtomicU64,
    /// Serialises rebuilds (one rebuild serves every request waiting for it).
    rebuilding: Mutex<()>,
    /// `false` answers every request as allowed (kube-apiserver's `AlwaysAllow` mode): only
    /// for measuring what enforcement costs.
    always_allow: AtomicBool,
}

impl Authorizer {
    pub fn new() -> Authorizer {
        Authorizer {
            changed: AtomicU64::new(1),
            ..Default::default()
        }
    }

    /// Turns enforcement on (the default) or off.
    pub fn set_enforced(&self, enforced: bool) {
        self.always_allow.store(!enforced, Ordering::Relaxed);
    }

    pub fn enforced(&self) -> bool {
        !self.always_allow.load(Ordering::Relaxed)
    }

    /// Records that the object at `key` changed at `revision` (called before the cache
    /// applies it, so the rebuild that follows waits until the cache has it).
    pub fn note_change(&self, key: &str, revision: u64) {
        if key.starts_with(RBAC_PREFIX) {
            self.changed.fetch_max(revision, Ordering::SeqCst);
        }
    }

    /// Records a full re-list of the store at `revision`.
    pub fn note_reset(&self, revision: u64) {
        self.changed.fetch_max(revision.max(1), Ordering::SeqCst);
    }

    /// The index as of the newest RBAC change the cache holds.
    pub fn index(&self, cache: &Cache) -> Arc<Index> {
        let changed = self.changed.load(Ordering::SeqCst);
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.0 >= changed {
                return cur.1.clone();
            }
        }
        let _one = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.0 >= changed {
                return cur.1.clone();
            }
        }
        let (items, revision, _) = cache.list(RBAC_PREFIX, None, usize::MAX, |_| true);
        let mut by_kind: [Vec<Value>; 4] = Default::default();
        for o in items {
            let rest = o.key.trim_start_matches(RBAC_PREFIX);
            let slot = match rest.split('/').next() {
                Some("clusterroles") => 0,
                Some("roles") => 1,
                Some("clusterrolebindings") => 2,
                Some("rolebindings") => 3,
                _ => continue,
            };
            by_kind[slot].push(o.value());
        }
        let index = Arc::new(Index::build(
            &by_kind[0],
            &by_kind[1],
            &by_kind[2],
            &by_kind[3],
        ));
        // Built from what the cache held at `revision`: if the cache had not yet applied the
        // newest change, the next request builds again.
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = (revision, index.clone());
        index
    }
}
