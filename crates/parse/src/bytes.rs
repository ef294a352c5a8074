//! Finding the first of a few bytes in a short stretch of a line, 16 bytes at a time in the
//! code itself: the values searched (a request line, a referrer, a User-Agent, a URL's
//! authority) are short, and a `memchr` call's setup and dispatch cost more than the search on
//! them; its loop also ends at a different place on each line (a mispredicted branch).

/// The position of the first byte of `text` at or after `from` that is one of `needles`, as
/// `memchr` (`memchr2`, `memchr3`…) on `text[from..]` would find it (plus `from`).
#[inline]
pub fn find_any<const N: usize>(text: &[u8], from: usize, needles: [u8; N]) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = text.get(at..).and_then(|t| t.first_chunk::<16>()) {
        let mask = mask_of(chunk, needles);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    let left = text.len().checked_sub(at).filter(|&n| n > 0)?;
    // Fewer than 16 bytes left: the text's last 16, shifted past those already looked at.
    match text.last_chunk::<16>() {
        Some(last) => {
            let mask = u32::from(mask_of(last, needles)) >> (16 - left);
            (mask != 0).then(|| at + mask.trailing_zeros() as usize)
        }
        None => text[at..]
            .iter()
            .position(|b| needles.contains(b))
            .map(|i| at + i),
    }
}

/// Where a line's double quotes are, marked by whoever read it (a reader that marks a whole
/// buffer's quotes in one pass): bit `k % 64` of word `k / 64` of `bits` is set exactly when the
/// line's byte `k - at` is `"`, for every byte of the line.
#[derive(Debug, Clone, Copy)]
pub struct QuoteMarks<'a> {
    bits: &'a [u64],
    at: usize,
}

impl<'a> QuoteMarks<'a> {
    /// The marks of a line that starts at bit `at` of `bits`.
    pub fn new(bits: &'a [u64], at: usize) -> Self {
        QuoteMarks { bits, at }
    }

    /// Whether the marks reach the end of a line of `len` bytes.
    #[inline]
    pub(crate) fn cover(&self, len: usize) -> bool {
        self.at
            .checked_add(len)
            .is_some_and(|end| end.div_ceil(64) <= self.bits.len())
    }

    /// The first `"` in `line` at or after `from`, as [`find_any`] finds it, for marks that
    /// [`QuoteMarks::cover`] the line.
    #[inline]
    pub(crate) fn next(&self, line: &[u8], from: usize) -> Option<usize> {
        let end = self.at + line.len();
        let k = self.at + from;
        if k >= end {
            return None;
        }
        // The search's word and the next one as one: a request's or a referrer's closing quote
        // is nearly always within them, and which of the two holds it changes from line to line
        // (a branch on it was mispredicted about once a line).
        let (i, shift) = (k / 64, k % 64);
        let pair = (u128::from(self.bits[i])
            | u128::from(self.bits.get(i + 1).copied().unwrap_or(0)) << 64)
            >> shift;
        let found = if pair != 0 {
            k + pair.trailing_zeros() as usize
        } else {
            let mut at = (i + 2) * 64;
            loop {
                if at >= end {
                    return None;
                }
                let word = self.bits[at / 64];
                if word != 0 {
                    break at + word.trailing_zeros() as usize;
                }
                at += 64;
            }
        };
        (found < end).then(|| found - self.at)
    }

    /// Whether `line[from..to]` holds no `"` (`from <= to <= line.len()`), for marks that
    /// [`QuoteMarks::cover`] the line. A stretch of up to four words (a value of at least 194
    /// bytes) is read without a loop, its middle words whether it has them or not: a
    /// User-Agent's length, and so the number of words it spans, changes from line to line.
    #[inline]
    pub(crate) fn none_in(&self, from: usize, to: usize) -> bool {
        let (a, b) = (self.at + from, self.at + to);
        if a >= b {
            return true;
        }
        let (first, last) = (a / 64, (b - 1) / 64);
        let head = self.bits[first] & (!0 << (a % 64));
        let tail = self.bits[last] & (!0 >> (63 - (b - 1) % 64));
        if last - first > 3 {
            return head | tail == 0 && self.bits[first + 1..last].iter().all(|&w| w == 0);
        }
        // Word `first + k` when it lies between the two, else nothing.
        let middle = |k: usize| {
            self.bits[(first + k).min(last)] & 0u64.wrapping_sub(u64::from(first + k < last))
        };
        let any = if first == last {
            head & tail
        } else {
            head | tail | middle(1) | middle(2)
        };
        any == 0
    }
}

