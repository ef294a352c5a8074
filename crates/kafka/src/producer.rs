//! Writing to Kafka, for tests and for feeding a topic from files: producing lines and creating
//! topics.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::consumer::log_librdkafka;
use crate::error::{Endpoint, KafkaError};

/// How long a produced message may wait for delivery, and [`produce_lines`] for its final flush.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`create_topic`] waits for the broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts failed deliveries and keeps the first reason (never the record).
#[derive(Default)]
struct DeliveryReport {
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryReport {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: RdError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka producer error");
    }
}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _message)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

/// Produces one message per item of `lines` to `topic`, keyed by `key_of(index, line)` (no key:
/// librdkafka spreads keyless messages over partitions), then waits until every message is
/// delivered. Returns the number of messages.
///
/// An item may hold several newline-separated lines; the consumer splits them. Messages are
/// sent one per request (`batch.num.messages=1`): tansu 0.6 mis-handles a consumer that resumes
/// from an offset inside a stored multi-record batch (it skips the rest of the batch) and
/// reports the high watermark as the last batch's base offset + 1. One record per batch keeps
/// both right, at the cost of throughput, which a test helper can afford.
pub fn produce_lines<'a, I, F, K>(
    brokers: &str,
    topic: &str,
    lines: I,
    mut key_of: F,
) -> Result<usize, KafkaError>
where
    I: IntoIterator<Item = &'a [u8]>,
    F: FnMut(usize, &[u8]) -> Option<K>,
    K: AsRef<[u8]>,
{
    let at = || Endpoint::new(brokers, Some(topic), None);
    let producer: BaseProducer<DeliveryReport> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "logcensus")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .create_with_context(DeliveryReport::default())
        .map_err(|e| KafkaError::Config {
            at: at(),
            detail: e.to_string(),
        })?;

    let mut sent = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let key = key_of(index, line);
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(line);
        if let Some(key) = &key {
            record = record.key(key.as_ref());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports to make room.
                    record = back;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _record)) => {
                    return Err(KafkaError::Produce {
                        at: at(),
                        detail: format!("message {index} was not queued: {e}"),
                    })
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }

    producer
        .flush(DELIVERY_TIMEOUT)
        .map_err(|e| KafkaError::Produce {
            at: at(),
            detail: format!(
                "not all of {sent} messages were delivered within {} s: {e}; \
                 is the broker running at {brokers}?",
                DELIVERY_TIMEOUT.as_secs()
            ),
        })?;
    let report = producer.context();
    let failed = report.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = report
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(KafkaError::Produce {
            at: at(),
            detail: format!(
                "{failed} of {sent} messages were not delivered (first error: {first})"
            ),
        });
    }
    Ok(sent)
}

/// Creates `topic` with `partitions` partitions (replication factor 1) through the Kafka admin
/// API and waits for the broker's answer. tansu 0.6 supports this; an existing topic is an
/// error.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    let err = |detail: String| KafkaError::CreateTopic {
        at: Endpoint::new(brokers, Some(topic), None),
        partitions,
        detail,
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "logcensus")
        .create()
        .map_err(|e| KafkaError::Config {
            at: Endpoint::new(brokers, Some(topic), None),
            detail: e.to_string(),
        })?;
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| err(format!("{e}; is the broker running at {brokers}?")))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(err(format!("the broker answered {code}")));
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread. The admin client's futures are completed by
/// its own background thread, so no runtime is needed, only a waker that unparks us.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}
