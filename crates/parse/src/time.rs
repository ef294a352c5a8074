//! Timestamp parsing without allocation: the Apache/CLF form and RFC 3339.
//!
//! Both parsers validate every component (a day must exist in its month, a leap day only in a
//! leap year) and return Unix seconds in UTC. Years are limited to 0001–9999, which every
//! real log satisfies and which keeps the arithmetic far from overflow.

use std::cell::Cell;

/// Earliest accepted time: 0001-01-01T00:00:00Z.
pub(crate) const MIN_TIME: i64 = -62_135_596_800;
/// Latest accepted time: 9999-12-31T23:59:59Z.
pub(crate) const MAX_TIME: i64 = 253_402_300_799;

/// Days before the first of each month in a common (non-leap) year.
const DAYS_BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// Days from 0001-01-01 to 1970-01-01 in the proleptic Gregorian calendar.
const DAYS_0001_TO_1970: i64 = 719_162;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Parses the Apache `%t` timestamp without its brackets, `10/Oct/2000:13:55:36 -0700`, into
/// Unix seconds (UTC; the offset is applied).
///
/// The layout is fixed: two-digit day, English three-letter month (`Jan`…`Dec`, exact case),
/// four-digit year, `HH:MM:SS`, one space, and a `+hhmm`/`-hhmm` offset. Anything else,
/// including trailing bytes, is `None`.
///
/// ```
/// use logcensus_parse::parse_apache_time;
/// assert_eq!(parse_apache_time(b"17/May/2015:10:05:03 +0000"), Some(1431857103));
/// assert_eq!(parse_apache_time(b"32/May/2015:10:05:03 +0000"), None);
/// ```
pub fn parse_apache_time(s: &[u8]) -> Option<i64> {
    parse_clf(s.try_into().ok()?, None)
}

/// The last `%t` timestamp a parser read, so that the many lines of one minute skip most of the
/// parsing, and the last date, so that the many lines of one day skip the calendar arithmetic.
///
/// A parser belongs to one worker (it is `Send`, not `Sync`). A clone starts from the same
/// timestamps; equality ignores them.
#[derive(Debug, Default, Clone)]
pub(crate) struct StampCache {
    /// The last timestamp's [`minute_key`], and the time of its minute.
    minute: Cell<Option<(MinuteKey, i64)>>,
    /// The last date, and its day number since 1970-01-01.
    day: Cell<Option<(Date, i64)>>,
}

/// A date as `(year, month, day)`.
type Date = (i64, u32, u32);

impl PartialEq for StampCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for StampCache {}

impl StampCache {
    /// `days_from_civil(year, month, day)`, from the cache when the date is the last one seen.
    #[inline]
    fn days(&self, year: i64, month: u32, day: u32) -> Option<i64> {
        let date = (year, month, day);
        if let Some((last, days)) = self.day.get() {
            if last == date {
                return Some(days);
            }
        }
        let days = days_from_civil(year, month, day)?;
        self.day.set(Some((date, days)));
        Some(days)
    }
}

/// [`parse_clf`] with a [`StampCache`]: a timestamp that differs from the last one read only in
/// its seconds (bytes 18 and 19) is that one's minute plus its seconds, once they are checked
/// as [`parse_clf`] checks them (two digits, at most 60). Every other byte was checked when
/// that minute was parsed.
#[inline]
pub(crate) fn parse_clf_cached(s: &[u8; 26], cache: &StampCache) -> Option<i64> {
    let minute = minute_key(s);
    let seconds = |s: &[u8; 26]| {
        let (a, b) = (s[18].wrapping_sub(b'0'), s[19].wrapping_sub(b'0'));
        let sec = i64::from(a) * 10 + i64::from(b);
        (a < 10 && b < 10 && sec <= 60).then_some(sec)
    };
    if let Some((last, start)) = cache.minute.get() {
        if last == minute {
            return Some(start + seconds(s)?);
        }
    }
    let time = parse_clf(s, Some(cache))?;
    let start = time - seconds(s).expect("a timestamp that parsed has its seconds");
    cache.minute.set(Some((minute, start)));
    Some(time)
}

/// A timestamp's bytes but its seconds (bytes 18 and 19), as two overlapping 16-byte words with
/// those bytes cleared in the second.
type MinuteKey = (u128, u128);

