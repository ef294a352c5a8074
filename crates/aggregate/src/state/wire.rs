//! A compact, versioned binary form of [`Aggregates`], for the checkpoints of streaming workers.
//!
//! Layout: one format byte ([`FORMAT`]), then a [postcard] body (a frozen, documented wire
//! format: varint integers, length-prefixed sequences, no field names). Strings, places and
//! client classes are written once, in tables, and cells refer to them by index, so a decoded
//! aggregate shares one `Arc` per distinct value as the live one does. Visitor hashes are written
//! as 8 fixed bytes: they are uniformly distributed, so a varint would take 10. Everything is
//! written in sorted order, so equal aggregates give equal bytes.
//!
//! Rejection counts are written with the reason names they belong to, in the order of a header
//! list: a build that knows more reasons still reads the state of an older one.
//!
//! Batch-level fields: a checkpoint is taken between batches, after
//! [`Aggregates::end_batch`], when only `unattributed` can be non-zero. Should one be taken
//! within a batch, its `pending` rejections are written as unattributed (as
//! [`Aggregates::merge`] treats them) and `last_period` is not written: the decoded aggregate
//! is one whose batch has ended. No rejection is lost either way.
//!
//! The bytes hold the visitor hashes of every row: they are as private as the live state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use logcensus_enrich::{ClientClass, Place};
use logcensus_policy::{CrawlerHandling, Period};
use serde::{Deserialize, Serialize};

use super::table::VisitorTable;
use super::{Aggregates, Cell, Cells, Contribution, Quality, Rejection, REJECTION_REASONS};
use crate::output::Str;

/// Version of the layout below; bumped on any change to it.
pub const FORMAT: u8 = 1;

/// Why bytes could not be read back as [`Aggregates`]. Never holds any of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("aggregate state is empty (no format byte)")]
    Empty,
    #[error("aggregate state has format {found}, this build reads format {FORMAT}: read it with the logcensus version that wrote it")]
    Format { found: u8 },
    #[error("aggregate state is malformed: {detail}")]
    Malformed { detail: String },
    #[error("aggregate state counts a rejection reason this build does not know: read it with the logcensus version that wrote it")]
    UnknownReason,
}

fn malformed(detail: impl ToString) -> DecodeError {
    DecodeError::Malformed {
        detail: detail.to_string(),
    }
}

#[derive(Serialize, Deserialize)]
enum WirePeriod {
    Hour,
    Day,
}

#[derive(Serialize, Deserialize)]
enum WireCrawlers {
    Exclude,
    Include,
}

#[derive(Serialize, Deserialize)]
struct Body<'a> {
    period: WirePeriod,
    crawlers: WireCrawlers,
    /// Rejection reason names, in the order of every `rejected` list below.
    #[serde(borrow)]
    reasons: Vec<&'a str>,
    /// Every dimension value, sorted; referred to by index.
    #[serde(borrow)]
    strings: Vec<&'a str>,
    places: Vec<WirePlace>,
    clients: Vec<WireClient>,
    periods: Vec<WirePeriodData>,
    /// Rejections in no period, in `reasons` order.
    unattributed: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct WirePlace {
    continent: Option<u32>,
    country: Option<u32>,
    region: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct WireClient {
    device: u32,
    os: u32,
    os_version: Option<u32>,
    browser: u32,
    browser_version: Option<u32>,
    crawler: bool,
    unknown: bool,
    empty: bool,
}

#[derive(Serialize, Deserialize)]
struct WirePeriodData {
    start: i64,
    quality: Option<WireQuality>,
    /// Keys index `places`.
    traffic: Vec<WireCell>,
    /// Keys index `clients`.
    clients: Vec<WireCell>,
    /// Keys index `strings`.
    referrers: Vec<WireCell>,
}

#[derive(Serialize, Deserialize)]
struct WireQuality {
    requests: u64,
    crawler_requests: u64,
    status: [u64; 5],
    bytes: u64,
    rejected: Vec<u64>,
    empty_ua: u64,
    unknown_ua: u64,
    unknown_geo: u64,
    late: u64,
}

#[derive(Serialize, Deserialize)]
struct WireCell {
    key: u32,
    requests: u64,
    bytes: u64,
    /// Sorted by hash.
    visitors: Vec<WireVisitor>,
}

#[derive(Serialize, Deserialize)]
struct WireVisitor {
    /// Little-endian.
    hash: [u8; 8],
    requests: u32,
    bytes: u32,
}

/// Assigns indexes to values in their sorted order.
fn index<T: Ord>(values: BTreeSet<T>) -> BTreeMap<T, u32> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            (
                v,
                u32::try_from(i).expect("fewer than 2^32 distinct values"),
            )
        })
        .collect()
}

