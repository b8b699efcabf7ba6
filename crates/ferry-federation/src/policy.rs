//! The annotation propagation policy: which keys the federation owns on a member object
//! (spec: propagated and enforced) and which the member owns (status: never overwritten,
//! fed back). Pure.

use std::collections::BTreeMap;

use crate::types::AnnotationPolicy;

/// Prefix of the join agent's bookkeeping annotations and labels: never spec, never status.
pub const FEDERATION_PREFIX: &str = "federation.iaas.yusur.io/";

/// Whether `key` matches `pattern`, where `*` matches any run of characters (including `/`).
pub fn matches(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == key;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !key.starts_with(first) || key.len() < first.len() + last.len() || !key.ends_with(last) {
        return false;
    }
    let mut rest = &key[first.len()..key.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The role of one annotation key under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Propagated from the template and enforced on the member.
    Spec,
    /// Left as the member writes it, and fed back.
    Status,
    /// The join agent's own bookkeeping.
    Federation,
}

impl AnnotationPolicy {
    pub fn role(&self, key: &str) -> KeyRole {
        if key.starts_with(FEDERATION_PREFIX) {
            KeyRole::Federation
        } else if self.spec.iter().any(|p| matches(p, key))
            && !self.status.iter().any(|p| matches(p, key))
        {
            KeyRole::Spec
        } else {
            KeyRole::Status
        }
    }

    /// The template's annotations the federation propagates.
    pub fn spec_part(&self, template: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        template
            .iter()
            .filter(|(k, _)| self.role(k) == KeyRole::Spec)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The member object's annotations the member owns (fed back as status).
    pub fn status_part(&self, member: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        member
            .iter()
            .filter(|(k, _)| self.role(k) == KeyRole::Status)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The annotations a member object must carry: the member's status keys as they are,
    /// the template's spec keys (a spec key the template lacks is removed), and the
    /// federation's bookkeeping as given.
    pub fn merge(
        &self,
        member: &BTreeMap<String, String>,
        template: &BTreeMap<String, String>,
        federation: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut out = self.status_part(member);
        out.extend(self.spec_part(template));
        out.extend(
            federation
                .iter()
                .filter(|(k, _)| k.starts_with(FEDERATION_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn wildcard_matching() {
        for (pattern, key, want) in [
            ("*", "anything/at-all", true),
            ("lb.example/*", "lb.example/protocol", true),
            ("lb.example/*", "lb.example.org/protocol", false),
            ("*.iaas.yusur.io/*", "lb.iaas.yusur.io/mode", true),
            ("*.iaas.yusur.io/*", "iaas.yusur.io/mode", false),
            ("status.*", "status.cafe.io/loadbalancer", true),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c-y-b", false),
            ("exact/key", "exact/key", true),
            ("exact/key", "exact/key2", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(matches(pattern, key), want, "{pattern} vs {key}");
        }
    }

    /// The seed's Service example: the load-balancer listener protocol is spec (propagated,
    /// enforced), the CCM's status annotation is the member's and survives every apply.
    #[test]
    fn merge_enforces_spec_keys_and_keeps_status_keys() {
        let policy = AnnotationPolicy {
            spec: vec!["lb.example/*".into(), "owner".into()],
            status: vec!["lb.example/status-*".into()],
        };
        struct Case {
            name: &'static str,
            member: BTreeMap<String, String>,
            template: BTreeMap<String, String>,
            want: BTreeMap<String, String>,
        }
        let cases = [
            Case {
                name: "spec keys propagated, status keys kept",
                member: map(&[("lb.example/status-phase", "provisioning"), ("other", "x")]),
                template: map(&[("lb.example/protocol", "tcp"), ("owner", "team-a")]),
                want: map(&[
                    ("lb.example/protocol", "tcp"),
                    ("lb.example/status-phase", "provisioning"),
                    ("other", "x"),
                    ("owner", "team-a"),
                ]),
            },
            Case {
                name: "a spec key changed on the member is put back",
                member: map(&[("lb.example/protocol", "udp")]),
                template: map(&[("lb.example/protocol", "tcp")]),
                want: map(&[("lb.example/protocol", "tcp")]),
            },
            Case {
                name: "a spec key the template dropped is removed",
                member: map(&[("lb.example/protocol", "tcp"), ("owner", "team-a")]),
                template: map(&[("owner", "team-a")]),
                want: map(&[("owner", "team-a")]),
            },
            Case {
                name: "a template key that is status is not propagated",
                member: map(&[("lb.example/status-phase", "ready")]),
                template: map(&[("lb.example/status-phase", "bogus"), ("unlisted", "v")]),
                want: map(&[("lb.example/status-phase", "ready")]),
            },
        ];
        let federation = map(&[("federation.iaas.yusur.io/generation", "3")]);
        for c in cases {
            let mut want = c.want.clone();
            want.extend(federation.clone());
            assert_eq!(
                policy.merge(&c.member, &c.template, &federation),
                want,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn default_policy_leaves_status_and_tool_keys_to_the_member() {
        let p = AnnotationPolicy::default();
        assert_eq!(p.role("iaas.yusur.io/subnet"), KeyRole::Spec);
        assert_eq!(p.role("status.iaas.yusur.io/lb"), KeyRole::Status);
        assert_eq!(p.role("lb.status.example/x"), KeyRole::Status);
        assert_eq!(
            p.role("kubectl.kubernetes.io/last-applied-configuration"),
            KeyRole::Status
        );
        assert_eq!(p.role("federation.iaas.yusur.io/work"), KeyRole::Federation);
    }
}
