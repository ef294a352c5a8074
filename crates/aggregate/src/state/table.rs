//! The visitors behind one cell while it is being counted: an open-addressing table of visitor
//! hash → contribution that can say where a visitor will be before it is looked up.
//!
//! Counting a request adds its visitor to three cells (region, client, referrer), each a table
//! far larger than the processor's caches on a busy day, so each addition waits for memory.
//! [`VisitorTable::prefetch`] lets [`super::Aggregates::observe`] ask for all three places at
//! once and then wait about once instead of three times. Visitor hashes are keyed SipHash
//! outputs, uniformly distributed and not choosable by a log, so their low bits index the table
//! directly (linear probing, at most 7/8 full, as full as `hashbrown` lets its tables get: the
//! tables are most of a run's memory).

use logcensus_enrich::prefetch;

use super::{Contribution, Visitors};

/// Visitor hash → a value (what it contributed, or more). The hash 0 is a valid visitor and
/// lives outside the slots, where 0 marks an empty slot.
#[derive(Debug, Default, Clone)]
pub(super) struct Table<V> {
    slots: Vec<(u64, V)>,
    /// Visitors in `slots`.
    used: usize,
    zero: Option<V>,
}

/// Visitor hash → what it contributed.
pub(super) type VisitorTable = Table<Contribution>;

/// The first allocation: 2 slots (most cells have few visitors).
const MIN_SLOTS: usize = 2;

/// A table of fewer slots than this grows fourfold when full, a larger one twofold. Growing
/// moves every visitor in (a random write each, usually a cache miss) and the new slots are
/// fresh pages (a fault each): a table of the 1M-line benchmark's 100,000 visitors per worker
/// was made six times between 2^12 and 2^17 slots, now three. Fourfold leaves a table
/// between 7/32 and 7/8 full, twofold between 7/16 and 7/8; past this size the memory counts
/// more, so it is never more than twice the slots its visitors need, and from 2^17 slots
/// (57,344 visitors) on exactly as many as twofold growth gives.
const GROW_FOURFOLD_BELOW: usize = 1 << 16;

impl<V: Copy + Default> Table<V> {
    /// A table with room for `n` visitors before it grows.
    pub(super) fn with_capacity(n: usize) -> Self {
        let mut t = Table {
            slots: Vec::new(),
            used: 0,
            zero: None,
        };
        if n > 0 {
            t.slots = vec![(0, V::default()); slots_for(n)];
        }
        t
    }

    /// Number of distinct visitors.
    pub(super) fn len(&self) -> usize {
        self.used + usize::from(self.zero.is_some())
    }

    fn home(&self, visitor: u64) -> usize {
        visitor as usize & (self.slots.len() - 1)
    }

