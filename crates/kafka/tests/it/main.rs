//! Integration tests against a real Kafka-API broker (tansu on loopback, one per test).
//! Without tansu they print "tansu not installed; skipping" and pass, unless
//! `LOGCENSUS_REQUIRE_BROKER=1`.

mod consume;
mod errors;
mod rebalance;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use logcensus_kafka::testing::{unique_name, TestBroker};
use logcensus_kafka::{create_topic, produce_lines, KafkaSource, KafkaSourceConfig};

/// One consumed line: partition, offset, text.
type Got = (i32, i64, String);

/// A broker with a fresh topic of `partitions` partitions, and a fresh group name.
fn setup(partitions: i32) -> Option<(TestBroker, KafkaSourceConfig)> {
    let broker = TestBroker::start()?;
    let topic = unique_name("logs");
    create_topic(&broker.brokers(), &topic, partitions).unwrap();
    let cfg = KafkaSourceConfig::new(broker.brokers(), topic, unique_name("group"));
    Some((broker, cfg))
}

/// A plausible access-log line; `i` makes it unique.
fn access_line(i: usize) -> String {
    format!(
        "192.0.2.{} - - [10/Oct/2024:13:55:{:02} +0000] \"GET /page/{i} HTTP/1.1\" 200 {}",
        i % 250,
        i % 60,
        100 + i
    )
}

/// The key of line `i`: seven keys, so every partition of a 3-partition topic gets some.
fn key(i: usize) -> Option<String> {
    Some(format!("host-{}", i % 7))
}

/// Produces `access_line(i)` for each `i` in `range`, keyed by `key(i)`.
fn produce(cfg: &KafkaSourceConfig, range: std::ops::Range<usize>) -> Vec<String> {
    let lines: Vec<String> = range.clone().map(access_line).collect();
    let sent = produce_lines(
        &cfg.brokers,
        &cfg.topic,
        lines.iter().map(|l| l.as_bytes()),
        |i, _| key(range.start + i),
    )
    .unwrap();
    assert_eq!(sent, lines.len());
    lines
}

/// Polls until `want` lines came (failing after `within`), then returns them and the batches'
/// next offsets merged.
fn drain(
    source: &mut KafkaSource,
    want: usize,
    within: Duration,
) -> (Vec<Got>, BTreeMap<i32, i64>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut next = BTreeMap::new();
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} lines within {within:?}",
            got.len()
        );
        let batch = source.poll_batch(50, Duration::from_millis(200)).unwrap();
        got.extend(batch.lines().map(|l| {
            (
                l.partition,
                l.offset,
                String::from_utf8(l.bytes.to_vec()).unwrap(),
            )
        }));
        for &(p, o) in batch.next_offsets() {
            next.insert(p, o);
        }
    }
    (got, next)
}

/// Polls for `for_` and asserts that no line comes.
fn assert_quiet(source: &mut KafkaSource, for_: Duration) {
    let deadline = Instant::now() + for_;
    while Instant::now() < deadline {
        let batch = source.poll_batch(50, Duration::from_millis(200)).unwrap();
        let extra: Vec<i64> = batch.lines().map(|l| l.offset).collect();
        assert!(extra.is_empty(), "unexpected lines at offsets {extra:?}");
    }
}

fn texts(got: &[Got]) -> Vec<String> {
    let mut t: Vec<String> = got.iter().map(|g| g.2.clone()).collect();
    t.sort();
    t
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
