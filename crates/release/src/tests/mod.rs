use super::*;
use logcensus_aggregate::{Contribution, Visitors};

fn s(v: &str) -> Option<Str> {
    Some(Arc::from(v))
}

fn row(period: i64, dims: &[Option<&str>], visitors: std::ops::Range<u64>, requests: u64) -> Row {
    let mut set = Visitors::default();
    set.extend(visitors.map(|v| (v, Contribution::default())));
    Row {
        period,
        dims: dims.iter().map(|d| d.map(Arc::from)).collect(),
        requests,
        bytes: requests * 10,
        visitors: set,
    }
}

fn show(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let dims: Vec<&str> = r
                .dims
                .iter()
                .map(|d| d.as_deref().unwrap_or("null"))
                .collect();
            format!(
                "{} {} {} {}",
                r.period,
                dims.join(" "),
                r.requests,
                r.visitors.len()
            )
        })
        .collect()
}

#[test]
fn regions_under_k_roll_up_into_their_country() {
    let rows = vec![
        row(0, &[Some("EU"), Some("DE"), Some("DE-BE")], 0..3, 5),
        row(0, &[Some("EU"), Some("DE"), Some("DE-BY")], 10..22, 40),
        row(0, &[Some("EU"), Some("DE"), Some("DE-HH")], 2..6, 8), // overlaps DE-BE in 2
        row(0, &[Some("EU"), Some("FR"), Some("FR-IDF")], 30..34, 4),
    ];
    let (out, stats) = suppress_small_cells(TableName::TrafficByRegion, rows, 5);
    assert_eq!(
        show(&out),
        [
            // 3 + 4 visitors with one in common: 6 distinct, not 7.
            "0 EU DE (other) 13 6",
            "0 EU DE DE-BY 40 12",
            // FR-IDF (4 visitors) alone in its (other) is still under 5: withheld.
        ]
    );
    assert_eq!(
        stats,
        ReleaseStats {
            kept_rows: 1,
            rolled_up_rows: 2,
            suppressed_rows: 1,
            suppressed_requests: 4
        }
    );
}

#[test]
fn released_plus_suppressed_equals_the_input() {
    let rows: Vec<Row> = (0..40u64)
        .map(|i| {
            let name = format!("site{i}.com");
            let mut r = row(
                86_400 * (i as i64 % 2),
                &[None],
                i * 3..i * 3 + (i % 7),
                i + 1,
            );
            r.dims = vec![s(&name)];
            r
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    let (out, stats) = suppress_small_cells(TableName::Referrers, rows, 5);
    assert!(
        out.iter().all(|r| r.visitors.len() >= 5),
        "{:?}",
        show(&out)
    );
    let released: u64 = out.iter().map(|r| r.requests).sum();
    assert_eq!(released + stats.suppressed_requests, total);
    assert_eq!(
        stats.kept_rows + stats.rolled_up_rows + stats.suppressed_rows,
        40
    );
    assert!(
        out.iter().any(|r| r.dims == vec![s(OTHER)]),
        "{:?}",
        show(&out)
    );
}

#[test]
fn clients_roll_up_versions_then_everything() {
    let c = |browser: &str, version: &str, v: std::ops::Range<u64>| {
        row(
            0,
            &[
                Some("pc"),
                Some("Linux"),
                None,
                Some(browser),
                Some(version),
            ],
            v,
            1,
        )
    };
    let rows = vec![
        c("Firefox", "115", 0..2),
        c("Firefox", "118", 2..4), // with 115: Firefox (other) has 4 visitors
        c("Firefox", "120", 10..20),
        c("Opera", "99", 30..31),
        c("Vivaldi", "6", 40..41),
    ];
    let (out, stats) = suppress_small_cells(TableName::Clients, rows.clone(), 3);
    assert_eq!(
        show(&out),
        [
            "0 pc Linux null Firefox 120 1 10",
            "0 pc Linux (other) Firefox (other) 2 4",
        ]
    );
    // Opera and Vivaldi (one visitor each) make an all-(other) row of 2 visitors: withheld at
    // k = 3, released at k = 2 (where Firefox 115 and 118 stand on their own).
    assert_eq!(stats.suppressed_rows, 2);
    assert_eq!(stats.suppressed_requests, 2);
    let (out, stats) = suppress_small_cells(TableName::Clients, rows, 2);
    assert_eq!(
        show(&out),
        [
            "0 (other) (other) (other) (other) (other) 2 2",
            "0 pc Linux null Firefox 115 1 2",
            "0 pc Linux null Firefox 118 1 2",
            "0 pc Linux null Firefox 120 1 10",
        ]
    );
    assert_eq!(stats.suppressed_rows, 0);
}

#[test]
fn rows_at_or_over_k_are_untouched() {
    let rows = vec![row(0, &[Some("x.com")], 0..10, 10)];
    let (out, stats) = suppress_small_cells(TableName::Referrers, rows.clone(), 10);
    assert_eq!(out, rows);
    assert_eq!(stats.kept_rows, 1);
}

mod bounds;
mod dp;

/// A row whose visitors each made `requests` requests of `bytes` bytes.
fn row_with(
    period: i64,
    dim: &str,
    visitors: impl Iterator<Item = u64>,
    requests: u32,
    bytes: u32,
) -> Row {
    let mut set = Visitors::default();
    set.extend(visitors.map(|v| (v, Contribution { requests, bytes })));
    Row {
        period,
        dims: vec![s(dim)],
        requests: set.len() as u64 * u64::from(requests),
        bytes: set.len() as u64 * u64::from(bytes),
        visitors: set,
    }
}
