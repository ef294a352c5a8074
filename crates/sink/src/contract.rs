//! The table contracts: `schemas/<table>.toml`, embedded at build time.
//!
//! The files are the document analysts and partners read, and the only definition of the tables'
//! columns: the writer builds each Arrow schema from them and refuses a table that differs.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// The contract files, in table order.
const FILES: [(&str, &str); 4] = [
    (
        "schemas/traffic_by_region.toml",
        include_str!("../../../schemas/traffic_by_region.toml"),
    ),
    (
        "schemas/clients.toml",
        include_str!("../../../schemas/clients.toml"),
    ),
    (
        "schemas/referrers.toml",
        include_str!("../../../schemas/referrers.toml"),
    ),
    (
        "schemas/traffic_quality.toml",
        include_str!("../../../schemas/traffic_quality.toml"),
    ),
];

/// A column's type as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Parquet `TIMESTAMP(MICROS, isAdjustedToUTC = true)`; Arrow `Timestamp(Microsecond, "UTC")`.
    Timestamp,
    /// UTF-8 text; Arrow `Utf8`.
    String,
    /// Signed 64-bit integer.
    Int64,
    /// 64-bit IEEE float.
    Float64,
}

impl ColumnType {
    /// The name used in the contract files.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Timestamp => "timestamp",
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
        }
    }

    /// The Arrow type the writer uses.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::String => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
        }
    }
}

/// One `[[columns]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnContract {
    /// Column name, as in the Parquet file.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// May the column hold nulls?
    pub nullable: bool,
    /// What the column holds, for the reader of the table.
    pub description: String,
}

/// One table's contract (one `schemas/<table>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableContract {
    /// Table name: the directory name in the output and the `logcensus.table` metadata value.
    #[serde(rename = "table")]
    pub name: String,
    /// What the table counts.
    pub description: String,
    /// How the files are laid out (text for people).
    pub partitioning: String,
    /// What one row is.
    pub grain: String,
    /// Kinds of data that are never in the table, in any form.
    pub never_contains: Vec<String>,
    /// The columns, in file order.
    pub columns: Vec<ColumnContract>,
}

