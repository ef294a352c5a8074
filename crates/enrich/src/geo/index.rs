//! A database's IPv4 networks as a table by /24, and its IPv6 ones by /32: the address index.
//!
//! Each address a run has not met costs a walk down the database's search tree (a cache miss
//! per level, in tens of megabytes) and, for a record no lookup has read yet, its decoding. A
//! 1M-line log with 200,000 distinct clients spends about a sixth of its run on that. The index is
//! the same answers worked out once, offline (`logcensus geoip-index`), for every IPv4 /24:
//! looking an address up is one read in a table of where each /16 goes and, for a /16 that is
//! not one place throughout, one in a block of its 256 /24s. A network finer than a /24 is
//! left to the tree. IPv6 addresses that the address cache does not know (a client's address
//! changes from day to day; the first sight of each costs a walk of 30 levels and more) are
//! looked up in the same way in three levels, by /16, /24 and /32: an entry is a place, "not
//! found", the next level's block, or the tree node where a /32 of finer networks goes on,
//! from which the walk starts instead of from the root.
//!
//! An entry names a *place* by number; the index keeps one record offset per place, whose
//! answer the run works out (once per worker) at its own level: two records with the same
//! continent, country and region are the same place at every level, so an index made at region
//! level serves a run at any level. With each place it keeps that record's continent, country
//! and subdivision as read at the mapping's paths, so a worker works the place out without
//! reading the record (which would have the kernel map the database's pages around it, and
//! unmap them at the end); and it keeps the place of every record in the database, by offset,
//! for the walks it leaves to the tree, whose records are then not read either.
//!
//! The index names the database it was made from (size, build time, node count, and a checksum
//! of the tree's start and the file's end) and the field mapping it was made with; a run checks
//! both before using it, and the body's checksum (on a thread of its own) before it writes
//! anything. It also keeps the search tree's jump tables (`tree.rs`), which a run would
//! otherwise make as it starts.

use std::path::Path;

use twox_hash::XxHash64;

use super::tree::{Bytes, Tree};
use super::{Answer, GeoDb};

const MAGIC: &[u8; 8] = b"LCGEOIDX";
const VERSION: u32 = 5;
/// Entries of the top table: one per /16.
const TOP: usize = 1 << 16;
/// A top entry with this bit names one place for the whole /16 in its low 16 bits; without it,
/// it is the number of the /16's block.
const UNIFORM: u32 = 1 << 31;
/// A /24 the database has no record for.
const NOT_FOUND: u16 = 0xfffe;
/// A /24 split into networks finer than itself: its addresses are walked in the tree.
const FINER: u16 = 0xffff;
/// Places an index can name.
const MAX_PLACES: usize = NOT_FOUND as usize;
/// IPv6 entries: a tag in the top two bits. A place (its number in the low 16 bits).
const V6_PLACE: u32 = 0;
/// No record.
const V6_NOT_FOUND: u32 = 1 << 30;
/// The next eight bits' block (its number in the low 30 bits).
const V6_BLOCK: u32 = 2 << 30;
/// A tree node (in the low 30 bits) where the walk goes on, at the entry's level's depth.
const V6_NODE: u32 = 3 << 30;
const V6_TAG: u32 = 3 << 30;
/// Depth of the IPv6 top table's entries, and bits each block adds; blocks go down to /32.
const V6_TOP_BITS: u32 = 16;
const V6_LEVELS: u32 = 2;
/// A place's value the record does not have.
const NO_STRING: u8 = 0xff;
/// A place whose strings the index does not hold (one longer than 254 bytes): its record is
/// read.
const NO_STRINGS: u32 = u32::MAX;
/// Bytes of the tree's start and of the file's end that the database's checksum covers.
const FINGERPRINT_BYTES: usize = 1 << 16;

/// What the index says of an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Indexed {
    /// The place numbered so (see [`AddressIndex::record_of`]).
    Place(u16),
    /// The database has no record for it.
    NotFound,
    /// Its /24 holds finer networks: walk the tree.
    Finer,
}

/// Why an index file cannot be used with a database.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read address index {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a logcensus address index ({detail}); make it again with `logcensus geoip-index`")]
    Corrupt { path: String, detail: String },
    #[error("address index {path} was made from another database ({detail}); make it again with `logcensus geoip-index` for this one")]
    OtherDatabase { path: String, detail: String },
    #[error("address index {path} was made with other [geoip.fields] ({made}, where this pipeline has {now}); make it again with `logcensus geoip-index` and this pipeline")]
    OtherFields {
        path: String,
        made: String,
        now: String,
    },
    #[error("cannot make an address index: {0}")]
    Make(String),
}

/// What an index records of the database it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DbIdentity {
    pub(super) len: u64,
    pub(super) build_epoch: u64,
    pub(super) node_count: u32,
    pub(super) record_size: u16,
    pub(super) ip_version: u16,
    pub(super) checksum: u64,
}

impl DbIdentity {
    pub(super) fn of(bytes: &[u8], m: &maxminddb::Metadata) -> DbIdentity {
        let head = &bytes[..bytes.len().min(FINGERPRINT_BYTES)];
        let tail = &bytes[bytes.len().saturating_sub(FINGERPRINT_BYTES)..];
        let mut h = XxHash64::with_seed(0);
        std::hash::Hasher::write(&mut h, head);
        std::hash::Hasher::write(&mut h, tail);
        DbIdentity {
            len: bytes.len() as u64,
            build_epoch: m.build_epoch,
            node_count: m.node_count,
            record_size: m.record_size,
            ip_version: m.ip_version,
            checksum: std::hash::Hasher::finish(&h),
        }
    }
}

