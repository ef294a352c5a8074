//! Address → place, through a MaxMind DB file, at the pipeline's level.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use logcensus_policy::{GeoFields, GeoLevel};
use maxminddb::PathElement;

use crate::prefetch::prefetch;
use crate::{Str, UNKNOWN};

mod index;
mod record;
mod tree;
mod zeroed;

pub use index::IndexError;
use index::{AddressIndex, DbIdentity, Indexed, IndexedV6};
use tree::{Bytes, Source, Tree};
use zeroed::{ZeroValid, Zeroed};

/// Where an address is, no finer than the pipeline's level. `None` means "below the level"
/// (written as null); `(unknown)` means the database had no answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub continent: Option<Str>,
    pub country: Option<Str>,
    pub region: Option<Str>,
}

/// A GeoIP database that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {}: {source}; check --geoip or [geoip] database", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a usable MaxMind DB (.mmdb) file: {detail}; check --geoip or [geoip] database", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("[geoip.fields] {key} = \"{path}\" is not a valid path: use dotted keys with numbers for array indexes, e.g. \"subdivisions.0.iso_code\"")]
    BadPath { key: &'static str, path: String },
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The string at `segs` in a looked-up record, as the `maxminddb` crate decodes it.
fn decode_string<S: AsRef<[u8]>>(
    result: &maxminddb::LookupResult<'_, S>,
    segs: &[Seg],
) -> Option<String> {
    let path: Vec<PathElement<'_>> = segs
        .iter()
        .map(|s| match s {
            Seg::Key(k) => PathElement::Key(k),
            Seg::Index(i) => PathElement::Index(*i),
        })
        .collect();
    result.decode_path::<String>(&path).ok().flatten()
}

fn parse_path(key: &'static str, path: &str) -> Result<Vec<Seg>, GeoError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path.split('.')
        .map(|s| {
            if s.is_empty() {
                Err(GeoError::BadPath {
                    key,
                    path: path.to_string(),
                })
            } else if let Ok(i) = s.parse::<usize>() {
                Ok(Seg::Index(i))
            } else {
                Ok(Seg::Key(s.to_string()))
            }
        })
        .collect()
}

/// An open database with its field mapping. Shared by all workers.
pub struct GeoDb {
    reader: maxminddb::Reader<Bytes>,
    /// The same bytes' search tree, for walking many addresses at once (`None` if the crate's
    /// reader is the only way in).
    tree: Option<Tree>,
    continent: Vec<Seg>,
    country: Vec<Seg>,
    subdivision: Vec<Seg>,
    level: GeoLevel,
    /// Human description of the database, for logs (type and build date).
    pub description: String,
    /// Address → answer, shared by every worker's lookup handle: most lines repeat an address,
    /// and walking the tree of a real database costs a cache miss per level.
    addresses: AddressCache,
    /// The answers met so far, shared so that the address cache can name them by index.
    records: Mutex<Records>,
    /// The database's IPv4 /24s, made offline (`logcensus geoip-index`), when the run has one.
    index: Option<AddressIndex>,
}

/// What the workers have learnt from the database's records.
#[derive(Default)]
struct Records {
    /// Data-section offset → index in `answers`: many networks share one record.
    by_offset: HashMap<usize, u32, foldhash::fast::RandomState>,
    /// Where a record's continent, country and subdivision values are ([`record::heads`]) →
    /// index in `answers`: a city database has a record per city, but stores each country and
    /// region once, so most new records need no strings read.
    by_heads: HashMap<[Option<usize>; 3], u32, foldhash::fast::RandomState>,
    /// Distinct places with whether the database knew them; as many as the database has
    /// distinct regions, whatever the log holds.
    answers: Vec<(Place, bool)>,
    by_answer: HashMap<(Place, bool), u32, foldhash::fast::RandomState>,
}

impl GeoDb {
    /// Opens and checks a database.
    pub fn open(path: &Path, fields: &GeoFields, level: GeoLevel) -> Result<GeoDb, GeoError> {
        let bytes = map_or_read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let reader =
            maxminddb::Reader::from_source(bytes.clone()).map_err(|e| GeoError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        let m = reader.metadata();
        let tree = Tree::new(bytes, m.node_count, m.record_size, m.ip_version);
        let description = format!(
            "{} (built at Unix time {}, {} nodes)",
            m.database_type, m.build_epoch, m.node_count
        );
        Ok(GeoDb {
            continent: parse_path("continent", &fields.continent)?,
            country: parse_path("country", &fields.country)?,
            subdivision: parse_path("subdivision", &fields.subdivision)?,
            reader,
            tree,
            level,
            description,
            addresses: AddressCache::new(),
            records: Mutex::new(Records::default()),
            index: None,
        })
    }

    /// Makes the address index of the database at `path` read with `fields` (see
    /// `geo/index.rs`), as the bytes of its file.
    pub fn make_index(path: &Path, fields: &GeoFields) -> Result<Vec<u8>, IndexError> {
        let db = GeoDb::open(path, fields, GeoLevel::Region)
            .map_err(|e| IndexError::Make(e.to_string()))?;
        let tree = db.walkable()?;
        index::make(&db, tree, db.identity(tree))
    }

    /// The search tree, which an address index is made from and used with.
    fn walkable(&self) -> Result<&Tree, IndexError> {
        self.tree.as_ref().ok_or_else(|| {
            IndexError::Make(format!(
                "{} has a search tree this logcensus cannot walk",
                self.description
            ))
        })
    }

    /// What an index records of this database (worked out when an index is made or used).
    fn identity(&self, tree: &Tree) -> DbIdentity {
        DbIdentity::of(tree.bytes().as_ref(), self.reader.metadata())
    }

    /// Looks IPv4 addresses up in the address index at `path` from now on. An index made from
    /// another database or with other fields is refused, and the database is used as before.
    pub fn use_index(&mut self, path: &Path) -> Result<(), IndexError> {
        let tree = self.walkable()?;
        let (index, jumps) = AddressIndex::load(
            path,
            &self.identity(tree),
            &self.fields_text(),
            tree.data().len(),
        )?;
        tree.use_jumps(jumps);
        self.index = Some(index);
        Ok(())
    }

    /// Whether IPv4 addresses are looked up in an address index.
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// Stops using the address index, if any, and the jump tables it gave the tree.
    pub fn forget_index(&mut self) {
        if self.index.take().is_some() {
            if let Some(tree) = &mut self.tree {
                tree.forget_jumps();
            }
        }
    }

    /// Whether the address index in use, if any, is intact: its checksum is checked while the
    /// run starts, and a run asks for the result before it writes anything.
    pub fn index_intact(&self) -> Result<(), IndexError> {
        self.index.as_ref().map_or(Ok(()), AddressIndex::intact)
    }

    /// The field mapping as an index records it.
    fn fields_text(&self) -> String {
        let path = |segs: &[Seg]| {
            segs.iter()
                .map(|s| match s {
                    Seg::Key(k) => k.clone(),
                    Seg::Index(i) => i.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".")
        };
        format!(
            "continent = \"{}\", country = \"{}\", subdivision = \"{}\"",
            path(&self.continent),
            path(&self.country),
            path(&self.subdivision)
        )
    }

    /// Forgets every cached address and record, so that the next lookups walk the database and
    /// decode its records again (for benchmarks of cold lookups; answers are the same either way).
    pub fn forget_lookups(&self) {
        self.addresses.clear();
        let mut records = self.records();
        records.by_offset.clear();
        records.by_heads.clear();
    }

    #[cfg(test)]
    fn reader_bytes(&self) -> &Bytes {
        self.tree
            .as_ref()
            .map(Tree::bytes)
            .expect("test databases have a tree")
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // The lock guards plain inserts: a panic while holding it leaves nothing half-done.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A per-worker lookup handle with its own cache.
    pub fn lookup(&self) -> GeoLookup<'_> {
        let unknown: Str = Arc::from(UNKNOWN);
        let unknown_place = Arc::new(Place {
            continent: Some(unknown.clone()),
            country: (self.level >= GeoLevel::Country).then(|| unknown.clone()),
            region: (self.level >= GeoLevel::Region).then_some(unknown),
        });
        GeoLookup {
            db: self,
            walks: Vec::new(),
            bits: Vec::new(),
            found: Vec::new(),
            deeper: Vec::new(),
            from: Vec::new(),
            found_from: Vec::new(),
            local: Vec::new(),
            interned: HashSet::new(),
            unknown_place,
            offsets: HashMap::default(),
            unseen: Vec::new(),
            by_place: vec![None; self.index.as_ref().map_or(0, AddressIndex::place_count)],
        }
    }

    /// The answer for `ip`, from the shared cache, else from the database (then cached).
    fn cached_answer(&self, ip: IpAddr) -> Answer {
        self.cached_or(ip, || self.answer(ip))
    }

    /// The answer for `ip`, from the shared cache, else `miss`'s (then cached).
    fn cached_or(&self, ip: IpAddr, miss: impl FnOnce() -> Answer) -> Answer {
        let key = AddressKey::of(ip);
        match self.addresses.get(&key) {
            Some(answer) => answer,
            None => {
                let answer = miss();
                self.addresses.put(&key, answer);
                answer
            }
        }
    }

    /// The answer for `ip`, from the database.
    fn answer(&self, ip: IpAddr) -> Answer {
        let Ok(result) = self.reader.lookup(ip) else {
            return Answer::Unknown;
        };
        let Some(offset) = result.offset() else {
            return Answer::Unknown;
        };
        self.record_answer(offset, |paths| {
            paths.map(|segs| decode_string(&result, segs))
        })
    }

    /// The answer for the address index's place `p`: from the strings the index keeps of its
    /// record, or (an index without them) from the record itself.
    fn place_answer(&self, index: &AddressIndex, tree: &Tree, p: u16) -> Answer {
        let offset = index.record_of(p);
        match index.strings_of(p) {
            Some(strings) => self.record_answer(offset, |_| strings),
            None => self.answer_at(tree, offset),
        }
    }

    /// The answer for the record at data-section `offset`, which the walker found: read with
    /// [`record::heads`] and [`record::strings_from`], without a lookup through the crate; a
    /// record whose values are where an earlier record's were has that record's answer.
    fn answer_at(&self, tree: &Tree, offset: usize) -> Answer {
        let data = tree.data();
        let paths = self.paths();
        if !paths
            .iter()
            .all(|p| matches!(p.first(), None | Some(Seg::Key(_))))
        {
            // A path that starts at an index of the record itself: no values to key by.
            return self.record_answer(offset, |paths| record::strings_at(data, offset, paths));
        }
        let heads = record::heads(data, offset, paths);
        {
            let mut records = self.records();
            if let Some(&i) = records.by_heads.get(&heads) {
                records.remember(offset, i);
                return Answer::Known(i);
            }
        }
        let answer = self.record_answer(offset, |paths| record::strings_from(data, &heads, paths));
        if let Answer::Known(i) = answer {
            let mut records = self.records();
            if records.by_heads.len() >= RECORDS_KEPT {
                records.by_heads.clear();
            }
            records.by_heads.insert(heads, i);
        }
        answer
    }

    /// The paths of the continent, the country and (at region level) the subdivision.
    fn paths(&self) -> [&[Seg]; 3] {
        let subdivision: &[Seg] = if self.level >= GeoLevel::Region {
            &self.subdivision
        } else {
            &[]
        };
        [&self.continent[..], &self.country[..], subdivision]
    }

    /// The answer for the record at `offset`, whose strings at the paths of the continent, the
    /// country and the subdivision `read` gives.
    fn record_answer(
        &self,
        offset: usize,
        read: impl FnOnce([&[Seg]; 3]) -> [Option<String>; 3],
    ) -> Answer {
        if let Some(&i) = self.records().by_offset.get(&offset) {
            return Answer::Known(i);
        }
        let level = self.level;
        let paths = self.paths();
        // An empty path (a field the mapping leaves out) reads nothing.
        let [continent, country, subdivision] = std::iter::zip(paths, read(paths))
            .map(|(segs, s)| {
                s.filter(|_| !segs.is_empty())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && s != "-")
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap_or_else(|_| unreachable!("three paths, three strings"));
        // Values are checked, not trusted: a country or continent is two letters, a subdivision
        // a short code or name. Anything else (a mapping pointing at the wrong field, a damaged
        // record) is unknown rather than written out.
        let two_letters = |c: String| {
            (c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .then(|| c.to_ascii_uppercase())
        };
        let country = country.and_then(two_letters);
        let continent = continent.and_then(two_letters).or_else(|| {
            country
                .as_deref()
                .and_then(continent_of)
                .map(str::to_string)
        });
        let region = if level >= GeoLevel::Region {
            match (&country, subdivision.filter(|s| plausible_subdivision(s))) {
                (Some(c), Some(s)) => Some(region_code(c, &s)),
                _ => None,
            }
        } else {
            None
        };
        let known = match level {
            GeoLevel::Continent => continent.is_some(),
            _ => country.is_some(),
        };
        let intern = |v: Option<String>| -> Str { Str::from(v.as_deref().unwrap_or(UNKNOWN)) };
        let place = Place {
            continent: Some(intern(continent)),
            country: (level >= GeoLevel::Country).then(|| intern(country)),
            region: (level >= GeoLevel::Region).then(|| intern(region)),
        };
        let mut records = self.records();
        let answer = (place, known);
        let i = match records.by_answer.get(&answer) {
            Some(&i) => i,
            None => {
                let i = records.answers.len() as u32;
                records.answers.push(answer.clone());
                records.by_answer.insert(answer, i);
                i
            }
        };
        records.remember(offset, i);
        Answer::Known(i)
    }
}

/// Records (and record value positions) remembered before their map is cleared: bounds memory
/// on a database with very many records.
const RECORDS_KEPT: usize = 1_000_000;

/// Cache lines of a new record fetched ahead of reading it ([`GeoLookup::look_ahead`]).
const RECORD_LINES: usize = 4;

impl Records {
    /// Remembers that the record at `offset` has answer `i`.
    fn remember(&mut self, offset: usize, i: u32) {
        remember(&mut self.by_offset, offset, i);
    }
}

/// The answer for the address index's place `p`, from `by_place` (a worker's) or worked out
/// and kept there.
fn place_in(
    by_place: &mut [Option<Answer>],
    db: &GeoDb,
    index: &AddressIndex,
    tree: &Tree,
    p: u16,
) -> Answer {
    let slot = &mut by_place[usize::from(p)];
    match *slot {
        Some(answer) => answer,
        None => {
            let answer = db.place_answer(index, tree, p);
            *slot = Some(answer);
            answer
        }
    }
}

/// Remembers in `offsets` (the shared records', or a worker's own) that the record at `offset`
/// has answer `i`, keeping at most [`RECORDS_KEPT`].
fn remember(offsets: &mut HashMap<usize, u32, foldhash::fast::RandomState>, offset: usize, i: u32) {
    if offsets.len() >= RECORDS_KEPT {
        offsets.clear();
    }
    offsets.insert(offset, i);
}

/// Cached lookups for one worker.
pub struct GeoLookup<'db> {
    db: &'db GeoDb,
    /// [`GeoLookup::look_ahead`]'s addresses that missed the cache, and their records.
    walks: Vec<(usize, IpAddr)>,
    bits: Vec<u128>,
    found: Vec<Option<usize>>,
    /// IPv6 walks the address index starts part of the way down: depth, position in `found`,
    /// node, address; and the same in the form [`Tree::find_v6_from`] takes, with its records.
    deeper: Vec<(u32, usize, usize, u128)>,
    from: Vec<(usize, u32, u128)>,
    found_from: Vec<Option<usize>>,
    /// The database's `answers`, as this worker's own allocations (so that counting a place
    /// never touches a reference count another thread writes).
    local: Vec<Option<(Arc<Place>, bool)>>,
    interned: HashSet<Arc<Place>>,
    unknown_place: Arc<Place>,
    /// Record offsets this worker has met, with their answers (the shared `by_offset`'s, for
    /// this worker alone).
    offsets: HashMap<usize, u32, foldhash::fast::RandomState>,
    /// [`GeoLookup::look_ahead`]'s walks that ended at a record this worker had not met: line,
    /// address, record offset, and the answer another worker found for it.
    unseen: Vec<(usize, IpAddr, usize, Option<u32>)>,
    /// The answer of each of the address index's places this worker has met.
    by_place: Vec<Option<Answer>>,
}

impl GeoLookup<'_> {
    /// Looks up the addresses of a batch of lines at once, appending each one's answer to
    /// `answers` (for [`GeoLookup::place_of`]). The addresses the shared cache does not know are
    /// walked through the database together, their cache misses overlapping, where one at a
    /// time each would wait for the last; their answers go into the cache too.
    pub fn look_ahead(&mut self, addresses: &[IpAddr], answers: &mut Vec<Answered>) {
        let cache = &self.db.addresses;
        let Some(tree) = &self.db.tree else {
            // No walker: one lookup at a time, as `place` does.
            answers.extend(
                addresses
                    .iter()
                    .map(|&ip| Answered(self.db.cached_answer(ip))),
            );
            return;
        };
        let first = answers.len();
        self.walks.clear();
        let index = self.db.index.as_ref();
        for (i, &ip) in addresses.iter().enumerate() {
            // An indexed address's entry is two reads, the second at an offset the first
            // gives: its top entry is asked for 16 addresses ahead, its block entry 8 ahead.
            match (index, addresses.get(i + 8)) {
                (Some(index), Some(&IpAddr::V4(next))) => index.prefetch(u32::from(next)),
                (_, Some(&next)) => cache.prefetch(&AddressKey::of(next)),
                (_, None) => {}
            }
            if let (Some(index), Some(&IpAddr::V4(next))) = (index, addresses.get(i + 16)) {
                index.prefetch_top(u32::from(next));
            }
            if let (Some(index), IpAddr::V4(a)) = (index, ip) {
                if let Some(answer) = self.indexed(index, tree, u32::from(a)) {
                    answers.push(Answered(answer));
                    continue;
                }
            }
            let answer = cache.get(&AddressKey::of(ip));
            if answer.is_none() {
                self.walks.push((i, ip));
            }
            answers.push(Answered(answer.unwrap_or(Answer::Unknown)));
        }
        if self.walks.is_empty() {
            return;
        }
        // IPv4 first, then IPv6: each family's walks start from its own node.
        self.walks.sort_unstable_by_key(|(_, ip)| ip.is_ipv6());
        let v4 = self.walks.partition_point(|(_, ip)| ip.is_ipv4());
        let bits = |(_, ip): &(usize, IpAddr)| match *ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        self.bits.clear();
        self.bits.extend(self.walks.iter().map(bits));
        self.found.clear();
        tree.find(false, &self.bits[..v4], &mut self.found);
        match index.filter(|ix| ix.has_v6()) {
            None => tree.find(true, &self.bits[v4..], &mut self.found),
            // The index answers most IPv6 addresses itself and starts the others' walks at the
            // node their /32 (or a shorter prefix) leads to.
            Some(ix) => {
                let v6 = &self.bits[v4..];
                for &a in v6 {
                    ix.prefetch_v6_top(a);
                }
                self.deeper.clear();
                for &a in v6 {
                    match ix.get_v6(a) {
                        // Its record's place is found below, as a walk's, without reading it.
                        IndexedV6::Place(p) => self.found.push(Some(ix.record_of(p))),
                        IndexedV6::NotFound => self.found.push(None),
                        IndexedV6::Walk { node, depth } => {
                            self.deeper.push((depth, self.found.len(), node, a));
                            self.found.push(None);
                        }
                    }
                }
                if !self.deeper.is_empty() {
                    self.deeper.sort_unstable_by_key(|w| w.0);
                    self.from.clear();
                    self.from
                        .extend(self.deeper.iter().map(|&(d, _, node, a)| (node, d, a)));
                    self.found_from.clear();
                    tree.find_v6_from(&self.from, &mut self.found_from);
                    for (&(_, at, _, _), &f) in self.deeper.iter().zip(&self.found_from) {
                        self.found[at] = f;
                    }
                }
            }
        }
        // Most walks end at a record this worker has met: its answer is found here, without the
        // shared lock (held for every walk of a batch, it kept the other workers waiting on it,
        // asleep, a hundred times a run). The others are asked of the shared records in one
        // short hold of the lock; those no worker has met are read below.
        let mut unseen = std::mem::take(&mut self.unseen);
        unseen.clear();
        for (&(i, ip), found) in self.walks.iter().zip(&self.found) {
            let answer = match found {
                None => Answer::Unknown,
                Some(offset) => match self.offsets.get(offset) {
                    Some(&n) => Answer::Known(n),
                    // The address index knows every record's place: the record is not read.
                    None => match index.and_then(|ix| Some((ix, ix.place_of_record(*offset)?))) {
                        Some((ix, p)) => {
                            let answer = place_in(&mut self.by_place, self.db, ix, tree, p);
                            if let Answer::Known(n) = answer {
                                remember(&mut self.offsets, *offset, n);
                            }
                            answer
                        }
                        None => {
                            unseen.push((i, ip, *offset, None));
                            continue;
                        }
                    },
                },
            };
            cache.put(&AddressKey::of(ip), answer);
            answers[first + i] = Answered(answer);
        }
        if !unseen.is_empty() {
            let records = self.db.records();
            for (_, _, offset, known) in unseen.iter_mut() {
                *known = records.by_offset.get(offset).copied();
            }
        }
        unseen.retain(|&(i, ip, offset, known)| match known {
            Some(n) => {
                remember(&mut self.offsets, offset, n);
                cache.put(&AddressKey::of(ip), Answer::Known(n));
                answers[first + i] = Answered(Answer::Known(n));
                false
            }
            None => true,
        });
        // Records met for the first time are read at the offset the walk found. Each is in a
        // part of the database no lookup has read lately: their first cache lines are asked
        // for all at once, so that their reads overlap instead of waiting one after another.
        let data = tree.data();
        for &(_, _, offset, _) in &unseen {
            for line in 0..RECORD_LINES {
                if let Some(byte) = data.get(offset + 64 * line) {
                    prefetch(byte);
                }
            }
        }
        for &(i, ip, offset, _) in &unseen {
            let answer = self.db.answer_at(tree, offset);
            if let Answer::Known(n) = answer {
                remember(&mut self.offsets, offset, n);
            }
            cache.put(&AddressKey::of(ip), answer);
            answers[first + i] = Answered(answer);
        }
        self.unseen = unseen;
    }

    /// The place of an address, and whether the database knew its country (or continent at that
    /// level). A missing address, no record, or an unreadable record is the unknown place.
    pub fn place(&mut self, ip: Option<IpAddr>) -> (&Arc<Place>, bool) {
        let answer = match ip {
            Some(IpAddr::V4(a)) => match (&self.db.index, &self.db.tree) {
                (Some(index), Some(tree)) => self.indexed(index, tree, u32::from(a)),
                _ => None,
            }
            .unwrap_or_else(|| self.db.cached_answer(IpAddr::V4(a))),
            Some(IpAddr::V6(a)) => match (&self.db.index, &self.db.tree) {
                (Some(index), Some(tree)) if index.has_v6() => {
                    let db = self.db;
                    db.cached_or(IpAddr::V6(a), || {
                        self.indexed_v6(index, tree, u128::from(a))
                    })
                }
                _ => self.db.cached_answer(IpAddr::V6(a)),
            },
            None => return (&self.unknown_place, false),
        };
        self.place_of(Answered(answer))
    }

    /// The answer for an IPv6 address from the address index: its place, or a walk from the
    /// node the index gives.
    fn indexed_v6(&mut self, index: &AddressIndex, tree: &Tree, address: u128) -> Answer {
        let offset = match index.get_v6(address) {
            IndexedV6::NotFound => return Answer::Unknown,
            IndexedV6::Place(p) => return self.indexed_place(index, tree, p),
            IndexedV6::Walk { node, depth } => {
                self.found_from.clear();
                tree.find_v6_from(&[(node, depth, address)], &mut self.found_from);
                match self.found_from.first() {
                    Some(&Some(offset)) => match index.place_of_record(offset) {
                        Some(p) => return self.indexed_place(index, tree, p),
                        None => offset,
                    },
                    _ => return Answer::Unknown,
                }
            }
        };
        match self.offsets.get(&offset) {
            Some(&n) => Answer::Known(n),
            None => {
                let answer = self.db.answer_at(tree, offset);
                if let Answer::Known(n) = answer {
                    remember(&mut self.offsets, offset, n);
                }
                answer
            }
        }
    }

    /// The answer the address index gives for an IPv4 address, or `None` when its /24 holds
    /// networks finer than itself (walk the tree). A place's answer is worked out once per worker.
    #[inline]
    fn indexed(&mut self, index: &AddressIndex, tree: &Tree, address: u32) -> Option<Answer> {
        match index.get(address) {
            Indexed::Finer => None,
            Indexed::NotFound => Some(Answer::Unknown),
            Indexed::Place(p) => Some(self.indexed_place(index, tree, p)),
        }
    }

    /// The answer for the address index's place `p`, worked out once per worker.
    #[inline]
    fn indexed_place(&mut self, index: &AddressIndex, tree: &Tree, p: u16) -> Answer {
        place_in(&mut self.by_place, self.db, index, tree, p)
    }

    /// The place [`GeoLookup::look_ahead`] found for an address, as [`GeoLookup::place`] gives it.
    pub fn place_of(&mut self, answered: Answered) -> (&Arc<Place>, bool) {
        let i = match answered.0 {
            Answer::Unknown => return (&self.unknown_place, false),
            Answer::Known(i) => i as usize,
        };
        if !matches!(self.local.get(i), Some(Some(_))) {
            self.learn(i);
        }
        match &self.local[i] {
            Some((place, known)) => (place, *known),
            None => unreachable!("learnt just above"),
        }
    }

    /// Makes the database's answer `i` this worker's own (see `local`).
    fn learn(&mut self, i: usize) {
        let (place, known) = self.db.records().answers[i].clone();
        // Identical places share one allocation, so aggregation keys compare cheaply.
        let place = match self.interned.get(&place) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(place);
                self.interned.insert(k.clone());
                k
            }
        };
        if self.local.len() <= i {
            self.local.resize(i + 1, None);
        }
        self.local[i] = Some((place, known));
    }
}

/// The database's bytes: the file mapped into memory, or read whole when it cannot be mapped
/// (not a regular file). A mapping costs nothing up front and only the pages lookups touch are
/// ever loaded, shared with the page cache, where reading copies tens of megabytes before the
/// first line is counted.
fn map_or_read(path: &Path) -> std::io::Result<Bytes> {
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.is_file() {
        // SAFETY: the mapping is read-only and stays valid for as long as the `Mmap` lives,
        // whatever happens to the file's name. What it cannot rule out is another process
        // writing into or truncating the same file while logcensus runs: the bytes would then
        // change under the reader, or vanish (a fault). Database updaters (geoipupdate, npm)
        // write a new file and rename it over the old one, which leaves this mapping intact;
        // the README asks for exactly that.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            return Ok(Bytes(Arc::new(Source::Mapped(map))));
        }
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(Bytes(Arc::new(Source::Read(bytes))))
}

/// What [`GeoLookup::look_ahead`] found for an address, for [`GeoLookup::place_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered(Answer);

/// What the database said about an address: nothing, or `Records::answers[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Unknown,
    Known(u32),
}

