//! Label and field selectors, parsed once per request and matched against cached objects.

use serde_json::Value;

use ferry_api::StrLookup;

use crate::cache::Cached;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(
                    k.trim().into(),
                    set(v).ok_or_else(|| format!("invalid label selector {part:?}"))?,
                )
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(
                    k.trim().into(),
                    set(v).ok_or_else(|| format!("invalid label selector {part:?}"))?,
                )
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part)
            } else {
                return Err(format!("unable to parse requirement {part:?}"));
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// An equality requirement an index can serve, if any.
    pub fn index_hint(&self) -> Option<crate::cache::IndexHint> {
        self.0.iter().find_map(|r| match r {
            Requirement::Eq(k, v) => Some(crate::cache::IndexHint::Label(k.clone(), v.clone())),
            _ => None,
        })
    }

    pub fn matches(&self, labels: &impl StrLookup) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.lookup(k) == Some(v),
            Requirement::NotEq(k, v) => labels.lookup(k) != Some(v),
            Requirement::In(k, vs) => labels.lookup(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => {
                !labels.lookup(k).is_some_and(|l| vs.iter().any(|v| v == l))
            }
            Requirement::Exists(k) => labels.lookup(k).is_some(),
            Requirement::NotExists(k) => labels.lookup(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector`: `path=value` and `path!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid field selector {part:?}: expected field=value or field!=value"
                ));
            };
            terms.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// `spec.nodeName=N`, which the node index serves.
    pub fn index_hint(&self) -> Option<crate::cache::IndexHint> {
        self.0.iter().find_map(|(path, eq, v)| {
            (*eq && path == "spec.nodeName" && !v.is_empty())
                .then(|| crate::cache::IndexHint::Node(v.clone()))
        })
    }

    pub fn matches(&self, o: &Cached) -> bool {
        let mut parsed: Option<Value> = None;
        self.0.iter().all(|(path, eq, want)| {
            let have = match path.as_str() {
                "metadata.name" => Some(o.name.to_string()),
                "metadata.namespace" => {
                    Some(o.namespace.as_deref().unwrap_or_default().to_string())
                }
                "spec.nodeName" => Some(o.node_name.as_deref().unwrap_or_default().to_string()),
                _ => {
                    let v = parsed.get_or_insert_with(|| o.value());
                    let mut cur = &*v;
                    for seg in path.split('.') {
                        cur = &cur[seg];
                    }
                    Some(match cur {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                }
            };
            (have.as_deref() == Some(want.as_str())) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_cases() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("missing", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("a in b").is_err());
    }
}
