//! Checking one partition file: schema against the contract, provenance metadata against the
//! pipeline and the path, and every row.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit as ArrowTimeUnit};
use logcensus_policy::Period;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{ConvertedType, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::file::metadata::{FileMetaData, KeyValue};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::schema::types::{SchemaDescriptor, Type};

use crate::contract::{ColumnType, Contract};
use crate::date::{self, Date};
use crate::layout::Place;
use crate::{pages, values, Violation, ViolationKind};

/// At most this many violations are listed per column of a file; the rest are counted in one
/// more violation, so a file full of bad values cannot exhaust memory.
pub(crate) const MAX_LISTED_PER_COLUMN: usize = 100;

/// The key-value metadata every file carries (schemas/README.md).
const REQUIRED_KEYS: [&str; 8] = [
    "logcensus.version",
    "logcensus.pipeline",
    "logcensus.policy_id",
    "logcensus.policy_hash",
    "logcensus.period",
    "logcensus.geo_level",
    "logcensus.table",
    "logcensus.partition",
];
/// Keys a release step adds.
pub(crate) const RELEASE_PREFIX: &str = "logcensus.release.";
const MIN_VISITORS_KEY: &str = "logcensus.release.min_visitors";
const SELECTION_THRESHOLD_KEY: &str = "logcensus.release.selection_threshold";
/// The Arrow schema the Arrow writer embeds; decoded and checked, never trusted for types.
const ARROW_SCHEMA_KEY: &str = "ARROW:schema";

/// What every file must agree with.
pub(crate) struct Expect<'a> {
    pub pipeline: &'a str,
    pub policy_id: &'a str,
    pub policy_hash: &'a str,
    pub period: Period,
    pub geo_level: &'a str,
    /// The threshold given to the audit, which takes precedence over the files' metadata.
    pub min_visitors: Option<u64>,
    /// The pipeline, for the release parameters each file must record.
    pub release: &'a logcensus_policy::Pipeline,
}

/// The small-cell threshold a file was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threshold {
    /// The file has no `visitors` column (or could not be read).
    NoVisitorsColumn,
    /// The threshold given to the audit.
    Given(u64),
    /// The file's `logcensus.release.min_visitors`.
    FromMetadata(u64),
    /// Neither: small cells were not checked.
    None,
}

/// What was checked in one file.
#[derive(Debug)]
pub(crate) struct Checked {
    pub rows: usize,
    pub threshold: Threshold,
}

/// Violations of one file, with the per-column limit.
pub(crate) struct Findings<'a> {
    file: &'a Path,
    out: Vec<Violation>,
    per_column: HashMap<String, usize>,
}

