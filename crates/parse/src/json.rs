//! JSON access logs with a field mapping; see [`JsonFieldMap`] and [`JsonFormat`].

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::num::{decimal_to_micros, f64_to_micros, is_method, parse_u64, u64_to_micros};
use crate::time::{
    epoch_from_f64, epoch_from_i64, parse_apache_time, parse_epoch_text, parse_rfc3339,
};
use crate::{Field, FormatError, ParseError, Record};

/// Which JSON keys hold the fields logcensus reads, as dotted paths (`request.remote_ip`).
///
/// A path segment made of digits indexes an array (`request.headers.User-Agent.0`). Keys that
/// themselves contain a `.` cannot be addressed. Every field except `time` may be left out; a
/// field left out is absent from every record.
///
/// In a pipeline file this is the `[source.json]` table:
///
/// ```toml
/// [source.json]
/// time = "ts"
/// time_format = "unix_seconds"
/// remote_host = "request.remote_ip"
/// user_agent = "request.headers.User-Agent.0"
/// status = "status"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonFieldMap {
    /// Path to the client address that connected (used for geo lookup and visitor counting).
    pub remote_host: Option<String>,
    /// Path to the raw `X-Forwarded-For` header value.
    pub forwarded_for: Option<String>,
    /// Path to the request time. Required. Its encoding is given by `time_format`.
    pub time: Option<String>,
    /// How the value at `time` is written. Default `rfc3339`.
    pub time_format: JsonTime,
    /// Path to the request method (`GET`). Values other than 1–16 uppercase ASCII letters are
    /// dropped.
    pub method: Option<String>,
    /// Path to the final HTTP status, a number or a numeric string.
    pub status: Option<String>,
    /// Path to the response size in bytes, a number or a numeric string.
    pub bytes: Option<String>,
    /// Path to the `Referer` request header.
    pub referer: Option<String>,
    /// Path to the `User-Agent` request header.
    pub user_agent: Option<String>,
    /// Path to the virtual host (`Host` header or server name) that served the request.
    pub vhost: Option<String>,
    /// Path to the time taken to serve the request, in `duration_unit`s (number or numeric
    /// string, fractions allowed).
    pub duration: Option<String>,
    /// The unit of `duration`. Default `seconds`.
    pub duration_unit: DurationUnit,
}

/// How a JSON log writes its timestamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonTime {
    /// An RFC 3339 string with an offset: `2021-03-04T05:06:07.123Z` (see [`crate::parse_rfc3339`]).
    #[default]
    Rfc3339,
    /// Unix seconds, as an integer or a float (`1614834367.52`), or the same as a string.
    UnixSeconds,
    /// Unix milliseconds, as an integer or a float, or the same as a string.
    UnixMillis,
    /// The Apache/CLF form `10/Oct/2000:13:55:36 -0700`, with or without brackets (nginx
    /// `$time_local`).
    Apache,
}

/// The unit of a JSON duration field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurationUnit {
    /// Seconds (Caddy `duration`, nginx `$request_time`).
    #[default]
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds (Traefik `Duration`).
    Nanos,
}

impl DurationUnit {
    fn nanos(self) -> u64 {
        match self {
            DurationUnit::Seconds => 1_000_000_000,
            DurationUnit::Millis => 1_000_000,
            DurationUnit::Micros => 1_000,
            DurationUnit::Nanos => 1,
        }
    }
}

impl JsonFieldMap {
    /// Caddy 2's JSON access log (`log { format json }`, the default when not on a terminal):
    /// `ts` in float Unix seconds, the request under `request`, headers as arrays.
    ///
    /// `remote_host` is `request.remote_ip`, the peer that connected; Caddy 2.7+ also writes
    /// `request.client_ip` (the address after trusted proxies), which a custom mapping may use.
    pub fn caddy() -> JsonFieldMap {
        JsonFieldMap {
            remote_host: Some("request.remote_ip".into()),
            forwarded_for: Some("request.headers.X-Forwarded-For.0".into()),
            time: Some("ts".into()),
            time_format: JsonTime::UnixSeconds,
            method: Some("request.method".into()),
            status: Some("status".into()),
            bytes: Some("size".into()),
            referer: Some("request.headers.Referer.0".into()),
            user_agent: Some("request.headers.User-Agent.0".into()),
            vhost: Some("request.host".into()),
            duration: Some("duration".into()),
            duration_unit: DurationUnit::Seconds,
        }
    }

