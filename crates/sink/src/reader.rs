//! Reading tables back: `logcensus inspect` and the tests' view of the output.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::contract::contracts;
use crate::SinkError;

/// What `logcensus inspect` shows about one Parquet file.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// The Arrow schema the file reads as.
    pub schema: SchemaRef,
    /// Key-value metadata sorted by key, without the embedded Arrow schema (`ARROW:schema`).
    pub metadata: Vec<(String, String)>,
    /// The writer named in the footer (`logcensus <version>` for our files).
    pub created_by: Option<String>,
    /// Rows in the file.
    pub rows: u64,
    /// Row groups in the file.
    pub row_groups: usize,
    /// Compression codecs of the column chunks, distinct, sorted (e.g. `ZSTD`).
    pub compression: Vec<String>,
    /// Rows shown in `first_rows`.
    pub shown_rows: usize,
    /// The first rows as a text table (empty when none are shown).
    pub first_rows: String,
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file: {}", self.path.display())?;
        if let Some(by) = &self.created_by {
            writeln!(f, "created by: {by}")?;
        }
        let groups = if self.row_groups == 1 {
            "group"
        } else {
            "groups"
        };
        writeln!(f, "rows: {} in {} row {groups}", self.rows, self.row_groups)?;
        writeln!(f, "compression: {}", self.compression.join(", "))?;
        writeln!(f, "columns:")?;
        let types: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|c| c.data_type().to_string())
            .collect();
        let name_width = self
            .schema
            .fields()
            .iter()
            .map(|c| c.name().len())
            .max()
            .unwrap_or(0);
        let type_width = types.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        for (c, ty) in self.schema.fields().iter().zip(&types) {
            let null = if c.is_nullable() {
                "nullable"
            } else {
                "not null"
            };
            writeln!(f, "  {:name_width$}  {ty:type_width$}  {null}", c.name())?;
        }
        writeln!(f, "metadata:")?;
        for (k, v) in &self.metadata {
            writeln!(f, "  {k} = {v}")?;
        }
        if self.shown_rows > 0 {
            writeln!(f, "first {} of {} rows:", self.shown_rows, self.rows)?;
            writeln!(f, "{}", self.first_rows)?;
        }
        Ok(())
    }
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, SinkError> {
    let file = File::open(path).map_err(|source| SinkError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_parquet(path, e.to_string()))
}

fn not_parquet(path: &Path, detail: String) -> SinkError {
    SinkError::NotParquet {
        path: path.to_path_buf(),
        detail,
    }
}

/// Reads a Parquet file's schema, metadata and first `max_rows` rows.
pub fn inspect(path: &Path, max_rows: usize) -> Result<Inspection, SinkError> {
    let builder = open(path)?;
    let meta = builder.metadata().clone();
    let schema = builder.schema().clone();
    let file_meta = meta.file_metadata();
    let mut metadata: Vec<(String, String)> = file_meta
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != "ARROW:schema")
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    metadata.sort();
    let compression: BTreeSet<String> = meta
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter().map(|c| codec_name(c.compression())))
        .collect();
    let batches = if max_rows == 0 {
        Vec::new()
    } else {
        builder
            .with_limit(max_rows)
            .build()
            .map_err(|e| not_parquet(path, e.to_string()))?
            .collect::<Result<Vec<RecordBatch>, _>>()
            .map_err(|e| not_parquet(path, e.to_string()))?
    };
    let shown_rows = batches.iter().map(RecordBatch::num_rows).sum();
    let first_rows = if shown_rows == 0 {
        String::new()
    } else {
        arrow_cast::pretty::pretty_format_batches(&batches)
            .map_err(|e| not_parquet(path, e.to_string()))?
            .to_string()
    };
    Ok(Inspection {
        path: path.to_path_buf(),
        schema,
        metadata,
        created_by: file_meta.created_by().map(str::to_string),
        rows: u64::try_from(file_meta.num_rows()).unwrap_or(0),
        row_groups: meta.num_row_groups(),
        compression: compression.into_iter().collect(),
        shown_rows,
        first_rows,
    })
}