impl<'a> Findings<'a> {
    pub(crate) fn new(file: &'a Path) -> Findings<'a> {
        Findings {
            file,
            out: Vec::new(),
            per_column: HashMap::new(),
        }
    }

    fn push(
        &mut self,
        column: Option<&str>,
        row: Option<usize>,
        kind: ViolationKind,
        message: String,
    ) {
        self.out.push(Violation {
            file: self.file.to_path_buf(),
            column: column.map(str::to_string),
            row,
            kind,
            message,
        });
    }

    /// About the whole file.
    pub(crate) fn file(&mut self, kind: ViolationKind, message: String) {
        self.push(None, None, kind, message);
    }

    /// About a column's definition (bounded by the number of columns).
    pub(crate) fn column(&mut self, column: &str, kind: ViolationKind, message: String) {
        self.push(Some(column), None, kind, message);
    }

    /// About a value in a column (a row, or a value outside the rows); limited per column.
    pub(crate) fn value(
        &mut self,
        column: &str,
        row: Option<usize>,
        kind: ViolationKind,
        message: String,
    ) {
        let count = self.per_column.entry(column.to_string()).or_default();
        *count += 1;
        if *count <= MAX_LISTED_PER_COLUMN {
            self.push(Some(column), row, kind, message);
        }
    }

    /// The violations, with one more per column whose violations were not all listed.
    pub(crate) fn finish(mut self) -> Vec<Violation> {
        let mut over: Vec<(String, usize)> = self
            .per_column
            .iter()
            .filter(|(_, &n)| n > MAX_LISTED_PER_COLUMN)
            .map(|(c, &n)| (c.clone(), n - MAX_LISTED_PER_COLUMN))
            .collect();
        over.sort();
        for (column, more) in over {
            let kind = self
                .out
                .iter()
                .rev()
                .find(|v| v.column.as_deref() == Some(&column))
                .map_or(ViolationKind::Unreadable, |v| v.kind);
            self.push(
                Some(&column),
                None,
                kind,
                format!(
                    "{more} more violations in this column not listed (only the first {MAX_LISTED_PER_COLUMN} are)"
                ),
            );
        }
        self.out
    }
}

/// Checks one partition file, appending its violations to `out`.
pub(crate) fn check(
    path: &Path,
    place: &Place,
    expect: &Expect,
    out: &mut Vec<Violation>,
) -> Checked {
    let mut findings = Findings::new(path);
    let checked = check_file(path, place, expect, &mut findings);
    out.extend(findings.finish());
    checked
}

/// Opens a file for the footer and page checks, with the page index and page header statistics
/// (both skipped by default, both places a value could hide).
pub(crate) fn open(path: &Path) -> Result<SerializedFileReader<File>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let props = ReaderProperties::builder()
        .set_read_page_statistics(true)
        .build();
    let options = ReadOptionsBuilder::new()
        .with_page_index()
        .with_reader_properties(props)
        .build();
    SerializedFileReader::new_with_options(file, options).map_err(|e| e.to_string())
}

fn check_file(path: &Path, place: &Place, expect: &Expect, f: &mut Findings) -> Checked {
    let unread = Checked {
        rows: 0,
        threshold: Threshold::NoVisitorsColumn,
    };
    let reader = match open(path) {
        Ok(reader) => reader,
        Err(e) => {
            f.file(
                ViolationKind::Unreadable,
                format!("not a readable Parquet file: {e}"),
            );
            return unread;
        }
    };
    let file_meta = reader.metadata().file_metadata();
    check_schema(file_meta.schema_descr(), place.contract, f);
    let recorded_k = check_metadata(file_meta, place, expect, f);

    let has_visitors = file_meta
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .any(|field| field.name() == "visitors");
    let threshold = match (has_visitors, expect.min_visitors, recorded_k) {
        (false, _, _) => Threshold::NoVisitorsColumn,
        (true, Some(k), _) => Threshold::Given(k),
        (true, None, Some(k)) => Threshold::FromMetadata(k),
        (true, None, None) => Threshold::None,
    };
    let mut k = match threshold {
        Threshold::Given(k) => Some((k, "the min_visitors given")),
        Threshold::FromMetadata(k) => Some((k, MIN_VISITORS_KEY)),
        _ => None,
    };
    // A differentially private release shows no row under its selection threshold (its
    // released visitor counts are at least that): a row below it was not selected by the
    // mechanism the metadata names.
    if has_visitors {
        if let Some(t) = crate::release::selection_threshold(file_meta.key_value_metadata()) {
            if k.is_none_or(|(k, _)| t > k) {
                k = Some((t, SELECTION_THRESHOLD_KEY));
            }
        }
    }

    let mut scan = RowScan {
        place,
        period: expect.period,
        k,
        flagged_columns: HashSet::new(),
    };
    let rows = scan.read(path, f);
    pages::check(&reader, &scan.flagged_columns, f);
    Checked { rows, threshold }
}

