//! Detectors for strings that must never appear in a released table: network addresses, e-mail
//! addresses, URLs, paths and query strings, random tokens (hashes, identifiers, keys), and
//! anything long enough to be free text.
//!
//! The vocabulary of the tables is short, coarse names: `(unknown)`, `US-VA`, `Windows 10`,
//! `NT 10`, `bbc.co.uk`, `124`. Each detector looks for a shape that vocabulary never has, also
//! inside a longer string, so a value is flagged whatever surrounds it.

use std::net::Ipv6Addr;

use crate::ViolationKind;

/// The longest string a table may hold, in characters.
pub(crate) const MAX_CHARS: usize = 64;
/// A run of `[A-Za-z0-9_-]` at least this long, with letters and digits, is a token.
const TOKEN_CHARS: usize = 20;
/// A run of hex digits at least this long is a token (a hash or an identifier).
const HEX_CHARS: usize = 16;
/// The longest textual IPv6 address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_IPV6_CHARS: usize = 45;

/// What a string looks like, when it looks like something a table must not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Four decimal octets separated by `.` (or by `-`, as in `ip-10-0-0-1`).
    Ipv4,
    /// Text that parses as an IPv6 address.
    Ipv6,
    /// `local@domain.tld`.
    Email,
    /// `scheme://`.
    UrlScheme,
    /// `/` after a host name (`example.com/login`).
    UrlPath,
    /// `/` anywhere else: a path (`/admin`) or a User-Agent product token (`Mozilla/5.0`).
    Slash,
    /// `?`: a query string.
    Query,
    /// `=`: a query parameter or `key=value` pair.
    Equals,
    /// A long run of `[A-Za-z0-9_-]` mixing letters and digits.
    Token { chars: usize },
    /// A long run of hex digits.
    HexToken { chars: usize },
    /// More than [`MAX_CHARS`] characters.
    TooLong { chars: usize },
}

impl Finding {
    /// The violation kind this finding is reported as.
    pub(crate) fn kind(&self) -> ViolationKind {
        match self {
            Finding::Ipv4 | Finding::Ipv6 => ViolationKind::IpAddress,
            Finding::Email => ViolationKind::Email,
            Finding::UrlScheme
            | Finding::UrlPath
            | Finding::Slash
            | Finding::Query
            | Finding::Equals => ViolationKind::Url,
            Finding::Token { .. } | Finding::HexToken { .. } => ViolationKind::Token,
            Finding::TooLong { .. } => ViolationKind::TooLong,
        }
    }

    /// What the finding means, as a phrase that follows "the value".
    pub(crate) fn describe(&self) -> String {
        match self {
            Finding::Ipv4 => "looks like an IPv4 address".into(),
            Finding::Ipv6 => "looks like an IPv6 address".into(),
            Finding::Email => "looks like an e-mail address".into(),
            Finding::UrlScheme => "looks like a URL (`://`)".into(),
            Finding::UrlPath => "looks like a URL path (`/` after a host name)".into(),
            Finding::Slash => "contains `/` (a path or a User-Agent product token)".into(),
            Finding::Query => "contains `?` (a query string)".into(),
            Finding::Equals => "contains `=` (a query parameter)".into(),
            Finding::Token { chars } => {
                format!("looks like a random token ({chars} letters and digits)")
            }
            Finding::HexToken { chars } => {
                format!("looks like a hex token or hash ({chars} hex digits)")
            }
            Finding::TooLong { chars } => {
                format!("is {chars} characters long, over the limit of {MAX_CHARS}")
            }
        }
    }
}

