//! Bad input: a clear error naming the file and what to do, or counted rejections; never a crash,
//! and never a good line lost.

use super::*;
use std::io::Write;

const GOOD: &str =
    "203.0.113.10 - - [17/May/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"curl/8.0\"\n";

fn quality_only(dir: &Path) -> PathBuf {
    pipeline(
        dir,
        "q",
        "[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"day\"\ntables = [\"traffic_quality\"]\ncrawlers = \"include\"\n",
    )
}

fn run_on(dir: &Path, input: &Path) -> (Output, PathBuf) {
    let p = quality_only(dir);
    let out = dir.join("out");
    let o = run_with(&p, input, &out, &test_mmdb(), "info");
    (o, out)
}

#[test]
fn binary_garbage_is_counted_and_good_lines_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::new();
    let mut x: u32 = 0x9e3779b9;
    for _ in 0..3 {
        for _ in 0..40_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push((x >> 24) as u8);
        }
        data.push(b'\n');
        data.extend_from_slice(GOOD.as_bytes());
    }
    let input = dir.path().join("garbage.log");
    std::fs::write(&input, &data).unwrap();
    let (o, out) = run_on(dir.path(), &input);
    ok(&o);
    let lines = data.iter().filter(|&&b| b == b'\n').count() as i64
        + i64::from(*data.last().unwrap() != b'\n');
    assert_eq!(sum(&out, "traffic_quality", "requests"), 3);
    assert_eq!(sum(&out, "traffic_quality", "rejected_lines"), lines - 3);
}

#[test]
fn truncated_gzip_keeps_every_complete_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..20_000 {
        writeln!(enc, "203.0.113.{} - - [17/May/2026:10:00:00 +0000] \"GET /{i} HTTP/1.1\" 200 {i} \"-\" \"curl/8.0\"", i % 250).unwrap();
    }
    let gz = enc.finish().unwrap();
    let input = dir.path().join("cut.log.gz");
    std::fs::write(&input, &gz[..gz.len() * 2 / 3]).unwrap();
    let (o, out) = run_on(dir.path(), &input);
    let t = ok(&o);
    assert!(t.contains("ended early"), "{t}");
    assert!(t.contains("cut.log.gz"), "the message names the file:\n{t}");
    let requests = sum(&out, "traffic_quality", "requests");
    assert!(requests > 5_000 && requests < 20_000, "{requests}");
    assert_eq!(sum(&out, "traffic_quality", "rejected_truncated_input"), 1);
    // The complete lines counted are exactly the first `requests` lines: bytes 0..requests-1.
    let expected: i64 = (0..requests).sum();
    assert_eq!(sum(&out, "traffic_quality", "bytes"), expected);
}

#[test]
fn megabyte_lines_are_rejected_without_losing_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = GOOD.as_bytes().to_vec();
    data.extend(std::iter::repeat_n(b'A', 1 << 20));
    data.push(b'\n');
    data.extend_from_slice(GOOD.as_bytes());
    let input = dir.path().join("long.log");
    std::fs::write(&input, &data).unwrap();
    let (o, out) = run_on(dir.path(), &input);
    ok(&o);
    assert_eq!(sum(&out, "traffic_quality", "requests"), 2);
    assert_eq!(sum(&out, "traffic_quality", "rejected_line_too_long"), 1);
}

#[test]
fn invalid_utf8_is_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = GOOD.as_bytes().to_vec();
    data.extend_from_slice(b"203.0.113.10 - - [17/May/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"\xff\xfe\"\n");
    data.extend_from_slice(GOOD.as_bytes());
    let input = dir.path().join("utf8.log");
    std::fs::write(&input, &data).unwrap();
    let (o, out) = run_on(dir.path(), &input);
    ok(&o);
    let q = rows(&out, "traffic_quality");
    assert_eq!(get(&q[0], "requests"), "2");
    assert_eq!(get(&q[0], "rejected_invalid_utf8"), "1");
}