/// An address as a cache key: its 128 bits (IPv4 in the low 32) and its family. The families
/// have separate tables, so an IPv4 address and its IPv4-mapped IPv6 form stay distinct lookups,
/// as they are in the database.
#[derive(Clone, Copy, PartialEq, Eq)]
struct AddressKey {
    lo: u64,
    hi: u64,
    v6: bool,
}

impl AddressKey {
    fn of(ip: IpAddr) -> AddressKey {
        let (n, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            IpAddr::V6(a) => (u128::from(a), true),
        };
        AddressKey {
            lo: n as u64,
            hi: (n >> 64) as u64,
            v6,
        }
    }
}

/// IPv4 buckets in the address cache: 2^15 of eight one-word slots (2 MiB).
const V4_BITS: u32 = 15;
/// IPv6 buckets: 2^15 of two 32-byte slots (2 MiB); IPv6 clients are fewer in most logs.
const V6_BITS: u32 = 15;

/// Eight IPv4 slots in one cache line: the address in a word's high 32 bits, the tag in the low
/// 32 (0: empty). One word each, so written and read whole without a lock.
#[repr(align(64))]
#[derive(Default)]
struct V4Bucket([AtomicU64; 8]);

// SAFETY: atomics only, all zero an empty bucket; aligned to 64 bytes.
unsafe impl ZeroValid for V4Bucket {}

