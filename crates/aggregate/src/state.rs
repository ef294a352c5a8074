//! The mergeable aggregate state.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use logcensus_enrich::{ClientClass, Place};
use logcensus_parse::ParseError;
use logcensus_policy::{CrawlerHandling, Period, TableName};

use crate::output::{Column, Str, TableOut};

/// Why a line was not counted as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is longer than the limit.
    LineTooLong,
    /// The input ended with a read error (e.g. a truncated gzip stream).
    Truncated,
    /// The line did not parse.
    Parse(ParseError),
}

/// Number of rejection reasons.
pub const REJECTION_REASONS: usize = 3 + ParseError::ALL.len();

impl Rejection {
    /// Every reason, in the order of the `rejected_*` columns.
    pub fn all() -> [Rejection; REJECTION_REASONS] {
        let mut out = [Rejection::InvalidUtf8; REJECTION_REASONS];
        out[1] = Rejection::LineTooLong;
        for (i, p) in ParseError::ALL.iter().enumerate() {
            out[2 + i] = Rejection::Parse(*p);
        }
        out[REJECTION_REASONS - 1] = Rejection::Truncated;
        out
    }

    /// Position in [`Rejection::all`].
    pub fn index(self) -> usize {
        match self {
            Rejection::InvalidUtf8 => 0,
            Rejection::LineTooLong => 1,
            Rejection::Parse(p) => 2 + ParseError::ALL.iter().position(|x| *x == p).unwrap_or(0),
            Rejection::Truncated => REJECTION_REASONS - 1,
        }
    }

    /// Stable snake_case name (the column is `rejected_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Rejection::InvalidUtf8 => "invalid_utf8",
            Rejection::LineTooLong => "line_too_long",
            Rejection::Truncated => "truncated_input",
            Rejection::Parse(p) => p.name(),
        }
    }
}

/// What one parsed request contributes. Holds nothing personal: the visitor is a keyed hash
/// whose key is never written, the place and client are already coarse.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Request time, Unix seconds UTC.
    pub time: i64,
    /// Keyed hash of (address, User-Agent) under the day's key.
    pub visitor: u64,
    /// Where the request came from.
    pub origin: Origin<'a>,
    pub client: &'a Arc<ClientClass>,
    /// `referrers.referrer_domain` value.
    pub referrer: &'a Str,
    pub status: Option<u16>,
    pub bytes: u64,
}

/// Where a request came from: its place, or the address a [`Front`] finds the place of.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// The request's place, and whether the database knew where its address is.
    Place(&'a Arc<Place>, bool),
    /// The request's client address, for a [`Front`] to look up (see [`Locate`]) once per
    /// visitor and period instead of once per request: a visitor's place is a function of its
    /// address, which its hash is keyed by. Held in memory only, until the front has counted
    /// the request (a few thousand requests later); never written anywhere.
    ///
    /// Only a [`Front`] takes such a request ([`Aggregates::observe`] panics on one, and
    /// [`Aggregates::observe_quality`] would not count whether its place is known).
    Address(IpAddr),
}

/// Visitor hashes are already uniformly distributed: hash them by passing them through.
#[derive(Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What one visitor contributed to one row: the basis of contribution bounding. Both counts
/// saturate (a bound is always far below `u32::MAX`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    pub requests: u32,
    pub bytes: u32,
}

impl Contribution {
    /// What one request of `bytes` adds.
    fn of(bytes: u64) -> Contribution {
        Contribution {
            requests: 1,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }

    fn add(&mut self, other: Contribution) {
        self.requests = self.requests.saturating_add(other.requests);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// The visitors behind a row, by visitor hash (already uniformly distributed, so hashed by
/// passing them through), each with what it contributed.
pub type Visitors = HashMap<u64, Contribution, BuildHasherDefault<PassThrough>>;

/// Adds `from` into `into`, summing the contributions of visitors in both.
fn merge_visitors(into: &mut Visitors, mut from: Visitors) {
    if into.len() < from.len() {
        std::mem::swap(into, &mut from);
    }
    for (v, c) in from {
        into.entry(v).or_default().add(c);
    }
}

/// One row of a demographic table before it is written: its period, its dimension values in
/// schema order, its sums and the exact visitors behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub period: i64,
    /// `traffic_by_region`: continent, country, region; `clients`: device, os, os_version,
    /// browser, browser_version; `referrers`: referrer_domain.
    pub dims: Vec<Option<Str>>,
    pub requests: u64,
    pub bytes: u64,
    pub visitors: Visitors,
}

/// One row as it is written: the counts a release decided on (exact, bounded or noisy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedRow {
    pub period: i64,
    pub dims: Vec<Option<Str>>,
    pub requests: u64,
    pub visitors: u64,
    pub bytes: u64,
}

impl From<Row> for ReleasedRow {
    fn from(r: Row) -> ReleasedRow {
        ReleasedRow {
            period: r.period,
            visitors: r.visitors.len() as u64,
            dims: r.dims,
            requests: r.requests,
            bytes: r.bytes,
        }
    }
}

impl Row {
    fn from_cell(period: i64, dims: Vec<Option<Str>>, c: &Cell) -> Row {
        assert_eq!(
            c.counted, 0,
            "a table merged for exact counts only has no visitor sets to release"
        );
        Row {
            period,
            dims,
            requests: c.requests,
            bytes: c.bytes,
            visitors: c.visitors.to_visitors(),
        }
    }

