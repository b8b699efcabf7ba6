//! Rules the OpenAPI schema cannot express (cross-field and address checks). The API server
//! runs them before it stores an object, so a bad object is refused with a 422 naming the
//! field, and nothing is half-written.

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::{
    BareMetalSpec, EipSpec, HealthCheckType, Scope, ServiceType, SubnetSpec, VNicIPSpec,
    YusurServiceSpec,
};

/// One invalid field: `field` is a path such as `spec.ports[0].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Validates a Ferry object of `kind` (already schema-valid) as JSON; other kinds pass.
/// Returns every problem found, not only the first.
pub fn validate(kind: &str, object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    fn parse<T: serde::de::DeserializeOwned>(spec: Value) -> Result<T, Vec<FieldError>> {
        serde_json::from_value(spec).map_err(|e| vec![FieldError::new("spec", e.to_string())])
    }
    let result = match kind {
        "YusurService" => parse::<YusurServiceSpec>(spec).map(|s| yusur_service(&s)),
        "Subnet" => parse::<SubnetSpec>(spec).map(|s| subnet(&s)),
        "Eip" => parse::<EipSpec>(spec).map(|s| optional_ipv4("spec.address", &s.address)),
        "BareMetal" => parse::<BareMetalSpec>(spec).map(|s| {
            let mut errs = optional_ipv4("spec.ipAddress", &s.ip_address);
            errs.extend(optional_mac("spec.macAddress", &s.mac_address));
            errs
        }),
        "VNicIP" => parse::<VNicIPSpec>(spec).map(|s| {
            let mut errs = optional_ipv4("spec.ipAddress", &s.ip_address);
            errs.extend(optional_mac("spec.macAddress", &s.mac_address));
            errs
        }),
        _ => Ok(Vec::new()),
    };
    result.unwrap_or_else(|errs| errs)
}

fn yusur_service(s: &YusurServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match s.scope {
        Scope::Vpc => {
            if s.vpcs.is_some() {
                errs.push(FieldError::new(
                    "spec.vpcs",
                    "only for scope multi-vpc; use spec.vpc",
                ));
            }
        }
        Scope::MultiVpc => {
            match &s.vpcs {
                Some(v) if v.len() >= 2 => {
                    let mut seen = std::collections::BTreeSet::new();
                    for (i, name) in v.iter().enumerate() {
                        if !seen.insert(name) {
                            errs.push(FieldError::new(
                                format!("spec.vpcs[{i}]"),
                                format!("duplicate VPC {name:?}"),
                            ));
                        }
                    }
                }
                _ => errs.push(FieldError::new(
                    "spec.vpcs",
                    "scope multi-vpc needs at least two VPCs",
                )),
            }
            if s.vpc.is_some() {
                errs.push(FieldError::new(
                    "spec.vpc",
                    "only for scope vpc; use spec.vpcs",
                ));
            }
        }
    }
    if s.type_ == ServiceType::ClusterIP && s.eip.is_some() {
        errs.push(FieldError::new("spec.eip", "only for type LoadBalancer"));
    }
    errs.extend(optional_ipv4("spec.clusterIP", &s.cluster_ip));
    let mut seen_names = std::collections::BTreeSet::new();
    let mut seen_ports = std::collections::BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        if let Some(name) = &p.name {
            if !seen_names.insert(name.clone()) {
                errs.push(FieldError::new(
                    format!("spec.ports[{i}].name"),
                    format!("duplicate port name {name:?}"),
                ));
            }
        } else if s.ports.len() > 1 {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].name"),
                "required when there is more than one port",
            ));
        }
        if !seen_ports.insert((p.port, p.protocol)) {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].port"),
                format!("duplicate port {}/{:?}", p.port, p.protocol),
            ));
        }
    }
    if let Some(hc) = &s.health_check
        && hc.type_ == Some(HealthCheckType::HTTP)
        && let Some(path) = &hc.path
        && !path.starts_with('/')
    {
        errs.push(FieldError::new(
            "spec.healthCheck.path",
            "must start with /",
        ));
    }
    errs
}

