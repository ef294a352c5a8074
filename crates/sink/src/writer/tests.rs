use std::fs::File;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use parquet::basic::{Compression, LogicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::test_tables::*;
use crate::{inspect, read_table};

fn column<'a>(batches: &'a [RecordBatch], name: &str) -> Vec<&'a ArrayRef> {
    batches
        .iter()
        .map(|b| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
        })
        .collect()
}

fn ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    column(batches, name)
        .into_iter()
        .flat_map(|a| a.as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

fn floats(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    column(batches, name)
        .into_iter()
        .flat_map(|a| a.as_primitive::<Float64Type>().values().to_vec())
        .collect()
}

fn strs(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    column(batches, name)
        .into_iter()
        .flat_map(|a| {
            a.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Microseconds, after checking the type is a UTC microsecond timestamp.
fn micros(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    column(batches, name)
        .into_iter()
        .flat_map(|a| {
            assert_eq!(
                a.data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
            a.as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect()
}

fn opt(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|s| s.map(str::to_string)).collect()
}

fn written(out: &Path, tables: &[TableOut]) -> Vec<WrittenFile> {
    write_tables(out, tables, &meta()).unwrap()
}

#[test]
fn traffic_by_region_round_trips_by_date() {
    let dir = tempfile::tempdir().unwrap();
    let files = written(dir.path(), &[traffic()]);
    let want = |date: &str, rows| WrittenFile {
        table: "traffic_by_region",
        partition: date.to_string(),
        path: dir
            .path()
            .join(format!("traffic_by_region/date={date}/part-00000.parquet")),
        rows,
        replaced_different: false,
    };
    assert_eq!(files, [want("2026-05-17", 2), want("2026-05-18", 1)]);
    assert_eq!(
        files_below(dir.path()),
        [
            PathBuf::from("traffic_by_region/date=2026-05-17/part-00000.parquet"),
            PathBuf::from("traffic_by_region/date=2026-05-18/part-00000.parquet"),
        ]
    );

    let b = read_table(dir.path(), "traffic_by_region").unwrap();
    assert_eq!(b.len(), 2, "one batch per partition");
    assert_eq!(
        micros(&b, "period_start"),
        [
            1_778_976_000_000_000,
            1_778_976_000_000_000,
            1_779_062_400_000_000
        ]
    );
    assert_eq!(
        strs(&b, "continent"),
        opt(&[Some("(unknown)"), Some("NA"), Some("EU")])
    );
    assert_eq!(
        strs(&b, "country"),
        opt(&[Some("(unknown)"), Some("US"), Some("DE")])
    );
    assert_eq!(
        strs(&b, "region"),
        opt(&[Some("(unknown)"), Some("US-VA"), None])
    );
    assert_eq!(ints(&b, "requests"), [2, 40, 7]);
    assert_eq!(ints(&b, "visitors"), [1, 12, 3]);
    assert_eq!(ints(&b, "bytes"), [0, 1_234_567, 9_000_000_000]);
    let names: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "period_start",
            "continent",
            "country",
            "region",
            "requests",
            "visitors",
            "bytes"
        ]
    );
    assert!(!b[0].schema().field(1).is_nullable());
    assert!(b[0].schema().field(3).is_nullable());
}

#[test]
fn clients_round_trip_with_null_versions() {
    let dir = tempfile::tempdir().unwrap();
    let files = written(dir.path(), &[clients()]);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 2);
    let b = read_table(dir.path(), "clients").unwrap();
    assert_eq!(micros(&b, "period_start"), [DAY1 * 1_000_000; 2]);
    assert_eq!(strs(&b, "device"), opt(&[Some("(unknown)"), Some("pc")]));
    assert_eq!(
        strs(&b, "os"),
        opt(&[Some("(unknown)"), Some("Windows 10")])
    );
    assert_eq!(strs(&b, "os_version"), opt(&[None, Some("NT 10")]));
    assert_eq!(
        strs(&b, "browser"),
        opt(&[Some("(unknown)"), Some("Chrome")])
    );
    assert_eq!(strs(&b, "browser_version"), opt(&[None, Some("124")]));
    assert_eq!(ints(&b, "requests"), [3, 30]);
    assert_eq!(ints(&b, "visitors"), [2, 9]);
}

#[test]
fn referrers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path(), &[referrers()]);
    let b = read_table(dir.path(), "referrers").unwrap();
    assert_eq!(micros(&b, "period_start"), [DAY1 * 1_000_000; 2]);
    assert_eq!(
        strs(&b, "referrer_domain"),
        opt(&[Some("(direct)"), Some("google.com")])
    );
    assert_eq!(ints(&b, "requests"), [25, 8]);
    assert_eq!(ints(&b, "visitors"), [10, 4]);
}

#[test]
fn traffic_quality_round_trips_counts_and_shares() {
    let dir = tempfile::tempdir().unwrap();
    let files = written(dir.path(), &[quality()]);
    assert_eq!(files.len(), 2);
    let b = read_table(dir.path(), "traffic_quality").unwrap();
    assert_eq!(
        micros(&b, "period_start"),
        [DAY1 * 1_000_000, DAY2 * 1_000_000]
    );
    assert_eq!(b[0].num_columns(), 27);
    for (i, name) in QUALITY_INTS.iter().enumerate() {
        let first = if i == 0 { 8 } else { i as i64 * 10 + 1 };
        assert_eq!(ints(&b, name), [first, 0], "{name}");
    }
    assert_eq!(floats(&b, "empty_user_agent_share"), [0.25, 0.0]);
    assert_eq!(floats(&b, "unknown_user_agent_share"), [0.125, 0.0]);
    assert_eq!(floats(&b, "unknown_geo_share"), [1.0 / 3.0, 0.0]);
}

#[test]
fn hourly_periods_split_at_utc_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = referrers();
    t.columns[0].1 = Column::Timestamp(vec![DAY2 - 3_600, DAY2]);
    let files = written(dir.path(), &[t]);
    let parts: Vec<&str> = files.iter().map(|f| f.partition.as_str()).collect();
    assert_eq!(parts, ["2026-05-17", "2026-05-18"]);
    let b = read_table(dir.path(), "referrers").unwrap();
    assert_eq!(
        micros(&b, "period_start"),
        [(DAY2 - 3_600) * 1_000_000, DAY2 * 1_000_000]
    );
}

