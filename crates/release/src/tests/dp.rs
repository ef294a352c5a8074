//! Statistical tests of the DP release. The noise comes from OpenSSL's CSPRNG through OpenDP and
//! cannot be seeded (by design: a seedable DP sampler is a way to undo the noise), so each
//! statistical assertion is set at six standard deviations or more: a correct implementation
//! fails one of them with probability well under one in a million. The data are fixed.

use super::*;
use logcensus_policy::{Bounds, DpSpec, Mechanism};

fn spec(mechanism: Mechanism, epsilon: f64, delta: f64) -> DpSpec {
    DpSpec {
        mechanism,
        epsilon,
        delta,
    }
}

fn bounds(n: u32, c: u32, b: Option<u32>) -> Bounds {
    Bounds {
        max_rows_per_visitor: Some(n),
        max_requests_per_row: Some(c),
        max_bytes_per_row: b,
    }
}

/// `rows` rows of period 0, each with `visitors` distinct visitors making `requests` requests
/// of `bytes` bytes each.
fn crowd(rows: usize, visitors: u64, requests: u32, bytes: u32) -> Vec<Row> {
    (0..rows)
        .map(|i| {
            let first = i as u64 * visitors;
            row_with(
                0,
                &format!("site{i:04}.com"),
                first..first + visitors,
                requests,
                bytes,
            )
        })
        .collect()
}

fn mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Noise samples of visitors and requests over `runs` releases of `rows`.
fn noise(cal: &Calibration, rows: &[Row], runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut v, mut r) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (out, stats) = cal.release(rows).unwrap();
        assert_eq!(stats.released, rows.len(), "large rows are always selected");
        for (o, i) in out.iter().zip(rows) {
            assert_eq!(o.dims, i.dims);
            v.push(o.visitors as f64 - i.visitors.len() as f64);
            r.push(o.requests as f64 - i.requests as f64);
        }
    }
    (v, r)
}

/// Variance of the discrete Laplace distribution with scale `b`.
fn discrete_laplace_var(b: f64) -> f64 {
    let p = (-1.0 / b).exp();
    2.0 * p / (1.0 - p).powi(2)
}

#[test]
fn laplace_noise_has_the_calibrated_scale() {
    // epsilon 1 split over visitors and requests; N = 1, C = 5.
    let cal = Calibration::new(
        "referrers",
        spec(Mechanism::Laplace, 1.0, 1e-6),
        &bounds(1, 5, None),
        None,
        false,
    )
    .unwrap();
    assert!((cal.visitors_scale - 2.0).abs() < 1e-4, "{cal:?}");
    assert!((cal.requests_scale - 10.0).abs() < 1e-4, "{cal:?}");
    let rows = crowd(50, 1_000, 5, 0);
    let (v, r) = noise(&cal, &rows, 300); // 15,000 samples each
    for (xs, scale) in [(&v, cal.visitors_scale), (&r, cal.requests_scale)] {
        let (mean, var) = mean_var(xs);
        let expect = discrete_laplace_var(scale);
        let n = xs.len() as f64;
        // Mean: 6 standard errors. Variance: Laplace kurtosis 6 gives sd(var) ~ sqrt(5/n) var.
        assert!(
            mean.abs() < 6.0 * (expect / n).sqrt(),
            "mean {mean}, scale {scale}"
        );
        let tol = 6.0 * (5.0 / n).sqrt();
        assert!(
            (var / expect - 1.0).abs() < tol,
            "variance {var}, expected {expect} +- {tol}"
        );
    }
    assert!(
        v.iter().chain(&r).all(|x| x.fract() == 0.0),
        "integer noise"
    );
}

