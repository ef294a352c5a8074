//! Streaming: a consumer-group member reads lines from Kafka, sends them down the same per-line
//! path as a batch run into event-time windows (the pipeline's period), and checkpoints.
//!
//! **Exactly once.** A checkpoint writes the aggregate *delta* since the previous one as a
//! partial under `<out>/_state/`, atomically, with the offset range of every partition it
//! covers, and only then commits those offsets. On every assignment the worker reads, per
//! partition, the highest offset any partial covers, and skips records below it: a partial
//! written but never committed (a crash in between) is recognised by its offsets and not counted
//! twice, and a record consumed but not yet checkpointed is read again after a crash. Before
//! partitions move to another member (rebalance, shutdown) the worker checkpoints inside the
//! group protocol's revoke callback, so their new owner starts exactly after it.
//!
//! **Windows and lateness.** Each partition has a watermark: the latest event time seen in it.
//! A record whose period ended `allowed_lateness` or more before its partition's watermark is
//! late: counted (`late_records`, metrics), never aggregated, and its address never hashed. A
//! period is closed for the group once every partition's watermark is past its end plus the
//! lateness; [`crate::publish`] releases closed dates. The rule depends only on each
//! partition's own order of records, so the decision is the same whichever worker reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use logcensus_aggregate::{Aggregates, VisitorSecret};
use logcensus_kafka::{KafkaSource as Consumer, KafkaSourceConfig, RebalanceEvent};
use logcensus_policy::{KafkaSource, Pipeline};
use logcensus_state::{OffsetRange, PartialMeta, StateDir, StateError};

use crate::metrics::Metrics;
use crate::worker::{Outcome, Stages};
use crate::RunError;

/// How much longer `--exit-when-idle` waits before the first assignment.
const JOIN_GRACE: Duration = Duration::from_secs(30);

/// The least time a caught-up partition must be quiet before its watermark follows the others.
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// How long `--exit-when-idle` stays, once idle, for records that no member has counted yet: a
/// member that died holding partitions keeps them until its session times out (seconds), and
/// their records go to whoever is left. Past this, the worker leaves anyway and says so.
const UNCOUNTED_WAIT: Duration = Duration::from_secs(60);

/// While waiting for uncounted records, how long before leaving and joining the group again
/// (once): past a dead member's session (6 s by default), the rebalance that joining causes is
/// when a coordinator that only drops dead members at a rebalance (tansu) lets go of its
/// partitions.
const UNCOUNTED_REJOIN: Duration = Duration::from_secs(10);

/// While waiting for uncounted records, how often the state and the topic are compared again.
const UNCOUNTED_RECHECK: Duration = Duration::from_secs(1);

/// Lines taken per poll.
const BATCH_LINES: usize = 20_000;

/// Everything a streaming worker needs, after command-line overrides.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub pipeline: Pipeline,
    pub kafka: KafkaSource,
    pub out: PathBuf,
    pub geoip: Option<PathBuf>,
    /// The database's address index (`logcensus geoip-index`), if any.
    pub geoip_index: Option<PathBuf>,
    /// Must be the same for every worker of the group (a key file): visitor hashes of one
    /// visitor must agree across workers and restarts.
    pub secret: VisitorSecret,
    /// This worker's name in partial file names; unique within the group.
    pub worker_id: String,
    /// Exit (after a checkpoint) when no record came for this long.
    pub exit_when_idle: Option<Duration>,
    /// Set (e.g. by SIGTERM) to checkpoint, commit and return.
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Publish closed dates after each checkpoint.
    pub publish: bool,
}

/// What a streaming worker did.
#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    pub records: u64,
    pub parsed: u64,
    pub rejected: u64,
    pub late: u64,
    /// Records skipped because a partial already covered them.
    pub already_counted: u64,
    /// Records read and then dropped before a rebalance, for the partitions' new owners to
    /// count ([`Window::before_revoke`]); they are in the counts above too.
    pub dropped: u64,
    pub checkpoints: u64,
}

