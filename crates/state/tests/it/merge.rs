//! Merging partials: exactly what one aggregate fed every line holds.

use logcensus_aggregate::{Aggregates, Rejection};
use logcensus_policy::{CrawlerHandling, Period};
use logcensus_state::StateError;

use crate::support::*;

#[test]
fn merged_partials_equal_one_aggregate_fed_everything() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    // Two workers, disjoint lines (the same visitors in both).
    state
        .write_partial(
            &meta("w1", 0, &[(0, 0, 6)], &[(0, T0 + HOUR + 2)]),
            &agg_of(&l[..6]),
        )
        .unwrap();
    state
        .write_partial(
            &meta("w2", 0, &[(1, 0, 6)], &[(1, T0 + 2 * HOUR + 3)]),
            &agg_of(&l[6..]),
        )
        .unwrap();
    let (merged, late) = state.merge_partials(|_| true).unwrap();
    assert_eq!(late, 0);
    assert_eq!(merged.requests(), 10);
    let whole = agg_of(&l);
    assert_eq!(merged.rejections(), whole.rejections());
    let (got, want) = (tables(merged), tables(whole));
    assert_eq!(got, want);
    // Distinct visitors are a union, not a sum: hour 0, DE has visitors 1 and 2 across both.
    assert_eq!(got[0].num_rows(), 6);
}

#[test]
fn only_the_periods_asked_for_are_merged() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 6)], &[]), &agg_of(&l[..6]))
        .unwrap();
    state
        .write_partial(&meta("w1", 1, &[(0, 6, 12)], &[]), &agg_of(&l[6..]))
        .unwrap();
    let (merged, _) = state.merge_partials(|p| p == T0 + HOUR).unwrap();
    assert_eq!(merged.periods(), [T0 + HOUR]);
    let mut whole = agg_of(&l);
    let hour_1 = whole.split_periods(|p| p != T0 + HOUR);
    assert_eq!(tables(merged), tables(hour_1));
    assert_eq!(
        state
            .partial_periods()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [T0, T0 + HOUR, T0 + 2 * HOUR]
    );
}

#[test]
fn rejections_in_no_period_count_in_the_watermark_period() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    // A batch of nothing but bad lines: no period of its own.
    let bad = agg_of(&[
        Line::Bad(Rejection::Truncated),
        Line::Bad(Rejection::InvalidUtf8),
    ]);
    assert_eq!(bad.unattributed(), 2);
    state
        .write_partial(
            &meta("w1", 0, &[(0, 0, 2)], &[(0, T0 + 2 * HOUR + 5), (1, T0)]),
            &bad,
        )
        .unwrap();
    assert_eq!(
        state
            .partial_periods()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [T0 + 2 * HOUR]
    );
    let (hour_2, _) = state.merge_partials(|p| p == T0 + 2 * HOUR).unwrap();
    assert_eq!(hour_2.unattributed(), 0);
    assert_eq!(hour_2.rejections().iter().sum::<u64>(), 2);
    assert_eq!(hour_2.periods(), [T0 + 2 * HOUR]);
    let (hour_0, _) = state.merge_partials(|p| p == T0).unwrap();
    assert!(hour_0.is_empty());
    // Once hour 2 is published, the partial goes: its rejections are not counted again.
    assert_eq!(state.compact(|p| p == T0 + 2 * HOUR).unwrap(), 1);

    // No watermark at all: the period of the partial's creation.
    let mut m = meta("w1", 1, &[(0, 2, 3)], &[]);
    m.created_unix = T0 + 7 * HOUR + 1;
    state
        .write_partial(&m, &agg_of(&[Line::Bad(Rejection::LineTooLong)]))
        .unwrap();
    let (hour_7, _) = state.merge_partials(|p| p == T0 + 7 * HOUR).unwrap();
    assert_eq!(hour_7.rejections()[Rejection::LineTooLong.index()], 1);
    let (_, read) = state
        .read_partial(&state.partials_dir().join("w1-000000000001.partial"))
        .unwrap();
    assert_eq!(read.periods(), [T0 + 7 * HOUR]);
}

