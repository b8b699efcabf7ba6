//! RBAC decisions: who may do what, from Roles, ClusterRoles, RoleBindings and
//! ClusterRoleBindings, as kube-apiserver's RBAC authorizer decides.
//!
//! [`Index::build`] turns the stored RBAC objects into a map from subject (user or group) to
//! the rules bound to it; [`authorize`] is a plain function over that index, a caller
//! ([`UserInfo`]) and a request ([`Attributes`]). Nothing here reads the store, a clock or a
//! socket: the server rebuilds the index when an RBAC object changes (see
//! [`crate::authz::Authorizer`]).
//!
//! Just over 600 lines: the request model (`UserInfo`, `Attributes`, `PolicyRule`) and the
//! index with its decision belong together here; if it grows, the index (`Grants`,
//! `BySubject`, `Index::build`) would move to `rbac/index.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

#[cfg(test)]
mod tests;

/// The group whose members may do everything, whatever the bindings say (as kube-apiserver's
/// privileged group: an administrator cannot lock themselves out by deleting a binding).
pub const MASTERS: &str = "system:masters";
/// Every authenticated caller is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Every ServiceAccount is in this group (and in `system:serviceaccounts:NAMESPACE`).
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// Every node agent is in this group, as `system:node:NAME`.
pub const NODES: &str = "system:nodes";

/// An authenticated (or impersonated) caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The identity of ServiceAccount `namespace/name`, with the groups kube-apiserver gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                SERVICE_ACCOUNTS.to_string(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
                AUTHENTICATED.to_string(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// The identity of node `node`'s agent.
    pub fn node(node: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{node}"),
            uid: String::new(),
            groups: vec![NODES.to_string(), AUTHENTICATED.to_string()],
            extra: BTreeMap::new(),
        }
    }

    /// The node this identity is the agent of (`system:node:NAME` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        let node = self.name.strip_prefix("system:node:")?;
        (self.groups.iter().any(|g| g == NODES) && !node.is_empty()).then_some(node)
    }

    /// `(namespace, name)` of a ServiceAccount identity.
    pub fn service_account_of(&self) -> Option<(&str, &str)> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        let (ns, name) = rest.split_once(':')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`...; for non-resource requests the lower-case HTTP method (`get`, `post`).
    pub verb: String,
    pub target: Target,
}

/// The object or path a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Resource {
        group: String,
        /// The plural, without the subresource.
        resource: String,
        subresource: String,
        /// `None` for cluster-scoped requests (a Namespace's own name counts as its namespace).
        namespace: Option<String>,
        /// `None` for create, list, watch and deletecollection.
        name: Option<String>,
    },
    NonResource {
        path: String,
    },
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            target: Target::Resource {
                group: group.to_string(),
                resource: resource.to_string(),
                subresource: subresource.to_string(),
                namespace: namespace.filter(|n| !n.is_empty()).map(String::from),
                name: name.filter(|n| !n.is_empty()).map(String::from),
            },
        }
    }

    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            target: Target::NonResource {
                path: path.to_string(),
            },
        }
    }

    /// `resource/subresource` or `resource`.
    pub fn combined_resource(&self) -> String {
        match &self.target {
            Target::Resource {
                resource,
                subresource,
                ..
            } if !subresource.is_empty() => format!("{resource}/{subresource}"),
            Target::Resource { resource, .. } => resource.clone(),
            Target::NonResource { .. } => String::new(),
        }
    }

    fn namespace(&self) -> Option<&str> {
        match &self.target {
            Target::Resource { namespace, .. } => namespace.as_deref(),
            Target::NonResource { .. } => None,
        }
    }
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    pub fn from_json(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// Whether this rule allows `attrs` (kube-apiserver's `RuleAllows`).
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !self
            .verbs
            .iter()
            .any(|v| v == "*" || v.eq_ignore_ascii_case(&attrs.verb))
        {
            return false;
        }
        match &attrs.target {
            Target::Resource {
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                self.api_groups.iter().any(|g| g == "*" || g == group)
                    && self.resource_matches(resource, subresource)
                    && (self.resource_names.is_empty()
                        || name
                            .as_deref()
                            .is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
            }
            Target::NonResource { path } => self.non_resource_urls.iter().any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            }),
        }
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match r.split_once('/') {
                None => subresource.is_empty() && r == resource,
                Some((res, sub)) => {
                    !subresource.is_empty() && sub == subresource && (res == "*" || res == resource)
                }
            }
        })
    }
}

/// A subject a binding names, normalised: a ServiceAccount is the user
/// `system:serviceaccount:NS:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Subject::User(u) if u.starts_with("system:serviceaccount:") => {
                format!(
                    "ServiceAccount {:?}",
                    u.trim_start_matches("system:serviceaccount:")
                )
            }
            Subject::User(u) => format!("User {u:?}"),
            Subject::Group(g) => format!("Group {g:?}"),
        }
    }
}

