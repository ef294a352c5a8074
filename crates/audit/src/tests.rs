//! End-to-end audits of releases the tests write themselves: schemas, metadata and values are
//! chosen here, with arrow and the Parquet Arrow writer, not by logcensus's own writer.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::*;

const POLICY: &str = r#"
id = "test-policy-2026"
[client_address]
read = true
finest_geo = "region"
count_visitors = true
[user_agent]
read = true
major_versions = true
[referrer]
read = true
[time]
finest_period = "hour"
[request]
method = true
status = true
bytes = true
"#;

const PIPELINE: &str = r#"
[pipeline]
name = "partner-daily"
policy = "policy.toml"

[source]
inputs = ["access.log"]
format = "combined"

[aggregate]
period = "day"
geo_level = "region"
tables = ["traffic_by_region", "clients", "referrers", "traffic_quality"]
crawlers = "exclude"
"#;

/// 2026-05-17T00:00:00Z in microseconds.
const MAY17: i64 = 20_590 * 86_400_000_000;
const DAY: i64 = 86_400_000_000;

/// A pipeline and a release directory (`<tmp>/out`) to fill.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    pipeline: Pipeline,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("policy.toml"), POLICY).unwrap();
    let pipeline_path = tmp.path().join("pipeline.toml");
    fs::write(&pipeline_path, PIPELINE).unwrap();
    let pipeline = Pipeline::load(&pipeline_path).unwrap();
    let root = tmp.path().join("out");
    fs::create_dir(&root).unwrap();
    Setup {
        _tmp: tmp,
        root,
        pipeline,
    }
}

/// One Parquet file the test writes: columns in order, and key-value metadata.
struct Table {
    name: &'static str,
    date: &'static str,
    columns: Vec<(Field, ArrayRef)>,
    metadata: Vec<(String, String)>,
}

fn timestamps(name: &str, values: Vec<i64>) -> (Field, ArrayRef) {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let array = TimestampMicrosecondArray::from(values).with_timezone("UTC");
    (Field::new(name, utc, false), Arc::new(array))
}

fn strings(name: &str, values: &[&str]) -> (Field, ArrayRef) {
    let array = StringArray::from(values.to_vec());
    (Field::new(name, DataType::Utf8, false), Arc::new(array))
}

fn nullable_strings(name: &str, values: &[Option<&str>]) -> (Field, ArrayRef) {
    let array = StringArray::from(values.to_vec());
    (Field::new(name, DataType::Utf8, true), Arc::new(array))
}

fn ints(name: &str, values: &[i64]) -> (Field, ArrayRef) {
    let array = Int64Array::from(values.to_vec());
    (Field::new(name, DataType::Int64, false), Arc::new(array))
}

fn floats(name: &str, values: &[f64]) -> (Field, ArrayRef) {
    let array = Float64Array::from(values.to_vec());
    (Field::new(name, DataType::Float64, false), Arc::new(array))
}

