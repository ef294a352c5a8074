//! One consumer: reading every line with its offsets, resuming from committed offsets, and
//! messages that hold several lines.

use super::*;

#[test]
fn reads_every_line_with_its_partition_and_offset() {
    let Some((_broker, cfg)) = setup(3) else {
        return;
    };
    let produced = produce(&cfg, 0..60);
    let mut source = KafkaSource::connect(&cfg).unwrap();
    let (got, next) = drain(&mut source, 60, Duration::from_secs(20));

    assert_eq!(got.len(), 60);
    assert_eq!(texts(&got), sorted(produced.clone()));

    // Per partition: offsets 0, 1, 2, ... in production order, and one key never spans two
    // partitions.
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    let mut partition_of_key = BTreeMap::new();
    for (p, o, text) in &got {
        let i = produced.iter().position(|l| l == text).unwrap();
        per_partition.entry(*p).or_default().push((*o, i));
        let first = *partition_of_key.entry(key(i)).or_insert(*p);
        assert_eq!(first, *p, "key {:?} in partitions {first} and {p}", key(i));
    }
    assert_eq!(per_partition.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    for (p, seen) in &per_partition {
        let offsets: Vec<i64> = seen.iter().map(|s| s.0).collect();
        let expected: Vec<i64> = (0..seen.len() as i64).collect();
        assert_eq!(offsets, expected, "offsets of partition {p}");
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "order in partition {p}"
        );
        // The next offset a checkpoint would commit is one past the last message.
        assert_eq!(next[p], seen.len() as i64, "next offset of partition {p}");
    }

    assert_eq!(source.assignment().unwrap(), [0, 1, 2]);
    assert_eq!(
        source.lag(Duration::from_secs(5)).unwrap(),
        [(0, 0), (1, 0), (2, 0)]
    );
    assert_quiet(&mut source, Duration::from_millis(600));
}

#[test]
fn resumes_from_committed_offsets_after_reconnect() {
    let Some((_broker, cfg)) = setup(3) else {
        return;
    };
    let first = produce(&cfg, 0..30);
    let mut source = KafkaSource::connect(&cfg).unwrap();
    assert_eq!(source.committed(Duration::from_secs(5)).unwrap(), []);
    let (got, next) = drain(&mut source, 30, Duration::from_secs(20));
    assert_eq!(texts(&got), sorted(first));
    let next: Vec<(i32, i64)> = next.into_iter().collect();
    assert_eq!(next.iter().map(|n| n.1).sum::<i64>(), 30);
    source.commit(&next).unwrap();
    assert_eq!(source.committed(Duration::from_secs(5)).unwrap(), next);
    drop(source);

    // A restarted worker of the same group reads only what came after the commit.
    let second = produce(&cfg, 30..50);
    let mut source = KafkaSource::connect(&cfg).unwrap();
    assert_eq!(source.committed(Duration::from_secs(5)).unwrap(), next);
    let (got, _) = drain(&mut source, 20, Duration::from_secs(20));
    assert_eq!(texts(&got), sorted(second));
    for &(p, committed) in &next {
        let first_offset = got.iter().filter(|g| g.0 == p).map(|g| g.1).min();
        if let Some(first_offset) = first_offset {
            assert_eq!(first_offset, committed, "partition {p} resumed elsewhere");
        }
    }
    assert_quiet(&mut source, Duration::from_millis(600));
}

#[test]
fn splits_messages_into_lines_and_never_splits_a_message_across_batches() {
    let Some((_broker, cfg)) = setup(1) else {
        return;
    };
    let messages: [&[u8]; 5] = [
        b"one",
        b"two\nthree\r\nfour",
        b"",
        b"five\n\nsix\n",
        b"\r\n",
    ];
    produce_lines(&cfg.brokers, &cfg.topic, messages, |_, _| None::<&[u8]>).unwrap();

    let mut source = KafkaSource::connect(&cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut batches: Vec<Vec<(i64, String)>> = Vec::new();
    let mut next = Vec::new();
    while next != [(0, 5)] {
        assert!(Instant::now() < deadline, "batches so far: {batches:?}");
        let batch = source.poll_batch(2, Duration::from_millis(200)).unwrap();
        assert_eq!(batch.lines().len(), batch.len());
        if !batch.is_empty() {
            batches.push(
                batch
                    .lines()
                    .map(|l| (l.offset, String::from_utf8(l.bytes.to_vec()).unwrap()))
                    .collect(),
            );
        }
        if !batch.next_offsets().is_empty() {
            next = batch.next_offsets().to_vec();
        }
    }
    let owned = |v: &[(i64, &str)]| -> Vec<(i64, String)> {
        v.iter().map(|(o, s)| (*o, s.to_string())).collect()
    };
    assert_eq!(
        batches,
        [
            // "two three four" would take the batch past 2 lines: it starts the next one,
            owned(&[(0, "one")]),
            // and, being longer than the maximum, makes a batch of its own.
            owned(&[(1, "two"), (1, "three"), (1, "four")]),
            owned(&[(3, "five"), (3, "six")]),
        ]
    );
    assert_quiet(&mut source, Duration::from_millis(600));
}

#[test]
fn connecting_to_a_missing_topic_says_to_create_it() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let cfg = KafkaSourceConfig::new(broker.brokers(), "no-such-topic", unique_name("group"));
    let err = KafkaSource::connect(&cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "topic `no-such-topic` (group `{}`) at {}: the topic does not exist on the broker; \
             create it first (logcensus_kafka::create_topic, or `tansu topic create`)",
            cfg.group,
            broker.brokers()
        )
    );
}