#[test]
fn the_wrong_format_is_counted_and_called_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("caddy.jsonl");
    std::fs::write(
        &input,
        "{\"ts\":1779012000.5,\"request\":{\"remote_ip\":\"203.0.113.1\",\"method\":\"GET\"},\"status\":200}\n".repeat(5),
    )
    .unwrap();
    let (o, _) = run_on(dir.path(), &input);
    let t = ok(&o);
    assert!(t.contains("rejected bad_layout: 5"), "{t}");
    assert!(
        t.contains("no line could be parsed"),
        "a run that parses nothing says so:\n{t}"
    );
}

#[test]
fn missing_and_unreadable_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.log");
    let (o, _) = run_on(dir.path(), &missing);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "error: input {} does not exist; check the path given with --input or in [source] inputs",
            missing.display()
        )
    );
    let (o, _) = run_on(dir.path(), dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("is a directory"), "{}", text(&o));
}

#[test]
fn missing_or_corrupt_geoip_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.log");
    std::fs::write(&input, GOOD).unwrap();
    let p = quality_only(dir.path());
    for (db, expect) in [
        (
            dir.path().join("missing.mmdb"),
            "cannot read GeoIP database",
        ),
        (input.clone(), "is not a usable MaxMind DB (.mmdb) file"),
    ] {
        let o = run_with(&p, &input, &dir.path().join("out"), &db, "info");
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains(expect), "{t}");
        assert!(t.contains(&db.display().to_string()), "names the file: {t}");
        assert!(t.contains("--geoip"), "says what to do: {t}");
    }
}

/// Many inputs are read by several readers at once (one per two workers): each damaged file is
/// named and counted once, every complete line of every file counts, and the tables are those
/// of a single reader (`--threads 1`).
#[test]
fn inputs_read_side_by_side_count_as_one_reader_does() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let line = |f: usize, i: usize| {
        format!("203.0.113.{} - - [17/May/2026:1{}:00:00 +0000] \"GET /{i} HTTP/1.1\" 200 {i} \"https://site{f}.example/\" \"curl/8.{f}\"\n", i % 250, f % 10)
    };
    let mut complete = 0i64;
    for f in 0..7 {
        let text: String = (0..3_000).map(|i| line(f, i)).collect();
        if f % 3 == 1 {
            // Cut inside the gzip stream: only the lines before the cut count.
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(text.as_bytes()).unwrap();
            let gz = enc.finish().unwrap();
            std::fs::write(logs.join(format!("{f}.log.gz")), &gz[..gz.len() / 2]).unwrap();
        } else if f % 2 == 0 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(text.as_bytes()).unwrap();
            std::fs::write(logs.join(format!("{f}.log.gz")), enc.finish().unwrap()).unwrap();
            complete += 3_000;
        } else {
            std::fs::write(logs.join(format!("{f}.log")), text).unwrap();
            complete += 3_000;
        }
    }
    let p = pipeline(
        dir.path(),
        "all",
        "[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"hour\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"include\"\n",
    );
    let pattern = format!("{}/*", logs.display());
    let mmdb = test_mmdb();
    let run_with = |threads: &str, out: &Path, more: &[&str]| {
        let mut args = vec![
            "run",
            "--pipeline",
            p.to_str().unwrap(),
            "--input",
            &pattern,
            "--out",
            out.to_str().unwrap(),
            "--geoip",
            mmdb.to_str().unwrap(),
            "--threads",
            threads,
        ];
        args.extend_from_slice(more);
        ok(&logcensus(&args))
    };
    let run = |threads: &str, out: &Path| run_with(threads, out, &[]);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let t1 = run("1", &one);
    // Four workers, two readers.
    let t2 = run("4", &two);
    // Two workers, each bound to a core (on a machine with two or more) and not.
    let (bound, free) = (dir.path().join("bound"), dir.path().join("free"));
    run("2", &bound);
    run_with("2", &free, &["--no-pin"]);
    for t in [&t1, &t2] {
        // In the summary once each, in the order of the inputs.
        let at: Vec<usize> = ["1.log.gz ended early", "4.log.gz ended early"]
            .iter()
            .map(|d| {
                assert_eq!(t.matches(d).count(), 1, "{d}:\n{t}");
                t.find(d).unwrap()
            })
            .collect();
        assert!(at[0] < at[1], "{t}");
    }
    for table in [
        "traffic_by_region",
        "clients",
        "referrers",
        "traffic_quality",
    ] {
        assert_eq!(rows(&one, table), rows(&two, table), "{table}");
        assert_eq!(rows(&one, table), rows(&bound, table), "{table}");
        assert_eq!(rows(&one, table), rows(&free, table), "{table}");
    }
    assert_eq!(sum(&two, "traffic_quality", "rejected_truncated_input"), 2);
    let requests = sum(&two, "traffic_quality", "requests");
    assert!(
        requests > complete && requests < complete + 6_000,
        "every complete line and part of each cut file: {requests}"
    );
    assert_eq!(
        sum(&two, "referrers", "requests"),
        requests,
        "referrers count every request"
    );
}

