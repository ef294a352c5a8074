//! The hand-off from aggregation to the sink: finished tables as typed columns, rows sorted.

use std::sync::Arc;

/// A shared, immutable string (dimension values are interned and shared across rows).
pub type Str = Arc<str>;

/// One column of a finished table. All columns of a table have the same length.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Unix seconds, UTC (the sink writes them as microsecond timestamps in UTC).
    Timestamp(Vec<i64>),
    /// A string; `None` is null (e.g. `region` when the pipeline stops at country level).
    Str(Vec<Option<Str>>),
    /// A count.
    Int(Vec<i64>),
    /// A ratio in [0, 1].
    Float(Vec<f64>),
}

impl Column {
    /// Number of rows in the column.
    pub fn len(&self) -> usize {
        match self {
            Column::Timestamp(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A finished table: its name (as in `schemas/<name>.toml`) and its columns, in schema order.
/// The first column is always `period_start`; rows are sorted by it, then by the other keys.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOut {
    pub name: &'static str,
    pub columns: Vec<(&'static str, Column)>,
}

impl TableOut {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }
}
