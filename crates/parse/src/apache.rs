//! Apache `LogFormat` strings, compiled once into literal and field steps; see [`ApacheFormat`].

use memchr::{memchr, memchr_iter};

use crate::bytes::QuoteMarks;
use crate::num::{decimal_to_micros, is_method, parse_status, parse_u64};
use crate::time::{parse_apache_time, parse_epoch_text, StampCache};
use crate::{Field, FormatError, ParseError, Record};

/// Apache's `common` LogFormat (Common Log Format).
pub const COMMON: &str = "%h %l %u %t \"%r\" %>s %b";

/// Apache's `combined` LogFormat: [`COMMON`] plus the quoted Referer and User-Agent.
pub const COMBINED: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"";

/// Apache's `vhost_combined` LogFormat: the virtual host and port, then the combined fields with
/// `%O` (bytes sent including headers) in place of `%b`.
pub const VCOMBINED: &str = "%v:%p %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"";

/// Nanoseconds per unit of `%D` (microseconds).
const MICROS_NS: u64 = 1_000;
const MILLIS_NS: u64 = 1_000_000;
const SECONDS_NS: u64 = 1_000_000_000;

/// A compiled Apache `LogFormat`. Cheap to clone; parsing allocates nothing.
///
/// A format such as `%h %l %u %t "%r" %>s %b` becomes alternating literal and field steps.
/// Parsing walks a line along them with `memchr`, borrowing every value from the line. A format
/// whose steps are those of [`COMMON`], [`COMBINED`] or [`VCOMBINED`] first tries a parser
/// specialised for that layout, which answers only for lines that parse without error and
/// otherwise leaves the line to the walk; both give the same result for every line.
///
/// # Directives
///
/// | directive | becomes |
/// | --- | --- |
/// | `%h`, `%a`, `%{c}a`, `%{c}h` | `remote_host` |
/// | `%{X-Forwarded-For}i`, `%{Referer}i`, `%{User-Agent}i` (any case) | `forwarded_for`, `referer`, `user_agent` |
/// | `%t`, `%{%d/%b/%Y:%H:%M:%S %z}t`, `%{sec}t`, `%{msec}t`, `%{usec}t` (optionally `begin:`/`end:`) | `time` |
/// | `%r` (its first word only), `%m` | `method`, if 1–16 uppercase ASCII letters |
/// | `%s`, `%>s`, `%<s` | `status` (three digits) |
/// | `%b`, `%B`, `%O` | `bytes` (`-` is 0) |
/// | `%v`, `%V` | `vhost` |
/// | `%D`, `%T`, `%{s}T`, `%{ms}T`, `%{us}T` | `duration_us` |
/// | `%l`, `%u`, `%U`, `%q`, `%H`, `%f`, `%I`, `%S`, `%p`, `%P`, `%k`, `%L`, `%R`, `%X`, `%A`, `%{msec_frac}t`, `%{usec_frac}t`, `%^FB`, `%^FU`, other `%{…}i`, and `%{…}` of `o C e n x p P ^ti ^to` | read past and dropped |
///
/// # Where a value ends
///
/// - `%t` runs from `[` to the next `]`; `%{%d/%b/%Y:%H:%M:%S %z}t` is 26 bytes wide.
/// - A *quoted* field (the directive sits directly between `"` in the format) ends at the first
///   `"` that is not backslash-escaped and is followed by the format's next literal. For the
///   last quoted field (usually the User-Agent) the closing quote must also end the line, or be
///   followed by whitespace and an even number of quotes: this keeps an unescaped `"` inside the
///   User-Agent in the value while still accepting fields a server appends after it (nginx's
///   `main` format adds `"$http_x_forwarded_for"`).
/// - Any other field ends at the first byte of the next literal, or, for a field that ends the
///   format, at the first space or tab.
///
/// Values are not unescaped (Apache writes `"` inside a header as `\"`; the bytes stay as they
/// are). A value of `-` or an empty value means absent.
///
/// ```
/// use logcensus_parse::ApacheFormat;
/// let f = ApacheFormat::compile(r#"%v %h %t "%r" %>s %D"#).unwrap();
/// let rec = f.parse(br#"example.org 192.0.2.7 [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1234"#).unwrap();
/// assert_eq!(rec.duration_us, Some(1234));
/// assert_eq!(&*rec.vhost.unwrap(), b"example.org");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheFormat {
    steps: Vec<Step>,
    /// Set when `steps` are exactly those of a preset, which [`fast`] parses without walking
    /// them. A function of `steps`, so it does not affect equality.
    preset: Option<Preset>,
    /// The last date of a `%t` read by the fast path.
    stamps: StampCache,
}