/// What the index says of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexedV6 {
    Place(u16),
    NotFound,
    /// Walk on from this node, which the address's first `depth` bits lead to.
    Walk {
        node: usize,
        depth: u32,
    },
}

/// A loaded index: its file mapped into memory, and the top table and place offsets read out.
/// The blocks are read where they are in the file.
pub(super) struct AddressIndex {
    top: Box<[u32]>,
    /// The record offset of each place.
    places: Box<[u32]>,
    bytes: Bytes,
    /// Where the blocks start in `bytes` (256 two-byte entries each).
    blocks_at: usize,
    /// Where the IPv6 top table starts in `bytes` (an IPv6 database's index), followed by
    /// `v6_blocks` blocks of 256 four-byte entries.
    v6_at: Option<usize>,
    v6_blocks: usize,
    /// Where each place's strings start in `bytes` (relative to `strings_at`), and where those
    /// strings are: per place three values, each a length byte (`NO_STRING` for none) and the
    /// bytes.
    string_offsets: Box<[u32]>,
    strings_at: usize,
    strings_len: usize,
    /// Where the records' offsets start in `bytes` (ascending, four bytes each), followed by
    /// their places (two bytes each), and how many records there are.
    records_at: usize,
    records: usize,
    /// The body's checksum, worked out on a thread of its own while the run starts: the
    /// run asks for it ([`AddressIndex::intact`]) before it writes anything.
    checked: std::sync::Mutex<Option<std::thread::JoinHandle<bool>>>,
    path: String,
}

impl AddressIndex {
    /// What the index says of `address`. An entry that names no place or block the index has
    /// (a damaged file, which [`AddressIndex::intact`] reports) is read as "walk the tree".
    #[inline]
    pub(super) fn get(&self, address: u32) -> Indexed {
        let top = self.top[(address >> 16) as usize];
        let entry = if top & UNIFORM != 0 {
            top as u16
        } else {
            let at = self.blocks_at + 2 * ((top as usize) << 8 | (address >> 8 & 0xff) as usize);
            match self.bytes.as_ref().get(at..at + 2) {
                Some(e) => u16::from_le_bytes([e[0], e[1]]),
                None => FINER,
            }
        };
        match entry {
            NOT_FOUND => Indexed::NotFound,
            FINER => Indexed::Finer,
            p if usize::from(p) < self.places.len() => Indexed::Place(p),
            _ => Indexed::Finer,
        }
    }

    /// What the index says of an IPv6 address. An entry that does not fit where it is (a
    /// damaged file) is read as "walk the tree from its root".
    pub(super) fn get_v6(&self, address: u128) -> IndexedV6 {
        let from_root = IndexedV6::Walk { node: 0, depth: 0 };
        let Some(top_at) = self.v6_at else {
            return from_root;
        };
        let word = |at: usize| -> Option<u32> {
            let b = self.bytes.as_ref().get(at..at + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let Some(mut entry) = word(top_at + 4 * (address >> (128 - V6_TOP_BITS)) as usize) else {
            return from_root;
        };
        let mut depth = V6_TOP_BITS;
        let blocks_at = top_at + 4 * TOP;
        while entry & V6_TAG == V6_BLOCK {
            let block = (entry & !V6_TAG) as usize;
            if block >= self.v6_blocks || depth >= V6_TOP_BITS + 8 * V6_LEVELS {
                return from_root;
            }
            let i = (address >> (128 - depth - 8)) as usize & 0xff;
            entry = match word(blocks_at + 4 * (block << 8 | i)) {
                Some(e) => e,
                None => return from_root,
            };
            depth += 8;
        }
        match entry & V6_TAG {
            V6_NOT_FOUND => IndexedV6::NotFound,
            V6_NODE => IndexedV6::Walk {
                node: (entry & !V6_TAG) as usize,
                depth,
            },
            _ if ((entry & 0xffff) as usize) < self.places.len() && entry >> 16 == 0 => {
                IndexedV6::Place(entry as u16)
            }
            _ => from_root,
        }
    }

    /// Asks the processor for an IPv6 address's top entry, which [`AddressIndex::get_v6`]
    /// reads first.
    pub(super) fn prefetch_v6_top(&self, address: u128) {
        if let Some(top_at) = self.v6_at {
            let at = top_at + 4 * (address >> (128 - V6_TOP_BITS)) as usize;
            if let Some(e) = self.bytes.as_ref().get(at) {
                crate::prefetch::prefetch(e);
            }
        }
    }

    /// Whether the index holds IPv6 tables.
    pub(super) fn has_v6(&self) -> bool {
        self.v6_at.is_some()
    }

    /// Asks the processor for `address`'s entry ahead of [`AddressIndex::get`].
    #[inline]
    pub(super) fn prefetch(&self, address: u32) {
        let top = self.top[(address >> 16) as usize];
        if top & UNIFORM == 0 {
            let at = self.blocks_at + 2 * ((top as usize) << 8 | (address >> 8 & 0xff) as usize);
            if let Some(e) = self.bytes.as_ref().get(at) {
                crate::prefetch::prefetch(e);
            }
        }
    }

    /// Asks the processor for `address`'s top entry, which [`AddressIndex::prefetch`] reads.
    #[inline]
    pub(super) fn prefetch_top(&self, address: u32) {
        crate::prefetch::prefetch(&self.top[(address >> 16) as usize]);
    }

    /// The data-section offset of a record of place `p`.
    pub(super) fn record_of(&self, p: u16) -> usize {
        self.places[usize::from(p)] as usize
    }

    /// The continent, country and subdivision strings of place `p`'s record, as the
    /// database's paths read them when the index was made; `None` where the file does not hold
    /// them whole (a damaged index, which [`AddressIndex::intact`] reports).
    pub(super) fn strings_of(&self, p: u16) -> Option<[Option<String>; 3]> {
        let start = *self.string_offsets.get(usize::from(p))?;
        if start == NO_STRINGS {
            return None;
        }
        let start = start as usize;
        let all = self
            .bytes
            .as_ref()
            .get(self.strings_at..self.strings_at + self.strings_len)?;
        let mut at = start;
        let mut out: [Option<String>; 3] = Default::default();
        for value in &mut out {
            let len = *all.get(at)?;
            at += 1;
            if len != NO_STRING {
                let bytes = all.get(at..at + usize::from(len))?;
                *value = Some(std::str::from_utf8(bytes).ok()?.to_string());
                at += usize::from(len);
            }
        }
        Some(out)
    }

    /// The place of the record at data-section `offset` (`None`: no such record, or one of no
    /// place the index knows).
    pub(super) fn place_of_record(&self, offset: usize) -> Option<u16> {
        let offset = u32::try_from(offset).ok()?;
        let bytes = self.bytes.as_ref();
        let word = |i: usize| -> Option<u32> {
            let at = self.records_at + 4 * i;
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let (mut lo, mut hi) = (0, self.records);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match word(mid)?.cmp(&offset) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let at = self.records_at + 4 * self.records + 2 * mid;
                    let p = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
                    return (usize::from(p) < self.places.len()).then_some(p);
                }
            }
        }
        None
    }

