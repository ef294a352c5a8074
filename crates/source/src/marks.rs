//! Where a buffer's newlines and double quotes are, found in one pass 64 bytes at a time.
//!
//! A piece's lines are found by their newlines, and a combined-format line is cut at its
//! quotes. Searching for each of them with `memchr` costs a call, its setup, and a loop that
//! ends at a different place on every line (a mispredicted branch), three or four times per
//! line. Marking them all first costs a few vector instructions per 64 bytes (AVX-512BW or AVX2,
//! detected at run time; elsewhere the marks are set where one `memchr2` search over the whole
//! buffer finds the bytes); the next newline or quote is then a `trailing_zeros` of a word
//! ([`next_mark`]).

/// Where a buffer's newlines and quotes are, as bitmaps: bit `i % 64` of word `i / 64` is set
/// when byte `i` is a newline (`newlines`) or a quote (`quotes`). Bits past the buffer's end
/// are clear.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub(crate) newlines: Vec<u64>,
    pub(crate) quotes: Vec<u64>,
}

impl Marks {
    /// Forgets every mark: the bytes are not marked.
    pub(crate) fn clear(&mut self) {
        self.newlines.clear();
        self.quotes.clear();
    }

    /// Whether the buffer is marked at all.
    pub(crate) fn marked(&self) -> bool {
        !self.quotes.is_empty()
    }

    /// Marks `data`'s newlines and quotes from byte `from` on (rounded down to a word's first
    /// byte); the words before that are kept as they are. An empty buffer gets one word.
    pub(crate) fn mark(&mut self, data: &[u8], from: usize) {
        let first = from / 64;
        self.newlines.truncate(first);
        self.quotes.truncate(first);
        let bytes = &data[(first * 64).min(data.len())..];
        let (whole, tail) = bytes.split_at(bytes.len() / 64 * 64);
        mark_blocks(whole, self);
        if !tail.is_empty() || self.quotes.is_empty() {
            let at = self.quotes.len();
            self.newlines.push(0);
            self.quotes.push(0);
            self.mark_found(tail, at);
        }
    }

    /// Marks the newlines and quotes of `data`, whose words start at `at` and are clear, as a
    /// search finds them (`memchr2`, vectorised on most processors).
    fn mark_found(&mut self, data: &[u8], at: usize) {
        for i in memchr::memchr2_iter(b'\n', b'"', data) {
            let bits = if data[i] == b'\n' {
                &mut self.newlines
            } else {
                &mut self.quotes
            };
            bits[at + i / 64] |= 1 << (i % 64);
        }
    }
}

/// The first marked byte at or after `from` and before `end`, in a bitmap of [`Marks`] that
/// covers `end` bytes or more.
#[inline]
pub(crate) fn next_mark(bits: &[u64], from: usize, end: usize) -> Option<usize> {
    let mut at = from;
    while at < end {
        let word = bits[at / 64] >> (at % 64);
        if word != 0 {
            let found = at + word.trailing_zeros() as usize;
            return (found < end).then_some(found);
        }
        at = (at | 63) + 1;
    }
    None
}

/// The marked bytes at or after `from` and before `end`, in order, into `out` (cleared first),
/// for a bitmap of [`Marks`] that covers `end` bytes or more.
///
/// Each word's first four marks are written whether it has them or not, and the count moves on
/// by the number it has: no branch on where a line ends, where [`next_mark`] per line mispredicts
/// its loop's exit about once a line (most words hold no newline, some one, a few two).
pub(crate) fn marks_in(bits: &[u64], from: usize, end: usize, out: &mut Vec<u32>) {
    out.clear();
    if from >= end {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vbmi2")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the processor has AVX-512 VBMI2 (and so AVX-512F and BW) and POPCNT
            // (checked just above), all this needs.
            return unsafe { x86::marks_in_compressed(bits, from, end, out) };
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the processor has POPCNT (checked just above), all this needs.
            return unsafe { x86::marks_in(bits, from, end, out) };
        }
    }
    list_marks(bits, from, end, out);
}

