//! The whole path, values checked against hand-computed expectations.

use super::*;

// Every run here goes through the shared helper; debug logging also exercises the log paths.
use super::run_debug as run_pipeline;

const ALL_TABLES: &str =
    "tables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]";

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/118.0";
const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// The same six requests in each supported layout: (address, time, status, bytes, referrer, UA).
/// Addresses are in the committed test database: US-VA, JP-13, DE-BY, US without a subdivision,
/// and one with no record.
fn requests() -> Vec<(
    &'static str,
    &'static str,
    u16,
    u64,
    &'static str,
    &'static str,
)> {
    vec![
        (
            "3.80.0.1",
            "17/May/2026:10:00:00 +0000",
            200,
            100,
            "https://www.google.com/search?q=x",
            FIREFOX,
        ),
        (
            "3.80.0.1",
            "17/May/2026:10:05:00 +0000",
            200,
            200,
            "https://www.example.com/a",
            FIREFOX,
        ),
        (
            "126.1.2.3",
            "17/May/2026:23:59:59 +0000",
            404,
            0,
            "-",
            CHROME_WIN,
        ),
        // 01:30 on the 18th in UTC, written in a +02:00 zone.
        (
            "2a01:4f8::1",
            "18/May/2026:03:30:00 +0200",
            304,
            0,
            "http://news.bbc.co.uk/story",
            CHROME_WIN,
        ),
        (
            "63.140.0.1",
            "18/May/2026:04:00:00 +0000",
            200,
            5000,
            "-",
            GOOGLEBOT,
        ),
        (
            "203.0.113.9",
            "18/May/2026:05:00:00 +0000",
            500,
            7,
            "-",
            "-",
        ),
    ]
}

fn combined_log() -> String {
    requests()
        .iter()
        .map(|(ip, t, st, b, r, ua)| {
            format!("{ip} - - [{t}] \"GET /p?q=1 HTTP/1.1\" {st} {b} \"{r}\" \"{ua}\"\n")
        })
        .collect()
}

fn check_hand_computed(out: &Path, crawlers_included: bool) {
    // traffic_quality: every parsed request, per UTC day.
    let q = rows(out, "traffic_quality");
    assert_eq!(q.len(), 2);
    assert_eq!(get(&q[0], "period_start"), "2026-05-17T00:00:00Z");
    assert_eq!(get(&q[1], "period_start"), "2026-05-18T00:00:00Z");
    let col = |c: &str| q.iter().map(|r| get(r, c).to_string()).collect::<Vec<_>>();
    assert_eq!(col("requests"), ["3", "3"]);
    assert_eq!(col("crawler_requests"), ["0", "1"]);
    assert_eq!(col("status_2xx"), ["2", "1"]);
    assert_eq!(col("status_3xx"), ["0", "1"]);
    assert_eq!(col("status_4xx"), ["1", "0"]);
    assert_eq!(col("status_5xx"), ["0", "1"]);
    assert_eq!(col("bytes"), ["300", "5007"]);
    assert_eq!(col("empty_user_agent_requests"), ["0", "1"]);
    assert_eq!(col("rejected_lines"), ["0", "0"]);

    assert_eq!(col("unknown_geo_requests"), ["0", "1"]);

    // traffic_by_region
    let got: Vec<String> = rows(out, "traffic_by_region")
        .iter()
        .map(|r| {
            let mut v = vec![get(r, "period_start")[..10].to_string()];
            v.extend(
                [
                    "continent",
                    "country",
                    "region",
                    "requests",
                    "visitors",
                    "bytes",
                ]
                .map(|c| get(r, c).to_string()),
            );
            v.join(" ")
        })
        .collect();
    let mut want = vec![
        "2026-05-17 AS JP JP-13 1 1 0",
        "2026-05-17 NA US US-VA 2 1 300",
        "2026-05-18 (unknown) (unknown) (unknown) 1 1 7",
        "2026-05-18 EU DE DE-BY 1 1 0",
    ];
    if crawlers_included {
        want.push("2026-05-18 NA US (unknown) 1 1 5000");
    }
    assert_eq!(got, want);

    // referrers
    let r = rows(out, "referrers");
    let got: Vec<(String, String, String, String)> = r
        .iter()
        .map(|r| {
            (
                get(r, "period_start")[..10].to_string(),
                get(r, "referrer_domain").to_string(),
                get(r, "requests").to_string(),
                get(r, "visitors").to_string(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_string(), b.to_string(), c.to_string(), d.to_string())
    };
    let mut want = vec![
        s("2026-05-17", "(direct)", "1", "1"),
        s("2026-05-17", "(internal)", "1", "1"),
        s("2026-05-17", "google.com", "1", "1"),
        s(
            "2026-05-18",
            "(direct)",
            if crawlers_included { "2" } else { "1" },
            if crawlers_included { "2" } else { "1" },
        ),
        s("2026-05-18", "bbc.co.uk", "1", "1"),
    ];
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);

    // clients
    let c = rows(out, "clients");
    let got: Vec<String> = c
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {} {}",
                &get(r, "period_start")[..10],
                get(r, "device"),
                get(r, "os"),
                get(r, "os_version"),
                get(r, "browser"),
                get(r, "browser_version"),
                get(r, "requests"),
                get(r, "visitors")
            )
        })
        .collect();
    let mut want = vec![
        "2026-05-17 pc Linux null Firefox 118 2 1".to_string(),
        "2026-05-17 pc Windows 10 NT 10 Chrome 120 1 1".to_string(),
        "2026-05-18 pc Windows 10 NT 10 Chrome 120 1 1".to_string(),
        "2026-05-18 (unknown) (unknown) null (unknown) null 1 1".to_string(),
    ];
    if crawlers_included {
        want.push("2026-05-18 crawler (unknown) null Googlebot null 1 1".to_string());
    }
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn combined_log_hand_computed_with_and_without_crawlers() {
    for crawlers in ["exclude", "include"] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("access.log");
        std::fs::write(&input, combined_log()).unwrap();
        let p = pipeline(
            dir.path(),
            "hand",
            &format!("[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\n{ALL_TABLES}\ncrawlers = \"{crawlers}\"\nown_domains = [\"example.com\"]\n"),
        );
        let out = dir.path().join("out");
        run_pipeline(&p, &input, &out);
        check_hand_computed(&out, crawlers == "include");
    }
}

