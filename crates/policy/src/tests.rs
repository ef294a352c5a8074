use super::*;
use crate::rules::*;
use std::net::IpAddr;

const POLICY: &str = r#"
id = "test-policy"
[client_address]
read = true
finest_geo = "country"
count_visitors = true
[user_agent]
read = true
major_versions = true
[referrer]
read = false
[time]
finest_period = "day"
[request]
method = true
status = true
bytes = true
"#;

fn write_pair(pipeline: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, pipeline).unwrap();
    (dir, p)
}

fn pipeline_text(agg: &str) -> String {
    format!(
        "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n\n[source]\ninputs = [\"logs/a.log\"]\n\n[aggregate]\n{agg}\n"
    )
}

fn load_err(text: &str) -> String {
    let (_d, p) = write_pair(text);
    let err = Pipeline::load(&p).unwrap_err().to_string();
    err.replace(&p.display().to_string(), "p.toml")
}

#[test]
fn loads_a_valid_pipeline_and_resolves_paths() {
    let (dir, p) = write_pair(&pipeline_text(
        "period = \"day\"\ngeo_level = \"country\"\ntables = [\"traffic_quality\", \"traffic_by_region\"]\ncrawlers = \"exclude\"\nown_domains = [\"www.Example.COM.\"]",
    ));
    let pl = Pipeline::load(&p).unwrap();
    assert_eq!(pl.name, "t");
    assert_eq!(pl.policy.id, "test-policy");
    assert_eq!(
        pl.policy_hash,
        blake3::hash(POLICY.as_bytes()).to_hex().to_string()
    );
    assert_eq!(
        pl.inputs,
        [dir.path().join("logs/a.log").display().to_string()]
    );
    assert_eq!(
        pl.tables,
        [TableName::TrafficByRegion, TableName::TrafficQuality]
    );
    assert_eq!(pl.own_domains, ["example.com"]);
    assert_eq!(pl.format, logcensus_parse::FormatSpec::Combined);
    assert_eq!(pl.period, Period::Day);
    assert_eq!(pl.geo_level, GeoLevel::Country);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n[source]\nformt = \"combined\"\n[aggregate]\nperiod = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\"\n";
    let err = load_err(text);
    assert!(
        err.starts_with("p.toml:5:1: unknown field `formt`, expected one of"),
        "{err}"
    );
}

#[test]
fn finer_than_policy_is_refused() {
    let err = load_err(&pipeline_text(
        "period = \"hour\"\ntables = [\"traffic_quality\"]\ncrawlers = \"exclude\"",
    ));
    assert_eq!(
        err,
        "p.toml:9:10: aggregate.period: period \"hour\" is finer than policy `test-policy` allows (finest: \"day\")"
    );
    let err = load_err(&pipeline_text(
        "period = \"day\"\ngeo_level = \"region\"\ntables = [\"traffic_quality\"]\ncrawlers = \"exclude\"",
    ));
    assert_eq!(
        err,
        "p.toml:10:13: aggregate.geo_level: geo level \"region\" is finer than policy `test-policy` allows (finest: \"country\")"
    );
}

#[test]
fn table_needing_a_forbidden_field_is_refused() {
    let err = load_err(&pipeline_text(
        "period = \"day\"\ntables = [\"referrers\"]\ncrawlers = \"exclude\"",
    ));
    assert_eq!(
        err,
        "p.toml:10:10: aggregate.tables: table `referrers` needs the referrer, which policy `test-policy` does not allow"
    );
}

#[test]
fn format_problems_are_reported_at_their_key() {
    let text = "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n[source]\nformat = \"apache\"\nlog_format = \"%h %Z %t\"\n[aggregate]\nperiod = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\"\n";
    let err = load_err(text);
    assert!(
        err.starts_with("p.toml:6:14: source.log_format: unknown LogFormat directive"),
        "{err}"
    );
    let text = "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n[source]\nformat = \"json\"\n[aggregate]\nperiod = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\"\n";
    let err = load_err(text);
    assert_eq!(err, "p.toml:5:10: source.format: format \"json\" needs a `json_preset` (caddy, traefik, nginx) or a [source.json] field mapping");
    let text = "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n[source]\nformat = \"xml\"\n[aggregate]\nperiod = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\"\n";
    let err = load_err(text);
    assert!(
        err.starts_with("p.toml:5:10: unknown variant `xml`"),
        "{err}"
    );
}