impl Table {
    /// A clean file of `name` for `date` (2026-05-17 or 2026-05-18), with the values of a real run.
    fn clean(setup: &Setup, name: &'static str, date: &'static str) -> Table {
        let day = match date {
            "2026-05-17" => MAY17,
            "2026-05-18" => MAY17 + DAY,
            other => panic!("no test data for {other}"),
        };
        let columns = match name {
            "clients" => vec![
                timestamps("period_start", vec![day; 4]),
                strings("device", &["(unknown)", "pc", "pc", "smartphone"]),
                strings("os", &["(unknown)", "Windows 10", "Mac OSX", "iPhone"]),
                nullable_strings("os_version", &[None, Some("NT 10"), Some("10"), Some("17")]),
                strings("browser", &["(unknown)", "Chrome", "Safari", "Safari"]),
                nullable_strings(
                    "browser_version",
                    &[None, Some("124"), Some("17"), Some("17")],
                ),
                ints("requests", &[965, 2400, 800, 1200]),
                ints("visitors", &[160, 410, 120, 230]),
            ],
            "referrers" => vec![
                timestamps("period_start", vec![day; 4]),
                strings(
                    "referrer_domain",
                    &["(direct)", "bbc.co.uk", "google.com", "t.co"],
                ),
                ints("requests", &[5000, 300, 2100, 150]),
                ints("visitors", &[900, 40, 380, 25]),
            ],
            "traffic_by_region" => vec![
                timestamps("period_start", vec![day; 3]),
                strings("continent", &["(unknown)", "EU", "NA"]),
                nullable_strings("country", &[Some("(unknown)"), Some("GB"), Some("US")]),
                nullable_strings(
                    "region",
                    &[Some("(unknown)"), Some("GB-ENG"), Some("US-VA")],
                ),
                ints("requests", &[431, 696, 1320]),
                ints("visitors", &[105, 105, 241]),
                ints("bytes", &[1_000_000, 2_500_000, 4_200_000]),
            ],
            "traffic_quality" => {
                let mut columns = vec![timestamps("period_start", vec![day])];
                for counter in [
                    "requests",
                    "crawler_requests",
                    "status_2xx",
                    "status_3xx",
                    "status_4xx",
                    "status_5xx",
                    "status_other",
                    "bytes",
                    "parse_errors",
                    "rejected_lines",
                    "rejected_invalid_utf8",
                    "rejected_line_too_long",
                    "rejected_bad_layout",
                    "rejected_bad_timestamp",
                    "rejected_bad_status",
                    "rejected_bad_bytes",
                    "rejected_bad_json",
                    "rejected_missing_field",
                    "rejected_truncated_input",
                    "late_records",
                    "empty_user_agent_requests",
                    "unknown_user_agent_requests",
                    "unknown_geo_requests",
                ] {
                    columns.push(ints(counter, &[7]));
                }
                for share in [
                    "empty_user_agent_share",
                    "unknown_user_agent_share",
                    "unknown_geo_share",
                ] {
                    columns.push(floats(share, &[0.05]));
                }
                columns
            }
            other => panic!("no test data for table {other}"),
        };
        let p = &setup.pipeline;
        let metadata = [
            ("logcensus.version", "0.1.0"),
            ("logcensus.pipeline", p.name.as_str()),
            ("logcensus.policy_id", p.policy.id.as_str()),
            ("logcensus.policy_hash", p.policy_hash.as_str()),
            ("logcensus.period", "day"),
            ("logcensus.geo_level", "region"),
            ("logcensus.table", name),
            ("logcensus.partition", date),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Table {
            name,
            date,
            columns,
            metadata,
        }
    }

    /// Replaces the column of the same name, or appends it.
    fn with(mut self, column: (Field, ArrayRef)) -> Table {
        match self
            .columns
            .iter()
            .position(|(f, _)| f.name() == column.0.name())
        {
            Some(at) => self.columns[at] = column,
            None => self.columns.push(column),
        }
        self
    }

    fn without_column(mut self, name: &str) -> Table {
        self.columns.retain(|(f, _)| f.name() != name);
        self
    }

    fn with_meta(mut self, key: &str, value: &str) -> Table {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.into(), value.into()));
        self
    }

    fn without_meta(mut self, key: &str) -> Table {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// The file's path in the release.
    fn path(&self, root: &Path) -> PathBuf {
        root.join(self.name)
            .join(format!("date={}", self.date))
            .join("part-00000.parquet")
    }

    /// Writes the file at its place in the release; returns its path.
    fn write(&self, root: &Path) -> PathBuf {
        let path = self.path(root);
        self.write_to(&path, WriterProperties::builder());
        path
    }

    fn write_to(&self, path: &Path, props: parquet::file::properties::WriterPropertiesBuilder) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = self.columns.iter().cloned().unzip();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let kv = self
            .metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = props.set_key_value_metadata(Some(kv)).build();
        let mut writer =
            ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), Some(props))
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}

/// Writes a clean release: every table for 2026-05-17, and clients for 2026-05-18.
fn write_clean_release(setup: &Setup) {
    for table in [
        "traffic_by_region",
        "clients",
        "referrers",
        "traffic_quality",
    ] {
        Table::clean(setup, table, "2026-05-17").write(&setup.root);
    }
    Table::clean(setup, "clients", "2026-05-18").write(&setup.root);
}

fn run(setup: &Setup, min_visitors: Option<u64>) -> Report {
    audit(&setup.root, &setup.pipeline, min_visitors).unwrap()
}

/// The violations as `kind column row message` lines, with paths relative to the release.
fn lines(setup: &Setup, report: &Report) -> Vec<String> {
    report
        .violations
        .iter()
        .map(|v| {
            format!(
                "{} | {} | {} | {} | {}",
                v.file.strip_prefix(&setup.root).unwrap().display(),
                v.kind.name(),
                v.column.as_deref().unwrap_or("-"),
                v.row.map_or("-".to_string(), |r| r.to_string()),
                v.message
            )
        })
        .collect()
}

#[test]
fn a_clean_release_passes() {
    let setup = setup();
    write_clean_release(&setup);
    // Hidden entries are what Spark, pyarrow and the writer's temporary files leave; readers
    // skip them, so the audit does too.
    fs::write(setup.root.join("_SUCCESS"), "").unwrap();
    fs::write(
        setup
            .root
            .join("clients/date=2026-05-17/.part-00000.parquet.tmp"),
        "x",
    )
    .unwrap();

    let report = run(&setup, Some(10));
    assert_eq!(lines(&setup, &report), Vec::<String>::new());
    assert!(report.is_clean());
    assert_eq!(report.files_checked, 5);
    assert_eq!(report.rows_checked, 3 + 4 + 4 + 1 + 4);
    assert_eq!(
        report.notes,
        [
            "small cells checked against k = 10 (the min_visitors given) in 4 files",
            "ignored 2 hidden entries (names starting with `.` or `_`, which readers skip): \
             _SUCCESS, clients/date=2026-05-17/.part-00000.parquet.tmp",
        ]
    );
    assert!(report
        .to_string()
        .ends_with("\naudit: 5 files, 16 rows, 0 violations"));
}

