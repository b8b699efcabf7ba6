//! The part of an OVSDB schema the client needs: each column's shape, so that update
//! notifications can be applied (a `modify` of a set or map column is a diff) and rows can
//! be completed with default values.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Base type of an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomType {
    fn parse(v: &Value) -> Option<AtomType> {
        let name = match v {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("type")?.as_str()?,
            _ => return None,
        };
        Some(match name {
            "integer" => AtomType::Integer,
            "real" => AtomType::Real,
            "boolean" => AtomType::Boolean,
            "string" => AtomType::String,
            "uuid" => AtomType::Uuid,
            _ => return None,
        })
    }

    /// The default atom (RFC 7047: 0, 0.0, false, "", all-zero uuid).
    pub fn default_value(self) -> Value {
        match self {
            AtomType::Integer => json!(0),
            AtomType::Real => json!(0.0),
            AtomType::Boolean => json!(false),
            AtomType::String => json!(""),
            AtomType::Uuid => json!(["uuid", "00000000-0000-0000-0000-000000000000"]),
        }
    }
}

/// Upper bound on the number of elements of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Max {
    N(u64),
    Unlimited,
}

/// A column type: `key` atoms, optional `value` atoms (then it is a map), `min..=max`
/// elements. `min == 1 && max == 1` without `value` is a scalar; anything else is a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnType {
    pub key: AtomType,
    pub value: Option<AtomType>,
    pub min: u64,
    pub max: Max,
}

impl ColumnType {
    /// Parses the `"type"` member of a column in an `.ovsschema`.
    pub fn parse(v: &Value) -> Option<ColumnType> {
        if let Some(key) = AtomType::parse(v).filter(|_| v.is_string()) {
            return Some(ColumnType {
                key,
                value: None,
                min: 1,
                max: Max::N(1),
            });
        }
        let o = v.as_object()?;
        let key = AtomType::parse(o.get("key")?)?;
        let value = match o.get("value") {
            Some(v) => Some(AtomType::parse(v)?),
            None => None,
        };
        let min = o.get("min").map_or(Some(1), Value::as_u64)?;
        let max = match o.get("max") {
            None => Max::N(1),
            Some(Value::String(s)) if s == "unlimited" => Max::Unlimited,
            Some(v) => Max::N(v.as_u64()?),
        };
        Some(ColumnType {
            key,
            value,
            min,
            max,
        })
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    pub fn is_set(&self) -> bool {
        self.value.is_none() && !(self.min == 1 && self.max == Max::N(1))
    }

    /// The value a column has when nobody set it.
    pub fn default_value(&self) -> Value {
        if self.is_map() {
            json!(["map", []])
        } else if self.is_set() {
            json!(["set", []])
        } else {
            self.key.default_value()
        }
    }
}

/// Column types of every table of one database.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub name: String,
    pub version: String,
    pub tables: BTreeMap<String, BTreeMap<String, ColumnType>>,
}

impl Schema {
    /// Parses a schema as returned by `get_schema` or read from an `.ovsschema` file.
    pub fn parse(v: &Value) -> Result<Schema> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let err = |reason: String| Error::Schema {
            db: name.clone(),
            reason,
        };
        let version = v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let tables_json = v
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| err("no \"tables\" object".into()))?;
        let mut tables = BTreeMap::new();
        for (table, t) in tables_json {
            let cols = t
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| err(format!("table {table}: no \"columns\" object")))?;
            let mut out = BTreeMap::new();
            for (col, c) in cols {
                let ty = c
                    .get("type")
                    .and_then(ColumnType::parse)
                    .ok_or_else(|| err(format!("table {table} column {col}: bad type")))?;
                out.insert(col.clone(), ty);
            }
            tables.insert(table.clone(), out);
        }
        Ok(Schema {
            name,
            version,
            tables,
        })
    }

    /// The type of `table.column` (`_uuid` and `_version` are not listed).
    pub fn column(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table)?.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_shapes() {
        let cases = [
            ("scalar string", json!("string"), false, false),
            ("optional", json!({"key": "string", "min": 0}), true, false),
            (
                "set of refs",
                json!({"key": {"type": "uuid", "refTable": "X"}, "min": 0, "max": "unlimited"}),
                true,
                false,
            ),
            (
                "map",
                json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}),
                false,
                true,
            ),
            (
                "enum scalar",
                json!({"key": {"type": "string", "enum": ["set", ["a", "b"]]}}),
                false,
                false,
            ),
        ];
        for (name, v, set, map) in cases {
            let t = ColumnType::parse(&v).expect(name);
            assert_eq!((t.is_set(), t.is_map()), (set, map), "{name}");
        }
    }
}