/// The presets with a specialised parser ([`fast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preset {
    Common,
    Combined,
    VCombined,
}

/// One piece of a compiled format. Two `Field`s are never adjacent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Literal(Box<[u8]>),
    Field { kind: Kind, quoted: bool },
}

/// What a directive's value becomes in the [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RemoteHost,
    ForwardedFor,
    Referer,
    UserAgent,
    Vhost,
    /// `%r`: only the method survives; path, query and protocol are dropped.
    Request,
    Method,
    Status,
    Bytes,
    /// `[10/Oct/2000:13:55:36 -0700]`, brackets included.
    TimeBracketed,
    /// `10/Oct/2000:13:55:36 -0700`, fixed width.
    TimeClf,
    /// Unix time in units of `1/per_second` seconds.
    TimeEpoch {
        per_second: i64,
    },
    /// A duration in units of `unit_ns` nanoseconds.
    Duration {
        unit_ns: u64,
    },
    /// Consumed and dropped (remote user, path, cookies, other headers…).
    Skip,
}

impl Kind {
    fn is_time(self) -> bool {
        matches!(
            self,
            Kind::TimeBracketed | Kind::TimeClf | Kind::TimeEpoch { .. }
        )
    }
}

/// Width of `10/Oct/2000:13:55:36 -0700`.
const CLF_TIME_LEN: usize = 26;
const CLF_STRFTIME: &str = "%d/%b/%Y:%H:%M:%S %z";

impl ApacheFormat {
    /// Compiles a `LogFormat` string.
    ///
    /// Apache's condition and original/final modifiers (`%>s`, `%<s`, `%!200,304u`,
    /// `%400,501{User-agent}i`) are accepted and ignored. Backslash escapes as written in an
    /// Apache config file (`\"`, `\\`, `\t`, `\n`, `\r`) are undone, so a format may be pasted
    /// either from `httpd.conf` or with plain quotes.
    ///
    /// Errors: an unknown directive (named with its byte offset), `%{` without `}`, two
    /// directives with nothing between them, or no time directive at all.
    pub fn compile(format: &str) -> Result<ApacheFormat, FormatError> {
        let steps = compile_steps(format)?;
        // Any format string that compiles to a preset's steps (`%a` for `%h`, `%B` for `%b`…)
        // means the same, so it gets the preset's parser too.
        let preset = [
            (COMMON, Preset::Common),
            (COMBINED, Preset::Combined),
            (VCOMBINED, Preset::VCombined),
        ]
        .into_iter()
        .find(|(preset, _)| compile_steps(preset).as_ref() == Ok(&steps))
        .map(|(_, p)| p);
        Ok(ApacheFormat {
            steps,
            preset,
            stamps: StampCache::default(),
        })
    }

    /// Parses one line (without its newline; a trailing `\r` is ignored). Bytes after the last
    /// step are accepted, since some servers append fields to a standard format.
    ///
    /// A missing literal or closing quote is [`ParseError::Layout`]; a value that is present but
    /// malformed is [`ParseError::Timestamp`], [`ParseError::Status`] or [`ParseError::Bytes`]
    /// (layout errors win when a line has both). A duration that is not a number is treated as
    /// absent.
    #[inline]
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        if let Some(preset) = self.preset {
            if let Some(q) = fast::parse(preset, line, &self.stamps, fast::Search) {
                return Ok(q.into_record());
            }
        }
        // Not a preset, or a line the fast path leaves to the general walk (any error, escaped
        // or unbalanced quotes, appended fields…), which then decides alone.
        self.parse_steps(line)
    }

    /// [`ApacheFormat::parse`] of a line whose quotes are marked: the same answer, found without
    /// searching for them (marks that do not cover the line are not used).
    #[inline]
    pub fn parse_marked<'a>(
        &self,
        line: &'a [u8],
        quotes: QuoteMarks<'_>,
    ) -> Result<Record<'a>, ParseError> {
        if let Some(preset) = self.preset {
            let quick = if quotes.cover(line.len()) {
                fast::parse(preset, line, &self.stamps, quotes)
            } else {
                fast::parse(preset, line, &self.stamps, fast::Search)
            };
            if let Some(q) = quick {
                return Ok(q.into_record());
            }
        }
        self.parse_steps(line)
    }

    /// [`ApacheFormat::parse`] by walking the steps: the reference the fast path must agree with.
    fn parse_steps<'a>(&self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut rec = Record::default();
        let mut value_err = None;
        let mut pos = 0;
        for (idx, step) in self.steps.iter().enumerate() {
            match step {
                Step::Literal(lit) => {
                    if !has_prefix(&line[pos..], lit) {
                        return Err(ParseError::Layout);
                    }
                    pos += lit.len();
                }
                Step::Field { kind, quoted } => {
                    let next = match self.steps.get(idx + 1) {
                        Some(Step::Literal(lit)) => Some(&**lit),
                        _ => None,
                    };
                    let next_is_last = idx + 2 == self.steps.len();
                    let end = field_end(line, pos, *kind, *quoted, next, next_is_last)
                        .ok_or(ParseError::Layout)?;
                    if let Err(e) = store(&mut rec, *kind, &line[pos..end]) {
                        value_err.get_or_insert(e);
                    }
                    pos = end;
                }
            }
        }
        match value_err {
            Some(e) => Err(e),
            None => Ok(rec),
        }
    }
}