#[test]
fn late_records_are_summed_over_partials_and_compaction() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let mut a = meta("w1", 0, &[(0, 0, 6)], &[]);
    a.late_records = 2;
    state.write_partial(&a, &agg_of(&lines()[..4])).unwrap();
    let mut b = meta("w1", 1, &[(0, 6, 12)], &[]);
    b.late_records = 3;
    state.write_partial(&b, &agg_of(&lines()[4..8])).unwrap();
    assert_eq!(state.merge_partials(|_| true).unwrap().1, 5);
    assert_eq!(state.compact(|p| p == T0).unwrap(), 1);
    assert_eq!(state.merge_partials(|_| true).unwrap().1, 5);
    assert_eq!(state.late_records().unwrap(), 5);
}

#[test]
fn overlapping_offsets_stop_the_merge() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let first = state
        .write_partial(
            &meta("w1", 0, &[(3, 100, 200)], &[]),
            &agg_of(&lines()[..4]),
        )
        .unwrap();
    // A second worker read part of the same range.
    let second = state
        .write_partial(
            &meta("w2", 0, &[(3, 150, 260)], &[]),
            &agg_of(&lines()[..4]),
        )
        .unwrap();
    let e = state.merge_partials(|_| true).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "partition 3: offsets [100, 200) in {} and [150, 260) in {} overlap, so those records would be counted twice (two workers read the partition at once, or a worker did not seek past StateDir::covered_offsets); publishing stops: move one of the two partials out of the partials directory (its other records are then lost) or restore a backup",
            first.display(),
            second.display()
        )
    );
    // Against the compacted record too.
    std::fs::remove_file(&second).unwrap();
    assert_eq!(state.compact(|_| true).unwrap(), 1);
    state
        .write_partial(
            &meta("w2", 1, &[(3, 199, 210)], &[]),
            &agg_of(&lines()[..4]),
        )
        .unwrap();
    let e = state.merge_partials(|_| true).unwrap_err();
    assert!(
        matches!(&e, StateError::Overlap { partition: 3, first_file, .. } if first_file.ends_with("_state/compacted.json")),
        "{e}"
    );
    // Empty ranges and adjacent ones are fine.
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 10), (1, 5, 5)], &[]), &new_agg())
        .unwrap();
    state
        .write_partial(&meta("w1", 1, &[(0, 10, 20), (1, 5, 5)], &[]), &new_agg())
        .unwrap();
    state.merge_partials(|_| true).unwrap();
}

#[test]
fn partials_of_another_pipeline_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = state
        .write_partial(&meta("w1", 0, &[(0, 0, 12)], &[]), &agg_of(&lines()))
        .unwrap();
    let mut by_day = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    let e = state
        .merge_partials_into(&mut by_day, |_| true)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "partial {} counts by hour periods with crawlers excluded, but the pipeline counts by day periods with crawlers excluded: partials of different pipelines cannot be merged; publish them with the pipeline that wrote them, or move one out of the partials directory",
            path.display()
        )
    );
    // Between partials, without a pipeline to compare with.
    let mut other = Aggregates::new(Period::Hour, CrawlerHandling::Include);
    other.reject(Rejection::InvalidUtf8, Some(T0));
    let second = state
        .write_partial(&meta("w1", 1, &[(0, 12, 13)], &[]), &other)
        .unwrap();
    let e = state.merge_partials(|_| true).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "partial {} counts by hour periods with crawlers included, but partial {} counts by hour periods with crawlers excluded: partials of different pipelines cannot be merged; publish them with the pipeline that wrote them, or move one out of the partials directory",
            second.display(),
            path.display()
        )
    );
}

#[test]
fn merging_into_an_aggregate_adds_to_it() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 6)], &[]), &agg_of(&l[6..]))
        .unwrap();
    let mut into = agg_of(&l[..6]);
    assert_eq!(state.merge_partials_into(&mut into, |_| true).unwrap(), 0);
    assert_eq!(tables(into), tables(agg_of(&l)));
    // With no partial, nothing changes and the pipeline's settings stay.
    let empty = tempfile::tempdir().unwrap();
    let mut by_day = Aggregates::new(Period::Day, CrawlerHandling::Include);
    open(empty.path())
        .merge_partials_into(&mut by_day, |_| true)
        .unwrap();
    assert!(by_day.is_empty());
    assert_eq!(by_day.period(), Period::Day);
}