fn subnet(s: &SubnetSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some((net, len)) = parse_cidr(&s.cidr_block) else {
        errs.push(FieldError::new(
            "spec.cidrBlock",
            format!("{:?} is not an IPv4 CIDR such as 10.0.1.0/24", s.cidr_block),
        ));
        return errs;
    };
    if len > 30 {
        errs.push(FieldError::new(
            "spec.cidrBlock",
            "prefix must be /30 or shorter",
        ));
    }
    if let Some(gw) = &s.gateway {
        match gw.parse::<Ipv4Addr>() {
            Ok(ip) if in_cidr(ip, net, len) => {}
            Ok(_) => errs.push(FieldError::new(
                "spec.gateway",
                format!("{gw} is outside {}", s.cidr_block),
            )),
            Err(_) => errs.push(FieldError::new(
                "spec.gateway",
                format!("{gw:?} is not an IPv4 address"),
            )),
        }
    }
    for (i, ex) in s.exclude_ips.iter().enumerate() {
        let ok = match ex.split_once("..") {
            Some((a, b)) => a.parse::<Ipv4Addr>().is_ok() && b.parse::<Ipv4Addr>().is_ok(),
            None => ex.parse::<Ipv4Addr>().is_ok(),
        };
        if !ok {
            errs.push(FieldError::new(
                format!("spec.excludeIps[{i}]"),
                format!("{ex:?} is not an address or a..b range"),
            ));
        }
    }
    errs
}

/// `10.0.1.0/24` -> (network, prefix length); the address must be the network address.
pub(crate) fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(ip) & mask == u32::from(ip)).then_some((ip, len))
}

fn in_cidr(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net)
}

fn optional_ipv4(field: &str, value: &Option<String>) -> Vec<FieldError> {
    match value {
        Some(v) if v.parse::<Ipv4Addr>().is_err() => {
            vec![FieldError::new(
                field,
                format!("{v:?} is not an IPv4 address"),
            )]
        }
        _ => Vec::new(),
    }
}

fn optional_mac(field: &str, value: &Option<String>) -> Vec<FieldError> {
    match value {
        Some(v) => {
            let parts: Vec<_> = v.split(':').collect();
            let ok = parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
            if ok {
                Vec::new()
            } else {
                vec![FieldError::new(
                    field,
                    format!("{v:?} is not a MAC address such as 0a:00:00:00:00:01"),
                )]
            }
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(kind: &str, obj: Value) -> Vec<String> {
        validate(kind, &obj).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn cases() {
        let cases: Vec<(&str, &str, Value, Vec<&str>)> = vec![
            (
                "seed manifest is valid",
                "YusurService",
                json!({"spec": {"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1",
                    "ports": [{"port": 5001, "name": "iperf", "protocol": "TCP", "targetPort": 5001}],
                    "selector": {"svc": "svc1-ep"}}}),
                vec![],
            ),
            (
                "multi-vpc needs two vpcs",
                "YusurService",
                json!({"spec": {"scope": "multi-vpc", "vpcs": ["vpc1"], "ports": [{"port": 80}]}}),
                vec!["spec.vpcs"],
            ),
            (
                "eip only for LoadBalancer",
                "YusurService",
                json!({"spec": {"eip": "198.18.0.100", "ports": [{"port": 80}]}}),
                vec!["spec.eip"],
            ),
            (
                "duplicate port",
                "YusurService",
                json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}}),
                vec!["spec.ports[1].port"],
            ),
            (
                "bad clusterIP",
                "YusurService",
                json!({"spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}}),
                vec!["spec.clusterIP"],
            ),
            (
                "subnet gateway outside",
                "Subnet",
                json!({"spec": {"vpc": "vpc1", "cidrBlock": "10.0.1.0/24", "gateway": "10.0.2.1"}}),
                vec!["spec.gateway"],
            ),
            (
                "subnet cidr not a network",
                "Subnet",
                json!({"spec": {"vpc": "vpc1", "cidrBlock": "10.0.1.5/24"}}),
                vec!["spec.cidrBlock"],
            ),
            (
                "bare metal bad mac",
                "BareMetal",
                json!({"spec": {"subnet": "s", "macAddress": "zz"}}),
                vec!["spec.macAddress"],
            ),
            ("other kinds pass", "Pod", json!({"spec": {}}), vec![]),
        ];
        for (name, kind, obj, want) in cases {
            assert_eq!(fields(kind, obj), want, "case {name}");
        }
    }
}