/// Compiles a `LogFormat` string into its steps; see [`ApacheFormat::compile`].
fn compile_steps(format: &str) -> Result<Vec<Step>, FormatError> {
    let bytes = format.as_bytes();
    let mut steps = Vec::new();
    let mut literal = Vec::new();
    let mut has_time = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes.get(i + 1) == Some(&b'%') => {
                literal.push(b'%');
                i += 2;
            }
            b'%' => {
                let start = i;
                let (kind, end) = directive(format, start)?;
                i = end;
                if !literal.is_empty() {
                    steps.push(Step::Literal(std::mem::take(&mut literal).into()));
                } else if let Some(Step::Field { kind: prev, .. }) = steps.last() {
                    // `%U%q` is common and harmless: two dropped values make one.
                    if *prev == Kind::Skip && kind == Kind::Skip {
                        continue;
                    }
                    return Err(FormatError::AdjacentDirectives { offset: start });
                }
                has_time |= kind.is_time();
                steps.push(Step::Field {
                    kind,
                    quoted: false,
                });
            }
            b'\\' => {
                let unescaped = match bytes.get(i + 1) {
                    Some(b'"') => Some(b'"'),
                    Some(b'\\') => Some(b'\\'),
                    Some(b't') => Some(b'\t'),
                    Some(b'n') => Some(b'\n'),
                    Some(b'r') => Some(b'\r'),
                    _ => None,
                };
                match unescaped {
                    Some(b) => {
                        literal.push(b);
                        i += 2;
                    }
                    None => {
                        literal.push(b'\\');
                        i += 1;
                    }
                }
            }
            b => {
                literal.push(b);
                i += 1;
            }
        }
    }
    if !literal.is_empty() {
        steps.push(Step::Literal(literal.into()));
    }
    if !has_time {
        return Err(FormatError::NoTime);
    }
    for idx in 0..steps.len() {
        let opens = idx > 0 && matches!(&steps[idx - 1], Step::Literal(l) if l.ends_with(b"\""));
        let closes = matches!(steps.get(idx + 1), Some(Step::Literal(l)) if l.starts_with(b"\""));
        if let Step::Field { quoted, .. } = &mut steps[idx] {
            *quoted = opens && closes;
        }
    }
    Ok(steps)
}