/// A plain file is read in pieces by every worker at once: a file of many pieces, with damaged
/// lines (garbage, invalid UTF-8, over-long lines, some crossing piece boundaries), `\r\n`
/// endings and no final newline, gives the tables and rejection counts of the same bytes
/// gzipped (read as one stream), with 1 and 3 workers; and the debug log numbers the rejected
/// lines as they are numbered in the file.
#[test]
fn a_plain_file_read_in_pieces_counts_as_one_stream_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    let mut bad_lines = Vec::new();
    for i in 1..=12_000usize {
        let line = match i % 997 {
            5 => b"\x00\x01 binary garbage".to_vec(),
            6 => b"203.0.113.9 - - [17/May/2026:10:00:00 +0000] \"GET /\xff HTTP/1.1\" 200 1 \"-\" \"x\"".to_vec(),
            // Over the 64 KiB line limit: spans a piece boundary or two.
            7 => vec![b'x'; 70_000 + i],
            _ => format!(
                "203.0.113.{} - - [17/May/2026:{:02}:{:02}:00 +0000] \"GET /{i} HTTP/1.1\" {} {} \"https://site{}.example/\" \"curl/8.{}\"",
                i % 251,
                i % 24,
                i % 60,
                [200, 404, 301][i % 3],
                i % 5_000,
                i % 13,
                i % 7
            )
            .into_bytes(),
        };
        if i % 997 == 5 {
            bad_lines.push(i);
        }
        text.extend_from_slice(&line);
        if i < 12_000 {
            text.extend_from_slice(if i % 11 == 0 { b"\r\n" } else { b"\n" });
        }
    }
    assert!(text.len() > 6 * 256 * 1024, "{} bytes", text.len());
    let plain = dir.path().join("access.log");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.path().join("access.log.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&text).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let p = pipeline(
        dir.path(),
        "all",
        "[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"hour\"\ntables = [\"traffic_by_region\", \"clients\", \"referrers\", \"traffic_quality\"]\ncrawlers = \"include\"\n",
    );
    let run = |input: &Path, threads: &str, out: &Path| {
        ok(&logcensus(&[
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
            "--threads",
            threads,
            "--visitor-key-file",
            visitor_key_file().to_str().unwrap(),
        ]))
    };
    let stream = dir.path().join("stream");
    run(&gz, "1", &stream);
    for threads in ["1", "3"] {
        let out = dir.path().join(format!("pieces-{threads}"));
        let log = run(&plain, threads, &out);
        for table in ["traffic_by_region", "clients", "referrers"] {
            assert_eq!(
                rows(&out, table),
                rows(&stream, table),
                "{table}, {threads} threads"
            );
        }
        // A rejected line has no time of its own: it is counted in the period of a line next to
        // it in its batch, and batches are cut elsewhere than pieces. Every other column is
        // equal row by row, and each rejection column in total.
        let timed = |out: &Path| -> Vec<Vec<String>> {
            rows(out, "traffic_quality")
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .filter(|c| !c.starts_with("rejected_") && !c.starts_with("parse_errors"))
                        .collect()
                })
                .collect()
        };
        assert_eq!(timed(&out), timed(&stream), "{threads} threads");
        for column in [
            "rejected_lines",
            "rejected_invalid_utf8",
            "rejected_line_too_long",
            "rejected_bad_layout",
            "parse_errors",
        ] {
            assert_eq!(
                sum(&out, "traffic_quality", column),
                sum(&stream, "traffic_quality", column),
                "{column}, {threads} threads"
            );
        }
        // Each worker describes its first ten rejections, by the line's number in the file.
        for line in &bad_lines[..3] {
            assert!(
                log.contains(&format!("line={line} reason=")),
                "line {line}, {threads} threads:\n{log}"
            );
        }
        assert!(log.contains("read 12000 lines"), "{log}");
    }
    assert_eq!(sum(&stream, "traffic_quality", "requests"), 12_000 - 3 * 13);
    assert_eq!(
        sum(&stream, "traffic_quality", "rejected_line_too_long"),
        13
    );
    assert_eq!(sum(&stream, "traffic_quality", "rejected_invalid_utf8"), 13);
    assert_eq!(sum(&stream, "traffic_quality", "rejected_bad_layout"), 13);
}

