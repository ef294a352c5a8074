use logcensus_parse::ParseError;
use logcensus_policy::TableName;

use super::*;
use crate::{Observation, Origin, TableOut};

const T0: i64 = 1_431_820_800; // 2015-05-17T00:00:00Z
const HOUR: i64 = 3600;

struct Dims {
    de: Arc<Place>,
    fr_no_region: Arc<Place>,
    ff: Arc<ClientClass>,
    bot: Arc<ClientClass>,
}

fn dims() -> Dims {
    Dims {
        de: Arc::new(Place {
            continent: Some("EU".into()),
            country: Some("DE".into()),
            region: Some("DE-BY".into()),
        }),
        fr_no_region: Arc::new(Place {
            continent: Some("EU".into()),
            country: Some("FR".into()),
            region: None,
        }),
        ff: Arc::new(ClientClass {
            device: "pc".into(),
            os: "Linux".into(),
            os_version: None,
            browser: "Firefox".into(),
            browser_version: Some("120".into()),
            crawler: false,
            unknown: false,
            empty: false,
        }),
        bot: Arc::new(ClientClass {
            device: "crawler".into(),
            os: "(unknown)".into(),
            os_version: None,
            browser: "Googlebot".into(),
            browser_version: None,
            crawler: true,
            unknown: false,
            empty: true,
        }),
    }
}

/// (seconds after T0, visitor, place, client, referrer, status, bytes)
type Line<'a> = (
    i64,
    u64,
    &'a Arc<Place>,
    &'a Arc<ClientClass>,
    &'a str,
    Option<u16>,
    u64,
);

/// Several periods, places with and without region, a crawler, repeat visitors, rejections
/// placed by hint, by the batch and in no period.
fn busy(crawlers: CrawlerHandling) -> Aggregates {
    let d = dims();
    let mut a = Aggregates::new(Period::Hour, crawlers);
    a.reject(Rejection::LineTooLong, None); // pending until the first parsed line
    let lines: [Line<'_>; 7] = [
        (10, 1, &d.de, &d.ff, "google.com", Some(200), 100),
        (20, 1, &d.de, &d.ff, "google.com", Some(200), 50),
        (30, 2, &d.fr_no_region, &d.ff, "(direct)", Some(404), 0),
        (HOUR + 1, 3, &d.de, &d.bot, "(direct)", None, 5_000_000_000),
        (HOUR + 2, 1, &d.de, &d.ff, "(internal)", Some(503), 7),
        (
            5 * HOUR,
            u64::MAX,
            &d.fr_no_region,
            &d.ff,
            "bing.com",
            Some(301),
            1,
        ),
        (
            5 * HOUR + 9,
            1 << 63,
            &d.fr_no_region,
            &d.ff,
            "bing.com",
            Some(200),
            2,
        ),
    ];
    for (t, v, place, client, referrer, status, bytes) in lines {
        a.observe(&Observation {
            time: T0 + t,
            visitor: v,
            origin: Origin::Place(place, v != 2),
            client,
            referrer: &Str::from(referrer),
            status,
            bytes,
        });
        if t == 30 {
            a.reject(Rejection::Parse(ParseError::Timestamp), None);
        }
    }
    a.reject(Rejection::InvalidUtf8, Some(T0 + 9 * HOUR));
    a.end_batch();
    a.reject(Rejection::Truncated, None); // a batch with no parsed line
    a.end_batch();
    a
}

fn demographic_rows(a: &Aggregates) -> Vec<Vec<crate::Row>> {
    [
        TableName::TrafficByRegion,
        TableName::Clients,
        TableName::Referrers,
    ]
    .into_iter()
    .map(|t| a.rows(t))
    .collect()
}

fn tables(a: Aggregates) -> Vec<TableOut> {
    a.finish(&TableName::ALL)
}

#[test]
fn round_trip_is_exact() {
    for crawlers in [CrawlerHandling::Exclude, CrawlerHandling::Include] {
        let a = busy(crawlers);
        let bytes = a.to_bytes();
        let b = Aggregates::from_bytes(&bytes).unwrap();
        assert_eq!(b.period(), Period::Hour);
        assert_eq!(b.crawlers(), crawlers);
        assert_eq!(b.periods(), [T0, T0 + HOUR, T0 + 5 * HOUR, T0 + 9 * HOUR]);
        assert_eq!(b.requests(), 7);
        assert_eq!(b.rejections(), a.rejections());
        assert_eq!(b.unattributed(), 1);
        // Every visitor with its exact contribution, not only the counts.
        assert_eq!(demographic_rows(&b), demographic_rows(&a));
        // Deterministic: writing the read-back state gives the same bytes.
        assert_eq!(b.to_bytes(), bytes);
        let (ta, tb) = (tables(a), tables(b));
        assert_eq!(tb, ta);
        assert_eq!(ta[3].num_rows(), 4);
    }
}

