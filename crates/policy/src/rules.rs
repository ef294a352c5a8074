//! The coarsening rules: each turns a raw field into the only form that may leave the process.

use std::net::IpAddr;

use logcensus_parse::bytes::find_any;

use crate::ClientAddressSource;

#[cfg(target_arch = "x86_64")]
mod quad;

/// What a referrer becomes. Only [`RefClass::Domain`] carries text, and that text is a
/// registrable domain (public-suffix aware), never a host name below it, a path or a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefClass<'a> {
    /// No referrer (`-` or empty).
    Direct,
    /// A page of the site itself (one of `own_domains`).
    Internal,
    /// Another site's registrable domain, lowercase (`google.com`, `bbc.co.uk`).
    Domain(&'a str),
    /// Not a web site's domain: another scheme (`android-app://`), an IP-address host, or a host
    /// without a public suffix (`localhost`).
    Other,
    /// Not a URL.
    Invalid,
}

impl RefClass<'_> {
    /// The value written to `referrers.referrer_domain`.
    pub fn as_str(&self) -> &str {
        match self {
            RefClass::Direct => "(direct)",
            RefClass::Internal => "(internal)",
            RefClass::Domain(d) => d,
            RefClass::Other => "(other)",
            RefClass::Invalid => "(invalid)",
        }
    }
}

/// Classifies a `Referer` header value. `scratch` holds the lowercased host (reused per call).
pub fn classify_referrer<'s>(
    referer: Option<&[u8]>,
    own_domains: &[String],
    scratch: &'s mut String,
) -> RefClass<'s> {
    match referrer_host(referer) {
        RefHost::Decided(class) => class,
        RefHost::Host(host) => classify_host(host, own_domains, scratch),
    }
}

/// How far a `Referer` value decides its class before its host is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefHost<'r> {
    /// Decided without the host: direct, not a URL, another scheme, an IPv6 literal.
    Decided(RefClass<'static>),
    /// An `http(s)` URL: its class is [`classify_host`] of this host, as written (without
    /// user-info, port or one trailing dot). The class depends on nothing else, so a caller may
    /// cache it by these bytes.
    Host(&'r [u8]),
}

/// The first half of [`classify_referrer`]: everything but the host's own rules.
pub fn referrer_host(referer: Option<&[u8]>) -> RefHost<'_> {
    let Some(raw) = referer else {
        return RefHost::Decided(RefClass::Direct);
    };
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw == b"-" {
        return RefHost::Decided(RefClass::Direct);
    }
    // Nearly every referrer starts `http://` or `https://`: then that `://` is the first one, and
    // the scheme needs no other check.
    let rest = match http_rest(raw) {
        Some(rest) => rest,
        None => {
            let Some(sep) = memchr::memmem::find(raw, b"://") else {
                return RefHost::Decided(RefClass::Invalid);
            };
            let scheme = &raw[..sep];
            if scheme.is_empty()
                || !scheme
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
            {
                return RefHost::Decided(RefClass::Invalid);
            }
            if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
                return RefHost::Decided(RefClass::Other);
            }
            &raw[sep + 3..]
        }
    };
    // One pass over the authority (up to the first `/`, `?`, `#` or `\`): the host and port
    // follow the last `@` (user-info, which can hold personal data and is never a site), and the
    // host ends at the first `:` after it.
    let mut host_start = 0;
    let mut colon = None;
    let mut end = rest.len();
    let mut from = 0;
    while let Some(i) = find_any(rest, from, *b"/?#\\@:") {
        // Tests, not a `match` (a jump table: an indirect branch, mispredicted more often).
        let b = rest[i];
        if b == b'@' {
            host_start = i + 1;
            colon = None;
        } else if b == b':' {
            colon.get_or_insert(i);
        } else {
            end = i;
            break;
        }
        from = i + 1;
    }
    // (`rest[end]`, when there is one, ends the authority: it is no `[`.)
    if rest.get(host_start) == Some(&b'[') {
        return RefHost::Decided(RefClass::Other); // an IPv6 literal
    }
    let host = &rest[host_start..colon.unwrap_or(end)];
    RefHost::Host(host.strip_suffix(b".").unwrap_or(host))
}

/// What follows `http://` or `https://` (in any case) at the start of `raw`.
fn http_rest(raw: &[u8]) -> Option<&[u8]> {
    // Byte by byte rather than with `eq_ignore_ascii_case`, which cost 24 more instructions
    // per line (callgrind).
    let head = raw.get(..8)?;
    // Setting bit 5 lowercases ASCII letters; the `:` and `/` it would change are compared as
    // they are.
    let lower = |b: u8| b | 0x20;
    if lower(head[0]) != b'h' || lower(head[1]) != b't' || lower(head[2]) != b't' {
        return None;
    }
    if lower(head[3]) != b'p' {
        return None;
    }
    match &head[4..] {
        [b':', b'/', b'/', _] => Some(&raw[7..]),
        [s, b':', b'/', b'/'] if lower(*s) == b's' => Some(&raw[8..]),
        _ => None,
    }
}

