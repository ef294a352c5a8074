//! The release parameters a file must record (`logcensus.release.*`), derived from the pipeline
//! file alone: k, the contribution bounds and the differential privacy parameters. A file that
//! records other values, lacks one, or records a parameter the pipeline does not set, was not
//! released the way the pipeline says.

use logcensus_policy::{Pipeline, TableName};
use parquet::file::metadata::KeyValue;

use crate::file::Findings;
use crate::ViolationKind;

/// A file's recorded selection threshold, if it has a readable one.
pub(crate) fn selection_threshold(kv: Option<&Vec<KeyValue>>) -> Option<u64> {
    kv?.iter()
        .find(|e| e.key == "logcensus.release.selection_threshold")?
        .value
        .as_deref()?
        .parse()
        .ok()
}

/// What a key's value must be.
enum Want {
    Whole(u64),
    Number(f64),
    Text(String),
    /// A noise scale: at least `min` (what the parameters require) and, for Laplace, at most
    /// `max` (a larger one would be honest but is not what the pipeline computes).
    Scale {
        nominal: f64,
        min: f64,
        max: f64,
    },
    /// The selection threshold: checked against delta with the file's visitor noise scale.
    Threshold,
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
        // The scales, recomputed here from the parameters: epsilon is split equally between
        // the noisy columns; one visitor changes N visitor counts by 1, N request counts by C
        // and N byte sums by B.
        let n = f64::from(b.max_rows_per_visitor.unwrap_or(1));
        let c = f64::from(b.max_requests_per_row.unwrap_or(1));
        let bytes = f64::from(b.max_bytes_per_row.unwrap_or(1));
        let share = dp.epsilon / noisy.len() as f64;
        for (column, l1, l2) in [
            ("visitors", n, n.sqrt()),
            ("requests", n * c, n.sqrt() * c),
            ("bytes", n * bytes, n.sqrt() * bytes),
        ] {
            if !noisy.contains(&column) {
                continue;
            }
            let want = match dp.mechanism {
                // Laplace scale = l1 sensitivity / epsilon share (a hair more for rounding).
                logcensus_policy::Mechanism::Laplace => Want::Scale {
                    nominal: l1 / share,
                    min: l1 / share * (1.0 - 1e-9),
                    max: l1 / share * (1.0 + 1e-4),
                },
                // Gaussian: rho-zCDP with rho <= the epsilon share, so sigma >= l2 / sqrt(2 rho).
                logcensus_policy::Mechanism::Gaussian => Want::Scale {
                    nominal: l2 / (2.0 * share).sqrt(),
                    min: l2 / (2.0 * share).sqrt(),
                    max: f64::INFINITY,
                },
            };
            let key = match column {
                "visitors" => "noise_scale_visitors",
                "requests" => "noise_scale_requests",
                _ => "noise_scale_bytes",
            };
            out.push((key, want));
        }
        out.push(("selection_threshold", Want::WholeAtLeast(k.unwrap_or(1))));
        out.push(("selection_threshold", Want::Threshold));
    }
    out
}

/// Checks the file's `logcensus.release.*` entries against the pipeline.
pub(crate) fn check(kv: &[KeyValue], table: &str, pipeline: &Pipeline, f: &mut Findings) {
    let Some(table) = pipeline.tables.iter().copied().find(|t| t.name() == table) else {
        return; // the layout check reports tables the pipeline does not write
    };
    let want = expected(table, pipeline);
    let recorded = |name: &str| -> Option<f64> {
        kv.iter()
            .find(|e| e.key == format!("{}{name}", crate::file::RELEASE_PREFIX))?
            .value
            .as_deref()?
            .parse()
            .ok()
    };
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
            if let Want::Threshold = want {
                continue; // reported once, by the whole-number check of the same key
            }
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
        if let Want::Threshold = want {
            if let Some(why) = threshold_too_low(table, pipeline, &recorded) {
                f.file(
                    ViolationKind::Metadata,
                    format!("`{key}` is `{}`: {why}", crate::file::quote(value)),
                );
            }
            continue;
        }
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
        Want::Scale { min, max, .. } => value
            .parse::<f64>()
            .is_ok_and(|s| s.is_finite() && s >= *min && s <= *max),
        Want::Threshold => true,
    }
}

fn describe(want: &Want) -> String {
    match want {
        Want::Whole(n) => format!("`{n}`"),
        Want::WholeAtLeast(n) => format!("a whole number of at least {n}"),
        Want::Number(x) => format!("`{x}`"),
        Want::Text(t) => format!("`{t}`"),
        Want::Scale { nominal, max, .. } if max.is_finite() => {
            format!("a noise scale of {nominal:.6} (epsilon, bounds and columns give it)")
        }
        Want::Scale { min, .. } => format!("a noise scale of at least {min:.6}"),
        Want::Threshold => "a threshold that keeps delta".into(),
    }
}

/// Why a file's selection threshold does not keep the pipeline's delta, if it does not. A row
/// that one visitor alone creates (count 1 after the k - 1 shift) is released when
/// 1 + noise >= the released threshold; over N such rows that is at most N * P[noise >= T - 1].
fn threshold_too_low(
    table: TableName,
    pipeline: &Pipeline,
    recorded: &dyn Fn(&str) -> Option<f64>,
) -> Option<String> {
    let dp = pipeline.dp.get(&table)?;
    let k = pipeline.min_visitors.get(&table).copied().unwrap_or(1) as f64;
    let n = f64::from(pipeline.bounds.max_rows_per_visitor.unwrap_or(1));
    let released = recorded("selection_threshold")? - (k - 1.0);
    // The pipeline's own scale (Laplace: N * columns / epsilon; Gaussian: its lower bound), or
    // the file's if larger: a smaller recorded scale is reported with the scale itself.
    let columns = if table == TableName::TrafficByRegion {
        3.0
    } else {
        2.0
    };
    let share = dp.epsilon / columns;
    let required = match dp.mechanism {
        logcensus_policy::Mechanism::Laplace => n / share,
        logcensus_policy::Mechanism::Gaussian => n.sqrt() / (2.0 * share).sqrt(),
    };
    let scale = recorded("noise_scale_visitors")
        .filter(|s| s.is_finite())
        .map_or(required, |s| s.max(required));
    let m = released - 1.0;
    let (tail, delta) = match dp.mechanism {
        logcensus_policy::Mechanism::Laplace => {
            // Discrete Laplace: P[Z >= m] = e^(-m/b) / (1 + e^(-1/b)) for m >= 1.
            let q = (-1.0 / scale).exp();
            (if m < 1.0 { 1.0 } else { q.powf(m) / (1.0 + q) }, dp.delta)
        }
        logcensus_policy::Mechanism::Gaussian => {
            // Discrete Gaussian, summed: P[Z >= m] = sum_{x >= m} e^(-x^2 / 2s^2) / sum_x ...
            let weight = |x: f64| (-(x * x) / (2.0 * scale * scale)).exp();
            let span = (40.0 * scale).ceil() + m.abs();
            let total: f64 = (-(span as i64)..=span as i64)
                .map(|x| weight(x as f64))
                .sum();
            let upper: f64 = (m.max(-span) as i64..=span as i64)
                .map(|x| weight(x as f64))
                .sum();
            (upper / total, dp.delta / 2.0)
        }
    };
    let risk = n * tail;
    (risk > delta * (1.0 + 1e-6)).then(|| {
        format!(
            "with the visitor noise the pipeline requires, a row one visitor alone creates is released with probability up to {risk:.3e}, over the pipeline's delta {delta:e} (pipeline `{}`)",
            pipeline.name
        )
    })
}