/// One rule a binding grants, and where it comes from (for `auth can-i` reasons).
#[derive(Debug, Clone)]
struct Grant {
    rule: Arc<PolicyRule>,
    /// `ClusterRoleBinding "x" of ClusterRole "y"` or `RoleBinding "ns/x" of Role "y"`.
    source: Arc<str>,
}

/// The rules bound to one subject, by the resource they name, so a decision looks only at
/// the rules that can match its resource (not at every rule of every binding).
#[derive(Debug, Clone, Default)]
struct Grants {
    by_resource: HashMap<String, Vec<Grant>>,
    /// Rules naming `*` or `*/subresource`.
    any_resource: Vec<Grant>,
    non_resource: Vec<Grant>,
}

impl Grants {
    fn add(&mut self, rules: &[Arc<PolicyRule>], source: &Arc<str>) {
        for rule in rules {
            let g = Grant {
                rule: rule.clone(),
                source: source.clone(),
            };
            if !rule.non_resource_urls.is_empty() {
                self.non_resource.push(g.clone());
            }
            if rule
                .resources
                .iter()
                .any(|r| r == "*" || r.starts_with("*/"))
            {
                self.any_resource.push(g);
                continue;
            }
            let mut bases: Vec<&str> = rule
                .resources
                .iter()
                .map(|r| r.split_once('/').map_or(r.as_str(), |(b, _)| b))
                .collect();
            bases.sort_unstable();
            bases.dedup();
            for b in bases {
                self.by_resource
                    .entry(b.to_string())
                    .or_default()
                    .push(g.clone());
            }
        }
    }

    /// The grants that may allow `attrs`.
    fn candidates<'a>(&'a self, attrs: &Attributes) -> impl Iterator<Item = &'a Grant> {
        let (named, rest): (Option<&Vec<Grant>>, &[Grant]) = match &attrs.target {
            Target::Resource { resource, .. } => {
                (self.by_resource.get(resource), &self.any_resource)
            }
            Target::NonResource { .. } => (None, &self.non_resource),
        };
        named.into_iter().flatten().chain(rest)
    }

    fn all(&self) -> impl Iterator<Item = &Grant> {
        self.by_resource
            .values()
            .flatten()
            .chain(&self.any_resource)
            .chain(&self.non_resource)
    }
}

/// Grants by user and by group (two maps, so a lookup borrows the caller's names).
#[derive(Debug, Clone, Default)]
struct BySubject {
    users: HashMap<String, Grants>,
    groups: HashMap<String, Grants>,
}

impl BySubject {
    fn entry(&mut self, s: Subject) -> &mut Grants {
        match s {
            Subject::User(u) => self.users.entry(u).or_default(),
            Subject::Group(g) => self.groups.entry(g).or_default(),
        }
    }

    fn get(&self, user: bool, name: &str) -> Option<&Grants> {
        if user {
            self.users.get(name)
        } else {
            self.groups.get(name)
        }
    }
}

