//! What kube-apiserver does to a `v1 Service` spec before it allocates anything: carrying
//! allocated values over on update (`patchAllocatedValues`), dropping fields a type change
//! made meaningless (`dropTypeDependentFields`), defaulting (`SetDefaults_Service`, the IP
//! family fields) and validation (`ValidateService`, `ValidateServiceUpdate`). Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ClientIPConfig, ServicePort, ServiceSpec, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cause;

pub const CLUSTER_IP: &str = "ClusterIP";
pub const NODE_PORT: &str = "NodePort";
pub const LOAD_BALANCER: &str = "LoadBalancer";
pub const EXTERNAL_NAME: &str = "ExternalName";
pub const NONE: &str = "None";
/// `v1.DefaultClientIPServiceAffinitySeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;
const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// A string field that is set and not empty.
pub(crate) fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

pub(crate) fn type_of(s: &ServiceSpec) -> &str {
    set(&s.type_).unwrap_or(CLUSTER_IP)
}

/// Every type but ExternalName has cluster IPs (or is headless).
pub(crate) fn needs_cluster_ip(s: &ServiceSpec) -> bool {
    type_of(s) != EXTERNAL_NAME
}

pub(crate) fn needs_node_ports(s: &ServiceSpec) -> bool {
    matches!(type_of(s), NODE_PORT | LOAD_BALANCER)
}

/// `allocateLoadBalancerNodePorts: false` asks for no new node ports (requests are honoured).
pub(crate) fn allocates_node_ports(s: &ServiceSpec) -> bool {
    type_of(s) == NODE_PORT
        || type_of(s) == LOAD_BALANCER && s.allocate_load_balancer_node_ports != Some(false)
}

/// `apiservice.NeedsHealthCheck`: LoadBalancer with `externalTrafficPolicy: Local`.
pub(crate) fn needs_health_check(s: &ServiceSpec) -> bool {
    type_of(s) == LOAD_BALANCER && set(&s.external_traffic_policy) == Some("Local")
}

pub(crate) fn is_headless(s: &ServiceSpec) -> bool {
    set(&s.cluster_ip) == Some(NONE)
        || s.cluster_ips
            .as_ref()
            .and_then(|v| v.first())
            .is_some_and(|ip| ip == NONE)
}

/// `service.ExternallyAccessible`.
fn externally_accessible(s: &ServiceSpec) -> bool {
    needs_node_ports(s)
        || type_of(s) == CLUSTER_IP && s.external_ips.as_ref().is_some_and(|v| !v.is_empty())
}

fn ports(s: &ServiceSpec) -> &[ServicePort] {
    s.ports.as_deref().unwrap_or_default()
}

fn protocol(p: &ServicePort) -> &str {
    set(&p.protocol).unwrap_or("TCP")
}

// === update: carry allocations over, drop what the new type does not use ===

