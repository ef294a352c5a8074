//! Turns one access-log line into a [`Record`]: the handful of fields logcensus may ever look at.
//!
//! This crate owns log *formats*: Apache `LogFormat` strings (and the `common`, `combined`,
//! `vcombined` presets), and JSON lines with a field mapping (nginx `escape=json`, Caddy, Traefik).
//! A format is compiled once into a [`LineParser`]; parsing a line borrows from it and allocates
//! nothing on the common path.
//!
//! Privacy starts here: [`Record`] has no field for the remote user, cookies, the request path or
//! query string, or any header the policy does not name. Those bytes are skipped while parsing and
//! never leave this crate. The request line `%r` yields only its method.
//!
//! ```
//! use logcensus_parse::{LineParser, FormatSpec};
//! let parser = LineParser::new(&FormatSpec::Combined).unwrap();
//! let line = br#"192.0.2.7 - alice [17/May/2015:10:05:03 +0000] "GET /a?b=c HTTP/1.1" 200 512 "https://www.example.org/x" "Mozilla/5.0""#;
//! let rec = parser.parse(line).unwrap();
//! assert_eq!(rec.status, Some(200));
//! assert_eq!(rec.time, Some(1431857103));
//! assert_eq!(&*rec.method.unwrap(), b"GET");
//! ```

#![warn(missing_docs)]

use std::borrow::Cow;

mod apache;
pub mod bytes;
mod json;
mod num;
mod time;

pub use apache::{ApacheFormat, COMBINED, COMMON, VCOMBINED};
pub use json::{DurationUnit, JsonFieldMap, JsonFormat, JsonTime};
pub use time::{parse_apache_time, parse_rfc3339};

/// A field's bytes: borrowed from the line when possible, owned when the format had escapes to
/// undo (JSON strings with `\"` or `\u00e9`).
pub type Field<'a> = Cow<'a, [u8]>;

/// The fields of one request that any policy may use. Everything else in the line is skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// `%h` / `%a`: the address that connected (used only for geo lookup and visitor counting).
    pub remote_host: Option<Field<'a>>,
    /// `%{X-Forwarded-For}i`: the raw header (may hold a comma-separated list).
    pub forwarded_for: Option<Field<'a>>,
    /// Request time as Unix seconds, UTC.
    pub time: Option<i64>,
    /// Request method (`GET`), from `%m` or the first word of `%r`.
    pub method: Option<Field<'a>>,
    /// Final status (`%>s`, `%s`).
    pub status: Option<u16>,
    /// Response size (`%b`, `%B`, `%O`); `-` is `Some(0)`.
    pub bytes: Option<u64>,
    /// `%{Referer}i`; `-` is `None`.
    pub referer: Option<Field<'a>>,
    /// `%{User-Agent}i`; `-` is `None`.
    pub user_agent: Option<Field<'a>>,
    /// `%v` / `%V`: the virtual host that served the request.
    pub vhost: Option<Field<'a>>,
    /// `%D` (microseconds) or `%T` (seconds), as microseconds.
    pub duration_us: Option<u64>,
}

/// Why a line did not parse. Cheap to copy and count; never carries line content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParseError {
    /// The line did not have the layout of the format (a literal or delimiter was missing).
    Layout,
    /// The timestamp was present but not a valid date.
    Timestamp,
    /// The status was not a three-digit number.
    Status,
    /// The byte count was not a number or `-`.
    Bytes,
    /// A JSON line was not a JSON object.
    Json,
    /// A field the pipeline needs (the timestamp) was absent.
    MissingField,
}

impl ParseError {
    /// Every reason, in a stable order (reports and tables list them in this order).
    pub const ALL: [ParseError; 6] = [
        ParseError::Layout,
        ParseError::Timestamp,
        ParseError::Status,
        ParseError::Bytes,
        ParseError::Json,
        ParseError::MissingField,
    ];

    /// A stable snake_case name, used as a metric label and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            ParseError::Layout => "bad_layout",
            ParseError::Timestamp => "bad_timestamp",
            ParseError::Status => "bad_status",
            ParseError::Bytes => "bad_bytes",
            ParseError::Json => "bad_json",
            ParseError::MissingField => "missing_field",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParseError::Layout => "the line does not have the layout of the configured format",
            ParseError::Timestamp => "the timestamp is not a valid date",
            ParseError::Status => "the status is not a three-digit number",
            ParseError::Bytes => "the byte count is not a number",
            ParseError::Json => "the line is not a JSON object",
            ParseError::MissingField => "the line has no timestamp",
        })
    }
}

