//! Gateways over several chassis (`gateway_chassis: "ch1,ch2,ch3"`, as `ferry up
//! --chassis-per-node` gives): the external gateway becomes a distributed router whose
//! port on the external network is a gateway port over every chassis, the first preferred,
//! the external network gets a localnet port, and the VPCs' gateway ports follow the same
//! priorities; `service-gateway` stays a gateway router on the first chassis. With one
//! chassis nothing changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_net::*;
use serde_json::json;

fn services() -> Vec<ServiceState> {
    vec![
        svc(
            "default/eip",
            vpc("vpc1"),
            Some("10.96.0.30"),
            Some("198.18.0.100"),
            &[("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")],
        ),
        svc(
            "default/multi",
            multi(&["vpc1", "vpc2"]),
            Some("10.96.0.40"),
            Some("198.18.0.101"),
            &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
        ),
    ]
}

/// `(chassis_name, priority)` of each Gateway_Chassis a router port references.
fn gateways(d: &Desired, lrp: &str) -> Vec<(String, i64)> {
    ref_names(
        d,
        &row(d, "Logical_Router_Port", lrp).columns["gateway_chassis"],
    )
    .iter()
    .map(|gc| {
        let c = &row(d, "Gateway_Chassis", gc).columns;
        (
            c["chassis_name"].as_str().unwrap().to_string(),
            c["priority"].as_i64().unwrap(),
        )
    })
    .collect()
}

fn option(d: &Desired, table: &str, name: &str, key: &str) -> Option<String> {
    let opts = &find(d, table, name)?.columns.get("options")?[1];
    opts.as_array()?
        .iter()
        .find(|kv| kv[0] == key)
        .and_then(|kv| kv[1].as_str().map(String::from))
}

#[test]
fn gateways_are_ha_over_every_listed_chassis() {
    let mut state = lab(services());
    state.gateway_chassis = "ch1,ch2,ch3".into();
    let d = build_desired(&state);
    assert_eq!(d.errors, vec![]);
    let ranked = vec![("ch1".to_string(), 3), ("ch2".into(), 2), ("ch3".into(), 1)];
    assert_eq!(gateways(&d, "eip-gateway-external"), ranked);
    assert_eq!(gateways(&d, "vpc1-transit-vpc1"), ranked);
    assert_eq!(option(&d, "Logical_Router", "eip-gateway", "chassis"), None);
    assert_eq!(
        option(&d, "Logical_Router", "service-gateway", "chassis"),
        Some("ch1".into())
    );
    let localnet = row(&d, "Logical_Switch_Port", "external-localnet");
    assert_eq!(
        (
            &localnet.columns["type"],
            &localnet.columns["addresses"],
            option(
                &d,
                "Logical_Switch_Port",
                "external-localnet",
                "network_name"
            ),
        ),
        (
            &json!("localnet"),
            &json!(["set", ["unknown"]]),
            Some("external".to_string())
        )
    );
    let ext_ports = ref_names(&d, &row(&d, "Logical_Switch", "external").columns["ports"]);
    assert!(
        ext_ports.contains(&"external-localnet".to_string()),
        "{ext_ports:?}"
    );
}

#[test]
fn one_chassis_keeps_gateway_routers_and_no_localnet() {
    let d = build_desired(&lab(services()));
    assert_eq!(d.errors, vec![]);
    assert_eq!(
        option(&d, "Logical_Router", "eip-gateway", "chassis"),
        Some("ch1".into())
    );
    assert_eq!(gateways(&d, "eip-gateway-external"), vec![]);
    assert_eq!(gateways(&d, "vpc1-transit-vpc1"), vec![("ch1".into(), 1)]);
    assert!(find(&d, "Logical_Switch_Port", "external-localnet").is_none());
}
