//! The OVN Northbound tables and columns Ferry writes (defined in `ferry-ovsdb-wire`, so
//! pure crates can name them without this client), and a client [`config`] that mirrors
//! them.

pub use ferry_ovsdb_wire::nb::*;

/// A [`crate::Config`] for `OVN_Northbound` that mirrors every table and column Ferry uses.
pub fn config<S: Into<String>>(remotes: impl IntoIterator<Item = S>) -> crate::Config {
    TABLES
        .iter()
        .fold(crate::Config::new(remotes, DATABASE), |c, t| {
            c.monitor_table(t.name, &t.column_names())
        })
}