/// The findings for one string, most specific first; empty when the string may be released.
pub(crate) fn inspect(value: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    if has_ipv4(value) {
        found.push(Finding::Ipv4);
    }
    if has_ipv6(value) {
        found.push(Finding::Ipv6);
    }
    if has_email(value) {
        found.push(Finding::Email);
    }
    if value.contains("://") {
        found.push(Finding::UrlScheme);
    } else if let Some(at) = value.find('/') {
        found.push(if ends_with_host(&value[..at]) {
            Finding::UrlPath
        } else {
            Finding::Slash
        });
    }
    if value.contains('?') {
        found.push(Finding::Query);
    }
    if value.contains('=') {
        found.push(Finding::Equals);
    }
    if let Some(chars) = longest_token(value) {
        found.push(Finding::Token { chars });
    }
    if let Some(chars) = longest_hex_run(value) {
        found.push(Finding::HexToken { chars });
    }
    let chars = value.chars().count();
    if chars > MAX_CHARS {
        found.push(Finding::TooLong { chars });
    }
    found
}

/// All findings as one phrase: "looks like an e-mail address; is 80 characters long, …".
pub(crate) fn describe_all(found: &[Finding]) -> String {
    found
        .iter()
        .map(Finding::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Four octets (0-255, one to three digits) joined by the same separator, `.` or `-`, and not
/// part of a longer number.
fn has_ipv4(value: &str) -> bool {
    let b = value.as_bytes();
    (0..b.len()).any(|start| {
        let starts_number =
            b[start].is_ascii_digit() && (start == 0 || !b[start - 1].is_ascii_digit());
        starts_number && [b'.', b'-'].iter().any(|&sep| octets_at(b, start, sep))
    })
}

fn octets_at(b: &[u8], mut at: usize, sep: u8) -> bool {
    for i in 0..4 {
        if i > 0 {
            if b.get(at) != Some(&sep) {
                return false;
            }
            at += 1;
        }
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) {
            return false;
        }
        let octet = b[at..at + digits]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        if octet > 255 {
            return false;
        }
        at += digits;
    }
    true
}

/// Any substring that parses as an IPv6 address with at least two colons and either a decimal
/// digit or three groups (so `std::string` or `a::b` are not addresses, `fe80::1` and
/// `dead:beef::cafe` are).
fn has_ipv6(value: &str) -> bool {
    let b = value.as_bytes();
    let candidate = |c: &u8| c.is_ascii_hexdigit() || *c == b':' || *c == b'.';
    let mut start = 0;
    while start < b.len() {
        if !candidate(&b[start]) {
            start += 1;
            continue;
        }
        let len = b[start..].iter().take_while(|c| candidate(c)).count();
        let run = &value[start..start + len];
        if run.bytes().filter(|&c| c == b':').count() >= 2 && run_holds_ipv6(run) {
            return true;
        }
        start += len;
    }
    false
}

fn run_holds_ipv6(run: &str) -> bool {
    (0..run.len()).any(|from| {
        let longest = run.len().min(from + MAX_IPV6_CHARS);
        (from + 2..=longest).rev().any(|to| {
            let text = &run[from..to];
            text.bytes().filter(|&c| c == b':').count() >= 2
                && (text.bytes().any(|c| c.is_ascii_digit())
                    || text.split(':').filter(|g| !g.is_empty()).count() >= 3)
                && text.parse::<Ipv6Addr>().is_ok()
        })
    })
}

/// `@` with a local part before it and a dotted domain after it.
fn has_email(value: &str) -> bool {
    let b = value.as_bytes();
    let local = |c: &u8| c.is_ascii_alphanumeric() || b"._%+-".contains(c);
    let domain = |c: &u8| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-';
    b.iter().enumerate().any(|(at, &c)| {
        if c != b'@' || at == 0 || !local(&b[at - 1]) {
            return false;
        }
        let host = &b[at + 1..];
        let host = &host[..host.iter().take_while(|c| domain(c)).count()];
        // `user@example.com`, also followed by a sentence's full stop; not `user@.com`.
        let mut labels = host.split(|&c| c == b'.');
        labels.next().is_some_and(|first| !first.is_empty())
            && labels.any(|label| !label.is_empty())
    })
}

/// The text before a `/` ends with something that names a host: a dotted name (`example.com`),
/// `localhost`, or a port (`host:8080`).
fn ends_with_host(before: &str) -> bool {
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    let tail = before.rsplit(|c: char| !host_char(c)).next().unwrap_or("");
    let dotted = tail.split('.').filter(|label| !label.is_empty()).count() >= 2;
    dotted || tail.eq_ignore_ascii_case("localhost") || tail.contains(':')
}

/// The length of the longest run of `[A-Za-z0-9_-]` that is at least [`TOKEN_CHARS`] long and
/// holds both letters and digits.
fn longest_token(value: &str) -> Option<usize> {
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|run| {
            run.len() >= TOKEN_CHARS
                && run.bytes().any(|c| c.is_ascii_alphabetic())
                && run.bytes().any(|c| c.is_ascii_digit())
        })
        .map(str::len)
        .max()
}