/// The [`MinuteKey`] of `s`, read in place. (Copying the timestamp and overwriting its seconds
/// before comparing made the comparison's loads wait for the two overlapping stores: a stalled
/// store-to-load forwarding on every line.)
#[inline]
fn minute_key(s: &[u8; 26]) -> MinuteKey {
    let word = |at: usize| u128::from_le_bytes(s[at..at + 16].try_into().expect("16 bytes"));
    // Bytes 18 and 19 are bytes 8 and 9 of the word from byte 10.
    const SECONDS: u128 = 0xffff << 64;
    (word(0), word(10) & !SECONDS)
}

/// The month (1–12) named by three bytes `Jan`…`Dec` (exact case), by a perfect hash of the
/// three bytes and one comparison.
#[inline]
fn month_of(a: u8, b: u8, c: u8) -> Option<u32> {
    /// `MONTH_KEYS[h]` is the key of the month whose hash is `h`; `u32::MAX` (no three-byte key
    /// has its top byte set) marks an unused slot.
    const MONTH_KEYS: [u32; 16] = {
        let mut keys = [u32::MAX; 16];
        let mut m = 0;
        while m < 12 {
            let name = MONTHS[m];
            let key = month_key(name[0], name[1], name[2]);
            keys[month_hash(key)] = key;
            m += 1;
        }
        keys
    };
    const MONTH_NUMBERS: [u8; 16] = {
        let mut numbers = [0u8; 16];
        let mut m = 0;
        while m < 12 {
            let name = MONTHS[m];
            numbers[month_hash(month_key(name[0], name[1], name[2]))] = m as u8 + 1;
            m += 1;
        }
        numbers
    };
    let key = month_key(a, b, c);
    let h = month_hash(key);
    (MONTH_KEYS[h] == key).then_some(u32::from(MONTH_NUMBERS[h]))
}

const fn month_key(a: u8, b: u8, c: u8) -> u32 {
    u32::from_le_bytes([a, b, c, 0])
}

/// Distinct for the twelve month names (checked by a test and, for the table, by construction:
/// a collision would leave a month unfindable, which `month_names_round_trip` catches).
const fn month_hash(key: u32) -> usize {
    (key.wrapping_mul(26_596) >> 28) as usize
}

/// [`parse_apache_time`] on exactly 26 bytes, with an optional [`StampCache`].
///
/// Every byte is checked (the fixed punctuation, 16 digits, the month name, the offset sign) and
/// every range (hour, minute, second up to a leap `60`, offset, day within its month), as
/// before; only the order of the checks differs, which cannot change a result that is either a
/// value or `None`.
#[inline]
pub(crate) fn parse_clf(s: &[u8; 26], cache: Option<&StampCache>) -> Option<i64> {
    if !clf_shape(s) {
        return None;
    }
    let sign = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let d = |i: usize| i64::from(s[i] - b'0');
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let (day, year) = (two(0), two(7) * 100 + two(9));
    let (h, m, sec) = (two(12), two(15), two(18));
    let (off_h, off_m) = (two(22), two(24));
    if h >= 24 || m >= 60 || sec > 60 || off_h >= 24 || off_m >= 60 {
        return None;
    }
    let month = month_of(s[3], s[4], s[5])?;
    let days = match cache {
        Some(cache) => cache.days(year, month, day as u32)?,
        None => days_from_civil(year, month, day as u32)?,
    };
    Some(days * 86_400 + h * 3600 + m * 60 + sec - sign * (off_h * 3600 + off_m * 60))
}

