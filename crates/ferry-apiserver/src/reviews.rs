//! The authentication and authorization APIs that store nothing: `kubectl auth can-i`
//! (SelfSubjectAccessReview; SubjectAccessReview for another user), `kubectl auth whoami`
//! (SelfSubjectReview in authentication.k8s.io v1, v1beta1 and v1alpha1, as kubectl 1.28+,
//! 1.27 and 1.26 ask), `kubectl create token` (the TokenRequest subresource
//! `serviceaccounts/token`), and impersonation (`--as`, `--as-group`).

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::rbac::{
    AUTHENTICATED, Attributes, Index, SERVICE_ACCOUNTS, UserInfo, authorize, forbidden_reason,
};
use crate::status::ApiError;

/// A request to one of these APIs, from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthApi {
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
    SubjectAccessReview,
    /// `authentication.k8s.io/<version>`.
    SelfSubjectReview(String),
    TokenRequest {
        namespace: String,
        name: String,
    },
}

impl AuthApi {
    /// Which API `path` is (only POST reaches them).
    pub fn of(path: &str) -> Option<AuthApi> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ] => Some(AuthApi::SelfSubjectAccessReview),
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectrulesreviews",
            ] => Some(AuthApi::SelfSubjectRulesReview),
            ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
                Some(AuthApi::SubjectAccessReview)
            }
            [
                "apis",
                "authentication.k8s.io",
                v @ ("v1" | "v1beta1" | "v1alpha1"),
                "selfsubjectreviews",
            ] => Some(AuthApi::SelfSubjectReview(v.to_string())),
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "serviceaccounts",
                name,
                "token",
            ] => Some(AuthApi::TokenRequest {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => None,
        }
    }

    /// What the caller must be allowed to do to ask.
    pub fn attributes(&self) -> Attributes {
        match self {
            AuthApi::SelfSubjectAccessReview => Attributes::resource(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                None,
                None,
            ),
            AuthApi::SelfSubjectRulesReview => Attributes::resource(
                "create",
                "authorization.k8s.io",
                "selfsubjectrulesreviews",
                "",
                None,
                None,
            ),
            AuthApi::SubjectAccessReview => Attributes::resource(
                "create",
                "authorization.k8s.io",
                "subjectaccessreviews",
                "",
                None,
                None,
            ),
            AuthApi::SelfSubjectReview(_) => Attributes::resource(
                "create",
                "authentication.k8s.io",
                "selfsubjectreviews",
                "",
                None,
                None,
            ),
            AuthApi::TokenRequest { namespace, name } => Attributes::resource(
                "create",
                "",
                "serviceaccounts",
                "token",
                Some(namespace),
                Some(name),
            ),
        }
    }
}

/// The request attributes a (Self)SubjectAccessReview's spec asks about.
fn spec_attributes(spec: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let r = &spec["resourceAttributes"];
    let n = &spec["nonResourceAttributes"];
    if r.is_object() {
        let resource = s(&r["resource"]);
        // A Namespace's own name is its namespace, as for requests.
        let mut namespace = s(&r["namespace"]);
        if resource == "namespaces" && namespace.is_empty() {
            namespace = s(&r["name"]);
        }
        return Ok(Attributes::resource(
            &s(&r["verb"]),
            &s(&r["group"]),
            &resource,
            &s(&r["subresource"]),
            Some(namespace.as_str()),
            Some(s(&r["name"]).as_str()),
        ));
    }
    if n.is_object() {
        return Ok(Attributes::non_resource(&s(&n["verb"]), &s(&n["path"])));
    }
    Err(ApiError::invalid(
        "SelfSubjectAccessReview",
        "authorization.k8s.io",
        "",
        vec![(
            "spec.resourceAttributes".into(),
            "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
        )],
    ))
}

fn review_status(index: &Index, user: &UserInfo, attrs: &Attributes) -> Value {
    let d = authorize(index, user, attrs);
    let mut status = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    status
}

/// `POST selfsubjectaccessreviews`: may the caller do what the spec says?
pub fn self_subject_access_review(
    index: &Index,
    user: &UserInfo,
    body: &Value,
) -> Result<Value, ApiError> {
    let attrs = spec_attributes(&body["spec"])?;
    let mut out = body.clone();
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!("SelfSubjectAccessReview");
    out["metadata"] = json!({"creationTimestamp": null});
    out["status"] = review_status(index, user, &attrs);
    Ok(out)
}

