//! The small JSON records beside the partials: what compaction folded away, which windows are
//! published, how many partitions the topic has. Each is replaced atomically as a whole.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::OffsetRange;

pub(crate) const COMPACTED: &str = "compacted.json";
pub(crate) const PUBLISHED: &str = "published.json";
pub(crate) const TOPIC: &str = "topic.json";
pub(crate) const PUBLISH_LOCK: &str = "publish.lock";

/// What compaction removed, so that nothing it knew is forgotten: the offsets and watermarks of
/// deleted partials (a restarted worker still seeks past them), their late records, and each
/// worker's highest sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Compacted {
    /// Changes with every compaction; readers retry when it changed under them.
    pub generation: u64,
    /// Per partition, the offset ranges of compacted partials, sorted, disjoint, coalesced.
    pub offsets: BTreeMap<i32, Vec<OffsetRange>>,
    pub watermarks: BTreeMap<i32, i64>,
    pub late_records: u64,
    pub last_seq: BTreeMap<String, u64>,
    /// Partials folded in by the last compaction, which may still exist if it was killed before
    /// deleting them: readers skip them and the next compaction deletes them. Identified by
    /// name *and* checksum, so a new partial that reuses a name is never mistaken for one.
    pub removing: Vec<Removing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Removing {
    pub name: String,
    /// BLAKE3 of the file, hex.
    pub checksum: String,
}

impl Compacted {
    pub fn is_removing(&self, name: &str, checksum: &blake3::Hash) -> bool {
        let hex = checksum.to_hex();
        self.removing
            .iter()
            .any(|r| r.name == name && r.checksum == hex.as_str())
    }

    /// Folds in a compacted partial's offsets (as an interval set: one range per partition once
    /// contiguous partials are folded), watermarks, late records and sequence number.
    pub fn fold(&mut self, meta: &crate::PartialMeta) {
        for (&p, &r) in &meta.offsets {
            if r.from < r.to {
                insert_range(self.offsets.entry(p).or_default(), r);
            }
        }
        for (&p, &w) in &meta.watermarks {
            let mine = self.watermarks.entry(p).or_insert(w);
            *mine = (*mine).max(w);
        }
        self.late_records += meta.late_records;
        let seq = self.last_seq.entry(meta.worker.clone()).or_insert(meta.seq);
        *seq = (*seq).max(meta.seq);
    }
}

fn insert_range(ranges: &mut Vec<OffsetRange>, r: OffsetRange) {
    ranges.push(r);
    ranges.sort_by_key(|r| (r.from, r.to));
    let mut out: Vec<OffsetRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if r.from <= last.to => last.to = last.to.max(r.to),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Published {
    /// Start (Unix seconds) of every window released.
    pub windows: BTreeSet<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Topic {
    pub partitions: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: i64, to: i64) -> OffsetRange {
        OffsetRange { from, to }
    }

    #[test]
    fn ranges_coalesce_in_any_order() {
        let mut v = Vec::new();
        insert_range(&mut v, r(100, 200));
        insert_range(&mut v, r(300, 400));
        assert_eq!(v, [r(100, 200), r(300, 400)]);
        insert_range(&mut v, r(0, 100));
        insert_range(&mut v, r(200, 300));
        assert_eq!(v, [r(0, 400)]);
        insert_range(&mut v, r(500, 501));
        assert_eq!(v, [r(0, 400), r(500, 501)]);
    }
}
