//! Walking the release directory: which files are table partitions, which are in a wrong place.

use std::fs;
use std::path::{Path, PathBuf};

use crate::contract::{self, Contract};
use crate::date::Date;
use crate::{values, AuditError, Violation, ViolationKind};

const LAYOUT: &str = "<table>/date=YYYY-MM-DD/part-*.parquet";

/// Where a data file belongs, read from its path.
#[derive(Debug)]
pub(crate) struct Place {
    /// The table's contract (the first path component).
    pub contract: &'static Contract,
    /// The partition date (the `date=` component).
    pub date: Date,
}

/// A file found under the release directory.
#[derive(Debug)]
pub(crate) struct Found {
    pub path: PathBuf,
    /// Where it belongs, or why it does not belong in a release.
    pub place: Result<Place, (ViolationKind, String)>,
}

/// Everything under the release directory.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Every file that is not hidden, in path order.
    pub files: Vec<Found>,
    /// Hidden entries (names starting with `.` or `_`), not descended into.
    pub hidden: Vec<PathBuf>,
    /// Directories that cannot be listed.
    pub problems: Vec<Violation>,
}

/// Lists every file under `root`; `tables` are the tables pipeline `pipeline` writes.
pub(crate) fn walk(root: &Path, pipeline: &str, tables: &[&str]) -> Result<Walk, AuditError> {
    let read_dir_error = |source| AuditError::ReadDir {
        path: root.to_path_buf(),
        source,
    };
    if !fs::metadata(root).map_err(read_dir_error)?.is_dir() {
        return Err(AuditError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let entries = sorted_entries(root).map_err(read_dir_error)?;
    let mut walk = Walk::default();
    let rules = Rules { pipeline, tables };
    descend(&rules, entries, &mut Vec::new(), &mut walk);
    Ok(walk)
}

struct Rules<'a> {
    pipeline: &'a str,
    tables: &'a [&'a str],
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<fs::DirEntry>> {
    let mut entries = fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn descend(
    rules: &Rules,
    entries: Vec<fs::DirEntry>,
    components: &mut Vec<String>,
    walk: &mut Walk,
) {
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if components.is_empty() && name_text == "_state" {
            // Readers skip it, but it would travel with a copied directory.
            walk.problems.push(Violation {
                file: path,
                column: None,
                row: None,
                kind: ViolationKind::Layout,
                message: "private streaming state (checkpoints holding keyed visitor hashes) inside the release directory: hand over only the table directories, e.g. `rsync -a --exclude _state`".into(),
            });
            continue;
        }
        if name_text.starts_with('.') || name_text.starts_with('_') {
            walk.hidden.push(path);
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                walk.problems
                    .push(unreadable(path, format!("cannot read: {e}")));
                continue;
            }
        };
        if file_type.is_dir() {
            match sorted_entries(&path) {
                Ok(children) => {
                    components.push(name_text.into_owned());
                    descend(rules, children, components, walk);
                    components.pop();
                }
                Err(e) => walk.problems.push(unreadable(
                    path,
                    format!("cannot list this directory: {e}; what it holds cannot be checked"),
                )),
            }
            continue;
        }
        let place = if file_type.is_symlink() {
            Err(
                "a symbolic link; a release holds only regular files (a link can point anywhere)"
                    .to_string(),
            )
        } else if !file_type.is_file() {
            Err("not a regular file".to_string())
        } else if name.to_str().is_none() {
            Err("the path is not valid UTF-8".to_string())
        } else {
            components.push(name_text.into_owned());
            let place = classify(rules, components);
            components.pop();
            place
        };
        walk.files.push(Found {
            path,
            place: place.map_err(|message| (ViolationKind::Layout, message)),
        });
    }
}

fn unreadable(path: PathBuf, message: String) -> Violation {
    Violation {
        file: path,
        column: None,
        row: None,
        kind: ViolationKind::Unreadable,
        message,
    }
}

/// The place of a file from its path components below the release directory.
fn classify(rules: &Rules, components: &[String]) -> Result<Place, String> {
    let [table, partition, name] = components else {
        return Err(format!(
            "not part of the layout {LAYOUT}: an unexpected file could hold anything"
        ));
    };
    if !rules.tables.contains(&table.as_str()) {
        return Err(format!(
            "`{table}` is not a table pipeline `{}` writes ({}); only its tables may be released",
            rules.pipeline,
            rules.tables.join(", ")
        ));
    }
    let contract = contract::contract(table).ok_or_else(|| {
        format!("`{table}` has no contract in schemas/; this audit cannot check it")
    })?;
    let date = partition
        .strip_prefix("date=")
        .and_then(Date::parse)
        .ok_or_else(|| {
            format!("`{partition}` is not a partition directory date=YYYY-MM-DD with a real date")
        })?;
    let middle = name
        .strip_prefix("part-")
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .ok_or_else(|| format!("`{name}` is not a data file name part-*.parquet"))?;
    let found = values::inspect(middle);
    if !found.is_empty() {
        return Err(format!(
            "the file name {}; file names reach the partner too",
            values::describe_all(&found)
        ));
    }
    Ok(Place { contract, date })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(path: &str) -> Result<String, String> {
        let rules = Rules {
            pipeline: "partner-daily",
            tables: &["clients", "referrers"],
        };
        let components: Vec<String> = path.split('/').map(String::from).collect();
        classify(&rules, &components).map(|p| format!("{} {}", p.contract.table, p.date))
    }

    #[test]
    fn partitions_of_the_pipeline_tables_are_placed() {
        assert_eq!(
            place("clients/date=2026-05-17/part-00000.parquet").unwrap(),
            "clients 2026-05-17"
        );
        assert_eq!(
            place("referrers/date=2024-02-29/part-00001.parquet").unwrap(),
            "referrers 2024-02-29"
        );
    }

    #[test]
    fn anything_else_is_out_of_place() {
        let cases = [
            ("notes.txt", "not part of the layout <table>/date=YYYY-MM-DD/part-*.parquet"),
            ("clients/part-00000.parquet", "not part of the layout"),
            ("clients/date=2026-05-17/x/part-0.parquet", "not part of the layout"),
            (
                "traffic_by_region/date=2026-05-17/part-00000.parquet",
                "`traffic_by_region` is not a table pipeline `partner-daily` writes (clients, referrers)",
            ),
            ("dump/date=2026-05-17/part-00000.parquet", "`dump` is not a table"),
            (
                "clients/date=2026-02-30/part-00000.parquet",
                "`date=2026-02-30` is not a partition directory date=YYYY-MM-DD",
            ),
            ("clients/2026-05-17/part-00000.parquet", "`2026-05-17` is not a partition"),
            (
                "clients/date=2026-05-17/data.csv",
                "`data.csv` is not a data file name part-*.parquet",
            ),
            (
                "clients/date=2026-05-17/part-00000.parquet.bak",
                "is not a data file name",
            ),
            (
                "clients/date=2026-05-17/part-203.0.113.7.parquet",
                "the file name looks like an IPv4 address",
            ),
        ];
        for (path, message) in cases {
            let err = place(path).unwrap_err();
            assert!(err.contains(message), "{path}: {err}");
        }
    }
}