/// Two IPv6 slots in one cache line.
#[repr(align(64))]
#[derive(Default)]
struct V6Bucket([V6Slot; 2]);

// SAFETY: atomics only, all zero an empty bucket; aligned to 64 bytes.
unsafe impl ZeroValid for V6Bucket {}

/// One IPv6 slot, a sequence lock around (address, answer): `seq` is odd while a worker writes
/// the slot, and a reader that sees it change walks the database instead.
#[derive(Default)]
struct V6Slot {
    seq: AtomicU64,
    lo: AtomicU64,
    hi: AtomicU64,
    /// 0 for an empty slot, else [`AddressCache::tag`].
    tag: AtomicU64,
}

/// A cache of recent answers, shared by the workers: an address may be in any slot of the
/// bucket its hash picks (eight for IPv4, two for IPv6, one cache line either way), and a new
/// address takes an empty slot of its bucket, else one its hash picks. Bounded by construction,
/// O(1), lock-free, and safe on hostile input: addresses that share a bucket only fall back to
/// the database walk, which every lookup did without it. Small enough to stay mostly in cache,
/// which is the point: a bucket read that misses costs a good part of what it saves. (With one
/// slot per hash value, addresses that shared one put each other out: a quarter of the walks
/// of a 1M-line log with 173,000 addresses were of addresses walked before.)
struct AddressCache {
    /// Made at the first address of their family cached (with an address index, IPv4
    /// addresses are mostly not cached at all), in memory the kernel maps zeroed (`Zeroed`).
    v4: OnceLock<Zeroed<V4Bucket>>,
    v6: OnceLock<Zeroed<V6Bucket>>,
    /// Random per database, so that which addresses share a bucket cannot be chosen by a log.
    seed: [u64; 2],
}