/// The second half of [`classify_referrer`]: the class of an `http(s)` referrer's host (as
/// [`referrer_host`] found it).
pub fn classify_host<'s>(
    host: &[u8],
    own_domains: &[String],
    scratch: &'s mut String,
) -> RefClass<'s> {
    if host.is_empty()
        || !host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return RefClass::Invalid;
    }
    scratch.clear();
    scratch.push_str(std::str::from_utf8(host).expect("every byte was checked to be ASCII"));
    scratch.make_ascii_lowercase();
    // IP-address hosts, and reverse-DNS names (which spell an address), are not sites.
    // (An IPv4 address is all digits and dots.)
    if scratch.bytes().all(|b| b.is_ascii_digit() || b == b'.') || scratch.ends_with(".arpa") {
        return RefClass::Other;
    }
    let Some(registrable) = icann_registrable_len(scratch.as_bytes()) else {
        return RefClass::Other;
    };
    let start = scratch.len() - registrable;
    let domain = &scratch[start..];
    if own_domains.iter().any(|own| own == domain) {
        return RefClass::Internal;
    }
    RefClass::Domain(domain)
}

/// The registrable domain of a host name under ICANN rules (`www.example.co.uk` →
/// `example.co.uk`), lowercase; `None` for names without one.
pub fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let len = icann_registrable_len(host.as_bytes())?;
    Some(host[host.len() - len..].to_string())
}

/// Length of the registrable domain of `host` under the ICANN section of the public-suffix list
/// only. The list's PRIVATE section (`github.io`, `blogspot.com`, `dyndns.org`, ...) makes every
/// customer's sub-domain "registrable" (`alice-smith.github.io`): a name that can point at one
/// person. Under ICANN rules that is `github.io`, the hosting site, which is what we keep.
fn icann_registrable_len(host: &[u8]) -> Option<usize> {
    let mut suffix = psl::suffix(host)?;
    while suffix.typ() == Some(psl::Type::Private) {
        let bytes = suffix.as_bytes();
        let dot = bytes.iter().position(|&b| b == b'.')?;
        suffix = psl::suffix(&bytes[dot + 1..])?;
    }
    if suffix.typ() != Some(psl::Type::Icann) {
        return None;
    }
    let suffix_len = suffix.as_bytes().len();
    if host.len() <= suffix_len + 1 {
        return None; // the host is a public suffix itself
    }
    let rest = &host[..host.len() - suffix_len - 1];
    let label = rest
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(rest.len(), |d| rest.len() - d - 1);
    if label == 0 {
        return None;
    }
    Some(label + 1 + suffix_len)
}

/// The major part of a version string: `32.0.1700.77` → `32`, `10_9_1` → `10`, `NT 10.0` →
/// `NT 10`; anything else → `None`. Only a version's first *number* may be output: User-Agent
/// parsers copy free text from the header into version fields (woothee does for FreeBSD,
/// ChromeOS and Japanese carriers), and that text can name a machine or a person.
pub fn major_version(version: &str) -> Option<&str> {
    let v = version.trim();
    let (prefix, digits) = match v.strip_prefix("NT ") {
        Some(rest) => ("NT ", rest),
        None => ("", v),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let number = &digits[..end];
    // The number must be the whole first component: `10.9` and `10_9` yes, `10abc` or `x86` no.
    let next = digits[end..].chars().next();
    if number.is_empty() || number.len() > 4 || !matches!(next, None | Some('.') | Some('_')) {
        return None;
    }
    Some(&v[..prefix.len() + end])
}

/// Picks and parses the client address from the connecting address and `X-Forwarded-For`.
/// Returns `None` when no valid address is present (counted as unknown geography).
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) become IPv4.
pub fn client_address(
    source: ClientAddressSource,
    remote_host: Option<&[u8]>,
    forwarded_for: Option<&[u8]>,
) -> Option<IpAddr> {
    if source == ClientAddressSource::ForwardedFor {
        if let Some(xff) = forwarded_for {
            if let Some(ip) = xff
                .split(|&b| b == b',')
                .find_map(|part| parse_ip(part.trim_ascii()))
            {
                return Some(ip);
            }
        }
    }
    remote_host.and_then(parse_ip)
}

