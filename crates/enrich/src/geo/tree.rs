//! The search tree of a MaxMind DB file, walked for many addresses at once.
//!
//! A lookup in a real database reads one tree node per bit of the address, each node
//! somewhere in tens of megabytes: a chain of cache misses, every read waiting for the one
//! before it. Walking [`WAYS`] addresses in step lets their misses overlap, and the first
//! [`JUMP_BITS`] steps are one read of a table made from the top of the tree. The walk follows
//! the format's specification (and the `maxminddb` crate's reading of it) exactly; the
//! records it finds are read at their offsets by [`super::record`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::prefetch::prefetch;

/// How many addresses are walked in step.
const WAYS: usize = 16;

/// A walk's first bits are looked up in a table of where they lead ([`Tree::jumps`]).
const JUMP_BITS: u32 = 16;

/// Between the search tree and the data section.
const SEPARATOR_BYTES: usize = 16;

/// One of a node's two records (`side` 0 left, 1 right) in a tree of `BITS`-bit records
/// starting at `tree[0]`.
#[inline(always)]
fn record_in<const BITS: u16>(tree: &[u8], node: usize, side: u32) -> usize {
    let node_bytes = usize::from(BITS) / 4;
    let at = node * node_bytes;
    let b = &tree[at..at + node_bytes];
    let be = |s: &[u8]| s.iter().fold(0usize, |v, &x| (v << 8) | usize::from(x));
    match (BITS, side) {
        (24, 0) => be(&b[0..3]),
        (24, _) => be(&b[3..6]),
        (28, 0) => (usize::from(b[3] & 0xf0) << 20) | be(&b[0..3]),
        (28, _) => (usize::from(b[3] & 0x0f) << 24) | be(&b[4..7]),
        (_, 0) => be(&b[0..4]),
        (_, _) => be(&b[4..8]),
    }
}

/// A database's bytes, shared by the `maxminddb` reader and the walker.
#[derive(Clone)]
pub(super) struct Bytes(pub(super) Arc<Source>);

/// Where the bytes are: mapped from the file, or read into memory.
pub(super) enum Source {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match &*self.0 {
            Source::Mapped(m) => m,
            Source::Read(v) => v,
        }
    }
}

/// The search tree, read from a database's bytes and metadata.
pub(super) struct Tree {
    bytes: Bytes,
    node_count: usize,
    record_bits: u16,
    node_bytes: usize,
    ip_version: u16,
    /// Where IPv4 walks start: the root of an IPv4 database, else the node reached by 96 zero
    /// bits (which may already be a record or "not found").
    v4_start: usize,
    /// Where the first [`JUMP_BITS`] bits of an IPv4 and an IPv6 address lead, made when the
    /// first address of the family is walked.
    jumps: [OnceLock<Box<[u32]>>; 2],
    /// Set by the first walk of each family, which makes its table.
    making: [AtomicBool; 2],
}

impl Tree {
    /// The tree of a database the `maxminddb` crate opened; `None` for a record size the format
    /// does not define or a tree that does not fit in the file (the crate's own lookups are then
    /// the only ones).
    pub(super) fn new(
        bytes: Bytes,
        node_count: u32,
        record_bits: u16,
        ip_version: u16,
    ) -> Option<Tree> {
        let node_count = usize::try_from(node_count).ok()?;
        let node_bytes = match record_bits {
            24 => 6,
            28 => 7,
            32 => 8,
            _ => return None,
        };
        if node_count.checked_mul(node_bytes)? > bytes.as_ref().len() {
            return None;
        }
        let mut tree = Tree {
            bytes,
            node_count,
            record_bits,
            node_bytes,
            ip_version,
            v4_start: 0,
            jumps: [OnceLock::new(), OnceLock::new()],
            making: [AtomicBool::new(false), AtomicBool::new(false)],
        };
        if ip_version == 6 {
            for _ in 0..96 {
                if tree.v4_start >= node_count {
                    break;
                }
                tree.v4_start = tree.record(tree.v4_start, 0);
            }
        }
        Some(tree)
    }

    /// The data section, from its start to the end of the file (the metadata after it is
    /// never pointed into by a well-formed record).
    pub(super) fn data(&self) -> &[u8] {
        let start = self.node_count * self.node_bytes + SEPARATOR_BYTES;
        self.bytes.as_ref().get(start..).unwrap_or_default()
    }

    /// The database's bytes.
    pub(super) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// One of a node's two records (`side` 0 left, 1 right). `node < node_count`, so the node
    /// lies inside the tree, which `new` checked fits in the file.
    fn record(&self, node: usize, side: u32) -> usize {
        match self.record_bits {
            24 => record_in::<24>(self.bytes.as_ref(), node, side),
            28 => record_in::<28>(self.bytes.as_ref(), node, side),
            _ => record_in::<32>(self.bytes.as_ref(), node, side),
        }
    }

