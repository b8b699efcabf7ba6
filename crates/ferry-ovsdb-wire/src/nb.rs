//! The OVN Northbound tables and columns Ferry writes, with their wire types.
//!
//! Rows stay `serde_json` maps in wire notation (see [`crate::wire`]); these constants name
//! the tables and columns so that a typo is a compile error, and the test at the bottom
//! checks every one against `/usr/share/ovn/ovn-nb.ovsschema`.
//! Note: `Load_Balancer_Group` has no `external_ids` in NB schema 7.0.0 (OVN 23.03), so
//! groups are owned by name.

use crate::schema::{AtomType, ColumnType, Max};

/// The NB database name.
pub const DATABASE: &str = "OVN_Northbound";

/// A column Ferry uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
}

/// A table Ferry uses.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
}

impl Table {
    /// The column names, e.g. for `ferry_ovsdb::Config::monitor_table`.
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }
}

const fn ty(key: AtomType, value: Option<AtomType>, min: u64, max: Max) -> ColumnType {
    ColumnType {
        key,
        value,
        min,
        max,
    }
}

/// Exactly one string.
pub const STRING: ColumnType = ty(AtomType::String, None, 1, Max::N(1));
/// Exactly one integer.
pub const INTEGER: ColumnType = ty(AtomType::Integer, None, 1, Max::N(1));
/// Zero or one string.
pub const OPT_STRING: ColumnType = ty(AtomType::String, None, 0, Max::N(1));
/// Zero or one boolean.
pub const OPT_BOOLEAN: ColumnType = ty(AtomType::Boolean, None, 0, Max::N(1));
/// Zero or one uuid (a reference).
pub const OPT_UUID: ColumnType = ty(AtomType::Uuid, None, 0, Max::N(1));
/// Any number of strings.
pub const STRING_SET: ColumnType = ty(AtomType::String, None, 0, Max::Unlimited);
/// At least one string.
pub const STRING_SET_NONEMPTY: ColumnType = ty(AtomType::String, None, 1, Max::Unlimited);
/// Any number of uuids (references).
pub const UUID_SET: ColumnType = ty(AtomType::Uuid, None, 0, Max::Unlimited);
/// string -> string map.
pub const STRING_MAP: ColumnType = ty(AtomType::String, Some(AtomType::String), 0, Max::Unlimited);

