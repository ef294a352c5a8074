//! The per-line path: where the policy is enforced.

use std::net::IpAddr;
use std::sync::Arc;

use logcensus_aggregate::{
    Aggregates, Front, Locate, Observation, Origin, Rejection, Settled, Str, VisitorKeys,
    VisitorSecret,
};
use logcensus_enrich::{Answered, GeoDb, GeoLookup, Place, ReferrerClassifier, UaClassifier};
use logcensus_parse::bytes::QuoteMarks;
use logcensus_parse::{LineParser, ParseError};
use logcensus_policy::rules::{address_bytes, client_address, leading_dotted_quad, parse_ip};
use logcensus_policy::{ClientAddressSource, GeoLevel, Pipeline, TableName};
use logcensus_source::{Batch, Entry};

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const FIRST_SECOND: i64 = -62_135_596_800;
const LAST_SECOND: i64 = 253_402_300_799;

/// How many rejected lines are described (by file, line and reason, never content) at debug
/// level per worker, so a wrong format is easy to diagnose without flooding the log.
const DESCRIBED_REJECTIONS: u32 = 10;

/// One worker's stages and partial aggregates.
pub struct LineWorker<'p> {
    stages: Stages<'p>,
    agg: Aggregates,
    /// Region and client counts on their way into `agg` (see [`Front`]).
    front: Front,
    described: u32,
}

/// The per-line stages (parser, caches, visitor keys), apart from where their counts go.
pub struct Stages<'p> {
    pipeline: &'p Pipeline,
    parser: LineParser,
    ua: UaClassifier,
    geo: Option<GeoLookup<'p>>,
    no_geo: Arc<Place>,
    visitors: VisitorKeys,
    referrers: ReferrerClassifier,
    /// Whether visitors are hashed and requests counted in the demographic cells: always, unless
    /// [`Stages::only_written_tables`] found that the pipeline has no table of visitors.
    demographic: bool,
    /// Whether referrers are classified: always, unless [`Stages::only_written_tables`] found no
    /// `referrers` table.
    referrer_table: bool,
    /// The referrer value of a line whose referrer is not classified (counted nowhere).
    unclassified: Str,
    /// Whether a line's observation carries its address for the worker's [`Front`] to look up
    /// once per visitor ([`Origin::Address`]) instead of its place: set by
    /// [`LineWorker::with_front`] when there is a database and the address is read.
    locate_late: bool,
    /// What [`Stages::look_ahead`] found for each entry of the current batch.
    ahead: Vec<Option<Ahead>>,
    /// Its working lists: the batch's leading addresses, where they are, and their answers.
    addresses: Vec<IpAddr>,
    words: Vec<(usize, usize, usize)>,
    answers: Vec<Answered>,
}

/// A line's first word (where it is in the batch, and its length), the address it reads as,
/// and what the database says of that address.
#[derive(Debug, Clone, Copy)]
struct Ahead {
    at: usize,
    len: usize,
    ip: IpAddr,
    answer: Answered,
}

/// What became of a line that parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted, at this time (Unix seconds, UTC).
    Counted(i64),
    /// Not counted: `admit` refused its time (its period is closed).
    Refused(i64),
}

impl<'p> LineWorker<'p> {
    /// A worker for a loaded pipeline. The format was checked when the pipeline was loaded.
    pub fn new(pipeline: &'p Pipeline, geo: Option<&'p GeoDb>, secret: VisitorSecret) -> Self {
        Self::with_front(pipeline, geo, secret, Front::new())
    }

    /// A worker that counts its visitors through `front`: one of [`Front::shared`], for a run
    /// whose workers share their visitors out.
    pub fn with_front(
        pipeline: &'p Pipeline,
        geo: Option<&'p GeoDb>,
        secret: VisitorSecret,
        front: Front,
    ) -> Self {
        let mut stages = Stages::new(pipeline, geo, secret);
        stages.only_written_tables();
        stages.locate_late =
            stages.demographic && stages.geo.is_some() && pipeline.policy.client_address.read;
        LineWorker {
            stages,
            agg: Aggregates::new(pipeline.period, pipeline.crawlers),
            front,
            described: 0,
        }
    }

    /// Processes one batch from `input`, describing the first rejected lines at debug level.
    pub fn batch(&mut self, input: &str, batch: &Batch) {
        self.batch_describing(batch, |i, reason| {
            tracing::debug!(input, line = batch.first_line + i, reason, "line rejected");
        });
    }