fn wire_cells<K>(cells: Option<&Cells<K>>, key: impl Fn(&K) -> u32) -> Vec<WireCell> {
    let Some(cells) = cells else {
        return Vec::new();
    };
    let mut out: Vec<WireCell> = cells
        .iter()
        .map(|(k, c)| {
            assert_eq!(
                c.counted, 0,
                "aggregates merged for exact counts only are not written to a checkpoint"
            );
            let mut visitors: Vec<WireVisitor> = c
                .visitors
                .iter()
                .map(|(h, v)| WireVisitor {
                    hash: h.to_le_bytes(),
                    requests: v.requests,
                    bytes: v.bytes,
                })
                .collect();
            visitors.sort_unstable_by_key(|v| u64::from_le_bytes(v.hash));
            WireCell {
                key: key(k),
                requests: c.requests,
                bytes: c.bytes,
                visitors,
            }
        })
        .collect();
    out.sort_unstable_by_key(|c| c.key);
    out
}

impl Aggregates {
    /// The aggregates as compact bytes, for a checkpoint; [`Aggregates::from_bytes`] reads them
    /// back exactly. Deterministic: equal aggregates give equal bytes. The bytes hold visitor
    /// hashes: store them as privately as the process memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut strings: BTreeSet<&str> = BTreeSet::new();
        let mut places: BTreeSet<&Place> = BTreeSet::new();
        let mut clients: BTreeSet<&ClientClass> = BTreeSet::new();
        for p in self.traffic.values().flat_map(Cells::keys) {
            strings.extend(
                [&p.continent, &p.country, &p.region]
                    .into_iter()
                    .flatten()
                    .map(|s| &**s),
            );
            places.insert(p);
        }
        for c in self.clients.values().flat_map(Cells::keys) {
            strings.extend([&c.device, &c.os, &c.browser].map(|s| &**s));
            strings.extend(
                [&c.os_version, &c.browser_version]
                    .into_iter()
                    .flatten()
                    .map(|s| &**s),
            );
            clients.insert(c);
        }
        for r in self.referrers.values().flat_map(Cells::keys) {
            strings.insert(r);
        }
        let strings = index(strings);
        let places = index(places);
        let clients = index(clients);
        let s = |v: &Str| strings[&**v];
        let os = |v: &Option<Str>| v.as_ref().map(s);

