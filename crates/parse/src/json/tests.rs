use std::borrow::Cow;

use super::*;

/// 2021-03-04T05:06:07Z
const T: i64 = 1_614_834_367;

fn b(s: &str) -> Option<Field<'_>> {
    Some(Cow::Borrowed(s.as_bytes()))
}

fn format(map: JsonFieldMap) -> JsonFormat {
    JsonFormat::new(map).unwrap()
}

/// A mapping with only a time path (RFC 3339 at `t`) plus whatever the test sets.
fn minimal() -> JsonFieldMap {
    JsonFieldMap {
        time: Some("t".into()),
        ..JsonFieldMap::default()
    }
}

const CADDY: &str = r#"{"level":"info","ts":1614834367.5241024,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"198.51.100.23","remote_port":"53412","client_ip":"198.51.100.23","proto":"HTTP/2.0","method":"GET","host":"shop.example.com","uri":"/cart?item=42","headers":{"Accept":["text/html"],"User-Agent":["Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"],"Referer":["https://www.example.org/search?q=shoes"],"Cookie":["session=abc"]},"tls":{"resumed":false,"version":772,"cipher_suite":4865,"proto":"h2","server_name":"shop.example.com"}},"bytes_read":0,"user_id":"","duration":0.002345678,"size":5120,"status":200,"resp_headers":{"Server":["Caddy"],"Content-Type":["text/html; charset=utf-8"]}}"#;

const TRAEFIK: &str = r#"{"ClientAddr":"203.0.113.50:41234","ClientHost":"203.0.113.50","ClientPort":"41234","ClientUsername":"-","DownstreamContentSize":1532,"DownstreamStatus":404,"Duration":3456789,"OriginContentSize":1532,"OriginDuration":3000000,"OriginStatus":404,"Overhead":456789,"RequestAddr":"api.example.net","RequestContentSize":0,"RequestCount":17,"RequestHost":"api.example.net","RequestMethod":"HEAD","RequestPath":"/v1/users/7","RequestPort":"-","RequestProtocol":"HTTP/1.1","RequestScheme":"https","RetryAttempts":0,"RouterName":"api@docker","ServiceAddr":"10.0.0.7:8080","ServiceName":"api@docker","StartLocal":"2021-03-04T06:06:07.123456789+01:00","StartUTC":"2021-03-04T05:06:07.123456789Z","entryPointName":"websecure","level":"info","msg":"","request_Referer":"-","request_User-Agent":"python-requests/2.31.0","request_X-Forwarded-For":"198.51.100.1, 10.0.0.2","time":"2021-03-04T06:06:08+01:00"}"#;

const NGINX: &str = r#"{"time_iso8601":"2021-03-04T06:06:07+01:00","remote_addr":"192.0.2.44","http_x_forwarded_for":"","request_method":"POST","status":"201","body_bytes_sent":"87","http_referer":"https://app.example.com/form","http_user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1","host":"app.example.com","request_time":"0.015"}"#;

#[test]
fn caddy_preset() {
    let rec = format(JsonFieldMap::caddy())
        .parse(CADDY.as_bytes())
        .unwrap();
    assert_eq!(
        rec,
        Record {
            remote_host: b("198.51.100.23"),
            forwarded_for: None,
            time: Some(T),
            method: b("GET"),
            status: Some(200),
            bytes: Some(5120),
            referer: b("https://www.example.org/search?q=shoes"),
            user_agent: b("Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"),
            vhost: b("shop.example.com"),
            duration_us: Some(2346),
        }
    );
}

#[test]
fn traefik_preset() {
    let rec = format(JsonFieldMap::traefik())
        .parse(TRAEFIK.as_bytes())
        .unwrap();
    assert_eq!(
        rec,
        Record {
            remote_host: b("203.0.113.50"),
            forwarded_for: b("198.51.100.1, 10.0.0.2"),
            time: Some(T),
            method: b("HEAD"),
            status: Some(404),
            bytes: Some(1532),
            referer: None,
            user_agent: b("python-requests/2.31.0"),
            vhost: b("api.example.net"),
            duration_us: Some(3457),
        }
    );
}