/// Columns: names, order, types and nullability exactly as in the contract.
fn check_schema(schema: &SchemaDescriptor, contract: &Contract, f: &mut Findings) {
    let fields = schema.root_schema().get_fields();
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for field in fields {
        let name = field.name();
        if !seen.insert(name) {
            f.column(
                name,
                ViolationKind::Schema,
                "the file has more than one column with this name".into(),
            );
            continue;
        }
        let Some((at, want)) = contract.column(name) else {
            f.column(
                name,
                ViolationKind::Schema,
                format!(
                    "unexpected column: the {} contract has no column `{name}`",
                    contract.table
                ),
            );
            continue;
        };
        order.push(at);
        if !field.is_primitive() {
            f.column(
                name,
                ViolationKind::Schema,
                format!(
                    "a nested group column, the contract says {}",
                    want.ty.describe()
                ),
            );
            continue;
        }
        if !type_matches(want.ty, field) {
            f.column(
                name,
                ViolationKind::Schema,
                format!(
                    "type {}, the contract says {}",
                    describe_type(field),
                    want.ty.describe()
                ),
            );
        }
        let info = field.get_basic_info();
        // Every column below the root has a repetition; a file without one is read as optional.
        let repetition = if info.has_repetition() {
            info.repetition()
        } else {
            Repetition::OPTIONAL
        };
        match repetition {
            Repetition::REQUIRED => {}
            Repetition::OPTIONAL if want.nullable => {}
            Repetition::OPTIONAL => f.column(
                name,
                ViolationKind::Schema,
                "declared nullable (OPTIONAL), the contract says not null".into(),
            ),
            Repetition::REPEATED => f.column(
                name,
                ViolationKind::Schema,
                "declared repeated (a list), the contract says one value per row".into(),
            ),
        }
    }
    if order.windows(2).any(|w| w[0] > w[1]) {
        let file_order: Vec<&str> = fields
            .iter()
            .map(|field| field.name())
            .filter(|name| contract.column(name).is_some())
            .collect();
        f.file(
            ViolationKind::Schema,
            format!(
                "columns out of the contract's order: the file has {}",
                file_order.join(", ")
            ),
        );
    }
    for (at, column) in contract.columns.iter().enumerate() {
        if !fields.iter().any(|field| field.name() == column.name) {
            f.column(
                &column.name,
                ViolationKind::Schema,
                format!(
                    "missing column: column {} of the {} contract, {}",
                    at + 1,
                    contract.table,
                    column.ty.describe()
                ),
            );
        }
    }
}

fn type_matches(want: ColumnType, field: &Type) -> bool {
    let info = field.get_basic_info();
    let logical = info.logical_type_ref();
    let converted = info.converted_type();
    match (want, field.get_physical_type()) {
        (ColumnType::Timestamp, PhysicalType::INT64) => match logical {
            Some(LogicalType::Timestamp(t)) => t.is_adjusted_to_u_t_c && t.unit == TimeUnit::MICROS,
            None => converted == ConvertedType::TIMESTAMP_MICROS,
            Some(_) => false,
        },
        (ColumnType::String, PhysicalType::BYTE_ARRAY) => match logical {
            Some(LogicalType::String) => true,
            None => converted == ConvertedType::UTF8,
            Some(_) => false,
        },
        (ColumnType::Int64, PhysicalType::INT64) => match logical {
            Some(LogicalType::Integer(i)) => i.bit_width == 64 && i.is_signed,
            None => matches!(converted, ConvertedType::NONE | ConvertedType::INT_64),
            Some(_) => false,
        },
        (ColumnType::Float64, PhysicalType::DOUBLE) => {
            logical.is_none() && converted == ConvertedType::NONE
        }
        _ => false,
    }
}