/// Parses an IP address from bytes, accepting `[v6]` and `v4:port`/`[v6]:port` forms.
pub fn parse_ip(raw: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(raw) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = hex_groups(raw) {
        return Some(
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
        );
    }
    let s = std::str::from_utf8(raw).ok()?;
    let ip = if let Some(rest) = s.strip_prefix('[') {
        rest.split(']').next()?.parse::<IpAddr>().ok()?
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        // `192.0.2.1:443`
        let (host, port) = s.rsplit_once(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
}

/// The common case of [`parse_ip`] without `str::parse`'s generality: four decimal numbers of
/// 0 to 255 written as the standard library accepts them (no sign, no leading zero but for `0`
/// itself), separated by dots, and nothing else. `None` leaves the line to the general parser,
/// so an address this accepts is one `str::parse` accepts, with the same value.
pub fn dotted_quad(raw: &[u8]) -> Option<std::net::Ipv4Addr> {
    if raw.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = raw.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut n = 0u16;
        for &b in part {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(b - b'0');
        }
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(std::net::Ipv4Addr::from(octets))
}

/// The common case of IPv6 for [`parse_ip`], as [`dotted_quad`] is for IPv4: hexadecimal groups
/// of one to four digits separated by colons, at most one `::` standing for one or more zero
/// groups, and nothing else (no embedded IPv4, zone or brackets). `None` leaves the text to the
/// general parser, so an address this accepts is one `str::parse` accepts, with the same value.
pub fn hex_groups(raw: &[u8]) -> Option<std::net::Ipv6Addr> {
    if raw.len() > 39 || raw.len() < 2 {
        return None;
    }
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (mut heads, mut tails) = (0usize, 0usize);
    let mut gap = false;
    let mut i = 0;
    // `::` at the very start.
    if raw.starts_with(b"::") {
        gap = true;
        i = 2;
        if i == raw.len() {
            return Some(std::net::Ipv6Addr::UNSPECIFIED);
        }
    }
    loop {
        let start = i;
        let mut n = 0u16;
        while let Some(&d) = raw.get(i).map(|&b| &HEX_VALUE[usize::from(b)]) {
            if d > 15 {
                break;
            }
            if i - start == 4 {
                return None;
            }
            n = (n << 4) | u16::from(d);
            i += 1;
        }
        if i == start {
            return None;
        }
        if gap {
            if heads + tails == 7 {
                return None;
            }
            tail[tails] = n;
            tails += 1;
        } else {
            if heads == 8 {
                return None;
            }
            head[heads] = n;
            heads += 1;
        }
        match raw.get(i) {
            None => break,
            Some(b':') => i += 1,
            Some(_) => return None,
        }
        if raw.get(i) == Some(&b':') {
            if gap {
                return None;
            }
            gap = true;
            i += 1;
            if i == raw.len() {
                break;
            }
        }
    }
    if gap {
        if heads + tails > 7 {
            return None;
        }
        head[8 - tails..].copy_from_slice(&tail[..tails]);
    } else if heads != 8 {
        return None;
    }
    Some(std::net::Ipv6Addr::from(head))
}

/// The value of each hexadecimal digit (either case); 255 for every other byte.
static HEX_VALUE: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A line shorter than 16 bytes, padded with zeros (kept out of line: copying a length only
/// known at run time is a call to `memcpy`, which the common case need not make).
#[cold]
fn padded(line: &[u8]) -> [u8; 16] {
    let mut head = [0u8; 16];
    head[..line.len()].copy_from_slice(line);
    head
}

/// A [`dotted_quad`] at the start of `line`, and how many bytes it takes: the longest prefix of
/// digits and dots read as one. `Some((a, n))` means `dotted_quad(&line[..n]) == Some(a)`; what
/// follows is the caller's to check (an address then a space is a whole first word).
pub fn leading_dotted_quad(line: &[u8]) -> Option<(std::net::Ipv4Addr, usize)> {
    // An address takes at most 15 bytes, and the byte after it is looked at: 16 bytes, with
    // zeros (neither digits nor dots) past the end of a shorter line.
    let head: [u8; 16] = match line.first_chunk::<16>() {
        Some(first) => *first,
        None => padded(line),
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the processor has SSSE3 (checked just above), all this needs.
        return unsafe { quad::leading(&head) };
    }
    scalar_leading_dotted_quad(&head)
}

/// [`leading_dotted_quad`] of a line whose first 16 bytes are `head`, digit by digit.
fn scalar_leading_dotted_quad(head: &[u8; 16]) -> Option<(std::net::Ipv4Addr, usize)> {
    let digit = |b: u8| {
        let d = b.wrapping_sub(b'0');
        (d < 10).then_some(d)
    };
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if head[i] != b'.' {
                return None;
            }
            i += 1;
        }
        // One to three digits; a second one after a `0` is a leading zero. A fourth digit is
        // then neither the dot before the next octet nor the end checked below.
        let d0 = digit(head[i])?;
        let Some(d1) = digit(head[i + 1]) else {
            *octet = d0;
            i += 1;
            continue;
        };
        if d0 == 0 {
            return None;
        }
        let Some(d2) = digit(head[i + 2]) else {
            *octet = d0 * 10 + d1;
            i += 2;
            continue;
        };
        *octet = u8::try_from(u16::from(d0) * 100 + u16::from(d1) * 10 + u16::from(d2)).ok()?;
        i += 3;
    }
    if head[i] == b'.' || digit(head[i]).is_some() {
        return None;
    }
    Some((std::net::Ipv4Addr::from(octets), i))
}

/// The address as 16 bytes (IPv4 mapped), for keyed hashing.
pub fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}
