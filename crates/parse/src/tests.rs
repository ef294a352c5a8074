//! Tests across parsers: the public entry point, privacy, and robustness on hostile input.

use std::borrow::Cow;

use super::*;

const COMBINED_LINE: &str = r#"192.0.2.7 - alice [17/May/2015:10:05:03 +0000] "GET /a?b=c HTTP/1.1" 200 512 "https://www.example.org/x" "Mozilla/5.0""#;

/// Every field of a record, concatenated, so a test can search what a record holds.
fn all_bytes(rec: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [
        &rec.remote_host,
        &rec.forwarded_for,
        &rec.method,
        &rec.referer,
        &rec.user_agent,
        &rec.vhost,
    ]
    .into_iter()
    .flatten()
    {
        out.extend_from_slice(field);
        out.push(b'\n');
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn line_parser_for_every_spec() {
    let apache = LineParser::new(&FormatSpec::Apache(COMBINED.into())).unwrap();
    let combined = LineParser::new(&FormatSpec::Combined).unwrap();
    assert_eq!(
        apache.parse(COMBINED_LINE.as_bytes()),
        combined.parse(COMBINED_LINE.as_bytes())
    );
    let common = LineParser::new(&FormatSpec::Common).unwrap();
    // The combined line starts with a common line; the rest is accepted as appended fields.
    let rec = common.parse(COMBINED_LINE.as_bytes()).unwrap();
    assert_eq!((rec.bytes, rec.referer), (Some(512), None));
    let vcombined = LineParser::new(&FormatSpec::VCombined).unwrap();
    assert_eq!(
        vcombined.parse(COMBINED_LINE.as_bytes()),
        Err(ParseError::Layout)
    );
    let json = LineParser::new(&FormatSpec::Json(JsonFieldMap::nginx())).unwrap();
    let rec = json
        .parse(br#"{"time_iso8601":"2015-05-17T10:05:03Z","status":"200"}"#)
        .unwrap();
    assert_eq!((rec.time, rec.status), (Some(1_431_857_103), Some(200)));
    assert_eq!(
        LineParser::new(&FormatSpec::Apache("%h %Q %t".into())).unwrap_err(),
        FormatError::UnknownDirective {
            directive: "%Q".into(),
            offset: 3
        }
    );
    assert_eq!(
        LineParser::new(&FormatSpec::Json(JsonFieldMap::default())).unwrap_err(),
        FormatError::JsonNoTime
    );
}

#[test]
fn parse_error_names_and_messages() {
    let names: Vec<_> = ParseError::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "bad_layout",
            "bad_timestamp",
            "bad_status",
            "bad_bytes",
            "bad_json",
            "missing_field"
        ]
    );
    assert_eq!(
        ParseError::Layout.to_string(),
        "the line does not have the layout of the configured format"
    );
}

#[test]
fn privacy_user_path_query_and_cookies_never_reach_a_record() {
    let markers: [&[u8]; 4] = [
        b"MARKERUSER",
        b"MARKERPATH",
        b"MARKERQUERY",
        b"MARKERCOOKIE",
    ];
    let apache_line = br#"192.0.2.7 - MARKERUSER [17/May/2015:10:05:03 +0000] "GET /MARKERPATH/x?MARKERQUERY=1 HTTP/1.1" 200 512 "https://www.example.org/" "Mozilla/5.0""#;
    let cookie_format = LineParser::new(&FormatSpec::Apache(
        r#"%h %l %u %t "%r" %>s %b "%{Cookie}i" "%U%q" "%{User-Agent}i""#.into(),
    ))
    .unwrap();
    let cookie_line = br#"192.0.2.7 - MARKERUSER [17/May/2015:10:05:03 +0000] "GET /MARKERPATH HTTP/1.1" 200 512 "sid=MARKERCOOKIE" "/MARKERPATH?MARKERQUERY" "Mozilla/5.0""#;
    let nginx_line = br#"{"time_iso8601":"2015-05-17T10:05:03+00:00","remote_addr":"192.0.2.7","remote_user":"MARKERUSER","request":"GET /MARKERPATH?MARKERQUERY HTTP/1.1","request_uri":"/MARKERPATH?MARKERQUERY","http_cookie":"MARKERCOOKIE","request_method":"GET","status":"200","http_user_agent":"Mozilla/5.0"}"#;
    let caddy_line = br#"{"ts":1431857103.1,"request":{"remote_ip":"192.0.2.7","method":"GET","uri":"/MARKERPATH?MARKERQUERY","headers":{"Cookie":["MARKERCOOKIE"],"User-Agent":["Mozilla/5.0"]}},"user_id":"MARKERUSER","status":200}"#;
    let cases: [(LineParser, &[u8]); 5] = [
        (LineParser::new(&FormatSpec::Combined).unwrap(), apache_line),
        (LineParser::new(&FormatSpec::Common).unwrap(), apache_line),
        (cookie_format, cookie_line),
        (
            LineParser::new(&FormatSpec::Json(JsonFieldMap::nginx())).unwrap(),
            nginx_line,
        ),
        (
            LineParser::new(&FormatSpec::Json(JsonFieldMap::caddy())).unwrap(),
            caddy_line,
        ),
    ];
    for (parser, line) in cases {
        let rec = parser.parse(line).unwrap();
        // The record did read the line: the fields around the secrets are there.
        assert_eq!(rec.remote_host.as_deref(), Some(&b"192.0.2.7"[..]));
        assert_eq!(rec.method.as_deref(), Some(&b"GET"[..]));
        assert_eq!(rec.time, Some(1_431_857_103));
        let debug = format!("{rec:?}");
        let held = all_bytes(&rec);
        for marker in markers {
            let text = std::str::from_utf8(marker).unwrap();
            assert!(!debug.contains(text), "{text} in {debug}");
            assert!(!contains(&held, marker), "{text} in a field");
        }
    }
}

/// A small, seeded generator so failures reproduce without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that matter to the parsers, so random lines reach deep into them.
const INTERESTING: &[u8] = b" \"\\[]{}:,.-+/0123456789ZT\t\r\x00\xff";

fn random_line(rng: &mut XorShift) -> Vec<u8> {
    let len = rng.below(160);
    (0..len)
        .map(|_| match rng.below(3) {
            0 => rng.next() as u8,
            _ => INTERESTING[rng.below(INTERESTING.len())],
        })
        .collect()
}

fn mutate(rng: &mut XorShift, line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for _ in 0..=rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out[at] = rng.next() as u8,
            1 => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out.truncate(at),
            3 => {
                let end = (at + rng.below(12)).min(out.len());
                out.drain(at..end);
            }
            _ => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
        }
    }
    out
}