#[test]
fn metadata_and_file_format_are_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let files = written(dir.path(), &[traffic()]);
    let reader = SerializedFileReader::new(File::open(&files[1].path).unwrap()).unwrap();
    let fm = reader.metadata().file_metadata();
    assert_eq!(
        fm.created_by(),
        Some(format!("logcensus {VERSION}").as_str())
    );
    let kv: Vec<(String, String)> = fm
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    let get = |k: &str| {
        kv.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no key {k} in {kv:?}"))
    };
    assert_eq!(get("logcensus.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(get("logcensus.pipeline"), "partner-daily");
    assert_eq!(get("logcensus.policy_id"), "site-privacy-policy-2010-05-05");
    assert_eq!(get("logcensus.policy_hash"), "9f2c".repeat(16));
    assert_eq!(get("logcensus.period"), "day");
    assert_eq!(get("logcensus.geo_level"), "region");
    assert_eq!(get("logcensus.table"), "traffic_by_region");
    assert_eq!(get("logcensus.partition"), "2026-05-18");
    assert_eq!(get("logcensus.test_note"), "hand-built");

    let ts = fm.schema_descr().column(0);
    assert_eq!(
        ts.logical_type_ref(),
        Some(&LogicalType::timestamp(
            true,
            parquet::basic::TimeUnit::MICROS
        ))
    );
    let rg = reader.metadata().row_group(0);
    for c in rg.columns() {
        assert!(matches!(c.compression(), Compression::ZSTD(_)), "{c:?}");
        assert!(
            c.statistics().is_some(),
            "statistics for {}",
            c.column_path()
        );
    }
    // Dictionary encoding is on: the string columns have a dictionary page.
    assert!(rg.column(1).dictionary_page_offset().is_some());
}

#[test]
fn row_groups_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = referrers();
    let n = 5;
    t.columns = vec![
        ("period_start", Column::Timestamp(vec![DAY1; n])),
        (
            "referrer_domain",
            Column::Str((0..n).map(|i| s(&format!("site{i}.com"))).collect()),
        ),
        ("requests", Column::Int(vec![1; n])),
        ("visitors", Column::Int(vec![1; n])),
    ];
    let files = write_tables_with(dir.path(), &[t], &meta(), 2).unwrap();
    let reader = SerializedFileReader::new(File::open(&files[0].path).unwrap()).unwrap();
    let sizes: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(
        ints(&read_table(dir.path(), "referrers").unwrap(), "requests"),
        [1; 5]
    );
}