        let mut unattributed = self.unattributed;
        for (i, n) in self.pending.iter().enumerate() {
            unattributed[i] += n;
        }
        let body = Body {
            period: match self.period {
                Period::Hour => WirePeriod::Hour,
                Period::Day => WirePeriod::Day,
            },
            crawlers: match self.crawlers {
                CrawlerHandling::Exclude => WireCrawlers::Exclude,
                CrawlerHandling::Include => WireCrawlers::Include,
            },
            reasons: Rejection::all().iter().map(|r| r.name()).collect(),
            strings: strings.keys().copied().collect(),
            places: places
                .keys()
                .map(|p| WirePlace {
                    continent: os(&p.continent),
                    country: os(&p.country),
                    region: os(&p.region),
                })
                .collect(),
            clients: clients
                .keys()
                .map(|c| WireClient {
                    device: s(&c.device),
                    os: s(&c.os),
                    os_version: os(&c.os_version),
                    browser: s(&c.browser),
                    browser_version: os(&c.browser_version),
                    crawler: c.crawler,
                    unknown: c.unknown,
                    empty: c.empty,
                })
                .collect(),
            periods: self
                .periods()
                .into_iter()
                .map(|p| WirePeriodData {
                    start: p,
                    quality: self.quality.get(&p).map(|q| WireQuality {
                        requests: q.requests,
                        crawler_requests: q.crawler_requests,
                        status: q.status,
                        bytes: q.bytes,
                        rejected: q.rejected.to_vec(),
                        empty_ua: q.empty_ua,
                        unknown_ua: q.unknown_ua,
                        unknown_geo: q.unknown_geo,
                        late: q.late,
                    }),
                    traffic: wire_cells(self.traffic.get(&p), |k| places[&**k]),
                    clients: wire_cells(self.clients.get(&p), |k| clients[&**k]),
                    referrers: wire_cells(self.referrers.get(&p), |k| strings[&**k]),
                })
                .collect(),
            unattributed: unattributed.to_vec(),
        };
        postcard::to_extend(&body, vec![FORMAT])
            .expect("serializing into a Vec cannot fail: every sequence has a known length")
    }

    /// Reads bytes written by [`Aggregates::to_bytes`]. The result is the aggregate that was
    /// written, with its batch ended (see the module docs).
    pub fn from_bytes(bytes: &[u8]) -> Result<Aggregates, DecodeError> {
        let (&format, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if format != FORMAT {
            return Err(DecodeError::Format { found: format });
        }
        let (body, extra): (Body<'_>, &[u8]) =
            postcard::take_from_bytes(rest).map_err(malformed)?;
        if !extra.is_empty() {
            return Err(malformed("bytes after the end of the state"));
        }
        let all = Rejection::all();
        let reasons = body
            .reasons
            .iter()
            .map(|name| {
                all.iter()
                    .position(|r| r.name() == *name)
                    .ok_or(DecodeError::UnknownReason)
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let rejections = |counts: &[u64]| -> Result<[u64; REJECTION_REASONS], DecodeError> {
            if counts.len() != reasons.len() {
                return Err(malformed("a list of rejection counts has the wrong length"));
            }
            let mut out = [0; REJECTION_REASONS];
            for (&i, &n) in reasons.iter().zip(counts) {
                out[i] += n;
            }
            Ok(out)
        };
        let strings: Vec<Str> = body.strings.iter().map(|s| Str::from(*s)).collect();
        let s = |i: u32| -> Result<Str, DecodeError> {
            strings
                .get(i as usize)
                .cloned()
                .ok_or_else(|| malformed("a string index is out of range"))
        };
        let os = |i: Option<u32>| i.map(s).transpose();
        let places = body
            .places
            .iter()
            .map(|p| {
                Ok(Arc::new(Place {
                    continent: os(p.continent)?,
                    country: os(p.country)?,
                    region: os(p.region)?,
                }))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let clients = body
            .clients
            .iter()
            .map(|c| {
                Ok(Arc::new(ClientClass {
                    device: s(c.device)?,
                    os: s(c.os)?,
                    os_version: os(c.os_version)?,
                    browser: s(c.browser)?,
                    browser_version: os(c.browser_version)?,
                    crawler: c.crawler,
                    unknown: c.unknown,
                    empty: c.empty,
                }))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;

        let mut agg = Aggregates::new(
            match body.period {
                WirePeriod::Hour => Period::Hour,
                WirePeriod::Day => Period::Day,
            },
            match body.crawlers {
                WireCrawlers::Exclude => CrawlerHandling::Exclude,
                WireCrawlers::Include => CrawlerHandling::Include,
            },
        );
        agg.unattributed = rejections(&body.unattributed)?;
        for data in body.periods {
            let p = data.start;
            if let Some(q) = data.quality {
                agg.quality.insert(
                    p,
                    Quality {
                        requests: q.requests,
                        crawler_requests: q.crawler_requests,
                        status: q.status,
                        bytes: q.bytes,
                        rejected: rejections(&q.rejected)?,
                        empty_ua: q.empty_ua,
                        unknown_ua: q.unknown_ua,
                        unknown_geo: q.unknown_geo,
                        late: q.late,
                    },
                );
            }
            if !data.traffic.is_empty() {
                agg.traffic
                    .insert(p, cells(data.traffic, &places, "place")?);
            }
            if !data.clients.is_empty() {
                agg.clients
                    .insert(p, cells(data.clients, &clients, "client")?);
            }
            if !data.referrers.is_empty() {
                agg.referrers
                    .insert(p, cells(data.referrers, &strings, "referrer")?);
            }
        }
        Ok(agg)
    }
}

fn cells<K: Clone + std::hash::Hash + Eq>(
    wire: Vec<WireCell>,
    keys: &[K],
    what: &str,
) -> Result<Cells<K>, DecodeError> {
    let mut out: Cells<K> = Cells::with_capacity_and_hasher(wire.len(), Default::default());
    for c in wire {
        let key = keys
            .get(c.key as usize)
            .ok_or_else(|| malformed(format!("a {what} index is out of range")))?;
        let mut visitors = VisitorTable::with_capacity(c.visitors.len());
        for v in c.visitors {
            visitors.add(
                u64::from_le_bytes(v.hash),
                Contribution {
                    requests: v.requests,
                    bytes: v.bytes,
                },
            );
        }
        let cell = Cell {
            requests: c.requests,
            bytes: c.bytes,
            visitors,
            counted: 0,
        };
        match out.get_mut(key) {
            Some(mine) => mine.merge(cell),
            None => {
                out.insert(key.clone(), cell);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