    /// Traefik's JSON access log (`accessLog.format = "json"`): flat keys, `StartUTC` in
    /// RFC 3339 with nanoseconds, `Duration` in nanoseconds.
    ///
    /// Traefik drops request headers unless told to keep them; the Referer, User-Agent and
    /// X-Forwarded-For are read from `request_Referer`, `request_User-Agent` and
    /// `request_X-Forwarded-For`, which appear with
    /// `accessLog.fields.headers.names.User-Agent = "keep"` (and likewise for the others).
    pub fn traefik() -> JsonFieldMap {
        JsonFieldMap {
            remote_host: Some("ClientHost".into()),
            forwarded_for: Some("request_X-Forwarded-For".into()),
            time: Some("StartUTC".into()),
            time_format: JsonTime::Rfc3339,
            method: Some("RequestMethod".into()),
            status: Some("DownstreamStatus".into()),
            bytes: Some("DownstreamContentSize".into()),
            referer: Some("request_Referer".into()),
            user_agent: Some("request_User-Agent".into()),
            vhost: Some("RequestHost".into()),
            duration: Some("Duration".into()),
            duration_unit: DurationUnit::Nanos,
        }
    }

    /// nginx with this `log_format` (every value quoted, so an empty variable stays valid JSON;
    /// the remote user and the request URI are deliberately not logged):
    ///
    /// ```nginx
    /// log_format logcensus escape=json '{"time_iso8601":"$time_iso8601","remote_addr":"$remote_addr","http_x_forwarded_for":"$http_x_forwarded_for","request_method":"$request_method","status":"$status","body_bytes_sent":"$body_bytes_sent","http_referer":"$http_referer","http_user_agent":"$http_user_agent","host":"$host","request_time":"$request_time"}';
    /// ```
    pub fn nginx() -> JsonFieldMap {
        JsonFieldMap {
            remote_host: Some("remote_addr".into()),
            forwarded_for: Some("http_x_forwarded_for".into()),
            time: Some("time_iso8601".into()),
            time_format: JsonTime::Rfc3339,
            method: Some("request_method".into()),
            status: Some("status".into()),
            bytes: Some("body_bytes_sent".into()),
            referer: Some("http_referer".into()),
            user_agent: Some("http_user_agent".into()),
            vhost: Some("host".into()),
            duration: Some("request_time".into()),
            duration_unit: DurationUnit::Seconds,
        }
    }

    /// The mapped paths with their config key names, in a fixed order.
    fn paths(&self) -> [(&'static str, Option<&str>, Target); 10] {
        [
            (
                "remote_host",
                self.remote_host.as_deref(),
                Target::Text(Text::RemoteHost),
            ),
            (
                "forwarded_for",
                self.forwarded_for.as_deref(),
                Target::Text(Text::ForwardedFor),
            ),
            ("time", self.time.as_deref(), Target::Time),
            ("method", self.method.as_deref(), Target::Text(Text::Method)),
            ("status", self.status.as_deref(), Target::Status),
            ("bytes", self.bytes.as_deref(), Target::Bytes),
            (
                "referer",
                self.referer.as_deref(),
                Target::Text(Text::Referer),
            ),
            (
                "user_agent",
                self.user_agent.as_deref(),
                Target::Text(Text::UserAgent),
            ),
            ("vhost", self.vhost.as_deref(), Target::Text(Text::Vhost)),
            ("duration", self.duration.as_deref(), Target::Duration),
        ]
    }
}

/// A compiled JSON field mapping. Cheap to clone.
///
/// The mapping is compiled into a tree of the wanted paths. Parsing drives `serde_json` with a
/// visitor that descends only into those paths and skips every other value, so no
/// `serde_json::Value` is built and unmapped strings are never decoded. When every path is one
/// key long (nginx, Traefik), a line that is one flat object without escapes or control
/// characters is read by a scanner of its own instead (`json/fast.rs`), with the same result. Strings without escapes
/// are borrowed from the line; mapped strings are read as raw bytes, so a User-Agent with
/// invalid UTF-8 (nginx writes such bytes through unchanged) still parses.
///
/// Value rules: `null`, `""` and `"-"` mean absent (except a byte count of `"-"`, which is 0 as
/// in Apache's `%b`). A status or byte count may be a number or a numeric string. A mapped text
/// field that holds a number or an object makes the line [`ParseError::Json`]; one that holds an
/// array takes its first element (Caddy logs headers as arrays, so `request.headers.User-Agent`
/// works as well as `request.headers.User-Agent.0`). A duration that is not a number is absent.
///
/// ```
/// use logcensus_parse::{JsonFieldMap, JsonFormat};
/// let f = JsonFormat::new(JsonFieldMap::nginx()).unwrap();
/// let rec = f.parse(br#"{"time_iso8601":"2021-03-04T05:06:07+00:00","status":"404"}"#).unwrap();
/// assert_eq!((rec.time, rec.status), (Some(1614834367), Some(404)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFormat {
    root: Node,
    time_format: JsonTime,
    duration_unit: DurationUnit,
    /// Whether every mapped path is one key long (nginx's, Traefik's): such a mapping's usual
    /// lines go to [`fast::parse`]. A function of `root`.
    flat: bool,
    /// For a flat mapping that reads the connecting address: its key, quoted, which
    /// [`JsonFormat::guess_remote_host`] looks for. A function of `root`.
    remote_host_key: Option<KeyFinder>,
}