    /// The data-section offset of each address's record (`None`: not in the database), as
    /// `maxminddb::LookupResult::offset` gives it, appended to `out` in order. `addresses` are
    /// IPv6 addresses when `v6`, else IPv4 addresses in the low 32 bits; an IPv4 database has
    /// no IPv6 answers.
    pub(super) fn find(&self, v6: bool, addresses: &[u128], out: &mut Vec<Option<usize>>) {
        match self.record_bits {
            24 => self.find_in::<24>(v6, addresses, out),
            28 => self.find_in::<28>(v6, addresses, out),
            _ => self.find_in::<32>(v6, addresses, out),
        }
    }

    /// [`Tree::find`] for records of `BITS` bits (`record_bits`).
    fn find_in<const BITS: u16>(&self, v6: bool, addresses: &[u128], out: &mut Vec<Option<usize>>) {
        let (start, bits) = match v6 {
            true if self.ip_version == 4 => {
                out.extend(addresses.iter().map(|_| None));
                return;
            }
            true => (0, 128),
            false => (self.v4_start, 32),
        };
        let family = usize::from(v6);
        let jumps = match self.jumps[family].get() {
            Some(jumps) => Some(jumps),
            // The first walk makes the table (milliseconds for a real database, most of them
            // page faults in the top of the tree); another worker that needs it meanwhile
            // walks from the start instead of waiting for it.
            None if !self.making[family].swap(true, Ordering::Relaxed) => {
                Some(self.jumps[family].get_or_init(|| self.jumps_from(start)))
            }
            None => None,
        };
        let first_depth = if jumps.is_some() { JUMP_BITS } else { 0 };
        for group in addresses.chunks(WAYS) {
            let mut nodes = [0; WAYS];
            for (node, &address) in nodes.iter_mut().zip(group) {
                *node = match jumps {
                    Some(jumps) => jumps[(address >> (bits - JUMP_BITS)) as usize] as usize,
                    None => start,
                };
            }
            self.walk::<BITS>(&mut nodes, group, bits, first_depth);
            out.extend(nodes[..group.len()].iter().map(|&n| self.offset(n)));
        }
    }

    /// [`Tree::find`] for IPv6 addresses whose walks start part of the way down: each
    /// `(node, depth, address)` at the node that the address's first `depth` bits lead to (as
    /// the address index gives it). `walks` in order of depth walk fastest.
    pub(super) fn find_v6_from(&self, walks: &[(usize, u32, u128)], out: &mut Vec<Option<usize>>) {
        if self.ip_version == 4 {
            out.extend(walks.iter().map(|_| None));
            return;
        }
        match self.record_bits {
            24 => self.find_v6_from_in::<24>(walks, out),
            28 => self.find_v6_from_in::<28>(walks, out),
            _ => self.find_v6_from_in::<32>(walks, out),
        }
    }

    fn find_v6_from_in<const BITS: u16>(
        &self,
        walks: &[(usize, u32, u128)],
        out: &mut Vec<Option<usize>>,
    ) {
        let mut rest = walks;
        while let Some(&(_, depth, _)) = rest.first() {
            // Walks from one depth together, up to `WAYS` of them.
            let n = rest
                .iter()
                .take(WAYS)
                .position(|w| w.1 != depth)
                .unwrap_or(rest.len().min(WAYS));
            let (group, later) = rest.split_at(n);
            rest = later;
            let mut nodes = [0; WAYS];
            let mut addresses = [0u128; WAYS];
            for (i, &(node, _, address)) in group.iter().enumerate() {
                nodes[i] = node;
                addresses[i] = address;
            }
            self.walk::<BITS>(&mut nodes, &addresses[..n], 128, depth.min(128));
            out.extend(nodes[..n].iter().map(|&node| self.offset(node)));
        }
    }

    /// Walks up to `WAYS` addresses of `bits` bits in step from `nodes`, reached by their first
    /// `first_depth` bits, each until it ends.
    fn walk<const BITS: u16>(
        &self,
        nodes: &mut [usize; WAYS],
        group: &[u128],
        bits: u32,
        first_depth: u32,
    ) {
        let tree = self.bytes.as_ref();
        for &node in &nodes[..group.len()] {
            if node < self.node_count {
                prefetch(&tree[node * self.node_bytes]);
            }
        }
        for depth in first_depth..bits {
            let mut walking = false;
            for (node, &address) in nodes.iter_mut().zip(group) {
                if *node < self.node_count {
                    let bit = (address >> (bits - 1 - depth)) as u32 & 1;
                    *node = record_in::<BITS>(tree, *node, bit);
                    if *node < self.node_count {
                        prefetch(&tree[*node * self.node_bytes]);
                        walking = true;
                    }
                }
            }
            if !walking {
                break;
            }
        }
    }

    /// Where the first [`JUMP_BITS`] bits of each IPv4 address lead (see `jumps_from`), for
    /// the address index.
    pub(super) fn v4_jumps(&self) -> Box<[u32]> {
        self.jumps_from(self.v4_start)
    }

    /// The same for IPv6 addresses, in an IPv6 database.
    pub(super) fn v6_jumps(&self) -> Option<Box<[u32]>> {
        (self.ip_version == 6).then(|| self.jumps_from(0))
    }

