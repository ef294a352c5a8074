//! Covered offsets and watermarks, across partials and compaction.

use std::fs;

use logcensus_state::{Coverage, StateDir};

use crate::support::*;

/// Three partials by two workers over partitions 0..=2, each with one hour of `lines()`:
/// w1-0 hour 0, w1-1 hour 1, w2-0 hours 0 and 2.
fn three_partials(state: &StateDir) {
    let l = lines();
    let mut a = meta(
        "w1",
        0,
        &[(0, 0, 10), (1, 0, 5)],
        &[(0, T0 + 30), (1, T0 + 20)],
    );
    a.late_records = 2;
    state.write_partial(&a, &agg_of(&l[..4])).unwrap();
    let b = meta("w1", 1, &[(0, 10, 25)], &[(0, T0 + HOUR + 3)]);
    state.write_partial(&b, &agg_of(&l[4..8])).unwrap();
    let mut c = meta(
        "w2",
        0,
        &[(2, 100, 150), (1, 5, 9)],
        &[(2, T0 + 2 * HOUR + 3), (1, T0 + 10)],
    );
    c.late_records = 1;
    let mut hours_0_and_2 = l[8..].to_vec();
    hours_0_and_2.push(l[0]);
    state.write_partial(&c, &agg_of(&hours_0_and_2)).unwrap();
}

#[test]
fn nothing_is_covered_in_a_new_state_dir() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    assert_eq!(state.coverage().unwrap(), Coverage::default());
    assert_eq!(state.next_seq("w1").unwrap(), 0);
}

#[test]
fn covered_offsets_and_watermarks_are_maxima_over_partials() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    three_partials(&state);
    assert_eq!(
        state.covered_offsets().unwrap(),
        map(&[(0, 25), (1, 9), (2, 150)])
    );
    assert_eq!(
        state.watermarks().unwrap(),
        map(&[(0, T0 + HOUR + 3), (1, T0 + 20), (2, T0 + 2 * HOUR + 3)])
    );
    let cov = state.coverage().unwrap();
    assert_eq!(cov.late_records, 3);
    assert_eq!(cov.partials, 3);
    assert_eq!(
        cov.periods.into_iter().collect::<Vec<_>>(),
        [T0, T0 + HOUR, T0 + 2 * HOUR]
    );
    assert_eq!(state.next_seq("w1").unwrap(), 2);
    assert_eq!(state.next_seq("w2").unwrap(), 1);
    assert_eq!(state.next_seq("w3").unwrap(), 0);
}

#[test]
fn compaction_keeps_coverage_and_unpublished_partials() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    three_partials(&state);
    let before = state.coverage().unwrap();

    // Nothing published: nothing goes.
    assert_eq!(state.compact(|_| false).unwrap(), 0);
    assert_eq!(state.list_partials().unwrap().len(), 3);

    // Hour 0 published: only w1-0 holds nothing else (w2-0 also holds hour 2).
    assert_eq!(state.compact(|p| p == T0).unwrap(), 1);
    let left: Vec<String> = state
        .list_partials()
        .unwrap()
        .into_iter()
        .map(|(_, m)| format!("{}-{}", m.worker, m.seq))
        .collect();
    assert_eq!(left, ["w1-1", "w2-0"]);
    assert_eq!(
        names(state.partials_dir()),
        ["w1-000000000001.partial", "w2-000000000000.partial"]
    );
    let after = state.coverage().unwrap();
    assert_eq!(after.offsets, before.offsets);
    assert_eq!(after.watermarks, before.watermarks);
    assert_eq!(after.late_records, 3);
    assert_eq!(after.partials, 2);

    // Everything published: the partials go, what they covered stays.
    assert_eq!(state.compact(|_| true).unwrap(), 2);
    assert!(names(state.partials_dir()).is_empty());
    let last = state.coverage().unwrap();
    assert_eq!(last.offsets, map(&[(0, 25), (1, 9), (2, 150)]));
    assert_eq!(last.watermarks, before.watermarks);
    assert_eq!(last.late_records, 3);
    assert_eq!(last.partials, 0);
    assert!(last.periods.is_empty());
    // Sequence numbers are not reused after their partials are gone.
    assert_eq!(state.next_seq("w1").unwrap(), 2);
    assert_eq!(state.next_seq("w2").unwrap(), 1);
    // A partial that continues where the compacted ones stopped merges without complaint.
    state
        .write_partial(&meta("w1", 2, &[(0, 25, 30)], &[]), &agg_of(&lines()[..1]))
        .unwrap();
    assert_eq!(state.covered_offsets().unwrap()[&0], 30);
    assert_eq!(state.merge_partials(|_| true).unwrap().0.requests(), 1);
}

