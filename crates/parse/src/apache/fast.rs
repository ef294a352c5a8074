//! A specialised parser for lines in the layout of the `common`, `combined` and `vhost_combined`
//! presets: the step walk of [`ApacheFormat::parse_steps`] unrolled for their fixed sequence of
//! fields and literals, with cheaper searches where the layout allows.
//!
//! It only ever answers for a line that parses without error. Whenever it would need to decide
//! something less usual (any value or layout error, a backslash before a closing quote, a quote
//! that is not followed by the next literal, a User-Agent that holds quotes or is followed by
//! appended fields, a byte count of 20 digits…) it returns `None` and the general walk parses the
//! line from the start. Each check below notes why an answer it gives is the walk's answer.
//!
//! [`ApacheFormat::parse_steps`]: super::ApacheFormat

use memchr::memchr;

use super::{present, Preset};
use crate::bytes::{find_any, QuoteMarks};
use crate::time::{parse_clf_cached, StampCache};
use crate::{Field, Record};

/// The fields of a line that parsed, borrowed from it. Absent fields are empty.
pub(super) struct Quick<'a> {
    vhost: &'a [u8],
    remote_host: &'a [u8],
    time: i64,
    method: Option<&'a [u8]>,
    status: u16,
    bytes: u64,
    referer: &'a [u8],
    user_agent: &'a [u8],
}

impl<'a> Quick<'a> {
    /// The record the walk builds: `present` turns `-` and empty values into `None`.
    #[inline]
    pub(super) fn into_record(self) -> Record<'a> {
        Record {
            remote_host: present(self.remote_host),
            forwarded_for: None,
            time: Some(self.time),
            method: self.method.map(Field::Borrowed),
            status: Some(self.status),
            bytes: Some(self.bytes),
            referer: present(self.referer),
            user_agent: present(self.user_agent),
            vhost: present(self.vhost),
            duration_us: None,
        }
    }
}

/// Parses `line` in the layout of `preset`, or `None` when the general walk must decide.
///
/// The walk first removes one trailing `\r`. Here `line` still has it, and only the two checks
/// that look for the end of the line account for it: every other check finds or compares a byte
/// other than `\r`, which cannot be that last `\r`, so it sees what the walk sees. (Looking at
/// the last byte first would make every step wait for the line's last cache line.)
#[inline]
pub(super) fn parse<'a>(
    preset: Preset,
    line: &'a [u8],
    stamps: &StampCache,
    quotes: impl Quotes,
) -> Option<Quick<'a>> {
    let mut pos = 0;
    let mut vhost: &[u8] = &[];
    if preset == Preset::VCombined {
        // `%v:%p `: the walk ends `%v` at the first `:` and `%p` (dropped) at the next space.
        let colon = memchr(b':', line)?;
        vhost = &line[..colon];
        pos = find_byte(line, colon + 1, b' ')? + 1;
    }
    // `%h %l %u `: each ends at the first space after it, as in the walk.
    let end = find_byte(line, pos, b' ')?;
    let remote_host = &line[pos..end];
    pos = skip_word(line, end + 1)?;
    pos = skip_word(line, pos)?;

    // `[%t]`: the walk takes `[` up to the first `]`. A timestamp that parses is 26 bytes of
    // digits, letters and punctuation without `]`, so a `]` right after them is that first `]`.
    let stamp = line.get(pos..pos + 28)?;
    if stamp[0] != b'[' || stamp[27] != b']' {
        return None;
    }
    let time = parse_clf_cached(stamp[1..27].try_into().ok()?, stamps)?;
    pos += 28;

    // ` "%r" `: the request ends at the first unescaped `"` followed by a space.
    if line.get(pos..pos + 2)? != b" \"" {
        return None;
    }
    pos += 2;
    let request_end = closing_quote(&quotes, line, pos, b' ')?;
    let method = method_of(&line[pos..request_end]);
    pos = request_end + 2;

    // `%>s `: exactly three digits, then the space that ends the value in the walk.
    let status = match line.get(pos..pos + 4)? {
        &[a, b, c, b' '] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return None,
    };
    pos += 4;

    // `%b`: `-` or digits. In `common` it ends the format, so the walk ends it at the first space
    // or tab (or the end of the line) and ignores the rest; otherwise it ends at the first space.
    let (bytes, len) = byte_count(&line[pos..])?;
    pos += len;
    if preset == Preset::Common {
        // The end of the line (before a last `\r`), a space or a tab ends the value.
        let ends = match line.get(pos) {
            None | Some(b' ' | b'\t') => true,
            Some(b'\r') => pos + 1 == line.len(),
            Some(_) => false,
        };
        return ends.then_some(Quick {
            vhost,
            remote_host,
            time,
            method,
            status,
            bytes,
            referer: &[],
            user_agent: &[],
        });
    }

    // ` "%{Referer}i" "`: the referer ends at the first unescaped `"` followed by ` "`.
    if line.get(pos..pos + 2)? != b" \"" {
        return None;
    }
    pos += 2;
    let referer_end = closing_quote(&quotes, line, pos, b' ')?;
    if line.get(referer_end + 2) != Some(&b'"') {
        return None;
    }
    let referer = &line[pos..referer_end];
    pos = referer_end + 3;

    // `%{User-Agent}i"` ends the format. When the line ends in `"` and the value holds no other
    // quote, that quote is the only unescaped one in the rest of the line (no backslash before
    // it), with nothing after it: the walk's closing quote. Anything else goes to the walk.
    let rest = &line[pos..];
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    let (&last, user_agent) = rest.split_last()?;
    // No quote in the value: the first one from its start is the last byte.
    if last != b'"'
        || user_agent.last() == Some(&b'\\')
        || !quotes.none_in(line, pos, pos + user_agent.len())
    {
        return None;
    }
    Some(Quick {
        vhost,
        remote_host,
        time,
        method,
        status,
        bytes,
        referer,
        user_agent,
    })
}

