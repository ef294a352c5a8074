//! End-to-end tests: the `logcensus` binary run as a user runs it, its Parquet output read back.

mod bad_input;
mod e2e;
mod interop;
mod privacy;
mod release;
mod stream;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};

/// Repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed GeoIP2-schema test database.
pub fn test_mmdb() -> PathBuf {
    root().join("fixtures/geoip/logcensus-test-city.mmdb")
}

/// Runs `logcensus` with arguments; a fixed visitor key unless the caller passes one.
pub fn logcensus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logcensus"))
        .args(args)
        .env("LOGCENSUS_VISITOR_KEY_FILE", visitor_key_file())
        .env_remove("LOGCENSUS_LOG")
        .output()
        .expect("the logcensus binary runs")
}

/// A visitor key file shared by the tests of this process, written once.
pub fn visitor_key_file() -> &'static Path {
    static KEY: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visitor-key");
        std::fs::write(&path, "it-test-visitor-secret-0123456789\n").unwrap();
        (dir, path)
    });
    path
}

/// Runs a pipeline over one input into `out` with a GeoIP database and a log level; the
/// outcome is the caller's to check.
pub fn run_with(p: &Path, input: &Path, out: &Path, geoip: &Path, log: &str) -> Output {
    logcensus(&[
        "--log",
        log,
        "run",
        "--pipeline",
        p.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--geoip",
        geoip.to_str().unwrap(),
    ])
}

/// Runs a pipeline over one input into `out` with the committed test database, at debug log
/// level; returns stdout and stderr, asserting success.
pub fn run_debug(p: &Path, input: &Path, out: &Path) -> String {
    ok(&run_with(p, input, out, &test_mmdb(), "debug"))
}

/// Everything a reader of `out` can see: every table value, every path, and what `inspect`
/// shows of every file (its metadata and rows).
pub fn everything_visible(out: &Path) -> String {
    let mut seen = String::new();
    for table in [
        "traffic_by_region",
        "clients",
        "referrers",
        "traffic_quality",
    ] {
        for row in rows(out, table) {
            seen.push_str(&row.join(" "));
            seen.push('\n');
        }
    }
    for f in files_below(out) {
        seen.push_str(&f.display().to_string());
        seen.push('\n');
        seen.push_str(&ok(&logcensus(&[
            "inspect",
            f.to_str().unwrap(),
            "--rows",
            "100000",
        ])));
    }
    seen
}

/// Stdout and stderr of a run, as one string.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a run succeeded, showing its output if not.
pub fn ok(out: &Output) -> String {
    let t = text(out);
    assert!(out.status.success(), "logcensus failed:\n{t}");
    t
}

/// A pipeline file in `dir` (policy: the shipped one) with the given sections appended.
pub fn pipeline(dir: &Path, name: &str, body: &str) -> PathBuf {
    let policy = root().join("pipelines/policies/site-privacy-policy.toml");
    let text = format!(
        "[pipeline]\nname = \"{name}\"\npolicy = \"{}\"\n\n{body}\n",
        policy.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Every row of a table, each as `column=value` strings in schema order.
pub fn rows(out: &Path, table: &str) -> Vec<Vec<String>> {
    let batches: Vec<RecordBatch> = logcensus_sink::read_table(out, table).unwrap();
    let opts = FormatOptions::default().with_null("null");
    let mut rows = Vec::new();
    for b in &batches {
        let schema = b.schema();
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .zip(schema.fields())
                    .map(|(f, field)| format!("{}={}", field.name(), f.value(r)))
                    .collect(),
            );
        }
    }
    rows
}

/// The value of `column` in a row from [`rows`].
pub fn get<'a>(row: &'a [String], column: &str) -> &'a str {
    let prefix = format!("{column}=");
    row.iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
}

/// Sum of an integer column over a table.
pub fn sum(out: &Path, table: &str, column: &str) -> i64 {
    rows(out, table)
        .iter()
        .map(|r| get(r, column).parse::<i64>().unwrap())
        .sum()
}

/// Every file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
