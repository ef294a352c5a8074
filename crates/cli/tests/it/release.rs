//! Partner release: a realistic crowd plus rare visitors carrying personal data.

use super::*;
use std::io::Read;

const K: i64 = 10;

/// What `rare_lines` plants (addresses, User-Agents, referrer hosts, paths and queries, user
/// names) that no release may show.
const RARE_MARKERS: [&str; 11] = [
    "86.144.1.1",
    "86.144.1.2",
    "2804:14c::77",
    "markerua-rare",
    "markerrare-site",
    "markerrefpath-rare",
    "markerrefq-rare",
    "markerperson",
    "markeruser-rare",
    "markerpath-rare",
    "markerquery-rare",
];

/// Rare visitors: unique browsers, a rare region, a personal referrer, markers everywhere.
fn rare_lines() -> String {
    let mut log = String::new();
    for (i, (ip, ua, referrer)) in [
        (
            "86.144.1.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:3.0) Gecko/20100101 Firefox/3.0 markerua-rare",
            "https://markerrare-site.org/markerrefpath-rare?q=markerrefq-rare",
        ),
        (
            "86.144.1.2",
            "Opera/9.80 (X11; Linux x86_64) Presto/2.12.388 Version/12.16 markerua-rare2",
            "https://someone-markerperson.github.io/x",
        ),
        (
            "2804:14c::77",
            "Lynx/2.8.9rel.1 libwww-FM/2.14 markerua-rare3",
            "http://markerrare-site2.com.br/",
        ),
    ]
    .iter()
    .enumerate()
    {
        for j in 0..3 {
            log.push_str(&format!(
                "{ip} - markeruser-rare [17/May/2026:1{i}:0{j}:00 +0000] \"GET /markerpath-rare?markerquery-rare HTTP/1.1\" 200 123 \"{referrer}\" \"{ua}\"\n"
            ));
        }
    }
    // A quiet day: 12 visitors spread over three US regions, each region under k, together
    // over it: released as the (other) region of the US.
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    for ip in (1..=6)
        .map(|i| format!("3.80.0.{i}"))
        .chain((1..=5).map(|i| format!("13.56.0.{i}")))
        .chain(["52.32.0.1".to_string()])
    {
        log.push_str(&format!(
            "{ip} - - [19/May/2026:08:00:00 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"{chrome}\"\n"
        ));
    }
    log
}

fn crowd_plus_rare(dir: &Path) -> PathBuf {
    let mut crowd = Vec::new();
    flate2::read::MultiGzDecoder::new(
        std::fs::File::open(root().join("fixtures/logs/sample-combined.log.gz")).unwrap(),
    )
    .read_to_end(&mut crowd)
    .unwrap();
    crowd.extend_from_slice(rare_lines().as_bytes());
    let input = dir.join("crowd.log");
    std::fs::write(&input, crowd).unwrap();
    input
}

/// `withheld_requests` logged per table.
fn withheld(log: &str, table: &str) -> i64 {
    log.lines()
        .find(|l| l.contains("small cells") && l.contains(&format!("table=\"{table}\"")))
        .and_then(|l| l.split("withheld_requests=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no release line for {table} in:\n{log}"))
        .parse()
        .unwrap()
}

#[test]
fn partner_release_holds_k_and_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let input = crowd_plus_rare(dir.path());
    let geo = format!("[geoip]\ndatabase = \"{}\"\n", test_mmdb().display());
    let agg = "[aggregate]\nperiod = \"day\"\ngeo_level = \"region\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"exclude\"\nown_domains = [\"example.com\"]\n";
    let released_p = pipeline(
        dir.path(),
        "released",
        &format!("{geo}{agg}\n[release]\nmin_visitors = {K}\n"),
    );
    let plain_p = pipeline(dir.path(), "plain", &format!("{geo}{agg}"));
    let (released, plain) = (dir.path().join("released"), dir.path().join("plain"));
    let mut log = String::new();
    for (p, out) in [(&released_p, &released), (&plain_p, &plain)] {
        log.push_str(&run_debug(p, &input, out));
    }

    for table in ["traffic_by_region", "clients", "referrers"] {
        let rows = rows(&released, table);
        assert!(!rows.is_empty());
        for r in &rows {
            let v: i64 = get(r, "visitors").parse().unwrap();
            assert!(v >= K, "{table}: a released row has {v} visitors: {r:?}");
        }
        // Released rows (with their (other) rows) plus what was withheld are all the requests.
        assert_eq!(
            sum(&released, table, "requests") + withheld(&log, table),
            sum(&plain, table, "requests"),
            "{table}"
        );
        // And the rare rows really were there before the release.
        let plain_small = rows_under_k(&plain, table);
        assert!(
            plain_small > 0,
            "{table} has rows under k before the release"
        );
    }
    assert!(
        rows(&released, "traffic_by_region")
            .iter()
            .any(|r| get(r, "region") == "(other)"),
        "small regions roll up into an (other) region of their country"
    );

    let mut seen = log.clone();
    for table in [
        "traffic_by_region",
        "clients",
        "referrers",
        "traffic_quality",
    ] {
        for r in rows(&released, table) {
            seen.push_str(&r.join(" "));
        }
    }
    for f in files_below(&released) {
        let shown = ok(&logcensus(&[
            "inspect",
            f.to_str().unwrap(),
            "--rows",
            "10000",
        ]));
        if !f.to_str().unwrap().contains("traffic_quality") {
            assert!(
                shown.contains("logcensus.release.min_visitors = 10"),
                "k is in the metadata of {}",
                f.display()
            );
        }
        seen.push_str(&shown);
    }
    for marker in RARE_MARKERS {
        assert!(!seen.contains(marker), "`{marker}` survived the release");
    }
}

