//! Finding the `"` that ends a quoted field, 16 bytes at a time in the code itself: the values
//! are short (a request line, a referrer, a User-Agent), and a `memchr` call's setup and
//! dispatch cost more than the search on them.

/// The position of the first `"` in `text` at or after `from`, as `memchr` on `text[from..]`
/// would find it (plus `from`).
#[inline]
pub(super) fn find_quote(text: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = text.get(at..).and_then(|t| t.first_chunk::<16>()) {
        let mask = quote_mask(chunk);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    let left = text.len().checked_sub(at).filter(|&n| n > 0)?;
    // Fewer than 16 bytes left: the text's last 16, shifted past those already looked at.
    match text.last_chunk::<16>() {
        Some(last) => {
            let mask = u32::from(quote_mask(last)) >> (16 - left);
            (mask != 0).then(|| at + mask.trailing_zeros() as usize)
        }
        None => text[at..].iter().position(|&b| b == b'"').map(|i| at + i),
    }
}

/// Bit `i` set when `chunk[i]` is `"`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn quote_mask(chunk: &[u8; 16]) -> u16 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2, all these instructions need, is part of every x86_64 target; the load
    // reads the 16 bytes of `chunk` and allows any alignment.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8))) as u16
    }
}

/// Bit `i` set when `chunk[i]` is `"`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn quote_mask(chunk: &[u8; 16]) -> u16 {
    scalar_mask(chunk)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn scalar_mask(chunk: &[u8; 16]) -> u16 {
    (0..16).fold(0, |m, i| m | (u16::from(chunk[i] == b'"') << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_mark_the_quotes() {
        let mut chunk = [b'a'; 16];
        for i in 0..16 {
            for b in [b'"', b'"' + 1, b'"' - 1, b'"' | 0x80, 0] {
                chunk[i] = b;
                assert_eq!(quote_mask(&chunk), scalar_mask(&chunk), "{chunk:?}");
                assert_eq!(quote_mask(&chunk) >> i & 1, u16::from(b == b'"'));
            }
            chunk[(i * 7) % 16] = b'"';
        }
    }

    /// From every position of texts of every length, with quotes at the edges of chunks and
    /// scattered, `find_quote` finds what `memchr` finds.
    #[test]
    fn find_quote_finds_what_memchr_finds() {
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
                        .for_each(|&e| text[e] = b'"'),
                    _ => {
                        for _ in 0..(len / 40) {
                            text[rand() as usize % len] = b'"';
                        }
                    }
                }
                for from in 0..=len + 1 {
                    let want = text
                        .get(from..)
                        .and_then(|t| memchr::memchr(b'"', t))
                        .map(|i| from + i);
                    assert_eq!(
                        find_quote(&text, from),
                        want,
                        "len {len}, {round}, from {from}"
                    );
                }
            }
        }
    }
}
