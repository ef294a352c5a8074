//! The consumer: a member of a consumer group that hands out batches of lines with the offsets
//! they came from, and commits only what the caller says is durable.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::error::{Endpoint, KafkaError};

/// Where and how a [`KafkaSource`] consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to consume; it must exist (see [`crate::create_topic`]).
    pub topic: String,
    /// The consumer group. Workers of one job share a group, so each partition is read by one
    /// of them, and a restarted worker resumes from the group's committed offsets.
    pub group: String,
    /// How long the group waits for a silent member before reassigning its partitions
    /// (`session.timeout.ms`). Default 6000: short enough that a killed worker's partitions move
    /// within seconds.
    pub session_timeout_ms: u32,
    /// How often the member tells the group it is alive (`heartbeat.interval.ms`); well under
    /// the session timeout. Default 1000.
    pub heartbeat_interval_ms: u32,
    /// How long [`KafkaSource::connect`] waits for the brokers' first answer before it gives
    /// up with [`KafkaError::Unreachable`]. Default 10000.
    pub connect_timeout_ms: u64,
}

impl KafkaSourceConfig {
    /// A configuration with the default timeouts.
    pub fn new(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        group: impl Into<String>,
    ) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group: group.into(),
            session_timeout_ms: 6000,
            heartbeat_interval_ms: 1000,
            connect_timeout_ms: 10_000,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(&self.brokers, Some(&self.topic), Some(&self.group))
    }
}

/// A change of this member's partitions, in the order the group made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions are now this member's; consumption starts at their committed offsets
    /// (or the earliest offset if the group has never committed one).
    Assigned(Vec<i32>),
    /// These partitions were taken away. Lines of them not yet returned by
    /// [`KafkaSource::poll_batch`] were dropped; their new owner reads them again from the
    /// committed offsets.
    Revoked(Vec<i32>),
    /// The offsets returned by the [`RevokeHook`] could not be committed before the partitions
    /// went (or the hook panicked). The new owner will read again what the caller processed
    /// since the last successful commit.
    RevokeCommitFailed {
        /// The revoked partitions.
        partitions: Vec<i32>,
        /// What went wrong (librdkafka's text, never payloads).
        reason: String,
    },
}

/// Called just before partitions are revoked, with the revoked partitions; returns the
/// `(partition, next offset)` pairs to commit before they go.
///
/// The contract: by the time the hook returns, everything the caller has taken from
/// [`KafkaSource::poll_batch`] for those partitions must be durable (checkpointed), and the
/// returned offsets must be exactly the next offsets that checkpoint covers (from
/// [`Batch::next_offsets`]). The source commits them synchronously before the group moves the
/// partitions, so the new owner starts right after the checkpoint. Return an empty vector if
/// everything was already committed. After the hook, `poll_batch` returns no more lines of the
/// revoked partitions (lines it had fetched but not yet returned are dropped, and read again by
/// the new owner).
///
/// The hook runs inside `poll_batch` (the group protocol runs there), on the polling thread,
/// and also while the source is dropped, since leaving the group revokes everything: a clean
/// shutdown checkpoints through the same path. It should finish well within the group's
/// rebalance timeout (librdkafka's `max.poll.interval.ms`, 300 s). A panic in the hook is
/// caught and reported as [`RebalanceEvent::RevokeCommitFailed`].
///
/// Without a hook, the caller must commit after every batch it processes: lines returned but
/// not committed when a revoke comes are read again by the new owner.
pub type RevokeHook = Box<dyn FnMut(&[i32]) -> Vec<(i32, i64)> + Send>;

/// The state the group protocol callbacks share with the source.
#[derive(Default)]
struct Shared {
    /// Events not yet taken by [`KafkaSource::take_rebalance_events`].
    events: Vec<RebalanceEvent>,
    /// Partitions revoked since `poll_batch` last looked: lines of them in the batch being
    /// built must go.
    revoked: Vec<i32>,
    /// The current assignment as the callbacks saw it, for a rebalance error (which revokes
    /// it) without asking librdkafka from inside its callback.
    assigned: Vec<i32>,
}