/// What an update keeps from the stored object when the new one leaves it empty (so a
/// `kubectl replace` or an apply of the original manifest keeps the cluster IP and node
/// ports), and what it drops when the type no longer uses it.
pub fn patch_from_old(spec: &mut ServiceSpec, old: &ServiceSpec) {
    if needs_cluster_ip(old) && needs_cluster_ip(spec) {
        if set(&spec.cluster_ip).is_none() && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ip = old.cluster_ip.clone();
            spec.cluster_ips = old.cluster_ips.clone();
        } else if set(&spec.cluster_ip).is_none() {
            spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|v| v.first().cloned());
        } else if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
            && set(&spec.cluster_ip) == set(&old.cluster_ip)
        {
            spec.cluster_ips = old.cluster_ips.clone();
        }
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families = old.ip_families.clone();
        }
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy = old.ip_family_policy.clone();
        }
    }
    if needs_node_ports(old) && needs_node_ports(spec) {
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0
                && let Some(o) = ports(old)
                    .iter()
                    .find(|o| o.port == p.port && protocol(o) == protocol(p))
            {
                p.node_port = o.node_port;
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(spec)
        && spec.health_check_node_port.unwrap_or(0) == 0
    {
        spec.health_check_node_port = old.health_check_node_port;
    }
    // dropTypeDependentFields: values the client merely carried over from the old object.
    if !needs_cluster_ip(spec) && needs_cluster_ip(old) {
        if spec.cluster_ip == old.cluster_ip {
            spec.cluster_ip = None;
        }
        if spec.cluster_ips == old.cluster_ips {
            spec.cluster_ips = None;
        }
        if spec.ip_families == old.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old.ip_family_policy {
            spec.ip_family_policy = None;
        }
    }
    if !needs_node_ports(spec) && needs_node_ports(old) {
        for p in spec.ports.iter_mut().flatten() {
            let same = ports(old).iter().any(|o| {
                o.port == p.port && protocol(o) == protocol(p) && o.node_port == p.node_port
            });
            if same {
                p.node_port = None;
            }
        }
    }
    if !needs_health_check(spec) && spec.health_check_node_port == old.health_check_node_port {
        spec.health_check_node_port = None;
    }
    if type_of(spec) != LOAD_BALANCER
        && spec.allocate_load_balancer_node_ports == old.allocate_load_balancer_node_ports
    {
        spec.allocate_load_balancer_node_ports = None;
    }
}

// === defaults ===

/// `SetDefaults_Service` plus the cluster IP / IP family defaults of the Service registry
/// on a single-stack IPv4 cluster.
pub fn set_defaults(spec: &mut ServiceSpec) {
    if set(&spec.session_affinity).is_none() {
        spec.session_affinity = Some(NONE.into());
    }
    match set(&spec.session_affinity) {
        Some(NONE) => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if timeout.is_none() {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_AFFINITY_TIMEOUT),
                    }),
                });
            }
        }
        _ => {}
    }
    if set(&spec.type_).is_none() {
        spec.type_ = Some(CLUSTER_IP.into());
    }
    for p in spec.ports.iter_mut().flatten() {
        if set(&p.protocol).is_none() {
            p.protocol = Some("TCP".into());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if externally_accessible(spec) && set(&spec.external_traffic_policy).is_none() {
        spec.external_traffic_policy = Some("Cluster".into());
    }
    if spec.internal_traffic_policy.is_none() && needs_cluster_ip(spec) {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
    if type_of(spec) == LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    // clusterIP and clusterIPs[0] are one value written twice.
    match (
        set(&spec.cluster_ip).map(String::from),
        spec.cluster_ips.as_ref(),
    ) {
        (Some(ip), None) => spec.cluster_ips = Some(vec![ip]),
        (Some(ip), Some(v)) if v.is_empty() => spec.cluster_ips = Some(vec![ip]),
        (None, Some(v)) if !v.is_empty() => spec.cluster_ip = Some(v[0].clone()),
        _ => {}
    }
    if !needs_cluster_ip(spec) {
        return;
    }
    let selectorless = spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = Some(
            if is_headless(spec) && selectorless {
                "RequireDualStack"
            } else {
                "SingleStack"
            }
            .into(),
        );
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        let mut fams = vec!["IPv4".to_string()];
        // kube-apiserver gives a headless selectorless Service both families even on a
        // single-stack cluster unless it asks for SingleStack.
        if is_headless(spec)
            && selectorless
            && spec.ip_family_policy.as_deref() != Some("SingleStack")
        {
            fams.push("IPv6".into());
        }
        spec.ip_families = Some(fams);
    }
}

// === validation ===

fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
    (field.into(), format!("Invalid value: {value}: {why}"))
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Cause {
    let list: Vec<String> = allowed.iter().map(|a| quoted(a)).collect();
    (
        field.into(),
        format!(
            "Unsupported value: {}: supported values: {}",
            quoted(value),
            list.join(", ")
        ),
    )
}

fn required(field: impl Into<String>) -> Cause {
    (field.into(), "Required value".into())
}

fn forbidden(field: impl Into<String>, why: &str) -> Cause {
    (field.into(), format!("Forbidden: {why}"))
}

fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
    (field.into(), format!("Duplicate value: {value}"))
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const VALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// A DNS-1123 label (port names).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (ExternalName).
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// An IANA service name (a named targetPort).
fn iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// `ValidateService` (and the cluster-IP part of `ValidateServiceUpdate` when `old` is
/// given), for a single-stack IPv4 cluster. Field paths and messages as kube-apiserver's.
pub fn validate(spec: &ServiceSpec, old: Option<&ServiceSpec>) -> Vec<Cause> {
    let mut out = Vec::new();
    let ty = type_of(spec);
    if ![CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME].contains(&ty) {
        out.push(not_supported(
            "spec.type",
            ty,
            &[CLUSTER_IP, EXTERNAL_NAME, LOAD_BALANCER, NODE_PORT],
        ));
    }
    let headless = is_headless(spec);
    if ports(spec).is_empty() && !headless && ty != EXTERNAL_NAME {
        out.push(required("spec.ports"));
    }
    // Ports.
    let many = ports(spec).len() > 1;
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut seen_node = BTreeSet::new();
    for (i, p) in ports(spec).iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match set(&p.name) {
            None if many => out.push(required(format!("{at}.name"))),
            None => {}
            Some(n) => {
                if !dns_label(n) {
                    out.push(invalid(format!("{at}.name"), quoted(n), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
                }
                if !names.insert(n.to_string()) {
                    out.push(duplicate(format!("{at}.name"), quoted(n)));
                }
            }
        }
        if !(1..=65535).contains(&p.port) {
            out.push(invalid(format!("{at}.port"), p.port, PORT_RANGE));
        }
        let proto = protocol(p);
        if !["SCTP", "TCP", "UDP"].contains(&proto) {
            out.push(not_supported(
                format!("{at}.protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                out.push(invalid(format!("{at}.targetPort"), t, PORT_RANGE))
            }
            Some(IntOrString::String(s)) if !iana_svc_name(s) => out.push(invalid(
                format!("{at}.targetPort"),
                quoted(s),
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at least one letter, at most 15 characters, and no leading, trailing or double hyphens",
            )),
            _ => {}
        }
        let np = p.node_port.unwrap_or(0);
        if np != 0 && !needs_node_ports(spec) {
            out.push(forbidden(
                format!("{at}.nodePort"),
                &format!("may not be used when `type` is '{ty}'"),
            ));
        }
        if !seen.insert((proto.to_string(), p.port)) {
            out.push(duplicate(
                at.clone(),
                format!("{{\"port\": {}, \"protocol\": {}}}", p.port, quoted(proto)),
            ));
        }
        if np != 0 && !seen_node.insert((proto.to_string(), np)) {
            out.push(duplicate(
                at.clone(),
                format!("{{\"nodePort\": {np}, \"protocol\": {}}}", quoted(proto)),
            ));
        }
    }
    // Session affinity.
    match set(&spec.session_affinity) {
        None => out.push(required("spec.sessionAffinity")),
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match t {
                None => out.push(required(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                )),
                Some(t) if t <= 0 || t > MAX_AFFINITY_TIMEOUT => out.push(invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            }
        }
        Some(NONE) => {}
        Some(other) => out.push(not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", NONE],
        )),
    }
    // Cluster IPs.
    let ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ty == EXTERNAL_NAME {
        if set(&spec.cluster_ip).is_some() {
            out.push(forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
        if !ips.is_empty() {
            out.push(forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        match set(&spec.external_name) {
            None => out.push(required("spec.externalName")),
            Some(n) if !dns_subdomain(n.trim_end_matches('.')) => out.push(invalid(
                "spec.externalName",
                quoted(n),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )),
            Some(_) => {}
        }
    } else {
        if let (Some(ip), Some(first)) = (set(&spec.cluster_ip), ips.first())
            && ip != first
        {
            out.push(invalid(
                "spec.clusterIPs[0]",
                quoted(first),
                "must match `clusterIP` when provided",
            ));
        }
        if ips.len() > 2 {
            out.push(invalid(
                "spec.clusterIPs",
                format!("{ips:?}"),
                "may only hold up to 2 values",
            ));
        }
        for (i, ip) in ips.iter().enumerate() {
            let at = format!("spec.clusterIPs[{i}]");
            if ip == NONE {
                if i > 0 {
                    out.push(invalid(at, quoted(ip), "must be a valid IP address"));
                } else if needs_node_ports(spec) {
                    out.push(invalid(
                        at,
                        quoted(ip),
                        &format!("may not be set to 'None' for {ty} services"),
                    ));
                }
                continue;
            }
            match ip.parse::<IpAddr>() {
                Err(_) => out.push(invalid(at, quoted(ip), VALID_IP)),
                Ok(IpAddr::V6(_)) => out.push(invalid(
                    at,
                    format!("{ips:?}"),
                    "IPv6 is not configured on this cluster",
                )),
                Ok(IpAddr::V4(_)) => {}
            }
        }
        for (i, f) in spec.ip_families.iter().flatten().enumerate() {
            let at = format!("spec.ipFamilies[{i}]");
            match f.as_str() {
                "IPv4" => {}
                // A headless selectorless Service lists both families (no address is had).
                "IPv6" if headless && spec.selector.as_ref().is_none_or(BTreeMap::is_empty) => {}
                "IPv6" => out.push(invalid(at, quoted(f), "not configured on this cluster")),
                other => out.push(not_supported(at, other, &["IPv4", "IPv6"])),
            }
        }
        match spec.ip_family_policy.as_deref() {
            None | Some("SingleStack" | "PreferDualStack") => {}
            Some("RequireDualStack") if headless => {}
            Some("RequireDualStack") => out.push(invalid(
                "spec.ipFamilyPolicy",
                quoted("RequireDualStack"),
                "this cluster is not configured for dual-stack services",
            )),
            Some(other) => out.push(not_supported(
                "spec.ipFamilyPolicy",
                other,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            )),
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            out.push(invalid(
                format!("spec.externalIPs[{i}]"),
                quoted(ip),
                VALID_IP,
            ));
        }
    }
    // Traffic policies.
    if let Some(p) = set(&spec.external_traffic_policy) {
        if !["Cluster", "Local"].contains(&p) {
            out.push(not_supported(
                "spec.externalTrafficPolicy",
                p,
                &["Cluster", "Local"],
            ));
        } else if !externally_accessible(spec) {
            out.push(invalid(
                "spec.externalTrafficPolicy",
                quoted(p),
                "may only be set for externally-accessible services",
            ));
        }
    }
    if let Some(p) = set(&spec.internal_traffic_policy)
        && !["Cluster", "Local"].contains(&p)
    {
        out.push(not_supported(
            "spec.internalTrafficPolicy",
            p,
            &["Cluster", "Local"],
        ));
    }
    if let Some(h) = spec.health_check_node_port.filter(|h| *h != 0)
        && !needs_health_check(spec)
    {
        out.push(invalid(
            "spec.healthCheckNodePort",
            h,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    if spec.allocate_load_balancer_node_ports.is_some() && ty != LOAD_BALANCER {
        out.push(forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    // The primary cluster IP never changes (ValidateServiceUpdate), except to or from
    // ExternalName.
    if let Some(old) = old
        && needs_cluster_ip(old)
        && needs_cluster_ip(spec)
    {
        let before = old.cluster_ips.as_ref().and_then(|v| v.first());
        let after = spec.cluster_ips.as_ref().and_then(|v| v.first());
        if let (Some(b), Some(a)) = (before, after)
            && a != b
        {
            out.push(invalid(
                "spec.clusterIPs[0]",
                quoted(a),
                "may not change once set",
            ));
        }
    }
    out
}