#[test]
fn missing_policy_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        pipeline_text("period = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\""),
    )
    .unwrap();
    let err = Pipeline::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("pipeline.policy: cannot read the policy file"),
        "{err}"
    );
    assert!(err.contains("policy.toml"), "{err}");
}

#[test]
fn shipped_pipelines_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    for (name, period, crawlers, tables) in [
        ("partner-daily", Period::Day, CrawlerHandling::Exclude, 4),
        ("internal-daily", Period::Day, CrawlerHandling::Include, 4),
        ("ops-hourly", Period::Hour, CrawlerHandling::Include, 1),
    ] {
        let pl = Pipeline::load(&root.join(format!("{name}.toml"))).unwrap();
        assert_eq!(pl.name, name);
        assert_eq!(pl.period, period);
        assert_eq!(pl.crawlers, crawlers);
        assert_eq!(pl.tables.len(), tables);
        assert_eq!(pl.policy.id, "site-privacy-policy-2010-05-05");
    }
}

#[test]
fn referrers_become_registrable_domains() {
    let own = vec!["example.com".to_string()];
    let mut s = String::new();
    let mut c = |r: &str| {
        classify_referrer(Some(r.as_bytes()), &own, &mut s)
            .as_str()
            .to_string()
    };
    assert_eq!(c("https://www.google.com/search?q=secret"), "google.com");
    assert_eq!(c("http://news.bbc.co.uk/a/b?c=d"), "bbc.co.uk");
    assert_eq!(c("HTTPS://WWW.Example.COM/page"), "(internal)");
    assert_eq!(c("https://shop.example.com:8443/x"), "(internal)");
    assert_eq!(c("https://user:pw@evil.example.org/x"), "example.org");
    // Private-section suffixes: the hosting site, never the customer's name.
    assert_eq!(c("https://alice-smith.github.io/repo"), "github.io");
    assert_eq!(
        c("http://bob.blogspot.com/2020/01/post.html"),
        "blogspot.com"
    );
    assert_eq!(c("http://myhome-carol.dyndns.org/"), "dyndns.org");
    assert_eq!(c("https://dave-jones.netlify.app/x"), "netlify.app");
    assert_eq!(c("https://github.io/"), "github.io");
    assert_eq!(c("http://co.uk/"), "(other)");
    assert_eq!(c("http://1.1.168.192.in-addr.arpa/"), "(other)");
    assert_eq!(c("http://192.0.2.44/admin"), "(other)");
    assert_eq!(c("http://[2001:db8::1]/x"), "(other)");
    assert_eq!(c("http://localhost:3000/"), "(other)");
    assert_eq!(c("android-app://com.google.android.gm/"), "(other)");
    assert_eq!(c("-"), "(direct)");
    assert_eq!(c(""), "(direct)");
    assert_eq!(c("not a url"), "(invalid)");
    assert_eq!(c("http://exa mple.com/"), "(invalid)");
    assert_eq!(classify_referrer(None, &own, &mut s), RefClass::Direct);
}

#[test]
fn versions_keep_only_the_major_part() {
    assert_eq!(major_version("32.0.1700.77"), Some("32"));
    assert_eq!(major_version("10_9_1"), Some("10"));
    assert_eq!(major_version("NT 10.0"), Some("NT 10"));
    assert_eq!(major_version("UNKNOWN"), None);
    // Free text that User-Agent parsers copy out of the header never passes.
    assert_eq!(major_version("JohnSmithLaptop"), None);
    assert_eq!(major_version("x86_64 14541.0.0"), None);
    assert_eq!(major_version("MarkerKDDI"), None);
    assert_eq!(major_version("12345.1"), None);
    assert_eq!(major_version("10abc"), None);
    assert_eq!(major_version("NT 6.1"), Some("NT 6"));
    assert_eq!(major_version("17"), Some("17"));
    assert_eq!(major_version(""), None);
}

#[test]
fn periods_align_to_utc() {
    // 2015-05-17T10:05:03Z
    assert_eq!(Period::Day.start(1431857103), 1431820800);
    assert_eq!(Period::Hour.start(1431857103), 1431856800);
    assert_eq!(Period::Day.start(-1), -86400);
}