#[test]
fn gaussian_noise_has_the_calibrated_scale() {
    let cal = Calibration::new(
        "clients",
        spec(Mechanism::Gaussian, 1.0, 1e-6),
        &bounds(2, 3, None),
        None,
        false,
    )
    .unwrap();
    assert!(
        cal.delta_spent <= 1e-6 * (1.0 + 1e-9),
        "{}",
        cal.delta_spent
    );
    // Requests: l2 sensitivity sqrt(N) * C, so its sigma is C times the visitors' sigma.
    assert!(
        (cal.requests_scale / cal.visitors_scale - 3.0).abs() < 1e-4,
        "{cal:?}"
    );
    let rows = crowd(50, 1_000, 3, 0);
    let (v, r) = noise(&cal, &rows, 300);
    for (xs, sigma) in [(&v, cal.visitors_scale), (&r, cal.requests_scale)] {
        let (mean, var) = mean_var(xs);
        let n = xs.len() as f64;
        let expect = sigma * sigma; // the discrete Gaussian's variance is within 1e-3 of it here
        assert!(
            mean.abs() < 6.0 * (expect / n).sqrt(),
            "mean {mean}, sigma {sigma}"
        );
        let tol = 6.0 * (2.0 / n).sqrt() + 0.01;
        assert!(
            (var / expect - 1.0).abs() < tol,
            "variance {var}, expected {expect} +- {tol}"
        );
    }
}

#[test]
fn calibration_splits_epsilon_and_spends_no_more_than_asked() {
    let cal = Calibration::new(
        "traffic_by_region",
        spec(Mechanism::Laplace, 1.0, 1e-7),
        &bounds(2, 3, Some(100)),
        Some(10),
        true,
    )
    .unwrap();
    // Three noisy columns, epsilon 1/3 each: scale = l1 sensitivity * 3.
    assert!((cal.visitors_scale - 6.0).abs() < 1e-4, "{cal:?}");
    assert!((cal.requests_scale - 18.0).abs() < 1e-3, "{cal:?}");
    assert!((cal.bytes_scale.unwrap() - 600.0).abs() < 1e-2, "{cal:?}");
    assert!(cal.epsilon_spent <= 1.0 + 1e-9, "{}", cal.epsilon_spent);
    assert!(cal.delta_spent <= 1e-7, "{}", cal.delta_spent);
    // The threshold is the smallest that reaches delta: one less would not.
    assert!(cal.threshold > 1);
    let meta: BTreeMap<String, String> = TableRelease {
        min_visitors: Some(10),
        bounds: bounds(2, 3, Some(100)),
        dp: Some(cal),
    }
    .metadata()
    .into_iter()
    .collect();
    let keys: Vec<&str> = meta.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "logcensus.release.delta",
            "logcensus.release.epsilon",
            "logcensus.release.max_bytes_per_row",
            "logcensus.release.max_requests_per_row",
            "logcensus.release.max_rows_per_visitor",
            "logcensus.release.mechanism",
            "logcensus.release.min_visitors",
            "logcensus.release.noise_scale_bytes",
            "logcensus.release.noise_scale_requests",
            "logcensus.release.noise_scale_visitors",
            "logcensus.release.noisy_columns",
            "logcensus.release.selection_threshold",
        ]
    );
    assert_eq!(meta["logcensus.release.mechanism"], "laplace");
    assert_eq!(meta["logcensus.release.epsilon"], "1");
    assert_eq!(meta["logcensus.release.delta"], "0.0000001");
    assert_eq!(
        meta["logcensus.release.noisy_columns"],
        "visitors,requests,bytes"
    );
}

#[test]
fn partition_selection_drops_rare_rows_and_keeps_large_ones() {
    let cal = Calibration::new(
        "referrers",
        spec(Mechanism::Laplace, 1.0, 1e-5),
        &bounds(1, 1, None),
        None,
        false,
    )
    .unwrap();
    // 5,000 rows of one visitor each (each row exists only because of one person), 20 of 500.
    let mut rows = crowd(5_000, 1, 1, 0);
    for (i, r) in crowd(20, 500, 1, 0).into_iter().enumerate() {
        let mut r = r;
        r.dims = vec![s(&format!("big{i:02}.com"))];
        r.visitors = r
            .visitors
            .into_iter()
            .map(|(v, c)| (v + 1_000_000, c))
            .collect();
        rows.push(r);
    }
    rows.sort_by(|a, b| a.dims.cmp(&b.dims));
    let (out, stats) = cal.release(&rows).unwrap();
    let rare = out
        .iter()
        .filter(|r| r.dims[0].as_deref().unwrap().starts_with("site"))
        .count();
    // Each rare row is released with probability at most delta: expected <= 0.05 of 5,000.
    assert!(rare <= 3, "{rare} single-visitor rows released");
    assert_eq!(
        out.len() - rare,
        20,
        "rows of 500 visitors are far above the threshold"
    );
    assert_eq!(stats.released, out.len());
    assert_eq!(stats.not_selected, 5_020 - out.len());
}