    /// Processes one batch whose line numbers are not known yet (a piece of a file): the
    /// worker's first rejected lines are handed to `describe` as (entry index, reason), to be
    /// described once they are.
    pub fn batch_describing(&mut self, batch: &Batch, mut describe: impl FnMut(u64, &'static str)) {
        self.stages.look_ahead(batch);
        let mut text = Utf8Stretch::new(&batch.data);
        let quotes = batch.quotes();
        for (i, entry) in batch.entries.iter().enumerate() {
            let rejection = match *entry {
                Entry::Line { start, end } => {
                    let ahead = self.stages.ahead.get(i).copied().flatten();
                    let marks = quotes.map(|bits| QuoteMarks::new(bits, start as usize));
                    let counted = match text.line(start as usize, end as usize) {
                        Some(line) => self.count(line, marks, ahead),
                        None => Err(Rejection::InvalidUtf8),
                    };
                    match counted {
                        Ok(()) => continue,
                        Err(r) => r,
                    }
                }
                Entry::TooLong => Rejection::LineTooLong,
                Entry::Truncated => Rejection::Truncated,
            };
            if self.described < DESCRIBED_REJECTIONS {
                self.described += 1;
                describe(i as u64, rejection.name());
            }
            self.agg.reject(rejection, None);
        }
        self.agg.end_batch();
    }

    /// Processes one line.
    pub fn line(&mut self, line: &[u8]) -> Result<(), Rejection> {
        self.count(utf8(line)?, None, None)
    }

    #[inline(always)]
    fn count(
        &mut self,
        line: &str,
        marks: Option<QuoteMarks<'_>>,
        ahead: Option<Ahead>,
    ) -> Result<(), Rejection> {
        let (front, agg) = (&mut self.front, &mut self.agg);
        if !self.stages.demographic {
            return self
                .stages
                .count(line, marks, ahead, |_| true, |obs| agg.observe_quality(obs))
                .map(|_| ());
        }
        self.stages
            .count(line, marks, ahead, |_| true, |obs| front.observe(obs, agg))?;
        if self.front.is_full() {
            self.front.settle(&mut self.agg, &mut self.stages.locator());
        }
        Ok(())
    }

    /// The worker's partial aggregates.
    pub fn into_aggregates(mut self) -> Aggregates {
        self.front
            .flush_into(&mut self.agg, &mut self.stages.locator());
        self.agg
    }

    /// The worker's partial aggregates without their region and client cells, and its visitor
    /// records from which [`Settled::add_all`] builds those cells for all the workers of a run
    /// at once.
    pub fn into_parts(mut self) -> (Aggregates, Settled) {
        let settled = self
            .front
            .settle_into(&mut self.agg, &mut self.stages.locator());
        (self.agg, settled)
    }
}

impl<'p> Stages<'p> {
    /// The stages of a loaded pipeline. The format was checked when the pipeline was loaded.
    pub fn new(pipeline: &'p Pipeline, geo: Option<&'p GeoDb>, secret: VisitorSecret) -> Self {
        let unknown: Arc<str> = Arc::from(logcensus_enrich::UNKNOWN);
        Stages {
            pipeline,
            parser: LineParser::new(&pipeline.format)
                .expect("the format was compiled when the pipeline was loaded"),
            ua: UaClassifier::new(pipeline.policy.user_agent.major_versions),
            geo: geo.map(GeoDb::lookup),
            no_geo: Arc::new(Place {
                continent: Some(unknown.clone()),
                country: (pipeline.geo_level >= GeoLevel::Country).then(|| unknown.clone()),
                region: (pipeline.geo_level >= GeoLevel::Region).then(|| unknown.clone()),
            }),
            visitors: VisitorKeys::new(secret),
            referrers: ReferrerClassifier::new(&pipeline.own_domains),
            demographic: true,
            referrer_table: true,
            unclassified: Str::from(""),
            locate_late: false,
            ahead: Vec::new(),
            addresses: Vec::new(),
            words: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Computes only what the pipeline's tables need, for counts that are written once and
    /// never merged with anything else (a batch run): without a table of visitors (only
    /// `traffic_quality`), no visitor is hashed and a request counts in the traffic quality
    /// alone; without `referrers`, no referrer is classified. A streaming run keeps every
    /// table's counts, since its checkpoints may be published by a pipeline with more tables.
    pub fn only_written_tables(&mut self) {
        let tables = &self.pipeline.tables;
        self.demographic = tables.iter().any(|&t| t != TableName::TrafficQuality);
        self.referrer_table = tables.contains(&TableName::Referrers);
    }

    /// Looks up the places of a batch's addresses before its lines are processed one by one
    /// (see [`GeoLookup::look_ahead`]), for lines that start with an address and a space
    /// (Apache's `%h` first) or JSON lines whose mapping reads one
    /// ([`LineParser::guess_remote_host`]), when the pipeline reads the connecting address and
    /// each line's place is looked up (not `locate_late`: a worker of a pipeline of traffic
    /// quality alone). A line whose parsed address is those very bytes of the batch then takes
    /// the address and its place from here; any other line finds its own, as without looking
    /// ahead.
    pub fn look_ahead(&mut self, batch: &Batch) {
        self.ahead.clear();
        if self.locate_late {
            return;
        }
        let Some(geo) = &mut self.geo else {
            return;
        };
        if !self.pipeline.policy.client_address.read
            || self.pipeline.client_address != ClientAddressSource::RemoteHost
        {
            return;
        }
        self.addresses.clear();
        self.words.clear();
        let json = self.parser.reads_address_by_key();
        for (i, entry) in batch.entries.iter().enumerate() {
            let Entry::Line { start, end } = *entry else {
                continue;
            };
            let line = batch.line(start, end);
            // The address and the bytes of the line it was read from.
            let found = if json {
                // Where its key says (a guess the parse confirms).
                self.parser
                    .guess_remote_host(line)
                    .and_then(|word| Some((parse_ip(word)?, word)))
            } else {
                // Most first words are a dotted quad: read it and check for the space after.
                match leading_dotted_quad(line) {
                    Some((v4, n)) if line.get(n) == Some(&b' ') => {
                        Some((IpAddr::V4(v4), &line[..n]))
                    }
                    // An address with brackets and a port is at most 53 bytes.
                    _ => {
                        let head = &line[..line.len().min(56)];
                        memchr::memchr(b' ', head)
                            .map(|n| &head[..n])
                            .and_then(|word| Some((parse_ip(word)?, word)))
                    }
                }
            };
            if let Some((ip, word)) = found {
                self.addresses.push(ip);
                self.words.push((i, word.as_ptr() as usize, word.len()));
            }
        }
        self.answers.clear();
        geo.look_ahead(&self.addresses, &mut self.answers);
        self.ahead.resize(batch.entries.len(), None);
        for ((&(i, at, len), &ip), &answer) in
            self.words.iter().zip(&self.addresses).zip(&self.answers)
        {
            self.ahead[i] = Some(Ahead {
                at,
                len,
                ip,
                answer,
            });
        }
    }

    /// Processes one line into `agg`. Only the fields the policy allows are read from the
    /// record. `admit` sees the line's time first: when it says no, nothing else is read (the
    /// address is never hashed) and the line is not counted.
    pub fn line(
        &mut self,
        line: &[u8],
        agg: &mut Aggregates,
        admit: impl FnOnce(i64) -> bool,
    ) -> Result<Outcome, Rejection> {
        if !self.demographic {
            return self.count(utf8(line)?, None, None, admit, |obs| {
                agg.observe_quality(obs)
            });
        }
        self.count(utf8(line)?, None, None, admit, |obs| agg.observe(obs))
    }

    /// [`Stages::line`], handing the line's observation to `count`; `marks` are the line's
    /// quotes when its reader marked them, and `ahead` is what [`Stages::look_ahead`] found for
    /// this line of the current batch.
    fn count(
        &mut self,
        text: &str,
        marks: Option<QuoteMarks<'_>>,
        ahead: Option<Ahead>,
        admit: impl FnOnce(i64) -> bool,
        count: impl FnOnce(&Observation<'_>),
    ) -> Result<Outcome, Rejection> {
        // Borrowed where it was returned: moving it out of the `Result` copied all of it (a
        // `memcpy` of ~300 bytes per line).
        let parsed = match marks {
            Some(marks) => self.parser.parse_marked(text.as_bytes(), marks),
            None => self.parser.parse(text.as_bytes()),
        };
        let record = match &parsed {
            Ok(record) => record,
            Err(e) => return Err(Rejection::Parse(*e)),
        };
        let time = record
            .time
            .ok_or(Rejection::Parse(ParseError::MissingField))?;
        // Years 0001 to 9999 only, after the line's UTC offset is applied: partitions are named
        // `date=YYYY-MM-DD`, and one odd line must not stop a run.
        if !(FIRST_SECOND..=LAST_SECOND).contains(&time) {
            return Err(Rejection::Parse(ParseError::Timestamp));
        }
        if !admit(time) {
            return Ok(Outcome::Refused(time));
        }
        let policy = &self.pipeline.policy;

        let ua_bytes: &[u8] = match (&record.user_agent, policy.user_agent.read) {
            (Some(ua), true) => ua,
            _ => b"",
        };
        // The whole line is valid UTF-8 and escapes are undone on whole characters, so this
        // only fails for a JSON value with an escaped lone surrogate: treat that as no value.
        let ua_str = sub_str(text, ua_bytes).or_else(|| std::str::from_utf8(ua_bytes).ok());
        let (client, kept) = self.ua.classify_keeping(ua_str);

        let (address, answered) = if policy.client_address.read {
            let host = record.remote_host.as_deref();
            match (ahead, host) {
                (Some(a), Some(h)) if h.as_ptr() as usize == a.at && h.len() == a.len => {
                    (Some(a.ip), Some(a.answer))
                }
                _ => (
                    address_of(
                        self.pipeline.client_address,
                        text,
                        host,
                        record.forwarded_for.as_deref(),
                    ),
                    None,
                ),
            }
        } else {
            (None, None)
        };
        let origin = match (&mut self.geo, answered, address) {
            (Some(_), _, Some(ip)) if self.locate_late => Origin::Address(ip),
            (Some(g), Some(a), _) => {
                let (place, known) = g.place_of(a);
                Origin::Place(place, known)
            }
            (Some(g), None, _) => {
                let (place, known) = g.place(address);
                Origin::Place(place, known)
            }
            (None, _, _) => Origin::Place(&self.no_geo, false),
        };
        let visitor = if self.demographic {
            let key = self.visitors.key(time);
            // The User-Agent's digest is kept with it in the classifier's cache, for its day.
            let digest = match kept {
                Some(Some((day, digest))) if *day == key.day() => *digest,
                Some(kept) => {
                    let digest = key.user_agent(ua_bytes);
                    *kept = Some((key.day(), digest));
                    digest
                }
                None => key.user_agent(ua_bytes),
            };
            match address {
                Some(ip) => key.visitor_of(&address_bytes(ip), digest),
                None => key.visitor_of(&[0; 16], digest),
            }
        } else {
            0
        };
        let referer = if policy.referrer.read {
            record.referer.as_deref()
        } else {
            None
        };
        let referrer = if self.referrer_table {
            self.referrers.classify(referer)
        } else {
            &self.unclassified
        };
        count(&Observation {
            time,
            visitor,
            origin,
            client,
            referrer,
            status: if policy.request.status {
                record.status
            } else {
                None
            },
            bytes: if policy.request.bytes {
                record.bytes.unwrap_or(0)
            } else {
                0
            },
        });
        Ok(Outcome::Counted(time))
    }
}

/// A worker's database lookups, for its [`Front`] (see [`Origin::Address`]).
struct Locator<'a, 'p> {
    geo: Option<&'a mut GeoLookup<'p>>,
    no_geo: &'a Arc<Place>,
    answers: &'a mut Vec<Answered>,
}

impl<'p> Stages<'p> {
    fn locator(&mut self) -> Locator<'_, 'p> {
        Locator {
            geo: self.geo.as_mut(),
            no_geo: &self.no_geo,
            answers: &mut self.answers,
        }
    }
}

impl Locate for Locator<'_, '_> {
    fn locate(&mut self, addresses: &[IpAddr], each: &mut dyn FnMut(usize, &Arc<Place>, bool)) {
        let Some(geo) = &mut self.geo else {
            for i in 0..addresses.len() {
                each(i, self.no_geo, false);
            }
            return;
        };
        // Together: their memory reads overlap (see `GeoLookup::look_ahead`).
        self.answers.clear();
        geo.look_ahead(addresses, self.answers);
        for (i, &answer) in self.answers.iter().enumerate() {
            let (place, known) = geo.place_of(answer);
            each(i, place, known);
        }
    }
}

/// The client address (from `source`) of a line (`text`) whose fields are `host` and
/// `forwarded`. A remote host borrowed from the line that is a dotted quad is read with the rest
/// of the line after it ([`leading_dotted_quad`] reads 16 bytes at once, which the host alone
/// seldom has); anything else as [`client_address`] reads it.
#[inline]
fn address_of(
    source: ClientAddressSource,
    text: &str,
    host: Option<&[u8]>,
    forwarded: Option<&[u8]>,
) -> Option<IpAddr> {
    if let (ClientAddressSource::RemoteHost, Some(host)) = (source, host) {
        let rest = (host.as_ptr() as usize)
            .checked_sub(text.as_ptr() as usize)
            .and_then(|start| text.as_bytes().get(start..));
        if let Some((v4, n)) = rest.and_then(leading_dotted_quad) {
            if n == host.len() {
                return Some(IpAddr::V4(v4));
            }
        }
    }
    client_address(source, host, forwarded)
}

/// A line as text, or its rejection.
fn utf8(line: &[u8]) -> Result<&str, Rejection> {
    simdutf8::basic::from_utf8(line).map_err(|_| Rejection::InvalidUtf8)
}

/// A batch's lines as text, checked a stretch of many lines at a time rather than line by line
/// (a check has a fixed cost, and a line is short). A stretch runs from a line's start to the
/// end of the batch's bytes, or to just before the first byte that is not UTF-8; a line that
/// does not fit in the current stretch starts a new one, and a line that does not fit in the
/// stretch it starts has bytes that are not UTF-8. After a stretch that ends at such a byte the
/// next one is short (4 KiB, doubling while they end well), so that a batch of bad lines is not
/// read to its end once per line.
struct Utf8Stretch<'b> {
    data: &'b [u8],
    /// Where `text` starts in `data`.
    start: usize,
    text: &'b str,
    /// The most bytes the next stretch checks.
    reach: usize,
}

impl<'b> Utf8Stretch<'b> {
    fn new(data: &'b [u8]) -> Self {
        Utf8Stretch {
            data,
            start: 0,
            text: "",
            reach: usize::MAX,
        }
    }

    /// `data[start..end]` as text, or `None` when it is not UTF-8.
    #[inline(always)]
    fn line(&mut self, start: usize, end: usize) -> Option<&'b str> {
        if start < self.start || end > self.start + self.text.len() {
            self.refill(start, end);
        }
        // The stretch starts at this line or before, at a line's start. A line that is UTF-8 is
        // then in it whole, and cut at ASCII bytes, on character boundaries; a line that is not
        // ends past it.
        self.text.get(start - self.start..end - self.start)
    }

    /// Starts a new stretch at `start` (see [`Utf8Stretch::line`]).
    #[inline(never)]
    fn refill(&mut self, start: usize, end: usize) {
        let limit = start.saturating_add(self.reach.max(end - start));
        let stretch = &self.data[start..limit.min(self.data.len())];
        self.start = start;
        match simdutf8::compat::from_utf8(stretch) {
            Ok(text) => {
                self.text = text;
                self.reach = self.reach.saturating_mul(2);
            }
            Err(e) => {
                self.text = simdutf8::basic::from_utf8(&stretch[..e.valid_up_to()])
                    .expect("the bytes before the first error are UTF-8");
                // A character cut by the stretch's end is no sign of bad lines.
                self.reach = match e.error_len() {
                    Some(_) => 4096,
                    None => self.reach.saturating_mul(2),
                };
            }
        }
    }
}

/// `part` as a `&str` without validating it again, when it is a slice of `text` that starts and
/// ends on character boundaries (a field borrowed from the line, cut at ASCII delimiters).
fn sub_str<'t>(text: &'t str, part: &[u8]) -> Option<&'t str> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    text.get(start..start.checked_add(part.len())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logcensus_aggregate::Column;
    use logcensus_policy::TableName;

