//! The table contracts, read from `schemas/*.toml` at build time with the audit's own types, so
//! the audit shares no code with the writer it checks.

use std::sync::OnceLock;

use serde::Deserialize;

/// Every contract file, embedded: `(file stem, text)`.
const SOURCES: [(&str, &str); 4] = [
    (
        "traffic_by_region",
        include_str!("../../../schemas/traffic_by_region.toml"),
    ),
    ("clients", include_str!("../../../schemas/clients.toml")),
    ("referrers", include_str!("../../../schemas/referrers.toml")),
    (
        "traffic_quality",
        include_str!("../../../schemas/traffic_quality.toml"),
    ),
];

/// One table contract (`schemas/<table>.toml`).
///
/// Unknown keys are refused, so a change to the contract format fails the audit's tests instead
/// of being silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Contract {
    /// The table name, also its directory name.
    pub table: String,
    /// The columns, in file order.
    pub columns: Vec<ContractColumn>,
    // The prose keys are for people; the audit only needs them to exist.
    #[serde(rename = "description")]
    _description: String,
    #[serde(rename = "partitioning")]
    _partitioning: String,
    #[serde(rename = "grain")]
    _grain: String,
    #[serde(rename = "never_contains")]
    _never_contains: Vec<String>,
}

/// One `[[columns]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContractColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
    #[serde(rename = "description")]
    _description: String,
}

/// A contract column type (see `schemas/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ColumnType {
    /// `INT64` `TIMESTAMP(MICROS, isAdjustedToUTC = true)`.
    Timestamp,
    /// `BYTE_ARRAY` `STRING`.
    String,
    /// `INT64`.
    Int64,
    /// `DOUBLE`.
    Float64,
}

impl ColumnType {
    /// The contract's name and the Parquet form it stands for.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ColumnType::Timestamp => "timestamp (INT64 TIMESTAMP(MICROS, UTC))",
            ColumnType::String => "string (BYTE_ARRAY STRING)",
            ColumnType::Int64 => "int64 (INT64)",
            ColumnType::Float64 => "float64 (DOUBLE)",
        }
    }
}

impl Contract {
    /// The column called `name`, with its position.
    pub(crate) fn column(&self, name: &str) -> Option<(usize, &ContractColumn)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }
}

/// Every contract, parsed once.
pub(crate) fn contracts() -> &'static [Contract] {
    static PARSED: OnceLock<Vec<Contract>> = OnceLock::new();
    PARSED.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(stem, text)| {
                toml::from_str(text).unwrap_or_else(|e| {
                    // Embedded at build time and parsed by a unit test: this is a build defect.
                    panic!("schemas/{stem}.toml does not parse as a table contract: {e}")
                })
            })
            .collect()
    })
}

/// The contract of `table`, if there is one.
pub(crate) fn contract(table: &str) -> Option<&'static Contract> {
    contracts().iter().find(|c| c.table == table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_parses_and_is_named_after_its_file() {
        let parsed = contracts();
        assert_eq!(parsed.len(), SOURCES.len());
        for ((stem, _), contract) in SOURCES.iter().zip(parsed) {
            assert_eq!(&contract.table, stem);
            assert_eq!(contract.columns[0].name, "period_start");
            assert_eq!(contract.columns[0].ty, ColumnType::Timestamp);
            assert!(!contract.columns[0].nullable);
        }
    }

    #[test]
    fn every_table_the_policy_crate_knows_has_a_contract() {
        for table in logcensus_policy::TableName::ALL {
            assert!(contract(table.name()).is_some(), "{}", table.name());
        }
    }

    #[test]
    fn contract_columns_are_read_in_order_with_types_and_nullability() {
        let clients = contract("clients").unwrap();
        let names: Vec<_> = clients.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "period_start",
                "device",
                "os",
                "os_version",
                "browser",
                "browser_version",
                "requests",
                "visitors"
            ]
        );
        let (at, os_version) = clients.column("os_version").unwrap();
        assert_eq!(at, 3);
        assert_eq!(os_version.ty, ColumnType::String);
        assert!(os_version.nullable);
        let quality = contract("traffic_quality").unwrap();
        assert_eq!(
            quality.column("unknown_geo_share").unwrap().1.ty,
            ColumnType::Float64
        );
    }
}