impl AddressCache {
    fn new() -> AddressCache {
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new();
        AddressCache {
            v4: OnceLock::new(),
            v6: OnceLock::new(),
            seed: [random.hash_one(1u8), random.hash_one(2u8)],
        }
    }

    /// The address's bucket (the hash's top `bits`), and the slot it replaces in a full bucket
    /// (other bits of the hash).
    fn place(&self, key: &AddressKey, bits: u32) -> (usize, usize) {
        // Folded multiplies (as in foldhash): every bit of the address reaches the top bits.
        let fold = |a: u64, b: u64| {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        };
        let h = fold(key.lo ^ self.seed[0], key.hi ^ self.seed[1]);
        let h = fold(h, 0x9e37_79b9_7f4a_7c15);
        ((h >> (64 - bits)) as usize, h as usize)
    }

    /// 1 for unknown, `2 + i` for `answers[i]`; never 0.
    fn tag(answer: Answer) -> u32 {
        match answer {
            Answer::Unknown => 1,
            Answer::Known(i) => i.saturating_add(2),
        }
    }

    fn answer(tag: u32) -> Option<Answer> {
        match tag {
            0 | u32::MAX => None,
            1 => Some(Answer::Unknown),
            n => Some(Answer::Known(n - 2)),
        }
    }