/// A named pipe (what `<(zcat access.log.gz)` gives) is read once, whole: checking it before
/// the run must not take its writer's first lines, or its writer.
#[cfg(unix)]
#[test]
fn a_named_pipe_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let text: String = (0..5_000).map(|_| GOOD).collect();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            // Blocks until logcensus opens the pipe to read it.
            std::fs::write(&fifo, text).unwrap();
        })
    };
    let p = pipeline(
        dir.path(),
        "pipe",
        "[source]\nformat = \"combined\"\n\n[aggregate]\nperiod = \"day\"\ntables = [\"traffic_quality\"]\ncrawlers = \"include\"\n",
    );
    let out = dir.path().join("out");
    let t = ok(&run_with(&p, &fifo, &out, &test_mmdb(), "info"));
    writer.join().unwrap();
    assert!(t.contains("read 5000 lines"), "{t}");
    assert_eq!(sum(&out, "traffic_quality", "requests"), 5_000);
}

/// `--log` takes a level or `target=level` directives; one that does not parse is named on
/// stderr and the run goes on at info level.
#[test]
fn log_levels_and_a_filter_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.log");
    std::fs::write(&input, GOOD).unwrap();
    let p = quality_only(dir.path());
    let run = |log: &str, out: &str| {
        ok(&run_with(
            &p,
            &input,
            &dir.path().join(out),
            &test_mmdb(),
            log,
        ))
    };

    let warn = run("warn", "warn");
    assert!(!warn.contains("run started"), "{warn}");
    let info = run("info", "info");
    assert!(info.contains("INFO run started"), "{info}");
    assert!(!info.contains("every line counted"), "{info}");
    let targeted = run("warn,logcensus_pipeline=debug", "targeted");
    assert!(targeted.contains("DEBUG every line counted"), "{targeted}");
    assert!(!targeted.contains("run started"), "{targeted}");

    let bad = run("bogus=[x", "bad");
    assert!(
        bad.contains(
            "logcensus: --log / LOGCENSUS_LOG `bogus=[x` is not a level or `target=level` list"
        ),
        "{bad}"
    );
    assert!(bad.contains("INFO run started"), "{bad}");
    assert!(!bad.contains("DEBUG"), "{bad}");
}