#[test]
fn common_vcombined_custom_and_json_formats_agree() {
    let reqs = requests();
    let vcombined: String = reqs
        .iter()
        .map(|(ip, t, st, b, r, ua)| format!("www.example.com:443 {ip} - - [{t}] \"GET /p HTTP/1.1\" {st} {b} \"{r}\" \"{ua}\"\n"))
        .collect();
    let custom: String = reqs
        .iter()
        .map(|(ip, t, st, b, r, ua)| {
            format!("10.0.0.1 [{t}] {st} {b} 1234 \"{ua}\" \"{r}\" \"{ip}\" \"GET /x HTTP/2\"\n")
        })
        .collect();
    let json: String = reqs
        .iter()
        .map(|(ip, t, st, b, r, ua)| {
            let secs = logcensus_parse::parse_apache_time(t.as_bytes()).unwrap();
            format!(
                "{{\"time_iso8601\":\"{}\",\"remote_addr\":\"{ip}\",\"http_x_forwarded_for\":\"\",\"request_method\":\"GET\",\"status\":\"{st}\",\"body_bytes_sent\":\"{b}\",\"http_referer\":\"{}\",\"http_user_agent\":\"{ua}\",\"host\":\"www.example.com\",\"request_time\":\"0.002\"}}\n",
                rfc3339(secs),
                if *r == "-" { "" } else { r }
            )
        })
        .collect();
    let cases = [
        ("vcombined", "format = \"vcombined\"", vcombined),
        (
            "custom",
            "format = \"apache\"\nlog_format = '%a %t %>s %B %D \"%{User-Agent}i\" \"%{Referer}i\" \"%{X-Forwarded-For}i\" \"%r\"'\nclient_address = \"forwarded_for\"",
            custom,
        ),
        ("json", "format = \"json\"\njson_preset = \"nginx\"", json),
    ];
    for (name, source, log) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("access.log");
        std::fs::write(&input, log).unwrap();
        let p = pipeline(
            dir.path(),
            name,
            &format!("[source]\n{source}\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\n{ALL_TABLES}\ncrawlers = \"include\"\nown_domains = [\"example.com\"]\n"),
        );
        let out = dir.path().join("out");
        run_pipeline(&p, &input, &out);
        check_hand_computed(&out, true);
    }

    // Common has no referrer or User-Agent: everything is direct and unknown.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    let common: String = reqs
        .iter()
        .map(|(ip, t, st, b, _, _)| format!("{ip} - frank [{t}] \"GET /p HTTP/1.0\" {st} {b}\n"))
        .collect();
    std::fs::write(&input, common).unwrap();
    let p = pipeline(
        dir.path(),
        "common",
        &format!("[source]\nformat = \"common\"\n\n[aggregate]\nperiod = \"day\"\n{ALL_TABLES}\ncrawlers = \"exclude\"\n"),
    );
    let out = dir.path().join("out");
    run_pipeline(&p, &input, &out);
    let r = rows(&out, "referrers");
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| get(r, "referrer_domain") == "(direct)"));
    assert_eq!(sum(&out, "referrers", "requests"), 6);
    assert_eq!(sum(&out, "traffic_quality", "empty_user_agent_requests"), 6);
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn sample_log_lines_in_equal_requests_plus_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/logs/sample-combined.log.gz");
    let out = dir.path().join("out");
    let t = run_pipeline(&root().join("pipelines/internal-daily.toml"), &input, &out);
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&input).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let lines_in = raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as i64;
    let requests = sum(&out, "traffic_quality", "requests");
    let rejected = sum(&out, "traffic_quality", "rejected_lines");
    assert_eq!(requests + rejected, lines_in, "{t}");
    assert!(rejected > 0, "the sample has malformed lines");
    // Every table counts every request in the internal pipeline.
    assert_eq!(sum(&out, "traffic_by_region", "requests"), requests);
    assert_eq!(sum(&out, "clients", "requests"), requests);
    assert_eq!(sum(&out, "referrers", "requests"), requests);
    assert!(t.contains(&format!("read {lines_in} lines")), "{t}");
}

