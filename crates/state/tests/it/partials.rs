//! Writing and reading partials: round trip, atomicity, damage, fault injection.

use std::fs;
use std::time::{Duration, SystemTime};

use logcensus_state::{FailPoint, StateDir, StateError, FAILPOINT_ENV};

use crate::support::*;

#[test]
fn a_partial_round_trips_exactly() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let agg = agg_of(&lines());
    let mut m = meta("w1", 3, &[(0, 0, 12), (4, 7, 7)], &[(0, T0 + 2 * HOUR + 3)]);
    m.late_records = 2;
    let path = state.write_partial(&m, &agg).unwrap();
    assert_eq!(
        path,
        out.path().join("_state/partials/w1-000000000003.partial")
    );
    let (read_meta, read_agg) = state.read_partial(&path).unwrap();
    assert_eq!(read_meta, m);
    assert_eq!(read_agg.periods(), [T0, T0 + HOUR, T0 + 2 * HOUR]);
    assert_eq!(tables(read_agg), tables(agg));
    assert_eq!(state.list_partials().unwrap(), [(path, m)]);
    // Nothing but the partial: the temporary file is gone.
    assert_eq!(names(state.partials_dir()), ["w1-000000000003.partial"]);
}

#[cfg(unix)]
#[test]
fn state_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = state
        .write_partial(&meta("w1", 0, &[(0, 0, 12)], &[]), &agg_of(&lines()))
        .unwrap();
    state.mark_published(&[T0]).unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out.path().join("_state")), 0o700);
    assert_eq!(mode(state.partials_dir()), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&out.path().join("_state/published.json")), 0o600);
}

#[test]
fn an_existing_partial_is_never_replaced() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let first = meta("w1", 0, &[(0, 0, 12)], &[]);
    let path = state.write_partial(&first, &agg_of(&lines())).unwrap();
    let e = state
        .write_partial(&meta("w1", 0, &[(0, 12, 20)], &[]), &new_agg())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "partial {} already exists: worker names must be unique within the group and a worker must continue after StateDir::next_seq",
            path.display()
        )
    );
    assert_eq!(state.read_partial(&path).unwrap().0, first);
    assert_eq!(names(state.partials_dir()), ["w1-000000000000.partial"]);
}

#[test]
fn bad_worker_names_and_ranges_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    for worker in ["", ".hidden", "a/b", "w 1", &"x".repeat(101)] {
        let e = state
            .write_partial(&meta(worker, 0, &[], &[]), &new_agg())
            .unwrap_err();
        assert!(matches!(e, StateError::BadWorker { .. }), "{worker:?}: {e}");
    }
    let e = state
        .write_partial(&meta("w1", 0, &[(2, 10, 9)], &[]), &new_agg())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "partition 2: offset range [10, 9) is reversed or negative; `to` is the next offset to read and is never below `from`"
    );
    assert!(names(state.partials_dir()).is_empty());
}

#[test]
fn leftover_temp_files_are_ignored_and_old_ones_removed() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    state
        .write_partial(&meta("w1", 0, &[(0, 0, 5)], &[]), &agg_of(&lines()[..5]))
        .unwrap();
    // A writer killed before its rename long ago, and one writing right now.
    let old = state
        .partials_dir()
        .join(".w1-000000000001.partial.999-0.tmp");
    let fresh = state
        .partials_dir()
        .join(".w2-000000000000.partial.998-0.tmp");
    // And among the claims: a claim's temporary file, of a writer that died before its rename.
    let claims = state.partials_dir().parent().unwrap().join("claims");
    let old_claim = claims.join(".0-5.999-1.tmp");
    let fresh_claim = claims.join(".0-5.998-1.tmp");
    for (path, bytes) in [
        (&old, &b"half a partial"[..]),
        (&fresh, b"half another"),
        (&old_claim, b"w9"),
        (&fresh_claim, b"w8"),
    ] {
        fs::write(path, bytes).unwrap();
    }
    for path in [&old, &old_claim] {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
    let listed = state.list_partials().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.worker, "w1");
    assert!(!old.exists());
    assert!(fresh.exists());
    assert!(!old_claim.exists());
    assert!(fresh_claim.exists());
    // The claim itself is still there.
    assert!(claims.join("0-0").exists());
    assert_eq!(state.covered_offsets().unwrap(), map(&[(0, 5)]));
    // The crashed writer's sequence number is free again.
    assert_eq!(state.next_seq("w1").unwrap(), 1);
}