    /// Hints the processor to fetch the slot where `visitor` would be found or added.
    #[inline]
    pub(super) fn prefetch(&self, visitor: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(visitor)]);
        }
    }

    /// `visitor`'s value, and whether it was just added (at `V::default()`).
    pub(super) fn entry(&mut self, visitor: u64) -> (&mut V, bool) {
        if visitor == 0 {
            let new = self.zero.is_none();
            return (self.zero.get_or_insert_with(V::default), new);
        }
        if (self.used + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(visitor);
        loop {
            let v = self.slots[i].0;
            if v == visitor {
                return (&mut self.slots[i].1, false);
            }
            if v == 0 {
                self.used += 1;
                self.slots[i].0 = visitor;
                return (&mut self.slots[i].1, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// `visitor`'s value, if it is in the table.
    pub(super) fn get_mut(&mut self, visitor: u64) -> Option<&mut V> {
        if visitor == 0 {
            return self.zero.as_mut();
        }
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(visitor);
        loop {
            let v = self.slots[i].0;
            if v == visitor {
                return Some(&mut self.slots[i].1);
            }
            if v == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len();
        let factor = if n < GROW_FOURFOLD_BELOW { 4 } else { 2 };
        self.resize((n * factor).max(MIN_SLOTS));
    }

    /// Makes room for `more` visitors beyond those already in, growing at most once.
    pub(super) fn reserve(&mut self, more: usize) {
        let size = slots_for(self.used + more);
        if size > self.slots.len() {
            self.resize(size);
        }
    }

    fn resize(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.slots, vec![(0, V::default()); size]);
        self.used = 0;
        for (v, value) in old {
            if v != 0 {
                *self.entry(v).0 = value;
            }
        }
    }

    /// Every visitor and its value, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.slots
            .iter()
            .filter(|(v, _)| *v != 0)
            .copied()
            .chain(self.zero.map(|c| (0, c)))
    }
}

impl VisitorTable {
    /// Adds `c` to what `visitor` contributed (a new visitor starts at nothing).
    pub(super) fn add(&mut self, visitor: u64, c: Contribution) {
        self.entry(visitor).0.add(c);
    }

    /// Adds every visitor of `other`.
    pub(super) fn merge(&mut self, mut other: VisitorTable) {
        if self.len() < other.len() {
            std::mem::swap(self, &mut other);
        }
        // Grown once, before any addition: `other`'s visitors come in the order of its slots,
        // so when they are mostly new (the workers' visitors are disjoint), adding them to a
        // table only as large as `other` would pile them up in long runs of full slots (a
        // merge took 75 ms instead of 15).
        self.reserve(other.len());
        // Each addition asks for the slot of one a few additions ahead: a large table's slots
        // are mostly not in the processor's caches.
        const AHEAD: usize = 8;
        let incoming: Vec<(u64, Contribution)> = other.iter().collect();
        for (i, &(v, c)) in incoming.iter().enumerate() {
            if let Some(&(next, _)) = incoming.get(i + AHEAD) {
                self.prefetch(next);
            }
            self.add(v, c);
        }
    }

    /// The same visitors as the map rows carry.
    pub(super) fn to_visitors(&self) -> Visitors {
        let mut out = Visitors::with_capacity_and_hasher(self.len(), Default::default());
        out.extend(self.iter());
        out
    }
}

/// Slots for `n` visitors at most 7/8 full: a power of two.
fn slots_for(n: usize) -> usize {
    n.saturating_mul(8)
        .div_ceil(7)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u32, bytes: u32) -> Contribution {
        Contribution { requests, bytes }
    }

    /// The table against a `HashMap` on the same additions: hashes that share low bits (long
    /// probe runs), the hash 0, growth, merging both ways.
    #[test]
    fn holds_what_a_map_holds() {
        let mut t = VisitorTable::default();
        let mut m = Visitors::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A third of the visitors share their low 12 bits; some are 0; many repeat.
            let v = match i % 6 {
                0 | 1 => (x % 700) << 12,
                2 => 0,
                _ => x % 2_000,
            };
            let add = c(1, (x % 5_000) as u32);
            t.add(v, add);
            m.entry(v).or_default().add(add);
        }
        assert_eq!(t.len(), m.len());
        assert_eq!(t.to_visitors(), m);
        assert!(t.slots.len() * 7 >= t.used * 8, "at most 7/8 full");

        let mut other = VisitorTable::with_capacity(3);
        other.add(0, c(2, 2));
        other.add(7, c(1, u32::MAX));
        other.add(1 << 40, c(1, 1));
        let mut expect = m.clone();
        for (v, add) in other.iter() {
            expect.entry(v).or_default().add(add);
        }
        let mut small_first = other.clone();
        small_first.merge(t.clone());
        t.merge(other);
        assert_eq!(t.to_visitors(), expect);
        assert_eq!(small_first.to_visitors(), expect);
        assert_eq!(expect[&7].bytes, u32::MAX, "contributions saturate");
    }

    /// Merging tables of disjoint visitors (grown once, up front) keeps every one of both, with
    /// each contribution, in a table of the size its visitors need. (That it grows once, not
    /// slot by slot, is a matter of time, which tests do not assert: the 1M run's merge took
    /// 75 ms without it and 12 ms with it.)
    #[test]
    fn merging_disjoint_tables_keeps_every_visitor_of_both() {
        let (mut a, mut b) = (VisitorTable::default(), VisitorTable::default());
        for i in 1..=100_000u64 {
            let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if i % 2 == 0 {
                a.add(v, c(1, i as u32));
            } else {
                b.add(v, c(2, 1));
            }
        }
        a.merge(b);
        assert_eq!(a.len(), 100_000);
        assert_eq!(a.slots.len(), slots_for(100_000));
        let mut m: Vec<(u64, Contribution)> = a.iter().collect();
        m.sort_by_key(|(v, _)| *v);
        for i in 1..=100_000u64 {
            let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let got = m[m.binary_search_by_key(&v, |(v, _)| *v).unwrap()].1;
            let want = if i % 2 == 0 { c(1, i as u32) } else { c(2, 1) };
            assert_eq!(got, want, "{i}");
        }
    }

    /// A table grown visitor by visitor holds at most twice the slots its visitors need
    /// (`slots_for`), and exactly those once it is past fourfold growth.
    #[test]
    fn growth_stays_within_twice_the_slots_needed() {
        let mut t = VisitorTable::default();
        let mut sizes = Vec::new();
        for n in 1..=300_000u64 {
            t.add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15), c(1, 1));
            let (slots, need) = (t.slots.len(), slots_for(n as usize));
            assert!(slots <= 2 * need, "{n} visitors in {slots} slots");
            // Past the fill at which twofold growth leaves `GROW_FOURFOLD_BELOW` slots.
            if n as usize > GROW_FOURFOLD_BELOW * 7 / 8 {
                assert_eq!(slots, need, "{n} visitors");
            }
            if sizes.last() != Some(&slots) {
                sizes.push(slots);
            }
        }
        let expect: Vec<usize> = [1, 3, 5, 7, 9, 11, 13, 15, 17, 18, 19]
            .map(|k| 1 << k)
            .into();
        assert_eq!(sizes, expect);
    }

    #[test]
    fn empty_and_sized_tables() {
        let t = VisitorTable::with_capacity(0);
        assert_eq!(t.len(), 0);
        t.prefetch(5);
        assert_eq!(t.iter().count(), 0);
        assert_eq!(slots_for(7), 8);
        assert_eq!(slots_for(8), 16);
        let mut t = VisitorTable::with_capacity(100);
        let before = t.slots.len();
        for v in 1..=100 {
            t.add(v, c(1, 1));
        }
        assert_eq!(t.slots.len(), before, "room for what it was sized for");
    }
}
