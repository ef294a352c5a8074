use std::collections::BTreeSet;

use super::*;

fn s(v: &str) -> Str {
    Str::from(v)
}

fn place(country: &str, region: &str) -> Arc<Place> {
    Arc::new(Place {
        continent: Some(s("EU")),
        country: Some(s(country)),
        region: Some(s(region)),
    })
}

fn client(browser: &str, crawler: bool) -> Arc<ClientClass> {
    Arc::new(ClientClass {
        device: s(if crawler { "crawler" } else { "pc" }),
        os: s("Linux"),
        os_version: None,
        browser: s(browser),
        browser_version: Some(s("120")),
        crawler,
        unknown: false,
        empty: false,
    })
}

const DAY: i64 = 1_431_820_800; // 2015-05-17T00:00:00Z

fn ints_of(t: &TableOut, col: &str) -> Vec<i64> {
    match &t.columns.iter().find(|(n, _)| *n == col).unwrap().1 {
        Column::Int(v) => v.clone(),
        other => panic!("{col} is {other:?}"),
    }
}

fn strs_of(t: &TableOut, col: &str) -> Vec<Option<String>> {
    match &t.columns.iter().find(|(n, _)| *n == col).unwrap().1 {
        Column::Str(v) => v.iter().map(|x| x.as_deref().map(str::to_string)).collect(),
        other => panic!("{col} is {other:?}"),
    }
}

struct Feed {
    de: Arc<Place>,
    fr: Arc<Place>,
    ff: Arc<ClientClass>,
    bot: Arc<ClientClass>,
}

/// (hour offset, visitor, place, client, referrer, status, bytes)
type Row<'a> = (
    i64,
    u64,
    &'a Arc<Place>,
    &'a Arc<ClientClass>,
    &'a str,
    u16,
    u64,
);

fn feed(a: &mut Aggregates, f: &Feed, which: std::ops::Range<usize>) {
    let rows: Vec<Row> = vec![
        (1, 1, &f.de, &f.ff, "google.com", 200, 100),
        (2, 1, &f.de, &f.ff, "(internal)", 200, 50),
        (3, 2, &f.de, &f.ff, "google.com", 404, 0),
        (4, 3, &f.fr, &f.ff, "(direct)", 301, 10),
        (5, 9, &f.fr, &f.bot, "(direct)", 200, 1000),
        (30, 1, &f.de, &f.ff, "google.com", 503, 7), // next day
    ];
    for (h, v, p, c, r, st, b) in &rows[which] {
        a.observe(&Observation {
            time: DAY + h * 3600,
            visitor: *v,
            origin: Origin::Place(p, true),
            client: c,
            referrer: &Str::from(*r),
            status: Some(*st),
            bytes: *b,
        });
    }
}

fn fixture() -> Feed {
    Feed {
        de: place("DE", "DE-BY"),
        fr: place("FR", "FR-IDF"),
        ff: client("Firefox", false),
        bot: client("Googlebot", true),
    }
}