/// Writes one partial of `lines()` for partition 0, offsets [0, 12).
fn one_partial(state: &StateDir) -> std::path::PathBuf {
    state
        .write_partial(&meta("w1", 3, &[(0, 0, 12)], &[]), &agg_of(&lines()))
        .unwrap()
}

#[test]
fn a_flipped_byte_is_a_checksum_error_naming_the_file() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = one_partial(&state);
    let mut bytes = fs::read(&path).unwrap();
    let i = bytes.len() - 40; // in the aggregates
    bytes[i] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let expected = format!(
        "partial {} is corrupt (checksum mismatch): restore it from a backup, or move it out of the partials directory to go on without its records; its header claims partition 0 offsets [0, 12)",
        path.display()
    );
    // Never skipped, whoever reads it.
    assert_eq!(state.read_partial(&path).unwrap_err().to_string(), expected);
    assert_eq!(state.list_partials().unwrap_err().to_string(), expected);
    assert_eq!(state.covered_offsets().unwrap_err().to_string(), expected);
    assert_eq!(
        state.merge_partials(|_| true).unwrap_err().to_string(),
        expected
    );
    assert_eq!(state.compact(|_| true).unwrap_err().to_string(), expected);
    assert!(path.exists());
}

#[test]
fn damage_to_the_header_or_length_is_reported_too() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = one_partial(&state);
    let good = fs::read(&path).unwrap();

    let mut header_hit = good.clone();
    header_hit[20] ^= 0x20; // inside the JSON header
    fs::write(&path, &header_hit).unwrap();
    let e = state.list_partials().unwrap_err();
    assert!(
        matches!(&e, StateError::Corrupt { path: p, detail, .. } if *p == path && detail == "checksum mismatch"),
        "{e}"
    );

    fs::write(&path, &good[..good.len() - 1]).unwrap();
    let e = state.list_partials().unwrap_err();
    assert!(
        matches!(&e, StateError::Corrupt { path: p, detail, .. } if *p == path && detail == "checksum mismatch"),
        "{e}"
    );

    fs::write(&path, &good[..30]).unwrap();
    assert_eq!(
        state.list_partials().unwrap_err().to_string(),
        format!(
            "partial {} is corrupt (truncated: 30 bytes): restore it from a backup, or move it out of the partials directory to go on without its records",
            path.display()
        )
    );

    let mut future = good.clone();
    future[8] = 9;
    fs::write(&path, &future).unwrap();
    assert_eq!(
        state.list_partials().unwrap_err().to_string(),
        format!(
            "partial {} has format version 9, this logcensus reads version 2: publish it with the logcensus version that wrote it before upgrading",
            path.display()
        )
    );
}

#[test]
fn a_foreign_or_renamed_file_is_an_error() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = one_partial(&state);
    let renamed = state.partials_dir().join("w1-000000000009.partial");
    fs::rename(&path, &renamed).unwrap();
    assert_eq!(
        state.list_partials().unwrap_err().to_string(),
        format!(
            "partial {} is corrupt (its name does not match the worker \"w1\" and sequence number 3 inside): restore it from a backup, or move it out of the partials directory to go on without its records; its header claims partition 0 offsets [0, 12)",
            renamed.display()
        )
    );
    fs::remove_file(&renamed).unwrap();
    let junk = state.partials_dir().join("notes.partial");
    fs::write(&junk, "not a partial").unwrap();
    assert_eq!(
        state.list_partials().unwrap_err().to_string(),
        format!(
            "{} is not a logcensus partial (it does not start with the partial magic bytes): move it out of {}",
            junk.display(),
            state.partials_dir().display()
        )
    );
}

