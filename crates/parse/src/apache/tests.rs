use std::borrow::Cow;

use super::*;

/// 17/May/2015:10:05:03 +0000
const T_2015: i64 = 1_431_857_103;
/// 10/Oct/2000:13:55:36 -0700
const T_2000: i64 = 971_211_336;

fn fmt(s: &str) -> ApacheFormat {
    ApacheFormat::compile(s).unwrap()
}

fn b(s: &str) -> Option<Field<'_>> {
    Some(Cow::Borrowed(s.as_bytes()))
}

#[test]
fn presets_are_apache_formats() {
    assert_eq!(COMMON, r#"%h %l %u %t "%r" %>s %b"#);
    assert_eq!(
        COMBINED,
        format!(r#"{COMMON} "%{{Referer}}i" "%{{User-Agent}}i""#)
    );
    assert_eq!(
        VCOMBINED,
        r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i""#
    );
}

#[test]
fn common_line() {
    let line =
        br#"192.0.2.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
    assert_eq!(
        fmt(COMMON).parse(line).unwrap(),
        Record {
            remote_host: b("192.0.2.7"),
            time: Some(T_2000),
            method: b("GET"),
            status: Some(200),
            bytes: Some(2326),
            ..Record::default()
        }
    );
}

#[test]
fn combined_line() {
    let line = br#"2001:db8::17 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/kibana-search.png HTTP/1.1" 200 203023 "http://semicomplete.com/presentations/logstash-monitorama-2013/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.77 Safari/537.36""#;
    assert_eq!(
        fmt(COMBINED).parse(line).unwrap(),
        Record {
            remote_host: b("2001:db8::17"),
            time: Some(T_2015),
            method: b("GET"),
            status: Some(200),
            bytes: Some(203_023),
            referer: b("http://semicomplete.com/presentations/logstash-monitorama-2013/"),
            user_agent: b("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.77 Safari/537.36"),
            ..Record::default()
        }
    );
}

#[test]
fn vcombined_line() {
    let line = br#"www.example.org:443 198.51.100.4 - - [17/May/2015:10:05:03 +0000] "POST /login HTTP/2.0" 302 - "-" "curl/8.5.0""#;
    assert_eq!(
        fmt(VCOMBINED).parse(line).unwrap(),
        Record {
            vhost: b("www.example.org"),
            remote_host: b("198.51.100.4"),
            time: Some(T_2015),
            method: b("POST"),
            status: Some(302),
            bytes: Some(0),
            user_agent: b("curl/8.5.0"),
            ..Record::default()
        }
    );
}

#[test]
fn custom_format_with_forwarded_for_vhost_and_micros() {
    let f = fmt(r#"%v %h "%{X-Forwarded-For}i" %t "%r" %>s %B %D"#);
    let line = br#"shop.example.com 10.0.0.2 "203.0.113.9, 10.0.0.1" [17/May/2015:10:05:03 +0000] "DELETE /cart/3 HTTP/1.1" 204 0 1834"#;
    assert_eq!(
        f.parse(line).unwrap(),
        Record {
            vhost: b("shop.example.com"),
            remote_host: b("10.0.0.2"),
            forwarded_for: b("203.0.113.9, 10.0.0.1"),
            time: Some(T_2015),
            method: b("DELETE"),
            status: Some(204),
            bytes: Some(0),
            duration_us: Some(1834),
            ..Record::default()
        }
    );
    // Header names are case-insensitive, and `-` is an absent header.
    let f = fmt(r#"%h "%{x-forwarded-for}i" %t %>s %T"#);
    let rec = f
        .parse(br#"10.0.0.2 "-" [17/May/2015:10:05:03 +0000] 200 3"#)
        .unwrap();
    assert_eq!(rec.forwarded_for, None);
    assert_eq!(rec.duration_us, Some(3_000_000));
}

#[test]
fn duration_units() {
    let line = br#"[17/May/2015:10:05:03 +0000] 12"#;
    let cases = [
        ("%t %T", 12_000_000),
        ("%t %{s}T", 12_000_000),
        ("%t %{ms}T", 12_000),
        ("%t %{us}T", 12),
        ("%t %D", 12),
    ];
    for (format, us) in cases {
        assert_eq!(
            fmt(format).parse(line).unwrap().duration_us,
            Some(us),
            "{format}"
        );
    }
    // A duration that is not a number is absent, not an error.
    let rec = fmt("%t %D")
        .parse(br#"[17/May/2015:10:05:03 +0000] -"#)
        .unwrap();
    assert_eq!(rec.duration_us, None);
}

#[test]
fn time_directives() {
    let cases: [(&str, &[u8]); 7] = [
        ("%{sec}t %h", b"1431857103 h"),
        ("%{msec}t %h", b"1431857103999 h"),
        ("%{usec}t %h", b"1431857103999999 h"),
        ("%{begin:sec}t %h", b"1431857103 h"),
        ("%{end:msec}t %h", b"1431857103000 h"),
        (
            "%{%d/%b/%Y:%H:%M:%S %z}t %h",
            b"17/May/2015:12:05:03 +0200 h",
        ),
        (
            "[%{begin:%d/%b/%Y:%H:%M:%S %z}t] %h",
            b"[17/May/2015:10:05:03 +0000] h",
        ),
    ];
    for (format, line) in cases {
        let rec = fmt(format).parse(line).unwrap();
        assert_eq!(rec.time, Some(T_2015), "{format}");
        assert_eq!(rec.remote_host, b("h"), "{format}");
    }
    let rec = fmt("%{[%d/%b/%Y:%H:%M:%S %z]}t %h")
        .parse(b"[17/May/2015:10:05:03 +0000] h")
        .unwrap();
    assert_eq!(rec.time, Some(T_2015));
}

#[test]
fn modifiers_and_skipped_directives() {
    let f = fmt(
        r#"%a %!200,304u %<s %>s %400,501{User-agent}i %{c}a %{Cookie}i %{Content-Type}o %{UNIQUE_ID}e %{SSL_PROTOCOL}x %{X}C %{n}n %{X-Req}^ti %^FB "%m %U%q %H" %f %I %S %p %{remote}p %P %{tid}P %k %L %R %X %A %V %t"#,
    );
    let line = br#"192.0.2.1 MARKERUSER 301 200 Agent/1.0 192.0.2.2 c=1 text/html id TLSv1.3 x n r 12 "PUT /p?q=1 HTTP/1.1" /f 10 20 443 443 77 77 0 L R + 10.0.0.1 v.example [17/May/2015:10:05:03 +0000]"#;
    assert_eq!(
        f.parse(line).unwrap(),
        Record {
            // `%{c}a` comes later in the format and wins.
            remote_host: b("192.0.2.2"),
            user_agent: b("Agent/1.0"),
            // `%>s` comes after `%<s` and wins.
            status: Some(200),
            method: b("PUT"),
            vhost: b("v.example"),
            time: Some(T_2015),
            ..Record::default()
        }
    );
    // Adjacent directives that are both dropped merge; others may not touch.
    assert_eq!(
        ApacheFormat::compile("%t %U%q%H").unwrap(),
        ApacheFormat::compile("%t %U").unwrap()
    );
    assert_eq!(
        ApacheFormat::compile("%t %U%m"),
        Err(FormatError::AdjacentDirectives { offset: 5 })
    );
}

#[test]
fn percent_literal_and_config_escapes() {
    let f = fmt("%h %% %t");
    let rec = f.parse(b"h1 % [17/May/2015:10:05:03 +0000]").unwrap();
    assert_eq!((rec.remote_host, rec.time), (b("h1"), Some(T_2015)));
    assert_eq!(
        f.parse(b"h1 x [17/May/2015:10:05:03 +0000]"),
        Err(ParseError::Layout)
    );

    // Pasted from httpd.conf, with `\"` around quoted fields and a tab.
    let f = fmt(r#"%h\t%t \"%r\" %>s"#);
    let rec = f
        .parse(b"h1\t[17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200")
        .unwrap();
    assert_eq!((rec.method, rec.status), (b("GET"), Some(200)));
    assert_eq!(fmt(r#"%h \"%t\""#), fmt(r#"%h "%t""#));
}

#[test]
fn request_line_yields_only_a_valid_method() {
    let f = fmt(r#"%t "%r" %>s"#);
    let method = |req: &str| {
        let line = format!(r#"[17/May/2015:10:05:03 +0000] "{req}" 400"#);
        f.parse(line.as_bytes())
            .unwrap()
            .method
            .map(|m| String::from_utf8(m.into_owned()).unwrap())
    };
    assert_eq!(method("GET / HTTP/1.1").as_deref(), Some("GET"));
    assert_eq!(method("OPTIONS * HTTP/1.1").as_deref(), Some("OPTIONS"));
    assert_eq!(method("PROPFIND").as_deref(), Some("PROPFIND"));
    assert_eq!(method("-"), None);
    assert_eq!(method(""), None);
    assert_eq!(method("get / HTTP/1.1"), None);
    assert_eq!(
        method(r"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        None
    );
    assert_eq!(method("ABCDEFGHIJKLMNOPQ / HTTP/1.1"), None);
    // `%m` follows the same rule.
    let f = fmt("%t %m");
    assert_eq!(
        f.parse(b"[17/May/2015:10:05:03 +0000] PATCH")
            .unwrap()
            .method,
        b("PATCH")
    );
    assert_eq!(
        f.parse(b"[17/May/2015:10:05:03 +0000] patch")
            .unwrap()
            .method,
        None
    );
}

#[test]
fn dash_means_absent() {
    let f = fmt(VCOMBINED);
    let rec = f
        .parse(br#"-:80 - - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 - "-" "-""#)
        .unwrap();
    assert_eq!(
        rec,
        Record {
            time: Some(T_2015),
            method: b("GET"),
            status: Some(200),
            bytes: Some(0),
            ..Record::default()
        }
    );
    // An empty quoted value is absent too.
    let rec = fmt(COMBINED)
        .parse(br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "" """#)
        .unwrap();
    assert_eq!((rec.referer, rec.user_agent), (None, None));
}

const HEAD: &str = r#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512 "https://www.example.org/""#;

fn ua_of(rest: &str) -> Result<Option<String>, ParseError> {
    let line = format!("{HEAD} {rest}");
    fmt(COMBINED).parse(line.as_bytes()).map(|r| {
        r.user_agent
            .map(|u| String::from_utf8(u.into_owned()).unwrap())
    })
}

#[test]
fn user_agent_with_escaped_quote_is_kept_raw() {
    assert_eq!(
        ua_of(r#""Mozilla/5.0 \"evil\" (X11)""#),
        Ok(Some(r#"Mozilla/5.0 \"evil\" (X11)"#.into()))
    );
    // An escaped quote followed by the closing literal's bytes is still not the end.
    assert_eq!(ua_of(r#""a\" b" "-""#), Ok(Some(r#"a\" b"#.into())));
    // In a quoted field that is not the last, an escaped quote before the next literal.
    let line = br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "x\" "y" "UA/1""#;
    let rec = fmt(COMBINED).parse(line).unwrap();
    assert_eq!(rec.referer, b(r#"x\" "y"#));
    assert_eq!(rec.user_agent, b("UA/1"));
    // An escaped backslash right before the closing quote: the quote does end the value.
    assert_eq!(ua_of(r#""agent\\""#), Ok(Some(r#"agent\\"#.into())));
}

#[test]
fn user_agent_with_unescaped_quotes() {
    assert_eq!(
        ua_of(r#""Mozilla/5.0 "quoted" thing""#),
        Ok(Some(r#"Mozilla/5.0 "quoted" thing"#.into()))
    );
    assert_eq!(
        ua_of(r#""Mozilla/5.0 "odd thing""#),
        Ok(Some(r#"Mozilla/5.0 "odd thing"#.into()))
    );
    // With a field appended after it, as nginx's `main` format does.
    assert_eq!(
        ua_of(r#""Mozilla/5.0 "quoted" thing" "203.0.113.9""#),
        Ok(Some(r#"Mozilla/5.0 "quoted" thing"#.into()))
    );
}

#[test]
fn appended_fields_and_carriage_return_are_accepted() {
    assert_eq!(ua_of(r#""curl/8.5.0" "-""#), Ok(Some("curl/8.5.0".into())));
    assert_eq!(
        ua_of(r#""curl/8.5.0" 0.005 -"#),
        Ok(Some("curl/8.5.0".into()))
    );
    assert_eq!(ua_of("\"curl/8.5.0\"\r"), Ok(Some("curl/8.5.0".into())));
    // A format ending in a field takes it up to the first space.
    let f = fmt("%t %>s %b");
    let rec = f
        .parse(b"[17/May/2015:10:05:03 +0000] 200 77 extra\r")
        .unwrap();
    assert_eq!(rec.bytes, Some(77));
}

#[test]
fn truncated_lines_are_layout_errors() {
    // Cut mid-User-Agent, as a line-length limit or a crash leaves it.
    assert_eq!(
        ua_of(r#""Mozilla/5.0 (Windows NT 10.0; Win64; x64) Apple"#),
        Err(ParseError::Layout)
    );
    assert_eq!(ua_of(r#""Mozilla/5.0 "compat"#), Err(ParseError::Layout));
    // The only quote left is escaped, so it does not close the value.
    assert_eq!(ua_of(r#""Mozilla/5.0 \""#), Err(ParseError::Layout));
    let full = format!(r#"{HEAD} "curl/8.5.0""#);
    let f = fmt(COMBINED);
    assert!(f.parse(full.as_bytes()).is_ok());
    for cut in 0..full.len() {
        assert_eq!(
            f.parse(&full.as_bytes()[..cut]),
            Err(ParseError::Layout),
            "cut at {cut}: {}",
            &full[..cut]
        );
    }
}

#[test]
fn value_errors() {
    let f = fmt(COMMON);
    let line = |t: &str, s: &str, b: &str| format!(r#"h - - [{t}] "GET / HTTP/1.1" {s} {b}"#);
    let ok = "17/May/2015:10:05:03 +0000";
    assert!(f.parse(line(ok, "200", "1").as_bytes()).is_ok());
    assert_eq!(
        f.parse(line("32/Jan/2015:10:05:03 +0000", "200", "1").as_bytes()),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        f.parse(line("17/Foo/2015:10:05:03 +0000", "200", "1").as_bytes()),
        Err(ParseError::Timestamp)
    );
    assert_eq!(
        f.parse(line(ok, "2x0", "1").as_bytes()),
        Err(ParseError::Status)
    );
    assert_eq!(
        f.parse(line(ok, "20", "1").as_bytes()),
        Err(ParseError::Status)
    );
    assert_eq!(
        f.parse(line(ok, "-", "1").as_bytes()),
        Err(ParseError::Status)
    );
    assert_eq!(
        f.parse(line(ok, "200", "12k").as_bytes()),
        Err(ParseError::Bytes)
    );
    assert_eq!(
        f.parse(line(ok, "200", "").as_bytes()),
        Err(ParseError::Bytes)
    );
    assert_eq!(
        f.parse(line(ok, "200", "99999999999999999999").as_bytes()),
        Err(ParseError::Bytes)
    );
    assert_eq!(
        fmt("%{sec}t %h").parse(b"14318x7103 h"),
        Err(ParseError::Timestamp)
    );
    // The first bad value is reported.
    assert_eq!(
        f.parse(line(ok, "2x0", "12k").as_bytes()),
        Err(ParseError::Status)
    );
}

#[test]
fn layout_errors() {
    let f = fmt(COMMON);
    for line in [
        &br#""#[..],
        br#"h - - 17/May/2015:10:05:03 +0000 "GET / HTTP/1.1" 200 1"#,
        br#"h - - [17/May/2015:10:05:03 +0000 "GET / HTTP/1.1" 200 1"#,
        br#"h - - [17/May/2015:10:05:03 +0000] GET / HTTP/1.1 200 1"#,
        br#"h - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1"#,
        br#"{"time":"2021-03-04T05:06:07Z"}"#,
    ] {
        assert_eq!(
            f.parse(line),
            Err(ParseError::Layout),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // A layout error wins over a bad value seen before it.
    assert_eq!(
        f.parse(br#"h - - [32/Jan/2015:10:05:03 +0000] "GET / HTTP/1.1"#),
        Err(ParseError::Layout)
    );
    assert_eq!(
        fmt("%{%d/%b/%Y:%H:%M:%S %z}t %h").parse(b"17/May/2015:10:05"),
        Err(ParseError::Layout)
    );
}

#[test]
fn format_errors() {
    let err = |s: &str| ApacheFormat::compile(s).unwrap_err();
    assert_eq!(
        err("%h %Z %t"),
        FormatError::UnknownDirective {
            directive: "%Z".into(),
            offset: 3
        }
    );
    assert_eq!(
        err("%t %{%Y-%m-%d}t"),
        FormatError::UnknownDirective {
            directive: "%{%Y-%m-%d}t".into(),
            offset: 3
        }
    );
    assert_eq!(
        err("%t %{min}T"),
        FormatError::UnknownDirective {
            directive: "%{min}T".into(),
            offset: 3
        }
    );
    assert_eq!(
        err("%t %{x}^zz"),
        FormatError::UnknownDirective {
            directive: "%{x}^zz".into(),
            offset: 3
        }
    );
    assert_eq!(
        err("%t %i"),
        FormatError::UnknownDirective {
            directive: "%i".into(),
            offset: 3
        }
    );
    assert_eq!(
        err("%t é%é"),
        FormatError::UnknownDirective {
            directive: "%é".into(),
            offset: 5
        }
    );
    assert_eq!(
        err("%t %>"),
        FormatError::UnknownDirective {
            directive: "%>".into(),
            offset: 3
        }
    );
    assert_eq!(err("%t %{Referer"), FormatError::Unterminated { offset: 3 });
    assert_eq!(
        err("%h %t%>s"),
        FormatError::AdjacentDirectives { offset: 5 }
    );
    assert_eq!(err("%h %l %u \"%r\" %>s %b"), FormatError::NoTime);
    assert_eq!(err("%{msec_frac}t %h"), FormatError::NoTime);
    assert_eq!(err(""), FormatError::NoTime);
}

#[test]
fn format_error_messages() {
    let msg = |s: &str| ApacheFormat::compile(s).unwrap_err().to_string();
    assert_eq!(
        msg("%h %Z %t"),
        "unknown LogFormat directive `%Z` at byte 3"
    );
    assert_eq!(
        msg("%t %{Referer"),
        "LogFormat is unterminated at byte 3: `%{` without `}`"
    );
    assert_eq!(
        msg("%h%t"),
        "LogFormat has two directives with nothing between them at byte 2; logcensus needs a separator to split them"
    );
    assert_eq!(
        msg("%h"),
        "LogFormat has no %t or other time directive; every table is per period, so a time is required"
    );
}

#[test]
fn success_path_borrows_everything() {
    let line = br#"www.example.org:443 198.51.100.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "https://r.example/" "UA/1""#;
    let rec = fmt(VCOMBINED).parse(line).unwrap();
    let fields = [
        &rec.remote_host,
        &rec.method,
        &rec.referer,
        &rec.user_agent,
        &rec.vhost,
    ];
    for field in fields {
        assert!(matches!(field, Some(Cow::Borrowed(_))), "{field:?}");
    }
}

// The fast path for the presets must answer exactly as the step walk, for every input.

/// Lines in the presets' layouts that reach the fast path's special cases.
const TRICKY_COMBINED: &[&[u8]] = &[
    br#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512 "https://www.example.org/" "Mozilla/5.0""#,
    br#"2001:db8::17 - - [17/May/2015:10:05:03 +0000] "GET /a HTTP/1.1" 200 203023 "-" "-""#,
    br#"[2001:db8::1]:443 - - [29/Feb/2016:23:59:60 -1130] "POST /x HTTP/2.0" 500 - "" """#,
    br#"h - alice [31/Dec/9999:23:59:59 +0000] "PROPFIND / HTTP/1.1" 207 0 "r" "ua""#,
    br#"h ident user [01/Jan/0001:00:00:00 -0000] "get / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "ABCDEFGHIJKLMNOPQ / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "ABCDEFGHIJKLMNOP / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "-" 400 0 "-" "-""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "" 400 0 "-" "-""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "\x16\x03\x01\x00" 400 0 "-" "-""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET /a\"b\" HTTP/1.1" 200 1 "r\"x\"" "U\"A\"""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET /a"b" HTTP/1.1" 200 1 "r"x" "y" "U"A" "z""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "Mozilla/5.0 \"evil\" (X11)""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "agent\\""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "agent\""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "a "quoted" b""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "a "odd b""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "curl/8.5.0" "203.0.113.9""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "curl/8.5.0" 0.005 -"#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "curl/8.5.0"	x"#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Apple"#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 18446744073709551615 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 18446744073709551616 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 9999999999999999999 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 00000000000000000001 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 2000 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 20 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 -1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1x "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1"  200 1 "r" "ua""#,
    br#"h  - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#" h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h	x - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000]  "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03  +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000 ] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000]] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:3 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [32/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [29/Feb/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/may/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:24:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +2400] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 *0000] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    br#"h - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 2x0 1x "r" "ua""#,
    br#"h - - [32/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "r" "ua"#,
    br#"h - - [1431857103] "GET / HTTP/1.1" 200 1 "r" "ua""#,
    "h\u{e9} - - [17/May/2015:10:05:03 +0000] \"GET /\u{e9} HTTP/1.1\" 200 1 \"https://b\u{fc}cher.example/\" \"\u{1f600} UA\"".as_bytes(),
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"\xff\xfe\" \"\x00\xc3\"",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\"\r",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\"\r\r",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\r\"",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1\r",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 -\r",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1\r\r",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1\t\"r\" \"ua\"",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 -\t",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 ",
    b"h - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 ",
    b"www.example.org:443 198.51.100.4 - - [17/May/2015:10:05:03 +0000] \"POST /login HTTP/2.0\" 302 - \"-\" \"curl/8.5.0\"",
    b"-:80 - - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 - \"-\" \"-\"",
    b":: - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\"",
    b"a:b:c d - - [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\"",
    b"a-very-long-host-name-that-is-longer-than-thirty-two-bytes.example.org:8443 a-very-long-remote-host-name-over-thirty-two-bytes ident-that-is-also-quite-long-indeed user-name-long-enough-to-leave-the-registers [17/May/2015:10:05:03 +0000] \"GET / HTTP/1.1\" 200 1 \"r\" \"ua\"",
    b"",
    b"-",
    b"\"",
    b" ",
];

/// `parse` (which tries the fast path first for a preset) and the step walk agree, down to
/// where each borrowed field points.
fn assert_same(f: &ApacheFormat, line: &[u8]) {
    let walk = f.parse_steps(line);
    same_borrows(line, &f.parse(line), &walk);
    // With the line's quotes marked, as a reader marks a whole buffer: the line at the start of
    // a word or in its middle, every bit outside the line set (other lines' quotes), and marks
    // that stop short of the line's end (not used).
    for at in [0, 61] {
        let mut bits = vec![u64::MAX; (at + line.len()).div_ceil(64).max(1)];
        for (i, &byte) in line.iter().enumerate() {
            let k = at + i;
            bits[k / 64] &= !(1 << (k % 64));
            bits[k / 64] |= u64::from(byte == b'"') << (k % 64);
        }
        same_borrows(
            line,
            &f.parse_marked(line, QuoteMarks::new(&bits, at)),
            &walk,
        );
        let short = &bits[..(at + line.len()) / 64];
        same_borrows(
            line,
            &f.parse_marked(line, QuoteMarks::new(short, at)),
            &walk,
        );
    }
}

/// Two answers for `line` are equal, down to where each borrowed field points.
fn same_borrows(
    line: &[u8],
    fast: &Result<Record<'_>, ParseError>,
    walk: &Result<Record<'_>, ParseError>,
) {
    assert_eq!(fast, walk, "{:?}", String::from_utf8_lossy(line));
    if let (Ok(a), Ok(b)) = (fast, walk) {
        for (x, y) in [
            (&a.remote_host, &b.remote_host),
            (&a.method, &b.method),
            (&a.referer, &b.referer),
            (&a.user_agent, &b.user_agent),
            (&a.vhost, &b.vhost),
        ] {
            assert_eq!(
                x.as_deref().map(<[u8]>::as_ptr_range),
                y.as_deref().map(<[u8]>::as_ptr_range),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

fn presets() -> [ApacheFormat; 3] {
    let presets = [fmt(COMMON), fmt(COMBINED), fmt(VCOMBINED)];
    assert_eq!(
        presets.each_ref().map(|f| f.preset),
        [
            Some(Preset::Common),
            Some(Preset::Combined),
            Some(Preset::VCombined)
        ]
    );
    presets
}

/// The quote marks of `line` alone.
fn quote_bits(line: &[u8]) -> Vec<u64> {
    let mut bits = vec![0u64; line.len().div_ceil(64)];
    for (k, _) in line.iter().enumerate().filter(|(_, &b)| b == b'"') {
        bits[k / 64] |= 1 << (k % 64);
    }
    bits
}

/// Every line, its prefixes, and each one-byte change of it (replaced by an interesting byte,
/// deleted, or one inserted before it).
fn variants(line: &[u8], mut each: impl FnMut(&[u8])) {
    const BYTES: &[u8] = b" \"\\[]-:/+\t\r0123456789ZaMGE\x00\xff\xc3";
    each(line);
    let mut v = line.to_vec();
    for cut in 0..line.len() {
        each(&line[..cut]);
        v.remove(cut);
        each(&v);
        v.insert(cut, line[cut]);
        for &b in BYTES {
            v[cut] = b;
            each(&v);
            v[cut] = line[cut];
            v.insert(cut, b);
            each(&v);
            v.remove(cut);
        }
    }
    for &b in BYTES {
        v.push(b);
        each(&v);
        v.pop();
    }
}

#[test]
fn fast_path_agrees_with_the_walk_on_tricky_lines() {
    let presets = presets();
    let mut lines: Vec<Vec<u8>> = TRICKY_COMBINED.iter().map(|l| l.to_vec()).collect();
    // The same lines in the layout of the other presets.
    for l in TRICKY_COMBINED {
        lines.push([b"www.example.org:443 ", *l].concat());
    }
    let (mut taken, mut taken_marked) = (0, 0);
    for line in &lines {
        variants(line, |v| {
            for f in &presets {
                assert_same(f, v);
                let preset = f.preset.unwrap();
                taken += usize::from(fast::parse(preset, v, &f.stamps, fast::Search).is_some());
                let bits = quote_bits(v);
                let marks = QuoteMarks::new(&bits, 0);
                let marked = fast::parse(preset, v, &f.stamps, marks);
                taken_marked += usize::from(marked.is_some());
            }
        });
    }
    // The fast path did answer for many of them (not only fall back), marked or not.
    assert!(taken > 10_000, "{taken}");
    assert_eq!(taken_marked, taken);
}

#[test]
fn fast_path_answers_plain_lines() {
    let [common, combined, vcombined] = presets();
    let line = TRICKY_COMBINED[0];
    let vline = [b"www.example.org:443 ", line].concat();
    assert!(fast::parse(Preset::Combined, line, &combined.stamps, fast::Search).is_some());
    assert!(fast::parse(Preset::Common, line, &common.stamps, fast::Search).is_some());
    assert!(fast::parse(Preset::VCombined, &vline, &vcombined.stamps, fast::Search).is_some());
    // Common stops after the byte count.
    let short = br#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512"#;
    assert!(fast::parse(Preset::Common, short, &common.stamps, fast::Search).is_some());
    assert_eq!(
        combined.parse(line).unwrap(),
        Record {
            remote_host: b("192.0.2.7"),
            time: Some(T_2015),
            method: b("GET"),
            status: Some(200),
            bytes: Some(512),
            referer: b("https://www.example.org/"),
            user_agent: b("Mozilla/5.0"),
            ..Record::default()
        }
    );
    // Formats that compile to a preset's steps get its parser; others do not.
    let same = fmt(r#"%a %l %u %t \"%r\" %s %B "%{referer}i" "%{user-agent}i""#);
    assert_eq!(same.preset, Some(Preset::Combined));
    assert_eq!(same, combined);
    assert_eq!(fmt(r#"%h %l %u %t "%r" %>s %b %D"#).preset, None);
    assert_eq!(fmt(r#"%h %l %u %t "%r" %>s %b "%{Referer}i""#).preset, None);
}

#[test]
fn fast_path_agrees_with_the_walk_on_random_lines() {
    let presets = presets();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    const PIECES: &[&[u8]] = &[
        b" ",
        b"\"",
        b"\\",
        b"\\\"",
        b"[",
        b"]",
        b"-",
        b":",
        b"\t",
        b"\r",
        b"200",
        b"1234",
        b"GET",
        b"/p?q=1",
        b"HTTP/1.1",
        b"17/May/2015:10:05:03 +0000",
        b"29/Feb/2016:00:00:00 -0700",
        b"Mozilla/5.0 (X11)",
        b"\xc3\xa9",
        b"\xff",
        b"2001:db8::1",
        b"192.0.2.7",
    ];
    for _ in 0..200_000 {
        let base = TRICKY_COMBINED[next(TRICKY_COMBINED.len())];
        let mut line = base.to_vec();
        for _ in 0..=next(3) {
            let at = next(line.len() + 1);
            let piece = PIECES[next(PIECES.len())];
            match next(3) {
                0 => line.splice(at..at, piece.iter().copied()).for_each(drop),
                1 => {
                    let end = (at + 1 + next(8)).min(line.len());
                    line.drain(at.min(end)..end);
                }
                _ => line.truncate(at),
            }
        }
        for f in &presets {
            assert_same(f, &line);
        }
    }
}

#[test]
fn day_cache_follows_the_date() {
    let f = fmt(COMBINED);
    // Dates that change back and forth, across months, years, leap days and offsets; each
    // timestamp must parse as it would alone.
    let stamps = [
        "17/May/2015:10:05:03 +0000",
        "17/May/2015:23:59:59 -0700",
        "18/May/2015:00:00:00 +0000",
        "17/May/2015:10:05:03 +0000",
        "17/Jun/2015:10:05:03 +0000",
        "17/May/2016:10:05:03 +0000",
        "29/Feb/2016:10:05:03 +0000",
        "29/Feb/2015:10:05:03 +0000",
        "28/Feb/2015:10:05:03 +0000",
        "29/Feb/2000:10:05:03 +0000",
        "29/Feb/1900:10:05:03 +0000",
        "01/Jan/0001:00:00:00 +0000",
        "00/Jan/0000:00:00:00 +0000",
        "31/Dec/9999:23:59:59 +0000",
        "31/Dec/1969:23:59:59 +0000",
        "01/Jan/1970:00:00:00 +0000",
        "31/Dec/9999:23:59:59 +0000",
    ];
    for round in 0..3 {
        for (i, stamp) in stamps.iter().enumerate() {
            let stamp = stamps[(i * (round + 1)) % stamps.len()].max(stamp);
            let line = format!(r#"h - - [{stamp}] "GET / HTTP/1.1" 200 1 "r" "ua""#);
            let want = parse_apache_time(stamp.as_bytes());
            let got = f.parse(line.as_bytes());
            match want {
                Some(t) => assert_eq!(got.map(|r| r.time), Ok(Some(t)), "{stamp}"),
                None => assert_eq!(got, Err(ParseError::Timestamp), "{stamp}"),
            }
            assert_same(&f, line.as_bytes());
        }
    }
    // A clone keeps answering the same, and the cache does not affect equality.
    let g = f.clone();
    assert_eq!(f, g);
    assert_eq!(f, fmt(COMBINED));
}

/// Lines with long quoted fields, many 16-byte chunks long, whose closing quotes, escaped
/// quotes and quotes inside the User-Agent land at various offsets of a chunk (every offset is
/// `bytes::find_any`'s own test): the fast path answers as the walk does (and does answer the
/// plain ones).
#[test]
fn fast_path_agrees_with_the_walk_on_long_lines() {
    let presets = presets();
    let head = r#"192.0.2.7 - - [17/May/2015:10:05:03 +0000] ""#;
    let mut answered = 0;
    for request_len in [10, 480, 505, 509, 510, 511, 512, 513, 600] {
        for referer_len in [0, 1, 30, 500, 900] {
            for ua_len in [1, 40, 700] {
                for twist in 0..4 {
                    let request = format!("GET /{} HTTP/1.1", "r".repeat(request_len));
                    let mut referer = "f".repeat(referer_len);
                    let mut ua = "u".repeat(ua_len);
                    match twist {
                        0 => {}
                        1 if referer_len > 0 => referer.replace_range(referer_len - 1.., "\\"),
                        2 => ua.insert(ua_len / 2, '"'),
                        3 => ua.push('\\'),
                        _ => continue,
                    }
                    let line = format!(r#"{head}{request}" 200 512 "{referer}" "{ua}""#);
                    for f in &presets {
                        assert_same(f, line.as_bytes());
                    }
                    answered += usize::from(
                        fast::parse(
                            Preset::Combined,
                            line.as_bytes(),
                            &presets[1].stamps,
                            fast::Search,
                        )
                        .is_some(),
                    );
                }
            }
        }
    }
    // Every untwisted line (9 * 5 * 3); the twists are left to the walk.
    assert_eq!(answered, 135);
}