/// The length of the longest run of hex digits, if it is at least [`HEX_CHARS`] long.
fn longest_hex_run(value: &str) -> Option<usize> {
    value
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .filter(|&n| n >= HEX_CHARS)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every distinct string of a real run:
    /// `cargo run -p logcensus -- run --pipeline pipelines/internal-daily.toml --out /tmp/audit-sample`,
    /// read back with `logcensus inspect` (all four tables, both dates).
    const REAL_RUN: &[&str] = &[
        "(direct)",
        "(internal)",
        "(other)",
        "(unknown)",
        "AF",
        "AR",
        "AS",
        "AU",
        "AU-NSW",
        "Android",
        "BR",
        "BR-SP",
        "Baiduspider",
        "CA",
        "CA-QC",
        "Chrome",
        "ChromeOS",
        "DE",
        "DE-BE",
        "DE-BY",
        "EU",
        "Edge",
        "FR",
        "FR-IDF",
        "Firefox",
        "GB",
        "GB-ENG",
        "GB-SCT",
        "Googlebot",
        "HTTP Library",
        "IN",
        "IN-MH",
        "Internet Explorer",
        "JP",
        "JP-13",
        "KE",
        "Linux",
        "MX",
        "MX-CMX",
        "Mac OSX",
        "NA",
        "NL",
        "NT 10",
        "NT 6",
        "NZ",
        "NZ-AUK",
        "OC",
        "Opera",
        "SA",
        "SE",
        "SG",
        "Safari",
        "SamsungBrowser",
        "US",
        "US-CA",
        "US-VA",
        "US-WA",
        "Windows 10",
        "Windows 7",
        "ZA",
        "ZA-GP",
        "abc.net.au",
        "ahref AhrefsBot",
        "bbc.co.uk",
        "bing.com",
        "bingbot",
        "blogspot.com",
        "crawler",
        "duckduckgo.com",
        "ecosia.org",
        "example.co.jp",
        "example.com.br",
        "example.gov.uk",
        "example.org",
        "facebook",
        "facebook.com",
        "github.com",
        "github.io",
        "google.co.uk",
        "google.com",
        "google.de",
        "herokuapp.com",
        "iPad",
        "iPhone",
        "linkedin.com",
        "mastodon.social",
        "misc",
        "misc crawler",
        "pc",
        "reddit.com",
        "smartphone",
        "stackoverflow.com",
        "t.co",
        "wikipedia.org",
        "yahoo.com",
        "yandex.ru",
        "ycombinator.com",
        // Numeric versions (major only) from the same run.
        "124",
        "125",
        "17",
        "14",
        "10",
        "11",
        "537",
    ];

    /// Names the contracts and the classifier document that the sample run happens not to hold.
    const DOCUMENTED: &[&str] = &[
        "(invalid)",
        "Windows 8.1",
        "Windows Phone OS",
        "Mac OS Classic",
        "PlayStation Vita",
        "Xbox 360",
        "Mediapartners-Google",
        "AdsBot-Google-Mobile",
        "Yahoo! Slurp",
        "Googlebot Mobile",
        "mobilephone",
        "appliance",
        "US-Virginia",
        "DE-Bayern",
        "JP-13",
        "news.ycombinator.com",
        "xn--80ak6aa92e.com",
        "co.uk",
        "2026-05-17",
        "NT 6",
    ];

    #[test]
    fn the_real_vocabulary_passes() {
        for value in REAL_RUN.iter().chain(DOCUMENTED) {
            assert_eq!(inspect(value), [], "{value:?}");
        }
    }

    #[test]
    fn ipv4_addresses_are_found_anywhere() {
        for value in [
            "203.0.113.7",
            "client 10.0.0.1 said",
            "ip-10-0-0-1.ec2.internal",
            "x198.51.100.23",
            "0.0.0.0",
            "255.255.255.255:443",
        ] {
            assert_eq!(inspect(value)[0], Finding::Ipv4, "{value}");
        }
        for value in [
            "256.1.1.1",
            "1.2.3",
            "1234.5.6.7",
            "10.0.19045",
            "2026-05-17",
        ] {
            assert!(!has_ipv4(value), "{value}");
        }
    }

    #[test]
    fn ipv6_addresses_are_found_anywhere() {
        for value in [
            "2001:db8::8a2e:370:7334",
            "Linux 2001:db8::1 x",
            "[fe80::1%eth0]",
            "::ffff:192.0.2.1",
            "dead:beef::cafe",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "zz2001:db8::1zz",
            "cafe2001:db8::1",
        ] {
            assert!(inspect(value).contains(&Finding::Ipv6), "{value}");
        }
        for value in ["std::string", "a::b", "12:30:45", "00:1a:2b:3c:4d:5e", "::"] {
            assert!(!has_ipv6(value), "{value}");
        }
    }

    #[test]
    fn email_addresses_are_found_anywhere() {
        for value in ["alice@example.com", "mail alice.b+x@mail.example.co.uk now"] {
            assert_eq!(inspect(value), [Finding::Email], "{value}");
        }
        for value in ["@", "a@b", "@example.com", "x@.com"] {
            assert!(!has_email(value), "{value}");
        }
    }

    #[test]
    fn urls_paths_and_queries_are_found() {
        assert_eq!(inspect("https://example.com"), [Finding::UrlScheme]);
        assert_eq!(inspect("android-app://x"), [Finding::UrlScheme]);
        assert_eq!(inspect("example.com/login"), [Finding::UrlPath]);
        assert_eq!(inspect("localhost/admin"), [Finding::UrlPath]);
        assert_eq!(inspect("host:8080/"), [Finding::UrlPath]);
        assert_eq!(inspect("/admin/login"), [Finding::Slash]);
        assert_eq!(inspect("Mozilla/5"), [Finding::Slash]);
        assert_eq!(inspect("search?q"), [Finding::Query]);
        assert_eq!(inspect("utm_source=news"), [Finding::Equals]);
        assert_eq!(
            inspect("example.com/a?b=c"),
            [Finding::UrlPath, Finding::Query, Finding::Equals]
        );
    }

    #[test]
    fn tokens_and_hashes_are_found() {
        assert_eq!(
            inspect("a8Fk2LmQ9zXw4RtY7uVb"),
            [Finding::Token { chars: 20 }]
        );
        assert_eq!(
            inspect("9f86d081884c7d65"),
            [Finding::HexToken { chars: 16 }]
        );
        assert_eq!(
            inspect("id 550e8400-e29b-41d4-a716-446655440000"),
            [Finding::Token { chars: 36 }]
        );
        // 19 characters, letters only, or hex shorter than 16: names, not tokens.
        for value in [
            "a8Fk2LmQ9zXw4RtY7uV",
            "Mediapartners-Google",
            "deadbeef1234567",
        ] {
            assert_eq!(inspect(value), [], "{value}");
        }
    }

    #[test]
    fn long_strings_are_found_by_character_count() {
        assert_eq!(inspect(&"ab ".repeat(21)[..63]), []);
        assert_eq!(inspect(&"é".repeat(64)), []);
        assert_eq!(inspect(&"é".repeat(65)), [Finding::TooLong { chars: 65 }]);
    }

    #[test]
    fn findings_read_as_one_phrase() {
        let found = inspect("https://example.com/?token=9f86d081884c7d659f86");
        assert_eq!(
            describe_all(&found),
            "looks like a URL (`://`); contains `?` (a query string); contains `=` (a query \
             parameter); looks like a random token (20 letters and digits); looks like a hex \
             token or hash (20 hex digits)"
        );
    }
}
