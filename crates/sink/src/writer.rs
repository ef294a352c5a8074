//! Writing finished tables: contract check, one Hive-style partition per UTC date, atomic files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use logcensus_aggregate::{Column, TableOut};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::contract::{arrow_schema, contract, contracts, ColumnType, TableContract};
use crate::SinkError;

/// The logcensus version written into every file.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The one part file each partition holds.
pub const PART_FILE: &str = "part-00000.parquet";

/// Rows per row group at most: bounds the writer's memory and lets readers skip by statistics.
const MAX_ROW_GROUP_ROWS: usize = 1_000_000;

/// zstd level: a good ratio at a speed well above what aggregate tables need.
const ZSTD_LEVEL: i32 = 3;

/// `period_start` must fall in years 0000–9999, so that the partition name is `YYYY-MM-DD`.
const MIN_SECONDS: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// Keys the sink writes itself (plus the Arrow schema the Parquet writer embeds).
const RESERVED_KEYS: [&str; 9] = [
    "logcensus.version",
    "logcensus.pipeline",
    "logcensus.policy_id",
    "logcensus.policy_hash",
    "logcensus.period",
    "logcensus.geo_level",
    "logcensus.table",
    "logcensus.partition",
    "ARROW:schema",
];

/// Where a run's tables came from; written into every file's key-value metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunMetadata {
    /// Pipeline (job) name → `logcensus.pipeline`.
    pub pipeline: String,
    /// Policy id → `logcensus.policy_id`.
    pub policy_id: String,
    /// BLAKE3 hash of the policy file → `logcensus.policy_hash`.
    pub policy_hash: String,
    /// `day` or `hour` → `logcensus.period`.
    pub period: String,
    /// `continent`, `country` or `region` → `logcensus.geo_level`.
    pub geo_level: String,
    /// More entries, written after the standard ones, in this order. Keys may not be one of the
    /// standard keys.
    pub extra: Vec<(String, String)>,
    /// More entries for one table's files only (e.g. that table's release parameters), written
    /// after `extra`: `(table, key, value)`. Same key rules as `extra`.
    pub table_extra: Vec<(String, String, String)>,
}

/// One file a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Table name.
    pub table: &'static str,
    /// Partition date, `YYYY-MM-DD` (UTC).
    pub partition: String,
    /// `<out>/<table>/date=<partition>/part-00000.parquet`.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: usize,
    /// True when an earlier run had written this partition with different content (not an
    /// identical re-run): its tables for this date are now this run's alone.
    pub replaced_different: bool,
}

/// Writes every table under `out`, one file per table and UTC date of `period_start`:
/// `<out>/<table>/date=YYYY-MM-DD/part-00000.parquet`.
///
/// All tables are checked against their contracts before anything is written. Each file is
/// written to a hidden temporary name in its directory, synced and renamed into place, so a
/// reader sees either the old file or the new one; then any other `part-*.parquet` in the
/// partition (left by an older run) is removed. Writing the same tables twice gives the same
/// bytes. A table with no rows writes nothing, and partitions this run has no rows for are left
/// alone.
pub fn write_tables(
    out: &Path,
    tables: &[TableOut],
    meta: &RunMetadata,
) -> Result<Vec<WrittenFile>, SinkError> {
    write_tables_with(out, tables, meta, MAX_ROW_GROUP_ROWS)
}