    /// Asks the processor to fetch `key`'s bucket into the cache, without waiting for it.
    fn prefetch(&self, key: &AddressKey) {
        if key.v6 {
            if let Some(buckets) = self.v6.get() {
                prefetch(&buckets[self.place(key, V6_BITS).0]);
            }
        } else if let Some(buckets) = self.v4.get() {
            prefetch(&buckets[self.place(key, V4_BITS).0]);
        }
    }

    fn get(&self, key: &AddressKey) -> Option<Answer> {
        if !key.v6 {
            let bucket = &self.v4.get()?[self.place(key, V4_BITS).0];
            return bucket.0.iter().find_map(|slot| {
                let word = slot.load(Ordering::Relaxed);
                // (An empty slot's address reads as 0.0.0.0; its tag, 0, is no answer.)
                (word >> 32 == key.lo).then(|| Self::answer(word as u32))?
            });
        }
        let bucket = &self.v6.get()?[self.place(key, V6_BITS).0];
        bucket.0.iter().find_map(|slot| Self::read_v6(slot, key))
    }

    /// The answer in an IPv6 slot, if it holds `key` and no worker is writing it.
    fn read_v6(slot: &V6Slot, key: &AddressKey) -> Option<Answer> {
        let seq = slot.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            return None;
        }
        let lo = slot.lo.load(Ordering::Relaxed);
        let hi = slot.hi.load(Ordering::Relaxed);
        let tag = slot.tag.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != seq || lo != key.lo || hi != key.hi {
            return None;
        }
        Self::answer(tag as u32)
    }

    fn put(&self, key: &AddressKey, answer: Answer) {
        // A tag that does not fit (more than 4 billion places) is not cached.
        let tag = Self::tag(answer);
        if !key.v6 {
            let buckets = self.v4.get_or_init(|| Zeroed::new(1 << V4_BITS));
            let (b, victim) = self.place(key, V4_BITS);
            let slots = &buckets[b].0;
            let empty = |s: &AtomicU64| s.load(Ordering::Relaxed) as u32 == 0;
            let holds = |s: &AtomicU64| s.load(Ordering::Relaxed) >> 32 == key.lo;
            let at = Self::slot_for(slots, holds, empty, victim);
            slots[at].store((key.lo << 32) | u64::from(tag), Ordering::Relaxed);
            return;
        }
        let buckets = self.v6.get_or_init(|| Zeroed::new(1 << V6_BITS));
        let (b, victim) = self.place(key, V6_BITS);
        let slots = &buckets[b].0;
        let empty = |s: &V6Slot| s.tag.load(Ordering::Relaxed) == 0;
        let holds = |s: &V6Slot| {
            s.lo.load(Ordering::Relaxed) == key.lo && s.hi.load(Ordering::Relaxed) == key.hi
        };
        let at = Self::slot_for(slots, holds, empty, victim);
        Self::write_v6(&slots[at], key.lo, key.hi, u64::from(tag));
    }

    /// Which slot of a bucket an address goes to: the one already holding it (another worker's
    /// put; an empty slot holds no address, whatever its bytes read as), else an empty one, else
    /// the one the hash's `victim` bits pick.
    fn slot_for<S>(
        slots: &[S],
        holds: impl Fn(&S) -> bool,
        empty: impl Fn(&S) -> bool,
        victim: usize,
    ) -> usize {
        slots
            .iter()
            .position(|s| !empty(s) && holds(s))
            .or_else(|| slots.iter().position(&empty))
            .unwrap_or(victim % slots.len())
    }

    /// Writes an IPv6 slot, unless another worker is writing it (then the answer is simply not
    /// kept).
    fn write_v6(slot: &V6Slot, lo: u64, hi: u64, tag: u64) {
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || slot
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        slot.lo.store(lo, Ordering::Relaxed);
        slot.hi.store(hi, Ordering::Relaxed);
        slot.tag.store(tag, Ordering::Relaxed);
        slot.seq.store(seq + 2, Ordering::Release);
    }

    fn clear(&self) {
        for bucket in self.v4.get().into_iter().flat_map(|b| b.iter()) {
            for word in &bucket.0 {
                word.store(0, Ordering::Relaxed);
            }
        }
        for bucket in self.v6.get().into_iter().flat_map(|b| b.iter()) {
            for slot in &bucket.0 {
                Self::write_v6(slot, 0, 0, 0);
            }
        }
    }
}