/// Whether the 16 digit positions of `dd/Mmm/yyyy:hh:mm:ss +zzzz` hold ASCII digits and the six
/// punctuation positions hold `/`, `/`, `:`, `:`, `:` and a space (the month and the sign are
/// checked apart). Four 8-byte words, checked without a branch per byte.
#[inline]
fn clf_shape(s: &[u8; 26]) -> bool {
    /// `d` a digit, `p` the punctuation as written, `.` not checked here.
    const SHAPE: &[u8; 26] = b"dd/.../dddd:dd:dd:dd .dddd";
    /// Word offsets: 0, 8, 16, and 18 for the last 8 bytes (overlapping is harmless).
    const OFFSETS: [usize; 4] = [0, 8, 16, 18];
    /// Per word: the template (`0` at digits, the punctuation itself), the mask of checked
    /// bytes, and what to add so that a byte of `(byte ^ template)` above its bound (9 for a
    /// digit, 0 for punctuation) sets its high bit.
    const WORDS: [(u64, u64, u64); 4] = {
        let mut words = [(0, 0, 0); 4];
        let mut w = 0;
        while w < 4 {
            let (mut template, mut mask, mut add) = (0u64, 0u64, 0u64);
            let mut i = 0;
            while i < 8 {
                let at = OFFSETS[w] + i;
                let shift = 8 * i;
                match SHAPE[at] {
                    b'd' => {
                        template |= (b'0' as u64) << shift;
                        mask |= 0xff << shift;
                        add |= 0x76 << shift;
                    }
                    b'.' => {}
                    _ => {
                        template |= (SHAPE[at] as u64) << shift;
                        mask |= 0xff << shift;
                        add |= 0x7f << shift;
                    }
                }
                i += 1;
            }
            words[w] = (template, mask, add);
            w += 1;
        }
        words
    };
    let mut bad = 0u64;
    for (&at, &(template, mask, add)) in OFFSETS.iter().zip(&WORDS) {
        let word = u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        let x = (word ^ template) & mask;
        // A byte of `x` below 0x80 gets its high bit from the addition exactly when it is above
        // its bound (and cannot carry); a byte of 0x80 or more is bad by its own high bit.
        bad |= (x | x.wrapping_add(add)) & 0x8080_8080_8080_8080;
    }
    bad == 0
}

/// Parses an RFC 3339 timestamp, `2021-03-04T05:06:07Z`, into Unix seconds (UTC).
///
/// Accepted: `T`, `t` or a space between date and time; optional fractional seconds of any
/// length (truncated towards the past); an offset of `Z`, `z`, `+hh:mm` or `-hh:mm`. The offset
/// may also be written `+hhmm`, as zap-based loggers (Caddy's `iso8601`) do. A timestamp without
/// an offset is rejected: its meaning depends on a server's local zone that the log does not say.
///
/// ```
/// use logcensus_parse::parse_rfc3339;
/// assert_eq!(parse_rfc3339(b"2021-03-04T05:06:07Z"), Some(1614834367));
/// assert_eq!(parse_rfc3339(b"2021-03-04 06:06:07.25+01:00"), Some(1614834367));
/// assert_eq!(parse_rfc3339(b"2021-03-04T05:06:07"), None);
/// ```
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])? as u32;
    let day = digits(&s[8..10])? as u32;
    let secs = hms(&s[11..19])?;
    let mut rest = &s[19..];
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &tail[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => offset_hhmm(&[*sign, *h1, *h2, *m1, *m2])?,
        [b'+' | b'-', _, _, _, _] => offset_hhmm(rest)?,
        _ => return None,
    };
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + secs - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, or `None` if the date does not exist.
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let leap = is_leap(year);
    let month_len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > month_len {
        return None;
    }
    // Whole years since 0001-01-01, then the leap days those years contained.
    let y = year - 1;
    let days_before_year = 365 * y + y / 4 - y / 100 + y / 400;
    let leap_day = i64::from(leap && month > 2);
    let day_of_year = DAYS_BEFORE_MONTH[month as usize - 1] + leap_day + i64::from(day) - 1;
    Some(days_before_year + day_of_year - DAYS_0001_TO_1970)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// `HH:MM:SS` (exactly 8 bytes) as seconds into the day; a leap second (`:60`) is allowed.
fn hms(s: &[u8]) -> Option<i64> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    if h >= 24 || m >= 60 || sec > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