pub(crate) fn write_tables_with(
    out: &Path,
    tables: &[TableOut],
    meta: &RunMetadata,
    max_row_group_rows: usize,
) -> Result<Vec<WrittenFile>, SinkError> {
    if let Some(key) = meta
        .extra
        .iter()
        .map(|(k, _)| k)
        .chain(meta.table_extra.iter().map(|(_, k, _)| k))
        .find(|k| RESERVED_KEYS.contains(&k.as_str()))
    {
        return Err(SinkError::ReservedKey { key: key.clone() });
    }
    let mut checked = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        if tables[..i].iter().any(|o| o.name == t.name) {
            return Err(contract_error(
                t.name,
                "the table is given twice in one run".into(),
            ));
        }
        checked.push(check(t)?);
    }
    let plan = make_dirs(out, tables)?;
    // Each table on its own thread: most of a file's time is waiting for the disk, and a
    // backfill writes a file per table and date. Files come back in table order; the first
    // table (in order) that fails gives the error, as when they were written one by one.
    let per_table: Vec<Result<Vec<WrittenFile>, SinkError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = tables
            .iter()
            .zip(checked)
            .zip(plan.parts)
            .map(|((table, contract), parts)| {
                scope.spawn(move || {
                    let (files, syncs) =
                        write_table(out, table, contract, parts, meta, max_row_group_rows)?;
                    syncs.run()?;
                    Ok(files)
                })
            })
            .collect();
        // Meanwhile, here: the directories the tables share.
        let shared = plan.shared.run();
        let per_table = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        shared.map(|()| per_table)
    })?;
    let mut written = Vec::new();
    for files in per_table {
        written.extend(files?);
    }
    Ok(written)
}

/// The tables' rows by partition date, and the directories to sync (see [`make_dirs`]).
#[derive(Debug)]
struct DirPlan {
    /// The parents of `out` and of the table directories, where those were made.
    shared: Syncs,
    /// Per table, its rows by partition date.
    parts: Vec<BTreeMap<String, Vec<usize>>>,
}

/// Makes `out` (even when no table has rows) and the directory of each table with rows, without
/// a sync each, and says which directories then need one: a new directory's name is an entry
/// in its parent, and until that parent is synced a crash can take the directory, with the
/// synced files in it, away. Those shared directories are synced on this thread while each
/// table's thread makes its partitions' directories and syncs the table's directory once at its
/// end ([`write_table`]): a file waits for the disk twice (the file, then its partition's
/// directory), where making each directory durably before the next had it wait four times,
/// and a backfill's hundreds of directories are made by the table threads side by side.
fn make_dirs(out: &Path, tables: &[TableOut]) -> Result<DirPlan, SinkError> {
    let mut shared = Syncs::default();
    make_missing_dirs(out, &mut shared)?;
    let mut parts = Vec::with_capacity(tables.len());
    for table in tables {
        let dates = partitions(table);
        if !dates.is_empty() {
            make_missing_dirs(&out.join(table.name), &mut shared)?;
        }
        parts.push(dates);
    }
    Ok(DirPlan { shared, parts })
}

/// `<out>/<table>/date=<date>`.
fn partition_dir(out: &Path, table: &str, date: &str) -> PathBuf {
    out.join(table).join(format!("date={date}"))
}

/// Directories whose entries were made or renamed, to be synced before a write reports success.
#[derive(Debug, Default)]
struct Syncs(BTreeSet<PathBuf>);

impl Syncs {
    fn run(&self) -> Result<(), SinkError> {
        self.0.iter().try_for_each(|d| sync_dir(d))
    }
}

/// Writes one table's partitions (one file per date) into its directory, made beforehand:
/// makes each partition's directory, writes its file and syncs the directory once the file is
/// renamed in. Returns the files and the directories left to sync (the table's, where
/// partition directories were made in it).
fn write_table(
    out: &Path,
    table: &TableOut,
    contract: &'static TableContract,
    parts: BTreeMap<String, Vec<usize>>,
    meta: &RunMetadata,
    max_row_group_rows: usize,
) -> Result<(Vec<WrittenFile>, Syncs), SinkError> {
    let schema = arrow_schema(contract);
    let mut written = Vec::new();
    let mut syncs = Syncs::default();
    for (date, rows) in parts {
        let columns: Vec<ArrayRef> = table.columns.iter().map(|(_, c)| take(c, &rows)).collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| contract_error(table.name, e.to_string()))?;
        let dir = partition_dir(out, table.name, &date);
        make_missing_dirs(&dir, &mut syncs)?;
        let kv = key_values(meta, table.name, &date);
        let (path, replaced_different) = write_partition(&dir, &batch, kv, max_row_group_rows)?;
        sync_dir(&dir)?;
        written.push(WrittenFile {
            table: table.name,
            partition: date,
            path,
            rows: batch.num_rows(),
            replaced_different,
        });
    }
    Ok((written, syncs))
}

fn contract_error(table: &str, detail: String) -> SinkError {
    SinkError::Contract {
        table: table.to_string(),
        detail,
    }
}