    /// How many places the index names.
    pub(super) fn place_count(&self) -> usize {
        self.places.len()
    }

    /// Whether the body is what its header's checksum says (waiting for the check to finish).
    pub(super) fn intact(&self) -> Result<(), IndexError> {
        let handle = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match handle.map(|h| h.join()) {
            Some(Ok(false)) | Some(Err(_)) => Err(IndexError::Corrupt {
                path: self.path.clone(),
                detail: "its checksum does not match its contents".to_string(),
            }),
            Some(Ok(true)) | None => Ok(()),
        }
    }

    /// Maps and checks the index at `path` for a database of `identity` read with `fields`;
    /// with the search tree's jump tables it keeps, IPv4's and (for an IPv6 database) IPv6's:
    /// where the first 16 bits of an address lead (see `tree.rs`), which a run would otherwise
    /// make as it starts (milliseconds for a real database).
    pub(super) fn load(
        path: &Path,
        identity: &DbIdentity,
        fields: &str,
        data_len: usize,
    ) -> Result<(AddressIndex, JumpTables), IndexError> {
        let shown = path.display().to_string();
        let bytes = super::map_or_read(path).map_err(|source| IndexError::Read {
            path: shown.clone(),
            source,
        })?;
        let corrupt = |detail: &str| IndexError::Corrupt {
            path: shown.clone(),
            detail: detail.to_string(),
        };
        let mut r = Reader {
            bytes: bytes.as_ref(),
            at: 0,
        };
        if r.take(8).ok_or_else(|| corrupt("too short"))? != MAGIC {
            return Err(corrupt("no index header"));
        }
        // The version first: the rest of the header is laid out as that version's.
        let version = r.u32().ok_or_else(|| corrupt("header cut short"))?;
        if version != VERSION {
            return Err(corrupt(&format!(
                "format version {version}, where this logcensus reads {VERSION}"
            )));
        }
        let header = Header::read(&mut r, version).ok_or_else(|| corrupt("header cut short"))?;
        if header.db != *identity {
            return Err(IndexError::OtherDatabase {
                path: shown,
                detail: header.db.differs_from(identity),
            });
        }
        if header.fields != fields {
            return Err(IndexError::OtherFields {
                path: shown,
                made: header.fields,
                now: fields.to_string(),
            });
        }
        let body_at = r.at;
        let places = header.places as usize;
        let blocks = header.blocks as usize;
        let jumps = header.jumps as usize;
        let v6_blocks = header.v6_blocks as usize;
        let body_len = bytes.as_ref().len() - body_at;
        let v4_len = (4 * TOP * (1 + jumps) + 4 * places) as u64 + 512 * blocks as u64;
        let v6_len = match header.v6 {
            0 => 0,
            _ => (4 * TOP) as u64 + 1024 * v6_blocks as u64,
        };
        let strings_len = header.strings as usize;
        let strings_part = (4 * places) as u64 + strings_len as u64;
        let records = header.records as usize;
        let records_part = 6 * records as u64;
        if places > MAX_PLACES
            || jumps > 2
            || header.v6 > 1
            || (header.v6 == 0 && v6_blocks > 0)
            || body_len as u64 != v4_len + v6_len + strings_part + records_part
        {
            return Err(corrupt("its length does not match its header"));
        }
        let words = |b: &[u8]| -> Box<[u32]> {
            b.chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
                .collect()
        };
        let body = &bytes.as_ref()[body_at..];
        let top = words(&body[..4 * TOP]);
        let offsets = words(&body[4 * TOP..4 * TOP + 4 * places]);
        let jumps_at = 4 * TOP + 4 * places;
        let jumps: JumpTables = (0..jumps)
            .map(|j| words(&body[jumps_at + 4 * TOP * j..jumps_at + 4 * TOP * (j + 1)]))
            .collect();
        if offsets.iter().any(|&o| o as usize >= data_len) {
            return Err(corrupt("a place's record is outside the database"));
        }
        let checked = {
            let bytes = bytes.clone();
            let expected = header.body_checksum;
            std::thread::Builder::new()
                .name("geoip-index-check".to_string())
                .spawn(move || XxHash64::oneshot(0, &bytes.as_ref()[body_at..]) == expected)
                .map_err(|source| IndexError::Read {
                    path: shown.clone(),
                    source,
                })?
        };
        let blocks_at = body_at + jumps_at + 4 * TOP * jumps.len();
        let string_offsets_at = blocks_at + 512 * blocks + v6_len as usize;
        let strings_at = string_offsets_at + 4 * places;
        let string_offsets = words(&bytes.as_ref()[string_offsets_at..strings_at]);
        if string_offsets
            .iter()
            .any(|&o| o != NO_STRINGS && o as usize >= strings_len)
        {
            return Err(corrupt("a place's strings are outside the index"));
        }
        let index = AddressIndex {
            top,
            places: offsets,
            blocks_at,
            v6_at: (header.v6 == 1).then_some(blocks_at + 512 * blocks),
            v6_blocks,
            string_offsets,
            strings_at,
            strings_len,
            records_at: strings_at + strings_len,
            records,
            bytes,
            checked: std::sync::Mutex::new(Some(checked)),
            path: shown,
        };
        Ok((index, jumps))
    }
}