/// The state the revoke callback shares with the polling loop.
struct Window {
    agg: Aggregates,
    state: StateDir,
    worker: String,
    seq: u64,
    /// Per partition, the offsets the current delta covers.
    ranges: BTreeMap<i32, OffsetRange>,
    /// Per partition, the next offset a durable partial covers: what may be committed, and
    /// where records start counting (those below are in a partial already).
    durable: BTreeMap<i32, i64>,
    /// Per partition, the latest event time seen (Unix seconds).
    watermarks: BTreeMap<i32, i64>,
    /// Per partition, the period of the last counted record (where rejections go).
    last_period: BTreeMap<i32, i64>,
    late: u64,
    /// A watermark advanced without a record (an idle partition): the next checkpoint records
    /// it even with nothing else to write.
    watermarks_moved: bool,
    /// Partitions this worker owns now.
    owned: std::collections::BTreeSet<i32>,
    /// Per owned partition, when its last record came (processing time).
    last_seen: BTreeMap<i32, Instant>,
    /// Dates already published (e.g. by `publish --all` during a backfill): records of them
    /// are late, whatever the watermark says.
    published: std::collections::BTreeSet<i64>,
    /// A checkpoint failed: nothing more may be written (the delta is abandoned, its records
    /// are read again by whoever owns their partitions next).
    failed: Option<StateError>,
    checkpoints: u64,
    /// Records dropped by [`Window::before_revoke`].
    dropped: u64,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Window {
    /// An empty window for a worker that writes partials numbered from `seq` into `state`.
    fn new(
        state: StateDir,
        period: logcensus_policy::Period,
        crawlers: logcensus_policy::CrawlerHandling,
        worker: String,
        seq: u64,
        metrics: Arc<Metrics>,
    ) -> Window {
        Window {
            agg: Aggregates::new(period, crawlers),
            state,
            worker,
            seq,
            ranges: BTreeMap::new(),
            durable: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            last_period: BTreeMap::new(),
            late: 0,
            watermarks_moved: false,
            owned: Default::default(),
            last_seen: BTreeMap::new(),
            published: Default::default(),
            failed: None,
            checkpoints: 0,
            dropped: 0,
            metrics,
        }
    }

    /// Why this worker must stop without writing, if a checkpoint failed. It stays failed: the
    /// revoke hook that runs when the consumer is dropped on the way out writes nothing either.
    fn abandoned(&self) -> Option<String> {
        self.failed.as_ref().map(ToString::to_string)
    }

    /// Writes the delta as a partial (if there is one) and returns the offsets that may be
    /// committed: every partition's durable next offset.
    fn checkpoint(&mut self) -> Result<Vec<(i32, i64)>, String> {
        if let Some(e) = &self.failed {
            return Err(e.to_string());
        }
        // A date published since this delta began (e.g. `publish --all` meanwhile) will not be
        // published again: what the delta holds of it counts as late, not silently lost; and
        // records of it that come later are refused as late.
        match self.state.published() {
            Ok(published) => self.published = published,
            Err(e) => {
                let message = e.to_string();
                self.failed = Some(e);
                return Err(message);
            }
        }
        if !self.ranges.is_empty() || self.late > 0 || self.watermarks_moved {
            let started = Instant::now();
            if !self.published.is_empty() {
                let published = self.published.clone();
                let stale = self
                    .agg
                    .split_periods(|p| !published.contains(&crate::publish::date_of(p)));
                let n = stale.requests();
                if n > 0 {
                    tracing::warn!(
                        records = n,
                        "records of dates published meanwhile counted as late"
                    );
                    self.late += n;
                    if let Some(&wm) = self.watermarks.values().max() {
                        self.agg.late(wm, n);
                    }
                }
            }
            let meta = PartialMeta {
                worker: self.worker.clone(),
                seq: self.seq,
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                offsets: self.ranges.clone(),
                watermarks: self.watermarks.clone(),
                late_records: self.late,
            };
            if let Err(e) = self.state.write_partial(&meta, &self.agg) {
                let message = e.to_string();
                self.failed = Some(e);
                return Err(message);
            }
            fail_point("after-partial");
            self.seq += 1;
            for (p, r) in std::mem::take(&mut self.ranges) {
                self.durable.insert(p, r.to);
            }
            self.agg = Aggregates::new(self.agg.period(), self.agg.crawlers());
            self.late = 0;
            self.watermarks_moved = false;
            self.checkpoints += 1;
            self.metrics
                .checkpoint_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(self.durable.iter().map(|(p, o)| (*p, *o)).collect())
    }

    /// The revoke hook's checkpoint: writes the delta and returns the offsets to commit before
    /// `partitions` go, and forgets them.
    ///
    /// If another worker has claimed one of the delta's ranges (both read a partition at once:
    /// the group moved it before its last owner had let go), the delta is dropped instead and
    /// the worker carries on, when every record in it belongs to a partition going now: their
    /// next owners read them again from the committed offsets, which this delta never moved, so
    /// each is still counted once. The worker that stopped here before, with partitions it was
    /// giving up anyway, left the group one member short. Any other failure, or a claim lost
    /// while the worker keeps one of the delta's partitions, still stops it.
    fn before_revoke(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let was_failed = self.failed.is_some();
        let offsets = match self.checkpoint() {
            Ok(offsets) => offsets,
            Err(e) => {
                let lost_claim = matches!(self.failed, Some(StateError::Claimed { .. }));
                let all_going = self.ranges.keys().all(|p| partitions.contains(p));
                if was_failed || !lost_claim || !all_going {
                    tracing::error!(error = %e, "checkpoint before a rebalance failed; this worker stops and the partitions' new owner reads the records again");
                    return Vec::new();
                }
                // Every record read since the last checkpoint, late and rejected ones included.
                let records: i64 = self.ranges.values().map(|r| r.to - r.from).sum();
                let records = u64::try_from(records).unwrap_or(0);
                self.dropped += records;
                self.metrics.dropped.inc_by(records);
                tracing::warn!(error = %e, ?partitions, records, "checkpoint before a rebalance refused: another worker counts a partition this one was giving up; the records read since the last checkpoint are dropped (the partitions' new owners read them again; they stay in this worker's record counters, and are counted as dropped) and this worker carries on");
                self.failed = None;
                self.ranges.clear();
                self.agg = Aggregates::new(self.agg.period(), self.agg.crawlers());
                self.late = 0;
                // An idle partition's moved watermark is kept for the next checkpoint if the
                // partition stays.
                if self.owned.iter().all(|p| partitions.contains(p)) {
                    self.watermarks_moved = false;
                }
                // The dropped records moved these; the next owner's start from the state must.
                for p in partitions {
                    self.watermarks.remove(p);
                }
                Vec::new()
            }
        };
        // No longer ours: their next owner reads where they start from the state.
        for p in partitions {
            self.owned.remove(p);
            self.last_seen.remove(p);
            self.durable.remove(p);
            self.last_period.remove(p);
        }
        offsets
    }

    /// An owned partition with nothing left to read and no record for `idle_after` does not
    /// hold the group's watermark back: its watermark moves up to the newest among this
    /// worker's partitions (a record that comes later with an older time counts as late). So
    /// one quiet partition does not keep every date open.
    fn advance_idle(&mut self, lag: &[(i32, i64)], idle_after: Duration) {
        let Some(newest) = self.watermarks.values().copied().max() else {
            return;
        };
        for &(p, n) in lag {
            let quiet = self
                .last_seen
                .get(&p)
                .is_some_and(|t| t.elapsed() >= idle_after);
            if n == 0 && quiet && self.owned.contains(&p) {
                let wm = self.watermarks.entry(p).or_insert(i64::MIN);
                if *wm < newest {
                    *wm = newest;
                    self.watermarks_moved = true;
                    tracing::info!(
                        partition = p,
                        "idle partition: its watermark follows the others"
                    );
                }
            }
        }
    }

    /// After an assignment: where each partition's records start counting, and its watermark.
    fn assigned(&mut self, partitions: &[i32]) -> Result<(), StateError> {
        self.published = self.state.published()?;
        for p in partitions {
            self.owned.insert(*p);
            self.last_seen.insert(*p, Instant::now());
        }
        let coverage = self.state.coverage()?;
        let (covered, watermarks) = (coverage.offsets, coverage.watermarks);
        for p in partitions {
            if let Some(&o) = covered.get(p) {
                let o = o.max(self.durable.get(p).copied().unwrap_or(0));
                self.durable.insert(*p, o);
            }
            if let Some(&w) = watermarks.get(p) {
                let mine = self.watermarks.entry(*p).or_insert(w);
                *mine = (*mine).max(w);
            }
        }
        Ok(())
    }
}

/// Test hook: `LOGCENSUS_FAILPOINT=<name>` (the variable the state crate's fail points read)
/// aborts the process at that point (a crash at the
/// worst moment, e.g. `after-partial`: a partial is durable but its offsets are not committed).
fn fail_point(name: &str) {
    if std::env::var(logcensus_state::FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("fail point {name}: aborting");
        std::process::abort();
    }
}

/// Runs one streaming worker until it is stopped, idle for `exit_when_idle`, or fails.
pub fn run_stream(opts: &StreamOptions) -> Result<StreamSummary, RunError> {
    let pipeline = &opts.pipeline;
    if !opts.secret.persistent {
        return Err(RunError::StreamNeedsKey);
    }
    let geo = crate::open_geo(
        pipeline,
        opts.geoip.as_deref(),
        opts.geoip_index.as_deref(),
        true,
    )?;
    // Release parameters are checked now, not at the first publish.
    crate::release_plan(pipeline)?;
    let state = StateDir::open(&opts.out)?;
    let seq = state.next_seq(&opts.worker_id)?;
    let window = Arc::new(Mutex::new(Window::new(
        state,
        pipeline.period,
        pipeline.crawlers,
        opts.worker_id.clone(),
        seq,
        opts.metrics.clone(),
    )));
    let k = &opts.kafka;
    let mut consumer = Consumer::connect(&KafkaSourceConfig::new(&k.brokers, &k.topic, &k.group))?;
    // The publisher needs every partition's watermark before it closes a date.
    lock(&window)
        .state
        .record_topic_partitions(consumer.partitions().len() as u32)?;
    {
        let window = window.clone();
        consumer.set_revoke_hook(Box::new(move |partitions| {
            lock(&window).before_revoke(partitions)
        }));
    }
    tracing::info!(worker = %opts.worker_id, topic = %k.topic, group = %k.group, brokers = %k.brokers, "streaming worker started");

    let mut stages = Stages::new(pipeline, geo.as_ref(), opts.secret.clone());
    let mut summary = StreamSummary::default();
    let period = pipeline.period;
    let lateness = k.allowed_lateness.as_secs() as i64;
    let mut last_checkpoint = Instant::now();
    let mut last_record = Instant::now();
    // Until the group first assigns partitions, waiting is not idleness: joining can take a
    // dead member's session timeout plus a rebalance.
    let mut assigned_once = false;
    // Idle, but records that no member has counted yet remain (see `idle_step`).
    let mut waiting: Option<Waiting> = None;
    let metrics = &opts.metrics;
    let mut result = Ok(());
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            tracing::info!("stop requested: checkpointing and leaving the group");
            break;
        }
        let batch = match consumer.poll_batch(BATCH_LINES, Duration::from_millis(200)) {
            Ok(b) => b,
            Err(logcensus_kafka::KafkaError::Consume {
                fatal: false,
                detail,
                ..
            }) => {
                // Transient (a broker restarting, a partition leader moving): keep polling.
                tracing::warn!(%detail, "transient consumer error; polling again");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        let mut w = lock(&window);
        if let Some(why) = w.abandoned() {
            // Abandon the delta: exiting without writing it keeps every record counted once.
            return Err(RunError::Checkpoint(why));
        }
        for event in consumer.take_rebalance_events() {
            // A rebalance is activity: the idle clock starts again.
            last_record = Instant::now();
            match event {
                RebalanceEvent::Assigned(parts) => {
                    assigned_once = true;
                    w.assigned(&parts)?
                }
                RebalanceEvent::Revoked(_) => {}
                RebalanceEvent::RevokeCommitFailed { partitions, reason } => {
                    tracing::warn!(?partitions, %reason, "offsets not committed before a revoke; the partials' offsets keep the counts exact");
                }
            }
        }
        if !batch.next_offsets().is_empty() {
            last_record = Instant::now();
            // Only records end a wait for uncounted ones: the rebalances that joining again
            // causes do not (else a worker that waits for records nobody can count would join
            // again and again, and never leave).
            waiting = None;
        }
        // Where each partition's part of this batch starts (for the partial's offset range).
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for line in batch.lines() {
            let p = line.partition;
            if w.durable.get(&p).is_some_and(|&o| line.offset < o) {
                summary.already_counted += 1;
                continue;
            }
            first.entry(p).or_insert(line.offset);
            summary.records += 1;
            metrics.records.inc();
            let watermark = w.watermarks.get(&p).copied();
            let Window { agg, published, .. } = &mut *w;
            let outcome = stages.line(line.bytes, agg, |t| {
                !published.contains(&crate::publish::date_of(t))
                    && watermark.is_none_or(|wm| period.start(t) + period.seconds() + lateness > wm)
            });
            match outcome {
                Ok(Outcome::Counted(t)) => {
                    summary.parsed += 1;
                    metrics.parsed.inc();
                    let wm = w.watermarks.entry(p).or_insert(t);
                    *wm = (*wm).max(t);
                    w.last_period.insert(p, period.start(t));
                }
                Ok(Outcome::Refused(t)) => {
                    summary.late += 1;
                    metrics.late.inc();
                    w.late += 1;
                    // Counted in the period its partition had reached when it came.
                    w.agg.late(watermark.unwrap_or(t).max(t), 1);
                }
                Err(r) => {
                    summary.rejected += 1;
                    metrics.rejected(r.name());
                    let hint = w.last_period.get(&p).copied();
                    w.agg.reject(r, hint);
                }
            }
        }
        for &(p, next) in batch.next_offsets() {
            // The range continues from what is durable (or covered on assignment); a partition
            // new to the state starts at its first record here.
            let start = w.durable.get(&p).or(first.get(&p)).copied().unwrap_or(next);
            if next <= start {
                continue; // everything here was in a partial already
            }
            let r = w.ranges.entry(p).or_insert(OffsetRange {
                from: start,
                to: start,
            });
            r.to = r.to.max(next);
        }
        w.agg.end_batch();
        let now = Instant::now();
        for p in first.keys() {
            w.last_seen.insert(*p, now);
        }
        drop(w);

        let idle = opts.exit_when_idle.is_some_and(|d| {
            let grace = if assigned_once {
                Duration::ZERO
            } else {
                JOIN_GRACE
            };
            waiting.is_some() || last_record.elapsed() >= d + grace
        });
        // Newly idle, the worker checkpoints; while waiting for others' records (nothing new
        // here to checkpoint), it compares the state with the topic once a second.
        let newly_idle = idle && waiting.is_none();
        let idle = idle && waiting.is_none_or(|w| w.checked.elapsed() >= UNCOUNTED_RECHECK);
        if last_checkpoint.elapsed() >= k.checkpoint_interval || newly_idle {
            checkpoint_and_commit(&window, &consumer)?;
            last_checkpoint = Instant::now();
            if let Ok(lag) = consumer.lag(Duration::from_secs(2)) {
                for &(p, n) in &lag {
                    metrics.set_lag(p, n);
                }
                lock(&window).advance_idle(&lag, k.allowed_lateness.max(IDLE_AFTER));
            }
            if opts.publish {
                crate::publish::publish(&crate::publish::PublishOptions {
                    pipeline: pipeline.clone(),
                    out: opts.out.clone(),
                    secret: opts.secret.clone(),
                    all: false,
                    metrics: Some(metrics.clone()),
                })?;
            }
        }
        if idle {
            // This worker's records are durable now: anything the state does not cover yet is
            // another member's (or nobody's, if one died holding partitions).
            let uncounted = match uncounted(&window, &consumer) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "could not compare the state with the topic; leaving the group");
                    Vec::new()
                }
            };
            match idle_step(&mut waiting, !uncounted.is_empty(), Instant::now()) {
                IdleStep::Leave => {
                    tracing::info!(idle_for = ?opts.exit_when_idle, "no records: leaving the group");
                    break;
                }
                IdleStep::GiveUp => {
                    tracing::warn!(?uncounted, waited = ?UNCOUNTED_WAIT, "leaving the group with records (partition, count) that no member has counted; the next worker of the group reads them");
                    break;
                }
                IdleStep::Wait { first: true } => {
                    tracing::info!(?uncounted, "idle, but records (partition, count) that no member has counted yet remain (a member that stopped holds their partitions until its session times out): waiting for them");
                }
                IdleStep::Wait { first: false } => {}
                IdleStep::Rejoin => {
                    tracing::info!(?uncounted, "records still not counted: joining the group again, so that a rebalance hands a stopped member's partitions on");
                    consumer.rejoin()?;
                }
            }
        }
    }
    // Leaving: checkpoint and commit now; dropping the consumer revokes (the hook then finds
    // nothing new).
    checkpoint_and_commit(&window, &consumer)?;
    drop(consumer);
    summary.checkpoints = lock(&window).checkpoints;
    summary.dropped = lock(&window).dropped;
    result.map(|()| summary)
}