/// The consumer context: routes librdkafka's logs to `tracing` and runs the rebalance protocol
/// callbacks.
struct SourceContext {
    topic: String,
    group: String,
    shared: Mutex<Shared>,
    hook: Mutex<Option<RevokeHook>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SourceContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut out: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        out.sort_unstable();
        out
    }

    fn commit_before_revoke(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        partitions: &[i32],
    ) -> Result<(), String> {
        let offsets = {
            let mut hook = lock(&self.hook);
            let Some(hook) = hook.as_mut() else {
                return Ok(());
            };
            panic::catch_unwind(AssertUnwindSafe(|| hook(partitions)))
                .map_err(|_| "the revoke hook panicked".to_string())?
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = offsets_list(&self.topic, &offsets).map_err(|e| e.to_string())?;
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| e.to_string())?;
        tracing::debug!(topic = %self.topic, group = %self.group, ?offsets, "committed offsets before revoke");
        Ok(())
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: RdError, reason: &str) {
        // A group consumer gets its errors from poll instead; this serves the rest.
        tracing::warn!(topic = %self.topic, group = %self.group, %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    /// Runs the hook and records the event, then applies the change. This replaces rdkafka's
    /// default, which asks librdkafka on every rebalance which protocol is in use, through a
    /// request to the group thread that waits forever if the group is shutting down at that
    /// moment (librdkafka #4041; seen here as a consumer drop that never returned). The protocol
    /// is known: [`KafkaSource::connect`] sets an eager assignment strategy, where a rebalance
    /// revokes everything, then assigns.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let applied = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let applied = consumer.assign(tpl);
                if applied.is_ok() {
                    let partitions = self.partitions(tpl);
                    tracing::info!(topic = %self.topic, group = %self.group, ?partitions, "partitions assigned");
                    let mut shared = lock(&self.shared);
                    shared.assigned.clone_from(&partitions);
                    shared.events.push(RebalanceEvent::Assigned(partitions));
                }
                applied
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, self.partitions(tpl));
                consumer.unassign()
            }
            other => {
                // librdkafka's advice: give up the assignment. It goes the way a revoke does.
                let error = RdError::Rebalance(other.into());
                tracing::warn!(topic = %self.topic, group = %self.group, %error, "rebalance error; giving up the partitions");
                let current = std::mem::take(&mut lock(&self.shared).assigned);
                self.revoke(consumer, current);
                consumer.unassign()
            }
        };
        if let Err(error) = applied {
            tracing::error!(topic = %self.topic, group = %self.group, %error, "could not apply a rebalance");
        }
    }
}

impl SourceContext {
    /// Before `partitions` go: the hook's checkpoint and commit, then the events, and the note
    /// for `poll_batch` to drop what it holds of them.
    fn revoke(&self, consumer: &BaseConsumer<SourceContext>, partitions: Vec<i32>) {
        let committed = self.commit_before_revoke(consumer, &partitions);
        tracing::info!(topic = %self.topic, group = %self.group, ?partitions, "partitions revoked");
        let mut shared = lock(&self.shared);
        shared.assigned.retain(|p| !partitions.contains(p));
        shared.revoked.extend_from_slice(&partitions);
        shared
            .events
            .push(RebalanceEvent::Revoked(partitions.clone()));
        if let Err(reason) = committed {
            tracing::error!(topic = %self.topic, group = %self.group, ?partitions, %reason,
                "could not commit offsets before partitions were revoked; their new owner will read again what was processed since the last commit");
            shared
                .events
                .push(RebalanceEvent::RevokeCommitFailed { partitions, reason });
        }
    }
}

/// Forwards a librdkafka log line to `tracing`. librdkafka logs connection and protocol state,
/// never record contents.
pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

fn offsets_list(topic: &str, offsets: &[(i32, i64)]) -> Result<TopicPartitionList, RdError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    Ok(tpl)
}

/// One line of a [`Batch`], with the message it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The partition of the message.
    pub partition: i32,
    /// The offset of the message; the lines of one message share it.
    pub offset: i64,
    /// The line, without its `\n` or `\r\n`; never empty.
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineAt {
    partition: i32,
    offset: i64,
    start: usize,
    end: usize,
}

/// Lines taken from the topic by one [`KafkaSource::poll_batch`], in the order of their
/// partitions (no order across partitions), with the offsets a checkpoint of them would commit.
///
/// A batch holds whole messages only: the lines of one message are never split across batches,
/// so a checkpoint never covers part of a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    data: Vec<u8>,
    lines: Vec<LineAt>,
    /// `(partition, next offset)`, sorted by partition.
    next_offsets: Vec<(i32, i64)>,
}

