//! [`StateDir`]: the operations on `<out>/_state/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use logcensus_aggregate::Aggregates;
use logcensus_policy::{CrawlerHandling, Period};

use crate::error::{io_error, LockError, StateError};
use crate::format::{self, Header, Invalid, FORMAT_VERSION};
use crate::fsio;
use crate::records::{
    Compacted, Published, Removing, Topic, COMPACTED, PUBLISHED, PUBLISH_LOCK, TOPIC,
};
use crate::{OffsetRange, PartialMeta};

const STATE_DIR: &str = "_state";
const PARTIALS_DIR: &str = "partials";
/// Fencing claims: one empty-ish file per partition range start (`<partition>-<from>`).
const CLAIMS_DIR: &str = "claims";
/// Held shared from a partial's claims to its link, exclusively to take an abandoned claim over
/// ([`StateDir::take_over_abandoned`]).
const CLAIMS_LOCK: &str = "claims.lock";
const PARTIAL_EXT: &str = ".partial";
/// Environment variable naming a fail point at which [`StateDir::write_partial`] aborts the
/// process (shared with the pipeline's own fail points): `partial-temp-written` or
/// `partial-renamed`, optionally `@N` to fire on the Nth write through one `StateDir` instead of the first.
pub const FAILPOINT_ENV: &str = "LOGCENSUS_FAILPOINT";
/// How often a read is retried when a compaction changes the state under it.
const ATTEMPTS: usize = 8;

/// A moment inside [`StateDir::write_partial`] at which a test can make it stop, as a crash
/// there would: the worker has not committed the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// The temporary file is written and synced; the partial does not exist yet.
    AfterTempWrite,
    /// The partial exists under its name (its directory not yet synced).
    AfterRename,
}

impl FailPoint {
    /// The name used in [`FAILPOINT_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            FailPoint::AfterTempWrite => "partial-temp-written",
            FailPoint::AfterRename => "partial-renamed",
        }
    }
}

impl fmt::Display for FailPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailPoint::AfterTempWrite => "after writing the temporary file",
            FailPoint::AfterRename => "after renaming the partial into place",
        })
    }
}

/// A fail point and the write (1-based) it fires on.
#[derive(Debug, Clone, Copy)]
struct Trigger {
    point: FailPoint,
    nth: u64,
}

fn trigger_from_env() -> Option<Trigger> {
    let v = std::env::var(FAILPOINT_ENV).ok()?;
    let (name, nth) = match v.split_once('@') {
        Some((name, n)) => (name, n.parse().ok()?),
        None => (v.as_str(), 1),
    };
    [FailPoint::AfterTempWrite, FailPoint::AfterRename]
        .into_iter()
        .find(|p| p.name() == name)
        .map(|point| Trigger { point, nth })
}

/// What the partials and the compacted record cover, read in one consistent pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Per partition, the next offset after every range a partial or compaction covers: where
    /// a worker that is assigned the partition starts (unless Kafka's committed offset is
    /// higher).
    pub offsets: BTreeMap<i32, i64>,
    /// Per partition, the highest watermark recorded.
    pub watermarks: BTreeMap<i32, i64>,
    /// Records counted late, by the partials and by the compacted ones.
    pub late_records: u64,
    /// Every period some partial holds data for (published or not).
    pub periods: BTreeSet<i64>,
    /// Partials present (not yet compacted).
    pub partials: usize,
}

/// Holds the publisher lock until dropped (or until the process exits, however it exits).
#[derive(Debug)]
pub struct PublisherLock {
    _file: File,
}

/// The state directory `<out>/_state/`. Cheap to open; `&StateDir` can be shared by threads.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    partials: PathBuf,
    injected: Option<Trigger>,
    from_env: Option<Trigger>,
    writes: AtomicU64,
}

/// A verified partial, during a pass.
struct Entry<'a> {
    path: PathBuf,
    header: Header,
    bytes: &'a [u8],
    body: std::ops::Range<usize>,
}