/// An idle worker's wait for records that no member has counted yet: since when, when it
/// last compared the state with the topic, and whether it has joined the group again.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    since: Instant,
    checked: Instant,
    rejoined: bool,
}

/// What an idle worker (`--exit-when-idle`) does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleStep {
    /// Every record is counted.
    Leave,
    /// Records are still uncounted after [`UNCOUNTED_WAIT`]: leave anyway.
    GiveUp,
    /// Wait for them (`first`: the wait begins).
    Wait { first: bool },
    /// Join the group again (once, after [`UNCOUNTED_REJOIN`]).
    Rejoin,
}

/// The next step of an idle worker that found records uncounted (`uncounted`) or not at `now`,
/// keeping its wait in `waiting`. The wait ends only with [`IdleStep::Leave`] or
/// [`IdleStep::GiveUp`] here, or when records come (the caller clears it then): the
/// rebalance that joining again causes must not start it over.
fn idle_step(waiting: &mut Option<Waiting>, uncounted: bool, now: Instant) -> IdleStep {
    if !uncounted {
        return IdleStep::Leave;
    }
    let first = waiting.is_none();
    let w = waiting.get_or_insert(Waiting {
        since: now,
        checked: now,
        rejoined: false,
    });
    w.checked = now;
    let waited = now.saturating_duration_since(w.since);
    if waited >= UNCOUNTED_WAIT {
        return IdleStep::GiveUp;
    }
    if !w.rejoined && waited >= UNCOUNTED_REJOIN {
        w.rejoined = true;
        return IdleStep::Rejoin;
    }
    IdleStep::Wait { first }
}

