//! Prometheus metrics of a streaming worker, served as text on `--metrics-addr` (`GET
//! /metrics`). Counts and durations only: no label ever holds a value from a log line. The
//! counts are exact and finer than a period: an ops view, not a release. Bind it to a
//! loopback or internal address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Partition {
    partition: i32,
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    pub records: Counter,
    pub parsed: Counter,
    rejected: Family<Reason, Counter>,
    pub late: Counter,
    /// Records read, then dropped before a rebalance for another worker to count.
    pub dropped: Counter,
    lag: Family<Partition, Gauge>,
    pub checkpoint_seconds: Histogram,
    pub publish_seconds: Histogram,
    /// Start of the newest released date (Unix seconds).
    pub newest_released: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("logcensus");
        let m = Metrics {
            records: Counter::default(),
            parsed: Counter::default(),
            rejected: Family::default(),
            late: Counter::default(),
            dropped: Counter::default(),
            lag: Family::default(),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            publish_seconds: Histogram::new(exponential_buckets(0.01, 4.0, 10)),
            newest_released: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records",
            "Records (lines) read from the topic",
            m.records.clone(),
        );
        registry.register("parsed", "Records counted as requests", m.parsed.clone());
        registry.register(
            "rejected",
            "Records rejected, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "late_records",
            "Records whose period had closed when they came (counted, not aggregated)",
            m.late.clone(),
        );
        registry.register(
            "dropped_records",
            "Records read and then dropped before a rebalance, for the partitions' new owners to count (a checkpoint refused by another worker's claim); also in records, parsed, rejected and late",
            m.dropped.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages not yet read, per partition",
            m.lag.clone(),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "Time to write a checkpoint",
            m.checkpoint_seconds.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time to publish closed dates",
            m.publish_seconds.clone(),
        );
        registry.register(
            "newest_released_window",
            "Start of the newest released date, Unix seconds",
            m.newest_released.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a rejected record.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }

    /// Sets a partition's consumer lag.
    pub fn set_lag(&self, partition: i32, lag: i64) {
        self.lag.get_or_create(&Partition { partition }).set(lag);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let metrics = self.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let mut stream = stream;
                    // A client that connects and says nothing must not block the next scrape.
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(2)));
                    // The request line and headers, up to their blank line (or 4 KiB).
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 4096 {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let wanted = request.starts_with(b"GET /metrics ");
                    let (status, body) = if wanted {
                        ("200 OK", metrics.render())
                    } else {
                        ("404 Not Found", "try GET /metrics\n".to_string())
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })?;
        Ok(bound)
    }
}
