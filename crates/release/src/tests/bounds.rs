use super::*;
use logcensus_policy::Bounds;

const KEY: [u8; 16] = *b"0123456789abcdef";

fn bounds(n: Option<u32>, c: Option<u32>, b: Option<u32>) -> Bounds {
    Bounds {
        max_rows_per_visitor: n,
        max_requests_per_row: c,
        max_bytes_per_row: b,
    }
}

#[test]
fn a_visitor_counts_in_at_most_n_rows_per_period() {
    // Visitor 7 is in all five referrer rows of period 0 and in one row of period 1.
    let mut rows: Vec<Row> = ["a.com", "b.com", "c.com", "d.com", "e.com"]
        .iter()
        .map(|d| row_with(0, d, [7, 100].into_iter(), 1, 10))
        .collect();
    rows.push(row_with(86_400, "a.com", [7].into_iter(), 1, 10));
    let (out, stats) =
        bound_contributions(rows, &bounds(Some(2), None, None), SelectionKey::new(KEY));
    let with_7: Vec<(i64, &str)> = out
        .iter()
        .filter(|r| r.visitors.contains_key(&7))
        .map(|r| (r.period, r.dims[0].as_deref().unwrap()))
        .collect();
    assert_eq!(
        with_7.iter().filter(|(p, _)| *p == 0).count(),
        2,
        "{with_7:?}"
    );
    assert!(
        with_7.contains(&(86_400, "a.com")),
        "other periods have their own bound"
    );
    // Visitor 100 is in five rows too: also cut to two.
    assert_eq!(
        out.iter().filter(|r| r.visitors.contains_key(&100)).count(),
        2
    );
    assert_eq!(stats.dropped_pairs, 6);
    assert_eq!(stats.dropped_requests, 6);
    // Each row's sums are those of the visitors it kept.
    for r in &out {
        assert_eq!(r.requests, r.visitors.len() as u64);
        assert_eq!(r.bytes, 10 * r.visitors.len() as u64);
    }
    // Rows left without visitors are gone, the others keep their order.
    assert!(out.iter().all(|r| !r.visitors.is_empty()));
    assert_eq!(stats.emptied_rows, 6 - out.len() as u64);
}

#[test]
fn the_choice_is_keyed_repeatable_and_spread_over_rows() {
    let make = || -> Vec<Row> {
        ["a.com", "b.com", "c.com", "d.com"]
            .iter()
            .map(|d| row_with(0, d, 0..400, 1, 1))
            .collect()
    };
    let kept = |key: [u8; 16]| -> Vec<usize> {
        let (out, _) =
            bound_contributions(make(), &bounds(Some(1), None, None), SelectionKey::new(key));
        out.iter().map(|r| r.visitors.len()).collect()
    };
    let a = kept(KEY);
    assert_eq!(a, kept(KEY), "same input and key, same choice");
    assert_eq!(
        a.iter().sum::<usize>(),
        400,
        "each visitor kept in exactly one row"
    );
    // A pseudo-random choice spreads 400 visitors over 4 rows: ~100 each (6 sigma: 100 +- 52).
    assert!(a.iter().all(|&n| (48..=152).contains(&n)), "{a:?}");
    assert_ne!(a, kept(*b"another key 1234"), "another key, another choice");
}

#[test]
fn requests_and_bytes_per_row_are_capped_per_visitor() {
    let mut heavy = row_with(0, "a.com", [1].into_iter(), 5_000, 4_000_000);
    let light = row_with(0, "a.com", [2, 3].into_iter(), 2, 300);
    heavy.absorb(light);
    assert_eq!(heavy.requests, 5_004);
    let (out, stats) = bound_contributions(
        vec![heavy],
        &bounds(None, Some(10), Some(1_000)),
        SelectionKey::new(KEY),
    );
    assert_eq!(out[0].requests, 10 + 2 + 2);
    assert_eq!(out[0].bytes, 1_000 + 300 + 300);
    assert_eq!(out[0].visitors.len(), 3);
    assert_eq!(stats.dropped_requests, 4_990);
    assert_eq!(stats.dropped_pairs, 0);
}

#[test]
fn no_bounds_leave_rows_untouched() {
    let rows = vec![row_with(0, "a.com", 0..3, 4, 5)];
    let (out, stats) =
        bound_contributions(rows.clone(), &Bounds::default(), SelectionKey::new(KEY));
    assert_eq!(out, rows);
    assert_eq!(stats, BoundStats::default());
}

/// A table with no minimum, no bound and no noise is exact: releasing it gives its rows as
/// counted (so a run may count them without building each row's visitors); any one of the three
/// makes it not exact.
#[test]
fn a_release_that_changes_nothing_is_exact() {
    let plain = TableRelease::default();
    assert!(plain.is_exact());
    let rows: Vec<Row> = ["a.com", "b.com"]
        .iter()
        .map(|d| row_with(0, d, [7, 100, 101].into_iter(), 4, 10))
        .collect();
    let want: Vec<ReleasedRow> = rows.iter().cloned().map(ReleasedRow::from).collect();
    let (got, _) =
        release_table(TableName::Referrers, rows, &plain, SelectionKey::new(KEY)).unwrap();
    assert_eq!(got, want);
    for how in [
        TableRelease {
            min_visitors: Some(2),
            ..TableRelease::default()
        },
        TableRelease {
            bounds: bounds(None, Some(3), None),
            ..TableRelease::default()
        },
    ] {
        assert!(!how.is_exact(), "{how:?}");
    }
}
