//! The release audit: checks that a directory of logcensus tables is safe to hand to a partner,
//! without trusting the writer that made it.
//!
//! The audit shares no code with `logcensus-sink`: it reads the table contracts from
//! `schemas/*.toml` with its own types and the Parquet files with the `parquet` crate directly.
//! It checks
//!
//! 1. the layout: only `<table>/date=YYYY-MM-DD/part-*.parquet` files of tables the pipeline
//!    writes (names starting with `.` or `_` are ignored, as Spark and pyarrow do);
//! 2. the schema: exactly the contract's columns, in order, with their types and nullability,
//!    and no null in a column the contract declares not null;
//! 3. the provenance metadata: pipeline, policy id and hash, period and geo level as the
//!    pipeline says, table and partition as the path says, every `period_start` on the
//!    partition's date;
//! 4. small cells: `visitors` ≥ k in every row, when a threshold is given or recorded in the file;
//! 5. the values: no string that looks like an address, an e-mail, a URL, a path or query, a
//!    random token, or is over 64 characters; in the rows, and also in the places a writer could
//!    hide a value no row shows (statistics, column index, dictionary pages, metadata).
//!
//! ```no_run
//! use std::path::Path;
//! let pipeline = logcensus_policy::Pipeline::load(Path::new("pipelines/partner-daily.toml")).unwrap();
//! let report = logcensus_audit::audit(Path::new("out/partner-daily"), &pipeline, Some(10)).unwrap();
//! print!("{report}");
//! assert!(report.is_clean());
//! ```

mod contract;
mod date;
mod file;
mod layout;
mod pages;
mod release;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

use logcensus_policy::Pipeline;

/// A directory that cannot be audited at all. Everything below it that cannot be read is a
/// [`Violation`] instead, so one bad file never hides the others.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The release directory is missing or cannot be listed.
    #[error("cannot read the release directory {}: {source}; pass the directory a run wrote its tables to", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("{} is not a directory; pass the directory a run wrote its tables to", path.display())]
    NotADirectory { path: PathBuf },
}

/// What a violation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A file outside `<table>/date=YYYY-MM-DD/part-*.parquet`, a table the pipeline does not
    /// write, a link or other non-regular file.
    Layout,
    /// A file or directory that cannot be read, or a file that is not Parquet.
    Unreadable,
    /// Columns, their order, types or declared nullability differ from the contract.
    Schema,
    /// A null in a column the contract declares not null.
    Null,
    /// Key-value metadata missing, mismatched, duplicated or unexpected.
    Metadata,
    /// A `period_start` outside the file's partition date, or not at the start of a period.
    Partition,
    /// A row with fewer visitors than the threshold.
    SmallCell,
    /// A string that looks like an IPv4 or IPv6 address.
    IpAddress,
    /// A string that looks like an e-mail address.
    Email,
    /// A string that looks like a URL, a path or a query string.
    Url,
    /// A string that looks like a random token, an identifier or a hash.
    Token,
    /// A string over 64 characters.
    TooLong,
}

impl ViolationKind {
    /// A short name, e.g. for counting violations by kind.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Layout => "layout",
            ViolationKind::Unreadable => "unreadable",
            ViolationKind::Schema => "schema",
            ViolationKind::Null => "null",
            ViolationKind::Metadata => "metadata",
            ViolationKind::Partition => "partition",
            ViolationKind::SmallCell => "small_cell",
            ViolationKind::IpAddress => "ip_address",
            ViolationKind::Email => "email",
            ViolationKind::Url => "url",
            ViolationKind::Token => "token",
            ViolationKind::TooLong => "too_long",
        }
    }
}

/// One thing that makes the release unsafe to hand over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file (or directory) it is in: the audited directory joined with the relative path.
    pub file: PathBuf,
    /// The column, when it is about one.
    pub column: Option<String>,
    /// The row, 0-based within the file, when it is about one.
    pub row: Option<usize>,
    /// What kind of problem it is.
    pub kind: ViolationKind,
    /// What is wrong, in a sentence. Never quotes a table value: the row and column say where
    /// to look, and the report stays safe to paste into a ticket.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        match (&self.column, self.row) {
            (Some(column), Some(row)) => write!(f, "column {column}, row {row}: ")?,
            (Some(column), None) => write!(f, "column {column}: ")?,
            (None, Some(row)) => write!(f, "row {row}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violation, in path order, then in the order of the checks.
    pub violations: Vec<Violation>,
    /// Files found (hidden names not counted), whether or not they could be read.
    pub files_checked: usize,
    /// Rows read from the Parquet files.
    pub rows_checked: usize,
    /// What the audit did not or could not check, and other remarks that are not violations.
    pub notes: Vec<String>,
}