/// Parses the directive starting at `format[start] == '%'` (not `%%`); returns its kind and the
/// offset just past it.
fn directive(format: &str, start: usize) -> Result<(Kind, usize), FormatError> {
    let bytes = format.as_bytes();
    let mut j = start + 1;
    let mut arg: Option<&str> = None;
    loop {
        match bytes.get(j) {
            Some(b'!' | b'<' | b'>' | b',' | b'0'..=b'9') => j += 1,
            Some(b'{') => {
                let close = memchr(b'}', &bytes[j + 1..])
                    .ok_or(FormatError::Unterminated { offset: start })?;
                arg = Some(&format[j + 1..j + 1 + close]);
                j += close + 2;
            }
            _ => break,
        }
    }
    let mut chars = format[j..].chars();
    let letter = chars.next();
    let mut end = j + letter.map_or(0, char::len_utf8);
    // `%^ti`, `%^to`, `%^FB`: a caret and two letters.
    let mut caret = None;
    if letter == Some('^') {
        let two: Option<(char, char)> = chars.next().zip(chars.next());
        if let Some((a, b)) = two {
            end += a.len_utf8() + b.len_utf8();
            caret = Some((a, b));
        }
    }
    let unknown = || FormatError::UnknownDirective {
        directive: format[start..end].to_string(),
        offset: start,
    };
    let kind = match (letter, arg) {
        (None, _) => return Err(unknown()),
        (Some('h' | 'a'), _) => Kind::RemoteHost,
        (Some('l' | 'u'), _) => Kind::Skip,
        (Some('i'), Some(name)) => {
            if name.eq_ignore_ascii_case("X-Forwarded-For") {
                Kind::ForwardedFor
            } else if name.eq_ignore_ascii_case("Referer") {
                Kind::Referer
            } else if name.eq_ignore_ascii_case("User-Agent") {
                Kind::UserAgent
            } else {
                Kind::Skip
            }
        }
        (Some('o' | 'C' | 'e' | 'n' | 'x'), Some(_)) => Kind::Skip,
        (Some('^'), arg) => match (caret, arg) {
            (Some(('t', 'i' | 'o')), Some(_)) => Kind::Skip,
            (Some(('F', 'B' | 'U')), None) => Kind::Skip,
            _ => return Err(unknown()),
        },
        (Some('t'), None) => Kind::TimeBracketed,
        (Some('t'), Some(fmt)) => {
            let fmt = fmt
                .strip_prefix("begin:")
                .or_else(|| fmt.strip_prefix("end:"))
                .unwrap_or(fmt);
            match fmt {
                "sec" => Kind::TimeEpoch { per_second: 1 },
                "msec" => Kind::TimeEpoch { per_second: 1_000 },
                "usec" => Kind::TimeEpoch {
                    per_second: 1_000_000,
                },
                // Sub-second parts only make sense next to a whole time; alone they are not one.
                "msec_frac" | "usec_frac" => Kind::Skip,
                CLF_STRFTIME => Kind::TimeClf,
                f if f.strip_prefix('[').and_then(|f| f.strip_suffix(']'))
                    == Some(CLF_STRFTIME) =>
                {
                    Kind::TimeBracketed
                }
                _ => return Err(unknown()),
            }
        }
        (Some('r'), _) => Kind::Request,
        (Some('m'), _) => Kind::Method,
        (Some('U' | 'q' | 'H' | 'f'), _) => Kind::Skip,
        (Some('s'), _) => Kind::Status,
        (Some('b' | 'B' | 'O'), _) => Kind::Bytes,
        (Some('I' | 'S'), _) => Kind::Skip,
        (Some('v' | 'V'), _) => Kind::Vhost,
        (Some('p' | 'P' | 'k' | 'L' | 'R' | 'X' | 'A'), _) => Kind::Skip,
        (Some('D'), _) => Kind::Duration { unit_ns: MICROS_NS },
        (Some('T'), None | Some("s")) => Kind::Duration {
            unit_ns: SECONDS_NS,
        },
        (Some('T'), Some("ms")) => Kind::Duration { unit_ns: MILLIS_NS },
        (Some('T'), Some("us")) => Kind::Duration { unit_ns: MICROS_NS },
        _ => return Err(unknown()),
    };
    Ok((kind, end))
}

/// Where the value of a field starting at `pos` ends, or `None` if the line lacks the delimiter.
fn field_end(
    line: &[u8],
    pos: usize,
    kind: Kind,
    quoted: bool,
    next: Option<&[u8]>,
    next_is_last: bool,
) -> Option<usize> {
    let rest = &line[pos..];
    match (kind, next) {
        (Kind::TimeBracketed, _) => {
            if rest.first() != Some(&b'[') {
                return None;
            }
            memchr(b']', rest).map(|k| pos + k + 1)
        }
        (Kind::TimeClf, _) => (rest.len() >= CLF_TIME_LEN).then_some(pos + CLF_TIME_LEN),
        (_, Some(lit)) if quoted => quoted_end(rest, lit, next_is_last).map(|k| pos + k),
        (_, Some(lit)) => memchr(lit[0], rest).map(|k| pos + k),
        (_, None) => Some(
            pos + rest
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(rest.len()),
        ),
    }
}