/// A borrowed field must point into the line it came from.
fn borrows_from(field: &Option<Field<'_>>, line: &[u8]) -> bool {
    match field {
        Some(Cow::Borrowed(v)) => {
            let range = line.as_ptr_range();
            v.is_empty() || (range.contains(&v.as_ptr()) && v.as_ptr_range().end <= range.end)
        }
        _ => true,
    }
}

#[test]
fn robustness_random_and_mutated_lines() {
    let custom =
        r#"%v %h "%{X-Forwarded-For}i" [%{%d/%b/%Y:%H:%M:%S %z}t] "%m %U%q %H" %>s %B %D %{ms}T"#;
    let parsers: Vec<(LineParser, &[u8])> = vec![
        (LineParser::new(&FormatSpec::Common).unwrap(), br#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512"#),
        (LineParser::new(&FormatSpec::Combined).unwrap(), COMBINED_LINE.as_bytes()),
        (LineParser::new(&FormatSpec::VCombined).unwrap(), br#"www.example.org:443 192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512 "https://r.example/" "Mo \"zi\" lla""#),
        (LineParser::new(&FormatSpec::Apache(custom.into())).unwrap(), br#"v.example 10.0.0.1 "198.51.100.1, 10.0.0.1" [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512 1834 2"#),
        (LineParser::new(&FormatSpec::Apache("%{msec}t %h".into())).unwrap(), b"1431857103123 192.0.2.7"),
        (LineParser::new(&FormatSpec::Json(JsonFieldMap::caddy())).unwrap(), br#"{"ts":1431857103.5,"request":{"remote_ip":"192.0.2.7","method":"GET","host":"h","headers":{"User-Agent":["UA \"x\""],"Referer":["r"]}},"duration":0.5,"size":12,"status":200}"#),
        (LineParser::new(&FormatSpec::Json(JsonFieldMap::traefik())).unwrap(), br#"{"ClientHost":"192.0.2.7","StartUTC":"2015-05-17T10:05:03.1Z","RequestMethod":"GET","DownstreamStatus":200,"DownstreamContentSize":12,"Duration":1000,"request_User-Agent":"UA"}"#),
        (LineParser::new(&FormatSpec::Json(JsonFieldMap::nginx())).unwrap(), br#"{"time_iso8601":"2015-05-17T10:05:03+00:00","remote_addr":"192.0.2.7","request_method":"GET","status":"200","body_bytes_sent":"12","request_time":"0.001","http_user_agent":"UA\u00e9"}"#),
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut ok = vec![0usize; parsers.len()];
    let mut failed = vec![0usize; parsers.len()];
    for round in 0..20_000 {
        for (i, (parser, valid)) in parsers.iter().enumerate() {
            if round == 0 {
                let rec = parser.parse(valid).unwrap();
                assert_eq!(rec.time, Some(1_431_857_103), "parser {i}");
            }
            let line = if round % 2 == 0 {
                random_line(&mut rng)
            } else {
                mutate(&mut rng, valid)
            };
            match parser.parse(&line) {
                Ok(rec) => {
                    ok[i] += 1;
                    // Every parser here maps a time, so a success always has one.
                    let time = rec.time.unwrap();
                    assert!((time::MIN_TIME..=time::MAX_TIME).contains(&time));
                    if let Some(m) = &rec.method {
                        assert!(num::is_method(m), "{m:?}");
                    }
                    if let Some(s) = rec.status {
                        assert!(s <= 999);
                    }
                    for field in [
                        &rec.remote_host,
                        &rec.forwarded_for,
                        &rec.method,
                        &rec.referer,
                        &rec.user_agent,
                        &rec.vhost,
                    ] {
                        assert!(borrows_from(field, &line));
                        assert_ne!(field.as_deref(), Some(&b"-"[..]));
                        assert_ne!(field.as_deref(), Some(&b""[..]));
                    }
                }
                Err(_) => failed[i] += 1,
            }
        }
        let line = random_line(&mut rng);
        let _ = (parse_apache_time(&line), parse_rfc3339(&line));
        let _ = (
            parse_apache_time(&mutate(&mut rng, b"17/May/2015:10:05:03 +0000")),
            parse_rfc3339(&mutate(&mut rng, b"2021-03-04T05:06:07.123+01:00")),
        );
    }
    // Both outcomes occur for every parser, so the loop exercised success and failure paths.
    for (i, (ok, failed)) in ok.iter().zip(&failed).enumerate() {
        assert!(
            *ok > 100 && *failed > 100,
            "parser {i}: {ok} ok, {failed} failed"
        );
    }
}