    /// The row of one or more cells (client classes that print the same): their sums, and the
    /// union of their visitors.
    fn from_cells(period: i64, dims: Vec<Option<Str>>, cells: &[&Cell]) -> Row {
        let mut row = Row::from_cell(period, dims, cells[0]);
        for c in &cells[1..] {
            row.absorb(Row::from_cell(period, row.dims.clone(), c));
        }
        row
    }

    /// Adds another row's sums and visitors into this one (exact: a union of the visitors,
    /// summing what a visitor in both contributed).
    pub fn absorb(&mut self, other: Row) {
        self.requests += other.requests;
        self.bytes = self.bytes.saturating_add(other.bytes);
        merge_visitors(&mut self.visitors, other.visitors);
    }
}

/// A demographic table's rows on their way to a release, which takes them as it needs them.
pub struct TableRows<'a> {
    agg: &'a Aggregates,
    table: TableName,
}

impl TableRows<'_> {
    /// Each row with the exact set of visitors behind it, for disclosure control
    /// ([`Aggregates::rows`]).
    pub fn with_visitors(self) -> Vec<Row> {
        self.agg.rows(self.table)
    }

    /// Each row with exact counts, as written when nothing is withheld
    /// ([`Aggregates::exact_rows`]).
    pub fn exact(self) -> Vec<ReleasedRow> {
        self.agg.exact_rows(self.table)
    }
}

/// Builds a demographic table from its rows (in the order given).
pub fn table_from_rows(table: TableName, rows: Vec<ReleasedRow>) -> TableOut {
    let period = Column::Timestamp(rows.iter().map(|r| r.period).collect());
    let dim = |i: usize| Column::Str(rows.iter().map(|r| r.dims[i].clone()).collect());
    let requests = ints(rows.iter().map(|r| r.requests));
    let visitors = ints(rows.iter().map(|r| r.visitors));
    match table {
        TableName::TrafficByRegion => TableOut {
            name: "traffic_by_region",
            columns: vec![
                ("period_start", period),
                ("continent", dim(0)),
                ("country", dim(1)),
                ("region", dim(2)),
                ("requests", requests),
                ("visitors", visitors),
                ("bytes", ints(rows.iter().map(|r| r.bytes))),
            ],
        },
        TableName::Clients => TableOut {
            name: "clients",
            columns: vec![
                ("period_start", period),
                ("device", dim(0)),
                ("os", dim(1)),
                ("os_version", dim(2)),
                ("browser", dim(3)),
                ("browser_version", dim(4)),
                ("requests", requests),
                ("visitors", visitors),
            ],
        },
        TableName::Referrers => TableOut {
            name: "referrers",
            columns: vec![
                ("period_start", period),
                ("referrer_domain", dim(0)),
                ("requests", requests),
                ("visitors", visitors),
            ],
        },
        TableName::TrafficQuality => panic!("traffic_quality is not built from demographic rows"),
    }
}

/// One row's running totals.
#[derive(Debug, Default, Clone)]
struct Cell {
    requests: u64,
    bytes: u64,
    visitors: table::VisitorTable,
    /// Visitors counted but not kept, disjoint from `visitors` and from each other: those of
    /// partials merged by [`Aggregates::merge_disjoint`] into a table whose sets are not needed,
    /// and those of cells a [`Front`] built as counts ([`Settled::build`] with `counts_only`,
    /// [`Front::count_referrers_only`]). Always 0 in aggregates that keep every set.
    counted: u64,
}

