//! How the writer converges one generated object (Service, Endpoints, EndpointSlice,
//! NetworkProbe): create it when missing, replace it when its content differs, nothing
//! otherwise, judged against the newest of the watch cache's copy and the writer's own last
//! write ([`Memo`]), so a watch that lags the writer costs no 409 and no rewrite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn pp() -> PostParams {
    PostParams {
        field_manager: Some("ferry-controller".into()),
        ..Default::default()
    }
}

/// An object the writer converges, as it is known: what a replace needs and a digest of
/// the content the writer compares ([`digest`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Current {
    resource_version: Option<String>,
    uid: Option<String>,
    digest: u64,
}

impl Current {
    pub(crate) fn of<K: Resource>(cur: &K, digest: u64) -> Current {
        Current {
            resource_version: cur.meta().resource_version.clone(),
            uid: cur.meta().uid.clone(),
            digest,
        }
    }
}

/// A digest of the content the writer compares (equal within this process for equal
/// content).
fn digest<T: Serialize + ?Sized>(v: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut h, &serde_json::to_vec(v).unwrap_or_default());
    std::hash::Hasher::finish(&h)
}

/// What the writer itself wrote lately, per object (`kind/namespace/name`): the watch may
/// deliver it after the service's next write, and the cache would then make that write
/// create an object that exists or replace one with a stale resourceVersion (both 409, a
/// wasted request each) or rewrite what it already holds.
#[derive(Clone, Default)]
pub(crate) struct Memo(Arc<Mutex<MemoState>>);

/// Each object's last write and when; when old entries were last forgotten.
type MemoState = (HashMap<String, (Current, Instant)>, Option<Instant>);

/// How long a write is remembered: the cache has caught up long before.
const MEMO_TTL: Duration = Duration::from_secs(5);

impl Memo {
    fn get(&self, key: &str, now: Instant) -> Option<Current> {
        let m = self.0.lock().ok()?;
        m.0.get(key)
            .filter(|(_, at)| now.duration_since(*at) < MEMO_TTL)
            .map(|(c, _)| c.clone())
    }

    fn put(&self, key: String, cur: Option<Current>, now: Instant) {
        let Ok(mut m) = self.0.lock() else { return };
        match cur {
            Some(c) => {
                m.0.insert(key, (c, now));
            }
            None => {
                m.0.remove(&key);
            }
        }
        // Forget old entries once a second at most.
        if m.1
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            m.1 = Some(now);
            m.0.retain(|_, (_, at)| now.duration_since(*at) < MEMO_TTL);
        }
    }
}

/// Which of the cached copy and the writer's own last write ([`Memo`]) is current: the
/// memo until the cache shows that write or a later one (resourceVersions compared as
/// numbers where both are; else the cache once it shows another version).
fn newest(cached: Option<Current>, memo: Option<Current>) -> Option<Current> {
    let Some(m) = memo else { return cached };
    match &cached {
        Some(c) if c.resource_version == m.resource_version => cached,
        Some(c) => {
            let num = |r: &Option<String>| r.as_deref().and_then(|r| r.parse::<u64>().ok());
            match (num(&c.resource_version), num(&m.resource_version)) {
                (Some(cv), Some(mv)) if cv > mv => cached,
                (Some(_), Some(_)) => Some(m),
                _ => cached,
            }
        }
        None => Some(m),
    }
}

/// What converging an object takes.
#[derive(Debug, PartialEq)]
enum Write {
    Create,
    /// Replace, at this resourceVersion and uid.
    Replace(Option<String>, Option<String>),
    /// It already holds the desired content.
    Nothing,
}

fn write_for(current: Option<Current>, desired: u64) -> Write {
    match current {
        None => Write::Create,
        Some(c) if c.digest != desired => Write::Replace(c.resource_version, c.uid),
        Some(_) => Write::Nothing,
    }
}

/// Creates `desired` or replaces the current copy (the newest of the cache's and the
/// writer's own, see [`newest`]) when its content (`desired_digest`) differs, and
/// remembers what it wrote. A 409 is left to the watch: the object's event plans the
/// service again.
pub(crate) async fn converge<K>(
    api: Api<K>,
    memo: &Memo,
    cached: Option<Current>,
    mut desired: K,
    desired_digest: u64,
) -> kube::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    let key = format!("{}/{ns}/{name}", std::any::type_name::<K>());
    let r = match write_for(
        newest(cached, memo.get(&key, Instant::now())),
        desired_digest,
    ) {
        Write::Nothing => return Ok(()),
        Write::Create => api.create(&pp(), &desired).await,
        Write::Replace(rv, uid) => {
            desired.meta_mut().resource_version = rv;
            desired.meta_mut().uid = uid;
            api.replace(&name, &pp(), &desired).await
        }
    };
    match r {
        Ok(done) => {
            memo.put(
                key,
                Some(Current::of(&done, desired_digest)),
                Instant::now(),
            );
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            memo.put(key, None, Instant::now());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn service_digest(s: &Service) -> u64 {
    digest(&(
        s.spec.as_ref().map(|s| (&s.ports, &s.cluster_ip)),
        &s.metadata.annotations,
        &s.metadata.labels,
    ))
}

pub(crate) fn endpoints_digest(e: &Endpoints) -> u64 {
    digest(&(&e.subsets, &e.metadata.labels))
}

pub(crate) fn slice_digest(s: &EndpointSlice) -> u64 {
    digest(&(&s.endpoints, &s.ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_own_write_counts_until_the_cache_shows_it_or_a_later_one() {
        let cur = |rv: &str, digest: u64| Current {
            resource_version: Some(rv.into()),
            uid: Some("u".into()),
            digest,
        };
        let cases = [
            // Nothing written lately: the cache.
            (Some(cur("5", 1)), None, Some(cur("5", 1))),
            (None, None, None),
            // Created, the watch not there yet.
            (None, Some(cur("7", 2)), Some(cur("7", 2))),
            // Replaced, the cache one version behind, at it, past it.
            (Some(cur("5", 1)), Some(cur("7", 2)), Some(cur("7", 2))),
            (Some(cur("7", 2)), Some(cur("7", 2)), Some(cur("7", 2))),
            (Some(cur("9", 3)), Some(cur("7", 2)), Some(cur("9", 3))),
            // Versions that are not numbers: the cache.
            (Some(cur("x", 1)), Some(cur("y", 2)), Some(cur("x", 1))),
        ];
        for (cached, memo, want) in cases {
            assert_eq!(
                newest(cached.clone(), memo.clone()),
                want,
                "{cached:?} {memo:?}"
            );
        }
    }

    #[test]
    fn an_object_is_written_only_when_missing_or_its_content_differs() {
        let cur = Current {
            resource_version: Some("7".into()),
            uid: Some("u".into()),
            digest: 2,
        };
        assert_eq!(write_for(None, 2), Write::Create);
        assert_eq!(write_for(Some(cur.clone()), 2), Write::Nothing);
        assert_eq!(
            write_for(Some(cur), 3),
            Write::Replace(Some("7".into()), Some("u".into()))
        );
        // Equal content, equal digest; other content, another.
        let a = Endpoints::default();
        let mut b = a.clone();
        assert_eq!(endpoints_digest(&a), endpoints_digest(&b));
        b.subsets = Some(vec![Default::default()]);
        assert_ne!(endpoints_digest(&a), endpoints_digest(&b));
    }
}