#[test]
fn hand_computed_tables_with_crawlers_excluded() {
    let f = fixture();
    let mut a = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    feed(&mut a, &f, 0..6);
    let t = a.finish(&TableName::ALL);
    let traffic = &t[0];
    assert_eq!(
        strs_of(traffic, "region"),
        [
            Some("DE-BY".into()),
            Some("FR-IDF".into()),
            Some("DE-BY".into())
        ]
    );
    assert_eq!(ints_of(traffic, "requests"), [3, 1, 1]);
    assert_eq!(ints_of(traffic, "visitors"), [2, 1, 1]);
    assert_eq!(ints_of(traffic, "bytes"), [150, 10, 7]);
    let clients = &t[1];
    assert_eq!(
        strs_of(clients, "browser"),
        [Some("Firefox".into()), Some("Firefox".into())]
    );
    assert_eq!(ints_of(clients, "requests"), [4, 1]);
    assert_eq!(ints_of(clients, "visitors"), [3, 1]);
    let refs = &t[2];
    assert_eq!(
        strs_of(refs, "referrer_domain"),
        [
            Some("(direct)".into()),
            Some("(internal)".into()),
            Some("google.com".into()),
            Some("google.com".into())
        ]
    );
    assert_eq!(ints_of(refs, "requests"), [1, 1, 2, 1]);
    assert_eq!(ints_of(refs, "visitors"), [1, 1, 2, 1]);
    let q = &t[3];
    assert_eq!(ints_of(q, "requests"), [5, 1]);
    assert_eq!(ints_of(q, "crawler_requests"), [1, 0]);
    assert_eq!(ints_of(q, "status_2xx"), [3, 0]);
    assert_eq!(ints_of(q, "status_3xx"), [1, 0]);
    assert_eq!(ints_of(q, "status_4xx"), [1, 0]);
    assert_eq!(ints_of(q, "status_5xx"), [0, 1]);
    assert_eq!(ints_of(q, "bytes"), [1160, 7]);
    match &t[0].columns[0].1 {
        Column::Timestamp(v) => assert_eq!(v, &[DAY, DAY, DAY + 86_400]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn crawlers_included_show_as_their_own_client() {
    let f = fixture();
    let mut a = Aggregates::new(Period::Day, CrawlerHandling::Include);
    feed(&mut a, &f, 0..5);
    let t = a.finish(&[TableName::Clients, TableName::TrafficByRegion]);
    assert_eq!(
        strs_of(&t[0], "device"),
        [Some("crawler".into()), Some("pc".into())]
    );
    assert_eq!(ints_of(&t[0], "requests"), [1, 4]);
    assert_eq!(ints_of(&t[1], "requests"), [3, 2]);
    assert_eq!(ints_of(&t[1], "visitors"), [2, 2]);
}

#[test]
fn merging_partials_equals_one_pass() {
    let f = fixture();
    let mut whole = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
    feed(&mut whole, &f, 0..6);
    let mut left = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
    feed(&mut left, &f, 0..3);
    let mut right = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
    feed(&mut right, &f, 3..6);
    right.reject(Rejection::InvalidUtf8, None);
    whole.reject(Rejection::InvalidUtf8, None);
    left.merge(right);
    assert_eq!(left.finish(&TableName::ALL), whole.finish(&TableName::ALL));
}

#[test]
fn distinct_visitors_merge_as_a_union_not_a_sum() {
    let f = fixture();
    let mut a = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    feed(&mut a, &f, 0..1); // visitor 1
    let mut b = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    feed(&mut b, &f, 1..2); // visitor 1 again
    a.merge(b);
    let t = a.finish(&[TableName::TrafficByRegion]);
    assert_eq!(ints_of(&t[0], "visitors"), [1]);
    assert_eq!(ints_of(&t[0], "requests"), [2]);
}

#[test]
fn rejections_go_to_the_nearest_parsed_line() {
    let f = fixture();
    let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
    // Batch 1: a rejection before any parsed line goes to the following line's hour (1);
    // one after goes to the preceding line's hour.
    a.reject(Rejection::LineTooLong, None);
    feed(&mut a, &f, 0..1);
    a.reject(Rejection::Parse(ParseError::Layout), None);
    feed(&mut a, &f, 1..2);
    a.reject(Rejection::Parse(ParseError::Layout), None);
    a.end_batch();
    // Batch 2: nothing parsed; its rejection ends up in the last period.
    a.reject(Rejection::Truncated, None);
    a.end_batch();
    assert_eq!(a.requests(), 2);
    assert_eq!(a.rejections().iter().sum::<u64>(), 4);
    let t = a.finish(&[TableName::TrafficQuality]);
    assert_eq!(ints_of(&t[0], "requests"), [1, 1]);
    assert_eq!(ints_of(&t[0], "rejected_line_too_long"), [1, 0]);
    assert_eq!(ints_of(&t[0], "rejected_bad_layout"), [1, 1]);
    assert_eq!(ints_of(&t[0], "parse_errors"), [1, 1]);
    assert_eq!(ints_of(&t[0], "rejected_truncated_input"), [0, 1]);
    assert_eq!(ints_of(&t[0], "rejected_lines"), [2, 2]);
}

#[test]
fn rejection_names_match_column_names() {
    let q = Aggregates::new(Period::Day, CrawlerHandling::Exclude).quality_table();
    for r in Rejection::all() {
        assert_eq!(
            q.columns[11 + r.index()].0,
            format!("rejected_{}", r.name())
        );
    }
}

/// A test database: address 10.0.0.i is at `places[i]`, and known unless `i % 4 == 3`. Counts
/// the addresses it was asked for.
struct ByIndex<'a> {
    places: &'a [Arc<Place>],
    asked: usize,
}

fn address_of(i: usize) -> IpAddr {
    IpAddr::from([10, 0, 0, u8::try_from(i).unwrap()])
}

fn known_at(i: usize) -> bool {
    i % 4 != 3
}

impl Locate for ByIndex<'_> {
    fn locate(&mut self, addresses: &[IpAddr], each: &mut dyn FnMut(usize, &Arc<Place>, bool)) {
        self.asked += addresses.len();
        for (i, address) in addresses.iter().enumerate() {
            let IpAddr::V4(v4) = address else {
                panic!("{address:?} is not one of the test's");
            };
            let n = usize::from(v4.octets()[3]);
            each(i, &self.places[n], known_at(n));
        }
    }
}

/// The database of fronts whose requests all come with their place: never asked.
fn nowhere() -> ByIndex<'static> {
    ByIndex {
        places: &[],
        asked: 0,
    }
}