/// A primitive column's Parquet type, e.g. `INT64 TIMESTAMP(MILLIS, UTC)`.
fn describe_type(field: &Type) -> String {
    let info = field.get_basic_info();
    let physical = format!("{:?}", field.get_physical_type());
    let logical = match info.logical_type_ref() {
        None if info.converted_type() == ConvertedType::NONE => return physical,
        None => format!("{:?}", info.converted_type()),
        Some(LogicalType::String) => "STRING".into(),
        Some(LogicalType::Timestamp(t)) => format!(
            "TIMESTAMP({:?}, {})",
            t.unit,
            if t.is_adjusted_to_u_t_c {
                "UTC"
            } else {
                "local"
            }
        ),
        Some(LogicalType::Integer(i)) => format!(
            "INT({}, {})",
            i.bit_width,
            if i.is_signed { "signed" } else { "unsigned" }
        ),
        Some(other) => format!("{other:?}"),
    };
    format!("{physical} {logical}")
}

/// Provenance metadata; returns the file's `logcensus.release.min_visitors`, if it has a valid
/// one.
fn check_metadata(
    meta: &FileMetaData,
    place: &Place,
    expect: &Expect,
    f: &mut Findings,
) -> Option<u64> {
    let empty = Vec::new();
    let kv: &Vec<KeyValue> = meta.key_value_metadata().unwrap_or(&empty);
    let values = |key: &str| -> Vec<Option<&str>> {
        kv.iter()
            .filter(|e| e.key == key)
            .map(|e| e.value.as_deref())
            .collect()
    };

    let mut counted: Vec<&str> = Vec::new();
    for entry in kv {
        let key = entry.key.as_str();
        if counted.contains(&key) {
            continue;
        }
        counted.push(key);
        let n = kv.iter().filter(|e| e.key == key).count();
        if n > 1 {
            f.file(
                ViolationKind::Metadata,
                format!(
                    "key-value metadata `{}` appears {n} times; readers may take any of them",
                    quote(key)
                ),
            );
        }
        let known = REQUIRED_KEYS.contains(&key)
            || key.starts_with(RELEASE_PREFIX)
            || key == ARROW_SCHEMA_KEY;
        if !known {
            f.file(
                ViolationKind::Metadata,
                format!(
                    "unexpected key-value metadata `{}`: a release carries only the logcensus.* keys \
                     and ARROW:schema, and an unknown entry could hold anything",
                    quote(key)
                ),
            );
        }
    }

    let partition = place.date.to_string();
    let exact: [(&str, &str, &str); 7] = [
        ("logcensus.pipeline", expect.pipeline, "the pipeline's name"),
        (
            "logcensus.policy_id",
            expect.policy_id,
            "the pipeline's policy id",
        ),
        (
            "logcensus.policy_hash",
            expect.policy_hash,
            "the pipeline's policy hash",
        ),
        (
            "logcensus.period",
            expect.period.name(),
            "the pipeline's period",
        ),
        (
            "logcensus.geo_level",
            expect.geo_level,
            "the pipeline's geo level",
        ),
        (
            "logcensus.table",
            &place.contract.table,
            "the file's table directory",
        ),
        (
            "logcensus.partition",
            &partition,
            "the file's date= directory",
        ),
    ];
    for (key, want, source) in exact {
        let found = values(key);
        if found.is_empty() {
            f.file(
                ViolationKind::Metadata,
                format!("missing key-value metadata `{key}` ({source} is `{want}`)"),
            );
        }
        for value in found {
            match value {
                Some(v) if v == want => {}
                Some(v) => f.file(
                    ViolationKind::Metadata,
                    format!("`{key}` is `{}`, but {source} is `{want}`", quote(v)),
                ),
                None => f.file(
                    ViolationKind::Metadata,
                    format!("`{key}` has no value, but {source} is `{want}`"),
                ),
            }
        }
    }

    // Free-text values: checked like table values.
    let free_text = kv
        .iter()
        .filter(|e| e.key == "logcensus.version" || e.key.starts_with(RELEASE_PREFIX));
    if values("logcensus.version").is_empty() {
        f.file(
            ViolationKind::Metadata,
            "missing key-value metadata `logcensus.version`".into(),
        );
    }
    for entry in free_text {
        let found = values::inspect(entry.value.as_deref().unwrap_or(""));
        if let Some(first) = found.first() {
            f.file(
                first.kind(),
                format!(
                    "the value of metadata `{}` {}",
                    quote(&entry.key),
                    values::describe_all(&found)
                ),
            );
        }
    }

    if kv.iter().any(|e| e.key == ARROW_SCHEMA_KEY) {
        check_arrow_schema(meta, kv, f);
    }
    crate::release::check(kv, &place.contract.table, expect.release, f);

    let mut recorded = None;
    for value in values(MIN_VISITORS_KEY) {
        match value.map(str::parse::<u64>) {
            Some(Ok(k)) => recorded = Some(recorded.map_or(k, |r: u64| r.max(k))),
            _ => f.file(
                ViolationKind::Metadata,
                format!(
                    "`{MIN_VISITORS_KEY}` is `{}`, not a whole number of visitors",
                    quote(value.unwrap_or(""))
                ),
            ),
        }
    }
    recorded
}