fn partial_name(worker: &str, seq: u64) -> String {
    format!("{worker}-{seq:012}{PARTIAL_EXT}")
}

/// `(worker, seq)` of a partial's file name.
fn parse_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_suffix(PARTIAL_EXT)?;
    let (worker, seq) = stem.rsplit_once('-')?;
    if seq.len() < 12 || !seq.bytes().all(|b| b.is_ascii_digit()) || worker.is_empty() {
        return None;
    }
    Some((worker, seq.parse().ok()?))
}

fn check_worker(worker: &str) -> Result<(), StateError> {
    let ok = (1..=100).contains(&worker.len())
        && !worker.starts_with('.')
        && worker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadWorker {
            worker: worker.to_string(),
        })
    }
}

fn describe(period: Period, crawlers: CrawlerHandling) -> String {
    let crawlers = match crawlers {
        CrawlerHandling::Exclude => "excluded",
        CrawlerHandling::Include => "included",
    };
    format!("{} periods with crawlers {crawlers}", period.name())
}

impl StateDir {
    /// Opens `<out>/_state/`, creating it and `partials/` (owner-only) as needed.
    pub fn open(out: &Path) -> Result<StateDir, StateError> {
        let root = out.join(STATE_DIR);
        let partials = root.join(PARTIALS_DIR);
        fsio::private_dir(&partials)?;
        fsio::private_dir(&root)?;
        Ok(StateDir {
            root,
            partials,
            injected: None,
            from_env: trigger_from_env(),
            writes: AtomicU64::new(0),
        })
    }

    /// `<out>/_state`.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<out>/_state/partials`.
    pub fn partials_dir(&self) -> &Path {
        &self.partials
    }

    /// Test hook: the `nth` (1-based) [`StateDir::write_partial`] from now on stops at `point`
    /// with [`StateError::Injected`], leaving the files as a crash there would. (For a real
    /// crash in a child process, set [`FAILPOINT_ENV`]: the process aborts instead.)
    pub fn inject_failure(mut self, point: FailPoint, nth: u64) -> StateDir {
        self.injected = Some(Trigger {
            point,
            nth: self.writes.load(Ordering::Relaxed) + nth,
        });
        self
    }