/// A subdivision code (`VA`, `13`, `US-VA`) or name (`Virginia`, `São Paulo`): at most 48
/// characters of letters, digits, spaces and `-.'`.
fn plausible_subdivision(s: &str) -> bool {
    s.chars().count() <= 48
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '.' | '\''))
}

/// `US` + `VA` → `US-VA`; a value already prefixed (`US-VA`) is kept; names (`Virginia`, from
/// flat layouts) become `US-Virginia`.
fn region_code(country: &str, sub: &str) -> String {
    let prefixed = sub
        .get(..country.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(country))
        && sub.as_bytes().get(country.len()) == Some(&b'-')
        && sub.len() > country.len() + 1;
    if prefixed {
        format!("{}-{}", country, &sub[country.len() + 1..])
    } else {
        format!("{country}-{sub}")
    }
}

/// Continent of an ISO 3166-1 alpha-2 country, for databases without a continent field.
fn continent_of(country: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("AS", "AD AE AF AM AZ BD BH BN BT CN CY GE HK ID IL IN IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE"),
        ("EU", "AL AT AX BA BE BG BY CH CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK"),
        ("AF", "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW"),
        ("NA", "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI"),
        ("SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
        ("OC", "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS"),
        ("AN", "AQ BV GS HM TF"),
    ];
    let c = country.to_ascii_uppercase();
    TABLE
        .iter()
        .find_map(|(cont, list)| list.split(' ').any(|x| x == c).then_some(*cont))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes() {
        assert_eq!(region_code("US", "VA"), "US-VA");
        assert_eq!(region_code("US", "US-VA"), "US-VA");
        assert_eq!(region_code("US", "Virginia"), "US-Virginia");
        assert_eq!(region_code("GB", "ENG"), "GB-ENG");
        assert_eq!(region_code("BR", "São Paulo"), "BR-São Paulo");
        assert_eq!(region_code("BR", "S"), "BR-S");
        assert!(plausible_subdivision("São Paulo"));
        assert!(plausible_subdivision("13"));
        assert!(!plausible_subdivision("America/New_York"));
        assert!(!plausible_subdivision("someone@example.com"));
        assert!(!plausible_subdivision(&"x".repeat(49)));
    }

    #[test]
    fn continents_from_countries() {
        assert_eq!(continent_of("DE"), Some("EU"));
        assert_eq!(continent_of("jp"), Some("AS"));
        assert_eq!(continent_of("NG"), Some("AF"));
        assert_eq!(continent_of("US"), Some("NA"));
        assert_eq!(continent_of("BR"), Some("SA"));
        assert_eq!(continent_of("AU"), Some("OC"));
        assert_eq!(continent_of("ZZ"), None);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(matches!(
            parse_path("country", "country..iso_code"),
            Err(GeoError::BadPath { .. })
        ));
    }
}

