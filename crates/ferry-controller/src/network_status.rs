//! The status of the network objects, pure: a Subnet's gateway and its used and available
//! addresses (from the same address book IPAM decides on), a Vpc's router and subnets, an
//! Eip's address and the service it is bound to. `kubectl get subnets,vpcs,eips` shows them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_api::{EipStatus, SubnetStatus, VpcStatus};

use crate::allocate::Held;
use crate::ipam::Pool;
use crate::world::SubnetInfo;

/// Every subnet's status: its gateway, the addresses held in it, and how many are left.
pub fn subnet_statuses(
    subnets: &BTreeMap<String, SubnetInfo>,
    held: &[Held],
) -> BTreeMap<String, SubnetStatus> {
    subnets
        .values()
        .map(|s| {
            let used = held.iter().filter(|h| h.subnet == s.name).count() as i64;
            let capacity = Pool::subnet(&s.cidr, s.gateway, &s.exclude)
                .map(|p| p.capacity() as i64)
                .unwrap_or(0);
            let status = SubnetStatus {
                gateway: Some(s.gateway_or_default().to_string()),
                using_ips: used,
                available_ips: (capacity - used).max(0),
                conditions: Vec::new(),
            };
            (s.name.clone(), status)
        })
        .collect()
}

/// Every VPC's status: its OVN router (named after it) and its subnets, sorted.
pub fn vpc_statuses<'a>(
    vpcs: impl IntoIterator<Item = &'a str>,
    subnets: &BTreeMap<String, SubnetInfo>,
) -> BTreeMap<String, VpcStatus> {
    vpcs.into_iter()
        .map(|v| {
            let names: Vec<&str> = subnets
                .values()
                .filter(|s| s.vpc == v)
                .map(|s| s.name.as_str())
                .collect();
            let status = VpcStatus {
                router: Some(v.to_string()),
                subnets: (!names.is_empty()).then(|| names.join(",")),
                conditions: Vec::new(),
            };
            (v.to_string(), status)
        })
        .collect()
}

/// An Eip's status: its address (`spec.address`), and the service whose EIP it is, by
/// `namespace/name`; `bound` maps EIP addresses in services' statuses to their services.
pub fn eip_status(address: Option<Ipv4Addr>, bound: &BTreeMap<Ipv4Addr, String>) -> EipStatus {
    EipStatus {
        address: address.map(|a| a.to_string()),
        bound_to: address.and_then(|a| bound.get(&a).cloned()),
        conditions: Vec::new(),
    }
}

/// Whether writing `desired` over `current` changes anything Ferry owns (conditions are
/// not written here, so they do not count).
pub fn differs<T: serde::Serialize>(current: Option<&T>, desired: &T) -> bool {
    let strip = |v: serde_json::Value| {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.remove("conditions");
        }
        v
    };
    let desired = strip(serde_json::to_value(desired).unwrap_or_default());
    current.is_none_or(|c| strip(serde_json::to_value(c).unwrap_or_default()) != desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocate::Holder;

    fn subnet(name: &str, vpc: &str, cidr: &str, gateway: Option<&str>) -> SubnetInfo {
        SubnetInfo {
            name: name.into(),
            vpc: vpc.into(),
            cidr: cidr.into(),
            gateway: gateway.map(|g| g.parse().expect("gateway")),
            exclude: vec!["10.0.1.250..10.0.1.254".into()],
            namespaces: vec![],
            default: false,
        }
    }

    fn held(subnet: &str, ip: &str, name: &str) -> Held {
        Held {
            subnet: subnet.into(),
            ip: ip.parse().expect("ip"),
            holder: Holder::Pod {
                namespace: "default".into(),
                name: name.into(),
            },
        }
    }

    #[test]
    fn subnets_count_what_is_held_against_what_can_be_allocated() {
        let subnets = BTreeMap::from([
            ("a".to_string(), subnet("a", "vpc1", "10.0.1.0/24", None)),
            (
                "b".to_string(),
                subnet("b", "vpc1", "10.0.2.0/24", Some("10.0.2.254")),
            ),
        ]);
        let got = subnet_statuses(
            &subnets,
            &[
                held("a", "10.0.1.2", "p1"),
                held("a", "10.0.1.3", "p2"),
                held("b", "10.0.2.2", "p3"),
                held("gone", "10.9.0.2", "p4"),
            ],
        );
        // /24: 254 hosts, minus the gateway; "a" also excludes .250-.254 (5).
        let want = BTreeMap::from([
            (
                "a".to_string(),
                SubnetStatus {
                    gateway: Some("10.0.1.1".into()),
                    using_ips: 2,
                    available_ips: 253 - 5 - 2,
                    conditions: vec![],
                },
            ),
            (
                "b".to_string(),
                SubnetStatus {
                    gateway: Some("10.0.2.254".into()),
                    using_ips: 1,
                    available_ips: 253 - 1,
                    conditions: vec![],
                },
            ),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn vpcs_list_their_subnets_and_router() {
        let subnets = BTreeMap::from([
            ("s2".to_string(), subnet("s2", "vpc1", "10.0.2.0/24", None)),
            ("s1".to_string(), subnet("s1", "vpc1", "10.0.1.0/24", None)),
            (
                "d".to_string(),
                subnet("d", "ovn-cluster", "10.16.0.0/16", None),
            ),
        ]);
        let got = vpc_statuses(["vpc1", "vpc9"], &subnets);
        let want = BTreeMap::from([
            (
                "vpc1".to_string(),
                VpcStatus {
                    router: Some("vpc1".into()),
                    subnets: Some("s1,s2".into()),
                    conditions: vec![],
                },
            ),
            (
                "vpc9".to_string(),
                VpcStatus {
                    router: Some("vpc9".into()),
                    subnets: None,
                    conditions: vec![],
                },
            ),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn eips_say_what_they_are_bound_to_and_writes_skip_equal_statuses() {
        let ip: Ipv4Addr = "198.18.0.100".parse().expect("ip");
        let bound = BTreeMap::from([(ip, "default/web-eip".to_string())]);
        let s = eip_status(Some(ip), &bound);
        assert_eq!(s.bound_to.as_deref(), Some("default/web-eip"));
        assert_eq!(
            eip_status(Some("198.18.0.7".parse().expect("ip")), &bound).bound_to,
            None
        );
        assert_eq!(eip_status(None, &bound), EipStatus::default());
        assert!(differs(None, &s));
        assert!(!differs(Some(&s), &s));
        let mut with_condition = s.clone();
        with_condition.conditions.push(ferry_api::Condition {
            type_: "Bound".into(),
            status: "True".into(),
            reason: "Bound".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        });
        assert!(!differs(Some(&with_condition), &s));
        assert!(differs(Some(&EipStatus::default()), &s));
    }
}