#[test]
fn leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path(), &all_tables());
    let files = files_below(dir.path());
    assert_eq!(files.len(), 6, "{files:?}");
    for f in &files {
        assert_eq!(f.file_name().unwrap(), PART_FILE, "{files:?}");
    }
}

#[test]
fn writing_twice_gives_identical_bytes_and_no_extra_parts() {
    let dir = tempfile::tempdir().unwrap();
    let first = written(dir.path(), &all_tables());
    let before: Vec<(PathBuf, Vec<u8>)> = first
        .iter()
        .map(|f| (f.path.clone(), std::fs::read(&f.path).unwrap()))
        .collect();
    let listing = files_below(dir.path());

    let second = written(dir.path(), &all_tables());
    assert_eq!(first, second);
    assert!(
        second.iter().all(|f| !f.replaced_different),
        "an identical re-run replaces nothing different"
    );
    assert_eq!(files_below(dir.path()), listing);
    for (path, bytes) in &before {
        assert!(
            std::fs::read(path).unwrap() == *bytes,
            "{} changed",
            path.display()
        );
    }
    // And a fresh directory gets the same bytes too (nothing depends on time or place).
    let other = tempfile::tempdir().unwrap();
    let third = written(other.path(), &all_tables());
    for (f, (_, bytes)) in third.iter().zip(&before) {
        assert!(
            std::fs::read(&f.path).unwrap() == *bytes,
            "{}",
            f.path.display()
        );
    }
    assert_eq!(
        read_table(dir.path(), "traffic_by_region").unwrap().len(),
        2
    );
}

#[test]
fn stale_parts_are_removed_and_other_dates_kept() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("referrers/date=2026-05-17");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("part-00007.parquet"), b"old rows").unwrap();
    std::fs::write(part.join("notes.txt"), b"not ours").unwrap();
    let other = dir.path().join("referrers/date=2026-05-01");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("part-00000.parquet"), b"another day").unwrap();

    written(dir.path(), &[referrers()]);
    assert_eq!(
        files_below(dir.path()),
        [
            PathBuf::from("referrers/date=2026-05-01/part-00000.parquet"),
            PathBuf::from("referrers/date=2026-05-17/notes.txt"),
            PathBuf::from("referrers/date=2026-05-17/part-00000.parquet"),
        ]
    );
    assert_eq!(
        std::fs::read(other.join("part-00000.parquet")).unwrap(),
        b"another day"
    );
}

#[test]
fn an_empty_table_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = referrers();
    for (_, c) in &mut t.columns {
        *c = match c {
            Column::Timestamp(_) => Column::Timestamp(vec![]),
            Column::Str(_) => Column::Str(vec![]),
            Column::Int(_) => Column::Int(vec![]),
            Column::Float(_) => Column::Float(vec![]),
        };
    }
    assert_eq!(written(dir.path(), &[t]), []);
    assert_eq!(files_below(dir.path()), Vec::<PathBuf>::new());
    assert!(read_table(dir.path(), "referrers").unwrap().is_empty());
}

fn contract_err(t: TableOut) -> String {
    let dir = tempfile::tempdir().unwrap();
    // A valid table first: nothing may be written when any table is wrong.
    let valid = all_tables().into_iter().find(|v| v.name != t.name).unwrap();
    let err = write_tables(dir.path(), &[valid, t], &meta()).unwrap_err();
    assert!(matches!(err, SinkError::Contract { .. }), "{err:?}");
    assert_eq!(files_below(dir.path()), Vec::<PathBuf>::new());
    err.to_string()
}

#[test]
fn a_wrong_column_name_is_a_contract_error() {
    let mut t = traffic();
    t.columns[3].0 = "subdivision";
    assert_eq!(
        contract_err(t),
        "table traffic_by_region does not match its contract schemas/traffic_by_region.toml: \
         column 4 is `subdivision` where the contract has `region`; the table was not written \
         (this is a bug in logcensus, please report it)"
    );
}