    /// Uses `tables` (IPv4's, then IPv6's), made by [`Tree::v4_jumps`] and [`Tree::v6_jumps`]
    /// from this very tree (the address index keeps them), instead of making its own. A table
    /// of the wrong size is ignored.
    pub(super) fn use_jumps(&self, tables: Vec<Box<[u32]>>) {
        for (family, table) in tables.into_iter().enumerate().take(2) {
            if table.len() == 1 << JUMP_BITS {
                let _ = self.jumps[family].set(table);
            }
        }
    }

    /// Forgets jump tables [`Tree::use_jumps`] gave it (an address index found damaged): walks
    /// make their own again.
    pub(super) fn forget_jumps(&mut self) {
        for (jumps, making) in self.jumps.iter_mut().zip(&mut self.making) {
            jumps.take();
            *making.get_mut() = false;
        }
    }

    /// Whether the tree has its jump table for IPv4 (`v6` false) or IPv6 addresses.
    #[cfg(test)]
    pub(super) fn has_jumps(&self, v6: bool) -> bool {
        self.jumps[usize::from(v6)].get().is_some()
    }

    /// How many nodes the tree has (node numbers run below it).
    pub(super) fn node_count(&self) -> usize {
        self.node_count
    }

    /// Whether a record value is a node of the tree (else a walk ends there).
    pub(super) fn is_node(&self, value: usize) -> bool {
        value < self.node_count
    }

    /// One of a node's two records (`side` 0 left, 1 right); `node` is a node of the tree.
    pub(super) fn child(&self, node: usize, side: u32) -> usize {
        self.record(node, side)
    }

    /// Has every later walk start from the root, as a walk does while another worker makes
    /// the family's table.
    #[cfg(test)]
    pub(super) fn walk_without_jumps(&self) {
        self.making
            .iter()
            .for_each(|m| m.store(true, Ordering::Relaxed));
    }

    /// For each value of an address's first [`JUMP_BITS`] bits, the node a walk from `start`
    /// reaches after them, or the record or "not found" it ends at on the way.
    ///
    /// Built level by level, each level's nodes (in the order of their bits) giving the next
    /// level's: the reads of one level do not wait for each other, so their cache misses and
    /// page faults overlap, where a depth-first walk read one node after the other.
    fn jumps_from(&self, start: usize) -> Box<[u32]> {
        // Record values are at most 32 bits wide.
        let mut level = vec![start as u32];
        for _ in 0..JUMP_BITS {
            level = level
                .iter()
                .flat_map(|&node| {
                    let node = node as usize;
                    if node < self.node_count {
                        [self.record(node, 0) as u32, self.record(node, 1) as u32]
                    } else {
                        // A walk that ended stays where it ended, whatever the next bits.
                        [node as u32; 2]
                    }
                })
                .collect();
        }
        level.into_boxed_slice()
    }

    /// Where a walk ended: a data record's offset, or `None` for "not found" (the empty
    /// marker, or bits exhausted on an inner node) and for a value that points nowhere valid.
    pub(super) fn offset(&self, end: usize) -> Option<usize> {
        end.checked_sub(self.node_count)?
            .checked_sub(SEPARATOR_BYTES)
            .filter(|&o| o < self.data_section_len())
    }

    /// The data section runs from after the tree and separator up to the metadata marker. The
    /// crate found the marker when it opened the file; here only an upper bound is needed to
    /// refuse a pointer past the file, and the crate rejects the rest when it decodes.
    fn data_section_len(&self) -> usize {
        self.bytes
            .as_ref()
            .len()
            .saturating_sub(self.node_count * self.node_bytes + SEPARATOR_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records read as the MaxMind DB specification lays them out, including the 28-bit
    /// layout's shared middle byte (high nibble: left record's top bits; low: right's), which
    /// databases smaller than 2^24 nodes never exercise.
    #[test]
    fn records_at_each_size() {
        let tree = |bits: u16, node: &[u8]| {
            let mut bytes = node.to_vec();
            bytes.extend_from_slice(&[0; 32]);
            Tree::new(Bytes(Arc::new(Source::Read(bytes))), 1, bits, 4).unwrap()
        };
        let t = tree(24, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        assert_eq!((t.record(0, 0), t.record(0, 1)), (0x12_3456, 0x78_9abc));
        let t = tree(28, &[0x12, 0x34, 0x56, 0xab, 0x78, 0x9a, 0xbc]);
        assert_eq!((t.record(0, 0), t.record(0, 1)), (0xa12_3456, 0xb78_9abc));
        let t = tree(32, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
        assert_eq!((t.record(0, 0), t.record(0, 1)), (0x1234_5678, 0x9abc_def0));
        assert!(Tree::new(Bytes(Arc::new(Source::Read(vec![0; 64]))), 1, 20, 4).is_none());
        assert!(Tree::new(Bytes(Arc::new(Source::Read(vec![0; 64]))), 100, 24, 4).is_none());
    }
}
