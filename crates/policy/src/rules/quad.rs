//! The leading dotted quad of a line read sixteen bytes at once (SSSE3), without a branch on
//! the length of its octets.
//!
//! The first word of nearly every line is an IPv4 address, and the lengths of its four octets
//! (one to three digits each) differ from line to line: read digit by digit, a line costs a few
//! mispredicted branches. Here the bytes are classed as digits and dots in one step; the dots'
//! positions give the four lengths, which pick one of the 81 ways to lay out the digits
//! ([`LAYOUTS`]); one shuffle lines up each octet's digits, and two multiply-adds give the four
//! values. Only the checks (almost always passed) branch.

use std::arch::x86_64::*;
use std::net::Ipv4Addr;

/// How the digits of a dotted quad whose octets have a given length lie in its 16 bytes.
#[derive(Clone, Copy)]
struct Layout {
    /// A shuffle that puts octet `k`'s digits, right-aligned, in bytes `4k..4k + 3` (hundreds,
    /// tens, ones; missing digits and byte `4k + 3` zero).
    shuffle: [u8; 16],
    /// Bit `i` set when byte `i` is the first digit of an octet of two or three digits (which
    /// must not be `0`).
    leading: u16,
}

/// The layouts by `9 (3 l1 + l2) + 3 l3 + l4` over octet lengths less one (0 to 2 each).
static LAYOUTS: [Layout; 81] = layouts();

const fn layouts() -> [Layout; 81] {
    let mut table = [Layout {
        shuffle: [0x80; 16],
        leading: 0,
    }; 81];
    let mut i = 0;
    while i < 81 {
        let lens = [i / 27 + 1, i / 9 % 3 + 1, i / 3 % 3 + 1, i % 3 + 1];
        let mut start = 0;
        let mut k = 0;
        while k < 4 {
            let len = lens[k];
            let mut j = 0;
            while j < len {
                table[i].shuffle[4 * k + 3 - len + j] = (start + j) as u8;
                j += 1;
            }
            if len > 1 {
                table[i].leading |= 1 << start;
            }
            start += len + 1;
            k += 1;
        }
        i += 1;
    }
    table
}

/// [`super::leading_dotted_quad`] of a line whose first 16 bytes are `head` (zeros past the
/// end of a shorter line).
///
/// # Safety
/// The processor must have SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn leading(head: &[u8; 16]) -> Option<(Ipv4Addr, usize)> {
    // SAFETY: reads the 16 bytes of `head`, any alignment.
    let bytes = unsafe { _mm_loadu_si128(head.as_ptr().cast()) };
    let values = _mm_sub_epi8(bytes, _mm_set1_epi8(b'0' as i8));
    let digits = _mm_cmpeq_epi8(_mm_min_epu8(values, _mm_set1_epi8(9)), values);
    let dots = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'.' as i8));
    let digit_bits = _mm_movemask_epi8(digits) as u32;
    let dot_bits = _mm_movemask_epi8(dots) as u32;
    // The quad is the digits and dots up to the first other byte (bit 16 stops a head of 16
    // digits and dots, too long for a quad).
    let len = (!(digit_bits | dot_bits)).trailing_zeros();
    if len > 15 {
        return None;
    }
    let dots = dot_bits & ((1 << len) - 1);
    if dots.count_ones() != 3 {
        return None;
    }
    let first = dots.trailing_zeros();
    let rest = dots & (dots - 1);
    let second = rest.trailing_zeros();
    let third = (rest & (rest - 1)).trailing_zeros();
    // Each octet's length less one, which must be 0 to 2.
    let l1 = first.wrapping_sub(1);
    let l2 = second.wrapping_sub(first + 2);
    let l3 = third.wrapping_sub(second + 2);
    let l4 = len.wrapping_sub(third + 2);
    if l1 > 2 || l2 > 2 || l3 > 2 || l4 > 2 {
        return None;
    }
    let layout = &LAYOUTS[(9 * (3 * l1 + l2) + 3 * l3 + l4) as usize];
    let zeros = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'0' as i8))) as u32;
    if zeros & u32::from(layout.leading) != 0 {
        return None;
    }
    // SAFETY: reads the 16 bytes of the layout's shuffle.
    let shuffle = unsafe { _mm_loadu_si128(layout.shuffle.as_ptr().cast()) };
    let lined_up = _mm_shuffle_epi8(values, shuffle);
    // Hundreds * 100 + tens * 10 and ones in 16-bit halves, then their sum per octet.
    let weights = _mm_set1_epi32(i32::from_le_bytes([100, 10, 1, 0]));
    let halves = _mm_maddubs_epi16(lined_up, weights);
    let octets = _mm_madd_epi16(halves, _mm_set1_epi16(1));
    if _mm_movemask_epi8(_mm_cmpgt_epi32(octets, _mm_set1_epi32(255))) != 0 {
        return None;
    }
    let low_bytes = _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    let packed = _mm_cvtsi128_si32(_mm_shuffle_epi8(octets, low_bytes));
    Some((Ipv4Addr::from(packed.to_le_bytes()), len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector reading agrees with the digit-by-digit one on every layout of octets, values
    /// around 255 and with leading zeros, any byte after them, and random heads of digits,
    /// dots and other bytes.
    #[test]
    fn agrees_with_the_digit_by_digit_reading() {
        if !std::arch::is_x86_feature_detected!("ssse3") {
            return;
        }
        let check = |head: [u8; 16]| {
            // SAFETY: the processor has SSSE3 (checked above).
            let fast = unsafe { leading(&head) };
            assert_eq!(
                fast,
                super::super::scalar_leading_dotted_quad(&head),
                "{:?}",
                String::from_utf8_lossy(&head)
            );
            fast.is_some()
        };
        let octets = [
            "0", "1", "9", "00", "01", "10", "99", "000", "001", "010", "100", "199", "200", "249",
            "250", "255", "256", "299", "300", "999", "1000",
        ];
        let mut found = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200_000 {
            let n = octets.len() as u64;
            let mut quad: Vec<String> = (0..4)
                .map(|_| octets[(next() % n) as usize].to_string())
                .collect();
            if next() % 10 == 0 {
                quad.truncate(1 + (next() % 4) as usize);
            }
            let mut head = [0u8; 16];
            let text = quad.join(".");
            let text = &text.as_bytes()[..text.len().min(16)];
            head[..text.len()].copy_from_slice(text);
            // What follows: a space, a digit, a dot, a letter, a colon, or the line's end.
            if text.len() < 16 {
                head[text.len()] = [b' ', b'7', b'.', b'x', b':', 0][(next() % 6) as usize];
            }
            found += usize::from(check(head));
        }
        assert!(found > 5_000, "{found}");
        // Heads of random digits, dots and a few other bytes.
        let pool = b"0123456789.....25 x\xff/";
        for _ in 0..200_000 {
            let mut head = [0u8; 16];
            for b in &mut head {
                *b = pool[(next() % pool.len() as u64) as usize];
            }
            check(head);
        }
        // Every layout of octets and every value of each octet, one octet at a time.
        for i in 0..81 {
            let lens = [i / 27 + 1, i / 9 % 3 + 1, i / 3 % 3 + 1, i % 3 + 1];
            for k in 0..4 {
                for v in 0..1000 {
                    let text: Vec<String> = (0..4)
                        .map(|j| {
                            let v = if j == k { v } else { 7 };
                            format!("{v:0width$}", width = lens[j])
                        })
                        .collect();
                    let text = text.join(".");
                    let mut head = [b' '; 16];
                    head[..text.len()].copy_from_slice(text.as_bytes());
                    check(head);
                }
            }
        }
    }
}
