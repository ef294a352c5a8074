use super::*;
use std::io::Write;

fn lines(entries: &[(Entry, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(e, b)| match e {
            Entry::Line { .. } => String::from_utf8_lossy(b).into_owned(),
            Entry::TooLong => "<too long>".into(),
            Entry::Truncated => "<truncated>".into(),
        })
        .collect()
}

#[test]
fn splits_lines_with_and_without_final_newline() {
    let got = read_all_entries(&b"a\nbb\r\n\nccc"[..], 100);
    assert_eq!(lines(&got), ["a", "bb", "", "ccc"]);
    let got = read_all_entries(&b"a\n"[..], 100);
    assert_eq!(lines(&got), ["a"]);
    assert!(read_all_entries(&b""[..], 100).is_empty());
}

#[test]
fn long_lines_are_rejected_without_losing_neighbours() {
    let mut input = b"short1\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1_000_000));
    input.extend(b"\nshort2\n");
    input.extend(std::iter::repeat_n(b'y', 11));
    input.extend(b"\nshort3");
    let got = read_all_entries(&input[..], 10);
    assert_eq!(
        lines(&got),
        ["short1", "<too long>", "short2", "<too long>", "short3"]
    );
}

#[test]
fn long_final_line_without_newline_is_rejected() {
    let mut input = b"ok\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', 500_000));
    let got = read_all_entries(&input[..], 1000);
    assert_eq!(lines(&got), ["ok", "<too long>"]);
}

#[test]
fn many_batches_keep_every_line_and_line_numbers() {
    let mut input = Vec::new();
    for i in 0..200_000 {
        writeln!(input, "line number {i}").unwrap();
    }
    let mut reader = LineReader::new(&input[..], 100);
    let mut n = 0u64;
    let mut batches = 0;
    while let Some(batch) = reader.next_batch().unwrap() {
        assert_eq!(batch.first_line, n + 1);
        for e in &batch.entries {
            let Entry::Line { start, end } = *e else {
                panic!("unexpected {e:?}")
            };
            assert_eq!(
                batch.line(start, end),
                format!("line number {n}").as_bytes()
            );
            n += 1;
        }
        batches += 1;
    }
    assert_eq!(n, 200_000);
    assert!(batches > 1, "input should span several batches");
}

#[test]
fn line_limit_larger_than_batch_target_still_progresses() {
    let big = vec![b'q'; 400_000];
    let mut input = big.clone();
    input.extend(b"\nend\n");
    let got = read_all_entries(&input[..], 1 << 20);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 400_000);
    assert_eq!(got[1].1, b"end");
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn detects_gzip_and_zstd_by_magic() {
    let dir = tempdir();
    let plain = b"one\ntwo\n";
    let gz = dir.join("a.log.gz");
    std::fs::write(&gz, gzip(plain)).unwrap();
    let zs = dir.join("b.log.zst");
    std::fs::write(&zs, zstd::encode_all(&plain[..], 3).unwrap()).unwrap();
    // A gzip file without the .gz suffix is still decompressed.
    let hidden = dir.join("c.log");
    std::fs::write(&hidden, gzip(plain)).unwrap();
    for p in [gz, zs, hidden] {
        let r = open_input(&Input::File(p.clone())).unwrap();
        assert_eq!(lines(&read_all_entries(r, 100)), ["one", "two"], "{p:?}");
    }
}

#[test]
fn truncated_gzip_keeps_complete_lines_and_reports_failure() {
    let mut data = Vec::new();
    for i in 0..5000 {
        writeln!(
            data,
            "request {i} with some padding to make the stream longer"
        )
        .unwrap();
    }
    let gz = gzip(&data);
    let cut = &gz[..gz.len() / 2];
    let dir = tempdir();
    let path = dir.join("cut.log.gz");
    std::fs::write(&path, cut).unwrap();
    let mut reader = LineReader::new(open_input(&Input::File(path)).unwrap(), 1000);
    let mut good = 0;
    let mut truncated = 0;
    while let Some(batch) = reader.next_batch().unwrap() {
        for e in &batch.entries {
            match *e {
                Entry::Line { start, end } => {
                    let line = batch.line(start, end);
                    assert_eq!(
                        line,
                        format!("request {good} with some padding to make the stream longer")
                            .as_bytes()
                    );
                    good += 1;
                }
                Entry::Truncated => truncated += 1,
                Entry::TooLong => panic!("no long lines here"),
            }
        }
    }
    assert_eq!(truncated, 1);
    assert!(good > 1000 && good < 5000, "kept {good} complete lines");
    let failure = reader
        .take_failure()
        .expect("a truncated stream is a failure");
    assert_eq!(failure.after_line, good);
}

#[test]
fn missing_inputs_and_globs_are_clear_errors() {
    let err = expand_inputs(&["/nonexistent/access.log".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input /nonexistent/access.log does not exist; check the path given with --input or in [source] inputs"
    );
    let err = expand_inputs(&["/nonexistent/*.log".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the pattern `/nonexistent/*.log` matches no file; check the path given with --input or in [source] inputs"
    );
    let dir = tempdir();
    std::fs::write(dir.join("b.log"), "x").unwrap();
    std::fs::write(dir.join("a.log"), "x").unwrap();
    std::fs::write(dir.join("c.txt"), "x").unwrap();
    let got = expand_inputs(&[format!("{}/*.log", dir.display()), "-".into()]).unwrap();
    assert_eq!(
        got,
        [
            Input::File(dir.join("a.log")),
            Input::File(dir.join("b.log")),
            Input::Stdin
        ]
    );
    let err = expand_inputs(&[dir.display().to_string()]).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[test]
fn unreadable_input_names_the_path() {
    // A directory opens on Linux but cannot be read, even as root: a stand-in for any
    // unreadable file.
    let dir = tempdir();
    let err = open_input(&Input::File(dir.clone())).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot open input {}: Is a directory (os error 21); check that the file exists and is readable",
            dir.display()
        )
    );
}

fn tempdir() -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    dir.keep()
}

#[test]
fn reused_batches_hold_the_same_lines_as_new_ones() {
    // Lines across several batches, an over-long one among them, and no final newline.
    let mut input = Vec::new();
    for i in 0..60_000 {
        input.extend(format!("line {i} {}\n", "z".repeat(i % 17)).as_bytes());
        if i == 30_000 {
            input.extend(std::iter::repeat_n(b'x', 300_000));
            input.push(b'\n');
        }
    }
    input.extend(b"last");
    let fresh = read_all_entries(&input[..], 1000);
    let mut lr = LineReader::new(&input[..], 1000);
    let mut spent = Batch {
        data: b"stale bytes".to_vec(),
        entries: vec![Entry::Truncated; 3],
        first_line: 99,
        // Marks of bytes that are gone: a stream reader marks nothing.
        marks: crate::marks::Marks {
            newlines: vec![u64::MAX; 4],
            quotes: vec![u64::MAX; 4],
        },
        newlines: vec![7; 3],
    };
    let mut reused = Vec::new();
    let mut batches = 0;
    while let Ok(Some(batch)) = lr.next_batch_in(spent) {
        batches += 1;
        assert_eq!(batch.quotes(), None);
        for e in &batch.entries {
            let bytes = match *e {
                Entry::Line { start, end } => batch.line(start, end).to_vec(),
                _ => Vec::new(),
            };
            reused.push((*e, bytes));
        }
        spent = batch;
    }
    assert!(batches > 2, "the input spans several batches");
    assert_eq!(reused, fresh);
    assert_eq!(lines(&fresh)[30_001], "<too long>");
}
