//! Small number and token checks shared by the Apache and JSON parsers.

/// Nanoseconds in one microsecond, the unit of [`crate::Record::duration_us`].
const NS_PER_US: u128 = 1_000;

/// A non-empty run of ASCII digits as a `u64`; overflow or any other byte is `None`.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// An HTTP status: exactly three ASCII digits.
pub(crate) fn parse_status(s: &[u8]) -> Option<u16> {
    match s {
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// A request method as logcensus keeps it: 1 to 16 ASCII uppercase letters. Anything else
/// (a garbage request line, a lowercase probe) is dropped rather than counted as a method.
pub(crate) fn is_method(s: &[u8]) -> bool {
    (1..=16).contains(&s.len()) && s.iter().all(u8::is_ascii_uppercase)
}

/// A non-negative decimal (`12`, `0.000929`) in a unit of `unit_ns` nanoseconds, as whole
/// microseconds (rounded to nearest). Digits beyond nanosecond precision are checked and dropped.
pub(crate) fn decimal_to_micros(s: &[u8], unit_ns: u64) -> Option<u64> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return None;
    }
    let int = u128::from(parse_u64(&s[..int_len])?);
    let mut frac_ns: u128 = 0; // fraction of one unit, in billionths
    match &s[int_len..] {
        [] => {}
        [b'.', frac @ ..] if !frac.is_empty() && frac.iter().all(u8::is_ascii_digit) => {
            let mut scale = 100_000_000u128;
            for &b in frac.iter().take(9) {
                frac_ns += u128::from(b - b'0') * scale;
                scale /= 10;
            }
        }
        _ => return None,
    }
    let unit_ns = u128::from(unit_ns);
    let total_ns = int * unit_ns + frac_ns * unit_ns / 1_000_000_000;
    u64::try_from((total_ns + NS_PER_US / 2) / NS_PER_US).ok()
}

/// A JSON float duration in a unit of `unit_ns` nanoseconds, as whole microseconds (rounded).
pub(crate) fn f64_to_micros(v: f64, unit_ns: u64) -> Option<u64> {
    let us = (v * unit_ns as f64 / 1_000.0).round();
    // `u64::MAX as f64` rounds up to 2^64, so the bound must be strict.
    (us.is_finite() && us >= 0.0 && us < u64::MAX as f64).then_some(us as u64)
}

/// A JSON integer duration in a unit of `unit_ns` nanoseconds, as whole microseconds (rounded).
pub(crate) fn u64_to_micros(v: u64, unit_ns: u64) -> Option<u64> {
    let ns = u128::from(v) * u128::from(unit_ns);
    u64::try_from((ns + NS_PER_US / 2) / NS_PER_US).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_digits() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"12a"), None);
    }

    #[test]
    fn status_digits() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"099"), Some(99));
        assert_eq!(parse_status(b"20"), None);
        assert_eq!(parse_status(b"2000"), None);
        assert_eq!(parse_status(b"2x0"), None);
    }

    #[test]
    fn methods() {
        assert!(is_method(b"GET"));
        assert!(is_method(b"PROPFIND"));
        assert!(!is_method(b""));
        assert!(!is_method(b"get"));
        assert!(!is_method(b"\x16\x03\x01"));
        assert!(!is_method(b"ABCDEFGHIJKLMNOPQ"));
    }

    #[test]
    fn durations() {
        const S: u64 = 1_000_000_000;
        assert_eq!(decimal_to_micros(b"2", S), Some(2_000_000));
        assert_eq!(decimal_to_micros(b"0.000929675", S), Some(930));
        assert_eq!(decimal_to_micros(b"0.0009294", S), Some(929));
        assert_eq!(decimal_to_micros(b"1.5", 1_000_000), Some(1_500));
        assert_eq!(decimal_to_micros(b"1234567", 1), Some(1_235));
        assert_eq!(decimal_to_micros(b"1.", S), None);
        assert_eq!(decimal_to_micros(b".5", S), None);
        assert_eq!(decimal_to_micros(b"-1", S), None);
        assert_eq!(decimal_to_micros(b"99999999999999999999", S), None);
        assert_eq!(f64_to_micros(0.000929675, S), Some(930));
        assert_eq!(f64_to_micros(-1.0, S), None);
        assert_eq!(f64_to_micros(f64::INFINITY, S), None);
        assert_eq!(u64_to_micros(1_234_567, 1), Some(1_235));
        assert_eq!(u64_to_micros(3, 1_000_000), Some(3_000));
        assert_eq!(u64_to_micros(u64::MAX, S), None);
    }
}