impl Batch {
    /// The number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True if the batch has no lines (it may still have consumed messages without payload).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines in order.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = Line<'_>> + '_ {
        self.lines.iter().map(|l| Line {
            partition: l.partition,
            offset: l.offset,
            bytes: &self.data[l.start..l.end],
        })
    }

    /// For each partition the batch consumed from, the offset after its last message: what a
    /// checkpoint covering this batch (and everything before it) commits. Sorted by partition.
    /// Messages without lines count: their offsets advance too.
    pub fn next_offsets(&self) -> &[(i32, i64)] {
        &self.next_offsets
    }

    /// Adds one message: its non-empty lines, and its offset to [`Batch::next_offsets`].
    fn push_message(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        for line in payload.into_iter().flat_map(split_lines) {
            let start = self.data.len();
            self.data.extend_from_slice(line);
            self.lines.push(LineAt {
                partition,
                offset,
                start,
                end: self.data.len(),
            });
        }
        match self
            .next_offsets
            .binary_search_by_key(&partition, |&(p, _)| p)
        {
            Ok(i) => self.next_offsets[i].1 = self.next_offsets[i].1.max(offset + 1),
            Err(i) => self.next_offsets.insert(i, (partition, offset + 1)),
        }
    }

    /// Drops everything of these partitions (they were revoked before the batch was returned).
    fn remove_partitions(&mut self, revoked: &[i32]) {
        self.lines.retain(|l| !revoked.contains(&l.partition));
        self.next_offsets.retain(|(p, _)| !revoked.contains(p));
    }
}

/// The non-empty lines of a message payload: split at `\n`, a trailing `\r` removed.
fn split_lines(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
}