/// The words of `bits` from the one holding byte `from` to the one holding byte `end - 1`
/// (`from < end`), without the marks before `from` or from `end` on, each with the position of
/// its first byte.
#[inline(always)]
fn words_between(bits: &[u64], from: usize, end: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
    let (first, last) = (from / 64, (end - 1) / 64);
    bits[first..=last]
        .iter()
        .enumerate()
        .map(move |(k, &word)| {
            let at = first + k;
            let mut word = word;
            if at == first {
                word &= !0 << (from % 64);
            }
            if at == last && !end.is_multiple_of(64) {
                word &= !(!0 << (end % 64));
            }
            (word, (at * 64) as u32)
        })
}

/// The work of [`marks_in`], for a range that is not empty. Inlined into a copy built with the
/// processor's population count: the baseline x86-64 target counts bits in a dozen operations.
#[inline(always)]
fn list_marks(bits: &[u64], from: usize, end: usize, out: &mut Vec<u32>) {
    let mut n = 0;
    for (mut word, base) in words_between(bits, from, end) {
        let count = word.count_ones() as usize;
        make_room(out, n);
        for slot in &mut out[n..n + 4] {
            // Past the word's last mark this writes `base + 64`, which `n` then leaves behind.
            *slot = base + word.trailing_zeros();
            word &= word.wrapping_sub(1);
        }
        let mut i = n + 4;
        while word != 0 {
            out[i] = base + word.trailing_zeros();
            word &= word - 1;
            i += 1;
        }
        n += count;
    }
    out.truncate(n);
}

/// Makes `out` long enough to take a word's marks (up to 64) written from index `n` on, whether
/// the word has them or not; it grows by 1,024 more at a time beyond that.
#[inline(always)]
fn make_room(out: &mut Vec<u32>, n: usize) {
    if out.len() < n + 64 {
        out.resize(n + 64 + 1024, 0);
    }
}