/// How the fast path finds a line's quotes: by searching ([`Search`]), or in marks made for the
/// whole buffer the line is in ([`QuoteMarks`], which the caller checked cover the line).
pub(super) trait Quotes {
    /// The first `"` in `line` at or after `from`, in a short stretch (a request, a referrer).
    fn next(&self, line: &[u8], from: usize) -> Option<usize>;
    /// Whether `line[from..to]` holds no `"`, for a long stretch (a User-Agent).
    fn none_in(&self, line: &[u8], from: usize, to: usize) -> bool;
}

/// Quotes found by searching the line.
pub(super) struct Search;

impl Quotes for Search {
    #[inline]
    fn next(&self, line: &[u8], from: usize) -> Option<usize> {
        find_any(line, from, [b'"'])
    }

    /// A User-Agent is long enough (~130 bytes) for `memchr`'s 32-byte steps to beat
    /// `find_any`'s 16 (24 fewer instructions per line).
    #[inline]
    fn none_in(&self, line: &[u8], from: usize, to: usize) -> bool {
        memchr(b'"', &line[from..to]).is_none()
    }
}

impl Quotes for QuoteMarks<'_> {
    #[inline]
    fn next(&self, line: &[u8], from: usize) -> Option<usize> {
        QuoteMarks::next(self, line, from)
    }

    #[inline]
    fn none_in(&self, _: &[u8], from: usize, to: usize) -> bool {
        QuoteMarks::none_in(self, from, to)
    }
}

/// The end of a quoted value that starts at `line[from]`, when its first `"` is unescaped (no
/// backslash right before it) and followed by `after`: then it is the first unescaped `"`
/// followed by the next literal, as the walk requires. Otherwise `None`.
#[inline]
fn closing_quote(quotes: &impl Quotes, line: &[u8], from: usize, after: u8) -> Option<usize> {
    let q = quotes.next(line, from)?;
    if (q > from && line[q - 1] == b'\\') || line.get(q + 1) != Some(&after) {
        return None;
    }
    Some(q)
}