/// A message held over to the next batch because it would have pushed this one past `max`.
#[derive(Debug)]
struct Held {
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

/// A consumer-group member reading lines from one topic, with manual offset commits.
///
/// Offsets are never committed automatically: the caller commits ([`KafkaSource::commit`])
/// the [`Batch::next_offsets`] of what it has made durable, and the [`RevokeHook`] lets it do
/// so before a rebalance takes partitions away. After a restart the group's committed offsets
/// say where to resume; nothing is stored locally.
///
/// Dropping the source leaves the group (which runs the revoke hook). Do not hold on to
/// librdkafka partition lists across the drop; this type never hands any out.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    cfg: KafkaSourceConfig,
    /// A message that did not fit the previous batch.
    held: Option<Held>,
    /// An error met after the previous batch already had lines; returned by the next call.
    held_error: Option<KafkaError>,
    /// The topic's partitions at connect time.
    partitions: Vec<i32>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Joins `cfg.group` as a consumer of `cfg.topic`, after checking within
    /// `cfg.connect_timeout_ms` that the brokers answer and the topic exists.
    ///
    /// Settings: `enable.auto.commit=false` and `enable.auto.offset.store=false` (only
    /// [`KafkaSource::commit`] and the revoke hook commit), `auto.offset.reset=earliest` (a new
    /// group reads the topic from its start), and the session and heartbeat intervals of `cfg`.
    /// The group assigns partitions during the first [`KafkaSource::poll_batch`] calls.
    pub fn connect(cfg: &KafkaSourceConfig) -> Result<KafkaSource, KafkaError> {
        let context = SourceContext {
            topic: cfg.topic.clone(),
            group: cfg.group.clone(),
            shared: Mutex::default(),
            hook: Mutex::new(None),
        };
        let consumer: BaseConsumer<SourceContext> = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group)
            .set("client.id", "logcensus")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Eager: a rebalance revokes every partition, then assigns. `rebalance` above
            // relies on it.
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                cfg.heartbeat_interval_ms.to_string(),
            )
            .create_with_context(context)
            .map_err(|e| KafkaError::Config {
                at: cfg.endpoint(),
                detail: e.to_string(),
            })?;

        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let partitions = match topic_partitions(&consumer, &cfg.topic, timeout) {
            Ok(partitions) => partitions,
            Err(e) => {
                return Err(KafkaError::Unreachable {
                    at: cfg.endpoint(),
                    timeout_ms: cfg.connect_timeout_ms,
                    detail: e.to_string(),
                });
            }
        };
        if partitions.is_empty() {
            return Err(KafkaError::TopicNotFound { at: cfg.endpoint() });
        }
        consumer
            .subscribe(&[&cfg.topic])
            .map_err(|e| KafkaError::Subscribe {
                at: cfg.endpoint(),
                detail: e.to_string(),
            })?;
        tracing::info!(brokers = %cfg.brokers, topic = %cfg.topic, group = %cfg.group,
            partitions = partitions.len(), "joined the consumer group");
        Ok(KafkaSource {
            consumer,
            cfg: cfg.clone(),
            held: None,
            held_error: None,
            partitions,
        })
    }

    /// The topic's partitions, as the brokers reported them when the source connected.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// The configuration this source was connected with.
    pub fn config(&self) -> &KafkaSourceConfig {
        &self.cfg
    }

    /// Installs (or replaces) the hook run before partitions are revoked; see [`RevokeHook`]
    /// for the contract. Install it before the first [`KafkaSource::poll_batch`].
    pub fn set_revoke_hook(&self, hook: RevokeHook) {
        *lock(&self.consumer.context().hook) = Some(hook);
    }

    /// Takes up to `max` lines (`max` ≥ 1), waiting at most `timeout` for messages to arrive;
    /// messages already fetched are taken even after `timeout`, until `max` is reached.
    ///
    /// Each message payload is one line or several separated by `\n`; a trailing `\r` is
    /// removed and empty lines are skipped, so a message without payload yields no lines but
    /// still advances [`Batch::next_offsets`]. Messages are never split: a message that would
    /// take the batch past `max` starts the next batch instead, and a message with more than
    /// `max` lines makes a batch of its own.
    ///
    /// The group protocol runs inside this call: rebalance events are recorded (see
    /// [`KafkaSource::take_rebalance_events`]) and the revoke hook runs here. An error leaves
    /// the source usable; if lines were already taken, they are returned first and the error
    /// comes with the next call.
    pub fn poll_batch(&mut self, max: usize, timeout: Duration) -> Result<Batch, KafkaError> {
        if let Some(e) = self.held_error.take() {
            return Err(e);
        }
        let max = max.max(1);
        let mut batch = Batch::default();
        drop_revoked(&self.consumer, &mut self.held, &mut batch);
        if let Some(held) = self.held.take() {
            batch.push_message(held.partition, held.offset, held.payload.as_deref());
        }
        let deadline = Instant::now() + timeout;
        while batch.len() < max {
            let polled = self
                .consumer
                .poll(deadline.saturating_duration_since(Instant::now()));
            // A revoke runs inside poll; what was taken of those partitions must go before
            // anything polled after it is added.
            drop_revoked(&self.consumer, &mut self.held, &mut batch);
            match polled {
                // No message: the wait ran out, or the poll served a group event (rdkafka
                // returns early after a rebalance or commit callback).
                None if Instant::now() >= deadline => break,
                None => {}
                Some(Ok(message)) => {
                    let payload = message.payload();
                    let lines = payload.map_or(0, |p| split_lines(p).count());
                    if !batch.is_empty() && batch.len() + lines > max {
                        self.held = Some(Held {
                            partition: message.partition(),
                            offset: message.offset(),
                            payload: payload.map(<[u8]>::to_vec),
                        });
                        break;
                    }
                    batch.push_message(message.partition(), message.offset(), payload);
                }
                Some(Err(e)) => {
                    let error = KafkaError::Consume {
                        at: self.cfg.endpoint(),
                        fatal: matches!(e, RdError::MessageConsumptionFatal(_)),
                        detail: e.to_string(),
                    };
                    tracing::warn!(topic = %self.cfg.topic, group = %self.cfg.group, error = %e, "consumer error");
                    if batch.next_offsets().is_empty() {
                        return Err(error);
                    }
                    self.held_error = Some(error);
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// The assignment changes since the last call, oldest first.
    pub fn take_rebalance_events(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut lock(&self.consumer.context().shared).events)
    }

    /// Commits `(partition, next offset)` pairs for this source's topic and waits for the
    /// broker to confirm. Commit only offsets whose lines are durable: after a crash the group
    /// resumes exactly there. An empty slice commits nothing.
    pub fn commit(&self, offsets: &[(i32, i64)]) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let err = |e: RdError| KafkaError::Commit {
            at: self.cfg.endpoint(),
            offsets: offsets.to_vec(),
            detail: e.to_string(),
        };
        let tpl = offsets_list(&self.cfg.topic, offsets).map_err(err)?;
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(err)
    }

    /// The group's committed `(partition, next offset)` for every partition of the topic that
    /// has one, sorted by partition; asks the broker, waiting at most `timeout` per request.
    pub fn committed(&self, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError> {
        let err = |e: RdError| self.offsets_error("committed offsets", e);
        let partitions = topic_partitions(&self.consumer, &self.cfg.topic, timeout).map_err(err)?;
        let mut request = TopicPartitionList::with_capacity(partitions.len());
        for &p in &partitions {
            request.add_partition(&self.cfg.topic, p);
        }
        // The returned list is dropped here, never kept past the consumer (see NOTES: a live
        // list blocks the consumer's drop).
        let answer = self
            .consumer
            .committed_offsets(request, timeout)
            .map_err(err)?;
        Ok(offsets_of(&answer, &self.cfg.topic))
    }

    /// For every partition of the topic (assigned here or not), its low and high watermarks:
    /// the first offset still stored and the offset the next record will take. One broker
    /// round trip per partition, each bounded by `timeout`.
    pub fn watermarks(&self, timeout: Duration) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
        let err = |e: RdError| self.offsets_error("watermarks", e);
        let partitions = topic_partitions(&self.consumer, &self.cfg.topic, timeout).map_err(err)?;
        partitions
            .into_iter()
            .map(|p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.cfg.topic, p, timeout)
                    .map_err(err)?;
                Ok((p, low, high))
            })
            .collect()
    }

    /// Leaves the group and joins it again. The rebalance this causes is also when a
    /// coordinator that does not act on a session's end by itself (tansu) drops the members
    /// whose session has ended, and hands their partitions to the living. The revoke hook runs
    /// as on any revoke; a message fetched and not yet returned is dropped, never returned or
    /// committed (the partition's next owner reads it).
    pub fn rejoin(&mut self) -> Result<(), KafkaError> {
        self.held = None;
        self.leave(1);
        self.consumer
            .subscribe(&[&self.cfg.topic])
            .map_err(|e| KafkaError::Subscribe {
                at: self.cfg.endpoint(),
                detail: e.to_string(),
            })
    }

    /// The partitions currently assigned to this member, sorted.
    pub fn assignment(&self) -> Result<Vec<i32>, KafkaError> {
        let tpl = self
            .consumer
            .assignment()
            .map_err(|e| self.offsets_error("assignment", e))?;
        Ok(self.consumer.context().partitions(&tpl))
    }

    /// For each assigned partition, the records not yet returned by
    /// [`KafkaSource::poll_batch`]: the high watermark minus the position (or, before the
    /// first message of a partition, minus its committed offset, or its low watermark when
    /// nothing is committed). For metrics; each watermark is a broker round trip bounded by
    /// `timeout`.
    pub fn lag(&self, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError> {
        let err = |what| move |e: RdError| self.offsets_error(what, e);
        let positions = {
            let tpl = self.consumer.position().map_err(err("positions"))?;
            let mut all: Vec<(i32, Option<i64>)> = tpl
                .elements_for_topic(&self.cfg.topic)
                .iter()
                .map(|e| (e.partition(), e.offset().to_raw().filter(|&o| o >= 0)))
                .collect();
            all.sort_unstable();
            all
        };
        let committed = if positions.iter().any(|(_, o)| o.is_none()) {
            self.committed(timeout)?
        } else {
            Vec::new()
        };
        let mut lag = Vec::with_capacity(positions.len());
        for (partition, position) in positions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.cfg.topic, partition, timeout)
                .map_err(err("watermarks"))?;
            let from = position
                .or_else(|| committed.iter().find(|c| c.0 == partition).map(|c| c.1))
                .unwrap_or(low);
            lag.push((partition, (high - from).max(0)));
        }
        Ok(lag)
    }

    fn offsets_error(&self, what: &'static str, e: RdError) -> KafkaError {
        KafkaError::Offsets {
            at: self.cfg.endpoint(),
            what,
            detail: e.to_string(),
        }
    }
}

