//! Hand-built tables for the tests, shaped as `logcensus-aggregate` hands them over.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use logcensus_aggregate::{Column, TableOut};

use crate::RunMetadata;

/// 2026-05-17T00:00:00Z.
pub const DAY1: i64 = 1_778_976_000;
/// 2026-05-18T00:00:00Z.
pub const DAY2: i64 = DAY1 + 86_400;

pub fn s(v: &str) -> Option<Arc<str>> {
    Some(Arc::from(v))
}

pub fn meta() -> RunMetadata {
    RunMetadata {
        pipeline: "partner-daily".into(),
        policy_id: "site-privacy-policy-2010-05-05".into(),
        policy_hash: "9f2c".repeat(16),
        period: "day".into(),
        geo_level: "region".into(),
        extra: vec![("logcensus.test_note".into(), "hand-built".into())],
        table_extra: Vec::new(),
    }
}

/// Three rows: two on DAY1 (one with an `(unknown)` place), one on DAY2.
pub fn traffic() -> TableOut {
    TableOut {
        name: "traffic_by_region",
        columns: vec![
            ("period_start", Column::Timestamp(vec![DAY1, DAY1, DAY2])),
            (
                "continent",
                Column::Str(vec![s("(unknown)"), s("NA"), s("EU")]),
            ),
            (
                "country",
                Column::Str(vec![s("(unknown)"), s("US"), s("DE")]),
            ),
            (
                "region",
                Column::Str(vec![s("(unknown)"), s("US-VA"), None]),
            ),
            ("requests", Column::Int(vec![2, 40, 7])),
            ("visitors", Column::Int(vec![1, 12, 3])),
            ("bytes", Column::Int(vec![0, 1_234_567, 9_000_000_000])),
        ],
    }
}

/// Two rows on DAY1, one with null versions.
pub fn clients() -> TableOut {
    TableOut {
        name: "clients",
        columns: vec![
            ("period_start", Column::Timestamp(vec![DAY1, DAY1])),
            ("device", Column::Str(vec![s("(unknown)"), s("pc")])),
            ("os", Column::Str(vec![s("(unknown)"), s("Windows 10")])),
            ("os_version", Column::Str(vec![None, s("NT 10")])),
            ("browser", Column::Str(vec![s("(unknown)"), s("Chrome")])),
            ("browser_version", Column::Str(vec![None, s("124")])),
            ("requests", Column::Int(vec![3, 30])),
            ("visitors", Column::Int(vec![2, 9])),
        ],
    }
}

/// Two rows on DAY1.
pub fn referrers() -> TableOut {
    TableOut {
        name: "referrers",
        columns: vec![
            ("period_start", Column::Timestamp(vec![DAY1, DAY1])),
            (
                "referrer_domain",
                Column::Str(vec![s("(direct)"), s("google.com")]),
            ),
            ("requests", Column::Int(vec![25, 8])),
            ("visitors", Column::Int(vec![10, 4])),
        ],
    }
}

/// The traffic_quality column names, in contract order.
pub const QUALITY_INTS: [&str; 23] = [
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
];

/// Two rows (DAY1 and DAY2). Integer column `i` holds `[i * 10 + 1, 0]` except `requests`, which
/// is `[8, 0]`; the shares are `[0.25, 0.0]`, `[0.125, 0.0]` and `[1/3, 0.0]`.
pub fn quality() -> TableOut {
    let mut columns = vec![("period_start", Column::Timestamp(vec![DAY1, DAY2]))];
    for (i, name) in QUALITY_INTS.iter().enumerate() {
        let first = if i == 0 { 8 } else { i as i64 * 10 + 1 };
        columns.push((name, Column::Int(vec![first, 0])));
    }
    columns.extend([
        ("empty_user_agent_share", Column::Float(vec![0.25, 0.0])),
        ("unknown_user_agent_share", Column::Float(vec![0.125, 0.0])),
        ("unknown_geo_share", Column::Float(vec![1.0 / 3.0, 0.0])),
    ]);
    TableOut {
        name: "traffic_quality",
        columns,
    }
}

pub fn all_tables() -> Vec<TableOut> {
    vec![traffic(), clients(), referrers(), quality()]
}

/// Every file below `dir`, relative to it, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