/// The method the walk keeps from a request line `v`: its first word (up to the first space)
/// if that is 1 to 16 ASCII uppercase letters. Counting the leading uppercase letters (at most
/// 17) decides it without searching for the space: the first word is a method exactly when 1 to
/// 16 of them are followed by a space or the end of `v`.
#[inline]
fn method_of(v: &[u8]) -> Option<&[u8]> {
    // Most requests: decided by one comparison of four bytes.
    if v.starts_with(b"GET ") {
        return Some(&v[..3]);
    }
    let n = v
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    let ends_word = n == v.len() || v[n] == b' ';
    ((1..=16).contains(&n) && ends_word).then(|| &v[..n])
}

/// `%b` at the start of `rest`: `-` (0) or 1 to 19 digits (which cannot overflow a `u64`),
/// and the number of bytes it takes. What follows is checked by the caller.
#[inline]
fn byte_count(rest: &[u8]) -> Option<(u64, usize)> {
    if rest.first() == Some(&b'-') {
        return Some((0, 1));
    }
    // Up to 7 digits (nearly every count) in one 8-byte word, without a loop.
    if let Some(word) = rest.get(..8) {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let n = digit_run(word);
        if n == 0 {
            return None;
        }
        if n < 8 {
            // Subtracting `0` from each byte borrows only upwards from the first non-digit, so
            // the digits below it are exact; the shift drops the rest and leaves zeros below.
            let digits = word.wrapping_sub(THREES) << (8 * (8 - n));
            return Some((eight_digits(digits), n));
        }
    }
    let mut value = 0u64;
    let mut n = 0;
    for &b in rest.iter().take(20) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        // Wraps only at a 20th digit, which is refused below.
        value = value.wrapping_mul(10).wrapping_add(u64::from(d));
        n += 1;
    }
    // 20 digits may overflow; the walk decides.
    (1..=19).contains(&n).then_some((value, n))
}

/// How many of the 8 bytes of `word` (first byte lowest) are ASCII digits before the first
/// byte that is not (8 if all are).
#[inline]
fn digit_run(word: u64) -> usize {
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    // A byte is a digit when its high nibble is 3, and still 3 after adding 6 (`:` to `?`
    // become `@` to `E`). A byte of 0xfa or more carries into the next one, but it is itself
    // not a digit, so the first non-digit is still found exactly.
    let not_digit = ((word & HIGH_NIBBLES) ^ THREES)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) ^ THREES);
    (not_digit.trailing_zeros() / 8) as usize
}

/// `0` in each byte of a word.
const THREES: u64 = 0x3030_3030_3030_3030;