/// `POST selfsubjectrulesreviews`: every rule the caller has in `spec.namespace`.
pub fn self_subject_rules_review(index: &Index, user: &UserInfo, body: &Value) -> Value {
    let namespace = body["spec"]["namespace"].as_str().unwrap_or_default();
    let rules = crate::rbac::rules_for(index, user, namespace);
    let resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| !r.resources.is_empty())
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| !r.non_resource_urls.is_empty())
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "metadata": {"creationTimestamp": null}, "spec": body["spec"],
        "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
            "incomplete": false}})
}

/// `POST subjectaccessreviews`: may the user (and groups) the spec names do what it says?
pub fn subject_access_review(index: &Index, body: &Value) -> Result<Value, ApiError> {
    let spec = &body["spec"];
    let attrs = spec_attributes(spec)?;
    let groups = spec["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let user = UserInfo {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        uid: spec["uid"].as_str().unwrap_or_default().to_string(),
        groups,
        ..Default::default()
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview",
            "authorization.k8s.io",
            "",
            vec![(
                "spec.user".into(),
                "Invalid value: \"\": at least one of user or group must be specified".into(),
            )],
        ));
    }
    let mut out = body.clone();
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!("SubjectAccessReview");
    out["metadata"] = json!({"creationTimestamp": null});
    out["status"] = review_status(index, &user, &attrs);
    Ok(out)
}

/// `POST selfsubjectreviews`: who the caller is (after impersonation).
pub fn self_subject_review(version: &str, user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    json!({"apiVersion": format!("authentication.k8s.io/{version}"), "kind": "SelfSubjectReview",
        "metadata": {"creationTimestamp": crate::objects::now()}, "status": {"userInfo": info}})
}

/// The lifetime of a token when the request names none (kube-apiserver's default).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_TOKEN_SECONDS: i64 = 600;
/// The longest lifetime handed out (kube-apiserver caps at its signing key's; 48 h here).
pub const MAX_TOKEN_SECONDS: i64 = 48 * 3600;

/// The lifetime a TokenRequest gets, or a 422 naming the field.
pub fn token_seconds(body: &Value, name: &str) -> Result<i64, ApiError> {
    match body["spec"]["expirationSeconds"].as_i64() {
        None => Ok(DEFAULT_TOKEN_SECONDS),
        Some(s) if s < MIN_TOKEN_SECONDS => Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            vec![(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {s}: may not specify a duration less than 10 minutes"),
            )],
        )),
        Some(s) => Ok(s.min(MAX_TOKEN_SECONDS)),
    }
}

/// The TokenRequest answered: the token and when it expires.
pub fn token_response(
    body: &Value,
    namespace: &str,
    name: &str,
    token: &str,
    seconds: i64,
    expires: &str,
) -> Value {
    let mut spec = body["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["expirationSeconds"] = json!(seconds);
    if spec["audiences"].as_array().is_none_or(Vec::is_empty) {
        spec["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": crate::objects::now()},
        "spec": spec, "status": {"token": token, "expirationTimestamp": expires}})
}