/// The RBAC objects, indexed by subject.
#[derive(Debug, Clone, Default)]
pub struct Index {
    cluster: BySubject,
    namespaced: HashMap<String, BySubject>,
    /// Every binding counted once, for metrics and benchmarks.
    pub bindings: usize,
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let labels_ok = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let exprs_ok = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values = strings(&e["values"]);
            let have = label(key);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
                "NotIn" => have.is_none_or(|h| values.iter().all(|v| v != h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

fn subjects_of(binding: &Value, binding_ns: Option<&str>) -> Vec<Subject> {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s["name"].as_str().filter(|n| !n.is_empty())?;
            match s["kind"].as_str()? {
                "User" => Some(Subject::User(name.to_string())),
                "Group" => Some(Subject::Group(name.to_string())),
                "ServiceAccount" => {
                    let ns = s["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .or(binding_ns)?;
                    Some(Subject::User(format!("system:serviceaccount:{ns}:{name}")))
                }
                _ => None,
            }
        })
        .collect()
}

impl Index {
    /// Indexes the RBAC objects (as stored JSON). A ClusterRole with an `aggregationRule`
    /// also carries the rules of every ClusterRole its selectors match; a binding whose role
    /// does not exist grants nothing.
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_role_bindings: &[Value],
        role_bindings: &[Value],
    ) -> Index {
        let own_rules = |r: &Value| -> Vec<PolicyRule> {
            r["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(PolicyRule::from_json)
                .collect()
        };
        let shared = |rules: Vec<PolicyRule>| -> Vec<Arc<PolicyRule>> {
            rules.into_iter().map(Arc::new).collect()
        };
        let mut cluster_rules: HashMap<String, Vec<Arc<PolicyRule>>> = HashMap::new();
        for cr in cluster_roles {
            let name = cr["metadata"]["name"].as_str().unwrap_or_default();
            let mut rules = own_rules(cr);
            for sel in cr["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for other in cluster_roles {
                    if other["metadata"]["name"].as_str() != Some(name)
                        && labels_match(sel, &other["metadata"]["labels"])
                    {
                        for r in own_rules(other) {
                            if !rules.contains(&r) {
                                rules.push(r);
                            }
                        }
                    }
                }
            }
            cluster_rules.insert(name.to_string(), shared(rules));
        }
        let role_rules: HashMap<(String, String), Vec<Arc<PolicyRule>>> = roles
            .iter()
            .map(|r| {
                let m = &r["metadata"];
                (
                    (
                        m["namespace"].as_str().unwrap_or_default().to_string(),
                        m["name"].as_str().unwrap_or_default().to_string(),
                    ),
                    shared(own_rules(r)),
                )
            })
            .collect();
        let mut index = Index::default();
        for b in cluster_role_bindings {
            let role_ref = &b["roleRef"];
            if role_ref["kind"].as_str() != Some("ClusterRole") {
                continue;
            }
            let role = role_ref["name"].as_str().unwrap_or_default();
            let Some(rules) = cluster_rules.get(role) else {
                continue;
            };
            index.bindings += 1;
            let source: Arc<str> = format!(
                "ClusterRoleBinding {:?} of ClusterRole {role:?}",
                b["metadata"]["name"].as_str().unwrap_or_default()
            )
            .into();
            for s in subjects_of(b, None) {
                index.cluster.entry(s).add(rules, &source);
            }
        }
        for b in role_bindings {
            let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
            let role_ref = &b["roleRef"];
            let role = role_ref["name"].as_str().unwrap_or_default();
            let rules = match role_ref["kind"].as_str() {
                Some("ClusterRole") => cluster_rules.get(role),
                Some("Role") => role_rules.get(&(ns.to_string(), role.to_string())),
                _ => None,
            };
            let Some(rules) = rules else { continue };
            index.bindings += 1;
            let source: Arc<str> = format!(
                "RoleBinding \"{ns}/{}\" of {} {role:?}",
                b["metadata"]["name"].as_str().unwrap_or_default(),
                role_ref["kind"].as_str().unwrap_or_default()
            )
            .into();
            let by_subject = index.namespaced.entry(ns.to_string()).or_default();
            for s in subjects_of(b, Some(ns)) {
                by_subject.entry(s).add(rules, &source);
            }
        }
        index
    }
}

/// The answer to one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why it was allowed (`RBAC: allowed by ...`), or empty.
    pub reason: String,
}

