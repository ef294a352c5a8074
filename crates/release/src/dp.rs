//! Differential privacy for a demographic table, per period, through OpenDP's measurements:
//! exact discrete Laplace or discrete Gaussian samplers (no floating-point noise to attack),
//! OpenSSL's CSPRNG, and OpenDP's proven privacy maps for the accounting.
//!
//! Per table and period, with the contribution bounds N (rows per visitor), C (requests per
//! visitor and row) and B (bytes per visitor and row) already applied:
//!
//! 1. **Partition selection with noisy visitor counts** (`make_laplace_threshold` /
//!    `make_gaussian_threshold`): a row is released only when its noisy visitor count reaches a
//!    threshold chosen so that a row that one visitor alone creates is released with probability
//!    at most delta. With a minimum k (`min_visitors`), rows under k exact visitors are dropped
//!    first and the counts shifted by k - 1 (pre-thresholding, as in Google's library), which
//!    keeps the guarantee.
//! 2. **Noisy requests** (and **noisy bytes** for `traffic_by_region`) for the released rows.
//!
//! The epsilon of a table is split equally between its noisy columns; with Laplace, all of delta
//! goes to partition selection; with Gaussian, half of it converts the zero-concentrated
//! guarantee to (epsilon, delta) and half goes to partition selection. Released counts are
//! post-processed to non-negative integers (visitors at least k, requests at least visitors).

use std::collections::HashMap;

use logcensus_aggregate::{ReleasedRow, Row};
use logcensus_policy::{Bounds, DpSpec, Mechanism};
use opendp::combinators::ConcentratedMeasure;
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::error::Fallible;
use opendp::measurements::{
    make_gaussian, make_gaussian_threshold, make_laplace, make_laplace_threshold,
};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L01InfDistance, L02InfDistance, L1Distance, L2Distance};

/// Why a DP release cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("differential privacy for {table}: {message}")]
    Calibration {
        table: &'static str,
        message: String,
    },
    #[error("differential privacy for {table}: drawing noise failed: {message}")]
    Sampling {
        table: &'static str,
        message: String,
    },
}

type Counts = HashMap<usize, i64>;

type CountsDomain = MapDomain<AtomDomain<usize>, AtomDomain<i64>>;
type VectorOfCounts = VectorDomain<AtomDomain<i64>>;
/// Laplace-threshold partition selection with noisy counts.
type LaplaceSelect = Measurement<
    CountsDomain,
    L01InfDistance<AbsoluteDistance<f64>>,
    Approximate<MaxDivergence>,
    Counts,
>;
/// Gaussian-threshold partition selection with noisy counts.
type GaussianSelect = Measurement<
    CountsDomain,
    L02InfDistance<AbsoluteDistance<f64>>,
    Approximate<ZeroConcentratedDivergence>,
    Counts,
>;
type LaplaceNoise = Measurement<VectorOfCounts, L1Distance<f64>, MaxDivergence, Vec<i64>>;
type GaussianNoise =
    Measurement<VectorOfCounts, L2Distance<f64>, ZeroConcentratedDivergence, Vec<i64>>;

/// The noisy measurements of one table, built once and applied to every period.
enum Mechanisms {
    Laplace {
        select: LaplaceSelect,
        requests: LaplaceNoise,
        bytes: Option<LaplaceNoise>,
    },
    Gaussian {
        select: GaussianSelect,
        requests: GaussianNoise,
        bytes: Option<GaussianNoise>,
    },
}

/// A table's DP release, calibrated: parameters (for metadata) and the measurements.
pub struct Calibration {
    pub table: &'static str,
    pub spec: DpSpec,
    /// The minimum of exact visitors a row needs before selection (1 without `min_visitors`).
    pub min_visitors: u64,
    /// Noisy (shifted) visitor counts under this are not released.
    pub threshold: i64,
    /// Noise scale of each noisy column (Laplace b, or Gaussian sigma).
    pub visitors_scale: f64,
    pub requests_scale: f64,
    pub bytes_scale: Option<f64>,
    /// What OpenDP's privacy maps say the whole table costs per period.
    pub epsilon_spent: f64,
    pub delta_spent: f64,
    mechanisms: Mechanisms,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibration")
            .field("table", &self.table)
            .field("spec", &self.spec)
            .field("threshold", &self.threshold)
            .field("visitors_scale", &self.visitors_scale)
            .field("requests_scale", &self.requests_scale)
            .field("bytes_scale", &self.bytes_scale)
            .finish()
    }
}

/// What a DP release did to one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DpStats {
    /// Rows under `min_visitors` exact visitors (dropped before selection).
    pub under_minimum: usize,
    /// Rows partition selection did not release.
    pub not_selected: usize,
    /// Rows released.
    pub released: usize,
}