impl Cell {
    fn add(&mut self, obs: &Observation<'_>) {
        self.add_request(obs.visitor, obs.bytes);
    }

    /// Counts one request of `visitor` that sent `bytes`.
    fn add_request(&mut self, visitor: u64, bytes: u64) {
        self.requests += 1;
        // Byte counts come from the log: a hostile line can claim 2^64 - 1.
        self.bytes = self.bytes.saturating_add(bytes);
        self.visitors.add(visitor, Contribution::of(bytes));
    }

    fn merge(&mut self, other: Cell) {
        self.requests += other.requests;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.visitors.merge(other.visitors);
        self.counted += other.counted;
    }

    /// [`Cell::merge`] of a cell whose visitors are none of this one's, keeping only their
    /// number.
    fn merge_count(&mut self, other: Cell) {
        self.requests += other.requests;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.counted += other.visitors.len() as u64 + other.counted;
    }

    /// Distinct visitors, kept or only counted.
    fn distinct(&self) -> u64 {
        self.visitors.len() as u64 + self.counted
    }
}

/// One period's traffic quality counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Quality {
    requests: u64,
    crawler_requests: u64,
    status: [u64; 5], // 2xx, 3xx, 4xx, 5xx, other
    bytes: u64,
    rejected: [u64; REJECTION_REASONS],
    empty_ua: u64,
    unknown_ua: u64,
    unknown_geo: u64,
    /// Streaming: records that came after their period closed.
    late: u64,
}

impl Quality {
    fn merge(&mut self, o: &Quality) {
        self.requests += o.requests;
        self.crawler_requests += o.crawler_requests;
        for i in 0..5 {
            self.status[i] += o.status[i];
        }
        self.bytes = self.bytes.saturating_add(o.bytes);
        for i in 0..REJECTION_REASONS {
            self.rejected[i] += o.rejected[i];
        }
        self.empty_ua += o.empty_ua;
        self.unknown_ua += o.unknown_ua;
        self.unknown_geo += o.unknown_geo;
        self.late += o.late;
    }
}

/// One period's cells of a table, by key. Keys (referrer domains, classes built from
/// User-Agents) come from the log, so the hash is seeded at random (foldhash): fast on
/// the per-line path, and which keys collide cannot be chosen by whoever writes the log.
type Cells<K> = HashMap<K, Cell, foldhash::fast::RandomState>;

/// Below this many visitors in a partial's regions, [`Aggregates::merge`] stays on one thread.
const PARALLEL_MERGE_VISITORS: usize = 20_000;

/// Merges `from`'s cells into `into`'s, period by period. With `counts_only`, a cell already
/// in `into` keeps only the number of the incoming cell's visitors ([`Cell::merge_count`]),
/// which are none of its own.
fn merge_periods<K: std::hash::Hash + Eq>(
    into: &mut BTreeMap<i64, Cells<K>>,
    from: BTreeMap<i64, Cells<K>>,
    counts_only: bool,
) {
    let merge = if counts_only {
        Cell::merge_count
    } else {
        Cell::merge
    };
    for (p, m) in from {
        merge_map(into.entry(p).or_default(), m, merge);
    }
}

fn merge_map<K: std::hash::Hash + Eq>(
    into: &mut Cells<K>,
    from: Cells<K>,
    merge: fn(&mut Cell, Cell),
) {
    for (k, c) in from {
        match into.get_mut(&k) {
            Some(mine) => merge(mine, c),
            None => {
                into.insert(k, c);
            }
        }
    }
}

/// The cell of `key` in period `p` of `maps`, made (with key `owned`) if new. A macro, not a
/// function: a function returning the borrow from `get_mut` or else from `entry` is refused by
/// the borrow checker, and `entry` alone would build an owned key for every request.
macro_rules! cell_in {
    ($maps:expr, $p:expr, $key:expr, $owned:expr) => {{
        let map = $maps.entry($p).or_default();
        match map.get_mut($key) {
            Some(c) => c,
            None => map.entry($owned).or_default(),
        }
    }};
}

/// The index in `Quality::status` of a status: 2xx, 3xx, 4xx, 5xx, anything else (or none).
fn status_class(status: Option<u16>) -> usize {
    // Below 200 the subtraction wraps to a large number, as 600 and above are.
    status.map_or(4, |s| usize::from((s / 100).wrapping_sub(2)).min(4))
}