/// `+hhmm` / `-hhmm` (exactly 5 bytes) as signed seconds east of UTC.
fn offset_hhmm(s: &[u8]) -> Option<i64> {
    let sign = match s.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if s.len() != 5 {
        return None;
    }
    let (h, m) = (digits(&s[1..3])?, digits(&s[3..5])?);
    if h >= 24 || m >= 60 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// A short run of ASCII digits (at most 4 here) as a number; empty or non-digit is `None`.
fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Parses a decimal Unix time given in units of `1/per_second` seconds (1 for seconds, 1000 for
/// milliseconds), e.g. `1431857103`, `1431857103.25` or `-1.5`. The result is floored to whole
/// seconds and must lie within years 0001–9999.
pub(crate) fn parse_epoch_text(s: &[u8], per_second: i64) -> Option<i64> {
    let (negative, s) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 || int_len > 18 {
        return None;
    }
    let mut units = s[..int_len]
        .iter()
        .fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'));
    let mut frac_nonzero = false;
    match &s[int_len..] {
        [] => {}
        [b'.', frac @ ..] if !frac.is_empty() && frac.iter().all(u8::is_ascii_digit) => {
            frac_nonzero = frac.iter().any(|&b| b != b'0');
        }
        _ => return None,
    }
    if negative {
        // Flooring a negative value with a fraction moves it one unit further from zero.
        units = -units - i64::from(frac_nonzero);
    }
    epoch_in_range(units.div_euclid(per_second))
}

/// Converts a float Unix time in units of `1/per_second` seconds, floored to whole seconds.
pub(crate) fn epoch_from_f64(v: f64, per_second: i64) -> Option<i64> {
    let secs = (v / per_second as f64).floor();
    if !secs.is_finite() || secs < MIN_TIME as f64 || secs > MAX_TIME as f64 {
        return None;
    }
    Some(secs as i64)
}

/// Converts an integer Unix time in units of `1/per_second` seconds, floored to whole seconds.
pub(crate) fn epoch_from_i64(v: i64, per_second: i64) -> Option<i64> {
    epoch_in_range(v.div_euclid(per_second))
}

fn epoch_in_range(secs: i64) -> Option<i64> {
    (MIN_TIME..=MAX_TIME).contains(&secs).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_time_utc() {
        assert_eq!(
            parse_apache_time(b"17/May/2015:10:05:03 +0000"),
            Some(1_431_857_103)
        );
        assert_eq!(parse_apache_time(b"01/Jan/1970:00:00:00 +0000"), Some(0));
        assert_eq!(parse_apache_time(b"31/Dec/1969:23:59:59 +0000"), Some(-1));
    }

    #[test]
    fn apache_time_offsets() {
        // 13:55:36 at UTC-7 is 20:55:36 UTC on 2000-10-10, day 11240 since the epoch.
        assert_eq!(
            parse_apache_time(b"10/Oct/2000:13:55:36 -0700"),
            Some(11_240 * 86_400 + 20 * 3600 + 55 * 60 + 36)
        );
        assert_eq!(
            parse_apache_time(b"10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336)
        );
        assert_eq!(
            parse_apache_time(b"17/May/2015:12:05:03 +0200"),
            Some(1_431_857_103)
        );
        // A half-hour zone crossing midnight backwards into the previous day.
        assert_eq!(
            parse_apache_time(b"18/May/2015:00:35:03 +0530"),
            Some(1_431_857_103 + 9 * 3600)
        );
    }

    #[test]
    fn leap_days() {
        // 2016-01-01 is 1451606400; Feb 29 is 59 days later.
        assert_eq!(
            parse_apache_time(b"29/Feb/2016:00:00:00 +0000"),
            Some(1_451_606_400 + 59 * 86_400)
        );
        assert_eq!(
            parse_apache_time(b"01/Mar/2016:00:00:00 +0000"),
            Some(1_451_606_400 + 60 * 86_400)
        );
        assert_eq!(parse_apache_time(b"29/Feb/2015:00:00:00 +0000"), None);
        // Divisible by 400: leap. Divisible by 100 only: not leap.
        assert_eq!(parse_rfc3339(b"2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339(b"1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339(b"2024-02-30T00:00:00Z"), None);
    }

    #[test]
    fn year_range_edges() {
        assert_eq!(parse_rfc3339(b"0001-01-01T00:00:00Z"), Some(MIN_TIME));
        assert_eq!(parse_rfc3339(b"9999-12-31T23:59:59Z"), Some(MAX_TIME));
        assert_eq!(parse_rfc3339(b"0000-12-31T23:59:59Z"), None);
    }

    #[test]
    fn apache_time_rejects() {
        for bad in [
            &b"32/Jan/2015:10:05:03 +0000"[..],
            b"00/Jan/2015:10:05:03 +0000",
            b"31/Apr/2015:10:05:03 +0000",
            b"17/Foo/2015:10:05:03 +0000",
            b"17/may/2015:10:05:03 +0000",
            b"17/May/2015:24:05:03 +0000",
            b"17/May/2015:10:60:03 +0000",
            b"17/May/2015:10:05:61 +0000",
            b"17/May/2015:10:05:03 0000",
            b"17/May/2015:10:05:03 +2400",
            b"17/May/2015:10:05:03 +0060",
            b"17/May/2015:10:05:03 +000",
            b"17/May/2015:10:05:03 +00000",
            b"[17/May/2015:10:05:03 +0000]",
            b"7/May/2015:10:05:03 +0000",
            b"17/May/15:10:05:03 +0000",
            b"17-May-2015:10:05:03 +0000",
            b"garbage",
            b"",
            b"\xff\xfe/May/2015:10:05:03 +0000",
        ] {
            assert_eq!(
                parse_apache_time(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A leap second is allowed and lands on the next minute.
        assert_eq!(
            parse_apache_time(b"17/May/2015:10:05:60 +0000"),
            Some(1_431_857_160)
        );
    }

    /// `parse_apache_time` as it was before the fixed-width parser and the day cache: the
    /// reference they must agree with.
    fn reference_apache_time(s: &[u8]) -> Option<i64> {
        if s.len() != 26 || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[20] != b' ' {
            return None;
        }
        let day = digits(&s[0..2])?;
        let month = MONTHS.iter().position(|m| &s[3..6] == *m)? as u32 + 1;
        let year = digits(&s[7..11])?;
        let secs = hms(&s[12..20])?;
        let offset = offset_hhmm(&s[21..26])?;
        let days = days_from_civil(year, month, day as u32)?;
        Some(days * 86_400 + secs - offset)
    }

    #[test]
    fn month_names_round_trip() {
        for (i, m) in MONTHS.iter().enumerate() {
            assert_eq!(month_of(m[0], m[1], m[2]), Some(i as u32 + 1));
        }
        let hashes: std::collections::HashSet<_> = MONTHS
            .iter()
            .map(|m| month_hash(month_key(m[0], m[1], m[2])))
            .collect();
        assert_eq!(hashes.len(), 12);
        // No other three bytes name a month: all of `a-zA-Z` and a sample of the rest.
        let bytes: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain([0, b' ', b'0', b'/', 0x7f, 0x80, 0xff])
            .collect();
        for &a in &bytes {
            for &b in &bytes {
                for &c in &bytes {
                    let want = MONTHS
                        .iter()
                        .position(|m| *m == &[a, b, c])
                        .map(|i| i as u32 + 1);
                    assert_eq!(month_of(a, b, c), want, "{:?}", [a, b, c]);
                }
            }
        }
    }

    #[test]
    fn fixed_width_parser_and_cache_agree_with_the_reference() {
        let cache = StampCache::default();
        // Another one for `parse_clf_cached`, whose minute then comes from the last timestamp.
        let minutes = StampCache::default();
        let check = |s: &[u8]| {
            let want = reference_apache_time(s);
            assert_eq!(
                parse_apache_time(s),
                want,
                "{:?}",
                String::from_utf8_lossy(s)
            );
            if let Ok(fixed) = <&[u8; 26]>::try_from(s) {
                assert_eq!(
                    parse_clf(fixed, Some(&cache)),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(s)
                );
                assert_eq!(
                    parse_clf_cached(fixed, &minutes),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(s)
                );
            }
        };
        // Every day of some years (the cache sees each date change), and the day after each
        // month's last day.
        for year in [
            1, 4, 100, 1582, 1900, 1969, 1970, 2000, 2015, 2016, 2024, 2100, 9999,
        ] {
            for month in MONTHS {
                let month = std::str::from_utf8(month).unwrap();
                for day in 0..=32 {
                    for time in ["00:00:00 +0000", "23:59:60 -2359", "12:30:00 +0530"] {
                        let s = format!("{day:02}/{month}/{year:04}:{time}");
                        check(s.as_bytes());
                        check(s.as_bytes());
                    }
                }
            }
        }
        // Each byte of a valid timestamp replaced by every value, alternating with the valid
        // one so the cache holds a date whenever a broken one comes.
        let valid = *b"17/May/2015:10:05:03 +0000";
        for i in 0..valid.len() {
            for b in 0..=255u8 {
                let mut s = valid;
                s[i] = b;
                check(&s);
                check(&valid);
            }
        }
        // Every pair of bytes as the seconds of a minute just read (digits up to 60 and past,
        // and bytes that are no digits), and then of the next minute and of another offset.
        for minute in [
            *b"17/May/2015:10:05:00 +0000",
            *b"17/May/2015:10:06:00 +0000",
            *b"17/May/2015:10:06:00 -0130",
            *b"31/Dec/9999:23:59:00 +0000",
        ] {
            for a in 0..=255u8 {
                for b in [b'0', b'5', b'9', b':', b'/', 0, 0xff] {
                    let mut s = minute;
                    (s[18], s[19]) = (a, b);
                    check(&minute);
                    check(&s);
                    check(&s);
                }
            }
        }
        for s in [
            &b""[..],
            b"17/May/2015:10:05:03 +000",
            b"17/May/2015:10:05:03 +00000",
        ] {
            check(s);
        }
    }

    #[test]
    fn rfc3339_forms() {
        let t = 1_614_834_367; // 2021-03-04T05:06:07Z
        assert_eq!(parse_rfc3339(b"2021-03-04T05:06:07Z"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04t05:06:07z"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04 05:06:07Z"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04T05:06:07.999999999Z"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04T05:06:07.1+00:00"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04T06:06:07+01:00"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04T06:06:07.123+0100"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-04T00:06:07-05:00"), Some(t));
        assert_eq!(parse_rfc3339(b"2021-03-03T23:36:07-05:30"), Some(t));
        assert_eq!(parse_rfc3339(b"1969-12-31T23:59:59.5Z"), Some(-1));
    }

    #[test]
    fn rfc3339_rejects() {
        for bad in [
            &b"2021-03-04T05:06:07"[..],
            b"2021-03-04T05:06:07.Z",
            b"2021-03-04T05:06:07+01",
            b"2021-03-04T05:06:07+01:0",
            b"2021-03-04T05:06:07+1:00",
            b"2021-03-04T05:06:07 +01:00",
            b"2021-03-04T05:06:07Zjunk",
            b"2021-13-04T05:06:07Z",
            b"2021-00-04T05:06:07Z",
            b"2021-03-32T05:06:07Z",
            b"2021-03-04T25:06:07Z",
            b"2021-03-04X05:06:07Z",
            b"2021/03/04T05:06:07Z",
            b"21-03-04T05:06:07Z",
            b"garbage",
            b"",
        ] {
            assert_eq!(
                parse_rfc3339(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn epoch_text() {
        assert_eq!(parse_epoch_text(b"1431857103", 1), Some(1_431_857_103));
        assert_eq!(parse_epoch_text(b"1431857103.999", 1), Some(1_431_857_103));
        assert_eq!(
            parse_epoch_text(b"1431857103999", 1000),
            Some(1_431_857_103)
        );
        assert_eq!(
            parse_epoch_text(b"1431857103999999", 1_000_000),
            Some(1_431_857_103)
        );
        assert_eq!(parse_epoch_text(b"-1.5", 1), Some(-2));
        assert_eq!(parse_epoch_text(b"-1.0", 1), Some(-1));
        assert_eq!(parse_epoch_text(b"-1", 1000), Some(-1));
        assert_eq!(parse_epoch_text(b"1.", 1), None);
        assert_eq!(parse_epoch_text(b"1e9", 1), None);
        assert_eq!(parse_epoch_text(b"", 1), None);
        assert_eq!(parse_epoch_text(b"-", 1), None);
        assert_eq!(parse_epoch_text(b"999999999999999999", 1), None);
        assert_eq!(epoch_from_f64(1_431_857_103.75, 1), Some(1_431_857_103));
        assert_eq!(epoch_from_f64(-0.5, 1), Some(-1));
        assert_eq!(epoch_from_f64(f64::NAN, 1), None);
        assert_eq!(epoch_from_f64(1e300, 1), None);
        assert_eq!(epoch_from_i64(-1, 1000), Some(-1));
        assert_eq!(epoch_from_i64(i64::MAX, 1), None);
    }
}