fn fail(table: &'static str) -> impl Fn(&dyn std::fmt::Display) -> DpError {
    move |e| DpError::Calibration {
        table,
        message: e.to_string(),
    }
}

impl Calibration {
    /// Calibrates the noise of `table` to `spec` and `bounds` (which must hold
    /// `max_rows_per_visitor`, `max_requests_per_row`, and `max_bytes_per_row` when `has_bytes`).
    pub fn new(
        table: &'static str,
        spec: DpSpec,
        bounds: &Bounds,
        min_visitors: Option<u64>,
        has_bytes: bool,
    ) -> Result<Calibration, DpError> {
        let err = |message: String| DpError::Calibration { table, message };
        let n = bounds
            .max_rows_per_visitor
            .ok_or_else(|| err("max_rows_per_visitor is not set".into()))?;
        let c = bounds
            .max_requests_per_row
            .ok_or_else(|| err("max_requests_per_row is not set".into()))?;
        let b = match has_bytes {
            true => Some(
                bounds
                    .max_bytes_per_row
                    .ok_or_else(|| err("max_bytes_per_row is not set".into()))?,
            ),
            false => None,
        };
        let (n, c) = (f64::from(n), f64::from(c));
        let b = b.map(f64::from);
        let columns = if has_bytes { 3.0 } else { 2.0 };
        let k = min_visitors.unwrap_or(1).max(1);
        let fail = fail(table);
        let map_domain =
            MapDomain::new(AtomDomain::<usize>::default(), AtomDomain::<i64>::default());
        let vec_domain = || VectorDomain::new(AtomDomain::<i64>::default());
        match spec.mechanism {
            Mechanism::Laplace => {
                let eps = spec.epsilon / columns;
                // Selection: one visitor changes up to N counts by 1 each (l0 = N, l1 = N, l-inf = 1).
                let d_sel = (n as u32, n, 1.0);
                let visitors_scale = fit_scale(n / eps, |s| {
                    make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
                        map_domain.clone(),
                        L01InfDistance::default(),
                        s,
                        i64::MAX,
                        None,
                    )
                    .and_then(|m| m.map(&d_sel))
                    .map(|(e, _)| e <= eps)
                })
                .map_err(|e| fail(&e))?;
                let selection_delta = |t: i64| {
                    make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
                        map_domain.clone(),
                        L01InfDistance::default(),
                        visitors_scale,
                        t,
                        None,
                    )
                    .and_then(|m| m.map(&d_sel))
                    .map(|(_, d)| d)
                };
                // OpenDP 0.16 releases a count at or above the threshold but accounts for counts
                // above it (opendp/opendp#2922): calibrate one lower, release one higher.
                let accounted = fit_threshold(spec.delta, selection_delta).map_err(|e| fail(&e))?;
                let d_sel_spent = selection_delta(accounted).map_err(|e| fail(&e))?;
                let threshold = accounted + 1;
                let select = make_laplace_threshold(
                    map_domain,
                    L01InfDistance::default(),
                    visitors_scale,
                    threshold,
                    None,
                )
                .map_err(|e| fail(&e))?;
                let laplace = |l1: f64| -> Result<_, DpError> {
                    let scale = fit_scale(l1 / eps, |s| {
                        make_laplace::<_, _, MaxDivergence>(
                            vec_domain(),
                            L1Distance::default(),
                            s,
                            None,
                        )
                        .and_then(|m| m.map(&l1))
                        .map(|e| e <= eps)
                    })
                    .map_err(|e| fail(&e))?;
                    let m = make_laplace(vec_domain(), L1Distance::default(), scale, None)
                        .map_err(|e| fail(&e))?;
                    Ok((scale, m))
                };
                let (requests_scale, requests) = laplace(n * c)?;
                let bytes = b.map(|b| laplace(n * b)).transpose()?;
                let (e_sel, _) = select.map(&d_sel).map_err(|e| fail(&e))?;
                let mut epsilon_spent = e_sel + requests.map(&(n * c)).map_err(|e| fail(&e))?;
                if let (Some((_, m)), Some(b)) = (&bytes, b) {
                    epsilon_spent += m.map(&(n * b)).map_err(|e| fail(&e))?;
                }
                Ok(Calibration {
                    table,
                    spec,
                    min_visitors: k,
                    threshold,
                    visitors_scale,
                    requests_scale,
                    bytes_scale: bytes.as_ref().map(|(s, _)| *s),
                    epsilon_spent,
                    delta_spent: d_sel_spent,
                    mechanisms: Mechanisms::Laplace {
                        select,
                        requests,
                        bytes: bytes.map(|(_, m)| m),
                    },
                })
            }
            Mechanism::Gaussian => {
                // Half of delta converts rho-zCDP to (epsilon, delta), half selects partitions.
                let delta_conversion = spec.delta / 2.0;
                let rho_total = fit_rho(spec.epsilon, delta_conversion).map_err(|e| fail(&e))?;
                let rho = rho_total / columns;
                let d_sel = (n as u32, n.sqrt(), 1.0);
                let visitors_scale = fit_scale(n.sqrt() / (2.0 * rho).sqrt(), |s| {
                    make_gaussian_threshold::<_, _, Approximate<ZeroConcentratedDivergence>>(
                        map_domain.clone(),
                        L02InfDistance::default(),
                        s,
                        i64::MAX,
                        None,
                    )
                    .and_then(|m| m.map(&d_sel))
                    .map(|(r, _)| r <= rho)
                })
                .map_err(|e| fail(&e))?;
                let selection_delta = |t: i64| {
                    make_gaussian_threshold::<_, _, Approximate<ZeroConcentratedDivergence>>(
                        map_domain.clone(),
                        L02InfDistance::default(),
                        visitors_scale,
                        t,
                        None,
                    )
                    .and_then(|m| m.map(&d_sel))
                    .map(|(_, d)| d)
                };
                // As for Laplace: calibrate one lower, release one higher (opendp/opendp#2922).
                let accounted =
                    fit_threshold(spec.delta / 2.0, selection_delta).map_err(|e| fail(&e))?;
                let d_sel_spent = selection_delta(accounted).map_err(|e| fail(&e))?;
                let threshold = accounted + 1;
                let select = make_gaussian_threshold(
                    map_domain,
                    L02InfDistance::default(),
                    visitors_scale,
                    threshold,
                    None,
                )
                .map_err(|e| fail(&e))?;
                let gaussian = |l2: f64| -> Result<_, DpError> {
                    let scale = fit_scale(l2 / (2.0 * rho).sqrt(), |s| {
                        make_gaussian::<_, _, ZeroConcentratedDivergence>(
                            vec_domain(),
                            L2Distance::default(),
                            s,
                            None,
                        )
                        .and_then(|m| m.map(&l2))
                        .map(|r| r <= rho)
                    })
                    .map_err(|e| fail(&e))?;
                    let m = make_gaussian(vec_domain(), L2Distance::default(), scale, None)
                        .map_err(|e| fail(&e))?;
                    Ok((scale, m))
                };
                // One visitor changes up to N rows by up to C each: l2 = sqrt(N) * C.
                let (requests_scale, requests) = gaussian(n.sqrt() * c)?;
                let bytes = b.map(|b| gaussian(n.sqrt() * b)).transpose()?;
                let (r_sel, _) = select.map(&d_sel).map_err(|e| fail(&e))?;
                let mut rho_spent = r_sel + requests.map(&(n.sqrt() * c)).map_err(|e| fail(&e))?;
                if let (Some((_, m)), Some(b)) = (&bytes, b) {
                    rho_spent += m.map(&(n.sqrt() * b)).map_err(|e| fail(&e))?;
                }
                let conversion_delta = zcdp_delta(rho_spent, spec.epsilon).map_err(|e| fail(&e))?;
                Ok(Calibration {
                    table,
                    spec,
                    min_visitors: k,
                    threshold,
                    visitors_scale,
                    requests_scale,
                    bytes_scale: bytes.as_ref().map(|(s, _)| *s),
                    epsilon_spent: spec.epsilon,
                    delta_spent: d_sel_spent + conversion_delta,
                    mechanisms: Mechanisms::Gaussian {
                        select,
                        requests,
                        bytes: bytes.map(|(_, m)| m),
                    },
                })
            }
        }
    }

    /// Releases the (bounded) rows of one table: per period, partition selection on noisy
    /// visitor counts, then noisy requests and bytes. Rows leave sorted as they came.
    pub fn release(&self, rows: &[Row]) -> Result<(Vec<ReleasedRow>, DpStats), DpError> {
        let mut stats = DpStats::default();
        let mut out = Vec::new();
        for r in crate::period_ranges(rows) {
            self.release_period(&rows[r], &mut out, &mut stats)?;
        }
        Ok((out, stats))
    }

    fn release_period(
        &self,
        rows: &[Row],
        out: &mut Vec<ReleasedRow>,
        stats: &mut DpStats,
    ) -> Result<(), DpError> {
        let shift = self.min_visitors as i64 - 1;
        let counts: Counts = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.visitors.len() as u64 >= self.min_visitors)
            .map(|(i, r)| (i, r.visitors.len() as i64 - shift))
            .collect();
        stats.under_minimum += rows.len() - counts.len();
        let sampling = |e: opendp::error::Error| DpError::Sampling {
            table: self.table,
            message: e.to_string(),
        };
        let selected = match &self.mechanisms {
            Mechanisms::Laplace { select, .. } => select.invoke(&counts),
            Mechanisms::Gaussian { select, .. } => select.invoke(&counts),
        }
        .map_err(sampling)?;
        stats.not_selected += counts.len() - selected.len();
        stats.released += selected.len();
        let mut chosen: Vec<(usize, i64)> = selected.into_iter().collect();
        chosen.sort_unstable();
        let requests: Vec<i64> = chosen
            .iter()
            .map(|(i, _)| clamp_i64(rows[*i].requests))
            .collect();
        let bytes: Vec<i64> = chosen
            .iter()
            .map(|(i, _)| clamp_i64(rows[*i].bytes))
            .collect();
        let (noisy_requests, noisy_bytes) = match &self.mechanisms {
            Mechanisms::Laplace {
                requests: r,
                bytes: b,
                ..
            } => (
                r.invoke(&requests).map_err(sampling)?,
                b.as_ref()
                    .map(|b| b.invoke(&bytes))
                    .transpose()
                    .map_err(sampling)?,
            ),
            Mechanisms::Gaussian {
                requests: r,
                bytes: b,
                ..
            } => (
                r.invoke(&requests).map_err(sampling)?,
                b.as_ref()
                    .map(|b| b.invoke(&bytes))
                    .transpose()
                    .map_err(sampling)?,
            ),
        };
        for (j, (i, noisy_visitors)) in chosen.into_iter().enumerate() {
            // Post-processing only: a released row has at least k exact visitors, and every
            // visitor made at least one request.
            let visitors = (noisy_visitors.saturating_add(shift)).max(self.min_visitors as i64);
            let requests = noisy_requests[j].max(visitors);
            let bytes = noisy_bytes.as_ref().map_or(0, |b| b[j].max(0));
            out.push(ReleasedRow {
                period: rows[i].period,
                dims: rows[i].dims.clone(),
                requests: requests as u64,
                visitors: visitors as u64,
                bytes: bytes as u64,
            });
        }
        Ok(())
    }

    /// The file metadata describing this release (`logcensus.release.*`).
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut noisy = vec![
            ("visitors", self.visitors_scale),
            ("requests", self.requests_scale),
        ];
        if let Some(s) = self.bytes_scale {
            noisy.push(("bytes", s));
        }
        let mut out = vec![
            (
                "mechanism".to_string(),
                self.spec.mechanism.name().to_string(),
            ),
            ("epsilon".into(), self.spec.epsilon.to_string()),
            ("delta".into(), self.spec.delta.to_string()),
            (
                "noisy_columns".into(),
                noisy.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(","),
            ),
            (
                "selection_threshold".into(),
                (self.threshold + self.min_visitors as i64 - 1).to_string(),
            ),
        ];
        for (column, scale) in noisy {
            out.push((format!("noise_scale_{column}"), format!("{scale:.6}")));
        }
        out.into_iter()
            .map(|(k, v)| (format!("logcensus.release.{k}"), v))
            .collect()
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The smallest scale at or above `start` that `ok` accepts (float rounding in the privacy map
/// may need a hair more than the formula).
fn fit_scale(start: f64, ok: impl Fn(f64) -> Fallible<bool>) -> Result<f64, String> {
    let mut s = start;
    for _ in 0..64 {
        if ok(s).map_err(|e| e.to_string())? {
            return Ok(s);
        }
        s *= 1.0 + 1e-6;
    }
    Err("no noise scale satisfies the budget".into())
}

/// The smallest threshold whose delta is at most `delta`.
fn fit_threshold(delta: f64, delta_of: impl Fn(i64) -> Fallible<f64>) -> Result<i64, String> {
    let delta_of = |t| delta_of(t).map_err(|e| e.to_string());
    let mut hi: i64 = 1;
    while delta_of(hi)? > delta {
        hi = hi
            .checked_mul(2)
            .ok_or("no selection threshold reaches the delta")?;
    }
    let mut lo = hi / 2; // delta_of(lo) > delta, or lo == 0
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if delta_of(mid)? <= delta {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The delta of rho-zCDP at `epsilon` (OpenDP's conversion).
fn zcdp_delta(rho: f64, epsilon: f64) -> Fallible<f64> {
    <ZeroConcentratedDivergence as ConcentratedMeasure>::convert(rho)?.delta(epsilon)
}

/// The largest rho whose (epsilon, delta) conversion stays within `delta` at `epsilon`.
fn fit_rho(epsilon: f64, delta: f64) -> Result<f64, String> {
    let (mut lo, mut hi) = (0.0_f64, epsilon);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if zcdp_delta(mid, epsilon).map_err(|e| e.to_string())? <= delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo <= 0.0 {
        return Err(format!(
            "epsilon {epsilon} and delta {delta} leave no budget for Gaussian noise"
        ));
    }
    Ok(lo)
}
