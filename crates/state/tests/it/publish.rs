//! Published windows, the publisher lock, the topic's partition count.

use std::collections::BTreeSet;

use logcensus_state::{LockError, StateError};

use crate::support::*;

#[test]
fn published_windows_accumulate_atomically() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    assert!(state.published().unwrap().is_empty());
    state.mark_published(&[T0 + 86_400, T0]).unwrap();
    state.mark_published(&[T0, T0 + 2 * 86_400]).unwrap();
    assert_eq!(
        state.published().unwrap(),
        BTreeSet::from([T0, T0 + 86_400, T0 + 2 * 86_400])
    );
    // Reopened, e.g. by another process.
    assert_eq!(open(out.path()).published().unwrap().len(), 3);
    // No temporary file is left beside it.
    assert_eq!(names(state.path()), ["partials", "published.json"]);
}

#[test]
fn a_damaged_record_is_an_error_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let path = state.path().join("published.json");
    std::fs::write(&path, "{\"windows\": [1, 2").unwrap();
    let e = state.published().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "state file {} is unreadable (EOF while parsing a list at line 1 column 17): restore it from a backup; it is written atomically, so this is damage from outside logcensus",
            path.display()
        )
    );
    std::fs::write(state.path().join("compacted.json"), "[]").unwrap();
    assert!(matches!(
        state.covered_offsets().unwrap_err(),
        StateError::StateFile { .. }
    ));
}

#[test]
fn one_publisher_at_a_time() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    let lock = state.lock_publisher().unwrap();
    let e = open(out.path()).lock_publisher().unwrap_err();
    let path = state.path().join("publish.lock");
    assert!(matches!(&e, LockError::Busy(p) if *p == path));
    assert_eq!(
        e.to_string(),
        format!(
            "another publisher holds {}: wait for it to finish (the lock is released when its process exits)",
            path.display()
        )
    );
    drop(lock);
    open(out.path()).lock_publisher().unwrap();
}

#[test]
fn the_topic_partition_count_is_recorded() {
    let out = tempfile::tempdir().unwrap();
    let state = open(out.path());
    assert_eq!(state.topic_partitions().unwrap(), None);
    state.record_topic_partitions(6).unwrap();
    state.record_topic_partitions(6).unwrap();
    assert_eq!(open(out.path()).topic_partitions().unwrap(), Some(6));
    state.record_topic_partitions(8).unwrap();
    assert_eq!(state.topic_partitions().unwrap(), Some(8));
}
