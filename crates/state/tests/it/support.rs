//! Aggregates built through `observe`/`reject`, and partial metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use logcensus_aggregate::{Aggregates, Observation, Origin, Rejection, TableOut};
use logcensus_enrich::{ClientClass, Place};
use logcensus_policy::{CrawlerHandling, Period, TableName};
use logcensus_state::{OffsetRange, PartialMeta, StateDir};

pub const T0: i64 = 1_431_820_800; // 2015-05-17T00:00:00Z
pub const HOUR: i64 = 3600;

/// One log line: (seconds after T0, visitor, country, browser, referrer, status, bytes), or a
/// rejected line.
#[derive(Clone, Copy)]
pub enum Line {
    Ok(i64, u64, &'static str, &'static str, &'static str, u16, u64),
    Bad(Rejection),
}

/// Twelve lines over three hours: repeat visitors across lines (so a sum of per-part visitor
/// counts would be wrong), a crawler, rejections.
pub fn lines() -> Vec<Line> {
    use Line::*;
    vec![
        Ok(10, 1, "DE", "Firefox", "google.com", 200, 100),
        Bad(Rejection::InvalidUtf8),
        Ok(20, 2, "DE", "Firefox", "(direct)", 200, 50),
        Ok(30, 1, "FR", "Chrome", "google.com", 404, 0),
        Ok(HOUR + 1, 1, "DE", "Firefox", "google.com", 200, 7),
        Ok(HOUR + 2, 3, "DE", "Googlebot", "(direct)", 200, 9000),
        Bad(Rejection::LineTooLong),
        Ok(HOUR + 3, 2, "FR", "Firefox", "bing.com", 301, 1),
        Ok(2 * HOUR, 1, "DE", "Firefox", "google.com", 200, 5),
        Ok(2 * HOUR + 1, 4, "DE", "Chrome", "google.com", 503, 3),
        Ok(2 * HOUR + 2, 2, "DE", "Firefox", "(internal)", 200, 11),
        Ok(2 * HOUR + 3, 1, "FR", "Chrome", "google.com", 200, 13),
    ]
}

pub fn new_agg() -> Aggregates {
    Aggregates::new(Period::Hour, CrawlerHandling::Exclude)
}

/// Feeds `lines` as one batch.
pub fn feed(a: &mut Aggregates, lines: &[Line]) {
    for line in lines {
        match *line {
            Line::Ok(t, visitor, country, browser, referrer, status, bytes) => {
                let place = Arc::new(Place {
                    continent: Some("EU".into()),
                    country: Some(country.into()),
                    region: None,
                });
                let crawler = browser == "Googlebot";
                let client = Arc::new(ClientClass {
                    device: if crawler { "crawler" } else { "pc" }.into(),
                    os: "Linux".into(),
                    os_version: None,
                    browser: browser.into(),
                    browser_version: None,
                    crawler,
                    unknown: false,
                    empty: false,
                });
                a.observe(&Observation {
                    time: T0 + t,
                    visitor,
                    origin: Origin::Place(&place, true),
                    client: &client,
                    referrer: &Arc::from(referrer),
                    status: Some(status),
                    bytes,
                });
            }
            Line::Bad(why) => a.reject(why, None),
        }
    }
    a.end_batch();
}

pub fn agg_of(lines: &[Line]) -> Aggregates {
    let mut a = new_agg();
    feed(&mut a, lines);
    a
}

pub fn tables(a: Aggregates) -> Vec<TableOut> {
    a.finish(&TableName::ALL)
}

pub fn meta(
    worker: &str,
    seq: u64,
    offsets: &[(i32, i64, i64)],
    watermarks: &[(i32, i64)],
) -> PartialMeta {
    PartialMeta {
        worker: worker.into(),
        seq,
        created_unix: T0 + 10 * HOUR,
        offsets: offsets
            .iter()
            .map(|&(p, from, to)| (p, OffsetRange { from, to }))
            .collect(),
        watermarks: watermarks.iter().copied().collect(),
        late_records: 0,
    }
}

pub fn open(dir: &Path) -> StateDir {
    StateDir::open(dir).unwrap()
}

pub fn map<V: Copy>(pairs: &[(i32, V)]) -> BTreeMap<i32, V> {
    pairs.iter().copied().collect()
}

/// Names of the files in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}