/// The number written by 8 digit values 0–9 in the bytes of `digits`, the most significant in
/// the lowest byte.
#[inline]
fn eight_digits(digits: u64) -> u64 {
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    let quads = ((pairs & 0x0000_00ff_0000_00ff).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add(((pairs >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32)));
    quads >> 32
}

/// The position just past the space that ends the dropped value at `line[pos..]` (`%l`, `%u`),
/// which is nearly always `-`.
#[inline]
fn skip_word(line: &[u8], pos: usize) -> Option<usize> {
    if line.get(pos..pos + 2) == Some(b"- ") {
        return Some(pos + 2);
    }
    Some(find_byte(line, pos, b' ')? + 1)
}

/// The first `needle` in `line` at or after `from`, as `memchr` would find it. The values
/// searched here are short (addresses, `-`), so the first 32 bytes are read 8 at a time in
/// registers, which beats the setup of a vector search; longer values go to `memchr`.
#[inline]
fn find_byte(line: &[u8], from: usize, needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let rest = line.get(from..)?;
    let pattern = LO * u64::from(needle);
    let mut chunks = rest.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().take(4).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        let x = word ^ pattern;
        // The lowest byte of `x` that is zero sets the high bit of its byte here, and no lower
        // byte's bit is set (borrows only run upwards), so the lowest set bit is the first match.
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(from + i * 8 + (zero.trailing_zeros() / 8) as usize);
        }
    }
    let done = (rest.len() / 8).min(4) * 8;
    memchr(needle, &rest[done..]).map(|k| from + done + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_matches_memchr() {
        let mut hay = Vec::new();
        for len in 0..80 {
            hay.clear();
            hay.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            for at in 0..=len {
                let mut h = hay.clone();
                if at < len {
                    h[at] = b' ';
                }
                // Bytes around the needle's value, to catch borrows between bytes.
                if at + 1 < len {
                    h[at + 1] = b'!';
                }
                for from in 0..=len + 1 {
                    let want = h
                        .get(from..)
                        .and_then(|r| memchr(b' ', r))
                        .map(|k| from + k);
                    assert_eq!(
                        find_byte(&h, from, b' '),
                        want,
                        "len {len} at {at} from {from}"
                    );
                }
            }
        }
        // Bytes that differ from the needle only in a high bit, or are zero, or 0x80/0xff.
        for needle in [b' ', b':', 0u8, 0x80, 0xff] {
            for filler in [0u8, 0x01, 0x7f, 0x80, 0xa0, 0xff, needle ^ 0x80, needle ^ 1] {
                for len in 0..40 {
                    for at in 0..len {
                        let mut h = vec![filler; len];
                        h[at] = needle;
                        let want = memchr(needle, &h);
                        assert_eq!(find_byte(&h, 0, needle), want);
                    }
                    let h = vec![filler; len];
                    assert_eq!(find_byte(&h, 0, needle), memchr(needle, &h));
                }
            }
        }
    }

    #[test]
    fn method_of_matches_the_first_word_rule() {
        for v in [
            &b"GET / HTTP/1.1"[..],
            b"GET",
            b"",
            b" GET",
            b"GET\t/",
            b"GEt /",
            b"ABCDEFGHIJKLMNOP /",
            b"ABCDEFGHIJKLMNOPQ /",
            b"ABCDEFGHIJKLMNOPQRS",
            b"PROPFIND",
            b"G-T /",
            b"\xc3\x89T /",
            b"-",
        ] {
            let first = &v[..memchr(b' ', v).unwrap_or(v.len())];
            let want = crate::num::is_method(first).then_some(first);
            assert_eq!(method_of(v), want, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn byte_counts_agree_with_parse_u64() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..=21 {
            for _ in 0..2_000 {
                let mut v = Vec::new();
                for _ in 0..len {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    v.push(b'0' + (rng % 10) as u8);
                }
                // What follows the digits: a space, another byte, or nothing.
                for tail in [
                    &b" \"x"[..],
                    b"",
                    b"x",
                    b"\xff\xff\xff\xff\xff\xff\xff\xff",
                    b"/",
                    b":",
                ] {
                    let mut c = v.clone();
                    c.extend_from_slice(tail);
                    cases.push(c);
                }
            }
        }
        cases.push(b"99999999 ".to_vec());
        cases.push(b"00000000 ".to_vec());
        cases.push(b"9999999 ".to_vec());
        for c in &cases {
            let n = c.iter().take_while(|b| b.is_ascii_digit()).count();
            let want = crate::num::parse_u64(&c[..n])
                .filter(|_| (1..=19).contains(&n))
                .map(|v| (v, n));
            assert_eq!(byte_count(c), want, "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn byte_counts() {
        assert_eq!(byte_count(b"- "), Some((0, 1)));
        assert_eq!(byte_count(b"0"), Some((0, 1)));
        assert_eq!(byte_count(b"512 \""), Some((512, 3)));
        assert_eq!(
            byte_count(b"9999999999999999999 "),
            Some((9_999_999_999_999_999_999, 19))
        );
        assert_eq!(byte_count(b"18446744073709551615"), None);
        assert_eq!(byte_count(b""), None);
        assert_eq!(byte_count(b"x"), None);
        assert_eq!(byte_count(b" 1"), None);
    }
}