impl Drop for KafkaSource {
    /// Leaves the group while the group machinery is fully running: unsubscribing revokes the
    /// partitions here, through the revoke hook, rather than during librdkafka's close, where a
    /// rebalance callback can race the group's shutdown and hang the drop.
    fn drop(&mut self) {
        // Serve the revoke, then a little more so no stale group event is left for close.
        self.leave(3);
        tracing::info!(topic = %self.cfg.topic, group = %self.cfg.group, "left the consumer group");
    }
}

impl KafkaSource {
    /// Unsubscribes and polls until no partition has been assigned here for `quiet_polls`
    /// polls in a row (the revoke served), or [`LEAVE_TIMEOUT`]. Messages still arriving are
    /// dropped: never returned, never committed.
    fn leave(&mut self, quiet_polls: u32) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        let mut quiet = 0;
        while quiet < quiet_polls && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
            let assigned = self.consumer.assignment().map_or(0, |tpl| tpl.count());
            quiet = if assigned == 0 { quiet + 1 } else { 0 };
        }
    }
}

/// How long leaving the group ([`KafkaSource`]'s drop, [`KafkaSource::rejoin`]) waits for its
/// partitions to be revoked.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Removes from `batch` and `held` what belongs to partitions revoked since the last look.
fn drop_revoked(
    consumer: &BaseConsumer<SourceContext>,
    held: &mut Option<Held>,
    batch: &mut Batch,
) {
    let revoked = std::mem::take(&mut lock(&consumer.context().shared).revoked);
    if revoked.is_empty() {
        return;
    }
    batch.remove_partitions(&revoked);
    if held
        .as_ref()
        .is_some_and(|h| revoked.contains(&h.partition))
    {
        *held = None;
    }
}

