//! Durable streaming state: the checkpoints of streaming workers and what publishing did, under
//! `<out>/_state/` (never beside the released tables; readers of a release skip `_` paths).
//!
//! A streaming worker aggregates records into an [`Aggregates`] *delta*. At every checkpoint it
//! writes the delta as a **partial** ([`StateDir::write_partial`]) together with the Kafka
//! offset range of every partition it covers, atomically, and only then commits those offsets
//! to Kafka. After a crash at any moment, a restarted worker seeks each assigned partition to
//! `max(committed, covered)` ([`StateDir::covered_offsets`]): a partial written but never
//! committed is recognised by the offsets inside it, so every record is counted exactly once.
//!
//! A publisher ([`StateDir::lock_publisher`]) merges the partials of closed windows
//! ([`StateDir::merge_partials`]), releases them, records them as published
//! ([`StateDir::mark_published`]) and compacts ([`StateDir::compact`]): partials holding only
//! published periods are deleted after their offsets, watermarks and late-record counts are
//! folded into `compacted.json`, so covered offsets survive the deletion.
//!
//! Layout: `_state/partials/<worker>-<seq:012>.partial` (see `format.rs`: magic, version, JSON
//! header with the [`PartialMeta`], the aggregates, a BLAKE3 checksum), `_state/compacted.json`,
//! `_state/published.json`, `_state/topic.json`, `_state/publish.lock`,
//! `_state/claims/<partition>-<from>` (fencing: the worker that first claimed a range start;
//! see [`StateDir::write_partial`]), `_state/claims.lock` (held shared from a partial's claims
//! to its link). Directories are
//! owner-only (0700) and files 0600: partials hold keyed visitor hashes, which are never
//! released. Every file is written under a temporary name, synced, renamed, and its directory
//! synced; a damaged partial is an error naming it, never skipped (that would lose counts).
//!
//! ```
//! use std::collections::BTreeMap;
//! use logcensus_aggregate::{Aggregates, Rejection};
//! use logcensus_policy::{CrawlerHandling, Period};
//! use logcensus_state::{OffsetRange, PartialMeta, StateDir};
//!
//! let out = tempfile::tempdir()?;
//! let state = StateDir::open(out.path())?;
//! // The records of partition 0 at offsets 0..100, aggregated.
//! let mut delta = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
//! delta.reject(Rejection::InvalidUtf8, Some(1_700_000_000));
//! let meta = PartialMeta {
//!     worker: "w1".into(),
//!     seq: state.next_seq("w1")?,
//!     created_unix: 1_700_000_100,
//!     offsets: BTreeMap::from([(0, OffsetRange { from: 0, to: 100 })]),
//!     watermarks: BTreeMap::from([(0, 1_700_000_000)]),
//!     late_records: 0,
//! };
//! state.write_partial(&meta, &delta)?;
//! // Only now commit offset 100 of partition 0. Killed before that, the restarted worker
//! // seeks partition 0 to max(committed, 100):
//! assert_eq!(state.covered_offsets()?, BTreeMap::from([(0, 100)]));
//! let (merged, late) = state.merge_partials(|period| period == 1_699_999_200)?;
//! assert_eq!(merged.rejections()[Rejection::InvalidUtf8.index()], 1);
//! assert_eq!(late, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Aggregates`]: logcensus_aggregate::Aggregates

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod dir;
mod error;
mod format;
mod fsio;
mod records;

pub use dir::{Coverage, FailPoint, PublisherLock, StateDir, FAILPOINT_ENV};
pub use error::{LockError, StateError};

/// The offsets of one partition a partial covers: `[from, to)`, `to` being the next offset to
/// read (what Kafka commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRange {
    pub from: i64,
    pub to: i64,
}

/// What a partial covers, written in its header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialMeta {
    /// The worker that wrote it; unique within the consumer group (it names the file).
    pub worker: String,
    /// The worker's checkpoint number; increasing (see [`StateDir::next_seq`]).
    pub seq: u64,
    /// When it was written (Unix seconds).
    pub created_unix: i64,
    /// Per partition, the offsets whose records the partial counts (or counted as late, or
    /// rejected). A partition with no new record since the last checkpoint may be left out.
    pub offsets: BTreeMap<i32, OffsetRange>,
    /// Per partition, the latest event time (Unix seconds) the worker has seen so far, this
    /// partial's records included.
    pub watermarks: BTreeMap<i32, i64>,
    /// Records of these offsets that were not aggregated because their window had closed.
    pub late_records: u64,
}