#[test]
fn client_address_selection() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let rh = Some(&b"198.51.100.7"[..]);
    let xff = Some(&b"unknown, 203.0.113.9, 10.0.0.1"[..]);
    assert_eq!(
        client_address(ClientAddressSource::RemoteHost, rh, xff),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(
        client_address(ClientAddressSource::ForwardedFor, rh, xff),
        Some(ip("203.0.113.9"))
    );
    assert_eq!(
        client_address(ClientAddressSource::ForwardedFor, rh, Some(b"garbage")),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(parse_ip(b"::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
    assert_eq!(parse_ip(b"[2001:db8::2]:443"), Some(ip("2001:db8::2")));
    assert_eq!(parse_ip(b"192.0.2.1:8080"), Some(ip("192.0.2.1")));
    assert_eq!(parse_ip(b"example.com"), None);
    assert_eq!(parse_ip(b"\xff\xfe"), None);
}

/// `n` seeded random words of bytes from `alphabet`, each shorter than `max_len`.
fn random_words(alphabet: &[u8], max_len: u64, n: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut y = x;
            (0..x % max_len)
                .map(|_| {
                    y = y.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    alphabet[(y >> 59) as usize % alphabet.len()]
                })
                .collect()
        })
        .collect()
}

/// `parse_ip` reads plain IPv6 itself; `hex_groups` must agree with the standard library on
/// every string of hex digits and colons (it accepts them all), and never accept what the
/// standard library refuses or read it otherwise.
#[test]
fn hex_groups_parse_as_the_standard_library_does() {
    let std_v6 = |s: &[u8]| {
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
    };
    let mut cases: Vec<Vec<u8>> = [
        "::",
        "::1",
        "1::",
        "1:::2",
        ":1",
        "1:",
        "::1:2:3:4:5:6:7",
        "::1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "1:2:3:4:5:6:7:8::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "2001:db8::ff00:42:8329",
        "2001:DB8:0:0:8:800:200C:417A",
        "00000::1",
        "0000::1",
        "fe80::1%eth0",
        "::ffff:192.0.2.1",
        "1::2::3",
        ":::",
        "1:2:3:4:5:6:7",
        "g::1",
        "",
        ":",
        "1",
        "[::1]",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    cases.extend(random_words(
        b"0123456789abcdefABCDEF::::::::.g",
        42,
        300_000,
    ));
    // Every one-byte change of a few addresses, to any byte.
    for base in ["2001:db8::1", "1:2:3:4:5:6:7:8", "::ffff:c000:201"] {
        for i in 0..base.len() {
            for b in 0..=255u8 {
                let mut c = base.as_bytes().to_vec();
                c[i] = b;
                cases.push(c);
            }
        }
    }
    let mut accepted = 0;
    for c in &cases {
        let fast = super::rules::hex_groups(c);
        let name = String::from_utf8_lossy(c);
        if fast.is_some() {
            accepted += 1;
            assert_eq!(fast, std_v6(c), "{name:?}");
        }
        if c.iter().all(|b| b.is_ascii_hexdigit() || *b == b':') {
            assert_eq!(fast, std_v6(c), "{name:?}");
        }
    }
    assert!(accepted > 1_000, "{accepted}");
}

/// `parse_ip` reads dotted quads itself; it must agree with the standard library's parser on
/// every input near that form.
#[test]
fn dotted_quads_parse_as_the_standard_library_does() {
    let std_v4 = |s: &[u8]| {
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
    };
    let mut cases: Vec<Vec<u8>> = [
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.04",
        "1..3.4",
        ".1.2.3",
        "1.2.3.",
        "+1.2.3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.-4",
        "192.0.2.1",
        "1000.1.1.1",
        "10.0.0.255",
        "0.0.0.00",
        "1.2.3.4:80",
        "1.2.3.a",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Every octet of edge values in every place: lengths 0 to 4, leading zeros, 255 and 256.
    let octets = [
        "", "0", "00", "1", "01", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256",
        "299", "300", "999", "1000",
    ];
    for a in octets {
        for b in octets {
            for c in octets {
                for d in octets {
                    cases.push(format!("{a}.{b}.{c}.{d}").into_bytes());
                }
            }
        }
    }
    // Random words of digits and dots, 0 to 18 bytes, every seventh with a byte after them.
    for (i, mut c) in random_words(b"0123456789...25", 19, 20_000)
        .into_iter()
        .enumerate()
    {
        if i % 7 == 0 {
            c.push(b'x');
        }
        cases.push(c);
    }
    // Every one-byte change of a few addresses, to any byte.
    for base in ["192.0.2.1", "10.200.0.7", "1.1.1.1"] {
        for i in 0..base.len() {
            for b in 0..=255u8 {
                let mut c = base.as_bytes().to_vec();
                c[i] = b;
                cases.push(c);
            }
        }
    }
    for c in &cases {
        assert_eq!(
            super::rules::dotted_quad(c),
            std_v4(c),
            "{:?}",
            String::from_utf8_lossy(c)
        );
        // And the whole parser gives what it gave before for IPv4.
        if let Some(v4) = std_v4(c) {
            assert_eq!(parse_ip(c), Some(IpAddr::V4(v4)));
        }
        // As the first word of a line: a leading quad followed by a space is exactly the first
        // word read as a quad, and every leading quad is one.
        let line = [&c[..], b" - - [rest"].concat();
        let word = &line[..line.iter().position(|&b| b == b' ').unwrap()];
        let leading = super::rules::leading_dotted_quad(&line);
        if let Some((v4, n)) = leading {
            assert_eq!(super::rules::dotted_quad(&line[..n]), Some(v4), "{c:?}");
        }
        let whole_word = leading.filter(|&(_, n)| line[n] == b' ').map(|(v4, _)| v4);
        assert_eq!(whole_word, super::rules::dotted_quad(word), "{c:?}");
        // A line that is the address alone (shorter than the 16 bytes read at once).
        let alone = super::rules::leading_dotted_quad(c).filter(|&(_, n)| n == c.len());
        assert_eq!(alone.map(|(v4, _)| v4), std_v4(c), "{c:?}");
    }
}

#[test]
fn geo_mappings_finer_than_a_region_are_refused() {
    for (path, why) in [
        ("city.names.en", "a city"),
        ("postal.code", "a postal code"),
        ("location.time_zone", "a location"),
        ("subdivisions.1.iso_code", "a second-level subdivision"),
        ("state2", "a second-level subdivision"),
    ] {
        let text = format!(
            "[pipeline]\nname = \"t\"\npolicy = \"policy.toml\"\n[geoip]\ndatabase = \"x.mmdb\"\n[geoip.fields]\nsubdivision = \"{path}\"\n[aggregate]\nperiod = \"day\"\ntables = [\"traffic_quality\"]\ncrawlers = \"exclude\"\n"
        );
        assert_eq!(
            load_err(&text),
            format!("p.toml:7:15: geoip.fields.subdivision: \"{path}\" reads {why}, finer than any geographic level logcensus outputs; map it to a continent, country or first-level subdivision field")
        );
    }
    // The defaults and the flat layout's first-level fields are fine.
    assert_eq!(finer_than_region("subdivisions.0.iso_code"), None);
    assert_eq!(finer_than_region("state1"), None);
    assert_eq!(finer_than_region("country_code"), None);
}

#[test]
fn release_thresholds_per_table() {
    let (_d, p) = write_pair(&format!(
        "{}\n[release]\nmin_visitors = 10\nper_table = {{ clients = 20 }}\n",
        pipeline_text("period = \"day\"\ntables = [\"clients\", \"traffic_by_region\", \"traffic_quality\"]\ncrawlers = \"exclude\"")
    ));
    let pl = Pipeline::load(&p).unwrap();
    assert_eq!(
        pl.min_visitors.into_iter().collect::<Vec<_>>(),
        [(TableName::TrafficByRegion, 10), (TableName::Clients, 20)]
    );
    let err = load_err(&format!(
        "{}\n[release]\nmin_visitors = 1\n",
        pipeline_text("period = \"day\"\ntables = [\"clients\"]\ncrawlers = \"exclude\"")
    ));
    assert_eq!(err, "p.toml:14:16: release.min_visitors: a minimum below 2 visitors protects no one; use 2 or more, or remove it");
}

#[test]
fn release_bounds_and_differential_privacy() {
    let base = pipeline_text(
        "period = \"day\"\ntables = [\"clients\", \"traffic_by_region\"]\ncrawlers = \"exclude\"",
    );
    let (_d, p) = write_pair(&format!(
        "{base}\n[release]\nmin_visitors = 10\nmax_rows_per_visitor = 3\nmax_requests_per_row = 50\nmax_bytes_per_row = 100000\n\
         [release.dp]\nmechanism = \"gaussian\"\nepsilon = 1.5\ndelta = 1e-8\n\
         [release.dp.per_table.traffic_by_region]\nmechanism = \"laplace\"\nepsilon = 0.5\n"
    ));
    let pl = Pipeline::load(&p).unwrap();
    assert_eq!(
        pl.bounds,
        Bounds {
            max_rows_per_visitor: Some(3),
            max_requests_per_row: Some(50),
            max_bytes_per_row: Some(100_000),
        }
    );
    // Every demographic table the pipeline writes, never traffic_quality.
    assert_eq!(
        pl.dp.into_iter().collect::<Vec<_>>(),
        [
            (
                TableName::TrafficByRegion,
                DpSpec {
                    mechanism: Mechanism::Laplace,
                    epsilon: 0.5,
                    delta: 1e-8
                }
            ),
            (
                TableName::Clients,
                DpSpec {
                    mechanism: Mechanism::Gaussian,
                    epsilon: 1.5,
                    delta: 1e-8
                }
            ),
        ]
    );

    let err = |release: &str| load_err(&format!("{base}\n[release]\n{release}"));
    let bounds = "max_rows_per_visitor = 3\nmax_requests_per_row = 50\nmax_bytes_per_row = 9\n";
    assert_eq!(
        err("max_rows_per_visitor = 0\n"),
        format!("p.toml:14:24: release.max_rows_per_visitor: must be between 1 and {} (a visitor's contribution to a table is capped at it)", u32::MAX)
    );
    assert_eq!(
        err("max_requests_per_row = 50\n[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\n"),
        "p.toml:16:13: release.dp: differential privacy calibrates its noise to the contribution bounds: set `max_rows_per_visitor` in [release] (how many rows of a table one visitor may count in per period)"
    );
    assert_eq!(
        err(&format!("{bounds}[release.dp]\nmechanism = \"laplace\"\nepsilon = 0\ndelta = 1e-7\n")),
        "p.toml:19:11: release.dp.epsilon: epsilon must be a number above 0 and at most 20 (smaller is more private; 0.1 to 2 per table and period is usual)"
    );
    assert_eq!(
        err(&format!("{bounds}[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 0.5\n")),
        "p.toml:20:9: release.dp.delta: delta must be above 0 (partition selection needs it) and at most 0.001; use well under 1 / (visitors per period), e.g. 1e-7"
    );
    assert_eq!(
        err(&format!("{bounds}[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\ntables = [\"traffic_quality\"]\n")),
        "p.toml:21:10: release.dp.tables: traffic_quality cannot be released with differential privacy: rejected lines belong to no visitor, so no bound limits what one person adds to it; leave it out of partner releases or out of this list"
    );
    assert_eq!(
        err(&format!("{bounds}[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\ntables = [\"referrers\"]\n")),
        "p.toml:21:10: release.dp.tables: referrers is not among the tables this pipeline writes ([aggregate] tables)"
    );
    assert_eq!(
        err(&format!("{bounds}[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\ntables = [\"clients\"]\nallow_exact_tables = true\n[release.dp.per_table.traffic_by_region]\nepsilon = 0.5\n")),
        "p.toml:24:11: release.dp.per_table: traffic_by_region is not released with differential privacy (release.dp.tables)"
    );
    assert!(err(&format!(
        "{bounds}[release.dp]\nmechanism = \"exponential\"\nepsilon = 1.0\ndelta = 1e-7\n"
    ))
    .contains("unknown variant `exponential`, expected `laplace` or `gaussian`"));
}

#[test]
fn a_dp_release_is_private_throughout_unless_exact_tables_are_allowed() {
    let pipeline = |tables: &str, dp: &str| {
        format!(
            "{}\n[release]\nmax_rows_per_visitor = 1\nmax_requests_per_row = 5\n[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\n{dp}",
            pipeline_text(&format!("period = \"day\"\ntables = {tables}\ncrawlers = \"exclude\""))
        )
    };
    assert_eq!(
        load_err(&pipeline("[\"clients\", \"traffic_quality\"]", "")),
        "p.toml:17:13: release.dp: this pipeline writes traffic_quality without differential privacy: traffic_quality holds exact counts and cannot be made differentially private (rejected lines belong to no visitor). A release with [release.dp] must be private throughout: remove the table from [aggregate] tables (write it from another pipeline), or set `allow_exact_tables = true` in [release.dp] if exact counts of it may go out with the private ones"
    );
    assert!(load_err(&pipeline("[\"clients\", \"traffic_by_region\"]", "tables = [\"clients\"]\n"))
        .contains("this pipeline writes traffic_by_region without differential privacy: it is not in release.dp.tables"));
    let (_d, p) = write_pair(&pipeline(
        "[\"clients\", \"traffic_quality\"]",
        "allow_exact_tables = true\n",
    ));
    let pl = Pipeline::load(&p).unwrap();
    assert_eq!(pl.dp.keys().collect::<Vec<_>>(), [&TableName::Clients]);
}

#[test]
fn dp_on_traffic_by_region_needs_a_bytes_bound() {
    let base = pipeline_text(
        "period = \"day\"\ngeo_level = \"country\"\ntables = [\"traffic_by_region\"]\ncrawlers = \"exclude\"",
    );
    let err = load_err(&format!(
        "{base}\n[release]\nmax_rows_per_visitor = 1\nmax_requests_per_row = 5\n[release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\n"
    ));
    assert_eq!(err, "p.toml:18:13: release.dp: differential privacy calibrates its noise to the contribution bounds: set `max_bytes_per_row` in [release] (how many of one visitor's bytes count in a traffic_by_region row)");
}

/// The rule [`referrer_host`] implements, step by step: the scheme up to the first `://`, the
/// authority up to the first `/`, `?`, `#` or `\`, the host and port after its last `@`, the host
/// up to the first `:` after that, one trailing dot dropped.
fn referrer_host_by_steps(referer: Option<&[u8]>) -> RefHost<'_> {
    let raw = match referer.map(<[u8]>::trim_ascii) {
        None | Some(b"" | b"-") => return RefHost::Decided(RefClass::Direct),
        Some(raw) => raw,
    };
    let Some(sep) = raw.windows(3).position(|w| w == b"://") else {
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
    if !["http", "https"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s.as_bytes()))
    {
        return RefHost::Decided(RefClass::Other);
    }
    let rest = &raw[sep + 3..];
    let end = rest
        .iter()
        .position(|b| b"/?#\\".contains(b))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if host_port.first() == Some(&b'[') {
        return RefHost::Decided(RefClass::Other);
    }
    let host = match host_port.iter().position(|&b| b == b':') {
        Some(colon) => &host_port[..colon],
        None => host_port,
    };
    RefHost::Host(host.strip_suffix(b".").unwrap_or(host))
}

/// The one-pass reading of a referrer's host agrees with the step-by-step rule on referrers
/// built from the bytes that matter to it (scheme letters in both cases, `:`, `/`, `@`, `[`,
/// `?`, `#`, `\`, dots, spaces), from 0 to 24 bytes, with and without an `http(s)://` start.
#[test]
fn referrer_hosts_follow_the_rule() {
    let alphabet = b"hHtTpPsS:/@[?#\\. a-1";
    let starts: [&[u8]; 9] = [
        b"",
        b"http://",
        b"https://",
        b"HTTPS://",
        b"hTtP://",
        b"httpx://",
        b"ftp://",
        b" http://",
        b"http:/",
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut checked = 0;
    for start in starts {
        for len in 0..=24 {
            for _ in 0..400 {
                let mut r = start.to_vec();
                for _ in 0..len {
                    r.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                }
                assert_eq!(
                    referrer_host(Some(&r)),
                    referrer_host_by_steps(Some(&r)),
                    "{:?}",
                    String::from_utf8_lossy(&r)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 9 * 25 * 400);
    for r in [
        &b"https://a@b:1@c:2/x"[..],
        b"http://u:p@[::1]:8/",
        b"https://host.example./p",
        b"https://h:@x",
        b"http://@",
        b"HTTP://WWW.Example.COM",
    ] {
        assert_eq!(referrer_host(Some(r)), referrer_host_by_steps(Some(r)));
    }
    assert_eq!(
        referrer_host(Some(b"https://a@b:1@c:2/x")),
        RefHost::Host(b"c")
    );
    assert_eq!(referrer_host(None), RefHost::Decided(RefClass::Direct));
}