#[test]
fn without_a_threshold_small_cells_are_skipped_and_the_report_says_so() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "clients", "2026-05-17")
        .with(ints("visitors", &[1, 1, 1, 1]))
        .write(&setup.root);
    let report = run(&setup, None);
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.notes,
        ["no threshold given and no logcensus.release.min_visitors in 4 files: small cells not checked in them"]
    );
}

#[test]
fn a_row_under_k_fails() {
    let setup = setup();
    write_clean_release(&setup);
    let path = Table::clean(&setup, "clients", "2026-05-17")
        .with(ints("visitors", &[160, 3, 120, 5]))
        .write(&setup.root);
    let report = run(&setup, Some(5));
    assert_eq!(
        lines(&setup, &report),
        ["clients/date=2026-05-17/part-00000.parquet | small_cell | visitors | 1 | visitors = 3, below the threshold k = 5 (the min_visitors given)"]
    );
    assert_eq!(
        report.to_string(),
        format!(
            "{}: column visitors, row 1: visitors = 3, below the threshold k = 5 (the min_visitors given)\n\
             note: small cells checked against k = 5 (the min_visitors given) in 4 files\n\
             audit: 5 files, 16 rows, 1 violations",
            path.display()
        )
    );
}

#[test]
fn the_threshold_recorded_by_the_release_step_applies_when_none_is_given() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "referrers", "2026-05-17")
        .with_meta("logcensus.release.min_visitors", "30")
        .write(&setup.root);
    let report = run(&setup, None);
    assert_eq!(
        lines(&setup, &report),
        [
            // The recorded threshold is checked, and so is that the pipeline asks for it.
            "referrers/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.min_visitors` is recorded, but pipeline `partner-daily` sets no such release parameter for referrers",
            "referrers/date=2026-05-17/part-00000.parquet | small_cell | visitors | 3 | visitors = 25, below the threshold k = 30 (logcensus.release.min_visitors)",
        ]
    );
    assert_eq!(
        report.notes,
        [
            "small cells checked against each file's logcensus.release.min_visitors (k = 30) in 1 files",
            "no threshold given and no logcensus.release.min_visitors in 3 files: small cells not checked in them",
        ]
    );
    // A given threshold takes precedence over the file's.
    assert_eq!(run(&setup, Some(25)).violations.len(), 1);
}

#[test]
fn an_unreadable_recorded_threshold_is_a_violation() {
    let setup = setup();
    Table::clean(&setup, "clients", "2026-05-17")
        .with_meta("logcensus.release.min_visitors", "ten")
        .write(&setup.root);
    let report = run(&setup, None);
    assert_eq!(
        lines(&setup, &report),
        [
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.min_visitors` is recorded, but pipeline `partner-daily` sets no such release parameter for clients",
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.min_visitors` is `ten`, not a whole number of visitors",
        ]
    );
}

#[test]
fn an_extra_column_of_addresses_fails_by_name_and_by_row() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "traffic_by_region", "2026-05-17")
        .with(strings(
            "client_ip",
            &["203.0.113.7", "(unknown)", "198.51.100.23"],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "traffic_by_region/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | schema | client_ip | - | unexpected column: the traffic_by_region contract has no column `client_ip`"),
            format!("{file} | ip_address | client_ip | 0 | the value looks like an IPv4 address"),
            format!("{file} | ip_address | client_ip | 2 | the value looks like an IPv4 address"),
        ]
    );
}

#[test]
fn an_email_in_a_string_column_fails() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "referrers", "2026-05-17")
        .with(strings(
            "referrer_domain",
            &["(direct)", "bbc.co.uk", "alice@example.com", "t.co"],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["referrers/date=2026-05-17/part-00000.parquet | email | referrer_domain | 2 | the value looks like an e-mail address"]
    );
}

#[test]
fn an_ipv6_address_inside_a_longer_string_fails() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "clients", "2026-05-18")
        .with(strings(
            "os",
            &[
                "(unknown)",
                "Windows 10",
                "Linux 2001:db8::8a2e:370:7334 x",
                "iPhone",
            ],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["clients/date=2026-05-18/part-00000.parquet | ip_address | os | 2 | the value looks like an IPv6 address"]
    );
}

#[test]
fn urls_with_a_path_query_or_scheme_fail() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "referrers", "2026-05-17")
        .with(strings(
            "referrer_domain",
            &[
                "(direct)",
                "example.com/login",
                "https://bbc.co.uk",
                "google.com?q=me",
            ],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "referrers/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | url | referrer_domain | 1 | the value looks like a URL path (`/` after a host name)"),
            format!("{file} | url | referrer_domain | 2 | the value looks like a URL (`://`)"),
            format!("{file} | url | referrer_domain | 3 | the value contains `?` (a query string); contains `=` (a query parameter)"),
        ]
    );
}