#[test]
fn a_wrong_column_type_is_a_contract_error() {
    let mut t = quality();
    t.columns[25].1 = Column::Int(vec![0, 0]);
    let e = contract_err(t);
    assert!(e.starts_with("table traffic_quality does not match"), "{e}");
    assert!(
        e.contains(
            "column `unknown_user_agent_share` holds int64 values where the contract says float64"
        ),
        "{e}"
    );
}

#[test]
fn a_null_in_a_non_nullable_column_is_a_contract_error() {
    let mut t = clients();
    t.columns[4].1 = Column::Str(vec![s("Chrome"), None]);
    let e = contract_err(t);
    assert!(e.starts_with("table clients does not match"), "{e}");
    assert!(
        e.contains("column `browser` is not nullable but row 1 is null"),
        "{e}"
    );
}

#[test]
fn missing_extra_and_short_columns_are_contract_errors() {
    let mut t = referrers();
    t.columns.pop();
    assert!(contract_err(t).contains("column `visitors` is missing"));

    let mut t = referrers();
    t.columns
        .push(("client_ip", Column::Str(vec![s("x"), s("y")])));
    assert!(contract_err(t).contains("column `client_ip` is not in the contract"));

    let mut t = referrers();
    t.columns[2].1 = Column::Int(vec![1]);
    assert!(contract_err(t).contains("column `requests` has 1 rows where period_start has 2"));

    let mut t = referrers();
    t.name = "raw_requests";
    let e = contract_err(t);
    assert!(e.starts_with("table raw_requests does not match"), "{e}");
    assert!(e.contains("no such contract"), "{e}");

    let mut t = referrers();
    t.columns[0].1 = Column::Timestamp(vec![DAY1, i64::MAX / 2]);
    assert!(contract_err(t).contains("outside the years 0000 to 9999"));
}

#[test]
fn a_table_given_twice_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = write_tables(dir.path(), &[referrers(), referrers()], &meta()).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
}

#[test]
fn extra_metadata_may_not_shadow_standard_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta();
    m.extra
        .push(("logcensus.policy_id".into(), "forged".into()));
    let e = write_tables(dir.path(), &[referrers()], &m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key `logcensus.policy_id` is reserved: logcensus writes it itself; use another \
         name for the extra metadata"
    );
    assert_eq!(files_below(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn an_unwritable_output_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a directory should be fails for every user, root included.
    let blocker = dir.path().join("out");
    std::fs::write(&blocker, b"").unwrap();
    let e = write_tables(&blocker, &[referrers()], &meta()).unwrap_err();
    // The component that cannot be a directory is named, not the partition below it.
    let want_path = blocker.clone();
    assert!(
        matches!(&e, SinkError::CreateDir { path, .. } if *path == want_path),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot create directory {}: something that is not a directory is in the way",
            want_path.display()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("; check --out (it must be a writable directory)"),
        "{msg}"
    );
}

#[test]
fn directories_are_made_with_their_missing_parents() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("out/clients/date=2026-05-17");
    create_dir_durably(&deep).unwrap();
    assert!(deep.is_dir());
    // Again, and below a directory that exists: nothing to make, no error.
    create_dir_durably(&deep).unwrap();
    let sibling = dir.path().join("out/clients/date=2026-05-18");
    create_dir_durably(&sibling).unwrap();
    assert!(sibling.is_dir());
    // Several threads making one tree at once (the sink writes its tables side by side).
    let shared = dir.path().join("a/b");
    std::thread::scope(|s| {
        for t in 0..4 {
            let d = shared.join(format!("t{t}/date=2026-05-17"));
            s.spawn(move || create_dir_durably(&d).unwrap());
        }
    });
    for t in 0..4 {
        assert!(shared.join(format!("t{t}/date=2026-05-17")).is_dir());
    }
    // A relative path whose first directory is new: it is synced into the working directory.
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let top = Removed(PathBuf::from(format!(
        ".durable-test-{}",
        std::process::id()
    )));
    let relative = top.0.join("out/date=2026-05-17");
    create_dir_durably(&relative).unwrap();
    assert!(relative.is_dir());
}