/// Whether `user` may do `attrs`: allowed if the user is in `system:masters`, or any rule
/// bound to the user or one of its groups cluster-wide, or in the request's namespace,
/// allows it. There are no deny rules.
pub fn authorize(index: &Index, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: format!("allowed as a member of {MASTERS:?}"),
        };
    }
    match find(index, user, attrs) {
        Some((g, is_user, name)) => {
            let who = if is_user {
                Subject::User(name.to_string())
            } else {
                Subject::Group(name.to_string())
            };
            Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {} to {}", g.source, who.describe()),
            }
        }
        None => Decision {
            allowed: false,
            reason: String::new(),
        },
    }
}

/// [`authorize`] without the reason: what the server asks for every request.
pub fn is_allowed(index: &Index, user: &UserInfo, attrs: &Attributes) -> bool {
    user.groups.iter().any(|g| g == MASTERS) || find(index, user, attrs).is_some()
}

/// The first grant that allows `attrs`, and the subject (`true` for the user, else a group)
/// it is bound to.
fn find<'a>(
    index: &'a Index,
    user: &'a UserInfo,
    attrs: &Attributes,
) -> Option<(&'a Grant, bool, &'a str)> {
    let subjects = std::iter::once((true, user.name.as_str()))
        .chain(user.groups.iter().map(|g| (false, g.as_str())));
    let ns_grants = attrs.namespace().and_then(|ns| index.namespaced.get(ns));
    for (is_user, name) in subjects {
        let grants = index
            .cluster
            .get(is_user, name)
            .into_iter()
            .chain(ns_grants.and_then(|m| m.get(is_user, name)))
            .flat_map(|g| g.candidates(attrs));
        for g in grants {
            if g.rule.allows(attrs) {
                return Some((g, is_user, name));
            }
        }
    }
    None
}

/// Every rule that applies to `user` in `namespace` (cluster-wide bindings, and the
/// namespace's RoleBindings), for `kubectl auth can-i --list`; duplicates dropped.
pub fn rules_for(index: &Index, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
    if user.groups.iter().any(|g| g == MASTERS) {
        let all = vec!["*".to_string()];
        return vec![
            PolicyRule {
                verbs: all.clone(),
                api_groups: all.clone(),
                resources: all.clone(),
                ..Default::default()
            },
            PolicyRule {
                verbs: all.clone(),
                non_resource_urls: all,
                ..Default::default()
            },
        ];
    }
    let subjects: Vec<(bool, &str)> = std::iter::once((true, user.name.as_str()))
        .chain(user.groups.iter().map(|g| (false, g.as_str())))
        .collect();
    let ns_grants = index.namespaced.get(namespace);
    let mut out: Vec<PolicyRule> = Vec::new();
    for &(is_user, name) in &subjects {
        let grants = index
            .cluster
            .get(is_user, name)
            .into_iter()
            .chain(ns_grants.and_then(|m| m.get(is_user, name)))
            .flat_map(Grants::all);
        for g in grants {
            if !out.contains(&g.rule) {
                out.push((*g.rule).clone());
            }
        }
    }
    out
}

/// kube-apiserver's message for a refused request, e.g. `User "x" cannot create resource
/// "pods" in API group "" in the namespace "t1"` (the 403 prefixes the resource).
pub fn forbidden_reason(user: &str, attrs: &Attributes) -> String {
    match &attrs.target {
        Target::NonResource { path } => {
            format!("User {user:?} cannot {} path {path:?}", attrs.verb)
        }
        Target::Resource {
            group, namespace, ..
        } => {
            let resource = attrs.combined_resource();
            match namespace {
                Some(ns) => format!(
                    "User {user:?} cannot {} resource {resource:?} in API group {group:?} in the namespace {ns:?}",
                    attrs.verb
                ),
                None => format!(
                    "User {user:?} cannot {} resource {resource:?} in API group {group:?} at the cluster scope",
                    attrs.verb
                ),
            }
        }
    }
}
