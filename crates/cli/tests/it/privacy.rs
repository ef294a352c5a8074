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
    let run = logcensus(&[
        "--log",
        "debug",
        "run",
        "--pipeline",
        p.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--geoip",
        test_mmdb().to_str().unwrap(),
    ]);
    let mut seen = ok(&run);
    // The run really counted the planted lines (the test would be empty otherwise).
    assert_eq!(sum(&out, "traffic_quality", "requests"), 30);
    assert_eq!(sum(&out, "traffic_quality", "rejected_lines"), 2);
    assert!(
        seen.contains("line rejected"),
        "debug log describes rejections:\n{seen}"
    );
    let refs = rows(&out, "referrers");
    assert_eq!(get(&refs[0], "referrer_domain"), "partner-site.org");
    let clients = rows(&out, "clients");
    assert_eq!(get(&clients[0], "browser"), "Chrome");

    for table in [
        "traffic_by_region",
        "clients",
        "referrers",
        "traffic_quality",
    ] {
        for row in rows(&out, table) {
            seen.push_str(&row.join(" "));
            seen.push('\n');
        }
    }
    let files = files_below(&out);
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        seen.push_str(&f.display().to_string());
        seen.push('\n');
        // Metadata and first rows, as a reader would see them.
        let inspect = logcensus(&["inspect", f.to_str().unwrap(), "--rows", "1000"]);
        seen.push_str(&ok(&inspect));
        // And the raw bytes, in case something is stored uncompressed.
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap()));
    }
    for (field, marker) in MARKERS {
        assert!(
            !seen.contains(marker),
            "the {field} marker `{marker}` survived into the output or logs"
        );
    }
}