/// What a write leaves to sync besides each partition (synced after its file is renamed in):
/// the parent of every directory it made, `out`'s own parent among them when `out` is new. On
/// a second write into the same directories, nothing.
#[test]
fn the_parents_of_made_directories_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let tables = [traffic(), referrers()];
    let set = |paths: &[PathBuf]| paths.iter().cloned().collect::<BTreeSet<_>>();
    for round in 0..2 {
        let plan = make_dirs(&out, &tables).unwrap();
        let new = round == 0;
        let shared = if new {
            set(&[dir.path().to_path_buf(), out.clone()])
        } else {
            set(&[])
        };
        assert_eq!(plan.shared.0, shared);
        assert!(plan.parts[0].len() >= 2, "traffic() spans dates");
        for (table, parts) in tables.iter().zip(plan.parts) {
            let dates: Vec<String> = parts.keys().cloned().collect();
            let (files, syncs) = write_table(
                &out,
                table,
                check(table).unwrap(),
                parts,
                &meta(),
                MAX_ROW_GROUP_ROWS,
            )
            .unwrap();
            let table_dir = out.join(table.name);
            let want = if new { set(&[table_dir]) } else { set(&[]) };
            assert_eq!(syncs.0, want, "{}", table.name);
            assert_eq!(files.len(), dates.len());
            for (f, date) in files.iter().zip(&dates) {
                assert_eq!(
                    f.path,
                    partition_dir(&out, table.name, date).join(PART_FILE)
                );
                assert!(f.path.is_file());
            }
        }
    }
    let mut made = Syncs::default();
    make_missing_dirs(&out.join("clients/date=2026-05-17"), &mut made).unwrap();
    assert_eq!(made.0, set(&[out.clone(), out.join("clients")]));
}

#[test]
fn utc_dates() {
    assert_eq!(utc_date(0), "1970-01-01");
    assert_eq!(utc_date(-1), "1969-12-31");
    assert_eq!(utc_date(951_782_400 / 86_400), "2000-02-29");
    assert_eq!(utc_date(DAY1 / 86_400), "2026-05-17");
    assert_eq!(utc_date(MAX_SECONDS.div_euclid(86_400)), "9999-12-31");
    assert_eq!(utc_date(MIN_SECONDS.div_euclid(86_400)), "0000-01-01");
    // Every day of four years including a leap year: consecutive and well formed.
    let mut prev = utc_date(DAY1 / 86_400 - 1);
    for d in DAY1 / 86_400..DAY1 / 86_400 + 4 * 366 {
        let cur = utc_date(d);
        assert!(cur > prev, "{prev} then {cur}");
        let day: u32 = cur[8..].parse().unwrap();
        let month: u32 = cur[5..7].parse().unwrap();
        assert!(
            (1..=31).contains(&day) && (1..=12).contains(&month),
            "{cur}"
        );
        prev = cur;
    }
    assert_eq!(utc_date(DAY1 / 86_400 + 4 * 366), "2030-05-20");
}

#[test]
fn replacing_a_partition_with_different_content_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path(), &[traffic()]);
    let mut changed = traffic();
    if let Column::Int(v) = &mut changed
        .columns
        .iter_mut()
        .find(|(n, _)| *n == "requests")
        .unwrap()
        .1
    {
        v[0] += 1;
    } else {
        panic!("requests is an int column");
    }
    let files = written(dir.path(), &[changed]);
    let replaced: Vec<(&str, bool)> = files
        .iter()
        .map(|f| (f.partition.as_str(), f.replaced_different))
        .collect();
    assert_eq!(replaced, [("2026-05-17", true), ("2026-05-18", false)]);
}

#[test]
fn table_extra_metadata_goes_to_its_table_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta();
    m.table_extra = vec![(
        "clients".into(),
        "logcensus.release.min_visitors".into(),
        "10".into(),
    )];
    let files = write_tables(dir.path(), &all_tables(), &m).unwrap();
    for f in &files {
        let kv = inspect(&f.path, 0).unwrap().metadata;
        let k = kv
            .iter()
            .find(|(k, _)| k == "logcensus.release.min_visitors")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            k,
            (f.table == "clients").then_some("10"),
            "{}",
            f.path.display()
        );
    }
    m.table_extra = vec![("clients".into(), "logcensus.table".into(), "x".into())];
    let err = write_tables(dir.path(), &all_tables(), &m).unwrap_err();
    assert!(matches!(err, SinkError::ReservedKey { .. }), "{err}");
}
