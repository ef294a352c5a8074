//! Personal data planted in every field that must not survive; none may reach any output.

use super::*;

/// Unique markers, one per field that must never leave the process.
const MARKERS: &[(&str, &str)] = &[
    ("client address", "198.51.100.201"),
    ("forwarded-for address", "2001:db8:dead:beef::77"),
    ("remote user", "markeruser-q7z"),
    ("request path", "markerpath-q7z"),
    ("query string", "markerquery-q7z"),
    ("User-Agent", "markerua-q7z"),
    ("referrer path", "markerrefpath-q7z"),
    ("referrer query", "markerrefq-q7z"),
    ("cookie", "markercookie-q7z"),
    ("full User-Agent prefix", "Mozilla/5.0"),
    // Where User-Agent parsers copy free text into version fields (woothee: FreeBSD, ChromeOS,
    // Japanese carriers).
    ("FreeBSD host name in a User-Agent", "markerbsdhost"),
    ("ChromeOS build in a User-Agent", "markercros"),
    ("KDDI device in a User-Agent", "markerkddi"),
    ("DoCoMo device in a User-Agent", "markerdocomo"),
    // A customer's name under a private public suffix.
    ("personal sub-domain of a hosting site", "markerperson"),
];

/// User-Agents whose personal parts a parser might echo, one request each.
const ODD_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; FreeBSD markerbsdhost; rv:115.0) Gecko/20100101 Firefox/115.0",
    "Mozilla/5.0 (X11; CrOS markercros) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "KDDI-markerkddi UP.Browser/6.2.0.13.1.5 (GUI) MMP/2.0",
    "DoCoMo/2.0 markerdocomo(c100;TB;W24H16)",
];

const FORMAT: &str = r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" \"%{X-Forwarded-For}i\" \"%{Cookie}i\""#;

fn planted_log() -> String {
    let mut log = String::new();
    let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 markerua-q7z";
    for i in 0..30 {
        log.push_str(&format!(
            "198.51.100.201 - markeruser-q7z [17/May/2026:10:{:02}:00 +0000] \"GET /markerpath-q7z/page.html?token=markerquery-q7z HTTP/1.1\" 200 {} \"https://www.partner-site.org/markerrefpath-q7z/x?markerrefq-q7z=1\" \"{ua}\" \"2001:db8:dead:beef::77, 198.51.100.201\" \"session=markercookie-q7z\"\n",
            i, 100 + i
        ));
    }
    for (i, ua) in ODD_AGENTS.iter().enumerate() {
        log.push_str(&format!(
            "198.51.100.201 - - [17/May/2026:10:3{i}:00 +0000] \"GET / HTTP/1.1\" 200 1 \"https://markerperson.github.io/blog\" \"{ua}\" \"-\" \"-\"\n"
        ));
    }
    // Malformed lines carrying markers: rejected, and described only by file, line and reason.
    log.push_str("198.51.100.201 - markeruser-q7z [17/May/2026:11:00:00 +0000] \"GET /markerpath-q7z?markerquery-q7z HTTP/1.1\" 200 5 \"https://x.org/markerrefpath-q7z\" \"markerua-q7z\n");
    log.push_str("markeruser-q7z markerpath-q7z 2001:db8:dead:beef::77\n");
    log
}

#[test]
fn no_planted_marker_survives_in_values_metadata_paths_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    std::fs::write(&input, planted_log()).unwrap();
    let out = dir.path().join("out");
    let body = format!(
        "[source]\nformat = \"apache\"\nlog_format = '{}'\nclient_address = \"forwarded_for\"\n\n[aggregate]\nperiod = \"hour\"\ngeo_level = \"region\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"include\"\n",
        FORMAT.replace("\\\"", "\"")
    );
    let p = pipeline(dir.path(), "planted", &body);
    let mut seen = run_debug(&p, &input, &out);
    // The run really counted the planted lines (the test would be empty otherwise).
    assert_eq!(sum(&out, "traffic_quality", "requests"), 34);
    assert_eq!(sum(&out, "traffic_quality", "rejected_lines"), 2);
    assert!(
        seen.contains("line rejected"),
        "debug log describes rejections:\n{seen}"
    );
    let refs: Vec<String> = rows(&out, "referrers")
        .iter()
        .map(|r| get(r, "referrer_domain").to_string())
        .collect();
    assert_eq!(refs, ["github.io", "partner-site.org"]);
    let browsers: Vec<String> = rows(&out, "clients")
        .iter()
        .map(|r| format!("{} {}", get(r, "browser"), get(r, "browser_version")))
        .collect();
    assert!(browsers.contains(&"Chrome 120".to_string()), "{browsers:?}");
    assert!(
        browsers.contains(&"Firefox 115".to_string()),
        "{browsers:?}"
    );

    seen.push_str(&everything_visible(&out));
    assert!(files_below(&out).len() >= 4);
    for (field, marker) in MARKERS {
        assert!(
            !seen.contains(marker),
            "the {field} marker `{marker}` survived into the output or logs"
        );
    }
}

#[test]
fn no_planted_marker_survives_from_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.jsonl");
    let mut log = String::new();
    for i in 0..20 {
        log.push_str(&format!(
            "{{\"time_iso8601\":\"2026-05-17T10:{i:02}:00+00:00\",\"remote_addr\":\"198.51.100.201\",\"remote_user\":\"markeruser-q7z\",\"request\":\"GET /markerpath-q7z?markerquery-q7z HTTP/1.1\",\"request_method\":\"GET\",\"status\":\"200\",\"body_bytes_sent\":\"5\",\"http_referer\":\"https://markerperson.github.io/markerrefpath-q7z?markerrefq-q7z\",\"http_user_agent\":\"{}\",\"http_x_forwarded_for\":\"2001:db8:dead:beef::77\",\"host\":\"www.example.com\",\"http_cookie\":\"markercookie-q7z\"}}\n",
            ODD_AGENTS[i % ODD_AGENTS.len()]
        ));
    }
    std::fs::write(&input, &log).unwrap();
    let out = dir.path().join("out");
    let p = pipeline(
        dir.path(),
        "planted-json",
        "[source]\nformat = \"json\"\njson_preset = \"nginx\"\nclient_address = \"forwarded_for\"\n\n[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"include\"\n",
    );
    let mut seen = run_debug(&p, &input, &out);
    assert_eq!(sum(&out, "traffic_quality", "requests"), 20);
    seen.push_str(&everything_visible(&out));
    for (field, marker) in MARKERS {
        assert!(
            !seen.contains(marker),
            "the {field} marker `{marker}` survived"
        );
    }
}