/// Partial (or complete) aggregates of some periods.
#[derive(Debug, Clone)]
pub struct Aggregates {
    period: Period,
    crawlers: CrawlerHandling,
    traffic: BTreeMap<i64, Cells<Arc<Place>>>,
    clients: BTreeMap<i64, Cells<Arc<ClientClass>>>,
    referrers: BTreeMap<i64, Cells<Str>>,
    quality: BTreeMap<i64, Quality>,
    /// Rejections seen before the first parsed line of the current batch.
    pending: [u64; REJECTION_REASONS],
    /// Period of the last parsed line of the current batch.
    last_period: Option<i64>,
    /// Rejections in batches with no parsed line at all.
    unattributed: [u64; REJECTION_REASONS],
}

impl Aggregates {
    /// Empty aggregates for a period length and crawler handling.
    pub fn new(period: Period, crawlers: CrawlerHandling) -> Self {
        Aggregates {
            period,
            crawlers,
            traffic: BTreeMap::new(),
            clients: BTreeMap::new(),
            referrers: BTreeMap::new(),
            quality: BTreeMap::new(),
            pending: [0; REJECTION_REASONS],
            last_period: None,
            unattributed: [0; REJECTION_REASONS],
        }
    }

    /// Counts one parsed request.
    ///
    /// # Panics
    /// If the request's origin is an address ([`Origin::Address`]), which only a [`Front`]
    /// looks up.
    pub fn observe(&mut self, obs: &Observation<'_>) {
        let Some(p) = self.count_quality(obs) else {
            return;
        };
        let Origin::Place(place, _) = obs.origin else {
            panic!("a request whose place is not looked up yet is counted through a Front");
        };
        let region = cell_in!(self.traffic, p, place, place.clone());
        let client = cell_in!(self.clients, p, obs.client, obs.client.clone());
        let referrer = cell_in!(self.referrers, p, obs.referrer, obs.referrer.clone());
        // The visitor's place in each of the three tables is usually not in the processor's
        // caches: ask for all three, then wait once.
        for cell in [&*region, &*client, &*referrer] {
            cell.visitors.prefetch(obs.visitor);
        }
        region.add(obs);
        client.add(obs);
        referrer.add(obs);
    }

    /// Counts `obs` in its period's traffic quality only: for a pipeline with no other table,
    /// whose requests have no visitor, place, client or referrer worth a cell.
    pub fn observe_quality(&mut self, obs: &Observation<'_>) {
        self.count_quality(obs);
    }

    /// Counts `obs` in its period's traffic quality, and returns that period unless `obs` is
    /// a crawler's request that the demographic tables exclude.
    fn count_quality(&mut self, obs: &Observation<'_>) -> Option<i64> {
        let p = self.period.start(obs.time);
        // Rejections wait in `pending` only until the batch's first parsed line.
        let first_in_batch = self.last_period.replace(p).is_none();
        // Nearly always a period already counted: found without the entry API's call.
        let q = match self.quality.get_mut(&p) {
            Some(q) => q,
            None => self.quality.entry(p).or_default(),
        };
        if first_in_batch && self.pending.iter().any(|&n| n > 0) {
            for (i, n) in std::mem::take(&mut self.pending).into_iter().enumerate() {
                q.rejected[i] += n;
            }
        }
        q.requests += 1;
        q.bytes = q.bytes.saturating_add(obs.bytes);
        // Counted without branching on the request (arithmetic on the flags): which way such a
        // branch goes varies from line to line, and a mispredicted one costs about as much as
        // all of this.
        q.status[status_class(obs.status)] += 1;
        let client = obs.client;
        q.crawler_requests += u64::from(client.crawler);
        q.empty_ua += u64::from(client.empty);
        q.unknown_ua += u64::from(!client.empty & client.unknown);
        // A front counts an address's requests here once it has looked the address up.
        q.unknown_geo += u64::from(matches!(obs.origin, Origin::Place(_, false)));
        if client.crawler && self.crawlers == CrawlerHandling::Exclude {
            return None;
        }
        Some(p)
    }

    /// Counts `n` more requests of period `p` (already counted there) whose address the
    /// database did not know: those a [`Front`] looked up after counting the rest.
    fn count_unknown_geo(&mut self, p: i64, n: u64) {
        if n > 0 {
            self.quality.entry(p).or_default().unknown_geo += n;
        }
    }