/// Bit `i` set when `chunk[i]` is one of `needles`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn mask_of<const N: usize>(chunk: &[u8; 16], needles: [u8; N]) -> u16 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    // SAFETY: these instructions need SSE2, which this is compiled only with (the `cfg`; every
    // hosted x86_64 target has it); the load reads the 16 bytes of `chunk`, any alignment.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let any = needles.iter().fold(_mm_setzero_si128(), |any, &n| {
            _mm_or_si128(any, _mm_cmpeq_epi8(bytes, _mm_set1_epi8(n as i8)))
        });
        _mm_movemask_epi8(any) as u16
    }
}

/// Bit `i` set when `chunk[i]` is one of `needles`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn mask_of<const N: usize>(chunk: &[u8; 16], needles: [u8; N]) -> u16 {
    scalar_mask(chunk, &needles)
}

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn scalar_mask(chunk: &[u8; 16], needles: &[u8]) -> u16 {
    (0..16).fold(0, |m, i| m | (u16::from(needles.contains(&chunk[i])) << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searches of a line's quote marks find what a byte-by-byte search of the line finds, and
    /// `none_in` says what it says: lines at any offset in their buffer, up to 400 bytes (so
    /// beyond the four words read without a loop), quotes sparse or dense, other lines' quotes
    /// set around them, and marks that end where the line ends.
    #[test]
    fn quote_marks_agree_with_the_bytes() {
        let mut rng = 0x51_7cc1_b727_220au64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..4000 {
            let len = next() as usize % 400;
            let density = 1 + next() % 60;
            let line: Vec<u8> = (0..len)
                .map(|_| if next() % density == 0 { b'"' } else { b'a' })
                .collect();
            let at = next() as usize % 130;
            let words = (at + len).div_ceil(64) + (next() % 2) as usize;
            // Every bit outside the line set: other lines' quotes.
            let mut bits = vec![u64::MAX; words.max(1)];
            for (i, &b) in line.iter().enumerate() {
                let k = at + i;
                bits[k / 64] &= !(1 << (k % 64));
                bits[k / 64] |= u64::from(b == b'"') << (k % 64);
            }
            let marks = QuoteMarks::new(&bits, at);
            assert!(marks.cover(len));
            for from in 0..=len + 1 {
                let want = line
                    .get(from..)
                    .and_then(|r| r.iter().position(|&b| b == b'"'))
                    .map(|k| from + k);
                assert_eq!(marks.next(&line, from), want, "round {round}, from {from}");
            }
            for _ in 0..20 {
                let to = next() as usize % (len + 1);
                let from = next() as usize % (to + 1);
                let want = !line[from..to].contains(&b'"');
                assert_eq!(marks.none_in(from, to), want, "round {round}, {from}..{to}");
            }
        }
    }

    #[test]
    fn masks_mark_the_needles() {
        let mut chunk = [b'a'; 16];
        for i in 0..16 {
            for b in [b'"', b'"' + 1, b'"' - 1, b'"' | 0x80, 0, b'/', b'@'] {
                chunk[i] = b;
                assert_eq!(mask_of(&chunk, [b'"']), scalar_mask(&chunk, b"\""));
                assert_eq!(mask_of(&chunk, *b"/@:"), scalar_mask(&chunk, b"/@:"));
                assert_eq!(mask_of(&chunk, [b'"']) >> i & 1, u16::from(b == b'"'));
            }
            chunk[(i * 7) % 16] = b'"';
        }
    }

    /// From every position of texts of every length, with needles at the edges of chunks and
    /// scattered, `find_any` finds what `memchr` (one needle) and `memchr3` (three) find.
    #[test]
    fn find_any_finds_what_memchr_finds() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let edges = [0, 1, 14, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 300];
        for len in (0..400).chain([1_000, 4_097]) {
            for round in 0..3 {
                let mut text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                match round {
                    0 => {}
                    1 => edges
                        .iter()
                        .filter(|&&e| e < len)
                        .for_each(|&e| text[e] = b"\"/:"[e % 3]),
                    _ => {
                        for _ in 0..(len / 40) {
                            text[rand() as usize % len] = b"\"/:"[rand() as usize % 3];
                        }
                    }
                }
                for from in 0..=len + 1 {
                    let rest = text.get(from..);
                    let one = rest.and_then(|t| memchr::memchr(b'"', t)).map(|i| from + i);
                    assert_eq!(
                        find_any(&text, from, [b'"']),
                        one,
                        "len {len}, {round}, {from}"
                    );
                    let three = rest
                        .and_then(|t| memchr::memchr3(b'"', b'/', b':', t))
                        .map(|i| from + i);
                    let got = find_any(&text, from, *b"\"/:");
                    assert_eq!(got, three, "len {len}, {round}, from {from}");
                }
            }
        }
    }
}
