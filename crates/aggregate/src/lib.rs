//! Aggregation: observations in, per-period tables out.
//!
//! The state is *mergeable*: two partial aggregates of the same periods (from two threads, two
//! files or two workers) combine exactly with [`Aggregates::merge`], because every cell keeps
//! sums and the set of visitor hashes it has seen, never a derived estimate. Disclosure control
//! and streaming build on that. (The one exception is a batch run's end, whose workers' visitors
//! are disjoint: a table released as counted then keeps each cell's number of visitors instead
//! of the set, see [`Aggregates::merge_disjoint`], and is only ever finished.) Visitor hashes
//! live only here, in memory, and in the private checkpoint bytes of [`Aggregates::to_bytes`]
//! (read back exactly by [`Aggregates::from_bytes`]; closed periods are released after
//! [`Aggregates::split_periods`]); [`Aggregates::finish`] writes their counts, never the hashes.
//!
//! ```
//! use logcensus_aggregate::{Aggregates, Observation, Rejection};
//! use logcensus_policy::{Period, TableName, CrawlerHandling};
//! let mut a = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
//! a.reject(Rejection::InvalidUtf8, Some(0));
//! let tables = a.finish(&[TableName::TrafficQuality]);
//! assert_eq!(tables[0].num_rows(), 1);
//! ```

pub mod output;
mod state;
pub mod visitor;

pub use output::{Column, Str, TableOut};
pub use state::DecodeError;
pub use state::{
    table_from_rows, Aggregates, Built, Contribution, Front, Locate, Observation, Origin,
    Rejection, ReleasedRow, Row, Settled, TableRows, Visitors,
};
pub use visitor::{DayKey, SecretError, VisitorKeys, VisitorSecret};