#[test]
fn rerunning_into_the_same_directory_gives_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/logs/sample-combined.log.gz");
    let out = dir.path().join("out");
    let p = root().join("pipelines/partner-daily.toml");
    run_pipeline(&p, &input, &out);
    let first: Vec<(PathBuf, Vec<u8>)> = files_below(&out)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    run_pipeline(&p, &input, &out);
    let second: Vec<(PathBuf, Vec<u8>)> = files_below(&out)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(!first.is_empty());
    assert_eq!(first.len(), second.len(), "no duplicate parts");
    for ((p1, b1), (p2, b2)) in first.iter().zip(&second) {
        assert_eq!(p1, p2);
        assert!(b1 == b2, "{} changed between identical runs", p1.display());
        let name = p1.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("part-") && name.ends_with(".parquet"),
            "{name}"
        );
        assert!(p1
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("date="));
    }
}

#[test]
fn validate_accepts_shipped_pipelines_and_names_errors() {
    for name in [
        "partner-daily",
        "internal-daily",
        "ops-hourly",
        "partner-dp",
    ] {
        let p = root().join(format!("pipelines/{name}.toml"));
        let t = ok(&logcensus(&["validate", "--pipeline", p.to_str().unwrap()]));
        assert!(
            t.contains(&format!(
                "pipeline `{name}` under policy `site-privacy-policy-2010-05-05`"
            )),
            "{t}"
        );
    }
    // The release plan, DP calibrated: threshold and noise scales before any data is read.
    let p = root().join("pipelines/partner-dp.toml");
    let t = ok(&logcensus(&["validate", "--pipeline", p.to_str().unwrap()]));
    assert!(
        t.contains("  referrers: min_visitors=10 max_rows_per_visitor=3 max_requests_per_row=50 mechanism=laplace epsilon=0.5 delta=0.0000001 noisy_columns=visitors,requests selection_threshold="),
        "{t}"
    );
    // Bytes: l1 sensitivity N * B = 3 MB at epsilon 1/3: scale 9 MB.
    assert!(t.contains("noise_scale_bytes=9000009.000000"), "{t}");
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "typo",
        "[aggregate]\nperiod = \"day\"\ntabels = [\"clients\"]\ncrawlers = \"include\"\n",
    );
    let o = logcensus(&["validate", "--pipeline", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!(
            "error: {}:7:1: unknown field `tabels`",
            p.display()
        )),
        "{err}"
    );
}

#[test]
fn inspect_shows_metadata_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    std::fs::write(&input, combined_log()).unwrap();
    let out = dir.path().join("out");
    run_pipeline(&root().join("pipelines/internal-daily.toml"), &input, &out);
    let f = out.join("referrers/date=2026-05-17/part-00000.parquet");
    let t = ok(&logcensus(&["inspect", f.to_str().unwrap()]));
    for want in [
        "logcensus.pipeline",
        "internal-daily",
        "logcensus.policy_id",
        "site-privacy-policy-2010-05-05",
        "logcensus.policy_hash",
        "logcensus.period",
        "google.com",
    ] {
        assert!(t.contains(want), "inspect output lacks {want}:\n{t}");
    }
}

