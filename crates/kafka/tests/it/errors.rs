//! Failures that must be clear and quick: no broker at the address.

use super::*;
use logcensus_kafka::testing::free_port;
use logcensus_kafka::KafkaError;

#[test]
fn unreachable_broker_is_reported_within_the_connect_timeout() {
    let port = free_port().unwrap();
    let brokers = format!("127.0.0.1:{port}");
    let mut cfg = KafkaSourceConfig::new(&brokers, "logs", "workers");
    cfg.connect_timeout_ms = 2000;
    let started = Instant::now();
    let err = KafkaSource::connect(&cfg).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, KafkaError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    let expected_start = format!(
        "cannot reach the Kafka broker for topic `logs` (group `workers`) at {brokers} within 2000 ms: "
    );
    assert!(text.starts_with(&expected_start), "{text}");
    assert!(
        text.ends_with(&format!("; is the broker running at {brokers}?")),
        "{text}"
    );
    // The connect timeout bounds it, plus leaving the (never joined) group.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn creating_a_topic_without_a_broker_fails_within_bounded_time() {
    let port = free_port().unwrap();
    let brokers = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let err = create_topic(&brokers, "logs", 3).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot create topic `logs` at {brokers} with 3 partitions: "
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("is the broker running at {brokers}?")),
        "{text}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