/// The end of a quoted value within `rest` (which starts just after the opening quote), where
/// `lit` is the literal that follows it and starts with the closing `"`.
fn quoted_end(rest: &[u8], lit: &[u8], lit_is_last: bool) -> Option<usize> {
    let unescaped_quotes = || memchr_iter(b'"', rest).filter(|&q| !is_escaped(rest, q));
    if !lit_is_last {
        return unescaped_quotes().find(|&q| has_prefix(&rest[q..], lit));
    }
    // The closing quote of the last quoted field: prefer the one that leaves a balanced tail.
    // Usually the rest of the line holds a quote or two: find them in one pass, and walk the
    // line again only when there are more than fit here.
    let mut found = [0usize; 8];
    let mut n = 0;
    let mut total = 0;
    for q in unescaped_quotes() {
        if let Some(slot) = found.get_mut(n) {
            *slot = q;
            n += 1;
        }
        total += 1;
    }
    let quotes_in_lit = memchr_iter(b'"', &lit[1..])
        .filter(|&q| !is_escaped(&lit[1..], q))
        .count();
    if total <= found.len() {
        return closing_quote(rest, lit, total, quotes_in_lit, found[..n].iter().copied());
    }
    closing_quote(rest, lit, total, quotes_in_lit, unescaped_quotes())
}

/// The first of `quotes` (the positions of the `total` unescaped quotes in `rest`, in order)
/// that is followed by `lit`, then by the end of the line or whitespace, and leaves an even
/// number of quotes after `lit`.
fn closing_quote(
    rest: &[u8],
    lit: &[u8],
    total: usize,
    quotes_in_lit: usize,
    quotes: impl Iterator<Item = usize>,
) -> Option<usize> {
    for (seen, q) in quotes.enumerate() {
        if !has_prefix(&rest[q..], lit) {
            continue;
        }
        let after = q + lit.len();
        if after < rest.len() && !matches!(rest[after], b' ' | b'\t') {
            continue;
        }
        let in_tail = total.saturating_sub(seen + 1).saturating_sub(quotes_in_lit);
        if in_tail.is_multiple_of(2) {
            return Some(q);
        }
    }
    None
}

/// `s.starts_with(lit)` for the short literals of a format, compared in place (a call to
/// `memcmp` per literal costs more than the comparison).
fn has_prefix(s: &[u8], lit: &[u8]) -> bool {
    s.len() >= lit.len() && s.iter().zip(lit).all(|(a, b)| a == b)
}

/// Whether the `"` at `s[q]` is preceded by an odd run of backslashes.
fn is_escaped(s: &[u8], q: usize) -> bool {
    s[..q].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// `-` and the empty string mean "not logged".
fn present(v: &[u8]) -> Option<Field<'_>> {
    (!v.is_empty() && v != b"-").then_some(Field::Borrowed(v))
}

/// Stores a field's value; an `Err` is a malformed value (the walk goes on to check layout).
fn store<'a>(rec: &mut Record<'a>, kind: Kind, v: &'a [u8]) -> Result<(), ParseError> {
    match kind {
        Kind::RemoteHost => rec.remote_host = present(v),
        Kind::ForwardedFor => rec.forwarded_for = present(v),
        Kind::Referer => rec.referer = present(v),
        Kind::UserAgent => rec.user_agent = present(v),
        Kind::Vhost => rec.vhost = present(v),
        Kind::Request => {
            let method = &v[..memchr(b' ', v).unwrap_or(v.len())];
            rec.method = is_method(method).then_some(Field::Borrowed(method));
        }
        Kind::Method => rec.method = is_method(v).then_some(Field::Borrowed(v)),
        Kind::Status => rec.status = Some(parse_status(v).ok_or(ParseError::Status)?),
        Kind::Bytes => {
            rec.bytes = Some(match v {
                b"-" => 0,
                _ => parse_u64(v).ok_or(ParseError::Bytes)?,
            })
        }
        Kind::TimeBracketed => {
            let inner = v
                .strip_prefix(b"[")
                .and_then(|v| v.strip_suffix(b"]"))
                .ok_or(ParseError::Layout)?;
            rec.time = Some(parse_apache_time(inner).ok_or(ParseError::Timestamp)?);
        }
        Kind::TimeClf => rec.time = Some(parse_apache_time(v).ok_or(ParseError::Timestamp)?),
        Kind::TimeEpoch { per_second } => {
            rec.time = Some(parse_epoch_text(v, per_second).ok_or(ParseError::Timestamp)?)
        }
        Kind::Duration { unit_ns } => rec.duration_us = decimal_to_micros(v, unit_ns),
        Kind::Skip => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;

mod fast;