#[test]
fn a_partial_without_periods_is_compacted_at_once() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    // Every record of the range was late.
    let mut m = meta("w1", 0, &[(0, 0, 40)], &[(0, T0 + 9 * HOUR)]);
    m.late_records = 40;
    state.write_partial(&m, &new_agg()).unwrap();
    assert_eq!(state.compact(|_| false).unwrap(), 1);
    let cov = state.coverage().unwrap();
    assert_eq!(cov.offsets, map(&[(0, 40)]));
    assert_eq!(cov.late_records, 40);
    assert_eq!(cov.watermarks, map(&[(0, T0 + 9 * HOUR)]));
}

/// A compaction killed after writing `compacted.json` and before deleting its partials: the
/// partials are still there, but nothing is counted twice.
#[test]
fn a_compaction_killed_before_deleting_counts_nothing_twice() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    three_partials(&state);
    let aside = tempfile::tempdir().unwrap();
    let w1_0 = state.partials_dir().join("w1-000000000000.partial");
    fs::copy(&w1_0, aside.path().join("w1-0")).unwrap();
    assert_eq!(state.compact(|p| p == T0).unwrap(), 1);
    // Undo the deletion, as if the process had died just before it.
    fs::copy(aside.path().join("w1-0"), &w1_0).unwrap();

    let listed: Vec<u64> = state
        .list_partials()
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.seq)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let cov = state.coverage().unwrap();
    assert_eq!(cov.late_records, 3);
    assert_eq!(cov.partials, 2);
    assert_eq!(cov.offsets, map(&[(0, 25), (1, 9), (2, 150)]));
    // Its ranges are in the compacted record and in the leftover file: not an overlap, and
    // its hour-0 records are not merged again.
    let (merged, late) = state.merge_partials(|_| true).unwrap();
    assert_eq!(late, 3);
    let l = lines();
    let expected = {
        let mut a = agg_of(&l[4..8]);
        let mut hours_0_and_2 = l[8..].to_vec();
        hours_0_and_2.push(l[0]);
        a.merge(agg_of(&hours_0_and_2));
        a
    };
    assert_eq!(tables(merged), tables(expected));
    // The next compaction finishes the job.
    assert!(w1_0.exists());
    assert_eq!(state.compact(|_| false).unwrap(), 0);
    assert!(!w1_0.exists());
}

#[test]
fn a_new_partial_reusing_a_compacted_name_is_not_mistaken_for_it() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 4)], &[]), &agg_of(&lines()[..4]))
        .unwrap();
    // Copy it aside, compact, put it back: it is now a leftover the record names.
    let path = state.partials_dir().join("w1-000000000000.partial");
    let kept = fs::read(&path).unwrap();
    assert_eq!(state.compact(|_| true).unwrap(), 1);
    fs::write(&path, &kept).unwrap();
    assert!(state.list_partials().unwrap().is_empty());
    // A worker that ignores next_seq writes the same name with other content after the
    // leftover is gone: it is a real partial.
    fs::remove_file(&path).unwrap();
    state
        .write_partial(&meta("w1", 0, &[(0, 4, 8)], &[]), &agg_of(&lines()[4..8]))
        .unwrap();
    assert_eq!(state.list_partials().unwrap().len(), 1);
    assert_eq!(state.compact(|_| false).unwrap(), 0);
    assert!(path.exists());
    assert_eq!(state.merge_partials(|_| true).unwrap().0.requests(), 3);
}

#[test]
fn a_range_start_is_claimed_once_so_an_evicted_worker_cannot_double_count() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    // w1 checkpoints partition 0 from offset 0; w2 (the partition's new owner after w1 stalled
    // past its session timeout) starts from the same covered offset.
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 10)], &[(0, T0)]), &agg_of(&l[..2]))
        .unwrap();
    let evicted = state
        .write_partial(&meta("w2", 0, &[(0, 0, 12)], &[(0, T0)]), &agg_of(&l[..2]))
        .unwrap_err();
    assert_eq!(
        evicted.to_string(),
        "partition 0 from offset 0 is already claimed by worker \"w1\": two workers believed they owned the partition (this one was probably evicted from the group after a stall); this worker's records since its last checkpoint are abandoned, and the partition's owner counts them"
    );
    assert_eq!(
        names(&out.path().join("_state/partials")),
        ["w1-000000000000.partial"],
        "no partial, no temp file"
    );
    // The next range starts where the first ended: anyone may claim it; a worker retrying its
    // own claim (after a crash between claim and link) may too.
    state
        .write_partial(
            &meta("w1", 1, &[(0, 10, 20)], &[(0, T0)]),
            &agg_of(&l[2..4]),
        )
        .unwrap();
    fs::remove_file(out.path().join("_state/partials/w1-000000000001.partial")).unwrap();
    state
        .write_partial(
            &meta("w1", 2, &[(0, 10, 20)], &[(0, T0)]),
            &agg_of(&l[2..4]),
        )
        .unwrap();
    // Compaction prunes the claims of the ranges it folds in.
    state.compact(|_| true).unwrap();
    let claims = claims(out.path());
    assert!(claims.is_empty(), "{claims:?}");
}