/// SplitMix64 from `seed`: a repeatable stream of well-mixed numbers for tests.
#[cfg(test)]
fn splitmix(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod db_tests {
    use super::*;

    fn open(bytes: Vec<u8>, fields: GeoFields, level: GeoLevel) -> (tempfile::TempDir, GeoDb) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.mmdb");
        std::fs::write(&p, bytes).unwrap();
        let db = GeoDb::open(&p, &fields, level).unwrap();
        (dir, db)
    }

    fn show(p: &Place) -> String {
        let s = |v: &Option<Str>| v.as_deref().unwrap_or("null").to_string();
        format!("{} {} {}", s(&p.continent), s(&p.country), s(&p.region))
    }

    fn lookups(db: &GeoDb) -> Vec<(String, bool)> {
        let mut l = db.lookup();
        let ips = [
            "3.80.0.1",
            "126.1.2.3",
            "86.144.1.1",
            "86.130.0.1",
            "2a01:4f8::1",
            "2804:14c::1",
            "63.140.0.1",
            "::ffff:3.80.0.1",
            "203.0.113.9",
            "10.1.2.3",
        ];
        let mut out: Vec<(String, bool)> = ips
            .iter()
            .map(|ip| {
                let (p, known) = l.place(Some(ip.parse().unwrap()));
                (show(p), known)
            })
            .collect();
        let (p, known) = l.place(None);
        out.push((show(p), known));
        out
    }

    fn k(s: &str, known: bool) -> (String, bool) {
        (s.to_string(), known)
    }

    #[test]
    fn geoip2_city_at_each_level() {
        let city = logcensus_fixtures::city_mmdb;
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Region);
        assert_eq!(
            lookups(&db),
            [
                k("NA US US-VA", true),
                k("AS JP JP-13", true),
                k("EU GB GB-SCT", true),
                k("EU GB GB-ENG", true),
                k("EU DE DE-BY", true),
                k("SA BR BR-SP", true),
                k("NA US (unknown)", true),
                k("NA US US-VA", true),
                k("(unknown) (unknown) (unknown)", false),
                k("(unknown) (unknown) (unknown)", false),
                k("(unknown) (unknown) (unknown)", false),
            ]
        );
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Country);
        let got = lookups(&db);
        assert_eq!(got[0], k("NA US null", true));
        assert_eq!(got[4], k("EU DE null", true));
        assert_eq!(got[8], k("(unknown) (unknown) null", false));
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Continent);
        let got = lookups(&db);
        assert_eq!(got[1], k("AS null null", true));
        assert_eq!(got[8], k("(unknown) null null", false));
    }

    /// The walker in `tree.rs` finds, for every address, the record the `maxminddb` crate finds:
    /// on IPv4 and IPv6 databases, with and without IPv4 aliases, at each record size, for the
    /// first, last and neighbouring addresses of every network and for random ones.
    #[test]
    fn walks_in_step_find_the_crates_records() {
        use logcensus_fixtures::mmdb::{MmdbBuilder, Value};
        let mut next = splitmix(0x9e37_79b9_7f4a_7c15);
        for (ip_version, record_size, aliases) in [
            (4, 24, false),
            (4, 28, false),
            (4, 32, false),
            (6, 24, true),
            (6, 28, false),
            (6, 32, true),
        ] {
            let mut b = MmdbBuilder::new("walk-test", ip_version);
            b.record_size(record_size).ipv4_aliases(aliases);
            let mut probes: Vec<IpAddr> = Vec::new();
            for i in 0..600u32 {
                let v6 = ip_version == 6 && i % 3 == 0;
                let (addr, len, size) = if v6 {
                    let len = 16 + (next() % 49) as u8;
                    let a = (u128::from(next()) << 64 | u128::from(next())) & !(u128::MAX >> 3)
                        | (u128::from(next()) << 64 | u128::from(next())) >> 3;
                    let a = a & (u128::MAX << (128 - u32::from(len)));
                    (IpAddr::V6(a.into()), len, 1u128 << (128 - u32::from(len)))
                } else {
                    let len = 8 + (next() % 25) as u8;
                    let a = (next() as u32) & (u32::MAX << (32 - u32::from(len)));
                    (IpAddr::V4(a.into()), len, 1u128 << (32 - u32::from(len)))
                };
                // Few distinct records, so that networks share them as in a real database.
                let value = Value::map([("n", Value::Uint32(i % 40))]);
                b.insert((addr, len), value).unwrap();
                let n = match addr {
                    IpAddr::V4(a) => u128::from(u32::from(a)),
                    IpAddr::V6(a) => u128::from(a),
                };
                for probe in [n.wrapping_sub(1), n, n + size / 2, n + size - 1, n + size] {
                    probes.push(match addr {
                        IpAddr::V4(_) => IpAddr::V4((probe as u32).into()),
                        IpAddr::V6(_) => IpAddr::V6(probe.into()),
                    });
                }
            }
            for _ in 0..3000 {
                probes.push(IpAddr::V4((next() as u32).into()));
                probes.push(IpAddr::V6(
                    (u128::from(next()) << 64 | u128::from(next())).into(),
                ));
            }
            probes.push("::ffff:1.2.3.4".parse().unwrap());
            probes.push("2002:102:304::1".parse().unwrap());
            let bytes = Bytes(Arc::new(Source::Read(b.build().unwrap())));
            let reader = maxminddb::Reader::from_source(bytes.clone()).unwrap();
            let m = reader.metadata();
            let tree = Tree::new(bytes.clone(), m.node_count, m.record_size, m.ip_version).unwrap();
            // The same walks from the root, as while another worker makes the jump tables.
            let rooted = Tree::new(bytes, m.node_count, m.record_size, m.ip_version).unwrap();
            rooted.walk_without_jumps();
            let as_bits = |ip: &IpAddr| match *ip {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let mut found = Vec::new();
            let mut known = 0;
            for v6 in [false, true] {
                let family: Vec<IpAddr> = probes
                    .iter()
                    .copied()
                    .filter(|ip| ip.is_ipv6() == v6)
                    .collect();
                let bits: Vec<u128> = family.iter().map(as_bits).collect();
                found.clear();
                tree.find(v6, &bits, &mut found);
                assert_eq!(found.len(), family.len());
                let mut from_root = Vec::new();
                rooted.find(v6, &bits, &mut from_root);
                assert_eq!(
                    from_root, found,
                    "IPv{ip_version}, {record_size}-bit records"
                );
                for (ip, got) in family.iter().zip(&found) {
                    let want = reader.lookup(*ip).ok().and_then(|r| r.offset());
                    assert_eq!(
                        *got, want,
                        "{ip} in IPv{ip_version}, {record_size}-bit records"
                    );
                    known += usize::from(want.is_some());
                }
            }
            // The probes hit records, not only "not found".
            assert!(known > probes.len() / 8, "{known} of {}", probes.len());
        }
    }

    /// Strings read at the walker's offsets are what the crate's `decode_path` reads, on records
    /// of every value type the writer has, nested maps and arrays, repeated values stored as
    /// pointers (of each size, the data section being large), and paths that miss (an absent
    /// key, an index past the end, a map or a number where a string is asked for).
    #[test]
    fn records_read_at_offsets_as_the_crate_reads_them() {
        use logcensus_fixtures::mmdb::{MmdbBuilder, Value};
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut b = MmdbBuilder::new("record-test", 6);
        let mut ips = Vec::new();
        for i in 0..3000u32 {
            let r = next();
            let text = |n: u64| Value::String(format!("v{}", n % 300));
            let filler = match r % 6 {
                0 => Value::Double((r % 1000) as f64 / 7.0),
                1 => Value::Uint16(r as u16),
                2 => Value::Uint64(r),
                3 => Value::Bool(r % 2 == 0),
                4 => Value::Array((0..r % 4).map(|j| text(r >> j)).collect()),
                _ => Value::String(format!("{i}").repeat((r % 1000) as usize)),
            };
            let subdivisions = Value::Array(
                (0..(r >> 8) % 3)
                    .map(|j| {
                        Value::map([("iso_code", text(r >> (12 + j))), ("n", Value::Uint32(i))])
                    })
                    .collect(),
            );
            let mut country = vec![
                (
                    "names".to_string(),
                    Value::map([("en", text(r >> 20)), ("de", text(r >> 24))]),
                ),
                ("filler".to_string(), filler),
            ];
            if (r >> 30) % 4 != 0 {
                country.push(("iso_code".to_string(), text(r >> 32)));
            }
            let record = Value::map([
                ("continent", Value::map([("code", text(r >> 40))])),
                ("country", Value::Map(country)),
                ("subdivisions", subdivisions),
                ("location", Value::map([("latitude", Value::Double(1.5))])),
                ("big", Value::Uint32(i)),
            ]);
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(i << 12));
            b.insert((addr, 20), record).unwrap();
            ips.push(addr);
        }
        let bytes = Bytes(Arc::new(Source::Read(b.build().unwrap())));
        let reader = maxminddb::Reader::from_source(bytes.clone()).unwrap();
        let m = reader.metadata();
        let tree = Tree::new(bytes, m.node_count, m.record_size, m.ip_version).unwrap();
        let paths = [
            "continent.code",
            "country.iso_code",
            "country.names.en",
            "country.names.de",
            "country.names.fr",
            "country.names",
            "country.filler",
            "country.filler.0",
            "country.filler.2",
            "subdivisions.0.iso_code",
            "subdivisions.1.iso_code",
            "subdivisions.2.iso_code",
            "subdivisions.0.n",
            "location.latitude",
            "big",
            "nothing.here",
        ];
        let mut read = 0;
        for ip in &ips {
            let result = reader.lookup(*ip).unwrap();
            let offset = result.offset().unwrap();
            for path in paths {
                let segs = parse_path("test", path).unwrap();
                let want = decode_string(&result, &segs);
                let got = record::string_at(tree.data(), offset, &segs);
                assert_eq!(got, want, "{path} of {ip}");
                read += usize::from(got.is_some());
            }
            // Three paths read in one pass over the record give what each gives alone: every
            // run of three neighbours in the list, and a place's usual three.
            let segs: Vec<Vec<Seg>> = paths
                .iter()
                .map(|p| parse_path("test", p).unwrap())
                .collect();
            let mut triples: Vec<[&[Seg]; 3]> = segs
                .windows(3)
                .map(|w| [&w[0][..], &w[1][..], &w[2][..]])
                .collect();
            triples.push([&segs[0], &segs[1], &segs[9]]);
            triples.push([&segs[9], &segs[1], &segs[1]]);
            for triple in triples {
                let want = triple.map(|p| record::string_at(tree.data(), offset, p));
                assert_eq!(
                    record::strings_at(tree.data(), offset, triple),
                    want,
                    "{triple:?} of {ip}"
                );
            }
        }
        assert!(read > ips.len() * 4, "{read}");
        // Far enough into the data section for three-byte pointers.
        assert!(tree.data().len() > 600_000, "{}", tree.data().len());
    }

    /// Addresses that share a bucket are all kept, up to its slots (eight IPv4, two IPv6); an
    /// address put again keeps its one slot; one more address puts out exactly one of them;
    /// 0.0.0.0 is not taken for an empty slot.
    #[test]
    fn addresses_that_share_a_bucket_are_all_kept() {
        let cache = AddressCache::new();
        let v4 = |n: u32| AddressKey::of(IpAddr::from(std::net::Ipv4Addr::from(n)));
        let v6 = |n: u32| {
            let [hi, lo] = [(n >> 16) as u16, n as u16];
            AddressKey::of(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, hi, lo]))
        };
        for (key, bits, slots, is_v6) in [
            (&v4 as &dyn Fn(u32) -> AddressKey, V4_BITS, 8usize, false),
            (&v6, V6_BITS, 2, true),
        ] {
            // The first `slots + 1` addresses whose bucket is that of address 1.
            let bucket = cache.place(&key(1), bits).0;
            let same: Vec<AddressKey> = (1..)
                .map(key)
                .filter(|k| cache.place(k, bits).0 == bucket)
                .take(slots + 1)
                .collect();
            // All but one slot filled, the first address put again (in its own slot, not the
            // empty one), then the last slot: every address is there.
            for (i, k) in same[..slots - 1].iter().enumerate() {
                cache.put(k, Answer::Known(i as u32));
            }
            cache.put(&same[0], Answer::Known(9));
            // Its own slot: the empty one is still empty.
            let occupied = if !is_v6 {
                let words = &cache.v4.get().unwrap()[bucket].0;
                words
                    .iter()
                    .filter(|w| w.load(Ordering::Relaxed) as u32 != 0)
                    .count()
            } else {
                let v6 = &cache.v6.get().unwrap()[bucket].0;
                v6.iter()
                    .filter(|s| s.tag.load(Ordering::Relaxed) != 0)
                    .count()
            };
            assert_eq!(occupied, slots - 1, "{bits}");
            cache.put(&same[slots - 1], Answer::Known(slots as u32 - 1));
            for (i, k) in same[..slots].iter().enumerate() {
                let want = if i == 0 { 9 } else { i as u32 };
                assert_eq!(cache.get(k), Some(Answer::Known(want)), "{bits} {i}");
            }
            cache.put(&same[slots], Answer::Unknown);
            assert_eq!(cache.get(&same[slots]), Some(Answer::Unknown));
            let kept = same[..slots]
                .iter()
                .filter(|k| cache.get(k).is_some())
                .count();
            assert_eq!(kept, slots - 1, "{bits}");
        }
        let zero = v4(0);
        assert_eq!(cache.get(&zero), None);
        cache.put(&zero, Answer::Known(3));
        assert_eq!(cache.get(&zero), Some(Answer::Known(3)));
        cache.clear();
        assert_eq!(cache.get(&zero), None);
        assert_eq!(cache.get(&v4(1)), None);
    }

    #[test]
    fn cached_answers_are_the_database_answers() {
        let (_d, db) = open(
            logcensus_fixtures::city_mmdb(),
            GeoFields::default(),
            GeoLevel::Region,
        );
        let first = lookups(&db);
        // Again through the address cache, from another handle, and after forgetting it.
        assert_eq!(lookups(&db), first);
        db.forget_lookups();
        assert_eq!(lookups(&db), first);
        // Workers on several threads share the cache; each sees what one handle alone sees.
        let ips: Vec<IpAddr> = (0..4000u32)
            .map(|i| {
                if i % 3 == 0 {
                    IpAddr::from([0x2a01, 0x4f8, 0, 0, 0, 0, 0, i as u16])
                } else {
                    let first = [3u32, 126, 86, 63, 203, 10][i as usize % 6];
                    IpAddr::from(std::net::Ipv4Addr::from(
                        (first << 24) | (i.wrapping_mul(2_654_435_761) >> 8),
                    ))
                }
            })
            .collect();
        let (_d2, alone) = open(
            logcensus_fixtures::city_mmdb(),
            GeoFields::default(),
            GeoLevel::Region,
        );
        let mut one = alone.lookup();
        let expected: Vec<(String, bool)> = ips
            .iter()
            .map(|ip| {
                let (p, k) = one.place(Some(*ip));
                (show(p), k)
            })
            .collect();
        // Looked up ahead in batches (walked in step, then found in the cache), the answers are
        // the same.
        db.forget_lookups();
        let mut ahead = db.lookup();
        let mut answers = Vec::new();
        for (ips, want) in ips.chunks(700).zip(expected.chunks(700)) {
            answers.clear();
            ahead.look_ahead(ips, &mut answers);
            assert_eq!(answers.len(), ips.len());
            let got: Vec<(String, bool)> = answers
                .iter()
                .map(|a| {
                    let (p, k) = ahead.place_of(*a);
                    (show(p), k)
                })
                .collect();
            assert_eq!(got, want);
            // And the cache now holds them.
            let got: Vec<(String, bool)> = ips
                .iter()
                .map(|ip| {
                    let (p, k) = ahead.place(Some(*ip));
                    (show(p), k)
                })
                .collect();
            assert_eq!(got, want);
        }
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let mut l = db.lookup();
                    for _ in 0..3 {
                        for (ip, want) in ips.iter().zip(&expected) {
                            let (p, k) = l.place(Some(*ip));
                            assert_eq!(&(show(p), k), want, "{ip}");
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn flat_layout_through_a_field_mapping() {
        let fields = GeoFields {
            continent: String::new(),
            country: "country_code".into(),
            subdivision: "state1".into(),
        };
        let (_d, db) = open(logcensus_fixtures::flat_mmdb(), fields, GeoLevel::Region);
        let got = lookups(&db);
        assert_eq!(got[0], k("NA US US-Virginia", true));
        assert_eq!(got[4], k("EU DE DE-Bavaria", true));
        assert_eq!(got[8], k("(unknown) (unknown) (unknown)", false));
    }

    #[test]
    fn identical_places_share_one_allocation() {
        let (_d, db) = open(
            logcensus_fixtures::city_mmdb(),
            GeoFields::default(),
            GeoLevel::Country,
        );
        let mut l = db.lookup();
        let a = l.place(Some("86.144.1.1".parse().unwrap())).0.clone();
        let b = l.place(Some("86.130.0.1".parse().unwrap())).0.clone();
        assert!(Arc::ptr_eq(&a, &b), "GB at country level is one place");
    }

    /// A database that is not a regular file (here a named pipe, as from process substitution)
    /// cannot be mapped: it is read whole instead, with the same answers.
    #[cfg(unix)]
    #[test]
    fn a_database_from_a_pipe_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("city.mmdb");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "mkfifo (coreutils) is needed"
        );
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, logcensus_fixtures::city_mmdb()))
        };
        let piped = GeoDb::open(&fifo, &GeoFields::default(), GeoLevel::Region).unwrap();
        writer.join().unwrap().unwrap();
        assert!(matches!(&*piped.reader_bytes().0, Source::Read(_)));
        let (_d, mapped) = open(
            logcensus_fixtures::city_mmdb(),
            GeoFields::default(),
            GeoLevel::Region,
        );
        assert!(matches!(&*mapped.reader_bytes().0, Source::Mapped(_)));
        assert_eq!(lookups(&piped), lookups(&mapped));
        assert_eq!(lookups(&piped)[0], k("NA US US-VA", true));
    }

    #[test]
    fn missing_and_corrupt_databases_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.mmdb");
        let err = GeoDb::open(&missing, &GeoFields::default(), GeoLevel::Country)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot read GeoIP database {}", missing.display())),
            "{err}"
        );
        let bad = dir.path().join("bad.mmdb");
        std::fs::write(&bad, b"this is not a database").unwrap();
        let err = GeoDb::open(&bad, &GeoFields::default(), GeoLevel::Country)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} is not a usable MaxMind DB (.mmdb) file",
                bad.display()
            )),
            "{err}"
        );
        // A truncated real database is refused too, not a crash later.
        let mut cut = logcensus_fixtures::city_mmdb();
        cut.truncate(cut.len() / 2);
        std::fs::write(&bad, cut).unwrap();
        assert!(GeoDb::open(&bad, &GeoFields::default(), GeoLevel::Country).is_err());
    }
}