    fn fail_point(&self, point: FailPoint, write: u64, path: &Path) -> Result<(), StateError> {
        if let Some(t) = self.from_env {
            if t.point == point && t.nth == write {
                eprintln!("fail point {}: aborting", point.name());
                std::process::abort();
            }
        }
        match self.injected {
            Some(t) if t.point == point && t.nth == write => Err(StateError::Injected {
                point,
                path: path.to_path_buf(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes a checkpoint: `agg` (the delta since the worker's previous partial) and `meta`,
    /// as `partials/<worker>-<seq:012>.partial`, atomically and durably; returns its path. Only
    /// once this returns may the worker commit the offsets in `meta` to Kafka.
    ///
    /// Rejections in `agg` that belong to no period (see `Aggregates::unattributed`) are
    /// counted, on reading, in the period of the highest watermark in `meta` (else of
    /// `created_unix`), so that every count of a partial belongs to exactly one period and is
    /// published once. A worker that knows better places them first
    /// (`Aggregates::place_unattributed`).
    ///
    /// Never replaces a file: an existing name is [`StateError::Exists`].
    pub fn write_partial(
        &self,
        meta: &PartialMeta,
        agg: &Aggregates,
    ) -> Result<PathBuf, StateError> {
        check_worker(&meta.worker)?;
        for (&partition, r) in &meta.offsets {
            if r.from < 0 || r.to < r.from {
                return Err(StateError::BadRange {
                    partition,
                    from: r.from,
                    to: r.to,
                });
            }
        }
        let write = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let unattributed_period = (agg.unattributed() > 0).then(|| {
            let t = meta
                .watermarks
                .values()
                .copied()
                .max()
                .unwrap_or(meta.created_unix);
            agg.period().start(t)
        });
        let mut periods = agg.periods();
        if let Some(p) = unattributed_period {
            if let Err(i) = periods.binary_search(&p) {
                periods.insert(i, p);
            }
        }
        let header = Header {
            meta: meta.clone(),
            periods,
            unattributed_period,
        };
        let bytes = format::encode(&header, &agg.to_bytes());

        let name = partial_name(&meta.worker, meta.seq);
        let path = self.partials.join(&name);
        let tmp = self.partials.join(fsio::temp_name(&name));
        if let Err(e) = fsio::write_durable(&tmp, &bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.fail_point(FailPoint::AfterTempWrite, write, &path)?;
        // Held from the claims to the link, so that no claim is taken over while its partial
        // is on its way ([`StateDir::take_over_abandoned`]).
        let writing = self.claims_lock()?;
        let claimed = match self.claim(meta, &writing) {
            Ok(claimed) => claimed,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // A hard link never replaces an existing file (a rename would, silently losing a
        // partial whose offsets may be committed already).
        let linked = match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists { path: path.clone() })
            }
            Err(_) if path.exists() => Err(StateError::Exists { path: path.clone() }),
            // A file system without hard links: checked above, now renamed.
            Err(_) => fs::rename(&tmp, &path).map_err(io_error("rename into place", &path)),
        };
        if let Err(e) = linked {
            // No partial holds these ranges: their claims would only refuse the next owner.
            let _ = fs::remove_file(&tmp);
            self.unclaim(claimed);
            return Err(e);
        }
        drop(writing);
        fsio::remove(&tmp)?;
        self.fail_point(FailPoint::AfterRename, write, &path)?;
        fsio::sync_dir(&self.partials)?;
        Ok(path)
    }

    /// Fencing: claims the start of each partition range in `meta`. Two workers that both
    /// believe they own a partition (one was evicted from the group by a session timeout but
    /// still runs) start their ranges at the same offset; the first claim wins and the other
    /// gets [`StateError::Claimed`] and must abandon its delta (its records are read again by
    /// the partition's owner). A worker re-claiming its own start (a retry after a crash) may.
    ///
    /// All or nothing: when one range cannot be claimed, the claims this call made for the
    /// others are taken back. Left in place, such a claim would name a worker whose partial
    /// was never written, and whoever reads that partition next from the same offset (its
    /// committed offset, since nothing after it was made durable) could not claim it. Returns
    /// the claims it made, for [`StateDir::write_partial`] to take back if the partial cannot
    /// be put in place. A crash between the claim and the link still leaves its claims: the
    /// next claimer takes them over ([`StateDir::take_over_abandoned`]). `writing` is the
    /// caller's shared hold of the claims lock ([`StateDir::claims_lock`]).
    fn claim(&self, meta: &PartialMeta, writing: &File) -> Result<Vec<PathBuf>, StateError> {
        let claims = self.root.join(CLAIMS_DIR);
        fsio::private_dir(&claims)?;
        let mut made = Vec::new();
        let claimed = meta
            .offsets
            .iter()
            .filter(|(_, r)| r.from != r.to)
            .try_for_each(|(&partition, r)| {
                let path = claims.join(format!("{partition}-{}", r.from));
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(mut f) => {
                        made.push(path.clone());
                        use std::io::Write;
                        f.write_all(meta.worker.as_bytes())
                            .and_then(|()| f.sync_all())
                            .map_err(io_error("write", &path))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let owner = fs::read_to_string(&path).map_err(io_error("read", &path))?;
                        if owner == meta.worker {
                            Ok(())
                        } else if self.take_over_abandoned(
                            writing,
                            &claims,
                            partition,
                            r.from,
                            &meta.worker,
                        )? {
                            made.push(path.clone());
                            Ok(())
                        } else {
                            // Named as it is now: another worker may have taken it over.
                            let owner = fs::read_to_string(&path).unwrap_or(owner);
                            Err(StateError::Claimed {
                                partition,
                                from: r.from,
                                owner,
                            })
                        }
                    }
                    Err(e) => Err(io_error("create", &path)(e)),
                }
            })
            .and_then(|()| fsio::sync_dir(&claims));
        match claimed {
            Ok(()) => Ok(made),
            Err(e) => {
                self.unclaim(made);
                Err(e)
            }
        }
    }

    /// The claims lock, held shared: every partial holds it from its claims to its link, so
    /// that a worker holding it exclusively knows no claim is on its way to a partial.
    fn claims_lock(&self) -> Result<File, StateError> {
        let path = self.root.join(CLAIMS_LOCK);
        let lock = fsio::open_lock_file(&path)?;
        lock.lock_shared().map_err(io_error("lock", &path))?;
        Ok(lock)
    }

    /// Takes over the claim of `partition` from offset `from` for `worker` if it was abandoned:
    /// no partial (nor the compacted record) covers that offset, while no other worker is
    /// between claiming and linking (the claims lock, `writing`, held exclusively from here to
    /// the caller's link). Its worker claimed the range and never put its partial in place (it
    /// crashed in between), so no record of the range was counted; without this, every later
    /// owner of the partition, reading from the same committed offset, would be refused for as
    /// long as that worker did not come back under its name. A claim whose partial is in place
    /// is the fence doing its work: refused.
    fn take_over_abandoned(
        &self,
        writing: &File,
        claims: &Path,
        partition: i32,
        from: i64,
        worker: &str,
    ) -> Result<bool, StateError> {
        // From shared to exclusive: the shared hold is let go first, so two workers doing this
        // at once take turns instead of waiting for each other.
        writing
            .lock()
            .map_err(io_error("lock", self.root.join(CLAIMS_LOCK)))?;
        if self
            .coverage()?
            .offsets
            .get(&partition)
            .is_some_and(|&next| next > from)
        {
            return Ok(false);
        }
        fsio::replace_atomic(claims, &format!("{partition}-{from}"), worker.as_bytes())?;
        Ok(true)
    }

    /// Takes back claims [`StateDir::claim`] made. Best effort: a claim that cannot be removed
    /// is no worse than before.
    fn unclaim(&self, made: Vec<PathBuf>) {
        if made.is_empty() {
            return;
        }
        for path in made {
            let _ = fs::remove_file(path);
        }
        let _ = fsio::sync_dir(&self.root.join(CLAIMS_DIR));
    }

    /// Removes the claims of ranges the compacted record holds (their partials are folded in;
    /// a late writer overlapping them is caught by the merge's overlap check).
    fn prune_claims(&self, c: &Compacted) -> Result<(), StateError> {
        let claims = self.root.join(CLAIMS_DIR);
        let Ok(entries) = fs::read_dir(&claims) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((p, from)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            let (Ok(p), Ok(from)) = (p.parse::<i32>(), from.parse::<i64>()) else {
                continue;
            };
            let compacted = c
                .offsets
                .get(&p)
                .is_some_and(|ranges| ranges.iter().any(|r| r.from <= from && from < r.to));
            if compacted {
                fsio::remove(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Reads one partial: its meta and its aggregates, unattributed rejections placed (see
    /// [`StateDir::write_partial`]). Verifies the checksum.
    pub fn read_partial(&self, path: &Path) -> Result<(PartialMeta, Aggregates), StateError> {
        let bytes = fs::read(path).map_err(io_error("read", path))?;
        let parsed = self.parse(path, &bytes)?;
        let entry = Entry {
            path: path.to_path_buf(),
            header: parsed.header,
            bytes: &bytes,
            body: parsed.body,
        };
        let agg = decode_body(&entry)?;
        Ok((entry.header.meta, agg))
    }

    fn parse(&self, path: &Path, bytes: &[u8]) -> Result<format::Parsed, StateError> {
        format::decode(bytes).map_err(|e| match e {
            Invalid::NotAPartial => StateError::NotAPartial {
                path: path.to_path_buf(),
                dir: self.partials.clone(),
            },
            Invalid::Version(found) => StateError::Version {
                path: path.to_path_buf(),
                found,
                expected: FORMAT_VERSION,
            },
            Invalid::Corrupt { detail, claims } => StateError::Corrupt {
                path: path.to_path_buf(),
                detail,
                claims,
            },
        })
    }

    /// Names of the partial files present, sorted (by worker, then sequence number).
    fn partial_names(&self) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.partials).map_err(io_error("list", &self.partials))? {
            let entry = entry.map_err(io_error("list", &self.partials))?;
            if let Some(name) = entry.file_name().to_str() {
                if name.ends_with(PARTIAL_EXT) && !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Calls `f` with every partial not being removed by compaction `c`, verified. Returns
    /// false if a file vanished meanwhile (a compaction deleted it: the caller starts over).
    fn each_partial(
        &self,
        c: &Compacted,
        mut f: impl FnMut(Entry<'_>) -> Result<(), StateError>,
    ) -> Result<bool, StateError> {
        for name in self.partial_names()? {
            let path = self.partials.join(&name);
            let Some(bytes) = fsio::read_optional(&path)? else {
                return Ok(false);
            };
            let parsed = self.parse(&path, &bytes)?;
            let meta = &parsed.header.meta;
            if partial_name(&meta.worker, meta.seq) != name {
                return Err(StateError::Corrupt {
                    path,
                    detail: format!(
                        "its name does not match the worker {:?} and sequence number {} inside",
                        meta.worker, meta.seq
                    ),
                    claims: Some(meta.offsets.clone()),
                });
            }
            if c.is_removing(&name, &parsed.checksum) {
                continue;
            }
            f(Entry {
                path,
                header: parsed.header,
                bytes: &bytes,
                body: parsed.body,
            })?;
        }
        Ok(true)
    }

    /// Runs `pass` until no compaction happened during it (a pass returning `None` saw a file
    /// vanish): its result is then one consistent view of partials plus compacted record.
    fn consistent<T>(
        &self,
        mut pass: impl FnMut(&Compacted) -> Result<Option<T>, StateError>,
    ) -> Result<T, StateError> {
        for _ in 0..ATTEMPTS {
            let before = self.compacted()?;
            if let Some(t) = pass(&before)? {
                if self.compacted()?.generation == before.generation {
                    return Ok(t);
                }
            }
        }
        Err(StateError::Unsettled {
            path: self.root.clone(),
        })
    }

    /// Every partial's path and meta, sorted by worker and sequence number. Verifies every
    /// checksum: a damaged partial is an error naming it. Removes temporary files left by
    /// writers that died (older than 15 minutes; younger ones may be in use), beside the
    /// partials, in the state directory and among the claims, and ignores the rest.
    pub fn list_partials(&self) -> Result<Vec<(PathBuf, PartialMeta)>, StateError> {
        fsio::remove_stale_temps(&self.partials)?;
        fsio::remove_stale_temps(&self.root)?;
        // A claim is written as a temporary file and renamed: one whose writer died between the
        // two (a claim taken over, say) is left there too.
        let claims = self.root.join(CLAIMS_DIR);
        if claims.is_dir() {
            fsio::remove_stale_temps(&claims)?;
        }
        self.consistent(|c| {
            let mut out = Vec::new();
            let complete = self.each_partial(c, |e| {
                out.push((e.path, e.header.meta));
                Ok(())
            })?;
            Ok(complete.then_some(out))
        })
    }

    /// The next sequence number for `worker`: after every partial it wrote, compacted ones
    /// included. Reads file names only.
    pub fn next_seq(&self, worker: &str) -> Result<u64, StateError> {
        check_worker(worker)?;
        let compacted = self.compacted()?.last_seq.get(worker).copied();
        let names = self.partial_names()?;
        let present = names
            .iter()
            .filter_map(|n| parse_name(n))
            .filter(|(w, _)| *w == worker)
            .map(|(_, seq)| seq)
            .max();
        Ok(compacted.max(present).map_or(0, |s| s + 1))
    }

    /// Offsets, watermarks, late records and periods of the partials and the compacted record,
    /// in one pass (each partial read and verified once).
    pub fn coverage(&self) -> Result<Coverage, StateError> {
        self.consistent(|c| {
            let mut cov = Coverage {
                late_records: c.late_records,
                watermarks: c.watermarks.clone(),
                offsets: c
                    .offsets
                    .iter()
                    .filter_map(|(&p, rs)| Some((p, rs.iter().map(|r| r.to).max()?)))
                    .collect(),
                ..Coverage::default()
            };
            let complete = self.each_partial(c, |e| {
                let m = &e.header.meta;
                for (&p, r) in &m.offsets {
                    let o = cov.offsets.entry(p).or_insert(r.to);
                    *o = (*o).max(r.to);
                }
                for (&p, &w) in &m.watermarks {
                    let mine = cov.watermarks.entry(p).or_insert(w);
                    *mine = (*mine).max(w);
                }
                cov.late_records += m.late_records;
                cov.periods.extend(e.header.periods.iter().copied());
                cov.partials += 1;
                Ok(())
            })?;
            Ok(complete.then_some(cov))
        })
    }

    /// Per partition, the next offset after everything the partials and the compacted record
    /// cover. A worker assigned a partition seeks to `max(committed, covered)`.
    pub fn covered_offsets(&self) -> Result<BTreeMap<i32, i64>, StateError> {
        Ok(self.coverage()?.offsets)
    }

    /// Per partition, the highest watermark recorded (partials and compacted record).
    pub fn watermarks(&self) -> Result<BTreeMap<i32, i64>, StateError> {
        Ok(self.coverage()?.watermarks)
    }

    /// Records counted late so far (partials and compacted record).
    pub fn late_records(&self) -> Result<u64, StateError> {
        Ok(self.coverage()?.late_records)
    }

    /// Merges every partial's periods for which `keep` is true into one aggregate, and
    /// returns it with the late records counted so far (partials and compacted record).
    ///
    /// `keep` must refuse published windows: a compaction killed before deleting its partials
    /// leaves them behind, and this reads them like any other. Period length and crawler
    /// handling come from the first partial read (with no partial, the result is empty, by
    /// day, crawlers excluded); every other partial must agree.
    /// [`StateDir::merge_partials_into`] checks them against the pipeline instead.
    ///
    /// Fails, before anything is released, if two partials (or a partial and the compacted
    /// record) cover overlapping offsets of a partition: their records would count twice.
    pub fn merge_partials(
        &self,
        keep: impl Fn(i64) -> bool,
    ) -> Result<(Aggregates, u64), StateError> {
        let (agg, late) = self.merge(None, &keep)?;
        let agg = agg.unwrap_or_else(|| Aggregates::new(Period::Day, CrawlerHandling::Exclude));
        Ok((agg, late))
    }

    /// Like [`StateDir::merge_partials`], into `into`, whose period length and crawler
    /// handling every partial read must have ([`StateError::Mismatch`] otherwise). Returns the
    /// late records counted so far.
    pub fn merge_partials_into(
        &self,
        into: &mut Aggregates,
        keep: impl Fn(i64) -> bool,
    ) -> Result<u64, StateError> {
        let (agg, late) = self.merge(Some((into.period(), into.crawlers())), &keep)?;
        if let Some(agg) = agg {
            into.merge(agg);
        }
        Ok(late)
    }

    fn merge(
        &self,
        expect: Option<(Period, CrawlerHandling)>,
        keep: &dyn Fn(i64) -> bool,
    ) -> Result<(Option<Aggregates>, u64), StateError> {
        self.consistent(|c| {
            let mut out: Option<Aggregates> = None;
            let mut settings = expect.map(|s| (s, "the pipeline".to_string()));
            let mut late = c.late_records;
            let mut ranges: BTreeMap<i32, Vec<(OffsetRange, PathBuf)>> = BTreeMap::new();
            let compacted_path = self.root.join(COMPACTED);
            for (&p, rs) in &c.offsets {
                let v = ranges.entry(p).or_default();
                v.extend(rs.iter().map(|r| (*r, compacted_path.clone())));
            }
            let complete = self.each_partial(c, |e| {
                let m = &e.header.meta;
                late += m.late_records;
                for (&p, &r) in &m.offsets {
                    if r.from < r.to {
                        ranges.entry(p).or_default().push((r, e.path.clone()));
                    }
                }
                if !e.header.periods.iter().any(|&p| keep(p)) {
                    return Ok(());
                }
                let mut agg = decode_body(&e)?;
                let mine = (agg.period(), agg.crawlers());
                match &settings {
                    Some((s, from)) if *s != mine => {
                        return Err(StateError::Mismatch {
                            path: e.path,
                            found: describe(mine.0, mine.1),
                            expected: describe(s.0, s.1),
                            expected_from: from.clone(),
                        })
                    }
                    Some(_) => {}
                    None => settings = Some((mine, format!("partial {}", e.path.display()))),
                }
                let wanted = agg.split_periods(|p| !keep(p));
                match &mut out {
                    Some(o) => o.merge(wanted),
                    None => out = Some(wanted),
                }
                Ok(())
            })?;
            if !complete {
                return Ok(None);
            }
            check_overlaps(ranges)?;
            Ok(Some((out, late)))
        })
    }

    /// Every period some partial holds data for, published or not (headers only: no
    /// aggregate is decoded).
    pub fn partial_periods(&self) -> Result<BTreeSet<i64>, StateError> {
        Ok(self.coverage()?.periods)
    }

    fn compacted(&self) -> Result<Compacted, StateError> {
        self.read_json(COMPACTED).map(Option::unwrap_or_default)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.root.join(name);
        let Some(bytes) = fsio::read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::StateFile {
                path,
                detail: e.to_string(),
            })
    }

    fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(value).expect("state records always serialize");
        bytes.push(b'\n');
        fsio::replace_atomic(&self.root, name, &bytes)
    }

    /// Start (Unix seconds) of every window released so far.
    pub fn published(&self) -> Result<BTreeSet<i64>, StateError> {
        Ok(self
            .read_json::<Published>(PUBLISHED)?
            .unwrap_or_default()
            .windows)
    }

    /// Records `windows` (their starts) as released, atomically, with the ones before. Call it
    /// once their tables are durable, before [`StateDir::compact`].
    pub fn mark_published(&self, windows: &[i64]) -> Result<(), StateError> {
        let mut p: Published = self.read_json(PUBLISHED)?.unwrap_or_default();
        let before = p.windows.len();
        p.windows.extend(windows.iter().copied());
        if p.windows.len() == before && self.root.join(PUBLISHED).exists() {
            return Ok(());
        }
        self.write_json(PUBLISHED, &p)
    }

    /// Deletes every partial all of whose periods are `done` (published), after folding its
    /// offsets, watermarks, late records and sequence number into `compacted.json`. Returns
    /// how many it deleted. Also finishes a compaction that was killed before deleting.
    ///
    /// Killed at any point, nothing is counted twice or lost: the record is written (atomically)
    /// before any partial is deleted, and lists the partials it folded in (by name and
    /// checksum), which every reader then skips. Run it under [`StateDir::lock_publisher`].
    pub fn compact(&self, done: impl Fn(i64) -> bool) -> Result<usize, StateError> {
        let c = self.compacted()?;
        self.finish_removing(&c)?;
        let selected: Vec<(String, blake3::Hash, PartialMeta)> = self.consistent(|c| {
            let mut selected = Vec::new();
            let complete = self.each_partial(c, |e| {
                if e.header.periods.iter().all(|&p| done(p)) {
                    let name = file_name(&e.path);
                    let checksum =
                        format::stored_checksum(e.bytes).expect("a verified partial has one");
                    selected.push((name, checksum, e.header.meta));
                }
                Ok(())
            })?;
            Ok(complete.then_some(selected))
        })?;
        let c = self.compacted()?;
        if selected.is_empty() && c.removing.is_empty() {
            return Ok(0);
        }
        let mut next = c;
        next.generation += 1;
        next.removing = selected
            .iter()
            .map(|(name, checksum, _)| Removing {
                name: name.clone(),
                checksum: checksum.to_hex().to_string(),
            })
            .collect();
        for (_, _, meta) in &selected {
            next.fold(meta);
        }
        self.write_json(COMPACTED, &next)?;
        self.finish_removing(&next)?;
        self.prune_claims(&next)?;
        Ok(selected.len())
    }

    /// Deletes the partials a compaction folded in, if they are still there and still the
    /// same files.
    fn finish_removing(&self, c: &Compacted) -> Result<(), StateError> {
        let mut removed = false;
        for r in &c.removing {
            let path = self.partials.join(&r.name);
            if tail_checksum(&path)?.is_some_and(|sum| c.is_removing(&r.name, &sum)) {
                fsio::remove(&path)?;
                removed = true;
            }
        }
        if removed {
            fsio::sync_dir(&self.partials)?;
        }
        Ok(())
    }

    /// Takes the lock that makes one publisher at a time (`_state/publish.lock`). The operating
    /// system releases it when the process exits, however it exits.
    pub fn lock_publisher(&self) -> Result<PublisherLock, LockError> {
        let path = self.root.join(PUBLISH_LOCK);
        let file = fsio::open_lock_file(&path)?;
        #[cfg(unix)]
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(LockError::Busy(path)),
            Err(e) => return Err(io_error("lock", &path)(e.into()).into()),
        }
        Ok(PublisherLock { _file: file })
    }

    /// Records how many partitions the topic has (workers learn it on assignment), so that a
    /// publisher knows a partition nobody has read yet holds every window open.
    pub fn record_topic_partitions(&self, partitions: u32) -> Result<(), StateError> {
        if self.topic_partitions()? == Some(partitions) {
            return Ok(());
        }
        self.write_json(TOPIC, &Topic { partitions })
    }

    /// The partition count last recorded by [`StateDir::record_topic_partitions`].
    pub fn topic_partitions(&self) -> Result<Option<u32>, StateError> {
        Ok(self.read_json::<Topic>(TOPIC)?.map(|t| t.partitions))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("partial paths end in a UTF-8 name")
        .to_string()
}

fn decode_body(e: &Entry<'_>) -> Result<Aggregates, StateError> {
    let mut agg =
        Aggregates::from_bytes(&e.bytes[e.body.clone()]).map_err(|d| StateError::Corrupt {
            path: e.path.clone(),
            detail: d.to_string(),
            claims: Some(e.header.meta.offsets.clone()),
        })?;
    if let Some(p) = e.header.unattributed_period {
        agg.place_unattributed(p);
    }
    Ok(agg)
}

/// The checksum stored in a partial's last 32 bytes, if the file exists.
fn tail_checksum(path: &Path) -> Result<Option<blake3::Hash>, StateError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    let mut tail = [0u8; 32];
    match f
        .seek(SeekFrom::End(-32))
        .and_then(|_| f.read_exact(&mut tail))
    {
        Ok(()) => Ok(Some(blake3::Hash::from_bytes(tail))),
        // Shorter than a checksum: not a file compaction folded in.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Fails if two ranges of a partition overlap.
fn check_overlaps(ranges: BTreeMap<i32, Vec<(OffsetRange, PathBuf)>>) -> Result<(), StateError> {
    for (partition, mut rs) in ranges {
        rs.sort_by_key(|(r, _)| (r.from, r.to));
        let mut furthest: Option<&(OffsetRange, PathBuf)> = None;
        for cur in &rs {
            if let Some(prev) = furthest {
                if cur.0.from < prev.0.to {
                    return Err(StateError::Overlap {
                        partition,
                        first: prev.0,
                        first_file: prev.1.clone(),
                        second: cur.0,
                        second_file: cur.1.clone(),
                    });
                }
            }
            if furthest.is_none_or(|f| cur.0.to > f.0.to) {
                furthest = Some(cur);
            }
        }
    }
    Ok(())
}
