//! A hint to the processor to start fetching memory that is about to be read.

/// Asks the processor to fetch `value` into its caches, without waiting for it: a later read
/// then overlaps with the work in between. No effect on what the program does.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and cannot fault, whatever the address
    // (here a valid reference); SSE is part of every x86_64 target.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