macro_rules! table {
    ($(#[$doc:meta])* $module:ident = $name:literal { $($konst:ident = $col:literal : $ty:ident),* $(,)? }) => {
        $(#[$doc])*
        pub mod $module {
            #[allow(unused_imports)]
            use super::*;
            /// The table name.
            pub const TABLE: &str = $name;
            $(#[doc = concat!("`", $col, "`")] pub const $konst: &str = $col;)*
            /// Every column Ferry uses, with its type.
            pub const COLUMNS: &[Column] = &[$(Column { name: $col, ty: $ty }),*];
            /// The table definition.
            pub const DEF: Table = Table { name: TABLE, columns: COLUMNS };
        }
    };
}

table!(
    /// A logical switch (one per Subnet, plus join and external switches).
    logical_switch = "Logical_Switch" {
        NAME = "name": STRING,
        PORTS = "ports": UUID_SET,
        LOAD_BALANCER = "load_balancer": UUID_SET,
        LOAD_BALANCER_GROUP = "load_balancer_group": UUID_SET,
        OTHER_CONFIG = "other_config": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A logical switch port (pod, node, router-type port).
    logical_switch_port = "Logical_Switch_Port" {
        NAME = "name": STRING,
        TYPE = "type": STRING,
        ADDRESSES = "addresses": STRING_SET,
        PORT_SECURITY = "port_security": STRING_SET,
        OPTIONS = "options": STRING_MAP,
        ENABLED = "enabled": OPT_BOOLEAN,
        UP = "up": OPT_BOOLEAN,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A logical router (VPC router, `eipgw`, `sgw`).
    logical_router = "Logical_Router" {
        NAME = "name": STRING,
        PORTS = "ports": UUID_SET,
        STATIC_ROUTES = "static_routes": UUID_SET,
        NAT = "nat": UUID_SET,
        LOAD_BALANCER = "load_balancer": UUID_SET,
        LOAD_BALANCER_GROUP = "load_balancer_group": UUID_SET,
        OPTIONS = "options": STRING_MAP,
        ENABLED = "enabled": OPT_BOOLEAN,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A logical router port.
    logical_router_port = "Logical_Router_Port" {
        NAME = "name": STRING,
        MAC = "mac": STRING,
        NETWORKS = "networks": STRING_SET_NONEMPTY,
        PEER = "peer": OPT_STRING,
        GATEWAY_CHASSIS = "gateway_chassis": UUID_SET,
        OPTIONS = "options": STRING_MAP,
        ENABLED = "enabled": OPT_BOOLEAN,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A static route of a logical router.
    logical_router_static_route = "Logical_Router_Static_Route" {
        IP_PREFIX = "ip_prefix": STRING,
        NEXTHOP = "nexthop": STRING,
        OUTPUT_PORT = "output_port": OPT_STRING,
        POLICY = "policy": OPT_STRING,
        ROUTE_TABLE = "route_table": STRING,
        OPTIONS = "options": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A load balancer (one per service and protocol).
    load_balancer = "Load_Balancer" {
        NAME = "name": STRING,
        VIPS = "vips": STRING_MAP,
        PROTOCOL = "protocol": OPT_STRING,
        OPTIONS = "options": STRING_MAP,
        HEALTH_CHECK = "health_check": UUID_SET,
        IP_PORT_MAPPINGS = "ip_port_mappings": STRING_MAP,
        SELECTION_FIELDS = "selection_fields": STRING_SET,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A load balancer group (one per VPC). No `external_ids` in this schema.
    load_balancer_group = "Load_Balancer_Group" {
        NAME = "name": STRING,
        LOAD_BALANCER = "load_balancer": UUID_SET,
    }
);

table!(
    /// A NAT rule of a logical router.
    nat = "NAT" {
        TYPE = "type": STRING,
        EXTERNAL_IP = "external_ip": STRING,
        LOGICAL_IP = "logical_ip": STRING,
        LOGICAL_PORT = "logical_port": OPT_STRING,
        EXTERNAL_MAC = "external_mac": OPT_STRING,
        GATEWAY_PORT = "gateway_port": OPT_UUID,
        OPTIONS = "options": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// An OVN health check of a load balancer VIP.
    load_balancer_health_check = "Load_Balancer_Health_Check" {
        VIP = "vip": STRING,
        OPTIONS = "options": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A gateway chassis of a distributed gateway port.
    gateway_chassis = "Gateway_Chassis" {
        NAME = "name": STRING,
        CHASSIS_NAME = "chassis_name": STRING,
        PRIORITY = "priority": INTEGER,
        OPTIONS = "options": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// A port group (the socket-LB group of a VPC, whose members' traffic between each
    /// other skips conntrack). `ports` are weak references.
    port_group = "Port_Group" {
        NAME = "name": STRING,
        PORTS = "ports": UUID_SET,
        ACLS = "acls": UUID_SET,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

table!(
    /// An ACL (the socket-LB group's two `allow-stateless` ACLs).
    acl = "ACL" {
        NAME = "name": OPT_STRING,
        PRIORITY = "priority": INTEGER,
        DIRECTION = "direction": STRING,
        MATCH = "match": STRING,
        ACTION = "action": STRING,
        OPTIONS = "options": STRING_MAP,
        EXTERNAL_IDS = "external_ids": STRING_MAP,
    }
);

/// Every NB table Ferry writes.
pub const TABLES: &[Table] = &[
    logical_switch::DEF,
    logical_switch_port::DEF,
    logical_router::DEF,
    logical_router_port::DEF,
    logical_router_static_route::DEF,
    load_balancer::DEF,
    load_balancer_group::DEF,
    nat::DEF,
    load_balancer_health_check::DEF,
    gateway_chassis::DEF,
    port_group::DEF,
    acl::DEF,
];

/// Tables of the NB schema (7.0.0) that are not roots (`"isRoot": false`): a row lives
/// only while another row references it, so it is inserted together with that reference
/// and goes when the reference does (checked against the installed schema below).
pub const NON_ROOT: &[&str] = &[
    "Logical_Switch_Port",
    "Forwarding_Group",
    "Load_Balancer_Health_Check",
    "ACL",
    "QoS",
    "Meter_Band",
    "Logical_Router_Port",
    "Logical_Router_Static_Route",
    "Logical_Router_Policy",
    "NAT",
    "Connection",
    "SSL",
    "Gateway_Chassis",
    "HA_Chassis",
];

/// Whether rows of `table` stand on their own (not in [`NON_ROOT`]).
pub fn is_root(table: &str) -> bool {
    !NON_ROOT.contains(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    /// Installed by the `ovn-common` package (OVN 23.03 on Debian 12); CI installs it.
    const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

    #[test]
    fn every_table_and_column_ferry_uses_exists_in_the_installed_nb_schema() {
        let text = std::fs::read_to_string(NB_SCHEMA)
            .unwrap_or_else(|e| panic!("{NB_SCHEMA}: {e} (install ovn-common)"));
        let json: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        let schema = Schema::parse(&json).expect("schema parses");
        assert_eq!(schema.name, DATABASE);
        let mut problems = Vec::new();
        for t in TABLES {
            if !schema.tables.contains_key(t.name) {
                problems.push(format!("table {} missing", t.name));
                continue;
            }
            for c in t.columns {
                match schema.column(t.name, c.name) {
                    None => problems.push(format!("{}.{} missing", t.name, c.name)),
                    Some(got) if *got != c.ty => problems.push(format!(
                        "{}.{}: schema says {got:?}, Ferry expects {:?}",
                        t.name, c.name, c.ty
                    )),
                    Some(_) => {}
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn non_root_names_exactly_the_tables_the_installed_nb_schema_does_not_root() {
        let text = std::fs::read_to_string(NB_SCHEMA)
            .unwrap_or_else(|e| panic!("{NB_SCHEMA}: {e} (install ovn-common)"));
        let json: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        let tables = json["tables"].as_object().expect("tables");
        let mut want: Vec<&str> = tables
            .iter()
            .filter(|(_, t)| !t["isRoot"].as_bool().unwrap_or(false))
            .map(|(name, _)| name.as_str())
            .collect();
        let mut have = NON_ROOT.to_vec();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want);
    }

    #[test]
    fn column_names_are_unique_per_table() {
        for t in TABLES {
            let mut names = t.column_names();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.columns.len(), "{}", t.name);
        }
    }
}