/// A format as named in a pipeline file, before compilation.
// Built once per job from the pipeline file, so the size of the JSON mapping does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSpec {
    /// Apache's `common` format, [`COMMON`].
    Common,
    /// Apache's `combined` format, [`COMBINED`].
    Combined,
    /// Apache's `vhost_combined` format, [`VCOMBINED`].
    VCombined,
    /// An Apache `LogFormat` string.
    Apache(String),
    /// JSON lines with a field mapping.
    Json(JsonFieldMap),
}

/// Why a format could not be compiled. Messages name the directive and its byte offset.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// A `%` directive this crate does not know (or a `%{…}t` / `%{…}T` argument it cannot read).
    #[error("unknown LogFormat directive `{directive}` at byte {offset}")]
    UnknownDirective {
        /// The directive as written, from `%` to its letter.
        directive: String,
        /// Byte offset of its `%` in the format string.
        offset: usize,
    },
    /// A `%{` whose `}` never comes.
    #[error("LogFormat is unterminated at byte {offset}: `%{{` without `}}`")]
    Unterminated {
        /// Byte offset of the directive's `%`.
        offset: usize,
    },
    /// Two directives with no literal text between them, so their values cannot be told apart.
    #[error("LogFormat has two directives with nothing between them at byte {offset}; logcensus needs a separator to split them")]
    AdjacentDirectives {
        /// Byte offset of the second directive's `%`.
        offset: usize,
    },
    /// No `%t` (or `%{sec}t` and the like) in the format.
    #[error("LogFormat has no %t or other time directive; every table is per period, so a time is required")]
    NoTime,
    /// A JSON field mapping without a `time` path.
    #[error("JSON field mapping has no `time` field")]
    JsonNoTime,
    /// A JSON field mapping whose path for one field is malformed or collides with another's.
    #[error("JSON field `{field}` has an unusable path `{path}`: {reason}")]
    JsonPath {
        /// The mapping key (`user_agent`).
        field: &'static str,
        /// The path as configured.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A compiled format. Cheap to clone (each worker thread holds one).
#[derive(Debug, Clone)]
pub enum LineParser {
    /// An Apache `LogFormat` (including the presets).
    Apache(ApacheFormat),
    /// JSON lines with a field mapping.
    Json(JsonFormat),
}

impl LineParser {
    /// Compiles a format once.
    pub fn new(spec: &FormatSpec) -> Result<LineParser, FormatError> {
        Ok(match spec {
            FormatSpec::Common => LineParser::Apache(ApacheFormat::compile(COMMON)?),
            FormatSpec::Combined => LineParser::Apache(ApacheFormat::compile(COMBINED)?),
            FormatSpec::VCombined => LineParser::Apache(ApacheFormat::compile(VCOMBINED)?),
            FormatSpec::Apache(s) => LineParser::Apache(ApacheFormat::compile(s)?),
            FormatSpec::Json(map) => LineParser::Json(JsonFormat::new(map.clone())?),
        })
    }

    /// Parses one line (without its trailing newline; a trailing `\r` is ignored).
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        match self {
            LineParser::Apache(f) => f.parse(line),
            LineParser::Json(f) => f.parse(line),
        }
    }

    /// A guess at `line`'s connecting address (`%h`, or a JSON mapping's `remote_host`), found
    /// without parsing it: for JSON lines, [`JsonFormat::guess_remote_host`]; `None` for Apache
    /// formats, whose callers read a leading address themselves. A caller that relies on it
    /// compares it with the parse's.
    #[inline]
    pub fn guess_remote_host<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            LineParser::Apache(_) => None,
            LineParser::Json(f) => f.guess_remote_host(line),
        }
    }

    /// Whether a line's address is found by its key ([`LineParser::guess_remote_host`], JSON
    /// lines, which never start with one) rather than as the line's first word.
    pub fn reads_address_by_key(&self) -> bool {
        matches!(self, LineParser::Json(_))
    }

    /// [`LineParser::parse`] of a line whose double quotes were marked by its reader, which
    /// saves searching for them: the same answer.
    #[inline]
    pub fn parse_marked<'a>(
        &self,
        line: &'a [u8],
        quotes: bytes::QuoteMarks<'_>,
    ) -> Result<Record<'a>, ParseError> {
        match self {
            LineParser::Apache(f) => f.parse_marked(line, quotes),
            LineParser::Json(f) => f.parse(line),
        }
    }
}

#[cfg(test)]
mod tests;