#[test]
fn tokens_hashes_and_long_strings_fail() {
    let setup = setup();
    write_clean_release(&setup);
    let long = "x".repeat(65);
    Table::clean(&setup, "clients", "2026-05-17")
        .with(nullable_strings(
            "browser_version",
            &[
                Some("a8Fk2LmQ9zXw4RtY7uVbN3"),
                Some("9f86d081884c7d659a2feaa0c55ad015"),
                Some(&long),
                None,
            ],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "clients/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | token | browser_version | 0 | the value looks like a random token (22 letters and digits)"),
            format!("{file} | token | browser_version | 1 | the value looks like a random token (32 letters and digits); looks like a hex token or hash (32 hex digits)"),
            format!("{file} | too_long | browser_version | 2 | the value is 65 characters long, over the limit of 64"),
        ]
    );
}

#[test]
fn a_missing_policy_hash_fails() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "traffic_quality", "2026-05-17")
        .without_meta("logcensus.policy_hash")
        .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        [format!(
            "traffic_quality/date=2026-05-17/part-00000.parquet | metadata | - | - | missing key-value metadata `logcensus.policy_hash` (the pipeline's policy hash is `{}`)",
            setup.pipeline.policy_hash
        )]
    );
}

#[test]
fn a_mismatched_policy_hash_fails() {
    let setup = setup();
    write_clean_release(&setup);
    let other = "0".repeat(64);
    Table::clean(&setup, "clients", "2026-05-17")
        .with_meta("logcensus.policy_hash", &other)
        .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        [format!(
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.policy_hash` is `{other}`, but the pipeline's policy hash is `{}`",
            setup.pipeline.policy_hash
        )]
    );
}

#[test]
fn provenance_must_match_the_pipeline_and_the_path() {
    let setup = setup();
    Table::clean(&setup, "clients", "2026-05-17")
        .with_meta("logcensus.pipeline", "internal-daily")
        .with_meta("logcensus.policy_id", "another-policy")
        .with_meta("logcensus.table", "referrers")
        .with_meta("logcensus.partition", "2026-05-18")
        .with_meta("logcensus.period", "hour")
        .with_meta("logcensus.geo_level", "country")
        .without_meta("logcensus.version")
        .with_meta("comment", "made by hand")
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "clients/date=2026-05-17/part-00000.parquet | metadata | - | -";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | unexpected key-value metadata `comment`: a release carries only the logcensus.* keys and ARROW:schema, and an unknown entry could hold anything"),
            format!("{file} | `logcensus.pipeline` is `internal-daily`, but the pipeline's name is `partner-daily`"),
            format!("{file} | `logcensus.policy_id` is `another-policy`, but the pipeline's policy id is `test-policy-2026`"),
            format!("{file} | `logcensus.period` is `hour`, but the pipeline's period is `day`"),
            format!("{file} | `logcensus.geo_level` is `country`, but the pipeline's geo level is `region`"),
            format!("{file} | `logcensus.table` is `referrers`, but the file's table directory is `clients`"),
            format!("{file} | `logcensus.partition` is `2026-05-18`, but the file's date= directory is `2026-05-17`"),
            format!("{file} | missing key-value metadata `logcensus.version`"),
        ]
    );
}

#[test]
fn release_metadata_values_are_checked_like_table_values() {
    let setup = setup();
    Table::clean(&setup, "clients", "2026-05-17")
        .with_meta("logcensus.release.operator", "bob@example.com")
        .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        [
            "clients/date=2026-05-17/part-00000.parquet | email | - | - | the value of metadata `logcensus.release.operator` looks like an e-mail address",
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.operator` is recorded, but pipeline `partner-daily` sets no such release parameter for clients",
        ]
    );
}

#[test]
fn metadata_hidden_in_the_embedded_arrow_schema_fails() {
    let setup = setup();
    let mut table = Table::clean(&setup, "referrers", "2026-05-17");
    let (field, values) = table.columns[1].clone();
    let field = field.with_metadata(HashMap::from([("note".to_string(), "x".to_string())]));
    table.columns[1] = (field, values);
    table.write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["referrers/date=2026-05-17/part-00000.parquet | metadata | referrer_domain | - | the embedded Arrow schema (`ARROW:schema`) gives this column 1 metadata entries; a release carries none"]
    );
}