/// A log of one request at noon on 2026-05-17 for each (address, User-Agent, bytes).
fn one_request_each(requests: &[(&str, &str, u32)]) -> String {
    requests
        .iter()
        .map(|(ip, ua, b)| {
            format!(
                "{ip} - - [17/May/2026:12:00:00 +0000] \"GET / HTTP/1.1\" 200 {b} \"-\" \"{ua}\"\n"
            )
        })
        .collect()
}

/// `traffic_by_region`'s rows of that day, as "continent country region requests visitors
/// bytes".
fn region_rows(out: &Path) -> Vec<String> {
    rows(out, "traffic_by_region")
        .iter()
        .map(|r| {
            assert_eq!(get(r, "period_start"), "2026-05-17T00:00:00Z");
            [
                "continent",
                "country",
                "region",
                "requests",
                "visitors",
                "bytes",
            ]
            .map(|c| get(r, c))
            .join(" ")
        })
        .collect()
}

#[test]
fn traffic_by_region_at_each_geo_level() {
    // Networks of the committed test database (see fixtures/README.md).
    let lines = [
        ("3.80.0.1", FIREFOX, 10),       // US-VA
        ("3.80.0.1", FIREFOX, 20),       // US-VA, same visitor
        ("3.80.0.2", FIREFOX, 30),       // US-VA, another visitor
        ("2a01:4f8::1", CHROME_WIN, 40), // DE-BY
        ("63.140.0.1", FIREFOX, 50),     // US, no subdivision
        ("203.0.113.9", FIREFOX, 60),    // no record
    ];
    let log = one_request_each(&lines);
    let expect = [
        (
            "region",
            vec![
                "(unknown) (unknown) (unknown) 1 1 60",
                "EU DE DE-BY 1 1 40",
                "NA US (unknown) 1 1 50",
                "NA US US-VA 3 2 60",
            ],
        ),
        (
            "country",
            vec![
                "(unknown) (unknown) null 1 1 60",
                "EU DE null 1 1 40",
                "NA US null 4 3 110",
            ],
        ),
        (
            "continent",
            vec![
                "(unknown) null null 1 1 60",
                "EU null null 1 1 40",
                "NA null null 4 3 110",
            ],
        ),
    ];
    for (level, want) in expect {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("access.log");
        std::fs::write(&input, &log).unwrap();
        let p = pipeline(
            dir.path(),
            level,
            &format!("[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"{level}\"\n{ALL_TABLES}\ncrawlers = \"exclude\"\n"),
        );
        let out = dir.path().join("out");
        run_pipeline(&p, &input, &out);
        assert_eq!(region_rows(&out), want, "geo level {level}");
        assert_eq!(sum(&out, "traffic_quality", "unknown_geo_requests"), 1);
    }
}