/// The search tree's jump tables an index keeps (see [`AddressIndex::load`]).
pub(super) type JumpTables = Vec<Box<[u32]>>;

/// An index file's header after its magic. The body follows it: the IPv4 top table (four
/// bytes per /16), the places' record offsets (four bytes each), the jump tables, the IPv4
/// blocks (256 two-byte entries each), the IPv6 top table and blocks (four-byte entries; an
/// IPv6 database's index only), the places' string offsets and strings, and the records'
/// offsets (ascending, four bytes each) and places (two bytes each). Little-endian throughout.
struct Header {
    version: u32,
    db: DbIdentity,
    fields: String,
    places: u32,
    /// 1 (IPv4's) or 2 (and IPv6's).
    jumps: u32,
    blocks: u32,
    /// 1 when the IPv6 tables follow, else 0.
    v6: u32,
    v6_blocks: u32,
    /// Bytes of the places' strings.
    strings: u32,
    /// Records whose place the index keeps.
    records: u32,
    body_checksum: u64,
}

impl Header {
    /// The header after its magic and `version`.
    fn read(r: &mut Reader<'_>, version: u32) -> Option<Header> {
        let db = DbIdentity {
            len: r.u64()?,
            build_epoch: r.u64()?,
            node_count: r.u32()?,
            record_size: r.u16()?,
            ip_version: r.u16()?,
            checksum: r.u64()?,
        };
        let places = r.u32()?;
        let jumps = r.u32()?;
        let blocks = r.u32()?;
        let v6 = r.u32()?;
        let v6_blocks = r.u32()?;
        let strings = r.u32()?;
        let records = r.u32()?;
        let body_checksum = r.u64()?;
        let fields_len = r.u32()? as usize;
        let fields = String::from_utf8(r.take(fields_len)?.to_vec()).ok()?;
        Some(Header {
            version,
            db,
            fields,
            places,
            jumps,
            blocks,
            v6,
            v6_blocks,
            strings,
            records,
            body_checksum,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.db.len.to_le_bytes());
        out.extend_from_slice(&self.db.build_epoch.to_le_bytes());
        out.extend_from_slice(&self.db.node_count.to_le_bytes());
        out.extend_from_slice(&self.db.record_size.to_le_bytes());
        out.extend_from_slice(&self.db.ip_version.to_le_bytes());
        out.extend_from_slice(&self.db.checksum.to_le_bytes());
        out.extend_from_slice(&self.places.to_le_bytes());
        out.extend_from_slice(&self.jumps.to_le_bytes());
        out.extend_from_slice(&self.blocks.to_le_bytes());
        out.extend_from_slice(&self.v6.to_le_bytes());
        out.extend_from_slice(&self.v6_blocks.to_le_bytes());
        out.extend_from_slice(&self.strings.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.body_checksum.to_le_bytes());
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        out.extend_from_slice(self.fields.as_bytes());
    }
}

impl DbIdentity {
    /// What differs between the database an index was made from (`self`) and `now`.
    fn differs_from(&self, now: &DbIdentity) -> String {
        if self.build_epoch != now.build_epoch {
            format!(
                "built at Unix time {}, this one at {}",
                self.build_epoch, now.build_epoch
            )
        } else if self.len != now.len {
            format!("{} bytes, this one {}", self.len, now.len)
        } else {
            "same size and build time, different contents".to_string()
        }
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Makes the index of `db` (opened at region level, so that its places are the finest any
/// run asks for), as the bytes of its file.
pub(super) fn make(db: &GeoDb, tree: &Tree, identity: DbIdentity) -> Result<Vec<u8>, IndexError> {
    let mut places: Vec<u32> = Vec::new();
    // The database's answer number → place number, and record offset → entry.
    let mut place_of_answer: std::collections::HashMap<u32, u16> = Default::default();
    let mut entry_of_offset: std::collections::HashMap<usize, u16> = Default::default();
    let mut entry_of = |end: usize| -> Result<u16, IndexError> {
        let Some(offset) = tree.offset(end) else {
            return Ok(NOT_FOUND);
        };
        if let Some(&e) = entry_of_offset.get(&offset) {
            return Ok(e);
        }
        let e = match db.answer_at(tree, offset) {
            Answer::Unknown => NOT_FOUND,
            Answer::Known(i) => match place_of_answer.get(&i) {
                Some(&p) => p,
                None => {
                    if places.len() >= MAX_PLACES {
                        return Err(IndexError::Make(format!(
                            "the database has more than {MAX_PLACES} places"
                        )));
                    }
                    let record = u32::try_from(offset).map_err(|_| {
                        IndexError::Make("a record offset does not fit in 32 bits".to_string())
                    })?;
                    let p = places.len() as u16;
                    places.push(record);
                    place_of_answer.insert(i, p);
                    p
                }
            },
        };
        entry_of_offset.insert(offset, e);
        Ok(e)
    };
    let starts = tree.v4_jumps();
    let mut top = vec![0u32; TOP];
    let mut blocks: Vec<u16> = Vec::new();
    let mut block_numbers: std::collections::HashMap<Vec<u16>, u32> = Default::default();
    let mut block = vec![0u16; 256];
    for (slash16, &start) in starts.iter().enumerate() {
        let start = start as usize;
        if !tree.is_node(start) {
            top[slash16] = UNIFORM | u32::from(entry_of(start)?);
            continue;
        }
        // Depth first through the /16's next eight levels: a leaf fills the /24s it covers,
        // a node still inner at the eighth level is a /24 of finer networks.
        let mut stack = vec![(start, 0u32, 0usize)];
        while let Some((node, depth, first)) = stack.pop() {
            let span = 256 >> depth;
            if !tree.is_node(node) {
                let e = entry_of(node)?;
                block[first..first + span].fill(e);
            } else if depth == 8 {
                block[first] = FINER;
            } else {
                stack.push((tree.child(node, 1), depth + 1, first + span / 2));
                stack.push((tree.child(node, 0), depth + 1, first));
            }
        }
        top[slash16] = if block.iter().all(|&e| e == block[0]) {
            UNIFORM | u32::from(block[0])
        } else {
            let next = (blocks.len() / 256) as u32;
            let n = *block_numbers.entry(block.clone()).or_insert(next);
            if n == next {
                blocks.extend_from_slice(&block);
            }
            n
        };
    }
    // IPv6, from where the tree's first 16 bits lead, down to /32 at most.
    let v6_starts = tree.v6_jumps();
    let mut v6_top: Vec<u32> = Vec::new();
    let mut v6_blocks: Vec<u32> = Vec::new();
    if let Some(starts) = &v6_starts {
        let mut numbers: std::collections::HashMap<Vec<u32>, u32> = Default::default();
        let mut level = |node: usize, depth: u32| {
            v6_entry(
                tree,
                node,
                depth,
                &mut entry_of,
                &mut v6_blocks,
                &mut numbers,
            )
        };
        v6_top = starts
            .iter()
            .map(|&start| level(start as usize, V6_TOP_BITS))
            .collect::<Result<_, _>>()?;
    }
    // The place of every record, found by a walk through the whole tree (a node reached again,
    // as where IPv6 addresses alias the IPv4 ones, is not walked twice).
    let mut record_places: Vec<(u32, u16)> = Vec::new();
    {
        let mut seen = vec![false; tree.node_count()];
        let mut seen_records = std::collections::HashSet::new();
        let mut stack = vec![0usize];
        while let Some(node) = stack.pop() {
            if !tree.is_node(node) {
                let Some(offset) = tree.offset(node) else {
                    continue;
                };
                if !seen_records.insert(offset) {
                    continue;
                }
                let e = entry_of(node)?;
                if e != NOT_FOUND {
                    let offset = u32::try_from(offset).map_err(|_| {
                        IndexError::Make("a record offset does not fit in 32 bits".to_string())
                    })?;
                    record_places.push((offset, e));
                }
                continue;
            }
            if std::mem::replace(&mut seen[node], true) {
                continue;
            }
            stack.push(tree.child(node, 0));
            stack.push(tree.child(node, 1));
        }
    }
    record_places.sort_unstable();
    // Each place's strings, read from its record at the region-level paths.
    let data = tree.data();
    let mut string_offsets: Vec<u32> = Vec::with_capacity(places.len());
    let mut strings: Vec<u8> = Vec::new();
    for &offset in &places {
        string_offsets.push(strings.len() as u32);
        let values = super::record::strings_at(data, offset as usize, db.paths());
        // Longer values are no code or name a run would keep; such a place's record is read.
        if values
            .iter()
            .flatten()
            .any(|v| v.len() >= usize::from(NO_STRING))
        {
            *string_offsets.last_mut().expect("pushed above") = NO_STRINGS;
            continue;
        }
        for value in values {
            match value {
                Some(v) => {
                    strings.push(v.len() as u8);
                    strings.extend_from_slice(v.as_bytes());
                }
                None => strings.push(NO_STRING),
            }
        }
    }
    let mut body = Vec::with_capacity(4 * TOP + 4 * places.len() + 2 * blocks.len());
    top.iter()
        .for_each(|t| body.extend_from_slice(&t.to_le_bytes()));
    places
        .iter()
        .for_each(|o| body.extend_from_slice(&o.to_le_bytes()));
    let has_v6 = v6_starts.is_some();
    let mut jumps = vec![starts];
    jumps.extend(v6_starts);
    for table in &jumps {
        table
            .iter()
            .for_each(|j| body.extend_from_slice(&j.to_le_bytes()));
    }
    blocks
        .iter()
        .for_each(|e| body.extend_from_slice(&e.to_le_bytes()));
    v6_top
        .iter()
        .chain(&v6_blocks)
        .chain(&string_offsets)
        .for_each(|e| body.extend_from_slice(&e.to_le_bytes()));
    body.extend_from_slice(&strings);
    for (offset, _) in &record_places {
        body.extend_from_slice(&offset.to_le_bytes());
    }
    for (_, place) in &record_places {
        body.extend_from_slice(&place.to_le_bytes());
    }
    let header = Header {
        version: VERSION,
        db: identity,
        fields: db.fields_text(),
        places: places.len() as u32,
        jumps: jumps.len() as u32,
        blocks: (blocks.len() / 256) as u32,
        v6: u32::from(has_v6),
        v6_blocks: (v6_blocks.len() / 256) as u32,
        strings: strings.len() as u32,
        records: record_places.len() as u32,
        body_checksum: XxHash64::oneshot(0, &body),
    };
    let mut out = Vec::with_capacity(body.len() + 128);
    header.write(&mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The IPv6 index entry for the tree value `node` reached at `depth`: its place or "not
/// found" where the walk ends there; else, above /32, the block of where the next eight bits
/// lead (identical blocks stored once, a block of one place throughout replaced by that place);
/// at /32, the node itself.
fn v6_entry(
    tree: &Tree,
    node: usize,
    depth: u32,
    entry_of: &mut impl FnMut(usize) -> Result<u16, IndexError>,
    blocks: &mut Vec<u32>,
    numbers: &mut std::collections::HashMap<Vec<u32>, u32>,
) -> Result<u32, IndexError> {
    if !tree.is_node(node) {
        return Ok(match entry_of(node)? {
            NOT_FOUND => V6_NOT_FOUND,
            p => V6_PLACE | u32::from(p),
        });
    }
    if depth >= V6_TOP_BITS + 8 * V6_LEVELS {
        return u32::try_from(node)
            .ok()
            .filter(|&n| n & V6_TAG == 0)
            .map(|n| V6_NODE | n)
            .ok_or_else(|| IndexError::Make("the search tree has more than 2^30 nodes".into()));
    }
    // Depth first through the next eight levels: a walk that ends fills the entries it covers;
    // a node at the eighth level is the next level's entry.
    let mut block = vec![0u32; 256];
    let mut stack = vec![(node, 0u32, 0usize)];
    while let Some((node, d, first)) = stack.pop() {
        let span = 256 >> d;
        if !tree.is_node(node) || d == 8 {
            let e = v6_entry(tree, node, depth + d, entry_of, blocks, numbers)?;
            block[first..first + span].fill(e);
        } else {
            stack.push((tree.child(node, 1), d + 1, first + span / 2));
            stack.push((tree.child(node, 0), d + 1, first));
        }
    }
    let leaf = |e: u32| matches!(e & V6_TAG, V6_PLACE | V6_NOT_FOUND);
    if leaf(block[0]) && block.iter().all(|&e| e == block[0]) {
        return Ok(block[0]);
    }
    let next = (blocks.len() / 256) as u32;
    if next & V6_TAG != 0 {
        return Err(IndexError::Make("too many IPv6 blocks".into()));
    }
    let n = *numbers.entry(block.clone()).or_insert(next);
    if n == next {
        blocks.extend_from_slice(&block);
    }
    Ok(V6_BLOCK | n)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use logcensus_fixtures::mmdb::{MmdbBuilder, Value};
    use logcensus_policy::{GeoFields, GeoLevel};

    use super::*;

    /// A random City-schema database: IPv4 networks from /8 to /32 (so some /24s are split
    /// finer), IPv6 ones, and records that repeat a place under another city, lack a
    /// subdivision or a country, or hold values the reader refuses.
    fn random_city(ip_version: u16, record_size: u16, epoch: u64, seed: u64) -> Vec<u8> {
        random_city_networks(ip_version, record_size, epoch, seed).0
    }

    /// [`random_city`], and its networks.
    fn random_city_networks(
        ip_version: u16,
        record_size: u16,
        epoch: u64,
        seed: u64,
    ) -> (Vec<u8>, Vec<(IpAddr, u8)>) {
        let mut next = super::super::splitmix(seed);
        let places = [
            ("NA", "US", Some("VA")),
            ("NA", "US", Some("CA")),
            ("NA", "US", None),
            ("EU", "DE", Some("BY")),
            ("EU", "GB", Some("SCT")),
            ("AS", "JP", Some("13")),
            ("EU", "Germany", Some("BY")),
            ("", "FR", Some("IDF")),
        ];
        let mut b = MmdbBuilder::new("GeoIP2-City", ip_version);
        b.record_size(record_size).build_epoch(epoch);
        let mut networks = Vec::new();
        for i in 0..2_000u32 {
            let (continent, country, sub) = places[(next() % places.len() as u64) as usize];
            let mut fields = vec![("city", Value::map([("geoname_id", Value::Uint32(i % 97))]))];
            if !continent.is_empty() {
                fields.push((
                    "continent",
                    Value::map([("code", Value::String(continent.into()))]),
                ));
            }
            fields.push((
                "country",
                Value::map([("iso_code", Value::String(country.into()))]),
            ));
            if let Some(sub) = sub {
                fields.push((
                    "subdivisions",
                    Value::Array(vec![Value::map([("iso_code", Value::String(sub.into()))])]),
                ));
            }
            let value = match i % 50 {
                0 => Value::map([("location", Value::Double(1.5))]),
                _ => Value::map(fields),
            };
            let v6 = ip_version == 6 && i % 4 == 0;
            let network = if v6 {
                // /8 to /64: above, at and below each of the index's levels (/16, /24, /32).
                let len = 8 + (next() % 57) as u8;
                let a = (u128::from(next()) << 64 | u128::from(next())) >> 3 | 1u128 << 125;
                (
                    IpAddr::V6((a & (u128::MAX << (128 - u32::from(len)))).into()),
                    len,
                )
            } else {
                // Mostly /8–/24, a fifth finer: some /24s end up split.
                let len = if i % 5 == 0 {
                    25 + (next() % 8) as u8
                } else {
                    8 + (next() % 17) as u8
                };
                let a = (next() as u32) & (u32::MAX << (32 - u32::from(len)));
                (IpAddr::V4(a.into()), len)
            };
            b.insert(network, value).unwrap();
            networks.push(network);
        }
        (b.build().unwrap(), networks)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The first, last, middle and neighbouring addresses of every network, and random ones
    /// with the first and last addresses of their /24s.
    fn probes(seed: u64, networks: &[(IpAddr, u8)]) -> Vec<IpAddr> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for &(ip, len) in networks {
            let (a, bits) = match ip {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
                IpAddr::V6(a) => (u128::from(a), 128),
            };
            let size = 1u128 << (bits - u32::from(len));
            let mask = u128::MAX >> (128 - bits);
            for p in [
                a.wrapping_sub(1),
                a,
                a.wrapping_add(size / 2),
                a.wrapping_add(size - 1),
                a.wrapping_add(size),
            ] {
                let p = p & mask;
                out.push(match ip {
                    IpAddr::V4(_) => IpAddr::V4((p as u32).into()),
                    IpAddr::V6(_) => IpAddr::V6(p.into()),
                });
            }
        }
        for _ in 0..40_000 {
            let a = next() as u32;
            out.push(IpAddr::V4(a.into()));
            out.push(IpAddr::V4((a & !0xff).into()));
            out.push(IpAddr::V4((a | 0xff).into()));
        }
        for _ in 0..2_000 {
            out.push(IpAddr::V6(
                ((u128::from(next()) << 64 | u128::from(next())) >> 3 | 1u128 << 125).into(),
            ));
        }
        out.push("0.0.0.0".parse().unwrap());
        out.push("255.255.255.255".parse().unwrap());
        out
    }

    fn show(answer: (&std::sync::Arc<super::super::Place>, bool)) -> String {
        let (p, known) = answer;
        let s = |v: &Option<crate::Str>| v.as_deref().unwrap_or("null").to_string();
        format!(
            "{} {} {} {known}",
            s(&p.continent),
            s(&p.country),
            s(&p.region)
        )
    }

    /// With its index, a database answers every address as it does without (one at a time and
    /// looked up ahead in batches), at every level, on IPv4 and IPv6 databases of each record
    /// size; and the index answers most addresses itself, leaving split /24s to the tree.
    #[test]
    fn an_index_answers_what_its_database_answers() {
        let dir = tempfile::tempdir().unwrap();
        let fields = GeoFields::default();
        for (n, (ip_version, record_size)) in [(4, 24), (6, 28), (6, 32)].into_iter().enumerate() {
            let (db, networks) =
                random_city_networks(ip_version, record_size, 1_700_000_000, n as u64 + 1);
            let db_path = write(dir.path(), &format!("{n}.mmdb"), &db);
            let ips = probes(0x2545_f491_4f6c_dd1d, &networks);
            let index = write(
                dir.path(),
                &format!("{n}.idx"),
                &GeoDb::make_index(&db_path, &fields).unwrap(),
            );
            for level in [GeoLevel::Continent, GeoLevel::Country, GeoLevel::Region] {
                let plain = GeoDb::open(&db_path, &fields, level).unwrap();
                let mut indexed = GeoDb::open(&db_path, &fields, level).unwrap();
                indexed.use_index(&index).unwrap();
                indexed.index_intact().unwrap();
                let mut p = plain.lookup();
                let mut one = indexed.lookup();
                let want: Vec<String> = ips.iter().map(|&ip| show(p.place(Some(ip)))).collect();
                for (ip, want) in ips.iter().zip(&want) {
                    let got = show(one.place(Some(*ip)));
                    assert_eq!(
                        &got, want,
                        "{ip}: IPv{ip_version}, {record_size}-bit, {level:?}"
                    );
                }
                let mut ahead = indexed.lookup();
                let mut answers = Vec::new();
                for (ips, want) in ips.chunks(1000).zip(want.chunks(1000)) {
                    answers.clear();
                    ahead.look_ahead(ips, &mut answers);
                    for ((ip, &a), want) in ips.iter().zip(&answers).zip(want) {
                        let got = show(ahead.place_of(a));
                        assert_eq!(&got, want, "{ip} looked up ahead, {level:?}");
                    }
                }
            }
            let db = GeoDb::open(&db_path, &fields, GeoLevel::Region).unwrap();
            let ix = AddressIndex::load(
                &index,
                &db.identity(db.tree.as_ref().unwrap()),
                &db.fields_text(),
                db.tree.as_ref().unwrap().data().len(),
            )
            .unwrap()
            .0;
            // Every place's strings are kept, so its record is never read for it.
            assert!(ix.place_count() > 5);
            assert!((0..ix.place_count()).all(|p| ix.strings_of(p as u16).is_some()));
            // And every record's place: each place's own record among them.
            assert!(ix.records >= ix.place_count(), "{}", ix.records);
            for p in 0..ix.place_count() as u16 {
                assert_eq!(ix.place_of_record(ix.record_of(p)), Some(p));
            }
            assert_eq!(ix.place_of_record(usize::MAX), None);
            let mut counts = [0usize; 3];
            for ip in &ips {
                if let IpAddr::V4(a) = ip {
                    counts[match ix.get(u32::from(*a)) {
                        Indexed::Place(_) => 0,
                        Indexed::NotFound => 1,
                        Indexed::Finer => 2,
                    }] += 1;
                }
            }
            let [places, not_found, finer] = counts;
            assert!(
                places > 30_000 && not_found > 1_000 && finer > 100,
                "{counts:?}"
            );
            // IPv6: answered by the index, or walked on from /16, /24 or /32 (never from the
            // root, which only a damaged index gives).
            let mut v6 = std::collections::BTreeMap::<&str, usize>::new();
            for ip in &ips {
                if let IpAddr::V6(a) = ip {
                    let kind = match ix.get_v6(u128::from(*a)) {
                        IndexedV6::Place(_) => "place",
                        IndexedV6::NotFound => "not found",
                        IndexedV6::Walk { depth: 16, .. } => "walk from /16",
                        IndexedV6::Walk { depth: 24, .. } => "walk from /24",
                        IndexedV6::Walk { depth: 32, .. } => "walk from /32",
                        IndexedV6::Walk { .. } => "walk from elsewhere",
                    };
                    *v6.entry(kind).or_default() += 1;
                }
            }
            if ip_version == 4 {
                // No IPv6 tables: every IPv6 address is left to the tree (which has none).
                assert!(!ix.has_v6());
                assert_eq!(
                    v6.keys().copied().collect::<Vec<_>>(),
                    ["walk from elsewhere"]
                );
            } else {
                assert!(ix.has_v6());
                assert!(
                    v6["place"] > 500 && v6["not found"] > 500 && v6["walk from /32"] > 100,
                    "{v6:?}"
                );
                assert!(!v6.contains_key("walk from elsewhere"), "{v6:?}");
            }
        }
    }

    /// An index is refused, with what to do, when it was made from another database, with other
    /// fields, or is not an index; a damaged body is found by its checksum.
    #[test]
    fn an_index_for_another_database_or_damaged_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fields = GeoFields::default();
        let a = write(dir.path(), "a.mmdb", &random_city(6, 28, 1_700_000_000, 7));
        let b = write(dir.path(), "b.mmdb", &random_city(6, 28, 1_700_086_400, 7));
        let bytes = GeoDb::make_index(&a, &fields).unwrap();
        let index = write(dir.path(), "a.idx", &bytes);
        let open =
            |db: &Path, fields: &GeoFields| GeoDb::open(db, fields, GeoLevel::Region).unwrap();

        let e = open(&b, &fields).use_index(&index).unwrap_err().to_string();
        assert!(
            e.contains("a.idx was made from another database (built at Unix time 1700000000, this one at 1700086400)")
                && e.contains("logcensus geoip-index"),
            "{e}"
        );
        let other = GeoFields {
            subdivision: "subdivisions.1.iso_code".into(),
            ..GeoFields::default()
        };
        let e = open(&a, &other).use_index(&index).unwrap_err().to_string();
        assert!(
            e.contains("made with other [geoip.fields]")
                && e.contains("subdivision = \"subdivisions.0.iso_code\"")
                && e.contains("subdivision = \"subdivisions.1.iso_code\""),
            "{e}"
        );
        let short = write(dir.path(), "short.idx", &bytes[..bytes.len() - 2]);
        let e = open(&a, &fields).use_index(&short).unwrap_err().to_string();
        assert!(
            e.contains(
                "short.idx is not a logcensus address index (its length does not match its header)"
            ),
            "{e}"
        );
        // An index of an earlier format is named as such: here format 2's header, which had
        // none of the four counts after the IPv4 blocks' (bytes 56 to 72 of this one's).
        let mut old = bytes.clone();
        old[8..12].copy_from_slice(&2u32.to_le_bytes());
        old.drain(56..72);
        let old = write(dir.path(), "old.idx", &old);
        let e = open(&a, &fields).use_index(&old).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "old.idx is not a logcensus address index (format version 2, where this logcensus reads {VERSION}); make it again with `logcensus geoip-index`"
            )),
            "{e}"
        );
        let e = open(&a, &fields).use_index(&a).unwrap_err().to_string();
        assert!(
            e.contains("a.mmdb is not a logcensus address index (no index header)"),
            "{e}"
        );
        let e = open(&a, &fields)
            .use_index(&dir.path().join("missing.idx"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read address index ") && e.contains("missing.idx"),
            "{e}"
        );

        // A flipped byte in a block: the index loads (its entries still name places it has),
        // and its checksum says it is damaged.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01;
        let damaged = write(dir.path(), "damaged.idx", &damaged);
        let mut db = open(&a, &fields);
        db.use_index(&damaged).unwrap();
        let e = db.index_intact().unwrap_err().to_string();
        assert!(e.contains("damaged.idx is not a logcensus address index (its checksum does not match its contents)"), "{e}");
        // Left out, it takes the jump tables it gave the tree with it.
        assert!(db.tree.as_ref().unwrap().has_jumps(false));
        db.forget_index();
        assert!(!db.has_index());
        assert!(!db.tree.as_ref().unwrap().has_jumps(false));
        assert!(!db.tree.as_ref().unwrap().has_jumps(true));
        // The intact one passes.
        let mut db = open(&a, &fields);
        db.use_index(&index).unwrap();
        db.index_intact().unwrap();
    }
}
