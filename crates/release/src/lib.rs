//! Disclosure control between aggregation and the sink: contribution bounding, small-cell
//! suppression (no released row stands for fewer than `k` visitors) and optional differential
//! privacy ([`dp`]). [`release_table`] runs them in that order on one table.
//!
//! It runs on complete periods, after every partial aggregate has been merged, and decides on
//! exact distinct visitor counts (the union of the visitor-hash sets behind the rows), never on
//! estimates. A row under `k` is merged into an `(other)` row of its parent:
//!
//! | table | a row under k becomes | an `(other)` still under k |
//! | --- | --- | --- |
//! | `traffic_by_region` | region → `(other)` region of its country (country → `(other)` country of its continent at country level) | suppressed |
//! | `clients` | versions → `(other)` versions of the same device, OS and browser; then → one `(other)` client | suppressed |
//! | `referrers` | → `(other)` | suppressed |
//!
//! ```
//! use logcensus_release::{suppress_small_cells, ReleaseStats};
//! use logcensus_policy::TableName;
//! let (rows, stats) = suppress_small_cells(TableName::Referrers, Vec::new(), 10);
//! assert!(rows.is_empty());
//! assert_eq!(stats, ReleaseStats::default());
//! ```

mod bound;
pub mod dp;

use std::collections::BTreeMap;
use std::sync::Arc;

use logcensus_aggregate::{ReleasedRow, Row, Str};
use logcensus_policy::{Bounds, TableName};

pub use bound::{bound_contributions, BoundStats, SelectionKey};
pub use dp::{Calibration, DpError, DpStats};

/// The index ranges of `rows` (sorted by period) that share a period.
pub(crate) fn period_ranges(rows: &[Row]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let period = rows[start].period;
        let len = rows[start..]
            .iter()
            .take_while(|r| r.period == period)
            .count();
        out.push(start..start + len);
        start += len;
    }
    out
}

/// How one table is released.
#[derive(Debug, Default)]
pub struct TableRelease {
    /// Minimum exact visitors per released row (k). Without DP, smaller rows roll up into
    /// `(other)` rows or are withheld; with DP, it is a pre-threshold before partition selection.
    pub min_visitors: Option<u64>,
    pub bounds: Bounds,
    pub dp: Option<Calibration>,
}

impl TableRelease {
    /// True when the table is released as counted: no minimum, no bound, no noise.
    pub fn is_exact(&self) -> bool {
        self.min_visitors.is_none() && !self.bounds.any() && self.dp.is_none()
    }

    /// The `logcensus.release.*` metadata of the table's files.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: String| out.push((format!("logcensus.release.{k}"), v));
        if let Some(k) = self.min_visitors {
            put("min_visitors", k.to_string());
        }
        if let Some(n) = self.bounds.max_rows_per_visitor {
            put("max_rows_per_visitor", n.to_string());
        }
        if let Some(n) = self.bounds.max_requests_per_row {
            put("max_requests_per_row", n.to_string());
        }
        if let Some(n) = self.bounds.max_bytes_per_row {
            put("max_bytes_per_row", n.to_string());
        }
        if let Some(dp) = &self.dp {
            out.extend(dp.metadata());
        }
        out
    }
}

/// Everything a release did to one table (for logs and tests; never written to an output).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub bounds: BoundStats,
    /// Small-cell suppression (without DP).
    pub small_cells: ReleaseStats,
    /// DP selection (with DP).
    pub dp: DpStats,
}

/// Releases one demographic table's rows (sorted by period and dimensions): contribution bounds,
/// then DP (with k as pre-threshold) or the k-minimum with roll-up.
pub fn release_table(
    table: TableName,
    rows: Vec<Row>,
    how: &TableRelease,
    key: SelectionKey,
) -> Result<(Vec<ReleasedRow>, TableStats), DpError> {
    let mut stats = TableStats::default();
    let (rows, b) = bound_contributions(rows, &how.bounds, key);
    stats.bounds = b;
    if let Some(dp) = &how.dp {
        let (rows, d) = dp.release(&rows)?;
        stats.dp = d;
        return Ok((rows, stats));
    }
    let rows = match how.min_visitors {
        Some(k) => {
            let (rows, s) = suppress_small_cells(table, rows, k);
            stats.small_cells = s;
            rows
        }
        None => rows,
    };
    Ok((rows.into_iter().map(ReleasedRow::from).collect(), stats))
}