#[test]
fn empty_aggregates_round_trip() {
    let a = Aggregates::new(Period::Day, CrawlerHandling::Include);
    let b = Aggregates::from_bytes(&a.to_bytes()).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.period(), Period::Day);
    assert_eq!(b.crawlers(), CrawlerHandling::Include);
}

#[test]
fn pending_rejections_of_an_unfinished_batch_are_kept_as_unattributed() {
    let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
    a.reject(Rejection::InvalidUtf8, None);
    a.reject(Rejection::InvalidUtf8, None);
    let b = Aggregates::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(b.unattributed(), 2);
    assert_eq!(b.rejections()[Rejection::InvalidUtf8.index()], 2);
    // Once decoded they are no longer pending: a later parsed line does not take them.
    let mut b = b;
    let d = dims();
    b.observe(&Observation {
        time: T0,
        visitor: 1,
        origin: Origin::Place(&d.de, true),
        client: &d.ff,
        referrer: &Str::from("(direct)"),
        status: Some(200),
        bytes: 1,
    });
    assert_eq!(b.unattributed(), 2);
}

#[test]
fn decoded_state_merges_like_the_original() {
    let a = busy(CrawlerHandling::Exclude);
    let mut via_bytes = Aggregates::from_bytes(&a.to_bytes()).unwrap();
    via_bytes.merge(Aggregates::from_bytes(&a.to_bytes()).unwrap());
    let mut direct = a.clone();
    direct.merge(a);
    assert_eq!(tables(via_bytes), tables(direct));
}

#[test]
fn decoded_values_are_shared_not_copied_per_row() {
    let b = Aggregates::from_bytes(&busy(CrawlerHandling::Exclude).to_bytes()).unwrap();
    let rows = b.rows(TableName::TrafficByRegion);
    let eu: Vec<&Str> = rows.iter().map(|r| r.dims[0].as_ref().unwrap()).collect();
    assert!(eu.len() >= 3);
    assert!(eu.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
}

#[test]
fn visitor_hashes_take_eight_bytes_each() {
    let d = dims();
    let mut a = Aggregates::new(Period::Day, CrawlerHandling::Exclude);
    for i in 0..1000u64 {
        a.observe(&Observation {
            time: T0,
            // Spread over the whole range, as keyed hashes are.
            visitor: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            origin: Origin::Place(&d.de, true),
            client: &d.ff,
            referrer: &Str::from("(direct)"),
            status: Some(200),
            bytes: 100,
        });
    }
    // Three rows of 1000 visitors, each visitor 8 + 1 + 1 bytes.
    let n = a.to_bytes().len();
    assert!((30_000..31_000).contains(&n), "{n} bytes");
}

#[test]
fn decode_errors_say_what_is_wrong() {
    let bytes = busy(CrawlerHandling::Exclude).to_bytes();
    assert_eq!(Aggregates::from_bytes(&[]).unwrap_err(), DecodeError::Empty);
    let mut future = bytes.clone();
    future[0] = 2;
    let e = Aggregates::from_bytes(&future).unwrap_err();
    assert_eq!(
        e.to_string(),
        "aggregate state has format 2, this build reads format 1: read it with the logcensus version that wrote it"
    );
    let e = Aggregates::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "aggregate state is malformed: Hit the end of buffer, expected more data"
    );
    let mut longer = bytes.clone();
    longer.push(0);
    let e = Aggregates::from_bytes(&longer).unwrap_err();
    assert_eq!(
        e.to_string(),
        "aggregate state is malformed: bytes after the end of the state"
    );
}

#[test]
fn reasons_are_matched_by_name_and_unknown_ones_refused() {
    let body = |reasons: Vec<&'static str>, unattributed: Vec<u64>| {
        let body = Body {
            period: WirePeriod::Day,
            crawlers: WireCrawlers::Exclude,
            reasons,
            strings: Vec::new(),
            places: Vec::new(),
            clients: Vec::new(),
            periods: Vec::new(),
            unattributed,
        };
        postcard::to_extend(&body, vec![FORMAT]).unwrap()
    };
    // An older or newer build may list fewer reasons, in another order.
    let a =
        Aggregates::from_bytes(&body(vec!["truncated_input", "invalid_utf8"], vec![3, 4])).unwrap();
    assert_eq!(a.rejections()[Rejection::Truncated.index()], 3);
    assert_eq!(a.rejections()[Rejection::InvalidUtf8.index()], 4);
    assert_eq!(a.unattributed(), 7);
    let e =
        Aggregates::from_bytes(&body(vec!["invalid_utf8", "cosmic_ray"], vec![1, 1])).unwrap_err();
    assert_eq!(e, DecodeError::UnknownReason);
    let e = Aggregates::from_bytes(&body(vec!["invalid_utf8"], vec![1, 1])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "aggregate state is malformed: a list of rejection counts has the wrong length"
    );
}