    /// The region and client cells of [`Aggregates::observe`], for a request whose period's
    /// quality and referrer are already counted.
    fn observe_region_client(
        &mut self,
        p: i64,
        place: &Arc<Place>,
        client: &Arc<ClientClass>,
        visitor: u64,
        bytes: u64,
    ) {
        cell_in!(self.traffic, p, place, place.clone()).add_request(visitor, bytes);
        cell_in!(self.clients, p, client, client.clone()).add_request(visitor, bytes);
    }

    /// Adds cells of period `p` into `maps` (a period with no cell gets no map).
    fn merge_cells<'k, K: std::hash::Hash + Eq + ?Sized + 'k>(
        maps: &mut BTreeMap<i64, Cells<Arc<K>>>,
        p: i64,
        cells: impl Iterator<Item = (&'k Arc<K>, Option<Cell>)>,
    ) {
        let cells: Cells<Arc<K>> = cells.filter_map(|(k, c)| Some((k.clone(), c?))).collect();
        if !cells.is_empty() {
            merge_map(maps.entry(p).or_default(), cells, Cell::merge);
        }
    }

    /// Counts a rejected line. It has no time of its own: it goes to the period of the nearest
    /// preceding parsed line of the batch, else of the following one.
    pub fn reject(&mut self, why: Rejection, period_hint: Option<i64>) {
        let i = why.index();
        match period_hint.or(self.last_period) {
            Some(p) => {
                self.quality
                    .entry(self.period.start(p))
                    .or_default()
                    .rejected[i] += 1
            }
            None => self.pending[i] += 1,
        }
    }

    /// Counts `n` records that came after their period closed (streaming), in the period
    /// during which they came (`arrived`, Unix seconds).
    pub fn late(&mut self, arrived: i64, n: u64) {
        self.quality
            .entry(self.period.start(arrived))
            .or_default()
            .late += n;
    }

    /// Ends a batch: the next one may come from elsewhere in the input.
    pub fn end_batch(&mut self) {
        for (i, n) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            self.unattributed[i] += n;
        }
        self.last_period = None;
    }

    /// Rejections that could not be placed in any period (inputs with no parsed line).
    pub fn unattributed(&self) -> u64 {
        self.unattributed.iter().sum::<u64>() + self.pending.iter().sum::<u64>()
    }

    /// Parsed requests counted so far.
    pub fn requests(&self) -> u64 {
        self.quality.values().map(|q| q.requests).sum()
    }

    /// Rejected lines counted so far, by reason, in [`Rejection::all`] order (including
    /// unattributed ones).
    pub fn rejections(&self) -> [u64; REJECTION_REASONS] {
        let mut out = self.unattributed;
        for (i, n) in self.pending.iter().enumerate() {
            out[i] += n;
        }
        for q in self.quality.values() {
            for (i, n) in q.rejected.iter().enumerate() {
                out[i] += n;
            }
        }
        out
    }

    /// Visitor records kept in the region cells: one per visitor and period.
    #[cfg(test)]
    pub(crate) fn visitor_records(&self) -> usize {
        self.traffic
            .values()
            .flat_map(Cells::values)
            .map(|c| c.visitors.len())
            .sum()
    }

    /// Combines another partial aggregate of the same pipeline into this one. Exact: the result
    /// is what one aggregate fed both inputs would hold.
    pub fn merge(&mut self, other: Aggregates) {
        self.merge_keeping(other, &[]);
    }

    /// [`Aggregates::merge`] of a partial none of whose visitors are in this one (the workers of
    /// a batch run each count their own visitors: see [`Front::shared`]). In the tables of
    /// `counts_only`, a cell already here keeps only the number of `other`'s visitors, not
    /// their hashes, which saves adding each one to a table: those tables' exact counts stay
    /// right ([`Aggregates::finish`], [`TableRows::exact`]), but their rows can no longer be
    /// taken with their visitors ([`TableRows::with_visitors`] panics), nor the aggregates be
    /// written to a checkpoint ([`Aggregates::to_bytes`] panics).
    ///
    /// Were the visitors not disjoint, one in both would be counted twice in those tables.
    pub fn merge_disjoint(&mut self, other: Aggregates, counts_only: &[TableName]) {
        self.merge_keeping(other, counts_only);
    }