/// The embedded Arrow schema decodes, and carries nothing the Parquet metadata does not.
fn check_arrow_schema(meta: &FileMetaData, kv: &Vec<KeyValue>, f: &mut Findings) {
    let schema = match parquet::arrow::parquet_to_arrow_schema(meta.schema_descr(), Some(kv)) {
        Ok(schema) => schema,
        Err(e) => {
            f.file(
                ViolationKind::Metadata,
                format!("`{ARROW_SCHEMA_KEY}` cannot be decoded: {e}"),
            );
            return;
        }
    };
    for field in schema.fields() {
        if !field.metadata().is_empty() {
            f.column(
                field.name(),
                ViolationKind::Metadata,
                format!(
                    "the embedded Arrow schema (`{ARROW_SCHEMA_KEY}`) gives this column {} metadata \
                     entries; a release carries none",
                    field.metadata().len()
                ),
            );
        }
    }
    let mut hidden: Vec<&String> = schema
        .metadata()
        .keys()
        .filter(|key| !kv.iter().any(|e| &e.key == *key))
        .collect();
    hidden.sort();
    for key in hidden {
        f.file(
            ViolationKind::Metadata,
            format!(
                "the embedded Arrow schema (`{ARROW_SCHEMA_KEY}`) carries metadata `{}` that the \
                 file's key-value metadata does not",
                quote(key)
            ),
        );
    }
}

/// A value from a file, safe to print in a message: at most 64 characters, escaped.
pub(crate) fn quote(value: &str) -> String {
    let mut shown: String = value.chars().take(values::MAX_CHARS).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    shown.escape_debug().to_string()
}

/// Reading every row: nulls, values, partition dates and small cells.
struct RowScan<'a> {
    place: &'a Place,
    period: Period,
    /// The threshold and where it comes from.
    k: Option<(u64, &'static str)>,
    /// Columns with at least one flagged value.
    flagged_columns: HashSet<String>,
}

