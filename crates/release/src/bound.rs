//! Contribution bounding: one visitor counts in at most N rows of a table per period, with at
//! most C requests and B bytes per row, so no single client can dominate a cell — and so that
//! differential privacy noise can be calibrated to what one visitor can change.

use std::collections::HashMap;
use std::hash::Hasher;

use logcensus_aggregate::Row;
use logcensus_policy::Bounds;
use siphasher::sip::SipHasher13;

/// The key that decides which rows a visitor over the row bound keeps. Derived from the visitor
/// secret, so nobody without it can predict (or steer) the choice; never written anywhere.
#[derive(Clone, Copy)]
pub struct SelectionKey {
    k0: u64,
    k1: u64,
}

impl SelectionKey {
    /// A key from 16 secret bytes.
    pub fn new(bytes: [u8; 16]) -> SelectionKey {
        SelectionKey {
            k0: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            k1: u64::from_le_bytes(bytes[8..].try_into().unwrap()),
        }
    }
}

impl std::fmt::Debug for SelectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SelectionKey(..)")
    }
}

/// What bounding removed (for logs and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BoundStats {
    /// (visitor, row) pairs dropped because the visitor was in more than N rows.
    pub dropped_pairs: u64,
    /// Requests no longer counted (dropped pairs and requests over C).
    pub dropped_requests: u64,
    /// Rows left with no visitor at all (removed).
    pub emptied_rows: u64,
}

/// Applies `bounds` to the rows of one table (any number of periods). Rows keep their order;
/// a row's `requests` and `bytes` become the sums of its visitors' bounded contributions.
/// Which rows a visitor over N keeps is a pseudo-random choice keyed by `key`, the same for the
/// same input and key.
pub fn bound_contributions(
    rows: Vec<Row>,
    bounds: &Bounds,
    key: SelectionKey,
) -> (Vec<Row>, BoundStats) {
    let mut stats = BoundStats::default();
    if !bounds.any() {
        return (rows, stats);
    }
    let before: u64 = rows.iter().map(|r| r.requests).sum();
    let mut rows = rows;
    if let Some(n) = bounds.max_rows_per_visitor {
        stats.dropped_pairs = limit_rows(&mut rows, n as usize, key);
    }
    let cap_requests = bounds.max_requests_per_row.unwrap_or(u32::MAX);
    let cap_bytes = bounds.max_bytes_per_row.unwrap_or(u32::MAX);
    for row in &mut rows {
        row.requests = row
            .visitors
            .values()
            .map(|c| u64::from(c.requests.min(cap_requests)))
            .sum();
        row.bytes = row
            .visitors
            .values()
            .map(|c| u64::from(c.bytes.min(cap_bytes)))
            .sum();
    }
    let n_before = rows.len();
    rows.retain(|r| !r.visitors.is_empty());
    stats.emptied_rows = (n_before - rows.len()) as u64;
    let after: u64 = rows.iter().map(|r| r.requests).sum();
    stats.dropped_requests = before - after;
    (rows, stats)
}

/// Keeps each visitor in at most `n` rows of each period; returns the pairs dropped.
fn limit_rows(rows: &mut [Row], n: usize, key: SelectionKey) -> u64 {
    crate::period_ranges(rows)
        .into_iter()
        .map(|r| limit_rows_of_period(&mut rows[r], n, key))
        .sum()
}

fn limit_rows_of_period(rows: &mut [Row], n: usize, key: SelectionKey) -> u64 {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for row in rows.iter() {
        for v in row.visitors.keys() {
            *seen.entry(*v).or_default() += 1;
        }
    }
    let over: HashMap<u64, Vec<(u64, usize)>> = seen
        .into_iter()
        .filter(|(_, c)| *c as usize > n)
        .map(|(v, _)| (v, Vec::new()))
        .collect();
    if over.is_empty() {
        return 0;
    }
    let mut over = over;
    for (i, row) in rows.iter().enumerate() {
        let dims = dims_hash(row, key);
        for v in row.visitors.keys() {
            if let Some(list) = over.get_mut(v) {
                let mut h = SipHasher13::new_with_keys(key.k0, key.k1);
                h.write_u64(*v);
                h.write_u64(dims);
                list.push((h.finish(), i));
            }
        }
    }
    let mut dropped = 0;
    for (v, mut list) in over {
        list.sort_unstable();
        for &(_, i) in &list[n..] {
            rows[i].visitors.remove(&v);
            dropped += 1;
        }
    }
    dropped
}

/// A row's dimensions, hashed: the row's identity for the choice, independent of which other
/// rows exist.
fn dims_hash(row: &Row, key: SelectionKey) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.k1, key.k0);
    for d in &row.dims {
        match d {
            Some(s) => {
                h.write_u8(1);
                h.write_usize(s.len());
                h.write(s.as_bytes());
            }
            None => h.write_u8(0),
        }
    }
    h.finish()
}
