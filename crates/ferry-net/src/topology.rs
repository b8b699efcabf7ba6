//! The NB topology as rows: routers, switches, router ports with their switch peers, static
//! routes, and the references between them, collected from several places and written out
//! at the end ([`Builder::finish`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::model::*;
use crate::names::mac_from;

/// The owner of infrastructure rows (routers, switches, links, ports).
pub const INFRA_OWNER: &str = "ferry/infra";

pub(crate) fn set(v: Vec<Value>) -> Value {
    json!(["set", v])
}
pub(crate) fn map(pairs: &[(&str, String)]) -> Value {
    json!([
        "map",
        pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}
pub(crate) fn reference(table: &str, key: &str) -> Value {
    json!(["ref", table, key])
}

/// Collects rows and the pieces routers and switches accumulate from several places.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) rows: BTreeMap<(&'static str, String), Row>,
    pub(crate) router_ports: BTreeMap<String, Vec<String>>,
    pub(crate) router_routes: BTreeMap<String, Vec<String>>,
    pub(crate) router_lbs: BTreeMap<String, Vec<String>>,
    pub(crate) router_options: BTreeMap<String, Vec<(&'static str, String)>>,
    pub(crate) switch_ports: BTreeMap<String, Vec<String>>,
    pub(crate) switch_groups: BTreeMap<String, Vec<String>>,
    pub(crate) group_lbs: BTreeMap<String, Vec<String>>,
    pub(crate) errors: Vec<ObjectError>,
}

pub(crate) fn key(table: &str, name: &str) -> String {
    format!("{table}:{name}")
}

impl Builder {
    pub(crate) fn add(
        &mut self,
        table: &'static str,
        name: &str,
        owner: &str,
        mut columns: BTreeMap<String, Value>,
    ) -> String {
        let k = key(table, name);
        if table != "Load_Balancer_Group" {
            columns.insert(
                "external_ids".into(),
                map(&[(KEY, k.clone()), (OWNER, owner.to_string())]),
            );
        }
        self.rows.insert(
            (table, k.clone()),
            Row {
                table,
                key: k.clone(),
                columns,
            },
        );
        k
    }

    pub(crate) fn router(&mut self, name: &str) {
        self.router_ports.entry(name.into()).or_default();
    }

    pub(crate) fn switch(&mut self, name: &str) {
        self.switch_ports.entry(name.into()).or_default();
    }

    /// Whether a row of `table` named `name` is already built.
    pub(crate) fn has(&self, table: &'static str, name: &str) -> bool {
        self.rows.contains_key(&(table, key(table, name)))
    }

    /// A router port on `switch` with its peer switch port, named `ROUTER-SWITCH` and
    /// `SWITCH-ROUTER`; `Err(name)` if either name is taken (nothing is added then).
    pub(crate) fn attach(
        &mut self,
        router: &str,
        switch: &str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway_chassis: &[&str],
    ) -> Result<(), String> {
        let lrp = format!("{router}-{switch}");
        let lsp = format!("{switch}-{router}");
        if self.has("Logical_Router_Port", &lrp) {
            return Err(lrp);
        }
        if self.has("Logical_Switch_Port", &lsp) {
            return Err(lsp);
        }
        let mut cols = BTreeMap::from([
            ("name".to_string(), json!(lrp)),
            ("mac".to_string(), json!(mac_from(&lrp))),
            (
                "networks".to_string(),
                set(vec![json!(format!("{ip}/{prefix}"))]),
            ),
            ("gateway_chassis".to_string(), set(vec![])),
        ]);
        // One Gateway_Chassis per chassis, the first preferred (highest priority): with
        // more than one, OVN runs BFD between them and moves the port when the active one
        // stops answering.
        let mut refs = Vec::new();
        for (i, ch) in gateway_chassis.iter().enumerate() {
            let gc_name = format!("{lrp}-{ch}");
            let gc = self.add(
                "Gateway_Chassis",
                &gc_name,
                INFRA_OWNER,
                BTreeMap::from([
                    ("name".to_string(), json!(gc_name)),
                    ("chassis_name".to_string(), json!(ch)),
                    ("priority".to_string(), json!(gateway_chassis.len() - i)),
                ]),
            );
            refs.push(reference("Gateway_Chassis", &gc));
        }
        if !refs.is_empty() {
            cols.insert("gateway_chassis".into(), set(refs));
        }
        let lrp_key = self.add("Logical_Router_Port", &lrp, INFRA_OWNER, cols);
        self.router_ports
            .entry(router.into())
            .or_default()
            .push(lrp_key);
        let lsp_key = self.add(
            "Logical_Switch_Port",
            &lsp,
            INFRA_OWNER,
            BTreeMap::from([
                ("name".to_string(), json!(lsp)),
                ("type".to_string(), json!("router")),
                ("addresses".to_string(), set(vec![json!("router")])),
                ("options".to_string(), map(&[("router-port", lrp.clone())])),
            ]),
        );
        self.switch_ports
            .entry(switch.into())
            .or_default()
            .push(lsp_key);
        Ok(())
    }

    pub(crate) fn route(&mut self, router: &str, prefix: &str, nexthop: Ipv4Addr, owner: &str) {
        let name = format!("{router}:{prefix}");
        let k = self.add(
            "Logical_Router_Static_Route",
            &name,
            owner,
            BTreeMap::from([
                ("ip_prefix".to_string(), json!(prefix)),
                ("nexthop".to_string(), json!(nexthop.to_string())),
            ]),
        );
        self.router_routes.entry(router.into()).or_default().push(k);
    }

    pub(crate) fn finish(mut self) -> Desired {
        for (router, ports) in std::mem::take(&mut self.router_ports) {
            let mut cols = BTreeMap::from([
                ("name".to_string(), json!(router)),
                (
                    "ports".to_string(),
                    set(ports
                        .iter()
                        .map(|k| reference("Logical_Router_Port", k))
                        .collect()),
                ),
                (
                    "static_routes".to_string(),
                    set(self
                        .router_routes
                        .remove(&router)
                        .unwrap_or_default()
                        .iter()
                        .map(|k| reference("Logical_Router_Static_Route", k))
                        .collect()),
                ),
                (
                    "load_balancer".to_string(),
                    set(self
                        .router_lbs
                        .remove(&router)
                        .unwrap_or_default()
                        .iter()
                        .map(|k| reference("Load_Balancer", k))
                        .collect()),
                ),
            ]);
            let opts = self.router_options.remove(&router).unwrap_or_default();
            cols.insert(
                "options".into(),
                map(&opts
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect::<Vec<_>>()),
            );
            self.add("Logical_Router", &router, INFRA_OWNER, cols);
        }
        for (group, lbs) in std::mem::take(&mut self.group_lbs) {
            self.add(
                "Load_Balancer_Group",
                &group,
                INFRA_OWNER,
                BTreeMap::from([
                    ("name".to_string(), json!(group)),
                    (
                        "load_balancer".to_string(),
                        set(lbs.iter().map(|k| reference("Load_Balancer", k)).collect()),
                    ),
                ]),
            );
        }
        for (switch, ports) in std::mem::take(&mut self.switch_ports) {
            let groups = self.switch_groups.remove(&switch).unwrap_or_default();
            self.add(
                "Logical_Switch",
                &switch,
                INFRA_OWNER,
                BTreeMap::from([
                    ("name".to_string(), json!(switch)),
                    (
                        "ports".to_string(),
                        set(ports
                            .iter()
                            .map(|k| reference("Logical_Switch_Port", k))
                            .collect()),
                    ),
                    (
                        "load_balancer_group".to_string(),
                        set(groups
                            .iter()
                            .map(|g| {
                                reference("Load_Balancer_Group", &key("Load_Balancer_Group", g))
                            })
                            .collect()),
                    ),
                ]),
            );
        }
        Desired {
            rows: self.rows.into_values().collect(),
            errors: self.errors,
        }
    }
}