/// Marks whole 64-byte blocks, adding a word to each bitmap per block.
fn mark_blocks(data: &[u8], marks: &mut Marks) {
    let n = data.len() / 64;
    marks.newlines.reserve(n);
    marks.quotes.reserve(n);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the processor has AVX-512BW (checked just above), all this needs.
            return unsafe { x86::avx512(data, marks) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2 (checked just above), all this needs.
            return unsafe { x86::avx2(data, marks) };
        }
    }
    // Elsewhere (or without AVX2), marked as a search finds them: about as fast as searching
    // for each line's newline and quotes, as without marks.
    let at = marks.quotes.len();
    marks.newlines.resize(at + n, 0);
    marks.quotes.resize(at + n, 0);
    marks.mark_found(data, at);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Marks;

    /// [`super::marks_in`] with AVX-512 VBMI2: a word's mark positions are packed in one
    /// instruction (a compress of the byte numbers 0 to 63 by the word) and its first sixteen
    /// widened and stored whether there or not, where one at a time takes four instructions a
    /// mark.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    pub(super) unsafe fn marks_in_compressed(
        bits: &[u64],
        from: usize,
        end: usize,
        out: &mut Vec<u32>,
    ) {
        let numbers = _mm512_set_epi8(
            63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42,
            41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
            19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
        );
        let mut n = 0;
        for (word, base) in super::words_between(bits, from, end) {
            let count = word.count_ones() as usize;
            super::make_room(out, n);
            let packed = _mm512_maskz_compress_epi8(word, numbers);
            let base = _mm512_set1_epi32(base as i32);
            let slots = &mut out[n..n + 64];
            for (lane, chunk) in slots.chunks_exact_mut(16).enumerate() {
                // Most words have a few marks: the first sixteen are always written, the
                // rest only when there are that many.
                if lane > 0 && count <= 16 * lane {
                    break;
                }
                let bytes = match lane {
                    0 => _mm512_extracti32x4_epi32::<0>(packed),
                    1 => _mm512_extracti32x4_epi32::<1>(packed),
                    2 => _mm512_extracti32x4_epi32::<2>(packed),
                    _ => _mm512_extracti32x4_epi32::<3>(packed),
                };
                let positions = _mm512_add_epi32(_mm512_cvtepu8_epi32(bytes), base);
                // SAFETY: `chunk` is sixteen `u32`s, 64 bytes, stored unaligned.
                unsafe { _mm512_storeu_si512(chunk.as_mut_ptr().cast(), positions) };
            }
            n += count;
        }
        out.truncate(n);
    }

    /// [`super::marks_in`] with POPCNT.
    #[target_feature(enable = "popcnt")]
    pub(super) unsafe fn marks_in(bits: &[u64], from: usize, end: usize, out: &mut Vec<u32>) {
        super::list_marks(bits, from, end, out);
    }

    /// [`super::mark_blocks`] with AVX-512BW: one load and two comparisons per block.
    #[target_feature(enable = "avx512bw")]
    pub(super) unsafe fn avx512(data: &[u8], marks: &mut Marks) {
        let nl = _mm512_set1_epi8(b'\n' as i8);
        let q = _mm512_set1_epi8(b'"' as i8);
        in_groups(data, marks, |block| {
            // SAFETY: reads the 64 bytes of `block`, any alignment.
            let bytes = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            (
                _mm512_cmpeq_epi8_mask(bytes, nl),
                _mm512_cmpeq_epi8_mask(bytes, q),
            )
        });
    }

    /// [`super::mark_blocks`] with AVX2: two loads and four comparisons per block.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(data: &[u8], marks: &mut Marks) {
        let nl = _mm256_set1_epi8(b'\n' as i8);
        let q = _mm256_set1_epi8(b'"' as i8);
        let bits = |v: __m256i, needle: __m256i| {
            u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, needle)) as u32)
        };
        in_groups(data, marks, |block| {
            // SAFETY: each load reads 32 of the 64 bytes of `block`, any alignment.
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_si256(block.as_ptr().cast()),
                    _mm256_loadu_si256(block.as_ptr().add(32).cast()),
                )
            };
            (
                bits(lo, nl) | bits(hi, nl) << 32,
                bits(lo, q) | bits(hi, q) << 32,
            )
        });
    }

    /// Adds the newline and quote words `mark` gives for each 64-byte block of `data`, eight
    /// blocks at a time: a word pushed per block made the loop reload the vectors' lengths and
    /// keep the block's bytes on the stack around a possible growth (a quarter of its time).
    #[inline(always)]
    fn in_groups(data: &[u8], marks: &mut Marks, mut mark: impl FnMut(&[u8]) -> (u64, u64)) {
        let mut groups = data.chunks_exact(64 * GROUP);
        for group in groups.by_ref() {
            let mut newlines = [0u64; GROUP];
            let mut quotes = [0u64; GROUP];
            for (k, block) in group.chunks_exact(64).enumerate() {
                (newlines[k], quotes[k]) = mark(block);
            }
            marks.newlines.extend_from_slice(&newlines);
            marks.quotes.extend_from_slice(&quotes);
        }
        for block in groups.remainder().chunks_exact(64) {
            let (newlines, quotes) = mark(block);
            marks.newlines.push(newlines);
            marks.quotes.push(quotes);
        }
    }

    /// Blocks marked between two additions to the bitmaps.
    const GROUP: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bitmap of `needle` in `data`, one byte at a time.
    fn plain(data: &[u8], needle: u8) -> Vec<u64> {
        let mut bits = vec![0u64; data.len().div_ceil(64).max(1)];
        for (i, &b) in data.iter().enumerate() {
            bits[i / 64] |= u64::from(b == needle) << (i % 64);
        }
        bits
    }

    /// The marks listed from any byte to any later one are those `next_mark` finds one after
    /// another: words with no mark, one, four, five and all 64, the first and last words cut
    /// anywhere, and a list left long by an earlier call.
    #[test]
    fn marks_listed_are_the_marks_found_one_by_one() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out = vec![5; 3000];
        for round in 0..3000 {
            let words = 1 + next() as usize % 12;
            let bits: Vec<u64> = (0..words)
                .map(|_| match next() % 7 {
                    0 => 0,
                    1 => 1 << (next() % 64),
                    2 => u64::MAX,
                    3 => 0b1111 << (next() % 60),
                    4 => 0b11111 << (next() % 59),
                    _ => next() & next(),
                })
                .collect();
            let end = next() as usize % (words * 64 + 1);
            let from = next() as usize % (end + 2);
            let mut want = Vec::new();
            let mut at = from;
            while let Some(m) = next_mark(&bits, at, end) {
                want.push(m as u32);
                at = m + 1;
            }
            marks_in(&bits, from, end, &mut out);
            assert_eq!(out, want, "round {round}: {bits:x?} from {from} to {end}");
            // Without the processor's population count, with it alone (`marks_in` above takes
            // the AVX-512 compress where there is one), and with the compress.
            if from < end {
                out.resize(out.len() + 7, 9);
                list_marks(&bits, from, end, &mut out);
                assert_eq!(
                    out, want,
                    "round {round} (plain): {bits:x?} from {from} to {end}"
                );
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("popcnt") {
                    out.resize(out.len() + 70, 9);
                    // SAFETY: the processor has what it needs (checked just above).
                    unsafe { x86::marks_in(&bits, from, end, &mut out) };
                    assert_eq!(out, want, "round {round} (popcnt)");
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512vbmi2")
                    && std::arch::is_x86_feature_detected!("popcnt")
                {
                    out.resize(out.len() + 70, 9);
                    // SAFETY: the processor has what it needs (checked just above).
                    unsafe { x86::marks_in_compressed(&bits, from, end, &mut out) };
                    assert_eq!(out, want, "round {round} (compressed)");
                }
            }
        }
    }

    /// Marks made every way (the processor's vector instructions, AVX2, a search) from byte 0 or
    /// from a later one are exactly the newlines and quotes, whatever surrounds them: bytes
    /// that differ from them in one bit, zero, 0x80 and 0xff, at every position of a block and
    /// in a short tail.
    #[test]
    fn marks_are_the_newlines_and_quotes() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let fillers = [
            0u8,
            0x80,
            0xff,
            b'\n' ^ 1,
            b'\n' ^ 0x80,
            b'"' ^ 1,
            b'"' ^ 0x80,
            b'a',
            b'\\',
            b' ',
        ];
        // Whole groups of eight blocks, and groups with blocks left over.
        for len in [0, 1, 63, 64, 65, 127, 128, 200, 511, 512, 1000, 1024, 1600] {
            for _ in 0..40 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        match rng % 8 {
                            0 => b'\n',
                            1 => b'"',
                            _ => fillers[(rng >> 8) as usize % fillers.len()],
                        }
                    })
                    .collect();
                let mut marks = Marks::default();
                marks.mark(&data, 0);
                assert!(marks.marked());
                assert_eq!(marks.newlines, plain(&data, b'\n'), "len {len}");
                assert_eq!(marks.quotes, plain(&data, b'"'), "len {len}");
                // Marked again from a later byte after the bytes there changed.
                let mut changed = data.clone();
                for b in changed.iter_mut().skip(len / 3) {
                    *b = match *b {
                        b'"' => b'\n',
                        b'\n' => b'x',
                        _ => b'"',
                    };
                }
                marks.mark(&changed, len / 3);
                assert_eq!(marks.quotes, plain(&changed, b'"'), "len {len}");
                assert_eq!(marks.newlines, plain(&changed, b'\n'), "len {len}");
                // Each way of marking whole blocks.
                let whole = &data[..len / 64 * 64];
                let mut ways: Vec<Marks> = Vec::new();
                let mut found = Marks::default();
                found.newlines.resize(len / 64, 0);
                found.quotes.resize(len / 64, 0);
                found.mark_found(whole, 0);
                ways.push(found);
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        let mut m = Marks::default();
                        // SAFETY: the processor has AVX2.
                        unsafe { x86::avx2(whole, &mut m) };
                        ways.push(m);
                    }
                    if std::arch::is_x86_feature_detected!("avx512bw") {
                        let mut m = Marks::default();
                        // SAFETY: the processor has AVX-512BW.
                        unsafe { x86::avx512(whole, &mut m) };
                        ways.push(m);
                    }
                }
                for m in ways {
                    let want = &plain(whole, b'\n')[..len / 64];
                    assert_eq!(m.newlines, want, "len {len}");
                    assert_eq!(m.quotes, &plain(whole, b'"')[..len / 64], "len {len}");
                }
            }
        }
    }

    #[test]
    fn next_mark_finds_the_first_marked_byte_in_range() {
        let mut data = vec![b'a'; 300];
        for i in [0, 5, 63, 64, 130, 299] {
            data[i] = b'"';
        }
        let mut marks = Marks::default();
        marks.mark(&data, 0);
        for from in 0..=300 {
            for end in from..=300 {
                let want = data[from..end]
                    .iter()
                    .position(|&b| b == b'"')
                    .map(|i| from + i);
                assert_eq!(next_mark(&marks.quotes, from, end), want, "{from}..{end}");
            }
        }
    }
}
