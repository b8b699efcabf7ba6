//! Pure label decisions: which verb and resource a request counts under (as
//! kube-apiserver's `apiserver_request_*` families name them), and what is safe to use as a
//! label value (bounded, no user-controlled cardinality).

/// The verb and resource of an API request, for its labels.
///
/// `path` is the URL path without the query; `is_watch` whether the query asked to watch.
/// Resource requests count under their plural (with `/subresource`); other paths under a
/// small fixed set (`discovery`, `openapi`, `metrics`, `health`, `version`, `ui`, `other`).
pub fn request_labels(method: &str, path: &str, is_watch: bool) -> (&'static str, String) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", _v, rest @ ..] if !rest.is_empty() => rest,
        ["apis", _g, _v, rest @ ..] if !rest.is_empty() => rest,
        _ => return (plain_verb(method), non_resource(path).to_string()),
    };
    // (plural, named, subresource)
    let (plural, named, sub) = match rest {
        ["namespaces", _ns] => ("namespaces", true, None),
        ["namespaces", _ns, sub @ ("status" | "finalize")] => ("namespaces", true, Some(*sub)),
        ["namespaces", _ns, plural] => (*plural, false, None),
        ["namespaces", _ns, plural, _name] => (*plural, true, None),
        ["namespaces", _ns, plural, _name, sub] => (*plural, true, Some(*sub)),
        [plural] => (*plural, false, None),
        [plural, _name] => (*plural, true, None),
        [plural, _name, sub] => (*plural, true, Some(*sub)),
        _ => return (plain_verb(method), "other".to_string()),
    };
    let verb = match (method, named) {
        ("GET" | "HEAD", _) if is_watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    };
    let resource = match sub {
        Some(s) if safe(plural) && safe(s) => format!("{plural}/{s}"),
        None if safe(plural) => plural.to_string(),
        _ => "other".to_string(),
    };
    (verb, resource)
}

fn plain_verb(method: &str) -> &'static str {
    match method {
        "GET" => "get",
        "HEAD" => "head",
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "other",
    }
}

fn non_resource(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    match p {
        "/api" | "/apis" => "discovery",
        "/metrics" => "metrics",
        "/healthz" | "/livez" | "/readyz" => "health",
        "/version" => "version",
        _ if p.starts_with("/openapi") => "openapi",
        _ if p.starts_with("/api") => "discovery",
        _ if p.starts_with("/ui") => "ui",
        _ => "other",
    }
}

/// Whether `s` may be a label value as it is: a DNS-label-like word of at most 63
/// characters (what plurals and subresources are), so a client cannot make up new series
/// with arbitrary text.
pub fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// name, method, path, watch, (verb, resource)
    type Case<'a> = (&'a str, &'a str, &'a str, bool, (&'a str, &'a str));

    #[test]
    fn requests_count_under_kube_apiserver_verbs_and_resources() {
        let cases: &[Case] = &[
            (
                "get pod",
                "GET",
                "/api/v1/namespaces/default/pods/p1",
                false,
                ("get", "pods"),
            ),
            (
                "list pods",
                "GET",
                "/api/v1/namespaces/default/pods",
                false,
                ("list", "pods"),
            ),
            ("list all", "GET", "/api/v1/pods", false, ("list", "pods")),
            (
                "watch",
                "GET",
                "/apis/iaas.yusur.io/v1/namespaces/d/yusurservices",
                true,
                ("watch", "yusurservices"),
            ),
            (
                "create",
                "POST",
                "/apis/iaas.yusur.io/v1/namespaces/d/networkprobes",
                false,
                ("create", "networkprobes"),
            ),
            (
                "status patch",
                "PATCH",
                "/apis/iaas.yusur.io/v1/namespaces/d/networkprobes/p/status",
                false,
                ("patch", "networkprobes/status"),
            ),
            (
                "update",
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/d/leases/l",
                false,
                ("update", "leases"),
            ),
            (
                "delete",
                "DELETE",
                "/api/v1/namespaces/d/pods/p",
                false,
                ("delete", "pods"),
            ),
            (
                "deletecollection",
                "DELETE",
                "/api/v1/namespaces/d/pods",
                false,
                ("deletecollection", "pods"),
            ),
            (
                "namespace",
                "GET",
                "/api/v1/namespaces/default",
                false,
                ("get", "namespaces"),
            ),
            (
                "namespace finalize",
                "PUT",
                "/api/v1/namespaces/x/finalize",
                false,
                ("update", "namespaces/finalize"),
            ),
            (
                "nodes status",
                "PATCH",
                "/api/v1/nodes/n1/status",
                false,
                ("patch", "nodes/status"),
            ),
            ("discovery", "GET", "/apis", false, ("get", "discovery")),
            (
                "group discovery",
                "GET",
                "/apis/iaas.yusur.io/v1",
                false,
                ("get", "discovery"),
            ),
            (
                "openapi",
                "GET",
                "/openapi/v3/apis/iaas.yusur.io/v1",
                false,
                ("get", "openapi"),
            ),
            ("metrics", "GET", "/metrics", false, ("get", "metrics")),
            ("health", "GET", "/readyz", false, ("get", "health")),
            (
                "made-up plural",
                "GET",
                "/api/v1/Not_A_Plural",
                false,
                ("list", "other"),
            ),
            (
                "too deep",
                "GET",
                "/api/v1/namespaces/a/b/c/d/e",
                false,
                ("get", "other"),
            ),
        ];
        for (name, method, path, watch, want) in cases {
            let (verb, resource) = request_labels(method, path, *watch);
            assert_eq!((verb, resource.as_str()), *want, "{name}");
        }
    }

    #[test]
    fn only_dns_like_words_are_safe_label_values() {
        assert!(safe("yusurservices"));
        assert!(safe("customresourcedefinitions.apiextensions"));
        assert!(!safe(""));
        assert!(!safe("Pods"));
        assert!(!safe("a b"));
        assert!(!safe(&"a".repeat(64)));
    }
}
