//! Two members of one group: the second one's join moves partitions away from the first, which
//! checkpoints through its revoke hook; between them they read every line exactly once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use logcensus_kafka::RebalanceEvent;

use super::*;

/// A group member polling on its own thread, as a pipeline worker would.
struct Member {
    name: &'static str,
    seen: Arc<Mutex<Vec<Got>>>,
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// How a member makes its progress durable.
#[derive(Clone, Copy)]
enum Commits {
    /// After every batch.
    EachBatch,
    /// Only from the revoke hook (which also runs when the member leaves): if the hook's
    /// commit did not happen, the partitions' next owner would read them again.
    OnRevoke,
}

impl Member {
    fn start(name: &'static str, cfg: &KafkaSourceConfig, commits: Commits) -> Member {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cfg, seen, events, stop) =
                (cfg.clone(), seen.clone(), events.clone(), stop.clone());
            thread::spawn(move || {
                let mut source = KafkaSource::connect(&cfg).unwrap();
                // What this member has processed but not committed: partition → next offset.
                let processed = Arc::new(Mutex::new(BTreeMap::<i32, i64>::new()));
                if let Commits::OnRevoke = commits {
                    let processed = processed.clone();
                    source.set_revoke_hook(Box::new(move |revoked| {
                        let mut processed = processed.lock().unwrap();
                        revoked
                            .iter()
                            .filter_map(|p| processed.remove(p).map(|o| (*p, o)))
                            .collect()
                    }));
                }
                while !stop.load(Ordering::Relaxed) {
                    let batch = source.poll_batch(7, Duration::from_millis(100)).unwrap();
                    seen.lock().unwrap().extend(batch.lines().map(|l| {
                        (
                            l.partition,
                            l.offset,
                            String::from_utf8(l.bytes.to_vec()).unwrap(),
                        )
                    }));
                    match commits {
                        Commits::EachBatch => source.commit(batch.next_offsets()).unwrap(),
                        Commits::OnRevoke => processed
                            .lock()
                            .unwrap()
                            .extend(batch.next_offsets().iter().copied()),
                    }
                    events
                        .lock()
                        .unwrap()
                        .extend(source.take_rebalance_events());
                }
                // Leaving the group revokes everything: the hook commits the rest.
            })
        };
        Member {
            name,
            seen,
            events,
            stop,
            thread,
        }
    }

    fn seen(&self) -> Vec<Got> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<RebalanceEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The partitions held now: the last event's, if it is an assignment.
    fn assignment(&self) -> Vec<i32> {
        match self.events().last() {
            Some(RebalanceEvent::Assigned(p)) => p.clone(),
            _ => Vec::new(),
        }
    }