#[test]
fn files_in_a_wrong_place_fail() {
    let setup = setup();
    write_clean_release(&setup);
    let clean = Table::clean(&setup, "clients", "2026-05-17").path(&setup.root);
    for wrong in [
        "clients/part-00000.parquet",
        "visitors/date=2026-05-17/part-00000.parquet",
        "clients/date=2026-5-17/part-00000.parquet",
        "clients/date=2026-05-17/extra/part-00000.parquet",
        "clients/date=2026-05-17/clients.parquet",
    ] {
        let to = setup.root.join(wrong);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&clean, to).unwrap();
    }
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        [
            "clients/date=2026-05-17/clients.parquet | layout | - | - | `clients.parquet` is not a data file name part-*.parquet",
            "clients/date=2026-05-17/extra/part-00000.parquet | layout | - | - | not part of the layout <table>/date=YYYY-MM-DD/part-*.parquet: an unexpected file could hold anything",
            "clients/date=2026-5-17/part-00000.parquet | layout | - | - | `date=2026-5-17` is not a partition directory date=YYYY-MM-DD with a real date",
            "clients/part-00000.parquet | layout | - | - | not part of the layout <table>/date=YYYY-MM-DD/part-*.parquet: an unexpected file could hold anything",
            "visitors/date=2026-05-17/part-00000.parquet | layout | - | - | `visitors` is not a table pipeline `partner-daily` writes (traffic_by_region, clients, referrers, traffic_quality); only its tables may be released",
        ]
    );
    assert_eq!(report.files_checked, 10);
    assert_eq!(report.rows_checked, 16);
}

#[test]
fn a_table_the_pipeline_does_not_write_fails() {
    let setup = setup();
    let text = PIPELINE.replace(
        r#"tables = ["traffic_by_region", "clients", "referrers", "traffic_quality"]"#,
        r#"tables = ["traffic_quality"]"#,
    );
    let pipeline_path = setup.root.parent().unwrap().join("quality-only.toml");
    fs::write(&pipeline_path, text).unwrap();
    let pipeline = Pipeline::load(&pipeline_path).unwrap();
    write_clean_release(&setup);
    let report = audit(&setup.root, &pipeline, None).unwrap();
    assert_eq!(
        report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::Layout)
            .count(),
        4
    );
    assert!(report.violations[0]
        .message
        .contains("`clients` is not a table pipeline `partner-daily` writes (traffic_quality)"));
    assert_eq!(report.violations.len(), 4);
}

#[test]
fn a_file_that_is_not_parquet_fails() {
    let setup = setup();
    write_clean_release(&setup);
    fs::write(
        setup
            .root
            .join("clients/date=2026-05-17/part-00001.parquet"),
        "period_start,visitors\n",
    )
    .unwrap();
    fs::write(
        setup
            .root
            .join("clients/date=2026-05-17/part-00002.parquet"),
        "",
    )
    .unwrap();
    fs::write(setup.root.join("README.txt"), "notes").unwrap();
    let report = run(&setup, Some(10));
    let lines = lines(&setup, &report);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        "README.txt | layout | - | - | not part of the layout <table>/date=YYYY-MM-DD/part-*.parquet: an unexpected file could hold anything"
    );
    for (line, file) in lines[1..].iter().zip(["part-00001", "part-00002"]) {
        assert!(
            line.starts_with(&format!(
                "clients/date=2026-05-17/{file}.parquet | unreadable | - | - | not a readable Parquet file: "
            )),
            "{line}"
        );
    }
    assert_eq!(report.files_checked, 8);
}

#[test]
fn a_null_in_a_non_nullable_column_fails() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "clients", "2026-05-17")
        .with(nullable_strings(
            "device",
            &[Some("pc"), None, Some("pc"), Some("smartphone")],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "clients/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | schema | device | - | declared nullable (OPTIONAL), the contract says not null"),
            format!("{file} | null | device | 1 | null, but the contract declares this column not null"),
        ]
    );
}

#[test]
fn a_period_start_outside_the_partition_date_fails() {
    let setup = setup();
    write_clean_release(&setup);
    Table::clean(&setup, "clients", "2026-05-17")
        .with(timestamps(
            "period_start",
            vec![MAY17, MAY17 - DAY, MAY17 + 3_600_000_000, MAY17 + DAY],
        ))
        .write(&setup.root);
    let report = run(&setup, Some(10));
    let file = "clients/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{file} | partition | period_start | 1 | period_start 2026-05-16T00:00:00Z is outside the partition date=2026-05-17"),
            format!("{file} | partition | period_start | 2 | period_start 2026-05-17T01:00:00Z is not the start of a UTC day (the pipeline's period)"),
            format!("{file} | partition | period_start | 3 | period_start 2026-05-18T00:00:00Z is outside the partition date=2026-05-17"),
        ]
    );
}

