//! The one error type of this crate.
//!
//! Every message names the brokers, and the topic and group where there is one, and says what to
//! do. None carries message payloads: log lines hold addresses, and an error may end up in a log.

use std::fmt;

/// Where a Kafka operation was aimed: the brokers, and the topic and consumer group if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The bootstrap brokers as configured, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic, if the operation concerned one.
    pub topic: Option<String>,
    /// The consumer group, if the operation was a consumer's.
    pub group: Option<String>,
}

impl Endpoint {
    pub(crate) fn new(brokers: &str, topic: Option<&str>, group: Option<&str>) -> Self {
        Endpoint {
            brokers: brokers.to_string(),
            topic: topic.map(str::to_string),
            group: group.map(str::to_string),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.topic, &self.group) {
            (Some(t), Some(g)) => write!(f, "topic `{t}` (group `{g}`) at {}", self.brokers),
            (Some(t), None) => write!(f, "topic `{t}` at {}", self.brokers),
            (None, Some(g)) => write!(f, "group `{g}` at {}", self.brokers),
            (None, None) => f.write_str(&self.brokers),
        }
    }
}

/// Why a Kafka operation failed.
///
/// `detail` fields hold librdkafka's own description of the failure (an error code and its
/// text); they never contain record keys or payloads.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client could not be created: a setting was refused.
    #[error("cannot create a Kafka client for {at}: {detail}; check the brokers, topic and group settings")]
    Config { at: Endpoint, detail: String },

    /// No metadata came back from the brokers in time.
    #[error(
        "cannot reach the Kafka broker for {at} within {timeout_ms} ms: {detail}; \
         is the broker running at {brokers}?",
        brokers = at.brokers
    )]
    Unreachable {
        at: Endpoint,
        timeout_ms: u64,
        detail: String,
    },

    /// The broker answered but does not have the topic.
    #[error(
        "{at}: the topic does not exist on the broker; create it first \
         (logcensus_kafka::create_topic, or `tansu topic create`)"
    )]
    TopicNotFound { at: Endpoint },

    /// Subscribing the consumer group to the topic failed.
    #[error("cannot subscribe to {at}: {detail}")]
    Subscribe { at: Endpoint, detail: String },

    /// The consumer reported an error (a broker gone, a partition unreadable). Unless `fatal`,
    /// librdkafka keeps retrying and the source stays usable: poll again.
    #[error(
        "consuming {at} failed: {detail}; {}",
        if *fatal {
            "the client cannot recover: restart the worker (it resumes from the committed offsets)"
        } else {
            "the client retries by itself: keep polling"
        }
    )]
    Consume {
        at: Endpoint,
        /// librdkafka reported the client as unusable.
        fatal: bool,
        detail: String,
    },

    /// A synchronous commit was refused or timed out. Nothing past the previous commit is
    /// recorded, so those records will be read again after a restart or rebalance.
    #[error(
        "committing offsets {offsets:?} for {at} failed: {detail}; \
         the previous commit stays in force, so those records will be read again after a restart"
    )]
    Commit {
        at: Endpoint,
        /// The `(partition, next offset)` pairs that were to be committed.
        offsets: Vec<(i32, i64)>,
        detail: String,
    },

    /// Reading committed offsets, the assignment, positions or watermarks failed.
    #[error("cannot read the {what} of {at}: {detail}")]
    Offsets {
        at: Endpoint,
        /// What was being read: "committed offsets", "assignment", "watermarks", ...
        what: &'static str,
        detail: String,
    },

    /// Producing lines failed: the queue could not take them, or some were not delivered.
    #[error("producing to {at} failed: {detail}")]
    Produce { at: Endpoint, detail: String },

    /// The broker refused to create the topic, or did not answer in time.
    #[error("cannot create {at} with {partitions} partitions: {detail}")]
    CreateTopic {
        at: Endpoint,
        partitions: i32,
        detail: String,
    },
}