/// The identity a request acts as: the caller itself, or whom its `Impersonate-User`,
/// `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-*` headers name if the
/// caller may `impersonate` each of them (users, groups, serviceaccounts, uids,
/// userextras), as kube-apiserver's impersonation filter decides.
pub fn impersonate(
    index: &Index,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uids = values("impersonate-uid");
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    let Some(name) = users.first() else {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(caller.clone());
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extra without impersonating a user",
        ));
    };
    let check = |attrs: Attributes| -> Result<(), ApiError> {
        if authorize(index, caller, &attrs).allowed {
            return Ok(());
        }
        Err(ApiError::forbidden_for(
            &attrs,
            forbidden_reason(&caller.name, &attrs),
        ))
    };
    let mut out = UserInfo {
        name: name.clone(),
        ..Default::default()
    };
    match out.service_account_of() {
        Some((ns, sa)) => check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            Some(ns),
            Some(sa),
        ))?,
        None => check(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            None,
            Some(name),
        ))?,
    }
    for g in &groups {
        check(Attributes::resource(
            "impersonate",
            "",
            "groups",
            "",
            None,
            Some(g),
        ))?;
    }
    if let Some(uid) = uids.first() {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            None,
            Some(uid),
        ))?;
        out.uid = uid.clone();
    }
    for (key, value) in extras {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "userextras",
            &key,
            None,
            Some(&value),
        ))?;
        out.extra.entry(key).or_default().push(value);
    }
    out.groups = groups;
    if let Some((ns, _)) = out.service_account_of() {
        let ns = ns.to_string();
        for g in [
            SERVICE_ACCOUNTS.to_string(),
            format!("{SERVICE_ACCOUNTS}:{ns}"),
        ] {
            if !out.groups.contains(&g) {
                out.groups.push(g);
            }
        }
    }
    if out.name != "system:anonymous" && !out.groups.iter().any(|g| g == AUTHENTICATED) {
        out.groups.push(AUTHENTICATED.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn index() -> Index {
        let roles = vec![json!({"metadata": {"name": "impersonator"}, "rules": [
            {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]}]})];
        let bindings = vec![
            json!({"metadata": {"name": "imp"}, "roleRef": {"kind": "ClusterRole", "name": "impersonator"},
            "subjects": [{"kind": "User", "name": "imp"}]}),
        ];
        Index::build(&roles, &[], &bindings, &[])
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn plain(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: vec![AUTHENTICATED.into()],
            ..Default::default()
        }
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let idx = index();
        let as_sa = headers(&[("impersonate-user", "system:serviceaccount:t1:default")]);
        let got = impersonate(&idx, &plain("imp"), &as_sa).unwrap();
        assert_eq!(
            got,
            UserInfo {
                name: "system:serviceaccount:t1:default".into(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:t1".into(),
                    "system:authenticated".into()
                ],
                ..Default::default()
            }
        );
        let err = impersonate(&idx, &plain("eve"), &as_sa).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "serviceaccounts \"default\" is forbidden: User \"eve\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"t1\""
        );
        let with_group = headers(&[("impersonate-user", "bob"), ("impersonate-group", "devs")]);
        let got = impersonate(&idx, &plain("imp"), &with_group).unwrap();
        assert_eq!(
            (got.name.as_str(), got.groups),
            ("bob", vec!["devs".to_string(), AUTHENTICATED.to_string()])
        );
        // No headers: the caller as it is.
        assert_eq!(
            impersonate(&idx, &plain("eve"), &HeaderMap::new()).unwrap(),
            plain("eve")
        );
        // A group without a user is a bad request.
        let err = impersonate(
            &idx,
            &plain("imp"),
            &headers(&[("impersonate-group", "devs")]),
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn access_reviews_answer_from_the_spec() {
        let idx = index();
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "t1", "verb": "impersonate", "resource": "users", "name": "x"}}});
        let got = self_subject_access_review(&idx, &plain("imp"), &body).unwrap();
        assert_eq!(got["status"]["allowed"], json!(true));
        assert!(
            got["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("ClusterRoleBinding \"imp\"")
        );
        let got = self_subject_access_review(&idx, &plain("eve"), &body).unwrap();
        assert_eq!(got["status"], json!({"allowed": false}));
        let sar = json!({"spec": {"user": "imp", "nonResourceAttributes": {"verb": "get", "path": "/metrics"}}});
        assert_eq!(
            subject_access_review(&idx, &sar).unwrap()["status"],
            json!({"allowed": false})
        );
        assert_eq!(
            subject_access_review(&idx, &json!({"spec": {"nonResourceAttributes": {}}}))
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(
            self_subject_access_review(&idx, &plain("imp"), &json!({"spec": {}}))
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn review_paths() {
        let cases = [
            (
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Some(AuthApi::SelfSubjectAccessReview),
            ),
            (
                "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews",
                Some(AuthApi::SelfSubjectReview("v1beta1".into())),
            ),
            (
                "/api/v1/namespaces/t1/serviceaccounts/default/token",
                Some(AuthApi::TokenRequest {
                    namespace: "t1".into(),
                    name: "default".into(),
                }),
            ),
            ("/api/v1/namespaces/t1/serviceaccounts/default", None),
            ("/apis/authentication.k8s.io/v2/selfsubjectreviews", None),
        ];
        for (path, want) in cases {
            assert_eq!(AuthApi::of(path), want, "{path}");
        }
        assert_eq!(
            token_seconds(&json!({"spec": {"expirationSeconds": 60}}), "default")
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(
            token_seconds(&json!({"spec": {}}), "default").unwrap(),
            3600
        );
    }
}