fn kind(c: &Column) -> ColumnType {
    match c {
        Column::Timestamp(_) => ColumnType::Timestamp,
        Column::Str(_) => ColumnType::String,
        Column::Int(_) => ColumnType::Int64,
        Column::Float(_) => ColumnType::Float64,
    }
}

/// Checks a table against its contract: the same columns in the same order with the same types,
/// equal lengths, no null where the contract forbids one, `period_start` in range.
fn check(table: &TableOut) -> Result<&'static TableContract, SinkError> {
    let err = |detail: String| contract_error(table.name, detail);
    let Some(contract) = contract(table.name) else {
        let known: Vec<&str> = contracts().iter().map(|c| c.name.as_str()).collect();
        return Err(err(format!(
            "there is no such contract (the tables are {})",
            known.join(", ")
        )));
    };
    for (i, want) in contract.columns.iter().enumerate() {
        let Some((name, col)) = table.columns.get(i) else {
            return Err(err(format!("column `{}` is missing", want.name)));
        };
        if *name != want.name {
            return Err(err(format!(
                "column {} is `{name}` where the contract has `{}`",
                i + 1,
                want.name
            )));
        }
        if kind(col) != want.ty {
            return Err(err(format!(
                "column `{name}` holds {} values where the contract says {}",
                kind(col).name(),
                want.ty.name()
            )));
        }
    }
    if let Some((name, _)) = table.columns.get(contract.columns.len()) {
        return Err(err(format!("column `{name}` is not in the contract")));
    }
    let rows = table.num_rows();
    for ((name, col), want) in table.columns.iter().zip(&contract.columns) {
        if col.len() != rows {
            return Err(err(format!(
                "column `{name}` has {} rows where period_start has {rows}",
                col.len()
            )));
        }
        match col {
            Column::Str(v) if !want.nullable => {
                if let Some(r) = v.iter().position(Option::is_none) {
                    return Err(err(format!(
                        "column `{name}` is not nullable but row {r} is null"
                    )));
                }
            }
            Column::Timestamp(v) => {
                if let Some(s) = v.iter().find(|s| !(MIN_SECONDS..=MAX_SECONDS).contains(*s)) {
                    return Err(err(format!(
                        "column `{name}` holds {s}, outside the years 0000 to 9999"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(contract)
}

/// Row indexes by UTC date of `period_start`, dates in order, rows in table order.
fn partitions(table: &TableOut) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    if let Some((_, Column::Timestamp(starts))) = table.columns.first() {
        // Rows come sorted, so a date's rows are usually one run: format each date once.
        let mut last: Option<(i64, String)> = None;
        for (row, &s) in starts.iter().enumerate() {
            let day = s.div_euclid(86_400);
            let date = match &last {
                Some((d, text)) if *d == day => text.clone(),
                _ => {
                    let text = utc_date(day);
                    last = Some((day, text.clone()));
                    text
                }
            };
            out.entry(date).or_default().push(row);
        }
    }
    out
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian calendar).
pub fn utc_date(days: i64) -> String {
    // Shift to a calendar whose years start on 1 March, so the leap day ends a year; then split
    // into 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The rows `rows` of a column, as an Arrow array.
fn take(col: &Column, rows: &[usize]) -> ArrayRef {
    match col {
        Column::Timestamp(v) => Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|&r| v[r] * 1_000_000))
                .with_timezone("UTC"),
        ),
        Column::Str(v) => Arc::new(StringArray::from_iter(
            rows.iter().map(|&r| v[r].as_deref()),
        )),
        Column::Int(v) => Arc::new(Int64Array::from_iter_values(rows.iter().map(|&r| v[r]))),
        Column::Float(v) => Arc::new(Float64Array::from_iter_values(rows.iter().map(|&r| v[r]))),
    }
}

fn key_values(meta: &RunMetadata, table: &str, date: &str) -> Vec<KeyValue> {
    let standard = [
        ("logcensus.version", VERSION),
        ("logcensus.pipeline", &meta.pipeline),
        ("logcensus.policy_id", &meta.policy_id),
        ("logcensus.policy_hash", &meta.policy_hash),
        ("logcensus.period", &meta.period),
        ("logcensus.geo_level", &meta.geo_level),
        ("logcensus.table", table),
        ("logcensus.partition", date),
    ];
    standard
        .iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
        .chain(
            meta.extra
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .chain(
            meta.table_extra
                .iter()
                .filter(|(t, _, _)| t == table)
                .map(|(_, k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .collect()
}

fn properties(kv: Vec<KeyValue>, max_row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        // The default names the parquet crate's version; ours keeps bytes stable across
        // dependency updates that do not change the encoding.
        .set_created_by(format!("logcensus {VERSION}"))
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("3 is a valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(max_row_group_rows.max(1)))
        .set_key_value_metadata(Some(kv))
        .build()
}

/// Writes one partition's file atomically into `dir` (which exists) and removes stale parts;
/// returns the final path and whether it replaced a file with different content. The file is
/// synced before its rename; `dir` is not synced here (the caller syncs it).
fn write_partition(
    dir: &Path,
    batch: &RecordBatch,
    kv: Vec<KeyValue>,
    max_row_group_rows: usize,
) -> Result<(PathBuf, bool), SinkError> {
    let path = dir.join(PART_FILE);
    let tmp = dir.join(format!(".{PART_FILE}.{}.tmp", std::process::id()));
    if let Err(e) = write_file(&tmp, batch, kv, max_row_group_rows) {
        // Best effort: the error being reported matters more than a leftover hidden file.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Output files are deterministic, so different bytes mean different input for this date.
    let replaced_different = match std::fs::read(&path) {
        Ok(old) => std::fs::read(&tmp).map_or(true, |new| new != old),
        Err(_) => false,
    };
    if let Err(source) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(SinkError::Rename {
            from: tmp,
            to: path,
            source,
        });
    }
    remove_stale_parts(dir)?;
    Ok((path, replaced_different))
}

fn write_file(
    tmp: &Path,
    batch: &RecordBatch,
    kv: Vec<KeyValue>,
    max_row_group_rows: usize,
) -> Result<(), SinkError> {
    let write_err = |source| SinkError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let encode_err = |source| SinkError::Encode {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(write_err)?;
    let props = properties(kv, max_row_group_rows);
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(encode_err)?;
    writer.write(batch).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    writer.inner().sync_all().map_err(write_err)
}

/// Creates `dir` and whichever of its parents are missing, and syncs the parent of each one
/// that was missing: a new directory's name is an entry in its parent, and until that parent is
/// synced a crash can take the directory, with the synced files in it, away. A directory that
/// another thread makes meanwhile is synced into its parent here too; one that another thread
/// made just before (and may not have synced yet) is not, so threads that share parents make
/// those first, once.
pub fn create_dir_durably(dir: &Path) -> Result<(), SinkError> {
    let mut syncs = Syncs::default();
    make_missing_dirs(dir, &mut syncs)?;
    syncs.run()
}

/// Creates `dir` and whichever of its parents are missing, and adds the parent of each one it
/// made to `syncs` (see [`create_dir_durably`]).
fn make_missing_dirs(dir: &Path, syncs: &mut Syncs) -> Result<(), SinkError> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.is_dir() {
        missing.push(d);
        d = d.parent().unwrap_or(Path::new(""));
    }
    for m in missing.iter().rev() {
        match std::fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && m.is_dir() => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SinkError::CreateDir {
                    path: m.to_path_buf(),
                    source: std::io::Error::new(
                        e.kind(),
                        "something that is not a directory is in the way",
                    ),
                })
            }
            Err(source) => {
                return Err(SinkError::CreateDir {
                    path: m.to_path_buf(),
                    source,
                })
            }
        }
        // A relative path's first component is in the working directory.
        syncs.0.insert(match m.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
    }
    Ok(())
}

/// Syncs a directory: makes the entries made or renamed in it durable (an entry is data too).
pub fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SinkError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes every `part-*.parquet` but ours: an older run may have split the partition
/// differently, and readers would count those rows twice.
fn remove_stale_parts(dir: &Path) -> Result<(), SinkError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SinkError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SinkError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") && name != PART_FILE {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|source| SinkError::RemoveStale { path, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