fn rows_under_k(out: &Path, table: &str) -> usize {
    rows(out, table)
        .iter()
        .filter(|r| get(r, "visitors").parse::<i64>().unwrap() < K)
        .count()
}

#[test]
fn audit_passes_a_clean_release_and_fails_a_doctored_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = root().join("pipelines/partner-daily.toml");
    ok(&logcensus(&[
        "run",
        "--pipeline",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let clean = logcensus(&[
        "audit",
        out.to_str().unwrap(),
        "--pipeline",
        p.to_str().unwrap(),
    ]);
    let t = ok(&clean);
    assert!(t.contains(", 0 violations"), "{t}");
    // A stricter k than the release used: rows under it are named by file, column and row.
    let strict = logcensus(&[
        "audit",
        out.to_str().unwrap(),
        "--pipeline",
        p.to_str().unwrap(),
        "--min-visitors",
        "1000",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let t = text(&strict);
    assert!(
        t.contains("traffic_by_region/date=2026-05-17/part-00000.parquet: column visitors, row 0"),
        "{t}"
    );
    // A file dropped into the release is caught.
    std::fs::write(
        out.join("clients/date=2026-05-17/notes.txt"),
        "198.51.100.7",
    )
    .unwrap();
    let stray = logcensus(&[
        "audit",
        out.to_str().unwrap(),
        "--pipeline",
        p.to_str().unwrap(),
    ]);
    assert_eq!(stray.status.code(), Some(1));
    assert!(text(&stray).contains("notes.txt"), "{}", text(&stray));
}

#[test]
fn dp_release_of_the_crowd_drops_rare_rows_and_passes_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let input = crowd_plus_rare(dir.path());
    let p = root().join("pipelines/partner-dp.toml");
    let run_once = |out: &Path| run_debug(&p, &input, out);
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let mut seen = run_once(&first);
    assert!(seen.contains("differentially private release"), "{seen}");
    run_once(&second);
    // A date is released once: running again into the same directory is refused.
    let again = logcensus(&[
        "run",
        "--pipeline",
        p.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again).contains("was released with differential privacy: releasing the same date again draws fresh noise"),
        "{}",
        text(&again)
    );

    for table in ["traffic_by_region", "clients", "referrers"] {
        let released = rows(&first, table);
        assert!(
            !released.is_empty(),
            "{table}: the crowd's large rows are released"
        );
        for r in &released {
            for column in ["visitors", "requests"] {
                let n: i64 = get(r, column).parse().unwrap();
                assert!(n >= K, "{table}.{column} = {n} in {r:?}");
            }
            let v: i64 = get(r, "visitors").parse().unwrap();
            let q: i64 = get(r, "requests").parse().unwrap();
            assert!(q >= v, "{table}: requests {q} < visitors {v}");
            seen.push_str(&r.join(" "));
        }
        // Noise is drawn afresh on every run (from OpenSSL's CSPRNG): two runs differ.
        let second_rows = rows(&second, table);
        let again: Vec<&str> = second_rows.iter().map(|r| get(r, "requests")).collect();
        let now: Vec<&str> = released.iter().map(|r| get(r, "requests")).collect();
        assert_ne!(now, again, "{table}: same noisy counts twice");
    }
    // Rows of a few visitors never pass partition selection: no Firefox 3, no Opera, no Lynx,
    // no Brazilian region (2804:14c::77), no UK regions (86.144.x) and no (other) roll-ups.
    let clients = rows(&first, "clients");
    assert!(!clients
        .iter()
        .any(|r| get(r, "browser") == "Firefox" && get(r, "browser_version") == "3"));
    assert!(!clients
        .iter()
        .any(|r| ["Opera", "Lynx"].contains(&get(r, "browser"))));
    let regions = rows(&first, "traffic_by_region");
    assert!(!regions
        .iter()
        .any(|r| ["BR", "GB"].contains(&get(r, "country"))));
    for table in ["traffic_by_region", "clients", "referrers"] {
        assert!(!rows(&first, table)
            .iter()
            .any(|r| r.iter().any(|v| v.ends_with("=(other)"))));
    }

    for f in files_below(&first) {
        let shown = ok(&logcensus(&[
            "inspect",
            f.to_str().unwrap(),
            "--rows",
            "10000",
        ]));
        for key in [
            "mechanism = laplace",
            "epsilon = ",
            "delta = 0.0000001",
            "max_rows_per_visitor = 3",
            "noise_scale_requests = ",
        ] {
            assert!(
                shown.contains(&format!("logcensus.release.{key}")),
                "{key} in {shown}"
            );
        }
        seen.push_str(&shown);
    }
    for marker in RARE_MARKERS {
        assert!(!seen.contains(marker), "`{marker}` survived the DP release");
    }

    let audit = ok(&logcensus(&[
        "audit",
        first.to_str().unwrap(),
        "--pipeline",
        p.to_str().unwrap(),
    ]));
    assert!(audit.contains(", 0 violations"), "{audit}");
    // The same files audited against the thresholds-only pipeline: its parameters differ.
    let other = logcensus(&[
        "audit",
        first.to_str().unwrap(),
        "--pipeline",
        root()
            .join("pipelines/partner-daily.toml")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other).contains("`logcensus.release.mechanism` is recorded, but pipeline `partner-daily` sets no such release parameter"));
}