/// The claim files under `out`, sorted.
fn claims(out: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(out.join("_state/claims"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_refused_claim_takes_back_the_other_ranges_it_claimed() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    // w1 owns partition 1 from offset 968. w2 checkpoints partitions 0 and 1 (it read
    // partition 1 at the same time); partition 0 comes first, so its claim is made before
    // partition 1's is refused.
    state
        .write_partial(
            &meta("w1", 0, &[(1, 968, 990)], &[(1, T0)]),
            &agg_of(&l[..2]),
        )
        .unwrap();
    let refused = state
        .write_partial(
            &meta("w2", 0, &[(0, 40, 60), (1, 968, 1000)], &[(0, T0), (1, T0)]),
            &agg_of(&l[..4]),
        )
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("partition 1 from offset 968 is already claimed by worker \"w1\""),
        "{refused}"
    );
    assert_eq!(
        claims(out.path()),
        ["1-968"],
        "w2's claim of partition 0 is taken back"
    );
    // Partition 0's next owner reads it from its committed offset, 40, and can claim it.
    state
        .write_partial(
            &meta("w3", 0, &[(0, 40, 55)], &[(0, T0)]),
            &agg_of(&l[2..4]),
        )
        .unwrap();
    assert_eq!(
        fs::read_to_string(out.path().join("_state/claims/0-40")).unwrap(),
        "w3"
    );
    assert_eq!(state.coverage().unwrap().partials, 2);
}

#[test]
fn an_abandoned_claim_is_taken_over_and_no_other() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    // A worker that claimed partition 0 from 0 and crashed before its partial was in place:
    // its claim is there, no partial covers offset 0, and no worker is writing one.
    fs::create_dir_all(out.path().join("_state/claims")).unwrap();
    fs::write(out.path().join("_state/claims/0-0"), "ghost").unwrap();
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 10)], &[(0, T0)]), &agg_of(&l[..2]))
        .unwrap();
    assert_eq!(
        fs::read_to_string(out.path().join("_state/claims/0-0")).unwrap(),
        "w1"
    );
    // A claim whose partial is in place is the fence at work: w2, reading partition 0 from 0
    // too (w1 was evicted, say), is refused.
    let covered = state
        .write_partial(&meta("w2", 0, &[(0, 0, 12)], &[(0, T0)]), &agg_of(&l[..2]))
        .unwrap_err();
    assert!(
        covered
            .to_string()
            .starts_with("partition 0 from offset 0 is already claimed by worker \"w1\""),
        "{covered}"
    );
    assert_eq!(state.coverage().unwrap().partials, 1);
    assert_eq!(claims(out.path()), ["0-0"]);
}

#[test]
fn a_claim_on_its_way_to_a_partial_is_not_taken_over() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let l = lines();
    // w1 has claimed partition 0 from 0 and is about to link its partial: it holds the claims
    // lock shared, as `write_partial` does from its claims to its link.
    fs::create_dir_all(out.path().join("_state/claims")).unwrap();
    fs::write(out.path().join("_state/claims/0-0"), "w1").unwrap();
    let writing = fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(out.path().join("_state/claims.lock"))
        .unwrap();
    writing.lock_shared().unwrap();
    // w2 read partition 0 from 0 too, and finds w1's claim with no partial yet: it waits for
    // the lock before it looks at the coverage.
    let taker = {
        let state = open(out.path());
        let agg = agg_of(&l[..2]);
        std::thread::spawn(move || {
            state
                .write_partial(&meta("w2", 0, &[(0, 0, 12)], &[(0, T0)]), &agg)
                .map_err(|e| e.to_string())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!taker.is_finished(), "w2 did not wait for w1's link");
    // w1's partial goes in place (its own claim is its own), then w1 lets go.
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 10)], &[(0, T0)]), &agg_of(&l[..2]))
        .unwrap();
    writing.unlock().unwrap();
    let refused = taker.join().unwrap().unwrap_err();
    assert!(
        refused.starts_with("partition 0 from offset 0 is already claimed by worker \"w1\""),
        "{refused}"
    );
    assert_eq!(state.coverage().unwrap().partials, 1);
    assert_eq!(
        fs::read_to_string(out.path().join("_state/claims/0-0")).unwrap(),
        "w1"
    );
}