impl TableContract {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnContract> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Every table contract, in the order of the table list (parsed once).
pub fn contracts() -> &'static [TableContract] {
    static CONTRACTS: OnceLock<Vec<TableContract>> = OnceLock::new();
    CONTRACTS.get_or_init(|| {
        FILES
            .iter()
            .map(|(path, text)| {
                // The files are compiled in and checked by the tests: failing here is a build bug.
                parse(path, text).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    })
}

/// The contract of table `name`.
pub fn contract(name: &str) -> Option<&'static TableContract> {
    contracts().iter().find(|c| c.name == name)
}

/// The Arrow schema a table is written with.
pub fn arrow_schema(contract: &TableContract) -> SchemaRef {
    Arc::new(Schema::new(
        contract
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Parses and checks one contract file; `path` names it in errors.
fn parse(path: &str, text: &str) -> Result<TableContract, String> {
    let c: TableContract = toml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
    let expected = format!("schemas/{}.toml", c.name);
    if path != expected {
        return Err(format!(
            "{path}: table = \"{}\" but the file should then be {expected}",
            c.name
        ));
    }
    match c.columns.first() {
        Some(first)
            if first.name == "period_start"
                && first.ty == ColumnType::Timestamp
                && !first.nullable => {}
        _ => {
            return Err(format!(
                "{path}: the first column must be period_start, a timestamp that is not nullable"
            ))
        }
    }
    for (i, col) in c.columns.iter().enumerate() {
        if c.columns[..i].iter().any(|o| o.name == col.name) {
            return Err(format!("{path}: column {} is listed twice", col.name));
        }
        if col.description.trim().is_empty() {
            return Err(format!("{path}: column {} has no description", col.name));
        }
    }
    if c.never_contains.is_empty() {
        return Err(format!("{path}: never_contains is empty"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_exactly_the_four_tables_in_order() {
        let names: Vec<&str> = contracts().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "traffic_by_region",
                "clients",
                "referrers",
                "traffic_quality"
            ]
        );
    }

    #[test]
    fn every_schema_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES
            .iter()
            .map(|(p, _)| p.trim_start_matches("schemas/").to_string())
            .collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn every_table_says_what_it_never_contains() {
        for c in contracts() {
            assert!(!c.never_contains.is_empty(), "{}", c.name);
            let all = c.never_contains.join("\n");
            for must in [
                "IP address",
                "User-Agent",
                "query string",
                "visitor",
                "cookies",
            ] {
                assert!(all.contains(must), "{} never_contains lacks {must}", c.name);
            }
            assert!(!c.description.is_empty() && !c.grain.is_empty() && !c.partitioning.is_empty());
        }
    }

    #[test]
    fn columns_are_as_agreed() {
        let cols = |t: &str| -> Vec<(String, &'static str, bool)> {
            contract(t)
                .unwrap()
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.name(), c.nullable))
                .collect()
        };
        let own = |v: &[(&str, &'static str, bool)]| -> Vec<(String, &'static str, bool)> {
            v.iter().map(|(n, t, b)| (n.to_string(), *t, *b)).collect()
        };
        assert_eq!(
            cols("traffic_by_region"),
            own(&[
                ("period_start", "timestamp", false),
                ("continent", "string", false),
                ("country", "string", true),
                ("region", "string", true),
                ("requests", "int64", false),
                ("visitors", "int64", false),
                ("bytes", "int64", false),
            ])
        );
        assert_eq!(
            cols("clients"),
            own(&[
                ("period_start", "timestamp", false),
                ("device", "string", false),
                ("os", "string", false),
                ("os_version", "string", true),
                ("browser", "string", false),
                ("browser_version", "string", true),
                ("requests", "int64", false),
                ("visitors", "int64", false),
            ])
        );
        assert_eq!(
            cols("referrers"),
            own(&[
                ("period_start", "timestamp", false),
                ("referrer_domain", "string", false),
                ("requests", "int64", false),
                ("visitors", "int64", false),
            ])
        );
        let q = cols("traffic_quality");
        let names: Vec<&str> = q.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "period_start",
                "requests",
                "crawler_requests",
                "status_2xx",
                "status_3xx",
                "status_4xx",
                "status_5xx",
                "status_other",
                "bytes",
                "parse_errors",
                "rejected_lines",
                "rejected_invalid_utf8",
                "rejected_line_too_long",
                "rejected_bad_layout",
                "rejected_bad_timestamp",
                "rejected_bad_status",
                "rejected_bad_bytes",
                "rejected_bad_json",
                "rejected_missing_field",
                "rejected_truncated_input",
                "late_records",
                "empty_user_agent_requests",
                "unknown_user_agent_requests",
                "unknown_geo_requests",
                "empty_user_agent_share",
                "unknown_user_agent_share",
                "unknown_geo_share",
            ]
        );
        for (name, ty, nullable) in &q[1..] {
            let want = if name.ends_with("_share") {
                "float64"
            } else {
                "int64"
            };
            assert_eq!((*ty, *nullable), (want, false), "{name}");
        }
    }

    #[test]
    fn arrow_schema_maps_types() {
        let s = arrow_schema(contract("traffic_by_region").unwrap());
        let f = s.field(0);
        assert_eq!(f.name(), "period_start");
        assert_eq!(
            f.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(!f.is_nullable());
        assert_eq!(s.field(2).data_type(), &DataType::Utf8);
        assert!(s.field(2).is_nullable());
        assert_eq!(s.field(4).data_type(), &DataType::Int64);
        let q = arrow_schema(contract("traffic_quality").unwrap());
        assert_eq!(
            q.field_with_name("unknown_geo_share").unwrap().data_type(),
            &DataType::Float64
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = FILES[2].1.replacen("grain =", "grian =", 1);
        let err = parse("schemas/referrers.toml", &text).unwrap_err();
        assert!(err.contains("schemas/referrers.toml"), "{err}");
        assert!(err.contains("grian"), "{err}");
        let text = FILES[2]
            .1
            .replacen("nullable = false", "nullable = false\nnulable = true", 1);
        let err = parse("schemas/referrers.toml", &text).unwrap_err();
        assert!(err.contains("nulable"), "{err}");
    }

    #[test]
    fn unknown_types_are_rejected() {
        let text = FILES[2]
            .1
            .replacen("type = \"int64\"", "type = \"int32\"", 1);
        let err = parse("schemas/referrers.toml", &text).unwrap_err();
        assert!(err.contains("int32"), "{err}");
    }
}
