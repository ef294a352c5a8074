//! Publishing: merges the partials of closed dates and releases them into the same layout as a
//! batch run, through the same release step.
//!
//! A date is published whole, once every period in it is closed for the group (every
//! partition's watermark is past the date's end plus the allowed lateness), or at once with
//! `--all` (the end of a backfill). A published date is never published again: re-releasing it
//! would draw fresh differential-privacy noise for the same data, which averaging can undo.
//! Publishing is idempotent, one publisher at a time (a lock file under `_state/`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
    // A DP publish interrupted between marking its dates and moving their files: finish it.
    move_staged(&state.path().join("staging"), &opts.out)?;
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
    // With differential privacy a date must be released exactly once (fresh noise on the same
    // data can be averaged away): its tables are written to `_state/staging/` first, then the
    // date is marked published, then the files move into place; a publish interrupted after
    // the mark finishes the move next time, with the noise already drawn. Without DP a release
    // is deterministic: written in place, then marked.
    let noisy = !pipeline.dp.is_empty();
    let staging = state.path().join("staging");
    let (rows, files) = if noisy {
        let written =
            crate::release_and_write(pipeline, &plan, merged, &staging, &opts.secret, false)?;
        state.mark_published(&periods)?;
        move_staged(&staging, &opts.out)?;
        written
    } else {
        let written =
            crate::release_and_write(pipeline, &plan, merged, &opts.out, &opts.secret, false)?;
        state.mark_published(&periods)?;
        written
    };
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

/// Moves every file under `staging` to the same place under `out` (replacing), then removes
/// the emptied directories. Same file system (`staging` is under `<out>/_state/`): renames.
fn move_staged(staging: &Path, out: &Path) -> Result<(), RunError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        RunError::Checkpoint(format!("cannot {what} {}: {e}", path.display()))
    };
    if !staging.exists() {
        return Ok(());
    }
    let mut stack = vec![staging.to_path_buf()];
    let mut dirs = Vec::new();
    let mut moved_into = BTreeSet::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))? {
            let entry = entry.map_err(|e| io("list", &dir, e))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let target = out.join(path.strip_prefix(staging).expect("below staging"));
            if let Some(parent) = target.parent() {
                logcensus_sink::create_dir_durably(parent)?;
                moved_into.insert(parent.to_path_buf());
            }
            std::fs::rename(&path, &target).map_err(|e| io("move into place", &target, e))?;
        }
        dirs.push(dir);
    }
    // The moves are durable before the staged copies' directories go (and before the state
    // forgets that this date was staged).
    for dir in &moved_into {
        logcensus_sink::sync_dir(dir)?;
    }
    for dir in dirs.iter().rev() {
        std::fs::remove_dir(dir).map_err(|e| io("remove", dir, e))?;
    }
    Ok(())
}

/// Unix seconds of the UTC midnight starting the date of `unix_seconds`.
pub(crate) fn date_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(DAY) * DAY
}

/// `YYYY-MM-DD` of the UTC date holding `unix_seconds` (as in the `date=` partitions).
pub fn date_name(unix_seconds: i64) -> String {
    logcensus_sink::utc_date(unix_seconds.div_euclid(DAY))
}