/// Per partition of the topic, how many of its stored records are neither covered by a
/// partial in the state nor behind the group's committed offset (which a member commits only
/// after checkpointing, so records behind it were counted, here or in a state this run does
/// not use); only partitions with some.
fn uncounted(window: &Mutex<Window>, consumer: &Consumer) -> Result<Vec<(i32, i64)>, String> {
    let timeout = Duration::from_secs(2);
    let ends = consumer.watermarks(timeout).map_err(|e| e.to_string())?;
    let committed: BTreeMap<i32, i64> = consumer
        .committed(timeout)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let covered = lock(window)
        .state
        .coverage()
        .map_err(|e| e.to_string())?
        .offsets;
    Ok(ends
        .into_iter()
        .filter_map(|(p, low, high)| {
            let counted = covered.get(&p).into_iter().chain(committed.get(&p));
            let from = counted.copied().fold(low, i64::max);
            (high > from).then_some((p, high - from))
        })
        .collect())
}

fn checkpoint_and_commit(window: &Mutex<Window>, consumer: &Consumer) -> Result<(), RunError> {
    let offsets = lock(window).checkpoint().map_err(RunError::Checkpoint)?;
    fail_point("before-commit");
    if !offsets.is_empty() {
        if let Err(e) = consumer.commit(&offsets) {
            // The partials' offsets keep the counts exact; the commit only saves re-reading.
            tracing::warn!(error = %e, "offset commit failed; records since the last commit will be read again and skipped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use logcensus_policy::{CrawlerHandling, Period};

    pub(super) fn window(dir: &std::path::Path) -> Window {
        Window::new(
            StateDir::open(dir).unwrap(),
            Period::Day,
            CrawlerHandling::Include,
            "w1".into(),
            0,
            Arc::new(Metrics::default()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::window;
    use super::*;

    /// An idle worker with uncounted records waits, joins the group again once after 10 s,
    /// keeps waiting, and gives up at 60 s; found nothing uncounted at any check, it leaves.
    #[test]
    fn idle_worker_waits_rejoins_once_and_gives_up() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut waiting = None;
        let steps: Vec<IdleStep> = [0, 1, 9, 10, 11, 30, 59]
            .into_iter()
            .map(|s| idle_step(&mut waiting, true, at(s)))
            .collect();
        use IdleStep::*;
        let wait = Wait { first: false };
        assert_eq!(
            steps,
            [Wait { first: true }, wait, wait, Rejoin, wait, wait, wait]
        );
        assert_eq!(idle_step(&mut waiting, true, at(60)), GiveUp);
        assert_eq!(idle_step(&mut waiting, true, at(61)), GiveUp);
        // Counted by then: leave, whatever the wait.
        assert_eq!(idle_step(&mut waiting, false, at(62)), Leave);
        let mut fresh = None;
        assert_eq!(idle_step(&mut fresh, false, at(0)), Leave);
        assert!(fresh.is_none());
        // A wait begun late still gives up 60 s after it began.
        let mut late = None;
        assert_eq!(idle_step(&mut late, true, at(100)), Wait { first: true });
        assert_eq!(idle_step(&mut late, true, at(159)), Rejoin);
        assert_eq!(idle_step(&mut late, true, at(160)), GiveUp);
    }

    #[test]
    fn after_a_failed_checkpoint_nothing_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = window(dir.path());
        w.ranges
            .insert(0, logcensus_state::OffsetRange { from: 0, to: 5 });
        w.failed = Some(logcensus_state::StateError::Claimed {
            partition: 0,
            from: 0,
            owner: "w2".into(),
        });
        // The loop sees why it must stop; that does not clear it, so every later checkpoint
        // (the revoke hook's on the way out included) refuses too.
        assert!(w.abandoned().unwrap().contains("already claimed by worker"));
        assert!(w.abandoned().is_some());
        assert!(w
            .checkpoint()
            .unwrap_err()
            .contains("already claimed by worker"));
        assert_eq!(w.state.coverage().unwrap().partials, 0);
    }

    const T: i64 = 1_700_000_000;

    /// A worker that owns partitions 0 and 1, has checkpointed partition 0 up to offset 40, and
    /// has read partition 0 to 60 and partition 1 from 968 to 1000 since; meanwhile `w2` read
    /// partition 1 too and checkpointed it from 968 first.
    fn window_that_lost_a_claim(dir: &std::path::Path) -> Window {
        let mut w = window(dir);
        w.assigned(&[0, 1]).unwrap();
        w.ranges.insert(0, OffsetRange { from: 0, to: 40 });
        w.watermarks.insert(0, T);
        assert_eq!(w.checkpoint().unwrap(), vec![(0, 40)]);
        w.ranges.insert(0, OffsetRange { from: 40, to: 60 });
        w.ranges.insert(
            1,
            OffsetRange {
                from: 968,
                to: 1000,
            },
        );
        w.watermarks.insert(0, T + 500);
        w.watermarks.insert(1, T + 900);
        w.agg.reject(
            logcensus_aggregate::Rejection::InvalidUtf8,
            Some(T - T % 86_400),
        );
        w.late = 2;
        write_other_partial(&w.state, "w2", (1, 968, 990), &[(1, T + 100)]);
        w
    }

    /// Writes an empty partial of `worker`'s covering `(partition, from, to)`, as another worker
    /// (or one of the same name) would.
    fn write_other_partial(
        state: &StateDir,
        worker: &str,
        (partition, from, to): (i32, i64, i64),
        watermarks: &[(i32, i64)],
    ) {
        let meta = PartialMeta {
            worker: worker.into(),
            seq: 0,
            created_unix: T,
            offsets: BTreeMap::from([(partition, OffsetRange { from, to })]),
            watermarks: watermarks.iter().copied().collect(),
            late_records: 0,
        };
        let agg = Aggregates::new(
            logcensus_policy::Period::Day,
            logcensus_policy::CrawlerHandling::Include,
        );
        state.write_partial(&meta, &agg).unwrap();
    }

    fn claims(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("_state/claims"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_claim_lost_for_partitions_going_drops_the_delta_and_the_worker_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = window_that_lost_a_claim(dir.path());
        assert_eq!(w.durable, BTreeMap::from([(0, 40)]));
        // An eager rebalance revokes both: nothing to commit, nothing written, nothing claimed
        // for partition 0 from 40 (its next owner reads 40.. again).
        assert_eq!(w.before_revoke(&[0, 1]), Vec::new());
        assert_eq!(w.abandoned(), None);
        // Offsets 40..60 and 968..1000.
        assert_eq!(w.dropped, 52);
        assert!(w
            .metrics
            .render()
            .contains("logcensus_dropped_records_total 52\n"));
        assert_eq!(w.state.coverage().unwrap().partials, 2);
        assert_eq!(claims(dir.path()), ["0-0", "1-968"]);
        assert!(w.ranges.is_empty());
        assert_eq!(w.agg.rejections().iter().sum::<u64>(), 0);
        assert_eq!(w.late, 0);
        assert!(w.owned.is_empty());
        assert!(w.durable.is_empty(), "{:?}", w.durable);
        assert!(w.watermarks.is_empty(), "{:?}", w.watermarks);
        // Assigned both again, it starts where the partials end, with their watermarks (not
        // those of the records it dropped).
        w.assigned(&[0, 1]).unwrap();
        assert_eq!(w.durable, BTreeMap::from([(0, 40), (1, 990)]));
        assert_eq!(w.watermarks, BTreeMap::from([(0, T), (1, T + 100)]));
        w.ranges.insert(0, OffsetRange { from: 40, to: 60 });
        w.ranges.insert(1, OffsetRange { from: 990, to: 995 });
        assert_eq!(w.checkpoint().unwrap(), vec![(0, 60), (1, 995)]);
        assert_eq!(w.state.coverage().unwrap().partials, 3);
    }

    #[test]
    fn a_kept_idle_partitions_moved_watermark_outlives_a_dropped_delta() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = window_that_lost_a_claim(dir.path());
        // Partition 2 (no records) had its watermark moved up as idle; only 0 and 1 go.
        w.assigned(&[2]).unwrap();
        w.watermarks.insert(2, T + 900);
        w.watermarks_moved = true;
        assert_eq!(w.before_revoke(&[0, 1]), Vec::new());
        assert_eq!(w.abandoned(), None);
        assert!(w.watermarks_moved);
        assert_eq!(w.checkpoint().unwrap(), Vec::new());
        assert_eq!(
            w.state.coverage().unwrap().watermarks.get(&2),
            Some(&(T + 900))
        );
    }

    #[test]
    fn a_claim_lost_for_a_partition_kept_still_stops_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = window_that_lost_a_claim(dir.path());
        // Only partition 1 goes: the records of partition 0 cannot be dropped (this worker
        // has read past them) nor written without partition 1's.
        assert_eq!(w.before_revoke(&[1]), Vec::new());
        assert!(w
            .abandoned()
            .unwrap()
            .starts_with("partition 1 from offset 968 is already claimed by worker \"w2\""));
        assert_eq!(w.state.coverage().unwrap().partials, 2);
        assert_eq!(claims(dir.path()), ["0-0", "1-968"]);
    }

    #[test]
    fn a_worker_that_already_failed_or_fails_otherwise_stops_at_a_revoke() {
        // A periodic checkpoint lost the claim first: the revoke on the way out keeps it failed.
        let dir = tempfile::tempdir().unwrap();
        let mut w = window_that_lost_a_claim(dir.path());
        assert!(w.checkpoint().is_err());
        assert_eq!(w.before_revoke(&[0, 1]), Vec::new());
        assert!(w.abandoned().unwrap().contains("already claimed by worker"));
        assert_eq!(w.state.coverage().unwrap().partials, 2);
        // A failure that is not a lost claim: the partial's name is taken (a second worker
        // named w1). The worker stops, and the claims it made are taken back.
        let dir = tempfile::tempdir().unwrap();
        let mut w = window(dir.path());
        w.assigned(&[0]).unwrap();
        write_other_partial(&w.state, "w1", (5, 0, 3), &[]);
        w.ranges.insert(0, OffsetRange { from: 0, to: 10 });
        assert_eq!(w.before_revoke(&[0]), Vec::new());
        assert!(
            w.abandoned().unwrap().contains("already exists"),
            "{:?}",
            w.abandoned()
        );
        assert_eq!(claims(dir.path()), ["5-0"]);
    }

    #[test]
    fn a_quiet_caught_up_partition_stops_holding_the_watermark_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = window(dir.path());
        w.assigned(&[0, 1, 2]).unwrap();
        w.watermarks.insert(0, 1_000);
        w.watermarks.insert(1, 5_000);
        // Partition 2 never had a record; partition 0 still has records to read.
        std::thread::sleep(Duration::from_millis(20));
        w.last_seen.insert(1, Instant::now());
        w.advance_idle(&[(0, 7), (1, 0), (2, 0)], Duration::from_millis(10));
        assert_eq!(
            w.watermarks,
            BTreeMap::from([(0, 1_000), (1, 5_000), (2, 5_000)])
        );
        assert!(w.watermarks_moved);
        // The next checkpoint records the moved watermark though there is no data.
        assert_eq!(w.checkpoint().unwrap(), Vec::new());
        assert_eq!(w.state.coverage().unwrap().watermarks.get(&2), Some(&5_000));
        assert!(!w.watermarks_moved);
        // A partition that is not caught up, or not quiet long enough, keeps its watermark.
        w.advance_idle(&[(0, 7)], Duration::from_millis(10));
        w.advance_idle(&[(0, 0)], Duration::from_secs(3600));
        assert_eq!(w.watermarks[&0], 1_000);
    }
}
