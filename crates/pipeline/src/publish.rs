//! Publishing: merges the partials of closed dates and releases them into the same layout as a
//! batch run, through the same release step.
//!
//! A date is published whole, once every period in it is closed for the group (every
//! partition's watermark is past the date's end plus the allowed lateness), or at once with
//! `--all` (the end of a backfill). A published date is never published again: re-releasing it
//! would draw fresh differential-privacy noise for the same data, which averaging can undo.
//! Publishing is idempotent, one publisher at a time (a lock file under `_state/`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use logcensus_aggregate::{Aggregates, VisitorSecret};
use logcensus_policy::Pipeline;
use logcensus_sink::WrittenFile;
use logcensus_state::StateDir;

use crate::metrics::Metrics;
use crate::RunError;

const DAY: i64 = 86_400;

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub pipeline: Pipeline,
    pub out: PathBuf,
    /// The visitor key of the workers (the contribution bounds' choice is keyed by it).
    pub secret: VisitorSecret,
    /// Publish every date, closed or not.
    pub all: bool,
    pub metrics: Option<Arc<Metrics>>,
}

/// What a publish did.
#[derive(Debug, Clone, Default)]
pub struct PublishSummary {
    /// Dates released now (Unix seconds of their midnight).
    pub dates: Vec<i64>,
    /// Dates with data that are not closed yet.
    pub open_dates: Vec<i64>,
    pub files: Vec<WrittenFile>,
    pub rows: Vec<(&'static str, usize)>,
    /// Records counted late so far by the group (partials and compacted ones).
    pub late_records: u64,
}

/// Publishes the closed (or, with `all`, every) unpublished date found in `<out>/_state/`.
pub fn publish(opts: &PublishOptions) -> Result<PublishSummary, RunError> {
    let started = Instant::now();
    let pipeline = &opts.pipeline;
    let plan = crate::release_plan(pipeline)?;
    let state = StateDir::open(&opts.out)?;
    let _lock = state.lock_publisher().map_err(|e| match e {
        logcensus_state::LockError::Busy(path) => RunError::PublishBusy {
            path: path.display().to_string(),
        },
        logcensus_state::LockError::State(e) => RunError::State(e),
    })?;
    let lateness = pipeline
        .kafka
        .as_ref()
        .map_or(0, |k| k.allowed_lateness.as_secs() as i64);
    let published: BTreeSet<i64> = state.published()?;
    let coverage = state.coverage()?;
    // The group's watermark: the slowest partition's. A partition nobody has read yet holds
    // every date open.
    let all_seen = state
        .topic_partitions()?
        .is_none_or(|n| coverage.watermarks.len() >= n as usize);
    let group_watermark = coverage
        .watermarks
        .values()
        .copied()
        .min()
        .filter(|_| all_seen);
    let mut summary = PublishSummary::default();
    let dates: BTreeSet<i64> = coverage
        .periods
        .iter()
        .map(|p| date_of(*p))
        .filter(|d| !published.contains(d))
        .collect();
    let closed: BTreeSet<i64> = dates
        .iter()
        .copied()
        .filter(|d| opts.all || group_watermark.is_some_and(|wm| d + DAY + lateness <= wm))
        .collect();
    summary.open_dates = dates.difference(&closed).copied().collect();
    if closed.is_empty() {
        return Ok(summary);
    }
    let mut merged = Aggregates::new(pipeline.period, pipeline.crawlers);
    summary.late_records =
        state.merge_partials_into(&mut merged, |p| closed.contains(&date_of(p)))?;
    let periods: Vec<i64> = closed.iter().copied().collect();
    // With differential privacy a date must never be released twice (fresh noise on the same
    // data can be averaged away): it is marked before its tables are written, so a crash in
    // between leaves it unreleased rather than released twice. Without DP a release is
    // deterministic, and it is marked after.
    let noisy = !pipeline.dp.is_empty();
    if noisy {
        state.mark_published(&periods)?;
    }
    let (rows, files) =
        crate::release_and_write(pipeline, &plan, merged, &opts.out, &opts.secret, false)?;
    if !noisy {
        state.mark_published(&periods)?;
    }
    let done: BTreeSet<i64> = published.union(&closed).copied().collect();
    state.compact(|p| done.contains(&date_of(p)))?;
    tracing::info!(dates = ?periods.iter().map(|d| date_name(*d)).collect::<Vec<_>>(), files = files.len(), open = summary.open_dates.len(), "published");
    if let Some(m) = &opts.metrics {
        m.publish_seconds.observe(started.elapsed().as_secs_f64());
        if let Some(newest) = periods.last() {
            m.newest_released.set(*newest);
        }
    }
    summary.dates = periods;
    summary.files = files;
    summary.rows = rows;
    Ok(summary)
}

fn date_of(period: i64) -> i64 {
    period.div_euclid(DAY) * DAY
}

/// `YYYY-MM-DD` of the UTC date holding `unix_seconds` (as in the `date=` partitions).
pub fn date_name(unix_seconds: i64) -> String {
    logcensus_sink::utc_date(unix_seconds.div_euclid(DAY))
}