#[test]
fn nginx_preset() {
    let rec = format(JsonFieldMap::nginx())
        .parse(NGINX.as_bytes())
        .unwrap();
    assert_eq!(
        rec,
        Record {
            remote_host: b("192.0.2.44"),
            forwarded_for: None,
            time: Some(T),
            method: b("POST"),
            status: Some(201),
            bytes: Some(87),
            referer: b("https://app.example.com/form"),
            user_agent: b("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1"),
            vhost: b("app.example.com"),
            duration_us: Some(15_000),
        }
    );
}

#[test]
fn nginx_doc_line_matches_the_preset_keys() {
    // The `log_format` in the preset's docs must name exactly the preset's keys.
    let src = include_str!("../json.rs");
    let line = src
        .lines()
        .find(|l| l.contains("log_format logcensus escape=json"))
        .unwrap();
    let map = JsonFieldMap::nginx();
    for (_, path, _) in map.paths() {
        let path = path.unwrap();
        assert!(line.contains(&format!(r#""{path}":"$"#)), "{path}");
    }
    assert_eq!(line.matches("\":\"$").count(), 10);
}

#[test]
fn escaped_strings_are_unescaped_and_owned() {
    let mut map = minimal();
    map.user_agent = Some("ua".into());
    map.referer = Some("ref".into());
    let line = br#"{"t":"2021-03-04T05:06:07Z","ua":"Mozilla \"x\" caf\u00e9\\","ref":"https://r.example/"}"#;
    let rec = format(map).parse(line).unwrap();
    assert_eq!(
        rec.user_agent,
        Some(Cow::Owned("Mozilla \"x\" caf\u{e9}\\".as_bytes().to_vec()))
    );
    assert!(matches!(rec.user_agent, Some(Cow::Owned(_))));
    assert!(matches!(
        rec.referer,
        Some(Cow::Borrowed(b"https://r.example/"))
    ));
}

#[test]
fn invalid_utf8_in_a_mapped_string_is_kept() {
    let mut map = minimal();
    map.user_agent = Some("ua".into());
    let mut line = br#"{"t":"2021-03-04T05:06:07Z","ua":"Mozilla "#.to_vec();
    line.extend_from_slice(b"\xff\xfe");
    line.extend_from_slice(br#"","other":"skipped "#);
    line.extend_from_slice(b"\xc3\x28");
    line.extend_from_slice(br#""}"#);
    let rec = format(map).parse(&line).unwrap();
    assert_eq!(rec.user_agent.as_deref(), Some(&b"Mozilla \xff\xfe"[..]));
}

#[test]
fn paths_index_arrays_and_text_arrays_take_the_first_element() {
    let mut map = minimal();
    map.user_agent = Some("h.ua".into());
    map.referer = Some("list.1.r".into());
    map.vhost = Some("hosts".into());
    let line = br#"{"list":[{"r":"no"},{"r":"yes"},{"r":"no"}],"h":{"ua":["first","second"]},"hosts":[],"t":"2021-03-04T05:06:07Z"}"#;
    let rec = format(map).parse(line).unwrap();
    assert_eq!(rec.referer, b("yes"));
    assert_eq!(rec.user_agent, b("first"));
    assert_eq!(rec.vhost, None);
}

#[test]
fn numeric_strings_and_absent_values() {
    let mut map = minimal();
    map.status = Some("s".into());
    map.bytes = Some("b".into());
    map.duration = Some("d".into());
    map.method = Some("m".into());
    map.remote_host = Some("h".into());
    map.duration_unit = DurationUnit::Millis;
    let f = format(map);
    let rec = f
        .parse(br#"{"t":"2021-03-04T05:06:07Z","s":"503","b":"0","d":"1.25","m":"get","h":"-"}"#)
        .unwrap();
    assert_eq!(
        (
            rec.status,
            rec.bytes,
            rec.duration_us,
            rec.method,
            rec.remote_host
        ),
        (Some(503), Some(0), Some(1250), None, None)
    );
    let rec = f
        .parse(br#"{"t":"2021-03-04T05:06:07Z","s":null,"b":"-","d":"n/a","m":"","h":null}"#)
        .unwrap();
    assert_eq!(
        (
            rec.status,
            rec.bytes,
            rec.duration_us,
            rec.method,
            rec.remote_host
        ),
        (None, Some(0), None, None, None)
    );
    let rec = f
        .parse(br#"{"t":"2021-03-04T05:06:07Z","s":200.0,"b":512.0,"d":2,"m":"PUT"}"#)
        .unwrap();
    assert_eq!(
        (rec.status, rec.bytes, rec.duration_us, rec.method),
        (Some(200), Some(512), Some(2000), b("PUT"))
    );
}

#[test]
fn time_formats() {
    let time = |time_format: JsonTime, value: &str| {
        let map = JsonFieldMap {
            time_format,
            ..minimal()
        };
        format(map)
            .parse(format!(r#"{{"t":{value}}}"#).as_bytes())
            .map(|r| r.time.unwrap())
    };
    assert_eq!(
        time(JsonTime::Rfc3339, r#""2021-03-04T05:06:07.5Z""#),
        Ok(T)
    );
    assert_eq!(time(JsonTime::UnixSeconds, "1614834367"), Ok(T));
    assert_eq!(time(JsonTime::UnixSeconds, "1614834367.999"), Ok(T));
    assert_eq!(time(JsonTime::UnixSeconds, r#""1614834367.25""#), Ok(T));
    assert_eq!(time(JsonTime::UnixSeconds, "-1"), Ok(-1));
    assert_eq!(time(JsonTime::UnixMillis, "1614834367999"), Ok(T));
    assert_eq!(time(JsonTime::UnixMillis, "1614834367000.5"), Ok(T));
    assert_eq!(time(JsonTime::UnixMillis, r#""1614834367123""#), Ok(T));
    assert_eq!(
        time(JsonTime::Apache, r#""04/Mar/2021:06:06:07 +0100""#),
        Ok(T)
    );
    assert_eq!(
        time(JsonTime::Apache, r#""[04/Mar/2021:05:06:07 +0000]""#),
        Ok(T)
    );

    assert_eq!(
        time(JsonTime::Rfc3339, "1614834367"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::Rfc3339, r#""2021-03-04""#),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::Apache, "1614834367"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, r#""yesterday""#),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, "1e300"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, "true"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, "[1614834367]"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, r#"{"s":1}"#),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        time(JsonTime::UnixSeconds, "null"),
        Err(ParseError::MissingField)
    );
    assert_eq!(
        time(JsonTime::Rfc3339, r#""""#),
        Err(ParseError::MissingField)
    );
    assert_eq!(
        time(JsonTime::Rfc3339, r#""-""#),
        Err(ParseError::MissingField)
    );
}

#[test]
fn parse_errors() {
    let mut map = minimal();
    map.status = Some("s".into());
    map.bytes = Some("b".into());
    map.user_agent = Some("ua".into());
    let f = format(map);
    let err = |line: &str| f.parse(line.as_bytes()).unwrap_err();
    for not_an_object in [
        "",
        "   ",
        "[1,2]",
        r#""2021-03-04T05:06:07Z""#,
        "42",
        "null",
        r#"{"t":"2021-03-04T05:06:07Z""#,
        r#"{"t":"2021-03-04T05:06:07Z"} trailing"#,
        r#"{"t":"2021-03-04T05:06:07Z"}{"t":"x"}"#,
        r#"{"t":"2021-03-04T05:06:07Z",}"#,
        r#"{t:"2021-03-04T05:06:07Z"}"#,
        r#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1"#,
        // A mapped text field holding a number or an object.
        r#"{"t":"2021-03-04T05:06:07Z","ua":42}"#,
        r#"{"t":"2021-03-04T05:06:07Z","ua":{"a":"b"}}"#,
        r#"{"t":"2021-03-04T05:06:07Z","ua":[["nested"]]}"#,
        // Invalid JSON inside a skipped value is still invalid JSON.
        r#"{"t":"2021-03-04T05:06:07Z","x":[1,}"#,
    ] {
        assert_eq!(err(not_an_object), ParseError::Json, "{not_an_object}");
    }
    assert_eq!(err("{}"), ParseError::MissingField);
    assert_eq!(
        err(r#"{"time":"2021-03-04T05:06:07Z"}"#),
        ParseError::MissingField
    );
    assert_eq!(
        err(r#"{"t":"04/Mar/2021:05:06:07 +0000"}"#),
        ParseError::Timestamp
    );
    for bad_status in [r#""abc""#, "1000", "99", r#""20""#, "-200", "true", "200.5"] {
        assert_eq!(
            err(&format!(
                r#"{{"t":"2021-03-04T05:06:07Z","s":{bad_status}}}"#
            )),
            ParseError::Status,
            "{bad_status}"
        );
    }
    for bad_bytes in ["-5", r#""12k""#, "1.5", r#""1.0""#, "false", "[1]"] {
        assert_eq!(
            err(&format!(
                r#"{{"t":"2021-03-04T05:06:07Z","b":{bad_bytes}}}"#
            )),
            ParseError::Bytes,
            "{bad_bytes}"
        );
    }
    // A bad value is reported even when the time is missing; invalid JSON wins over both.
    assert_eq!(err(r#"{"s":"abc"}"#), ParseError::Status);
    assert_eq!(err(r#"{"s":"abc","#), ParseError::Json);
    // Trailing whitespace and a carriage return are fine.
    assert!(f.parse(b"{\"t\":\"2021-03-04T05:06:07Z\"} \r").is_ok());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let mut line = String::from(r#"{"t":"2021-03-04T05:06:07Z","x":"#);
    line.push_str(&"[".repeat(100_000));
    assert_eq!(
        format(minimal()).parse(line.as_bytes()),
        Err(ParseError::Json)
    );
    let mut map = minimal();
    map.user_agent = Some("a.a.a.a".into());
    let mut line = String::from(r#"{"t":"2021-03-04T05:06:07Z","a":"#);
    line.push_str(&r#"{"a":"#.repeat(100_000));
    assert_eq!(format(map).parse(line.as_bytes()), Err(ParseError::Json));
}

#[test]
fn format_errors() {
    assert_eq!(
        JsonFormat::new(JsonFieldMap::default()),
        Err(FormatError::JsonNoTime)
    );
    let mut map = JsonFieldMap::caddy();
    map.time = Some(String::new());
    assert_eq!(JsonFormat::new(map), Err(FormatError::JsonNoTime));
    assert_eq!(
        FormatError::JsonNoTime.to_string(),
        "JSON field mapping has no `time` field"
    );

    let mut map = minimal();
    map.user_agent = Some("request..ua".into());
    let e = JsonFormat::new(map).unwrap_err();
    assert_eq!(
        e,
        FormatError::JsonPath {
            field: "user_agent",
            path: "request..ua".into(),
            reason: "a path segment is empty".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "JSON field `user_agent` has an unusable path `request..ua`: a path segment is empty"
    );

    let mut map = minimal();
    map.vhost = Some(String::new());
    assert!(matches!(
        JsonFormat::new(map),
        Err(FormatError::JsonPath { field: "vhost", .. })
    ));

    let mut map = minimal();
    map.referer = Some("h".into());
    map.user_agent = Some("h".into());
    assert_eq!(
        JsonFormat::new(map).unwrap_err().to_string(),
        "JSON field `user_agent` has an unusable path `h`: it overlaps the path of `referer`; one value cannot fill two fields"
    );

    let mut map = minimal();
    map.status = Some("t.code".into());
    assert_eq!(
        JsonFormat::new(map).unwrap_err().to_string(),
        "JSON field `status` has an unusable path `t.code`: it overlaps the path of `time`; one value cannot fill two fields"
    );
    // A shared prefix that is not a whole segment is not an overlap.
    let mut map = minimal();
    map.status = Some("tt".into());
    assert!(JsonFormat::new(map).is_ok());
}

#[test]
fn field_map_deserializes_and_rejects_unknown_keys() {
    let map: JsonFieldMap = serde_json::from_str(
        r#"{"time":"ts","time_format":"unix_millis","user_agent":"h.ua.0","duration":"d","duration_unit":"nanos"}"#,
    )
    .unwrap();
    assert_eq!(
        map,
        JsonFieldMap {
            time: Some("ts".into()),
            time_format: JsonTime::UnixMillis,
            user_agent: Some("h.ua.0".into()),
            duration: Some("d".into()),
            duration_unit: DurationUnit::Nanos,
            ..JsonFieldMap::default()
        }
    );
    let defaults: JsonFieldMap = serde_json::from_str(r#"{"time":"ts"}"#).unwrap();
    assert_eq!(
        (defaults.time_format, defaults.duration_unit),
        (JsonTime::Rfc3339, DurationUnit::Seconds)
    );
    let typo = serde_json::from_str::<JsonFieldMap>(r#"{"time":"ts","user_agnet":"ua"}"#)
        .unwrap_err()
        .to_string();
    assert!(typo.starts_with("unknown field `user_agnet`"), "{typo}");
    let bad_unit = serde_json::from_str::<JsonFieldMap>(r#"{"time":"ts","time_format":"iso"}"#)
        .unwrap_err()
        .to_string();
    assert!(bad_unit.starts_with("unknown variant `iso`"), "{bad_unit}");
}

/// The fast path ([`fast::parse`]) against the walk on generated lines: every line it answers
/// for gets the walk's answer, and the usual lines (the NGINX and TRAEFIK samples, flat objects
/// of plain strings and integers) are answered by it.
#[test]
fn the_fast_path_answers_as_the_walk_does() {
    let formats = [
        format(JsonFieldMap::nginx()),
        format(JsonFieldMap::traefik()),
        format(JsonFieldMap {
            time_format: JsonTime::UnixSeconds,
            status: Some("status".into()),
            bytes: Some("bytes".into()),
            user_agent: Some("ua".into()),
            ..minimal()
        }),
    ];
    assert!(formats.iter().all(|f| f.flat));
    assert!(!format(JsonFieldMap::caddy()).flat);
    for (f, sample) in formats.iter().zip([NGINX, TRAEFIK]) {
        let fast = fast::parse(f, sample.as_bytes()).expect("the usual line takes the fast path");
        assert_eq!(fast, f.parse_walking(sample.as_bytes()));
        assert!(fast.is_ok());
    }

    let keys = [
        "time_iso8601",
        "remote_addr",
        "status",
        "body_bytes_sent",
        "http_referer",
        "http_user_agent",
        "request_method",
        "host",
        "request_time",
        "http_x_forwarded_for",
        "StartUTC",
        "DownstreamStatus",
        "t",
        "bytes",
        "ua",
        "request",
        "remote_user",
        "",
    ];
    let values = [
        r#""2026-05-17T00:00:00+00:00""#,
        r#""2021-03-04T06:06:07+01:00""#,
        r#""2026-13-01T00:00:00Z""#,
        r#""87.150.126.34""#,
        r#""""#,
        r#""-""#,
        r#""GET""#,
        r#""get""#,
        r#""404""#,
        r#""4o4""#,
        r#""12.5""#,
        r#""0.015""#,
        r#""1614834367""#,
        r#""abc""#,
        "\"\u{e9}t\u{e9}\"",
        r#""Mozilla/5.0 (X)""#,
        r#""a\"b""#,
        r#""\u00e9""#,
        "\"a\tb\"",
        "\"\u{1}\"",
        "0",
        "7",
        "200",
        "99",
        "1000",
        "01",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "2E-2",
        "18446744073709551615",
        "99999999999999999999",
        "9999999999999999999",
        "1614834367",
        "1.0",
        "true",
        "false",
        "null",
        "{}",
        "[]",
        r#"["x"]"#,
        r#"{"a":1}"#,
        r#""unterminated"#,
        "tru",
        "-",
        ".5",
        "1.",
        "1e",
        "nul",
        "+1",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (mut fast_lines, mut lines) = (0, 0);
    for _ in 0..60_000 {
        let f = &formats[next(formats.len())];
        let space = |next: &mut dyn FnMut(usize) -> usize| match next(12) {
            0 => " ",
            1 => "  ",
            2 => "\t",
            _ => "",
        };
        let mut line = String::from(space(&mut next));
        if next(40) != 0 {
            line.push('{');
        }
        let members = next(8);
        for m in 0..members {
            if m > 0 {
                line.push_str(space(&mut next));
                line.push_str(if next(60) == 0 { "" } else { "," });
            }
            line.push_str(space(&mut next));
            line.push('"');
            line.push_str(keys[next(keys.len())]);
            line.push('"');
            line.push_str(space(&mut next));
            line.push_str(if next(60) == 0 { "" } else { ":" });
            line.push_str(space(&mut next));
            // Mostly the kind of value the usual line has: a plain string or integer.
            let v = if next(3) == 0 {
                values[next(values.len())]
            } else {
                values[next(16)]
            };
            line.push_str(v);
        }
        if next(30) == 0 {
            line.push(',');
        }
        line.push_str(space(&mut next));
        if next(40) != 0 {
            line.push('}');
        }
        match next(30) {
            0 => line.push_str(" x"),
            1 => line.push('\r'),
            2 => line.push('}'),
            _ => line.push_str(space(&mut next)),
        }
        let mut bytes = line.into_bytes();
        if next(50) == 0 {
            let at = next(bytes.len() + 1);
            bytes.insert(at, 0xff);
        }
        lines += 1;
        if let Some(fast) = fast::parse(f, &bytes) {
            fast_lines += 1;
            assert_eq!(
                fast,
                f.parse_walking(&bytes),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(f.parse(&bytes), f.parse_walking(&bytes));
    }
    // Both paths are exercised (the fast one on about a fifth of these lines).
    assert!(
        fast_lines > lines / 8 && fast_lines < lines,
        "{fast_lines} of {lines}"
    );
}

/// The address guessed before parsing is the parse's own bytes on the usual line, and on lines
/// where it is not (the key twice, escaped, nested, in a value), the parse tells them apart.
#[test]
fn the_guessed_address_is_the_parsed_one_or_visibly_not() {
    let f = format(JsonFieldMap::nginx());
    let parsed_host = |line: &'static str| match f.parse(line.as_bytes()).unwrap().remote_host {
        Some(Cow::Borrowed(h)) => Some((h.as_ptr(), h.len())),
        _ => None,
    };
    let guess = |line: &'static str| {
        f.guess_remote_host(line.as_bytes())
            .map(|g| (g.as_ptr(), g.len()))
    };
    assert_eq!(
        f.guess_remote_host(NGINX.as_bytes()),
        Some(&b"192.0.2.44"[..])
    );
    assert_eq!(guess(NGINX), parsed_host(NGINX));
    let t = r#""time_iso8601":"2021-03-04T06:06:07+01:00""#;
    for (line, same) in [
        // The key twice: the parse keeps the last value, the guess the first.
        (
            format!(r#"{{{t},"remote_addr":"192.0.2.1","remote_addr":"192.0.2.2"}}"#),
            false,
        ),
        // The key inside another key (escaped quotes) and then the real one.
        (
            format!(r#"{{{t},"x\"remote_addr":"192.0.2.1","remote_addr":"192.0.2.2"}}"#),
            false,
        ),
        // Nested: the mapping reads only the top level.
        (
            format!(r#"{{{t},"o":{{"remote_addr":"192.0.2.1"}}}}"#),
            false,
        ),
        // A space after the colon: no guess.
        (format!(r#"{{{t},"remote_addr": "192.0.2.1"}}"#), false),
        (format!(r#"{{"remote_addr":"2001:db8::1",{t}}}"#), true),
    ] {
        let line: &'static str = Box::leak(line.into_boxed_str());
        let (g, p) = (guess(line), parsed_host(line));
        assert_eq!(g.is_some() && g == p, same, "{line}");
    }
    // Other formats make no guesses.
    assert_eq!(
        format(JsonFieldMap::caddy()).guess_remote_host(CADDY.as_bytes()),
        None
    );
    let mut no_address = JsonFieldMap::nginx();
    no_address.remote_host = None;
    assert_eq!(format(no_address).guess_remote_host(NGINX.as_bytes()), None);
}