/// A front before the aggregates ends with exactly the rows (visitors and their contributions
/// included) and traffic quality that the aggregates alone build: over several periods, with
/// crawlers excluded and included, the visitor hash 0, equal places and referrers in separate
/// allocations, saturating byte counts, rejections between requests, and visitor hashes that
/// two visitors share (another place, or another client). Given places, or given addresses
/// (then a hash shared by two visitors stands for the first one's place, which is the same as
/// long as their addresses are) that it looks up once per visitor and period.
#[test]
fn a_front_counts_what_the_aggregates_count() {
    for by_address in [false, true] {
        a_front_counts_what_the_aggregates_count_with(by_address);
    }
}

fn a_front_counts_what_the_aggregates_count_with(by_address: bool) {
    let places: Vec<Arc<Place>> = (0..12)
        .map(|i| place(["DE", "FR", "ES"][i % 3], &format!("R-{}", i % 5)))
        .collect();
    let clients: Vec<Arc<ClientClass>> = (0..9)
        .map(|i| client(["Firefox", "Chrome", "Googlebot"][i % 3], i % 3 == 2))
        .collect();
    // Each value twice, in separate allocations.
    let referrers: Vec<Str> = ["(direct)", "google.com", "(internal)", "example.org"]
        .iter()
        .cycle()
        .take(8)
        .map(|r| s(r))
        .collect();
    for (period, crawlers) in [
        (Period::Hour, CrawlerHandling::Exclude),
        (Period::Day, CrawlerHandling::Include),
    ] {
        let mut plain = Aggregates::new(period, crawlers);
        let mut fronted = Aggregates::new(period, crawlers);
        let mut front = Front::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut shared = 0;
        let mut all = Vec::new();
        // What the front is given (`all` with addresses instead of places, `by_address`).
        let mut sent = Vec::new();
        for i in 0..30_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let visitor = match i % 97 {
                0 => 0,
                _ => (x % 3_000).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3,
            };
            // A visitor keeps its place and client, except for the few that share a hash. Given
            // addresses, those keep their address (and the hash 0 its place).
            let collide = i % 211 == 0;
            shared += u64::from(collide);
            let at = ((visitor >> 7) as usize + usize::from(collide && !by_address)) % 12;
            let client = &clients[((visitor >> 20) as usize + 2 * usize::from(i % 307 == 0)) % 9];
            let (origin, given) = match (by_address, visitor) {
                (true, 0) => (
                    Origin::Place(&places[0], false),
                    Origin::Place(&places[0], false),
                ),
                (true, _) => (
                    Origin::Place(&places[at], known_at(at)),
                    Origin::Address(address_of(at)),
                ),
                (false, _) => {
                    let o = Origin::Place(&places[at], !(x >> 8).is_multiple_of(5));
                    (o, o)
                }
            };
            let obs = Observation {
                // In order over three days (long runs of one period, as in a log), one
                // request in fifty at any time of them.
                time: DAY
                    + if i % 50 == 0 {
                        ((x >> 40) % (3 * 86_400)) as i64
                    } else {
                        (i * 8 + (x >> 40) % 8) as i64
                    },
                visitor,
                origin,
                client,
                referrer: &referrers[(x >> 16) as usize % 8],
                status: Some([200, 304, 404, 500, 99][(x >> 24) as usize % 5]),
                bytes: if i % 1_000 == 0 {
                    u64::MAX - 1
                } else {
                    (x >> 32) % 90_000
                },
            };
            plain.observe(&obs);
            let given = Observation {
                origin: given,
                ..obs
            };
            front.observe(&given, &mut fronted);
            all.push(obs);
            sent.push(given);
            if i % 500 == 0 {
                plain.reject(Rejection::InvalidUtf8, None);
                fronted.reject(Rejection::InvalidUtf8, None);
                plain.end_batch();
                fronted.end_batch();
            }
        }
        assert!(shared > 100);
        let mut db = ByIndex {
            places: &places,
            asked: 0,
        };
        front.flush_into(&mut fronted, &mut db);
        // Given addresses, the front asked once per visitor and period, and for the visitors
        // whose hash stood for another client, and for the crawlers left out.
        let asked = |db: &ByIndex| {
            if by_address {
                assert!(db.asked > 0);
            }
            let per_visitor: BTreeSet<(i64, u64)> = all
                .iter()
                .map(|o| (plain.period.start(o.time), o.visitor))
                .collect();
            let crawled = all.iter().filter(|o| o.client.crawler).count();
            assert!(
                db.asked <= per_visitor.len() + crawled + shared as usize,
                "{} asked, {} visitors",
                db.asked,
                per_visitor.len()
            );
        };
        asked(&db);
        for table in [
            TableName::TrafficByRegion,
            TableName::Clients,
            TableName::Referrers,
        ] {
            let (want, got) = (plain.rows(table), fronted.rows(table));
            assert!(want.len() > 5, "{table:?}");
            assert_eq!(got, want, "{table:?}");
            let converted: Vec<ReleasedRow> = want.into_iter().map(ReleasedRow::from).collect();
            assert_eq!(fronted.exact_rows(table), converted, "{table:?}");
        }
        assert_eq!(fronted.rejections(), plain.rejections());
        // Three workers sharing their visitors out, each reading every third run of 777
        // requests and ending its front with `end`, on its own thread (a shared front's end
        // waits for the others').
        type End<'e> = dyn Fn(Front, &mut Aggregates, &mut ByIndex) -> Option<Settled> + Sync + 'e;
        let workers = |end: &End| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = Front::shared(3)
                    .into_iter()
                    .enumerate()
                    .map(|(w, mut front)| {
                        let (sent, places) = (&sent, &places);
                        scope.spawn(move || {
                            let mut agg = Aggregates::new(period, crawlers);
                            for (i, obs) in sent.iter().enumerate() {
                                if (i / 777) % 3 == w {
                                    front.observe(obs, &mut agg);
                                }
                            }
                            let mut db = ByIndex { places, asked: 0 };
                            let settled = end(front, &mut agg, &mut db);
                            (agg, settled)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        // Flushed, they end with the same rows once their partials are merged.
        let partials: Vec<Aggregates> = workers(&|front, agg, db| {
            front.flush_into(agg, db);
            None
        })
        .into_iter()
        .map(|(agg, _)| agg)
        .collect();
        // Each worker kept only the visitors it owns.
        let kept: Vec<usize> = partials.iter().map(|p| p.visitor_records()).collect();
        assert_eq!(
            kept.iter().sum::<usize>(),
            plain.visitor_records(),
            "{kept:?}"
        );
        assert!(kept.iter().all(|&k| k > 0), "{kept:?}");
        let mut merged = Aggregates::new(period, crawlers);
        for p in partials {
            merged.merge(p);
        }
        assert_eq!(merged.requests(), plain.requests());
        let demographic = [
            TableName::TrafficByRegion,
            TableName::Clients,
            TableName::Referrers,
        ];
        for table in demographic {
            assert_eq!(merged.rows(table), plain.rows(table), "{table:?}, shared");
        }
        // The same workers leaving their region and client cells to be built once, from all
        // their visitor records, end with the same rows too.
        for threads in [1, 2] {
            let parts = workers(&|front, agg, db| Some(front.settle_into(agg, db)));
            let (partials, settled): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
            let settled: Vec<Settled> = settled.into_iter().flatten().collect();
            assert_eq!(settled.len(), 3);
            let mut built = Aggregates::new(period, crawlers);
            for p in partials {
                // Only the cells of visitors whose hash stood for two regions or clients.
                assert!(p.visitor_records() < plain.visitor_records() / 10);
                built.merge(p);
            }
            Settled::add_all(settled, &mut built, threads);
            assert_eq!(built.requests(), plain.requests());
            assert_eq!(built.visitor_records(), plain.visitor_records());
            for table in demographic {
                assert_eq!(
                    built.rows(table),
                    plain.rows(table),
                    "{table:?}, built once"
                );
            }
        }
        assert_eq!(
            fronted.finish(&TableName::ALL),
            plain.finish(&TableName::ALL)
        );
    }
}

/// Client classes that differ only in flags print the same and make one row, whose visitors
/// are the union of theirs; exact rows count that union as the rows with visitors do.
#[test]
fn classes_that_print_the_same_make_one_row() {
    let de = place("DE", "DE-BE");
    let ff = client("Firefox", false);
    let ff_unknown = Arc::new(ClientClass {
        unknown: true,
        ..(*ff).clone()
    });
    let referrer = s("(direct)");
    let mut a = Aggregates::new(Period::Day, CrawlerHandling::Include);
    // Visitors 1 and 2 as one class, 2 and 3 as the other: three visitors, four requests.
    for (visitor, class) in [(1, &ff), (2, &ff), (2, &ff_unknown), (3, &ff_unknown)] {
        a.observe(&Observation {
            time: DAY + 60,
            visitor,
            origin: Origin::Place(&de, true),
            client: class,
            referrer: &referrer,
            status: Some(200),
            bytes: 10,
        });
    }
    let exact = a.exact_rows(TableName::Clients);
    assert_eq!(exact.len(), 1);
    assert_eq!(
        (exact[0].requests, exact[0].visitors, exact[0].bytes),
        (4, 3, 40)
    );
    let with_visitors = a.rows(TableName::Clients);
    assert_eq!(with_visitors.len(), 1);
    assert_eq!(with_visitors[0].visitors.len(), 3);
    assert_eq!(with_visitors[0].visitors[&2].requests, 2);
    assert_eq!(exact, vec![ReleasedRow::from(with_visitors[0].clone())]);
}

/// Partials large enough to merge their tables on separate threads merge exactly as small ones:
/// the result is what one aggregate fed everything holds.
#[test]
fn large_partials_merge_like_one_pass() {
    let places: Vec<Arc<Place>> = (0..50)
        .map(|i| place(["DE", "FR"][i % 2], &format!("R-{i}")))
        .collect();
    let clients: Vec<Arc<ClientClass>> = (0..7).map(|i| client(&format!("B{i}"), false)).collect();
    let referrers = ["(direct)", "google.com", "example.org"].map(s);
    let mut whole = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    let mut halves = [
        Aggregates::new(Period::Day, CrawlerHandling::Exclude),
        Aggregates::new(Period::Day, CrawlerHandling::Exclude),
    ];
    for i in 0..120_000u64 {
        let visitor = (i % 45_000).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let obs = Observation {
            time: DAY + (i % 2) as i64 * 86_400,
            visitor,
            origin: Origin::Place(&places[(visitor >> 40) as usize % 50], true),
            client: &clients[(visitor >> 50) as usize % 7],
            referrer: &referrers[i as usize % 3],
            status: Some(200),
            bytes: i % 1_000,
        };
        whole.observe(&obs);
        halves[(i / 1_000 % 2) as usize].observe(&obs);
    }
    let [mut left, right] = halves;
    let big: usize = right
        .traffic
        .values()
        .flat_map(HashMap::values)
        .map(|c| c.visitors.len())
        .sum();
    assert!(big >= PARALLEL_MERGE_VISITORS, "{big}");
    left.merge(right);
    for table in [
        TableName::TrafficByRegion,
        TableName::Clients,
        TableName::Referrers,
    ] {
        assert_eq!(left.rows(table), whole.rows(table), "{table:?}");
    }
    assert_eq!(left.finish(&TableName::ALL), whole.finish(&TableName::ALL));
}

/// The arithmetic status class is the range match, for every status.
#[test]
fn status_classes_are_the_hundreds() {
    let by_range = |s: Option<u16>| match s {
        Some(200..=299) => 0,
        Some(300..=399) => 1,
        Some(400..=499) => 2,
        Some(500..=599) => 3,
        _ => 4,
    };
    for s in (0..=u16::MAX).map(Some).chain([None]) {
        assert_eq!(status_class(s), by_range(s), "{s:?}");
    }
}

/// Three workers sharing their visitors out, ended as a batch run ends them, then merged
/// (`merge_disjoint`) and built (`Settled::build`) keeping only the visitor counts of the tables
/// in `counts_only`.
fn three_workers_merged(all: &[Observation<'_>], counts_only: &[TableName]) -> Aggregates {
    let parts: Vec<(Aggregates, Settled)> = std::thread::scope(|scope| {
        let handles: Vec<_> = Front::shared(3)
            .into_iter()
            .enumerate()
            .map(|(w, mut front)| {
                if counts_only.contains(&TableName::Referrers) {
                    front.count_referrers_only();
                }
                scope.spawn(move || {
                    let mut agg = Aggregates::new(Period::Day, CrawlerHandling::Include);
                    for (i, obs) in all.iter().enumerate() {
                        if (i / 500) % 3 == w {
                            front.observe(obs, &mut agg);
                        }
                    }
                    let settled = front.settle_into(&mut agg, &mut nowhere());
                    (agg, settled)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (partials, mut settled): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    let mut total = Aggregates::new(Period::Day, CrawlerHandling::Include);
    for p in partials {
        total.merge_disjoint(p, counts_only);
    }
    Settled::build(&mut settled, 2, counts_only).add_into(&mut total);
    total
}

/// A batch run's tables released as counted need no visitor sets: counted with referrers
/// marked in visitor records, merged and built keeping only the numbers of the workers'
/// (disjoint) visitors, every table's exact rows are those of one aggregate fed every request,
/// including rows made of several classes that print the same and referrers numbered past the
/// bits of a visitor record; a table not in `counts_only` keeps its rows with their visitors.
#[test]
fn counts_of_disjoint_workers_give_the_exact_rows() {
    let places: Vec<Arc<Place>> = (0..20)
        .map(|i| place(["DE", "FR"][i % 2], &format!("R-{}", i % 7)))
        .collect();
    let mut clients: Vec<Arc<ClientClass>> = (0..6)
        .map(|i| client(["Firefox", "Chrome", "Googlebot"][i % 3], i % 3 == 2))
        .collect();
    // A class that prints as Firefox does: their rows are one.
    clients.push(Arc::new(ClientClass {
        unknown: true,
        ..(*clients[0]).clone()
    }));
    // Four common referrers, and 90 rare ones: more than a visitor record has bits for.
    let common = ["(direct)", "google.com", "(internal)", "example.org"].map(s);
    let rare: Vec<Str> = (0..90).map(|i| s(&format!("site{i}.example"))).collect();
    let mut plain = Aggregates::new(Period::Day, CrawlerHandling::Include);
    let mut all = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..40_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // A visitor's place and client follow from its hash, as they do from an address and a
        // User-Agent.
        let visitor = (x % 6_000).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let obs = Observation {
            time: DAY + (i * 5) as i64,
            visitor,
            origin: Origin::Place(&places[(visitor >> 40) as usize % 20], true),
            client: &clients[(visitor >> 50) as usize % 7],
            referrer: if x.is_multiple_of(4) {
                &rare[(x >> 20) as usize % 90]
            } else {
                &common[(x >> 16) as usize % 4]
            },
            status: Some(200),
            bytes: (x >> 32) % 9_000,
        };
        plain.observe(&obs);
        all.push(obs);
    }
    let demographic = [
        TableName::TrafficByRegion,
        TableName::Clients,
        TableName::Referrers,
    ];
    let counted = three_workers_merged(&all, &demographic);
    assert!(plain.exact_rows(TableName::Referrers).len() > 3 * 90);
    for table in demographic {
        let want = plain.exact_rows(table);
        assert!(want.len() >= 3, "{table:?}");
        assert_eq!(counted.exact_rows(table), want, "{table:?}");
    }
    assert_eq!(
        counted.clone().finish(&TableName::ALL),
        plain.clone().finish(&TableName::ALL)
    );
    // Firefox and its unknown-flagged twin make one row of both classes' visitors (the first
    // day's, here).
    let firefox = counted
        .exact_rows(TableName::Clients)
        .into_iter()
        .find(|r| r.period == DAY && r.dims[3].as_deref() == Some("Firefox"))
        .unwrap();
    let by_class = |c: &Arc<ClientClass>| {
        all.iter()
            .filter(|o| o.time < DAY + 86_400 && Arc::ptr_eq(o.client, c))
            .map(|o| o.visitor)
            .collect::<std::collections::BTreeSet<u64>>()
            .len() as u64
    };
    assert_eq!(
        firefox.visitors,
        by_class(&clients[0]) + by_class(&clients[3]) + by_class(&clients[6])
    );
    // Only the referrers counted: regions and clients keep their visitors.
    let mixed = three_workers_merged(&all, &[TableName::Referrers]);
    for table in [TableName::TrafficByRegion, TableName::Clients] {
        assert_eq!(mixed.rows(table), plain.rows(table), "{table:?}");
    }
    assert_eq!(
        mixed.exact_rows(TableName::Referrers),
        plain.exact_rows(TableName::Referrers)
    );
}

/// The rows of a table merged for counts only cannot be taken with their visitors: a release
/// that needs them must not get a set missing most of them.
#[test]
#[should_panic(expected = "merged for exact counts only")]
fn a_table_merged_for_counts_has_no_visitor_sets() {
    let (de, ff, r) = (
        place("DE", "DE-BE"),
        client("Firefox", false),
        s("(direct)"),
    );
    let obs = |visitor| Observation {
        time: DAY,
        visitor,
        origin: Origin::Place(&de, true),
        client: &ff,
        referrer: &r,
        status: Some(200),
        bytes: 1,
    };
    let (mut a, mut b) = (
        Aggregates::new(Period::Day, CrawlerHandling::Include),
        Aggregates::new(Period::Day, CrawlerHandling::Include),
    );
    a.observe(&obs(1));
    b.observe(&obs(2));
    a.merge_disjoint(b, &[TableName::Referrers]);
    assert_eq!(a.exact_rows(TableName::Referrers)[0].visitors, 2);
    assert_eq!(a.rows(TableName::Clients)[0].visitors.len(), 2);
    a.rows(TableName::Referrers);
}

/// Counted without sets, a visitor hash that stood for two clients in one region (a 64-bit
/// collision of two visitors, counted the plain way) counts as the two visitors it is in that
/// region's row, where the sets hold it once, as `Settled::build` says; every other row, and
/// the visitor hash 0, count alike both ways.
#[test]
fn a_collided_hash_counts_as_two_visitors_without_sets() {
    let (de, direct) = (place("DE", "DE-BE"), s("(direct)"));
    let (ff, chrome) = (client("Firefox", false), client("Chrome", false));
    let obs = |visitor, client| Observation {
        time: DAY,
        visitor,
        origin: Origin::Place(&de, true),
        client,
        referrer: &direct,
        status: Some(200),
        bytes: 1,
    };
    let all = [obs(7, &ff), obs(7, &chrome), obs(0, &ff), obs(0, &ff)];
    let run = |counts_only: &[TableName]| {
        let mut front = Front::new();
        if counts_only.contains(&TableName::Referrers) {
            front.count_referrers_only();
        }
        let mut agg = Aggregates::new(Period::Day, CrawlerHandling::Include);
        for o in &all {
            front.observe(o, &mut agg);
        }
        let settled = front.settle_into(&mut agg, &mut nowhere());
        let mut total = Aggregates::new(Period::Day, CrawlerHandling::Include);
        total.merge_disjoint(agg, counts_only);
        Settled::build(&mut [settled], 1, counts_only).add_into(&mut total);
        total
    };
    let visitors = |agg: &Aggregates, table| -> Vec<u64> {
        agg.exact_rows(table).iter().map(|r| r.visitors).collect()
    };
    let sets = run(&[]);
    let counted = run(&[
        TableName::TrafficByRegion,
        TableName::Clients,
        TableName::Referrers,
    ]);
    assert_eq!(visitors(&sets, TableName::TrafficByRegion), [2]);
    assert_eq!(visitors(&counted, TableName::TrafficByRegion), [3]);
    // Chrome, then Firefox.
    assert_eq!(visitors(&sets, TableName::Clients), [1, 2]);
    assert_eq!(visitors(&counted, TableName::Clients), [1, 2]);
    assert_eq!(visitors(&sets, TableName::Referrers), [2]);
    assert_eq!(visitors(&counted, TableName::Referrers), [2]);
}
