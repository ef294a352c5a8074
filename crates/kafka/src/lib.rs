//! Kafka as a source of log lines: a consumer-group member that hands out batches of lines with
//! the `(partition, offset)` of their messages, commits offsets only when told (after the
//! output that reflects them is durable), reports partition assignment changes and lets the
//! caller checkpoint before partitions are revoked. Also a producer helper, topic creation, and
//! a real test broker ([`testing::TestBroker`], tansu on loopback).
//!
//! This crate owns the rdkafka dependency (bundled librdkafka); nothing else in the workspace
//! talks to Kafka directly. It is synchronous: [`KafkaSource::poll_batch`] polls librdkafka on
//! the caller's thread, and the group protocol (heartbeats aside) runs inside that call.
//!
//! ```no_run
//! use std::time::Duration;
//! use logcensus_kafka::{KafkaSource, KafkaSourceConfig};
//!
//! let cfg = KafkaSourceConfig::new("127.0.0.1:9092", "access-logs", "logcensus-daily");
//! let mut source = KafkaSource::connect(&cfg)?;
//! loop {
//!     let batch = source.poll_batch(1000, Duration::from_millis(500))?;
//!     for line in batch.lines() {
//!         // parse and aggregate line.bytes ...
//!         let _ = (line.partition, line.offset, line.bytes);
//!     }
//!     // ... make the aggregates durable, then:
//!     source.commit(batch.next_offsets())?;
//! }
//! # Ok::<(), logcensus_kafka::KafkaError>(())
//! ```

mod consumer;
mod error;
mod producer;
pub mod testing;

pub use consumer::{Batch, KafkaSource, KafkaSourceConfig, Line, RebalanceEvent, RevokeHook};
pub use error::{Endpoint, KafkaError};
pub use producer::{create_topic, produce_lines};
