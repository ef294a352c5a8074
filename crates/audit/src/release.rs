//! The release parameters a file must record (`logcensus.release.*`), derived from the pipeline
//! file alone: k, the contribution bounds and the differential privacy parameters. A file that
//! records other values, lacks one, or records a parameter the pipeline does not set, was not
//! released the way the pipeline says.

use logcensus_policy::{Pipeline, TableName};
use parquet::file::metadata::KeyValue;

use crate::file::Findings;
use crate::ViolationKind;

/// What a key's value must be.
enum Want {
    Whole(u64),
    Number(f64),
    Text(String),
    /// A positive number.
    Positive,
    /// A whole number at least this.
    WholeAtLeast(u64),
}

/// The `logcensus.release.*` entries a file of `table` must hold under `pipeline`.
fn expected(table: TableName, pipeline: &Pipeline) -> Vec<(&'static str, Want)> {
    let mut out = Vec::new();
    if table == TableName::TrafficQuality {
        return out;
    }
    let k = pipeline.min_visitors.get(&table).copied();
    if let Some(k) = k {
        out.push(("min_visitors", Want::Whole(k)));
    }
    let b = &pipeline.bounds;
    if let Some(n) = b.max_rows_per_visitor {
        out.push(("max_rows_per_visitor", Want::Whole(n.into())));
    }
    if let Some(n) = b.max_requests_per_row {
        out.push(("max_requests_per_row", Want::Whole(n.into())));
    }
    let has_bytes = table == TableName::TrafficByRegion;
    if let (Some(n), true) = (b.max_bytes_per_row, has_bytes) {
        out.push(("max_bytes_per_row", Want::Whole(n.into())));
    }
    if let Some(dp) = pipeline.dp.get(&table) {
        let mut noisy = vec!["visitors", "requests"];
        if has_bytes {
            noisy.push("bytes");
        }
        out.push(("mechanism", Want::Text(dp.mechanism.name().into())));
        out.push(("epsilon", Want::Number(dp.epsilon)));
        out.push(("delta", Want::Number(dp.delta)));
        out.push(("noisy_columns", Want::Text(noisy.join(","))));
        for column in noisy {
            out.push((
                match column {
                    "visitors" => "noise_scale_visitors",
                    "requests" => "noise_scale_requests",
                    _ => "noise_scale_bytes",
                },
                Want::Positive,
            ));
        }
        out.push(("selection_threshold", Want::WholeAtLeast(k.unwrap_or(1))));
    }
    out
}

/// Checks the file's `logcensus.release.*` entries against the pipeline.
pub(crate) fn check(kv: &[KeyValue], table: &str, pipeline: &Pipeline, f: &mut Findings) {
    let Some(table) = pipeline.tables.iter().copied().find(|t| t.name() == table) else {
        return; // the layout check reports tables the pipeline does not write
    };
    let want = expected(table, pipeline);
    for entry in kv
        .iter()
        .filter(|e| e.key.starts_with(crate::file::RELEASE_PREFIX))
    {
        let name = &entry.key[crate::file::RELEASE_PREFIX.len()..];
        if !want.iter().any(|(k, _)| *k == name) {
            f.file(
                ViolationKind::Metadata,
                format!(
                    "`{}` is recorded, but pipeline `{}` sets no such release parameter for {}",
                    crate::file::quote(&entry.key),
                    pipeline.name,
                    table.name()
                ),
            );
        }
    }
    for (name, want) in want {
        let key = format!("{}{name}", crate::file::RELEASE_PREFIX);
        let Some(entry) = kv.iter().find(|e| e.key == key) else {
            f.file(
                ViolationKind::Metadata,
                format!(
                    "missing key-value metadata `{key}`: pipeline `{}` releases {} with {}",
                    pipeline.name,
                    table.name(),
                    describe(&want)
                ),
            );
            continue;
        };
        let value = entry.value.as_deref().unwrap_or("");
        if !matches(value, &want) {
            f.file(
                ViolationKind::Metadata,
                format!(
                    "`{key}` is `{}`, but pipeline `{}` says {}",
                    crate::file::quote(value),
                    pipeline.name,
                    describe(&want)
                ),
            );
        }
    }
}

fn matches(value: &str, want: &Want) -> bool {
    match want {
        Want::Whole(n) => value.parse::<u64>().ok() == Some(*n),
        Want::WholeAtLeast(n) => value.parse::<u64>().is_ok_and(|v| v >= *n),
        Want::Number(x) => value.parse::<f64>().ok() == Some(*x),
        Want::Text(t) => value == t,
        Want::Positive => value.parse::<f64>().is_ok_and(|s| s.is_finite() && s > 0.0),
    }
}

fn describe(want: &Want) -> String {
    match want {
        Want::Whole(n) => format!("`{n}`"),
        Want::WholeAtLeast(n) => format!("a whole number of at least {n}"),
        Want::Number(x) => format!("`{x}`"),
        Want::Text(t) => format!("`{t}`"),
        Want::Positive => "a positive noise scale".into(),
    }
}
