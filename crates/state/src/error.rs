//! What can go wrong with the state directory. Every message names the file and says what to
//! do; none holds a visitor hash or any other counted data (offsets, partitions, periods and
//! worker names are not data).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{FailPoint, OffsetRange};

/// An error reading or writing `<out>/_state/`.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {}: {source}; check that the output directory is writable and has free space", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("partial {} is corrupt ({detail}): restore it from a backup, or move it out of the partials directory to go on without its records{}", path.display(), Claims(claims))]
    Corrupt {
        path: PathBuf,
        detail: String,
        /// The offsets its header claims to cover, when the header could still be read.
        claims: Option<BTreeMap<i32, OffsetRange>>,
    },

    #[error("{} is not a logcensus partial (it does not start with the partial magic bytes): move it out of {}", path.display(), dir.display())]
    NotAPartial { path: PathBuf, dir: PathBuf },

    #[error("partial {} has format version {found}, this logcensus reads version {expected}: publish it with the logcensus version that wrote it before upgrading", path.display())]
    Version {
        path: PathBuf,
        found: u16,
        expected: u16,
    },

    #[error("state file {} is unreadable ({detail}): restore it from a backup; it is written atomically, so this is damage from outside logcensus", path.display())]
    StateFile { path: PathBuf, detail: String },

    #[error("partial {} already exists: worker names must be unique within the group and a worker must continue after StateDir::next_seq", path.display())]
    Exists { path: PathBuf },

    #[error("partition {partition} from offset {from} is already claimed by worker {owner:?}: two workers believed they owned the partition (this one was probably evicted from the group after a stall); this worker's records since its last checkpoint are abandoned, and the partition's owner counts them")]
    Claimed {
        partition: i32,
        from: i64,
        owner: String,
    },

    #[error("worker name {worker:?} cannot name a partial file: use 1 to 100 ASCII letters, digits, '.', '_' or '-', not starting with '.'")]
    BadWorker { worker: String },

    #[error("partition {partition}: offset range [{from}, {to}) is reversed or negative; `to` is the next offset to read and is never below `from`")]
    BadRange { partition: i32, from: i64, to: i64 },

    #[error("partition {partition}: offsets [{}, {}) in {} and [{}, {}) in {} overlap, so those records would be counted twice (two workers read the partition at once, or a worker did not seek past StateDir::covered_offsets); publishing stops: move one of the two partials out of the partials directory (its other records are then lost) or restore a backup", first.from, first.to, first_file.display(), second.from, second.to, second_file.display())]
    Overlap {
        partition: i32,
        first: OffsetRange,
        first_file: PathBuf,
        second: OffsetRange,
        second_file: PathBuf,
    },

    #[error("partial {} counts by {found}, but {expected_from} counts by {expected}: partials of different pipelines cannot be merged; publish them with the pipeline that wrote them, or move one out of the partials directory", path.display())]
    Mismatch {
        path: PathBuf,
        found: String,
        expected: String,
        expected_from: String,
    },

    #[error("the state under {} kept changing while it was read (a compaction ran each time): try again", path.display())]
    Unsettled { path: PathBuf },

    #[error("fault injection: stopped {point} for {} (a test asked for it)", path.display())]
    Injected { point: FailPoint, path: PathBuf },
}

/// `; its header claims partition 0 offsets [10, 20), ...` or nothing.
struct Claims<'a>(&'a Option<BTreeMap<i32, OffsetRange>>);

impl fmt::Display for Claims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(claims) = self.0 else {
            return Ok(());
        };
        if claims.is_empty() {
            return f.write_str("; its header claims no offsets");
        }
        f.write_str("; its header claims")?;
        for (i, (p, r)) in claims.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} partition {p} offsets [{}, {})", r.from, r.to)?;
        }
        Ok(())
    }
}

/// [`crate::StateDir::lock_publisher`] could not take the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another publisher holds {}: wait for it to finish (the lock is released when its process exits)", .0.display())]
    Busy(PathBuf),
    #[error(transparent)]
    State(#[from] StateError),
}

pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StateError {
    let path = path.into();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}