/// The codec without its level: the footer records only the codec (`ZSTD`, not `ZSTD(3)`).
fn codec_name(c: parquet::basic::Compression) -> String {
    let s = c.to_string();
    match s.find('(') {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every row of a table under `out`: each `date=*/part-*.parquet`, in path order.
///
/// A table with no directory (it had no rows) is empty. `out` itself must exist.
pub fn read_table(out: &Path, table: &str) -> Result<Vec<RecordBatch>, SinkError> {
    if !contracts().iter().any(|c| c.name == table) {
        let known: Vec<&str> = contracts().iter().map(|c| c.name.as_str()).collect();
        return Err(SinkError::UnknownTable {
            table: table.to_string(),
            known: known.join(", "),
        });
    }
    if let Err(source) = std::fs::metadata(out) {
        return Err(SinkError::Read {
            path: out.to_path_buf(),
            source,
        });
    }
    let dir = out.join(table);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut batches = Vec::new();
    for partition in sorted_entries(&dir, |name, is_dir| is_dir && name.starts_with("date="))? {
        let parts = sorted_entries(&partition, |name, is_dir| {
            !is_dir && name.starts_with("part-") && name.ends_with(".parquet")
        })?;
        for part in parts {
            for batch in open(&part)?
                .build()
                .map_err(|e| not_parquet(&part, e.to_string()))?
            {
                batches.push(batch.map_err(|e| not_parquet(&part, e.to_string()))?);
            }
        }
    }
    Ok(batches)
}

/// The entries of `dir` that `keep(name, is_dir)` accepts, sorted by path.
fn sorted_entries(
    dir: &Path,
    keep: impl Fn(&str, bool) -> bool,
) -> Result<Vec<PathBuf>, SinkError> {
    let read_err = |source| SinkError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let is_dir = entry.file_type().map_err(read_err)?.is_dir();
        if keep(&entry.file_name().to_string_lossy(), is_dir) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tables::*;
    use crate::write_tables;

    #[test]
    fn inspect_shows_schema_metadata_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_tables(dir.path(), &[traffic()], &meta()).unwrap();
        let i = inspect(&files[0].path, 10).unwrap();
        assert_eq!(i.rows, 2);
        assert_eq!(i.row_groups, 1);
        assert_eq!(i.shown_rows, 2);
        assert_eq!(i.compression, ["ZSTD"]);
        assert_eq!(
            i.created_by.as_deref(),
            Some(format!("logcensus {}", crate::VERSION).as_str())
        );
        let keys: Vec<&str> = i.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "logcensus.geo_level",
                "logcensus.partition",
                "logcensus.period",
                "logcensus.pipeline",
                "logcensus.policy_hash",
                "logcensus.policy_id",
                "logcensus.table",
                "logcensus.test_note",
                "logcensus.version",
            ]
        );
        let text = i.to_string();
        for want in [
            format!("file: {}", files[0].path.display()),
            "rows: 2 in 1 row group".to_string(),
            "compression: ZSTD".to_string(),
            "logcensus.pipeline = partner-daily".to_string(),
            "logcensus.policy_id = site-privacy-policy-2010-05-05".to_string(),
            "logcensus.partition = 2026-05-17".to_string(),
            "first 2 of 2 rows:".to_string(),
            "| 2026-05-17T00:00:00Z | NA        | US        | US-VA     | 40       | 12       | 1234567 |".to_string(),
        ] {
            assert!(text.contains(&want), "inspect output lacks {want:?}:\n{text}");
        }
        assert!(!text.contains("ARROW:schema"), "{text}");
        let columns: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| *l != "columns:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            columns[0],
            ["period_start", "Timestamp(µs,", "\"UTC\")", "not", "null"]
        );
        assert_eq!(columns[3], ["region", "Utf8", "nullable"]);
        assert_eq!(columns.len(), 7);
    }

    #[test]
    fn inspect_shows_at_most_max_rows() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_tables(dir.path(), &[clients()], &meta()).unwrap();
        let one = inspect(&files[0].path, 1).unwrap();
        assert_eq!((one.rows, one.shown_rows), (2, 1));
        assert!(one.to_string().contains("first 1 of 2 rows:"));
        assert!(!one.first_rows.contains("Chrome"), "{}", one.first_rows);
        let none = inspect(&files[0].path, 0).unwrap();
        assert_eq!(none.shown_rows, 0);
        assert!(none.first_rows.is_empty());
        assert!(!none.to_string().contains("first"));
    }

    #[test]
    fn inspect_names_a_file_that_is_not_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(
            &path,
            b"127.0.0.1 - - [17/May/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5\n",
        )
        .unwrap();
        let e = inspect(&path, 10).unwrap_err();
        assert!(matches!(e, SinkError::NotParquet { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "{} is not a readable Parquet file: ",
                path.display()
            )),
            "{msg}"
        );
        assert!(
            msg.ends_with("; pass a part-*.parquet file written by logcensus"),
            "{msg}"
        );
    }

    #[test]
    fn inspect_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.parquet");
        let msg = inspect(&path, 10).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot read {}: ", path.display())),
            "{msg}"
        );
        assert!(msg.ends_with("; check the path"), "{msg}");
    }

    #[test]
    fn read_table_reads_partitions_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        write_tables(dir.path(), &all_tables(), &meta()).unwrap();
        let b = read_table(dir.path(), "traffic_quality").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert_eq!(b[0].num_columns(), 27);
        // Files the writer would never produce are not read.
        let tq = dir.path().join("traffic_quality");
        std::fs::write(
            tq.join("date=2026-05-17/.part-00000.parquet.1.tmp"),
            b"half",
        )
        .unwrap();
        std::fs::write(tq.join("_SUCCESS"), b"").unwrap();
        assert_eq!(read_table(dir.path(), "traffic_quality").unwrap().len(), 2);
    }

    #[test]
    fn read_table_errors_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_table(dir.path(), "clients").unwrap().is_empty());
        let e = read_table(dir.path(), "visitors").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown table `visitors`: logcensus writes traffic_by_region, clients, referrers, traffic_quality"
        );
        let missing = dir.path().join("missing");
        let e = read_table(&missing, "clients").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
        let bad = dir.path().join("clients/date=2026-05-17");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("part-00000.parquet"), b"not parquet").unwrap();
        let e = read_table(dir.path(), "clients").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{} is not a readable Parquet file",
                bad.join("part-00000.parquet").display()
            )),
            "{e}"
        );
    }
}
