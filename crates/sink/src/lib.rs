//! The sink: finished tables to Parquet files, and back.
//!
//! This crate owns
//! - the table contracts, `schemas/<table>.toml` ([`contract`]): the document partners read and
//!   the only definition of each table's columns;
//! - the layout: `<out>/<table>/date=YYYY-MM-DD/part-00000.parquet`, Hive-style by the UTC date
//!   of `period_start`;
//! - writing: contract check, atomic replace (temporary file, sync, rename), removal of stale
//!   parts, zstd, statistics, and provenance in the key-value metadata (`logcensus.*`), with
//!   deterministic bytes;
//! - reading: [`inspect`] for `logcensus inspect` and [`read_table`] for tests.
//!
//! ```
//! use std::sync::Arc;
//! use logcensus_aggregate::{Column, TableOut};
//! use logcensus_sink::{read_table, write_tables, RunMetadata};
//!
//! let out = tempfile::tempdir().unwrap();
//! let referrers = TableOut {
//!     name: "referrers",
//!     columns: vec![
//!         ("period_start", Column::Timestamp(vec![1_778_976_000])), // 2026-05-17
//!         ("referrer_domain", Column::Str(vec![Some(Arc::from("google.com"))])),
//!         ("requests", Column::Int(vec![12])),
//!         ("visitors", Column::Int(vec![3])),
//!     ],
//! };
//! let meta = RunMetadata { pipeline: "partner-daily".into(), ..Default::default() };
//! let files = write_tables(out.path(), &[referrers], &meta).unwrap();
//! assert!(files[0].path.ends_with("referrers/date=2026-05-17/part-00000.parquet"));
//! assert_eq!(read_table(out.path(), "referrers").unwrap()[0].num_rows(), 1);
//! ```

pub mod contract;
mod error;
mod reader;
mod writer;

pub use contract::{arrow_schema, contracts, ColumnContract, ColumnType, TableContract};
pub use error::SinkError;
pub use reader::{inspect, read_table, Inspection};
pub use writer::{
    create_dir_durably, sync_dir, utc_date, write_tables, RunMetadata, WrittenFile, PART_FILE,
    VERSION,
};

#[cfg(test)]
mod test_tables;
