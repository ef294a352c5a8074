//! Streaming against a real Kafka-API broker (tansu, on a loopback port): worker processes in
//! one consumer group, killed and restarted, joining and leaving; after `publish --all` the
//! tables equal those of `logcensus run --input` over the same lines.

use super::*;
use logcensus_fixtures::logs::{generate, LogOptions};
use logcensus_kafka::testing::{unique_name, TestBroker};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TABLES: [&str; 4] = [
    "traffic_by_region",
    "clients",
    "referrers",
    "traffic_quality",
];

/// A broker, a 3-partition topic, a log, and the pipeline file that streams it.
struct Job {
    dir: tempfile::TempDir,
    broker: TestBroker,
    topic: String,
    #[allow(dead_code)] // kept for failure messages
    group: String,
    pipeline: PathBuf,
    out: PathBuf,
    input: PathBuf,
    lines: Vec<Vec<u8>>,
}

/// Seconds of the day of a combined log line's `[dd/Mon/yyyy:HH:MM:SS +0000]`, if it has one.
fn second_of_day(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let t = &text[text.find('[')? + 1..];
    let clock = t.split(':').skip(1).take(3).collect::<Vec<_>>();
    if clock.len() < 3 {
        return None;
    }
    let h: u32 = clock[0].parse().ok()?;
    let m: u32 = clock[1].parse().ok()?;
    let s: u32 = clock[2].get(..2)?.parse().ok()?;
    Some(h * 3600 + m * 60 + s)
}

