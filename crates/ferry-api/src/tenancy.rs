//! Tenancy: which namespaces may use a VPC. A `Vpc` whose `spec.namespaces` is empty
//! admits every namespace (the default VPC is such); otherwise only those listed. An object
//! of namespace X that names a subnet or VPC not admitting X (a Pod or VMI by its subnet
//! annotation, a BareMetal or VNicIP by `spec.subnet`, a YusurService by `spec.vpc` /
//! `spec.vpcs`) is refused at admission, so a tenant cannot place an address or a service
//! in another tenant's network. Pure: the caller looks the subnets and VPCs up.

use serde_json::Value;

use crate::contract::{ANNOTATION_SUBNET, DEFAULT_VPC};

/// A subnet or VPC an object names, with the field that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedNetwork {
    Subnet { field: String, name: String },
    Vpc { field: String, name: String },
}

/// The subnets and VPCs `object` (of `kind`) names.
pub fn named_networks(kind: &str, object: &Value) -> Vec<NamedNetwork> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let subnet = |field: &str, v: &Value| {
        text(v).map(|name| NamedNetwork::Subnet {
            field: field.into(),
            name,
        })
    };
    match kind {
        "Pod" | "VirtualMachineInstance" => subnet(
            &format!("metadata.annotations[{ANNOTATION_SUBNET}]"),
            &object["metadata"]["annotations"][ANNOTATION_SUBNET],
        )
        .into_iter()
        .collect(),
        "BareMetal" | "VNicIP" => subnet("spec.subnet", &object["spec"]["subnet"])
            .into_iter()
            .collect(),
        "YusurService" => {
            let one = text(&object["spec"]["vpc"]).map(|name| NamedNetwork::Vpc {
                field: "spec.vpc".into(),
                name,
            });
            let many = object["spec"]["vpcs"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, v)| {
                    text(v).map(|name| NamedNetwork::Vpc {
                        field: format!("spec.vpcs[{i}]"),
                        name,
                    })
                });
            one.into_iter().chain(many).collect()
        }
        _ => Vec::new(),
    }
}

/// What the caller knows of the cluster's networks.
pub trait Networks {
    /// The VPC of a subnet (`spec.vpc`, the default VPC when empty); `None` if no such subnet.
    fn subnet_vpc(&self, subnet: &str) -> Option<String>;
    /// A VPC's `spec.namespaces`; `None` if no such VPC.
    fn vpc_namespaces(&self, vpc: &str) -> Option<Vec<String>>;
}

/// The first thing `named` that `namespace` may not use: (field, message). Subnets and
/// VPCs that do not exist (yet) are not refused here: objects of a directory may be applied
/// in any order, and the controller reports what stays missing.
pub fn refusal(
    namespace: &str,
    named: &[NamedNetwork],
    networks: &impl Networks,
) -> Option<(String, String)> {
    named.iter().find_map(|n| {
        let (field, vpc, via) = match n {
            NamedNetwork::Subnet { field, name } => {
                let vpc = networks.subnet_vpc(name)?;
                let vpc = if vpc.is_empty() {
                    DEFAULT_VPC.to_string()
                } else {
                    vpc
                };
                (field, vpc, format!("subnet {name:?} of VPC"))
            }
            NamedNetwork::Vpc { field, name } => (field, name.clone(), "VPC".to_string()),
        };
        let admitted = networks.vpc_namespaces(&vpc)?;
        (!admitted.is_empty() && !admitted.iter().any(|a| a == namespace)).then(|| {
            (
                field.clone(),
                format!(
                    "namespace {namespace:?} may not use {via} {vpc:?}: the VPC admits only namespaces {}",
                    admitted.join(", ")
                ),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    struct Fixture {
        subnets: BTreeMap<&'static str, &'static str>,
        vpcs: BTreeMap<&'static str, Vec<String>>,
    }

    impl Networks for Fixture {
        fn subnet_vpc(&self, subnet: &str) -> Option<String> {
            self.subnets.get(subnet).map(|v| v.to_string())
        }
        fn vpc_namespaces(&self, vpc: &str) -> Option<Vec<String>> {
            self.vpcs.get(vpc).cloned()
        }
    }

    fn fixture() -> Fixture {
        Fixture {
            subnets: BTreeMap::from([
                ("vpc2-subnet1", "vpc2"),
                ("vpc1-subnet1", "vpc1"),
                ("ovn-default", ""),
            ]),
            vpcs: BTreeMap::from([
                ("vpc1", vec![]),
                ("vpc2", vec!["tenant-b".to_string(), "default".to_string()]),
                (DEFAULT_VPC, vec![]),
            ]),
        }
    }

    #[test]
    fn decisions() {
        let pod = |subnet: &str| json!({"metadata": {"annotations": {ANNOTATION_SUBNET: subnet}}, "spec": {}});
        let ysvc = |spec: Value| json!({"spec": spec});
        let refused_pod = Some((
            format!("metadata.annotations[{ANNOTATION_SUBNET}]"),
            "namespace \"t1\" may not use subnet \"vpc2-subnet1\" of VPC \"vpc2\": the VPC admits only namespaces tenant-b, default".to_string(),
        ));
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Value,
            Option<(String, String)>,
        );
        let cases: Vec<Case> = vec![
            ("pod in a VPC that does not admit it", "Pod", "t1", pod("vpc2-subnet1"), refused_pod),
            ("pod in a VPC that lists it", "Pod", "tenant-b", pod("vpc2-subnet1"), None),
            ("a VPC with no list admits everyone", "Pod", "t1", pod("vpc1-subnet1"), None),
            ("default VPC subnet", "Pod", "t1", pod("ovn-default"), None),
            ("pod with no subnet", "Pod", "t1", json!({"metadata": {}}), None),
            ("unknown subnet: not decided here", "Pod", "t1", pod("nope"), None),
            (
                "bare metal by spec.subnet",
                "BareMetal",
                "t1",
                json!({"spec": {"subnet": "vpc2-subnet1"}}),
                Some(("spec.subnet".into(), "namespace \"t1\" may not use subnet \"vpc2-subnet1\" of VPC \"vpc2\": the VPC admits only namespaces tenant-b, default".into())),
            ),
            (
                "yusur service, multi-VPC: the refused member is named",
                "YusurService",
                "t1",
                ysvc(json!({"vpcs": ["vpc1", "vpc2"]})),
                Some(("spec.vpcs[1]".into(), "namespace \"t1\" may not use VPC \"vpc2\": the VPC admits only namespaces tenant-b, default".into())),
            ),
            ("yusur service in an open VPC", "YusurService", "t1", ysvc(json!({"vpc": "vpc1"})), None),
            ("other kinds name nothing", "ConfigMap", "t1", json!({"data": {"subnet": "vpc2-subnet1"}}), None),
        ];
        for (name, kind, ns, object, want) in cases {
            let got = refusal(ns, &named_networks(kind, &object), &fixture());
            assert_eq!(got, want, "{name}");
        }
    }
}