impl RowScan<'_> {
    /// Reads the rows with the types the Parquet schema gives (the embedded Arrow schema is not
    /// trusted); returns the number of rows read.
    fn read(&mut self, path: &Path, f: &mut Findings) -> usize {
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let reader = match File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
                    .and_then(|builder| builder.build())
                    .map_err(|e| e.to_string())
            }) {
            Ok(reader) => reader,
            Err(e) => {
                f.file(
                    ViolationKind::Unreadable,
                    format!("cannot read the rows: {e}"),
                );
                return 0;
            }
        };
        let mut rows = 0;
        for batch in reader {
            match batch {
                Ok(batch) => {
                    self.batch(&batch, rows, f);
                    rows += batch.num_rows();
                }
                Err(e) => {
                    f.file(
                        ViolationKind::Unreadable,
                        format!("cannot read the rows after row {rows}: {e}"),
                    );
                    break;
                }
            }
        }
        rows
    }

    fn batch(&mut self, batch: &RecordBatch, first_row: usize, f: &mut Findings) {
        let schema = batch.schema();
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            let not_null = self
                .place
                .contract
                .column(name)
                .is_some_and(|(_, c)| !c.nullable);
            if not_null && array.null_count() > 0 {
                for row in (0..array.len()).filter(|&r| array.is_null(r)) {
                    f.value(
                        name,
                        Some(first_row + row),
                        ViolationKind::Null,
                        "null, but the contract declares this column not null".into(),
                    );
                }
            }
            for_each_string(array.as_ref(), |row, value| {
                let found = values::inspect(value);
                if let Some(first) = found.first() {
                    self.flagged_columns.insert(name.to_string());
                    f.value(
                        name,
                        Some(first_row + row),
                        first.kind(),
                        format!("the value {}", values::describe_all(&found)),
                    );
                }
            });
            match (name, array.data_type()) {
                ("period_start", DataType::Timestamp(ArrowTimeUnit::Microsecond, _)) => {
                    let starts = array.as_primitive::<TimestampMicrosecondType>();
                    self.period_starts(starts.iter(), first_row, f);
                }
                ("visitors", DataType::Int64) => {
                    if let Some((k, source)) = self.k {
                        let counts = array.as_primitive::<Int64Type>();
                        for (row, visitors) in counts.iter().enumerate() {
                            match visitors {
                                Some(v) if i128::from(v) < i128::from(k) => f.value(
                                    name,
                                    Some(first_row + row),
                                    ViolationKind::SmallCell,
                                    format!(
                                        "visitors = {v}, below the threshold k = {k} ({source})"
                                    ),
                                ),
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn period_starts(
        &mut self,
        starts: impl Iterator<Item = Option<i64>>,
        first_row: usize,
        f: &mut Findings,
    ) {
        let period_micros = self.period.seconds() * 1_000_000;
        for (row, start) in starts.enumerate() {
            let Some(start) = start else { continue };
            let message = if Date::of_micros(start) != self.place.date {
                format!(
                    "period_start {} is outside the partition date={}",
                    date::format_micros(start),
                    self.place.date
                )
            } else if start.rem_euclid(period_micros) != 0 {
                format!(
                    "period_start {} is not the start of a UTC {} (the pipeline's period)",
                    date::format_micros(start),
                    self.period.name()
                )
            } else {
                continue;
            };
            f.value(
                "period_start",
                Some(first_row + row),
                ViolationKind::Partition,
                message,
            );
        }
    }
}

/// Calls `visit` with every non-null string of a string or binary column (binary read as lossy
/// UTF-8, so text stored as bytes is checked too).
fn for_each_string(array: &dyn Array, mut visit: impl FnMut(usize, &str)) {
    fn lossy<'b>(
        values: impl Iterator<Item = Option<&'b [u8]>>,
        visit: &mut impl FnMut(usize, &str),
    ) {
        for (row, value) in values.enumerate() {
            if let Some(bytes) = value {
                visit(row, &String::from_utf8_lossy(bytes));
            }
        }
    }
    let mut text = |values: &mut dyn Iterator<Item = Option<&str>>| {
        for (row, value) in values.enumerate() {
            if let Some(s) = value {
                visit(row, s);
            }
        }
    };
    match array.data_type() {
        DataType::Utf8 => text(&mut array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => text(&mut array.as_string::<i64>().iter()),
        DataType::Utf8View => text(&mut array.as_string_view().iter()),
        DataType::Binary => lossy(array.as_binary::<i32>().iter(), &mut visit),
        DataType::LargeBinary => lossy(array.as_binary::<i64>().iter(), &mut visit),
        DataType::BinaryView => lossy(array.as_binary_view().iter(), &mut visit),
        DataType::FixedSizeBinary(_) => lossy(array.as_fixed_size_binary().iter(), &mut visit),
        _ => {}
    }
}