#[test]
fn columns_must_match_the_contract_in_order_and_type() {
    let setup = setup();
    let mut table = Table::clean(&setup, "referrers", "2026-05-17").without_column("requests");
    table.columns.swap(0, 1);
    let table = table.with(floats("visitors", &[900.0, 40.0, 380.0, 25.0]));
    table.write(&setup.root);
    Table::clean(&setup, "traffic_quality", "2026-05-17")
        .with((
            Field::new(
                "period_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Arc::new(arrow_array::TimestampMillisecondArray::from(vec![
                MAY17 / 1000,
            ])),
        ))
        .with(strings("status_other", &["7"]))
        .write(&setup.root);
    let report = run(&setup, None);
    let referrers = "referrers/date=2026-05-17/part-00000.parquet";
    let quality = "traffic_quality/date=2026-05-17/part-00000.parquet";
    assert_eq!(
        lines(&setup, &report),
        [
            format!("{referrers} | schema | visitors | - | type DOUBLE, the contract says int64 (INT64)"),
            format!("{referrers} | schema | - | - | columns out of the contract's order: the file has referrer_domain, period_start, visitors"),
            format!("{referrers} | schema | requests | - | missing column: column 3 of the referrers contract, int64 (INT64)"),
            format!("{quality} | schema | period_start | - | type INT64 TIMESTAMP(MILLIS, local), the contract says timestamp (INT64 TIMESTAMP(MICROS, UTC))"),
            format!("{quality} | schema | status_other | - | type BYTE_ARRAY STRING, the contract says int64 (INT64)"),
        ]
    );
}

#[test]
fn every_value_violation_of_a_column_is_counted_but_only_the_first_hundred_listed() {
    let setup = setup();
    let n = file::MAX_LISTED_PER_COLUMN + 50;
    let addresses: Vec<String> = (0..n)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    Table {
        name: "referrers",
        date: "2026-05-17",
        columns: vec![
            timestamps("period_start", vec![MAY17; n]),
            strings("referrer_domain", &refs),
            ints("requests", &vec![100; n]),
            ints("visitors", &vec![50; n]),
        ],
        metadata: Table::clean(&setup, "referrers", "2026-05-17").metadata,
    }
    .write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(report.violations.len(), file::MAX_LISTED_PER_COLUMN + 1);
    assert_eq!(report.violations[99].row, Some(99));
    let last = report.violations.last().unwrap();
    assert_eq!(last.column.as_deref(), Some("referrer_domain"));
    assert_eq!(last.row, None);
    assert_eq!(last.kind, ViolationKind::IpAddress);
    assert_eq!(
        last.message,
        "50 more violations in this column not listed (only the first 100 are)"
    );
}

/// Replaces every `from` with `to` (same length) inside `range` of the file's bytes.
fn patch(path: &Path, range: std::ops::Range<usize>, from: &str, to: &str) -> usize {
    assert_eq!(from.len(), to.len());
    let mut bytes = fs::read(path).unwrap();
    let mut patched = 0;
    let mut at = range.start;
    while at + from.len() <= range.end {
        if &bytes[at..at + from.len()] == from.as_bytes() {
            bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
            patched += 1;
            at += from.len();
        } else {
            at += 1;
        }
    }
    fs::write(path, bytes).unwrap();
    patched
}

/// A referrers file whose largest value is `example.org`, written uncompressed so its bytes can
/// be patched; with page header statistics too.
fn patchable_referrers(setup: &Setup) -> PathBuf {
    let table = Table::clean(setup, "referrers", "2026-05-17").with(strings(
        "referrer_domain",
        &["(direct)", "bbc.co.uk", "example.org", "bing.com"],
    ));
    let path = table.path(&setup.root);
    let props = WriterProperties::builder().set_write_page_header_statistics(true);
    table.write_to(&path, props);
    path
}

fn footer_range(path: &Path) -> std::ops::Range<usize> {
    let bytes = fs::read(path).unwrap();
    let end = bytes.len() - 8;
    let len = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
    end - len..end
}

#[test]
fn a_value_hidden_in_the_statistics_fails() {
    let setup = setup();
    let path = patchable_referrers(&setup);
    assert!(run(&setup, Some(10)).is_clean());
    // The footer's column chunk statistics only: the rows and the dictionary are untouched.
    assert!(patch(&path, footer_range(&path), "example.org", "10.20.30.40") >= 1);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["referrers/date=2026-05-17/part-00000.parquet | ip_address | referrer_domain | - | the row group 0 statistics maximum holds a value that no row shows, and it looks like an IPv4 address"]
    );
}

#[test]
fn a_value_hidden_in_the_column_index_fails() {
    let setup = setup();
    let path = patchable_referrers(&setup);
    let meta =
        parquet::file::reader::SerializedFileReader::new(fs::File::open(&path).unwrap()).unwrap();
    let range = parquet::file::reader::FileReader::metadata(&meta)
        .row_group(0)
        .column(1)
        .column_index_range()
        .unwrap();
    assert!(
        patch(
            &path,
            range.start as usize..range.end as usize,
            "example.org",
            "alice@ex.uk"
        ) >= 1
    );
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["referrers/date=2026-05-17/part-00000.parquet | email | referrer_domain | - | the row group 0 column index, page 0 maximum holds a value that no row shows, and it looks like an e-mail address"]
    );
}