#[test]
fn a_crash_before_the_rename_leaves_no_partial() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path()).inject_failure(FailPoint::AfterTempWrite, 1);
    let m = meta("w1", 0, &[(0, 0, 12)], &[(0, T0)]);
    let e = state.write_partial(&m, &agg_of(&lines())).unwrap_err();
    assert!(matches!(
        e,
        StateError::Injected {
            point: FailPoint::AfterTempWrite,
            ..
        }
    ));
    let left = names(state.partials_dir());
    assert_eq!(left.len(), 1);
    assert!(left[0].starts_with(".w1-000000000000.partial.") && left[0].ends_with(".tmp"));
    // The restarted worker: nothing is covered, so it reads offsets 0..12 again, and writes
    // the same sequence number.
    let state = open(out.path());
    assert!(state.covered_offsets().unwrap().is_empty());
    assert_eq!(state.next_seq("w1").unwrap(), 0);
    state.write_partial(&m, &agg_of(&lines())).unwrap();
    assert_eq!(state.list_partials().unwrap().len(), 1);
}

#[test]
fn a_crash_after_the_rename_is_covered_by_its_offsets() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path()).inject_failure(FailPoint::AfterRename, 2);
    let first = state
        .write_partial(&meta("w1", 0, &[(0, 0, 6)], &[]), &agg_of(&lines()[..6]))
        .unwrap();
    let m = meta("w1", 1, &[(0, 6, 12)], &[]);
    let e = state.write_partial(&m, &agg_of(&lines()[6..])).unwrap_err();
    let second = state.partials_dir().join("w1-000000000001.partial");
    assert_eq!(
        e.to_string(),
        format!(
            "fault injection: stopped after renaming the partial into place for {} (a test asked for it)",
            second.display()
        )
    );
    // Killed before committing offset 12: the restarted worker seeks to max(committed 6,
    // covered 12) and counts every line once.
    let state = open(out.path());
    assert_eq!(state.covered_offsets().unwrap(), map(&[(0, 12)]));
    assert_eq!(state.next_seq("w1").unwrap(), 2);
    assert_eq!(names(state.partials_dir()), [file(&first), file(&second)]);
    let (merged, _) = state.merge_partials(|_| true).unwrap();
    assert_eq!(tables(merged), tables(agg_of(&lines())));
}

fn file(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// Where the child process of `a_real_abort_at_a_fail_point` writes.
const CHILD_DIR: &str = "LOGCENSUS_STATE_TEST_CHILD_DIR";

#[test]
#[ignore = "run by a_real_abort_at_a_fail_point in a child process"]
fn child_writes_two_partials() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let state = open(std::path::Path::new(&dir));
    for seq in 0..2 {
        let m = meta("w1", seq, &[(0, seq as i64 * 6, seq as i64 * 6 + 6)], &[]);
        let part = &lines()[seq as usize * 6..seq as usize * 6 + 6];
        state.write_partial(&m, &agg_of(part)).unwrap();
    }
}

#[test]
fn a_real_abort_at_a_fail_point() {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "partials::child_writes_two_partials",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, out.path())
        .env(FAILPOINT_ENV, "partial-renamed@2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("fail point partial-renamed: aborting"),
        "{stderr}"
    );
    let state = open(out.path());
    // Both partials are there (the second's directory entry may not have been synced, but
    // the process died, not the machine); the next write continues after them.
    assert_eq!(state.covered_offsets().unwrap(), map(&[(0, 12)]));
    assert_eq!(state.next_seq("w1").unwrap(), 2);
}