/// The value of a dimension that stands for rows rolled up together.
pub const OTHER: &str = "(other)";

/// One generalisation step: a row's dimensions, one level coarser.
type Generalise = fn(&[Option<Str>]) -> Vec<Option<Str>>;

/// Rows merged under one (period, generalised dimensions), with how many original rows they hold.
type Groups = BTreeMap<(i64, Vec<Option<Str>>), (Row, usize)>;

/// What a release did to one table (for logs and tests; never written to an output).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Rows released as they were.
    pub kept_rows: usize,
    /// Rows merged into an `(other)` row that was released.
    pub rolled_up_rows: usize,
    /// Rows withheld entirely (their `(other)` row was still under k).
    pub suppressed_rows: usize,
    /// Requests in withheld rows.
    pub suppressed_requests: u64,
}

/// Applies the minimum of `k` visitors per released row to one demographic table.
/// Rows come sorted (period, dims) and leave sorted.
pub fn suppress_small_cells(table: TableName, rows: Vec<Row>, k: u64) -> (Vec<Row>, ReleaseStats) {
    let mut stats = ReleaseStats::default();
    let mut out = Vec::with_capacity(rows.len());
    // Each level generalises a row's dimensions one step; the last level's leftovers are withheld.
    let levels: &[Generalise] = match table {
        TableName::TrafficByRegion => &[geo_parent],
        TableName::Clients => &[client_versions_other, all_other],
        TableName::Referrers => &[all_other],
        TableName::TrafficQuality => return (rows, stats),
    };
    let mut pending: Vec<(Row, usize)> = Vec::new(); // (row, how many original rows it holds)
    for row in rows {
        if row.visitors.len() as u64 >= k {
            stats.kept_rows += 1;
            out.push(row);
        } else {
            pending.push((row, 1));
        }
    }
    for generalise in levels {
        let mut groups: Groups = BTreeMap::new();
        for (row, n) in pending.drain(..) {
            let dims = generalise(&row.dims);
            let key = (row.period, dims.clone());
            let row = Row { dims, ..row };
            match groups.get_mut(&key) {
                Some((g, m)) => {
                    g.absorb(row);
                    *m += n;
                }
                None => {
                    groups.insert(key, (row, n));
                }
            }
        }
        for (_, (row, n)) in groups {
            if row.visitors.len() as u64 >= k {
                stats.rolled_up_rows += n;
                out.push(row);
            } else {
                pending.push((row, n));
            }
        }
    }
    for (row, n) in pending {
        stats.suppressed_rows += n;
        stats.suppressed_requests += row.requests;
    }
    out.sort_by(|a, b| (a.period, &a.dims).cmp(&(b.period, &b.dims)));
    (out, stats)
}

fn other() -> Option<Str> {
    Some(Arc::from(OTHER))
}

/// `traffic_by_region`: the finest filled level becomes `(other)` (region, else country, else
/// continent).
fn geo_parent(dims: &[Option<Str>]) -> Vec<Option<Str>> {
    let mut d = dims.to_vec();
    if let Some(last) = d.iter().rposition(Option::is_some) {
        d[last] = other();
    }
    d
}

/// `clients`: the OS and browser versions become `(other)`.
fn client_versions_other(dims: &[Option<Str>]) -> Vec<Option<Str>> {
    let mut d = dims.to_vec();
    d[2] = other();
    d[4] = other();
    d
}

/// Every dimension becomes `(other)`.
fn all_other(dims: &[Option<Str>]) -> Vec<Option<Str>> {
    dims.iter().map(|_| other()).collect()
}

#[cfg(test)]
mod tests;