    fn check_alive(&self) {
        assert!(
            !self.thread.is_finished(),
            "member {} stopped early",
            self.name
        );
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(panic) = self.thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

fn wait_until(what: &str, within: Duration, members: &[&Member], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        for m in members {
            m.check_alive();
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_joining_member_takes_partitions_and_every_line_is_read_exactly_once() {
    let Some((_broker, cfg)) = setup(3) else {
        return;
    };
    let mut expected = produce(&cfg, 0..90);

    let a = Member::start("a", &cfg, Commits::OnRevoke);
    wait_until(
        "a read the first 90 lines",
        Duration::from_secs(15),
        &[&a],
        || a.seen().len() == 90,
    );
    assert_eq!(a.events(), [RebalanceEvent::Assigned(vec![0, 1, 2])]);

    // b joins while more lines arrive.
    let b = Member::start("b", &cfg, Commits::EachBatch);
    expected.extend(produce(&cfg, 90..150));
    wait_until(
        "the partitions were split",
        Duration::from_secs(20),
        &[&a, &b],
        || {
            let (pa, pb) = (a.assignment(), b.assignment());
            !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3
        },
    );
    let (pa, pb) = (a.assignment(), b.assignment());
    let all: BTreeSet<i32> = pa.iter().chain(&pb).copied().collect();
    assert_eq!(all, BTreeSet::from([0, 1, 2]), "a has {pa:?}, b has {pb:?}");

    // Lines produced after the split go to both.
    expected.extend(produce(&cfg, 150..210));
    wait_until(
        "all 210 lines were read",
        Duration::from_secs(20),
        &[&a, &b],
        || a.seen().len() + b.seen().len() >= 210,
    );
    // Give duplicates, if any, time to show up.
    thread::sleep(Duration::from_millis(1000));
    let (a_events, b_events) = (a.events(), b.events());
    let (a_seen, b_seen) = (a.seen(), b.seen());
    a.stop();
    b.stop();

    let mut all_seen: Vec<Got> = a_seen.iter().chain(&b_seen).cloned().collect();
    assert_eq!(all_seen.len(), 210, "lines read twice or lost");
    assert_eq!(texts(&all_seen), sorted(expected));
    all_seen.sort_by_key(|g| (g.0, g.1));
    all_seen.dedup_by_key(|g| (g.0, g.1));
    assert_eq!(all_seen.len(), 210, "an offset was delivered twice");

    // a's first assignment was revoked before the split (the eager protocol revokes all).
    assert_eq!(a_events[0], RebalanceEvent::Assigned(vec![0, 1, 2]));
    assert!(
        a_events.contains(&RebalanceEvent::Revoked(vec![0, 1, 2])),
        "{a_events:?}"
    );
    for event in a_events.iter().chain(&b_events) {
        assert!(
            !matches!(event, RebalanceEvent::RevokeCommitFailed { .. }),
            "{event:?}"
        );
    }
    // After the split each member read only its own partitions.
    let late = |seen: &[Got]| -> BTreeSet<i32> {
        seen.iter()
            .filter(|g| expected_index(&g.2) >= 150)
            .map(|g| g.0)
            .collect()
    };
    assert!(late(&a_seen).is_subset(&pa.iter().copied().collect()));
    assert_eq!(
        late(&b_seen),
        pb.iter().copied().collect(),
        "b read every partition it holds"
    );

    // Both left, having committed everything: a new member of the group has nothing to read,
    // and the committed offsets add up to every message.
    let mut c = KafkaSource::connect(&cfg).unwrap();
    assert_quiet(&mut c, Duration::from_secs(4));
    assert_eq!(c.assignment().unwrap(), [0, 1, 2]);
    let committed = c.committed(Duration::from_secs(5)).unwrap();
    assert_eq!(
        committed.iter().map(|c| c.1).sum::<i64>(),
        210,
        "{committed:?}"
    );
    assert_eq!(
        c.lag(Duration::from_secs(5)).unwrap(),
        [(0, 0), (1, 0), (2, 0)]
    );
}

/// The `i` of `access_line(i)`.
fn expected_index(line: &str) -> usize {
    let start = line.find("/page/").unwrap() + "/page/".len();
    let end = start + line[start..].find(' ').unwrap();
    line[start..end].parse().unwrap()
}

#[test]
fn lines_taken_before_a_revoke_in_the_same_poll_are_not_returned() {
    let Some((_broker, cfg)) = setup(3) else {
        return;
    };
    produce(&cfg, 0..30);
    let mut a = KafkaSource::connect(&cfg).unwrap();
    let (first, next) = drain(&mut a, 30, Duration::from_secs(15));
    assert_eq!(first.len(), 30);
    // a processed the first 30 lines; its hook commits them when partitions go.
    let processed: Vec<(i32, i64)> = next.into_iter().collect();
    a.set_revoke_hook(Box::new(move |revoked| {
        processed
            .iter()
            .filter(|(p, _)| revoked.contains(p))
            .copied()
            .collect()
    }));
    assert_eq!(
        a.take_rebalance_events(),
        [RebalanceEvent::Assigned(vec![0, 1, 2])]
    );

    let expected = produce(&cfg, 30..60);
    // Let a's client prefetch the new lines, so its next poll takes them at once.
    thread::sleep(Duration::from_millis(1000));
    // b joins; the group protocol runs on b's client threads, so the group asks a to give
    // its partitions up while a is inside the long poll below, holding the new lines.
    let mut b = KafkaSource::connect(&cfg).unwrap();
    let batch = a.poll_batch(1000, Duration::from_secs(8)).unwrap();
    let events = a.take_rebalance_events();
    assert_eq!(
        events[0],
        RebalanceEvent::Revoked(vec![0, 1, 2]),
        "{events:?}"
    );
    let Some(RebalanceEvent::Assigned(kept)) = events.last() else {
        panic!("a was not assigned again within the poll: {events:?}")
    };
    let mut got: Vec<Got> = batch
        .lines()
        .map(|l| {
            (
                l.partition,
                l.offset,
                String::from_utf8(l.bytes.to_vec()).unwrap(),
            )
        })
        .collect();
    // Everything the batch returns comes from partitions a holds after the revoke, read from
    // the offsets committed by the hook, each once.
    assert!(got.iter().all(|g| kept.contains(&g.0)), "{kept:?}: {got:?}");
    let partitions_of_a = got.len();

    // b reads the rest.
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < 30 {
        assert!(Instant::now() < deadline, "only {} of 30 lines", got.len());
        for source in [&mut a, &mut b] {
            let batch = source.poll_batch(50, Duration::from_millis(100)).unwrap();
            got.extend(batch.lines().map(|l| {
                (
                    l.partition,
                    l.offset,
                    String::from_utf8(l.bytes.to_vec()).unwrap(),
                )
            }));
            source.commit(batch.next_offsets()).unwrap();
        }
    }
    assert_quiet(&mut a, Duration::from_millis(500));
    assert_quiet(&mut b, Duration::from_millis(500));
    assert_eq!(got.len(), 30, "lines read twice");
    assert_eq!(texts(&got), sorted(expected));
    assert!(partitions_of_a < 30, "b got no partition");
}