#[test]
fn with_a_minimum_rows_under_k_are_never_released() {
    let cal = Calibration::new(
        "referrers",
        spec(Mechanism::Gaussian, 5.0, 1e-5),
        &bounds(1, 1, None),
        Some(10),
        false,
    )
    .unwrap();
    let rows = crowd(2_000, 9, 1, 0);
    let (out, stats) = cal.release(&rows).unwrap();
    assert!(out.is_empty());
    assert_eq!(stats.under_minimum, 2_000);
    // And released rows never show fewer than k visitors, even when the noise pulls down.
    let rows = crowd(200, 10, 1, 0);
    for _ in 0..20 {
        let (out, _) = cal.release(&rows).unwrap();
        assert!(out.iter().all(|r| r.visitors >= 10));
    }
}

#[test]
fn released_counts_are_never_negative() {
    // A tiny epsilon: noise far larger than the counts.
    let cal = Calibration::new(
        "traffic_by_region",
        spec(Mechanism::Laplace, 0.05, 1e-6),
        &bounds(1, 1, Some(1)),
        None,
        true,
    )
    .unwrap();
    // No bytes at all: the noisy bytes (scale 60) fall below zero about half the time.
    let rows = crowd(20, 5_000, 1, 0);
    let mut clamped = 0;
    for _ in 0..50 {
        let (out, _) = cal.release(&rows).unwrap();
        for r in &out {
            // u64 fields: a negative value would have wrapped to something enormous.
            assert!(
                r.bytes < 1 << 40 && r.requests < 1 << 40 && r.visitors < 1 << 40,
                "{r:?}"
            );
            assert!(r.requests >= r.visitors, "{r:?}");
            clamped += usize::from(r.bytes == 0);
        }
    }
    assert!(
        clamped > 100,
        "{clamped} of 1,000 noisy byte counts of 0 clamped"
    );
}

#[test]
fn the_selection_delta_holds_for_the_exact_discrete_laplace_tail() {
    // One visitor alone creates a row of count 1 (N = 1): it is released when 1 + Z reaches
    // the threshold T, with probability P[Z >= T - 1]; for the discrete Laplace distribution of
    // scale b, P[Z >= m] = e^(-m/b) / (1 + e^(-1/b)) for m >= 1. That must stay within delta.
    for (epsilon, delta) in [(1.0, 1e-7), (0.5, 1e-6), (2.0, 1e-9)] {
        let cal = Calibration::new(
            "referrers",
            spec(Mechanism::Laplace, epsilon, delta),
            &bounds(1, 1, None),
            None,
            false,
        )
        .unwrap();
        let b = cal.visitors_scale;
        let q = (-1.0 / b).exp();
        let tail = |m: i64| q.powi(m as i32) / (1.0 + q);
        let released_alone = tail(cal.threshold - 1);
        assert!(
            released_alone <= delta,
            "epsilon {epsilon}: P = {released_alone} > delta {delta} at threshold {}",
            cal.threshold
        );
        assert!(
            cal.delta_spent <= delta && cal.delta_spent >= released_alone * 0.999,
            "{} vs {released_alone}",
            cal.delta_spent
        );
        // And the threshold is not needlessly high: one lower would break delta.
        assert!(
            tail(cal.threshold - 2) > delta * 0.999,
            "epsilon {epsilon}: threshold {} could be lower",
            cal.threshold
        );
    }
}
