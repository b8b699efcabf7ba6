//! [`CompactMap`]: what caches keep of an object's labels and annotations.

use std::collections::BTreeMap;

/// A read-only map of strings as a sorted boxed slice. Caches hold one per object for its
/// labels and one for its annotations; most objects have one to five entries, for which a
/// `BTreeMap` node costs ~500 bytes (at 10,000 nodes the API server caches ~450,000 objects
/// and the controller ~200,000 pods, each indexed again as a backend).
/// Ordered as a `BTreeMap` of the same entries is.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompactMap(Box<[(Box<str>, Box<str>)]>);

impl CompactMap {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as the `BTreeMap` Kubernetes types carry.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Later entries win over earlier ones with the same key, as in a map.
impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for CompactMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> CompactMap {
        let mut v: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable: equal keys keep their order, and the last of each run is kept.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        CompactMap(out.into_boxed_slice())
    }
}

/// A string map read by key: a [`CompactMap`] or the `BTreeMap` Kubernetes types carry, so
/// one function reads either without copying one into the other.
pub trait StrLookup {
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl StrLookup for CompactMap {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl StrLookup for BTreeMap<String, String> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl From<BTreeMap<String, String>> for CompactMap {
    fn from(m: BTreeMap<String, String>) -> CompactMap {
        m.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_key_whatever_the_order_given() {
        let m: CompactMap = [("z", "1"), ("app", "web"), ("m", "x")]
            .into_iter()
            .collect();
        assert_eq!(m.get("app"), Some("web"));
        assert_eq!(m.get("m"), Some("x"));
        assert_eq!(m.get("z"), Some("1"));
        assert_eq!(m.get("ap"), None);
        assert!(m.contains_key("z") && !m.contains_key("zz"));
        assert_eq!(
            m.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["app", "m", "z"]
        );
        assert_eq!(m.len(), 3);
        assert!(CompactMap::default().is_empty());
    }

    #[test]
    fn the_last_value_of_a_repeated_key_wins_and_maps_round_trip() {
        let m: CompactMap = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(m.get("a"), Some("3"));
        assert_eq!(m.len(), 2);
        let map = m.to_map();
        assert_eq!(CompactMap::from(map.clone()), m);
        assert_eq!(map.get("b").map(String::as_str), Some("2"));
    }
}