    fn merge_keeping(&mut self, other: Aggregates, counts_only: &[TableName]) {
        let Aggregates {
            traffic,
            clients,
            referrers,
            quality,
            pending,
            unattributed,
            ..
        } = other;
        let only = |t| counts_only.contains(&t);
        let (traffic_counts, clients_counts, referrers_counts) = (
            only(TableName::TrafficByRegion),
            only(TableName::Clients),
            only(TableName::Referrers),
        );
        let visitors: usize = traffic
            .values()
            .flat_map(Cells::values)
            .map(|c| c.visitors.len())
            .sum();
        if visitors < PARALLEL_MERGE_VISITORS {
            merge_periods(&mut self.traffic, traffic, traffic_counts);
            merge_periods(&mut self.clients, clients, clients_counts);
            merge_periods(&mut self.referrers, referrers, referrers_counts);
        } else {
            // Large partials (the workers' at the end of a batch run): the three tables side by
            // side, each on its own thread.
            std::thread::scope(|s| {
                let (mine_traffic, mine_clients) = (&mut self.traffic, &mut self.clients);
                let a = s.spawn(move || merge_periods(mine_traffic, traffic, traffic_counts));
                let b = s.spawn(move || merge_periods(mine_clients, clients, clients_counts));
                merge_periods(&mut self.referrers, referrers, referrers_counts);
                for h in [a, b] {
                    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                }
            });
        }
        for (p, q) in quality {
            self.quality.entry(p).or_default().merge(&q);
        }
        for i in 0..REJECTION_REASONS {
            self.unattributed[i] += unattributed[i] + pending[i];
        }
    }

    /// The finished tables, in the order asked. Unattributed rejections go to the last period.
    pub fn finish(self, tables: &[TableName]) -> Vec<TableOut> {
        self.finish_with(tables, |_, rows| rows.exact())
    }