    /// Checked a stretch at a time, each line is text exactly when it is UTF-8 on its own:
    /// batches of lines with multi-byte characters, bytes that are not UTF-8 (a lone
    /// continuation byte, a character cut short, at a line's start, middle or end), runs of many
    /// bad lines, a first line that starts after a cut character, and stale bytes after the last.
    #[test]
    fn stretches_agree_with_line_by_line_checks() {
        let pieces: [&[u8]; 8] = [
            b"plain ascii line",
            "caf\u{e9} \u{1f600} na\u{ef}ve".as_bytes(),
            b"bad \x80 continuation",
            b"cut \xe2\x82",
            b"\xff at the start",
            b"at the end \xc3",
            b"",
            "\u{4e2d}\u{6587}".as_bytes(),
        ];
        let mut rng = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut bad_lines = 0;
        for round in 0..300 {
            // A cut character before the first line, as a piece read from a little earlier has.
            let mut data = if round % 3 == 0 {
                vec![0xa9, b'\n']
            } else {
                Vec::new()
            };
            let mut lines = Vec::new();
            let n = 1 + next() % 400;
            // Some batches are mostly bad lines, some nearly all good.
            let bad_share = [0, 2, 50, 95][round % 4];
            for _ in 0..n {
                let mut piece = pieces[(next() % 8) as usize];
                let is_bad = std::str::from_utf8(piece).is_err();
                if is_bad && next() % 100 >= bad_share {
                    piece = pieces[0];
                }
                let start = data.len();
                data.extend_from_slice(piece);
                lines.push((start, data.len()));
                data.push(b'\n');
            }
            data.extend_from_slice(b"stale \xff\xfe");
            let mut stretch = Utf8Stretch::new(&data);
            for &(start, end) in &lines {
                let want = std::str::from_utf8(&data[start..end]).ok();
                bad_lines += usize::from(want.is_none());
                assert_eq!(stretch.line(start, end), want, "round {round}");
            }
        }
        assert!(bad_lines > 10_000, "{bad_lines}");
    }