#[test]
fn a_value_hidden_in_a_page_header_fails() {
    let setup = setup();
    let path = patchable_referrers(&setup);
    let meta =
        parquet::file::reader::SerializedFileReader::new(fs::File::open(&path).unwrap()).unwrap();
    let chunk = parquet::file::reader::FileReader::metadata(&meta)
        .row_group(0)
        .column(1)
        .clone();
    let start = chunk.data_page_offset() as usize;
    let end = (chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset())
        + chunk.compressed_size()) as usize;
    assert!(patch(&path, start..end, "example.org", "ex.com/path") >= 1);
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["referrers/date=2026-05-17/part-00000.parquet | url | referrer_domain | - | the row group 0 page 1 header statistics maximum holds a value that no row shows, and it looks like a URL path (`/` after a host name)"]
    );
}

#[test]
fn dictionaries_and_statistics_of_clean_files_are_examined() {
    let setup = setup();
    let path = patchable_referrers(&setup);
    let reader = file::open(&path).unwrap();
    let mut findings = file::Findings::new(&path);
    let examined = pages::check(&reader, &Default::default(), &mut findings);
    assert!(findings.finish().is_empty());
    // referrer_domain: 2 chunk statistics, 2 column index values, 4 dictionary entries, 2 page
    // header statistics.
    assert_eq!(examined, 10);
}

#[test]
fn a_directory_that_cannot_be_read_is_an_error() {
    let setup = setup();
    let missing = setup.root.join("nope");
    let err = audit(&missing, &setup.pipeline, None).unwrap_err();
    assert!(err.to_string().starts_with(&format!(
        "cannot read the release directory {}: ",
        missing.display()
    )));
    let file = setup.root.join("file");
    fs::write(&file, "").unwrap();
    let err = audit(&file, &setup.pipeline, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a directory; pass the directory a run wrote its tables to",
            file.display()
        )
    );
}

#[test]
fn an_empty_release_is_clean_with_a_note() {
    let setup = setup();
    let report = run(&setup, None);
    assert!(report.is_clean());
    assert_eq!(
        report.notes,
        [format!("{} holds no files", setup.root.display())]
    );
    Table::clean(&setup, "clients", "2026-05-17").write(&setup.root);
    let report = run(&setup, Some(10));
    assert_eq!(
        report.notes[..3],
        [
            "table `traffic_by_region`: no files (the pipeline writes it)",
            "table `referrers`: no files (the pipeline writes it)",
            "table `traffic_quality`: no files (the pipeline writes it)",
        ]
    );
}

#[cfg(unix)]
#[test]
fn links_fail_even_to_good_files() {
    let setup = setup();
    let path = Table::clean(&setup, "clients", "2026-05-17").write(&setup.root);
    let link = setup
        .root
        .join("clients/date=2026-05-17/part-00001.parquet");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["clients/date=2026-05-17/part-00001.parquet | layout | - | - | a symbolic link; a release holds only regular files (a link can point anywhere)"]
    );
}

/// Like [`setup`], for a pipeline with contribution bounds and differential privacy.
fn dp_setup() -> Setup {
    let setup = setup();
    let text = format!(
        "{PIPELINE}\n[release]\nmin_visitors = 10\nmax_rows_per_visitor = 3\nmax_requests_per_row = 50\nmax_bytes_per_row = 1000\n\
         [release.dp]\nmechanism = \"laplace\"\nepsilon = 1.0\ndelta = 1e-7\ntables = [\"traffic_by_region\", \"clients\", \"referrers\"]\nallow_exact_tables = true\n\
         [release.dp.per_table.referrers]\nepsilon = 0.5\n"
    );
    let path = setup.pipeline.path.clone();
    fs::write(&path, text).unwrap();
    Setup {
        pipeline: Pipeline::load(&path).unwrap(),
        ..setup
    }
}

/// The release metadata a DP release of `table` under [`dp_setup`] records, with rows as large
/// as partition selection lets through.
fn dp_table(setup: &Setup, table: &'static str) -> Table {
    let mut t = Table::clean(setup, table, "2026-05-17");
    let rows = t.columns[0].1.len();
    t = t
        .with(ints("visitors", &vec![1_000; rows]))
        .with(ints("requests", &vec![2_000; rows]));
    let epsilon = if table == "referrers" { "0.5" } else { "1" };
    // Scales: N * sensitivity * columns / epsilon, with N = 3, C = 50, B = 1000.
    let (visitors_scale, requests_scale) = match table {
        "traffic_by_region" => ("9.000000", "450.000000"),
        "clients" => ("6.000000", "300.000000"),
        _ => ("12.000000", "600.000000"),
    };
    let mut meta = vec![
        ("min_visitors", "10"),
        ("max_rows_per_visitor", "3"),
        ("max_requests_per_row", "50"),
        ("mechanism", "laplace"),
        ("epsilon", epsilon),
        ("delta", "0.0000001"),
        ("selection_threshold", "400"),
        ("noise_scale_visitors", visitors_scale),
        ("noise_scale_requests", requests_scale),
    ];
    if table == "traffic_by_region" {
        meta.extend([
            ("max_bytes_per_row", "1000"),
            ("noisy_columns", "visitors,requests,bytes"),
            ("noise_scale_bytes", "9000.000000"),
        ]);
    } else {
        meta.push(("noisy_columns", "visitors,requests"));
    }
    for (k, v) in meta {
        t = t.with_meta(&format!("logcensus.release.{k}"), v);
    }
    t
}