/// The partitions of `topic` by a metadata round trip; empty if the broker does not know it.
fn topic_partitions(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, RdError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

fn offsets_of(tpl: &TopicPartitionList, topic: &str) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = tpl
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(batch: &Batch) -> Vec<(i32, i64, String)> {
        batch
            .lines()
            .map(|l| {
                (
                    l.partition,
                    l.offset,
                    String::from_utf8(l.bytes.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn split_lines_strips_cr_and_skips_empty_lines() {
        let lines: Vec<&[u8]> = split_lines(b"a\r\nb\n\n\r\nc\r").collect();
        assert_eq!(lines, [&b"a"[..], b"b", b"c"]);
        assert_eq!(split_lines(b"").count(), 0);
        assert_eq!(split_lines(b"\n\n").count(), 0);
        assert_eq!(split_lines(b"only").collect::<Vec<_>>(), [&b"only"[..]]);
        // A `\r` inside a line stays; only the one before the line end goes.
        assert_eq!(split_lines(b"x\ry\r\n").collect::<Vec<_>>(), [&b"x\ry"[..]]);
    }

    #[test]
    fn batch_tracks_lines_and_next_offsets_per_partition() {
        let mut batch = Batch::default();
        batch.push_message(2, 10, Some(b"a\nb"));
        batch.push_message(0, 5, None);
        batch.push_message(2, 11, Some(b"\r\n"));
        batch.push_message(1, 0, Some(b"c"));
        assert_eq!(
            texts(&batch),
            [
                (2, 10, "a".to_string()),
                (2, 10, "b".to_string()),
                (1, 0, "c".to_string())
            ]
        );
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.next_offsets(), [(0, 6), (1, 1), (2, 12)]);

        batch.remove_partitions(&[2, 7]);
        assert_eq!(texts(&batch), [(1, 0, "c".to_string())]);
        assert_eq!(batch.next_offsets(), [(0, 6), (1, 1)]);
    }

    #[test]
    fn errors_name_the_endpoint_and_what_to_do() {
        let at = Endpoint::new("127.0.0.1:9", Some("logs"), Some("workers"));
        let e = KafkaError::Unreachable {
            at: at.clone(),
            timeout_ms: 2000,
            detail: "Meta data fetch error: OperationTimedOut (Local: Timed out)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the Kafka broker for topic `logs` (group `workers`) at 127.0.0.1:9 \
             within 2000 ms: Meta data fetch error: OperationTimedOut (Local: Timed out); \
             is the broker running at 127.0.0.1:9?"
        );
        let e = KafkaError::Commit {
            at,
            offsets: vec![(0, 12), (2, 4)],
            detail: "Broker: Unknown member".into(),
        };
        assert_eq!(
            e.to_string(),
            "committing offsets [(0, 12), (2, 4)] for topic `logs` (group `workers`) at \
             127.0.0.1:9 failed: Broker: Unknown member; the previous commit stays in force, \
             so those records will be read again after a restart"
        );
        let e = KafkaError::TopicNotFound {
            at: Endpoint::new("127.0.0.1:9", Some("logs"), None),
        };
        assert_eq!(
            e.to_string(),
            "topic `logs` at 127.0.0.1:9: the topic does not exist on the broker; create it \
             first (logcensus_kafka::create_topic, or `tansu topic create`)"
        );
    }
}