/// A quoted key to search lines for, with its searcher made once (boxed: it is large, and
/// a `LineParser` is moved about).
#[derive(Debug, Clone)]
struct KeyFinder(Box<memchr::memmem::Finder<'static>>);

impl PartialEq for KeyFinder {
    fn eq(&self, other: &Self) -> bool {
        self.0.needle() == other.0.needle()
    }
}

impl Eq for KeyFinder {}

/// A key path step. `index` is set when the key is all digits, so it can also index an array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    key: Box<[u8]>,
    index: Option<usize>,
    target: Option<Target>,
    children: Vec<Node>,
}

/// Where a mapped value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Text(Text),
    Time,
    Status,
    Bytes,
    Duration,
}

/// The [`Record`] fields that hold bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    RemoteHost,
    ForwardedFor,
    Method,
    Referer,
    UserAgent,
    Vhost,
}

impl JsonFormat {
    /// Compiles a mapping. Fails if `time` is missing, or a path is empty, has an empty segment,
    /// or overlaps another field's path (equal to it, or a prefix of it).
    pub fn new(map: JsonFieldMap) -> Result<JsonFormat, FormatError> {
        if map.time.as_deref().is_none_or(str::is_empty) {
            return Err(FormatError::JsonNoTime);
        }
        let mut root = Node::default();
        let mut placed: Vec<(&'static str, &str)> = Vec::new();
        for (field, path, target) in map.paths() {
            let Some(path) = path else { continue };
            let bad = |reason: String| FormatError::JsonPath {
                field,
                path: path.to_string(),
                reason,
            };
            if path.split('.').any(str::is_empty) {
                return Err(bad("a path segment is empty".into()));
            }
            if let Some((other, _)) = placed.iter().find(|(_, p)| overlaps(p, path)) {
                return Err(bad(format!(
                    "it overlaps the path of `{other}`; one value cannot fill two fields"
                )));
            }
            placed.push((field, path));
            let mut node = &mut root;
            for seg in path.split('.') {
                let pos = match node.children.iter().position(|c| *c.key == *seg.as_bytes()) {
                    Some(pos) => pos,
                    None => {
                        node.children.push(Node {
                            key: seg.as_bytes().into(),
                            index: if seg.bytes().all(|b| b.is_ascii_digit()) {
                                seg.parse().ok()
                            } else {
                                None
                            },
                            ..Node::default()
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[pos];
            }
            node.target = Some(target);
        }
        let flat = root
            .children
            .iter()
            .all(|c| c.target.is_some() && c.children.is_empty());
        let remote_host_key = root
            .children
            .iter()
            .find(|c| c.target == Some(Target::Text(Text::RemoteHost)))
            .filter(|_| flat)
            .map(|c| {
                let quoted = [&b"\""[..], &c.key, b"\""].concat();
                KeyFinder(Box::new(memchr::memmem::Finder::new(&quoted).into_owned()))
            });
        Ok(JsonFormat {
            root,
            time_format: map.time_format,
            duration_unit: map.duration_unit,
            flat,
            remote_host_key,
        })
    }

    /// Parses one JSON line (surrounding whitespace, including a trailing `\r`, is ignored).
    ///
    /// Not a JSON object (or invalid JSON, or trailing bytes) is [`ParseError::Json`]; no time
    /// is [`ParseError::MissingField`]; a time that does not parse is
    /// [`ParseError::Timestamp`]; a bad status or byte count is [`ParseError::Status`] or
    /// [`ParseError::Bytes`].
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        if self.flat {
            if let Some(parsed) = fast::parse(self, line) {
                return parsed;
            }
        }
        self.parse_walking(line)
    }

    /// A guess at `line`'s connecting address, found without parsing the line, for a flat
    /// mapping that reads it: the string after the first occurrence of its quoted key and a
    /// colon. For nearly every line the same bytes the parse returns (not when the key is
    /// written twice, or escaped); a caller that relies on it compares the two.
    pub fn guess_remote_host<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        let key = self.remote_host_key.as_ref()?;
        let at = key.0.find(line)? + key.0.needle().len();
        let rest = line[at..].strip_prefix(b":")?;
        let rest = rest.strip_prefix(b"\"")?;
        let end = crate::bytes::find_any(rest, 0, [b'"'])?;
        Some(&rest[..end])
    }

    /// What a line's parse starts from.
    fn state<'a>(&self) -> State<'a> {
        State {
            rec: Record::default(),
            err: None,
            time_format: self.time_format,
            duration_ns: self.duration_unit.nanos(),
        }
    }

    /// [`JsonFormat::parse`] through `serde_json`: every line, and the reference the fast path
    /// must agree with.
    fn parse_walking<'a>(&self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let mut state = self.state();
        let mut de = serde_json::Deserializer::from_slice(line);
        de.deserialize_map(Walk {
            node: &self.root,
            state: &mut state,
        })
        .map_err(|_| ParseError::Json)?;
        de.end().map_err(|_| ParseError::Json)?;
        finish(state)
    }
}

/// The record of a line whose JSON was valid: the first malformed value's error, else the
/// record if it has a time.
fn finish(state: State<'_>) -> Result<Record<'_>, ParseError> {
    if let Some(e) = state.err {
        return Err(e);
    }
    if state.rec.time.is_none() {
        return Err(ParseError::MissingField);
    }
    Ok(state.rec)
}

/// Whether two dotted paths are equal or one is a prefix (by whole segments) of the other.
fn overlaps(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || (long.starts_with(short) && long.as_bytes()[short.len()] == b'.')
}

/// What one line's walk has found so far.
struct State<'de> {
    rec: Record<'de>,
    /// The first malformed value; the walk continues so that invalid JSON still wins.
    err: Option<ParseError>,
    time_format: JsonTime,
    duration_ns: u64,
}

impl State<'_> {
    fn fail(&mut self, e: ParseError) {
        self.err.get_or_insert(e);
    }
}

/// Walks an object or array at an interior node of the path tree.
struct Walk<'s, 'de> {
    node: &'s Node,
    state: &'s mut State<'de>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node.target {
            None => d.deserialize_any(self),
            Some(Target::Text(text)) => d.deserialize_option(TextValue {
                text,
                state: self.state,
                in_array: false,
            }),
            Some(target) => d.deserialize_any(Scalar {
                target,
                state: self.state,
            }),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(Key { node: self.node })? {
            match child {
                Some(child) => map.next_value_seed(Walk {
                    node: child,
                    state: &mut *self.state,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let child = self.node.children.iter().find(|c| c.index == Some(i));
            let more = match child {
                Some(child) => seq
                    .next_element_seed(Walk {
                        node: child,
                        state: &mut *self.state,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    // A scalar where the mapping expected an object or array: nothing to collect.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Matches an object key against a node's children, without decoding it as UTF-8.
struct Key<'s> {
    node: &'s Node,
}

impl<'de, 's> DeserializeSeed<'de> for Key<'s> {
    type Value = Option<&'s Node>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de, 's> Visitor<'de> for Key<'s> {
    type Value = Option<&'s Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Self::Value, E> {
        Ok(self.node.children.iter().find(|c| *c.key == *key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        self.visit_bytes(key.as_bytes())
    }
}

/// Reads a mapped text field as raw bytes, borrowed when the JSON string had no escapes.
struct TextValue<'s, 'de> {
    text: Text,
    state: &'s mut State<'de>,
    /// Inside the array whose first element is taken; a nested array is not followed.
    in_array: bool,
}

impl<'de> TextValue<'_, 'de> {
    fn store(self, v: Field<'de>) {
        let absent = v.is_empty() || *v == *b"-";
        let v = (!absent).then_some(v);
        let rec = &mut self.state.rec;
        match self.text {
            Text::RemoteHost => rec.remote_host = v,
            Text::ForwardedFor => rec.forwarded_for = v,
            Text::Method => rec.method = v.filter(|m| is_method(m)),
            Text::Referer => rec.referer = v,
            Text::UserAgent => rec.user_agent = v,
            Text::Vhost => rec.vhost = v,
        }
    }
}

impl<'de> DeserializeSeed<'de> for TextValue<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TextValue<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an array of strings, or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(self)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<(), E> {
        self.store(Field::Borrowed(v));
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.store(Field::Owned(v.to_vec()));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.visit_borrowed_bytes(v.as_bytes())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.visit_bytes(v.as_bytes())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.in_array {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let first = TextValue {
            text: self.text,
            state: &mut *self.state,
            in_array: true,
        };
        if seq.next_element_seed(first)?.is_some() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(())
    }
}

/// Reads a time, status, byte count or duration from a number or a string.
struct Scalar<'s, 'de> {
    target: Target,
    state: &'s mut State<'de>,
}

impl Scalar<'_, '_> {
    /// The error for a value of the wrong shape; a duration is optional, so it has none.
    fn malformed(&self) -> Option<ParseError> {
        match self.target {
            Target::Time => Some(ParseError::Timestamp),
            Target::Status => Some(ParseError::Status),
            Target::Bytes => Some(ParseError::Bytes),
            Target::Duration | Target::Text(_) => None,
        }
    }

    fn reject(self) {
        if let Some(e) = self.malformed() {
            self.state.fail(e);
        }
    }

    fn take_u64(self, v: u64) {
        let rec = &mut self.state.rec;
        match self.target {
            Target::Time => match i64::try_from(v) {
                Ok(v) => self.take_i64(v),
                Err(_) => self.state.fail(ParseError::Timestamp),
            },
            Target::Status => match u16::try_from(v) {
                Ok(s) if (100..=999).contains(&s) => rec.status = Some(s),
                _ => self.state.fail(ParseError::Status),
            },
            Target::Bytes => rec.bytes = Some(v),
            Target::Duration => rec.duration_us = u64_to_micros(v, self.state.duration_ns),
            Target::Text(_) => {}
        }
    }

    fn take_i64(self, v: i64) {
        match (self.target, u64::try_from(v)) {
            (Target::Time, _) => {
                let per_second = match self.state.time_format {
                    JsonTime::UnixSeconds => 1,
                    JsonTime::UnixMillis => 1_000,
                    JsonTime::Rfc3339 | JsonTime::Apache => return self.reject(),
                };
                match epoch_from_i64(v, per_second) {
                    Some(t) => self.state.rec.time = Some(t),
                    None => self.reject(),
                }
            }
            (_, Ok(v)) => self.take_u64(v),
            (_, Err(_)) => self.reject(),
        }
    }

    fn take_f64(self, v: f64) {
        let rec = &mut self.state.rec;
        match self.target {
            Target::Time => {
                let time = match self.state.time_format {
                    JsonTime::UnixSeconds => epoch_from_f64(v, 1),
                    JsonTime::UnixMillis => epoch_from_f64(v, 1_000),
                    JsonTime::Rfc3339 | JsonTime::Apache => None,
                };
                match time {
                    Some(t) => rec.time = Some(t),
                    None => self.reject(),
                }
            }
            Target::Duration => rec.duration_us = f64_to_micros(v, self.state.duration_ns),
            // `512.0` is a byte count that went through a float somewhere; `512.5` is not.
            Target::Status | Target::Bytes if v.fract() == 0.0 && (0.0..1e19).contains(&v) => {
                self.take_u64(v as u64)
            }
            _ => self.reject(),
        }
    }

    fn take_text(self, v: &[u8]) {
        if v.is_empty() || v == b"-" {
            if self.target == Target::Bytes && v == b"-" {
                // As in Apache's `%b`: `-` is a response without a body.
                self.state.rec.bytes = Some(0);
            }
            return;
        }
        let rec = &mut self.state.rec;
        match self.target {
            Target::Time => {
                let time = match self.state.time_format {
                    JsonTime::Rfc3339 => parse_rfc3339(v),
                    JsonTime::UnixSeconds => parse_epoch_text(v, 1),
                    JsonTime::UnixMillis => parse_epoch_text(v, 1_000),
                    JsonTime::Apache => {
                        let bare = v
                            .strip_prefix(b"[")
                            .and_then(|v| v.strip_suffix(b"]"))
                            .unwrap_or(v);
                        parse_apache_time(bare)
                    }
                };
                match time {
                    Some(t) => rec.time = Some(t),
                    None => self.reject(),
                }
            }
            Target::Status => match crate::num::parse_status(v) {
                Some(s) => rec.status = Some(s),
                None => self.reject(),
            },
            Target::Bytes => match parse_u64(v) {
                Some(b) => rec.bytes = Some(b),
                None => self.reject(),
            },
            Target::Duration => rec.duration_us = decimal_to_micros(v, self.state.duration_ns),
            Target::Text(_) => {}
        }
    }
}

impl<'de> Visitor<'de> for Scalar<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.take_u64(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.take_i64(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.take_f64(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.take_text(v.as_bytes());
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.reject();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.reject();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.reject();
        Ok(())
    }
}

mod fast;

#[cfg(test)]
mod tests;