fn setup(lines: u64) -> Option<Job> {
    let broker = TestBroker::start()?;
    let topic = unique_name("lc-stream");
    let group = unique_name("lc-group");
    logcensus_kafka::create_topic(&broker.brokers(), &topic, 3).unwrap();
    let log = generate(&LogOptions {
        lines,
        seed: 4242,
        span: 3 * 86_400,
        visitors: 400,
        malformed: 0.02,
        ..LogOptions::default()
    })
    .unwrap();
    // A rejected line has no time of its own: it counts in the period of the line before it,
    // which for Kafka is the line before it in its partition. Near midnight the two can fall on
    // different days, so the test keeps rejected lines away from midnight.
    let mut kept = Vec::new();
    let mut last_good: Option<u32> = None;
    for line in log.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let good = second_of_day(line).is_some() && line.ends_with(b"\"");
        if good {
            last_good = second_of_day(line);
            kept.push(line.to_vec());
        } else if last_good.is_some_and(|s| (3_600..86_400 - 3_600).contains(&s)) {
            kept.push(line.to_vec());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    let mut text = kept.join(&b'\n');
    text.push(b'\n');
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    let pipeline = pipeline(
        dir.path(),
        "stream-test",
        &format!(
            "[source]\nformat = \"combined\"\n\n[source.kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nallowed_lateness = \"1h\"\ncheckpoint_interval = \"1s\"\n\n\
             [geoip]\ndatabase = \"{}\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"include\"\nown_domains = [\"example.com\"]\n",
            broker.brokers(),
            test_mmdb().display()
        ),
    );
    Some(Job {
        dir,
        broker,
        topic,
        group,
        pipeline,
        out,
        input,
        lines: kept,
    })
}

impl Job {
    /// Produces lines `range` keyed by client address (the first field).
    fn produce(&self, range: std::ops::Range<usize>) {
        let n = logcensus_kafka::produce_lines(
            &self.broker.brokers(),
            &self.topic,
            self.lines[range.clone()].iter().map(|l| l.as_slice()),
            |_, line| line.split(|&b| b == b' ').next().map(|k| k.to_vec()),
        )
        .unwrap();
        assert_eq!(n, range.len());
    }

    /// Starts a worker process.
    fn worker(&self, id: &str, envs: &[(&str, &str)]) -> Child {
        self.worker_with(id, envs, &[])
    }

    /// Starts a worker process with extra arguments; `--exit-when-idle 6s` unless they say
    /// otherwise.
    fn worker_with(&self, id: &str, envs: &[(&str, &str)], extra: &[&str]) -> Child {
        let idle: &[&str] = if extra.contains(&"--exit-when-idle") {
            &[]
        } else {
            &["--exit-when-idle", "6s"]
        };
        let mut c = Command::new(env!("CARGO_BIN_EXE_logcensus"));
        c.args([
            "run",
            "--pipeline",
            self.pipeline.to_str().unwrap(),
            "--out",
            self.out.to_str().unwrap(),
            "--worker-id",
            id,
        ])
        .args(idle)
        .args(extra)
        .env("LOGCENSUS_VISITOR_KEY_FILE", visitor_key_file())
        .env_remove("LOGCENSUS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }

    /// Partial files under `_state/` so far.
    fn partials(&self) -> usize {
        std::fs::read_dir(self.out.join("_state/partials"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                    .count()
            })
            .unwrap_or(0)
    }

    fn wait_for_partials(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.partials() < n {
            assert!(Instant::now() < deadline, "no checkpoint within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `logcensus publish` of this job's output (`--all` or not); its output.
    fn publish(&self, all: bool) -> String {
        let mut args = vec![
            "publish",
            "--pipeline",
            self.pipeline.to_str().unwrap(),
            "--out",
            self.out.to_str().unwrap(),
        ];
        if all {
            args.push("--all");
        }
        ok(&logcensus(&args))
    }

    /// `publish --all`, then the tables compared with a batch run over the same lines.
    fn assert_equals_batch(&self) {
        let published = self.publish(true);
        assert!(published.contains("published 2026-"), "{published}");
        let batch = self.dir.path().join("batch");
        ok(&logcensus(&[
            "run",
            "--pipeline",
            self.pipeline.to_str().unwrap(),
            "--input",
            self.input.to_str().unwrap(),
            "--out",
            batch.to_str().unwrap(),
        ]));
        for table in TABLES {
            let (s, b) = (rows(&self.out, table), rows(&batch, table));
            assert!(!b.is_empty());
            assert_eq!(s, b, "{table}: stream and batch differ");
        }
        assert_eq!(
            sum(&self.out, "traffic_quality", "requests")
                + sum(&self.out, "traffic_quality", "rejected_lines"),
            self.lines.len() as i64,
            "every line counted once"
        );
        // The output holds private state: the audit refuses it as a release; the tables alone
        // pass.
        let audit = |dir: &Path| {
            logcensus(&[
                "audit",
                dir.to_str().unwrap(),
                "--pipeline",
                self.pipeline.to_str().unwrap(),
            ])
        };
        let with_state = audit(&self.out);
        assert_eq!(with_state.status.code(), Some(1));
        assert!(
            text(&with_state).contains("private streaming state"),
            "{}",
            text(&with_state)
        );
        let export = self.dir.path().join("export");
        for table in TABLES {
            copy_dir(&self.out.join(table), &export.join(table));
        }
        let clean = audit(&export);
        assert!(text(&clean).contains(", 0 violations"), "{}", text(&clean));
        // Publishing again changes nothing.
        let again = self.publish(true);
        assert!(again.contains("nothing to publish"), "{again}");
    }
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "worker failed:\n{t}");
    t
}

#[test]
fn a_worker_killed_mid_stream_and_restarted_counts_every_record_once() {
    let Some(job) = setup(6_000) else { return };
    let n = job.lines.len();
    // The killed worker keeps its partitions until its session times out (6 s), and with
    // tansu until the next rebalance after that: idle workers stay while the topic holds
    // records the state does not cover, and join the group again to cause that rebalance.
    job.produce(0..n / 2);
    let mut w1 = job.worker("w1", &[]);
    let w2 = job.worker("w2", &[]);
    job.wait_for_partials(1);
    // More records arrive while w1 is killed without warning.
    w1.kill().unwrap(); // SIGKILL
    w1.wait().unwrap();
    job.produce(n / 2..n);
    let w1 = job.worker("w1", &[]);
    finish(w1);
    finish(w2);
    job.assert_equals_batch();
}

#[test]
fn a_crash_between_checkpoint_and_commit_counts_nothing_twice() {
    let Some(job) = setup(3_000) else { return };
    job.produce(0..job.lines.len());
    // The fail point aborts right after the first partial is durable, before its offsets are
    // committed: the restarted worker reads those records again and must skip them.
    let crashed = job
        .worker("w1", &[("LOGCENSUS_FAILPOINT", "after-partial")])
        .wait_with_output()
        .unwrap();
    assert!(!crashed.status.success());
    assert!(
        text(&crashed).contains("fail point after-partial"),
        "{}",
        text(&crashed)
    );
    assert_eq!(job.partials(), 1);
    let restarted = finish(job.worker("w1", &[]));
    assert!(
        restarted.contains("already counted before a restart"),
        "{restarted}"
    );
    let skipped: u64 = restarted
        .split(" already counted")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        skipped > 0,
        "the restarted worker skipped the records of the uncommitted partial: {restarted}"
    );
    job.assert_equals_batch();
}

#[test]
fn a_worker_joining_and_another_leaving_hand_over_cleanly() {
    let Some(job) = setup(6_000) else { return };
    let n = job.lines.len();
    job.produce(0..n / 3);
    let w1 = job.worker("w1", &[]);
    job.wait_for_partials(1);
    let w2 = job.worker("w2", &[]); // joins: a rebalance moves partitions to it
    job.produce(n / 3..2 * n / 3);
    std::thread::sleep(Duration::from_secs(3));
    // w1 leaves on SIGTERM: it checkpoints, commits and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &w1.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let left = finish(w1);
    assert!(left.contains("stop requested"), "{left}");
    job.produce(2 * n / 3..n);
    finish(w2);
    job.assert_equals_batch();
}

#[test]
fn metrics_are_served_and_count_records() {
    let Some(job) = setup(1_000) else { return };
    job.produce(0..job.lines.len());
    let port = logcensus_kafka::testing::free_port().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_logcensus"));
    let child = c
        .args([
            "run",
            "--pipeline",
            job.pipeline.to_str().unwrap(),
            "--out",
            job.out.to_str().unwrap(),
            "--exit-when-idle",
            "6s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("LOGCENSUS_VISITOR_KEY_FILE", visitor_key_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    job.wait_for_partials(1);
    // Consumer lag is measured after each checkpoint: wait for the first measurement.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut body = http_get(port, "/metrics");
    while !body.contains("logcensus_consumer_lag{") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        body = http_get(port, "/metrics");
    }
    let records: u64 = body
        .lines()
        .find(|l| l.starts_with("logcensus_records_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records counter in:\n{body}"));
    assert!(records > 0 && records <= job.lines.len() as u64, "{body}");
    for name in [
        "logcensus_parsed_total",
        "logcensus_late_records_total",
        "logcensus_checkpoint_duration_seconds_count",
        "logcensus_consumer_lag{partition=\"0\"}",
        "logcensus_consumer_lag{partition=\"2\"}",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    assert!(
        !body.contains("203.0.113") && !body.contains("Mozilla"),
        "no log values in metrics"
    );
    finish(child);
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn late_records_are_counted_not_aggregated_and_closed_days_publish_first() {
    let Some(job) = setup(3_000) else { return };
    // One partition, so the order of records is the order produced.
    let topic = unique_name("lc-late");
    logcensus_kafka::create_topic(&job.broker.brokers(), &topic, 1).unwrap();
    let text = std::fs::read_to_string(&job.pipeline)
        .unwrap()
        .replace(&job.topic, &topic);
    std::fs::write(&job.pipeline, text).unwrap();
    // Five parsed lines of the first day are held back and sent after the third day's: by then
    // their day ended more than the allowed hour before the partition's newest record.
    let good: Vec<usize> = (0..job.lines.len())
        .filter(|&i| job.lines[i].ends_with(b"\"") && second_of_day(&job.lines[i]).is_some())
        .take(5)
        .collect();
    let mut order: Vec<&[u8]> = (0..job.lines.len())
        .filter(|i| !good.contains(i))
        .map(|i| job.lines[i].as_slice())
        .collect();
    order.extend(good.iter().map(|&i| job.lines[i].as_slice()));
    logcensus_kafka::produce_lines(&job.broker.brokers(), &topic, order, |_, _| None::<Vec<u8>>)
        .unwrap();
    let streamed = finish(job.worker("w1", &[]));
    assert!(streamed.contains(" 5 late,"), "{streamed}");

    // Without --all, only the days every partition's watermark has passed (by the lateness).
    let first = job.publish(false);
    assert!(
        first.contains("published 2026-05-17, 2026-05-18"),
        "{first}"
    );
    assert!(first.contains("still open: 2026-05-19"), "{first}");
    let days = |out: &Path| -> Vec<String> {
        let mut d: Vec<String> = rows(out, "traffic_quality")
            .iter()
            .map(|r| get(r, "period_start")[..10].to_string())
            .collect();
        d.dedup();
        d
    };
    assert_eq!(days(&job.out), ["2026-05-17", "2026-05-18"]);
    let all = job.publish(true);
    assert!(all.contains("published 2026-05-19"), "{all}");
    // The late records are in late_records (of the day they came), not in any count.
    assert_eq!(sum(&job.out, "traffic_quality", "late_records"), 5);
    assert_eq!(
        sum(&job.out, "traffic_quality", "requests")
            + sum(&job.out, "traffic_quality", "rejected_lines")
            + 5,
        job.lines.len() as i64
    );
    let late_day = rows(&job.out, "traffic_quality")
        .into_iter()
        .find(|r| get(r, "late_records") != "0")
        .unwrap();
    assert!(
        get(&late_day, "period_start").starts_with("2026-05-19"),
        "{late_day:?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_dp_stream_publishes_each_date_once_through_staging() {
    let Some(job) = setup(2_000) else { return };
    let dp_pipeline = std::fs::read_to_string(&job.pipeline).unwrap().replace(
        "tables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]",
        "tables = [\"clients\", \"referrers\"]",
    ) + "\n[release]\nmin_visitors = 5\nmax_rows_per_visitor = 2\nmax_requests_per_row = 20\n[release.dp]\nmechanism = \"laplace\"\nepsilon = 4.0\ndelta = 1e-6\n";
    std::fs::write(&job.pipeline, dp_pipeline).unwrap();
    job.produce(0..job.lines.len());
    finish(job.worker("w1", &[]));
    let first = job.publish(true);
    assert!(
        first.contains("published 2026-05-17, 2026-05-18, 2026-05-19"),
        "{first}"
    );
    assert!(!job.out.join("_state/staging").exists(), "staging emptied");
    let clients = rows(&job.out, "clients");
    assert!(!clients.is_empty());
    assert!(clients
        .iter()
        .all(|r| get(r, "visitors").parse::<i64>().unwrap() >= 5));
    let before: Vec<u8> =
        std::fs::read(job.out.join("clients/date=2026-05-18/part-00000.parquet")).unwrap();
    // Published once: the same noisy file stays, nothing is drawn again.
    assert!(job.publish(true).contains("nothing to publish"));
    // A publish killed after marking its dates but before moving their files leaves them in
    // staging: the next publish moves them into place (the noise drawn once).
    let staged = job.out.join("_state/staging/clients/date=2026-05-20");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("part-00000.parquet"), &before).unwrap();
    assert!(job.publish(true).contains("nothing to publish"));
    assert_eq!(
        std::fs::read(job.out.join("clients/date=2026-05-20/part-00000.parquet")).unwrap(),
        before
    );
    assert!(!job.out.join("_state/staging").exists());
    std::fs::remove_dir_all(job.out.join("clients/date=2026-05-20")).unwrap();
    assert_eq!(
        std::fs::read(job.out.join("clients/date=2026-05-18/part-00000.parquet")).unwrap(),
        before
    );
    let export = job.dir.path().join("export");
    for table in ["clients", "referrers"] {
        copy_dir(&job.out.join(table), &export.join(table));
    }
    let audit = logcensus(&[
        "audit",
        export.to_str().unwrap(),
        "--pipeline",
        job.pipeline.to_str().unwrap(),
    ]);
    assert!(text(&audit).contains(", 0 violations"), "{}", text(&audit));
}

#[test]
fn a_worker_started_with_publish_releases_closed_days_itself() {
    let Some(job) = setup(2_000) else { return };
    job.produce(0..job.lines.len());
    finish(job.worker_with("w1", &[], &["--publish"]));
    // The log spans 17-19 May: every partition's watermark is on the 19th, so the 17th and
    // 18th are closed (end + 1 h lateness passed) and the 19th is still open.
    let days: std::collections::BTreeSet<String> = rows(&job.out, "traffic_quality")
        .iter()
        .map(|r| get(r, "period_start")[..10].to_string())
        .collect();
    assert_eq!(
        days.into_iter().collect::<Vec<_>>(),
        ["2026-05-17", "2026-05-18"]
    );
    assert!(job.publish(true).contains("published 2026-05-19"));
}