    /// Like [`Aggregates::finish`], passing each demographic table's rows (with their exact
    /// visitors) through `release` first: the hook for disclosure control, which must see
    /// the true totals of complete periods.
    pub fn finish_with(
        mut self,
        tables: &[TableName],
        mut release: impl FnMut(TableName, TableRows<'_>) -> Vec<ReleasedRow>,
    ) -> Vec<TableOut> {
        self.end_batch();
        if let Some(q) = self.quality.values_mut().next_back() {
            for (i, n) in std::mem::take(&mut self.unattributed)
                .into_iter()
                .enumerate()
            {
                q.rejected[i] += n;
            }
        }
        tables
            .iter()
            .map(|&t| match t {
                TableName::TrafficQuality => self.quality_table(),
                demographic => {
                    let rows = TableRows {
                        agg: &self,
                        table: demographic,
                    };
                    let rows = release(demographic, rows);
                    table_from_rows(demographic, rows)
                }
            })
            .collect()
    }

    /// The rows of a demographic table, sorted by period and dimensions, each with the exact set
    /// of visitor hashes behind it. `traffic_quality` has no such rows (empty).
    pub fn rows(&self, table: TableName) -> Vec<Row> {
        self.cells_by_row(table)
            .into_iter()
            .map(|((period, dims), cells)| Row::from_cells(period, dims, &cells))
            .collect()
    }

    /// The rows of [`Aggregates::rows`] as they are written when nothing is withheld or
    /// perturbed: exact counts. The same as converting those rows, without building each row's
    /// set of visitors to count it (a row of one cell counts its cell's table).
    pub fn exact_rows(&self, table: TableName) -> Vec<ReleasedRow> {
        self.cells_by_row(table)
            .into_iter()
            .map(|((period, dims), cells)| match cells[..] {
                [cell] => ReleasedRow {
                    period,
                    dims,
                    requests: cell.requests,
                    visitors: cell.distinct(),
                    bytes: cell.bytes,
                },
                // Classes that print the same: the union of their visitors, counted in a
                // table of hashes alone (a row's map of contributions is not needed here),
                // and those only counted, which are in no other cell.
                _ => {
                    let mut union = table::Table::<()>::with_capacity(
                        cells.iter().map(|c| c.visitors.len()).sum(),
                    );
                    for cell in &cells {
                        for (visitor, _) in cell.visitors.iter() {
                            union.entry(visitor);
                        }
                    }
                    ReleasedRow {
                        period,
                        dims,
                        requests: cells.iter().map(|c| c.requests).sum(),
                        visitors: union.len() as u64 + cells.iter().map(|c| c.counted).sum::<u64>(),
                        bytes: cells.iter().fold(0u64, |b, c| b.saturating_add(c.bytes)),
                    }
                }
            })
            .collect()
    }

    /// The cells behind each row of a demographic table, by period and dimensions. Client
    /// classes that differ only in flags (crawler/unknown/empty) print the same: their cells
    /// make one row.
    fn cells_by_row(&self, table: TableName) -> BTreeMap<(i64, Vec<Option<Str>>), Vec<&Cell>> {
        let mut rows: BTreeMap<(i64, Vec<Option<Str>>), Vec<&Cell>> = BTreeMap::new();
        let mut add =
            |p: i64, dims: Vec<Option<Str>>, c| rows.entry((p, dims)).or_default().push(c);
        match table {
            TableName::TrafficByRegion => {
                for (&p, m) in &self.traffic {
                    for (k, c) in m {
                        add(
                            p,
                            vec![k.continent.clone(), k.country.clone(), k.region.clone()],
                            c,
                        );
                    }
                }
            }
            TableName::Clients => {
                for (&p, m) in &self.clients {
                    for (k, c) in m {
                        let dims = vec![
                            Some(k.device.clone()),
                            Some(k.os.clone()),
                            k.os_version.clone(),
                            Some(k.browser.clone()),
                            k.browser_version.clone(),
                        ];
                        add(p, dims, c);
                    }
                }
            }
            TableName::Referrers => {
                for (&p, m) in &self.referrers {
                    for (k, c) in m {
                        add(p, vec![Some(k.clone())], c);
                    }
                }
            }
            TableName::TrafficQuality => {}
        }
        rows
    }

    fn quality_table(&self) -> TableOut {
        let q: Vec<(&i64, &Quality)> = self.quality.iter().collect();
        let int = |f: &dyn Fn(&Quality) -> u64| ints(q.iter().map(|(_, x)| f(x)));
        let share = |f: &dyn Fn(&Quality) -> u64| {
            Column::Float(
                q.iter()
                    .map(|(_, x)| {
                        if x.requests == 0 {
                            0.0
                        } else {
                            f(x) as f64 / x.requests as f64
                        }
                    })
                    .collect(),
            )
        };
        let parse_range = 2..2 + ParseError::ALL.len();
        let mut columns = vec![
            (
                "period_start",
                Column::Timestamp(q.iter().map(|(p, _)| **p).collect()),
            ),
            ("requests", int(&|x| x.requests)),
            ("crawler_requests", int(&|x| x.crawler_requests)),
            ("status_2xx", int(&|x| x.status[0])),
            ("status_3xx", int(&|x| x.status[1])),
            ("status_4xx", int(&|x| x.status[2])),
            ("status_5xx", int(&|x| x.status[3])),
            ("status_other", int(&|x| x.status[4])),
            ("bytes", int(&|x| x.bytes)),
            (
                "parse_errors",
                int(&|x| x.rejected[parse_range.clone()].iter().sum()),
            ),
            ("rejected_lines", int(&|x| x.rejected.iter().sum())),
        ];
        const NAMES: [&str; REJECTION_REASONS] = [
            "rejected_invalid_utf8",
            "rejected_line_too_long",
            "rejected_bad_layout",
            "rejected_bad_timestamp",
            "rejected_bad_status",
            "rejected_bad_bytes",
            "rejected_bad_json",
            "rejected_missing_field",
            "rejected_truncated_input",
        ];
        for (i, name) in NAMES.iter().enumerate() {
            columns.push((name, int(&|x| x.rejected[i])));
        }
        columns.extend([
            ("late_records", int(&|x| x.late)),
            ("empty_user_agent_requests", int(&|x| x.empty_ua)),
            ("unknown_user_agent_requests", int(&|x| x.unknown_ua)),
            ("unknown_geo_requests", int(&|x| x.unknown_geo)),
            ("empty_user_agent_share", share(&|x| x.empty_ua)),
            ("unknown_user_agent_share", share(&|x| x.unknown_ua)),
            ("unknown_geo_share", share(&|x| x.unknown_geo)),
        ]);
        TableOut {
            name: "traffic_quality",
            columns,
        }
    }
}

fn ints(it: impl Iterator<Item = u64>) -> Column {
    Column::Int(it.map(|n| i64::try_from(n).unwrap_or(i64::MAX)).collect())
}

mod front;
mod split;
mod table;
mod wire;
pub use front::{Built, Front, Locate, Settled};
pub use wire::DecodeError;

#[cfg(test)]
mod tests;