#[test]
fn stdin_zstd_and_several_inputs_count_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let log = combined_log();
    let (first, second) = log.split_at(log.find("2a01:4f8::1").unwrap());
    let a = dir.path().join("a.log");
    std::fs::write(&a, first).unwrap();
    let b = dir.path().join("b.log.zst");
    std::fs::write(&b, zstd_compress(second.as_bytes())).unwrap();
    let p = pipeline(
        dir.path(),
        "multi",
        &format!("[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\n{ALL_TABLES}\ncrawlers = \"include\"\nown_domains = [\"example.com\"]\n"),
    );
    // Two inputs, one of them zstd.
    let out = dir.path().join("out");
    ok(&logcensus(&[
        "run",
        "--pipeline",
        p.to_str().unwrap(),
        "--input",
        a.to_str().unwrap(),
        "--input",
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--geoip",
        test_mmdb().to_str().unwrap(),
    ]));
    check_hand_computed(&out, true);

    // The same lines through stdin.
    let out2 = dir.path().join("out2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_logcensus"))
        .args([
            "run",
            "--pipeline",
            p.to_str().unwrap(),
            "--input",
            "-",
            "--out",
            out2.to_str().unwrap(),
            "--geoip",
            test_mmdb().to_str().unwrap(),
        ])
        .env("LOGCENSUS_VISITOR_KEY_FILE", visitor_key_file())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    ok(&o);
    check_hand_computed(&out2, true);
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[test]
fn hourly_periods_start_on_the_hour() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(&logcensus(&[
        "run",
        "--pipeline",
        root().join("pipelines/ops-hourly.toml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let q = rows(&out, "traffic_quality");
    // The sample spans two days of May 2026: 48 hours, each a row.
    assert_eq!(q.len(), 48);
    for (i, r) in q.iter().enumerate() {
        let want = format!("2026-05-{}T{:02}:00:00Z", 17 + i / 24, i % 24);
        assert_eq!(get(r, "period_start"), want);
    }
    assert!(files_below(&out).iter().all(|f| f
        .to_str()
        .unwrap()
        .contains("traffic_quality/date=2026-05-1")));
}

#[test]
fn without_a_key_file_a_random_key_is_used_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    std::fs::write(&input, combined_log()).unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_logcensus"))
        .args([
            "run",
            "--pipeline",
            root()
                .join("pipelines/internal-daily.toml")
                .to_str()
                .unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env_remove("LOGCENSUS_VISITOR_KEY_FILE")
        .output()
        .unwrap();
    let t = ok(&o);
    assert!(t.contains("using a random visitor key for this run; visitor counts will not merge with other runs"), "{t}");
    // Counts are still exact within the run.
    // 17 May: (direct), (internal) and google.com one visitor each; 18 May: (direct) two
    // (crawlers count internally), bbc.co.uk one.
    assert_eq!(sum(&out, "referrers", "visitors"), 6);
}

#[test]
fn json_sample_with_a_field_mapping_in_the_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/logs/sample-nginx.jsonl");
    // The nginx preset's mapping, written out as a user would for their own layout.
    let p = pipeline(
        dir.path(),
        "json",
        &format!(
            "[source]\nformat = \"json\"\n\n[source.json]\nremote_host = \"remote_addr\"\ntime = \"time_iso8601\"\ntime_format = \"rfc3339\"\nstatus = \"status\"\nbytes = \"body_bytes_sent\"\nreferer = \"http_referer\"\nuser_agent = \"http_user_agent\"\n\n[aggregate]\nperiod = \"day\"\n{ALL_TABLES}\ncrawlers = \"include\"\nown_domains = [\"example.com\"]\n"
        ),
    );
    let out = dir.path().join("out");
    let t = run_pipeline(&p, &input, &out);
    let lines_in = std::fs::read(&input)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as i64;
    assert_eq!(lines_in, 500);
    let requests = sum(&out, "traffic_quality", "requests");
    // The sample has 5 malformed lines (fixtures/README.md).
    assert_eq!(requests, 495, "{t}");
    assert_eq!(sum(&out, "traffic_quality", "rejected_lines"), 5);
    assert_eq!(sum(&out, "clients", "requests"), 495);
    assert!(sum(&out, "traffic_by_region", "visitors") > 50);
    let refs: Vec<String> = rows(&out, "referrers")
        .iter()
        .map(|r| get(r, "referrer_domain").to_string())
        .collect();
    assert!(refs.iter().any(|r| r == "(internal)"), "{refs:?}");
    assert!(
        refs.iter().all(|r| !r.contains('/') && !r.contains('?')),
        "{refs:?}"
    );
}

#[test]
fn a_run_replacing_a_date_built_from_other_input_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let day17 = dir.path().join("day17.log");
    std::fs::write(&day17, combined_log()).unwrap();
    // A rotated file for the 18th that starts with a stray line of the 17th.
    let day18 = dir.path().join("day18.log");
    std::fs::write(
        &day18,
        format!("3.80.0.9 - - [17/May/2026:23:59:59 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"{FIREFOX}\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let p = root().join("pipelines/internal-daily.toml");
    let first = run_pipeline(&p, &day17, &out);
    assert!(!first.contains("replaced tables"), "{first}");
    let again = run_pipeline(&p, &day17, &out);
    assert!(
        !again.contains("replaced tables"),
        "an identical re-run is silent: {again}"
    );
    let other = run_pipeline(&p, &day18, &out);
    assert!(
        other.contains(
            "replaced tables of these dates that an earlier run had written from other input"
        ) && other.contains("2026-05-17"),
        "{other}"
    );
}

/// `logcensus geoip-index` makes the address index of the test database; a run given it writes
/// the tables a run without it writes (checked by hand here); an index of another database is
/// left out with a warning that names it and says what to do; a damaged one fails the run
/// before anything is written.
#[test]
fn an_address_index_gives_the_same_tables() {
    let lines = [
        ("3.80.0.1", FIREFOX, 10),       // US-VA
        ("3.80.0.1", FIREFOX, 20),       // US-VA, same visitor
        ("3.80.0.2", FIREFOX, 30),       // US-VA, another visitor
        ("2a01:4f8::1", CHROME_WIN, 40), // DE-BY, IPv6: never in the index
        ("63.140.0.1", FIREFOX, 50),     // US, no subdivision
        ("203.0.113.9", FIREFOX, 60),    // no record
        ("126.1.2.3", FIREFOX, 70),      // JP-13
    ];
    let log = one_request_each(&lines);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    std::fs::write(&input, &log).unwrap();
    let index = dir.path().join("city.idx");
    let p = pipeline(
        dir.path(),
        "indexed",
        &format!(
            "[source]\nformat = \"combined\"\n\n[geoip]\ndatabase = \"{}\"\nindex = \"city.idx\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\n{ALL_TABLES}\ncrawlers = \"exclude\"\n",
            test_mmdb().display()
        ),
    );
    let made = ok(&logcensus(&[
        "geoip-index",
        "--pipeline",
        p.to_str().unwrap(),
    ]));
    assert!(
        made.contains("wrote the address index of") && made.contains("city.idx"),
        "{made}"
    );
    let want = [
        "(unknown) (unknown) (unknown) 1 1 60",
        "AS JP JP-13 1 1 70",
        "EU DE DE-BY 1 1 40",
        "NA US (unknown) 1 1 50",
        "NA US US-VA 3 2 60",
    ];
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--pipeline",
            p.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        logcensus(&args)
    };
    let said = ok(&logcensus(&["validate", "--pipeline", p.to_str().unwrap()]));
    assert!(
        said.contains(&format!(
            "  geoip index: {} fits {}",
            index.display(),
            test_mmdb().display()
        )),
        "{said}"
    );
    let with = dir.path().join("with");
    let said = ok(&run(&with, &[]));
    assert!(said.contains("address index in use"), "{said}");
    assert_eq!(region_rows(&with), want);

    // An index of another database (the flat test database's) is left out, with a warning.
    let flat = root().join("fixtures/geoip/logcensus-test-flat.mmdb");
    let other = dir.path().join("other.idx");
    ok(&logcensus(&[
        "geoip-index",
        "--pipeline",
        p.to_str().unwrap(),
        "--geoip",
        flat.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]));
    let left_out = dir.path().join("left-out");
    let said = ok(&run(&left_out, &["--geoip-index", other.to_str().unwrap()]));
    assert!(
        said.contains("WARN")
            && said.contains("other.idx was made from another database")
            && said.contains("make it again with `logcensus geoip-index` for this one")
            && said.contains("looking addresses up in the database itself"),
        "{said}"
    );
    assert_eq!(region_rows(&left_out), want);

    // No database to make one from: said, with what to do.
    let missing = dir.path().join("missing.mmdb");
    let failed = logcensus(&[
        "geoip-index",
        "--pipeline",
        p.to_str().unwrap(),
        "--geoip",
        missing.to_str().unwrap(),
    ]);
    let said = text(&failed);
    assert_eq!(failed.status.code(), Some(2), "{said}");
    assert!(
        said.contains("cannot make an address index: cannot read GeoIP database")
            && said.contains("missing.mmdb")
            && said.contains("check --geoip or [geoip] database")
            && !said.contains("nothing was written"),
        "{said}"
    );

    // A damaged index: the run fails, says why and what to do, and writes nothing.
    let mut bytes = std::fs::read(&index).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let damaged = dir.path().join("damaged.idx");
    std::fs::write(&damaged, bytes).unwrap();
    let failed_out = dir.path().join("failed");
    let failed = run(&failed_out, &["--geoip-index", damaged.to_str().unwrap()]);
    let said = text(&failed);
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("damaged.idx is not a logcensus address index (its checksum does not match its contents); make it again with `logcensus geoip-index` (or run without it); nothing was written"),
        "{said}"
    );
    assert!(
        !failed_out.exists() || files_below(&failed_out).is_empty(),
        "{:?}",
        files_below(&failed_out)
    );

    // Made again from the flat database into the pipeline's path, it no longer fits: validate
    // says so (and succeeds: a run would only be slower).
    std::fs::copy(&other, &index).unwrap();
    let said = ok(&logcensus(&["validate", "--pipeline", p.to_str().unwrap()]));
    assert!(
        said.contains("  geoip index: not used by runs: address index ")
            && said.contains("city.idx was made from another database"),
        "{said}"
    );
}
