//! Tables that start all zero, in memory the kernel zeroes.

use std::ops::Deref;

/// A type whose value with every byte zero is valid (its empty state).
///
/// # Safety
///
/// Every bit pattern of zeros must be a valid value of the type (integers, atomics, arrays and
/// structs of them), and its alignment must be at most a page (4 KiB).
pub(super) unsafe trait ZeroValid: Default {}

/// `len` values of `T`, each all zero at first, in fresh anonymous memory that the kernel maps
/// writable and zeroed as it makes it (`MAP_POPULATE`). Collecting `len` default values wrote
/// every page once more after the kernel had zeroed it (for the address cache's 2 MiB, about
/// 500 page faults and a `memset`, at the first address a run cached); mapping it without
/// populating it was no better on a long run: a lookup that reads an untouched page maps the
/// shared zero page there, and the first write then replaces it and has every core running the
/// process flush its TLB (an interrupt per page: 1.3% of a 1M-line run's samples).
pub(super) struct Zeroed<T: ZeroValid> {
    memory: Memory<T>,
}

enum Memory<T> {
    Mapped {
        map: memmap2::MmapMut,
        len: usize,
    },
    /// Where no memory could be mapped: the same values on the heap.
    Heap(Box<[T]>),
}

impl<T: ZeroValid> Zeroed<T> {
    pub(super) fn new(len: usize) -> Self {
        let mapped = len
            .checked_mul(size_of::<T>())
            .filter(|&bytes| bytes > 0)
            .and_then(|bytes| {
                memmap2::MmapOptions::new()
                    .len(bytes)
                    .populate()
                    .map_anon()
                    .ok()
            });
        let memory = match mapped {
            Some(map) => Memory::Mapped { map, len },
            None => Memory::Heap((0..len).map(|_| T::default()).collect()),
        };
        Zeroed { memory }
    }
}

impl<T: ZeroValid> Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.memory {
            Memory::Mapped { map, len } => {
                // SAFETY: the mapping is `len * size_of::<T>()` bytes, readable and writable,
                // page-aligned (so aligned for `T`, by `ZeroValid`'s contract), and zero until
                // written through the slices handed out here, so every `T` in it is valid
                // (`ZeroValid`). Nothing else refers to it, and it lives as long as `self`.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<T>(), *len) }
            }
            Memory::Heap(values) => values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    #[repr(align(64))]
    struct Line([AtomicU64; 8]);

    // SAFETY: atomics of all-zero bytes are zero; alignment 64.
    unsafe impl ZeroValid for Line {}

    #[test]
    fn starts_zero_and_keeps_what_is_stored() {
        let table = Zeroed::<Line>::new(10_000);
        assert_eq!(table.len(), 10_000);
        assert!(table
            .iter()
            .all(|l| l.0.iter().all(|w| w.load(Ordering::Relaxed) == 0)));
        assert_eq!(table.as_ptr() as usize % 64, 0);
        table[9_999].0[7].store(42, Ordering::Relaxed);
        table[0].0[0].store(7, Ordering::Relaxed);
        assert_eq!(table[9_999].0[7].load(Ordering::Relaxed), 42);
        assert_eq!(table[0].0[0].load(Ordering::Relaxed), 7);
        assert_eq!(
            table
                .iter()
                .flat_map(|l| &l.0)
                .map(|w| w.load(Ordering::Relaxed))
                .sum::<u64>(),
            49
        );
    }

    #[test]
    fn an_empty_table_is_empty() {
        assert!(Zeroed::<Line>::new(0).is_empty());
    }
}