impl Report {
    /// True when there is no violation: the release may be handed over.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    /// One line per violation (`path: column X, row N: message`), one per note
    /// (`note: ...`), then `audit: N files, M rows, K violations`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for violation in &self.violations {
            writeln!(f, "{violation}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        write!(
            f,
            "audit: {} files, {} rows, {} violations",
            self.files_checked,
            self.rows_checked,
            self.violations.len()
        )
    }
}

/// Audits the release in `dir` against the contracts and `pipeline`.
///
/// `min_visitors` is the small-cell threshold k; without it, each file's
/// `logcensus.release.min_visitors` metadata is used where present, and small cells are not
/// checked (a note says so) where it is not.
pub fn audit(
    dir: &Path,
    pipeline: &Pipeline,
    min_visitors: Option<u64>,
) -> Result<Report, AuditError> {
    let tables: Vec<&str> = pipeline.tables.iter().map(|t| t.name()).collect();
    let walk = layout::walk(dir, &pipeline.name, &tables)?;
    let expect = file::Expect {
        pipeline: &pipeline.name,
        policy_id: &pipeline.policy.id,
        policy_hash: &pipeline.policy_hash,
        period: pipeline.period,
        geo_level: pipeline.geo_level.name(),
        min_visitors,
        release: pipeline,
    };

    let mut report = Report {
        violations: walk.problems,
        files_checked: walk.files.len(),
        ..Report::default()
    };
    let mut thresholds = Thresholds::default();
    let mut seen_tables = Vec::new();
    for found in &walk.files {
        match &found.place {
            Err((kind, message)) => report.violations.push(Violation {
                file: found.path.clone(),
                column: None,
                row: None,
                kind: *kind,
                message: message.clone(),
            }),
            Ok(place) => {
                let checked = file::check(&found.path, place, &expect, &mut report.violations);
                report.rows_checked += checked.rows;
                thresholds.count(checked.threshold);
                seen_tables.push(place.contract.table.as_str());
            }
        }
    }
    report.violations.sort_by(|a, b| a.file.cmp(&b.file));

    if walk.files.is_empty() {
        report
            .notes
            .push(format!("{} holds no files", dir.display()));
    } else {
        for table in &tables {
            if !seen_tables.contains(table) {
                report.notes.push(format!(
                    "table `{table}`: no files (the pipeline writes it)"
                ));
            }
        }
    }
    report.notes.extend(thresholds.notes(min_visitors));
    if !walk.hidden.is_empty() {
        let names: Vec<String> = walk
            .hidden
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
            .collect();
        report.notes.push(format!(
            "ignored {} hidden entries (names starting with `.` or `_`, which readers skip): {}",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(report)
}

/// How the small-cell check went, over all files with a `visitors` column.
#[derive(Default)]
struct Thresholds {
    given: usize,
    from_metadata: Vec<u64>,
    unchecked: usize,
}

impl Thresholds {
    fn count(&mut self, threshold: file::Threshold) {
        match threshold {
            file::Threshold::NoVisitorsColumn => {}
            file::Threshold::Given(_) => self.given += 1,
            file::Threshold::FromMetadata(k) => self.from_metadata.push(k),
            file::Threshold::None => self.unchecked += 1,
        }
    }

    fn notes(&self, min_visitors: Option<u64>) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(k) = min_visitors {
            notes.push(format!(
                "small cells checked against k = {k} (the min_visitors given) in {} files",
                self.given
            ));
            return notes;
        }
        if !self.from_metadata.is_empty() {
            let mut ks = self.from_metadata.clone();
            ks.sort_unstable();
            ks.dedup();
            let ks: Vec<String> = ks.iter().map(u64::to_string).collect();
            notes.push(format!(
                "small cells checked against each file's logcensus.release.min_visitors (k = {}) in {} files",
                ks.join(", "),
                self.from_metadata.len()
            ));
        }
        if self.unchecked > 0 {
            notes.push(format!(
                "no threshold given and no logcensus.release.min_visitors in {} files: small cells not checked in them",
                self.unchecked
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests;