    /// A pipeline `name` written in `dir` and loaded: the site policy, `format` lines, the
    /// database `db`, daily periods at region level, `tables` (a TOML list's items) and
    /// `crawlers`.
    fn day_pipeline(
        dir: &std::path::Path,
        db: &std::path::Path,
        name: &str,
        format: &str,
        tables: &str,
        crawlers: &str,
    ) -> Pipeline {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[pipeline]\nname = \"{name}\"\npolicy = \"{}\"\n[source]\nformat = \"{format}\"\n[geoip]\ndatabase = \"{}\"\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\ntables = [{tables}]\ncrawlers = \"{crawlers}\"\n",
                root.join("pipelines/policies/site-privacy-policy.toml").display(),
                db.display(),
            ),
        )
        .unwrap();
        Pipeline::load(&p).unwrap()
    }

    /// `lines` as one batch, as a reader cuts it.
    fn batch_of(lines: &[String]) -> Batch {
        let mut batch = Batch::default();
        batch.first_line = 1;
        for l in lines {
            let start = batch.data.len() as u32;
            batch.data.extend_from_slice(l.as_bytes());
            let end = batch.data.len() as u32;
            batch.data.push(b'\n');
            batch.entries.push(Entry::Line { start, end });
        }
        batch
    }

    /// A batch worker gives the tables that looking each line's address up and counting it on
    /// its own gives (`Stages::line` into plain aggregates): through its front, which looks
    /// each visitor's address up once, and for a pipeline of traffic quality alone (no front),
    /// with the batch's addresses looked up ahead. First words that are IPv4, IPv6, bracketed,
    /// with a port, IPv4-mapped, not an address at all, or not the `%h` field (a `vcombined`
    /// line starts with the virtual host), repeated within the batch and across batches; some
    /// of them crawlers', which the `vcombined` pipeline leaves out of its demographic tables.
    #[test]
    fn a_batch_worker_counts_what_lines_alone_count() {
        let plain = a_batch_worker_counts_what_lines_alone_count_with(false);
        // The address index changes none either.
        let indexed = a_batch_worker_counts_what_lines_alone_count_with(true);
        assert_eq!(indexed, plain);
    }

    /// [`a_batch_worker_counts_what_lines_alone_count`], with the database's address index or
    /// without; the tables counted line by line, for each format.
    fn a_batch_worker_counts_what_lines_alone_count_with(
        indexed: bool,
    ) -> Vec<Vec<logcensus_aggregate::TableOut>> {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("city.mmdb");
        std::fs::write(&db, logcensus_fixtures::city_mmdb()).unwrap();
        let hosts = [
            "3.80.0.1",
            "2a01:4f8::1",
            "[2804:14c::9]",
            "[2804:14c::1]:443",
            "86.144.1.1:8080",
            "::ffff:126.1.2.3",
            "-",
            "client.example",
            "203.0.113.9",
            "63.140.0.1",
        ];
        let mut tables = Vec::new();
        for (format, crawlers) in [("combined", "include"), ("vcombined", "exclude")] {
            let load = |tables: &str| {
                let name = format!("{format}-{}", tables.len());
                day_pipeline(dir.path(), &db, &name, format, tables, crawlers)
            };
            let pipeline =
                load("\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"");
            let quality_alone = load("\"traffic_quality\"");
            let mut geo = GeoDb::open(&db, &pipeline.geo_fields, pipeline.geo_level).unwrap();
            if indexed {
                let index = dir.path().join("city.idx");
                std::fs::write(
                    &index,
                    GeoDb::make_index(&db, &pipeline.geo_fields).unwrap(),
                )
                .unwrap();
                geo.use_index(&index).unwrap();
            }
            let lines: Vec<String> = (0..400)
                .map(|i| {
                    let host = hosts[(i * 7 + i / 13) % hosts.len()];
                    // A virtual host written as an address: the first word reads as one.
                    let vhost = if format == "vcombined" { "198.51.100.7:80 " } else { "" };
                    let ua = match i % 5 {
                        0 => "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)".to_string(),
                        _ => format!("Mozilla/5.0 (X11; Linux x86_64; rv:{0}.0) Gecko/20100101 Firefox/{0}.0", 100 + i % 4),
                    };
                    format!(
                        "{vhost}{host} - - [17/May/2026:10:{:02}:00 +0000] \"GET /a HTTP/1.1\" 200 {} \"https://r{}.example.org/\" \"{ua}\"",
                        i % 60,
                        100 + i,
                        i % 3,
                    )
                })
                .collect();
            let secret = || VisitorSecret::from_bytes([7; 32]);
            let mut one_by_one = Stages::new(&pipeline, Some(&geo), secret());
            let mut agg = Aggregates::new(pipeline.period, pipeline.crawlers);
            for l in &lines {
                one_by_one.line(l.as_bytes(), &mut agg, |_| true).unwrap();
            }
            let plain = agg.finish(&TableName::ALL);
            geo.forget_lookups();
            let batched = |pipeline: &Pipeline, geo: &GeoDb| {
                let mut w = LineWorker::new(pipeline, Some(geo), secret());
                for chunk in lines.chunks(150) {
                    w.batch("test", &batch_of(chunk));
                }
                w.into_aggregates().finish(&TableName::ALL)
            };
            assert_eq!(batched(&pipeline, &geo), plain, "{format}");
            geo.forget_lookups();
            let quality = batched(&quality_alone, &geo);
            let quality_of = |tables: &[logcensus_aggregate::TableOut]| {
                tables.iter().find(|t| t.name == "traffic_quality").cloned()
            };
            assert_eq!(quality_of(&quality), quality_of(&plain), "{format}");
            assert!(plain[0].num_rows() >= 5, "{format}: {:?}", plain[0]);
            tables.push(plain);
        }
        tables
    }

    /// A run opens the database with its address index when the index can be used, and
    /// without it (a warning) when it cannot: missing, or made from another database. A damaged
    /// index is found by its checksum: by the run's end for a batch run, at once for a
    /// streaming worker, which then goes on without it.
    #[test]
    fn an_unusable_address_index_is_left_out() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("city.mmdb");
        std::fs::write(&db, logcensus_fixtures::city_mmdb()).unwrap();
        let flat = dir.path().join("flat.mmdb");
        std::fs::write(&flat, logcensus_fixtures::flat_mmdb()).unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(
            &p,
            format!(
                "[pipeline]\nname = \"t\"\npolicy = \"{}\"\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\ntables = [\"traffic_by_region\"]\ncrawlers = \"include\"\n",
                root.join("pipelines/policies/site-privacy-policy.toml").display(),
            ),
        )
        .unwrap();
        let pipeline = Pipeline::load(&p).unwrap();
        let index = dir.path().join("city.idx");
        let bytes = GeoDb::make_index(&db, &pipeline.geo_fields).unwrap();
        std::fs::write(&index, &bytes).unwrap();
        let mut damaged_bytes = bytes.clone();
        let last = damaged_bytes.len() - 1;
        damaged_bytes[last] ^= 1;
        let damaged = dir.path().join("damaged.idx");
        std::fs::write(&damaged, damaged_bytes).unwrap();
        let other = dir.path().join("flat.idx");
        std::fs::write(
            &other,
            GeoDb::make_index(&flat, &pipeline.geo_fields).unwrap(),
        )
        .unwrap();
        let open = |index: &std::path::Path, check_now: bool| {
            crate::open_geo(&pipeline, Some(&db), Some(index), check_now)
                .unwrap()
                .unwrap()
        };
        for check_now in [false, true] {
            let geo = open(&index, check_now);
            assert!(geo.has_index());
            geo.index_intact().unwrap();
            assert!(!open(&dir.path().join("missing.idx"), check_now).has_index());
            assert!(!open(&other, check_now).has_index());
        }
        // A batch run finds the damage before it writes; a streaming worker at once.
        let geo = open(&damaged, false);
        assert!(geo.has_index());
        let e = geo.index_intact().unwrap_err().to_string();
        assert!(
            e.contains("its checksum does not match its contents"),
            "{e}"
        );
        let geo = open(&damaged, true);
        assert!(!geo.has_index());
        geo.index_intact().unwrap();
    }

    /// A batch worker of a pipeline whose only table is `traffic_quality` hashes no visitor and
    /// classifies no referrer, and counts the quality the full pipeline counts: crawlers, empty
    /// and unknown User-Agents, addresses the database does not know, statuses, bytes and
    /// rejected lines. A streaming run's stages still compute everything.
    #[test]
    fn traffic_quality_alone_counts_what_it_counts_beside_the_other_tables() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("city.mmdb");
        std::fs::write(&db, logcensus_fixtures::city_mmdb()).unwrap();
        let load = |name: &str, tables: &str| {
            day_pipeline(dir.path(), &db, name, "combined", tables, "exclude")
        };
        let full = load(
            "full",
            "\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"",
        );
        let alone = load("alone", "\"traffic_quality\"");
        let hosts = ["3.80.0.1", "2a01:4f8::1", "203.0.113.9", "-", "63.140.0.1"];
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "",
            "-",
            "zz-unknown-agent",
        ];
        let mut lines: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "{} - - [{}/May/2026:10:00:00 +0000] \"GET /a HTTP/1.1\" {} {} \"https://www.site{}.com/x\" \"{}\"",
                    hosts[i % 5],
                    16 + i % 2,
                    [200, 301, 404, 503, 99][i / 3 % 5],
                    i * 10,
                    i % 4,
                    agents[i / 7 % 5],
                )
            })
            .collect();
        lines.push("not a log line".into());
        let secret = || VisitorSecret::from_bytes([5; 32]);
        let geo = GeoDb::open(&db, &full.geo_fields, full.geo_level).unwrap();
        let quality = |pipeline: &Pipeline| {
            let mut w = LineWorker::new(pipeline, Some(&geo), secret());
            let mut visitors = std::collections::BTreeSet::new();
            let mut referrers = std::collections::BTreeSet::new();
            for l in &lines {
                let _ = w.stages.count(
                    l,
                    None,
                    None,
                    |_| true,
                    |obs| {
                        visitors.insert(obs.visitor);
                        referrers.insert(obs.referrer.to_string());
                    },
                );
            }
            w.batch("test", &batch_of(&lines));
            let table = w.into_aggregates().finish(&[TableName::TrafficQuality]);
            (table, visitors.len(), referrers.len())
        };
        let (want, visitors, referrers) = quality(&full);
        assert!(visitors > 10 && referrers >= 4, "{visitors} {referrers}");
        let (got, visitors, referrers) = quality(&alone);
        assert_eq!(
            (visitors, referrers),
            (1, 1),
            "one value each: none computed"
        );
        assert_eq!(got, want);
        let crawlers = match &got[0]
            .columns
            .iter()
            .find(|(n, _)| *n == "crawler_requests")
        {
            Some((_, Column::Int(v))) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert!(crawlers.iter().all(|&n| n > 0), "{crawlers:?}");
        // Sixty lines with a two-digit status, and the one that is no log line.
        assert_eq!(int(&got[0].columns, "rejected_lines"), 61);
        // A streaming run's stages keep every table's counts (its checkpoints may be published
        // by a pipeline with more tables): visitors hashed, referrers classified.
        let mut stages = Stages::new(&alone, Some(&geo), secret());
        let mut seen = std::collections::BTreeSet::new();
        for l in &lines[..20] {
            let _ = stages.count(
                l,
                None,
                None,
                |_| true,
                |obs| {
                    seen.insert((obs.visitor, obs.referrer.to_string()));
                },
            );
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    /// Each line's visitor hash is the day key's hash of its address and User-Agent, computed
    /// afresh: the per-User-Agent digests kept in the classifier's cache are those of the
    /// line's day (days alternate, so a digest of the wrong day would be reused), and User-Agents
    /// that trim alike, are empty, `-`, or missing get their own.
    #[test]
    fn visitor_hashes_are_the_day_keys_hash_of_address_and_user_agent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../pipelines/policies/site-privacy-policy.toml");
        std::fs::write(
            &p,
            format!("[pipeline]\nname = \"s\"\npolicy = \"{}\"\n[aggregate]\nperiod = \"day\"\ntables = [\"clients\", \"traffic_quality\"]\ncrawlers = \"include\"\n", policy.display()),
        )
        .unwrap();
        let pipeline = Pipeline::load(&p).unwrap();
        let secret = VisitorSecret::from_bytes([3; 32]);
        let mut stages = Stages::new(&pipeline, None, secret.clone());
        let user_agents = [
            "curl/8.0",
            " curl/8.0",
            "curl/8.0 ",
            "",
            "-",
            "Mozilla/5.0 (X11)",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..60u32 {
            let (day, hour) = (16 + (i / 4) % 3, i % 24);
            let address = format!("192.0.2.{}", i % 7);
            let ua = user_agents[i as usize % user_agents.len()];
            let line = format!("{address} - - [{day}/May/2026:{hour:02}:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"{ua}\"");
            let mut got = None;
            let outcome = stages
                .count(&line, None, None, |_| true, |obs| got = Some(obs.visitor))
                .unwrap();
            let Outcome::Counted(time) = outcome else {
                panic!("{outcome:?}");
            };
            let ip: IpAddr = address.parse().unwrap();
            // A `-` field is no User-Agent, as an empty one.
            let ua = if ua == "-" { "" } else { ua };
            let want = secret
                .day_key(time.div_euclid(86_400))
                .visitor(&address_bytes(ip), ua.as_bytes());
            assert_eq!(got, Some(want), "{line}");
            seen.insert((address, ua, day, want));
        }
        // One hash per (address, User-Agent, day), and no two alike.
        let hashes: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.3).collect();
        assert_eq!(hashes.len(), seen.len());
        assert!(seen.len() > 30, "{}", seen.len());
    }

    /// A policy that forbids reading the address, the User-Agent, the referrer and the status.
    const STRICT: &str = r#"
id = "strict"
[client_address]
read = false
finest_geo = "continent"
count_visitors = false
[user_agent]
read = false
major_versions = false
[referrer]
read = false
[time]
finest_period = "day"
[request]
method = false
status = true
bytes = true
"#;

    fn quality(lines: &[&str]) -> Vec<(&'static str, Column)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("strict.toml"), STRICT).unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(
            &p,
            "[pipeline]\nname = \"s\"\npolicy = \"strict.toml\"\n[aggregate]\nperiod = \"day\"\ngeo_level = \"continent\"\ntables = [\"traffic_quality\"]\ncrawlers = \"include\"\n",
        )
        .unwrap();
        let pipeline = Pipeline::load(&p).unwrap();
        let mut w = LineWorker::new(&pipeline, None, VisitorSecret::from_bytes([1; 32]));
        for l in lines {
            w.line(l.as_bytes()).unwrap();
        }
        let mut t = w.into_aggregates().finish(&[TableName::TrafficQuality]);
        t.remove(0).columns
    }

    fn int(cols: &[(&'static str, Column)], name: &str) -> i64 {
        match &cols.iter().find(|(n, _)| *n == name).unwrap().1 {
            Column::Int(v) => v.iter().sum(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dates_outside_years_1_to_9999_and_huge_byte_counts_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../pipelines/policies/site-privacy-policy.toml");
        std::fs::write(
            &p,
            format!("[pipeline]\nname = \"s\"\npolicy = \"{}\"\n[aggregate]\nperiod = \"day\"\ntables = [\"traffic_quality\"]\ncrawlers = \"include\"\n", policy.display()),
        )
        .unwrap();
        let pipeline = Pipeline::load(&p).unwrap();
        let mut w = LineWorker::new(&pipeline, None, VisitorSecret::from_bytes([1; 32]));
        // In range in its own zone, year 10000 in UTC.
        assert_eq!(
            w.line(
                b"3.80.0.1 - - [31/Dec/9999:23:30:00 -0100] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\""
            ),
            Err(Rejection::Parse(ParseError::Timestamp))
        );
        let huge = "3.80.0.1 - - [17/May/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 18446744073709551615 \"-\" \"-\"";
        w.line(huge.as_bytes()).unwrap();
        w.line(huge.as_bytes()).unwrap();
        let t = w.into_aggregates().finish(&[TableName::TrafficQuality]);
        let bytes = match &t[0].columns.iter().find(|(n, _)| *n == "bytes").unwrap().1 {
            Column::Int(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(bytes, [i64::MAX], "saturates instead of overflowing");
    }

    #[test]
    fn fields_the_policy_does_not_name_are_not_read() {
        let cols = quality(&[
            "3.80.0.1 - - [17/May/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 10 \"https://www.google.com/\" \"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)\"",
            "3.80.0.2 - - [17/May/2026:11:00:00 +0000] \"GET / HTTP/1.1\" 404 5 \"-\" \"curl/8.0\"",
        ]);
        assert_eq!(int(&cols, "requests"), 2);
        // The User-Agent was not read: no crawler recognised, every request has an empty one.
        assert_eq!(int(&cols, "crawler_requests"), 0);
        assert_eq!(int(&cols, "empty_user_agent_requests"), 2);
        // The address was not read: no place for anyone.
        assert_eq!(int(&cols, "unknown_geo_requests"), 2);
        // Status and bytes are allowed.
        assert_eq!(int(&cols, "status_2xx"), 1);
        assert_eq!(int(&cols, "status_4xx"), 1);
        assert_eq!(int(&cols, "bytes"), 15);
    }
}