#[test]
fn dp_release_parameters_recorded_as_the_pipeline_says_pass() {
    let setup = dp_setup();
    for table in ["traffic_by_region", "clients", "referrers"] {
        dp_table(&setup, table).write(&setup.root);
    }
    Table::clean(&setup, "traffic_quality", "2026-05-17").write(&setup.root);
    let report = run(&setup, Some(1));
    assert_eq!(lines(&setup, &report), Vec::<String>::new());
}

#[test]
fn dp_release_parameters_that_differ_from_the_pipeline_fail() {
    let setup = dp_setup();
    // Referrers released with the default epsilon instead of the table's 0.5.
    dp_table(&setup, "referrers")
        .with_meta("logcensus.release.epsilon", "1")
        .write(&setup.root);
    // Released without noise on bytes, and with a mechanism the pipeline does not name.
    dp_table(&setup, "traffic_by_region")
        .without_meta("logcensus.release.noise_scale_bytes")
        .with_meta("logcensus.release.mechanism", "gaussian")
        .write(&setup.root);
    // Released without the minimum, with a bytes bound on a table that has no bytes.
    dp_table(&setup, "clients")
        .without_meta("logcensus.release.min_visitors")
        .with_meta("logcensus.release.max_bytes_per_row", "1000")
        .with_meta("logcensus.release.noise_scale_visitors", "0.000001")
        .with_meta("logcensus.release.selection_threshold", "12")
        .write(&setup.root);
    // The ops table carries no release parameters.
    Table::clean(&setup, "traffic_quality", "2026-05-17")
        .with_meta("logcensus.release.epsilon", "1")
        .write(&setup.root);
    let report = run(&setup, Some(1));
    assert_eq!(
        lines(&setup, &report),
        [
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.max_bytes_per_row` is recorded, but pipeline `partner-daily` sets no such release parameter for clients",
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | missing key-value metadata `logcensus.release.min_visitors`: pipeline `partner-daily` releases clients with `10`",
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.noise_scale_visitors` is `0.000001`, but pipeline `partner-daily` says a noise scale of 6.000000 (epsilon, bounds and columns give it)",
            "clients/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.selection_threshold` is `12`: with the visitor noise the pipeline requires, a row one visitor alone creates is released with probability up to 1.164e0, over the pipeline's delta 1e-7 (pipeline `partner-daily`)",
            "referrers/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.epsilon` is `1`, but pipeline `partner-daily` says `0.5`",
            "traffic_by_region/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.mechanism` is `gaussian`, but pipeline `partner-daily` says `laplace`",
            "traffic_by_region/date=2026-05-17/part-00000.parquet | metadata | - | - | missing key-value metadata `logcensus.release.noise_scale_bytes`: pipeline `partner-daily` releases traffic_by_region with a noise scale of 9000.000000 (epsilon, bounds and columns give it)",
            "traffic_quality/date=2026-05-17/part-00000.parquet | metadata | - | - | `logcensus.release.epsilon` is recorded, but pipeline `partner-daily` sets no such release parameter for traffic_quality",
        ]
    );
}

#[test]
fn streaming_state_in_the_release_directory_fails() {
    let setup = setup();
    write_clean_release(&setup);
    fs::create_dir_all(setup.root.join("_state/partials")).unwrap();
    fs::write(
        setup.root.join("_state/partials/w1-000000000000.partial"),
        b"x",
    )
    .unwrap();
    // Other hidden names are only noted: readers skip them and they hold nothing of ours.
    fs::write(setup.root.join("_SUCCESS"), b"").unwrap();
    let report = run(&setup, Some(10));
    assert_eq!(
        lines(&setup, &report),
        ["_state | layout | - | - | private streaming state (checkpoints holding keyed visitor hashes) inside the release directory: hand over only the table directories, e.g. `rsync -a --exclude _state`"]
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("ignored 1 hidden entries") && n.contains("_SUCCESS")),
        "{:?}",
        report.notes
    );
}

#[test]
fn a_dp_row_below_its_selection_threshold_fails() {
    let setup = dp_setup();
    // The clients threshold recorded is 400: a row of 50 visitors was never selected.
    dp_table(&setup, "clients")
        .with(ints("visitors", &[1_000, 50, 1_000, 1_000]))
        .write(&setup.root);
    let report = run(&setup, None);
    assert_eq!(
        lines(&setup, &report),
        ["clients/date=2026-05-17/part-00000.parquet | small_cell | visitors | 1 | visitors = 50, below the threshold k = 400 (logcensus.release.selection_threshold)"]
    );
}
