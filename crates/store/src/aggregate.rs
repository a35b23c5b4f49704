//! The one aggregate implementation every backend uses, so answers agree.
//!
//! - NaN samples are skipped by everything (they count as "no data").
//! - `mean` = `sum / count`; `min`/`max`/`mean`/quantiles are `None` when `count == 0`.
//! - Quantiles are exact, by linear interpolation between the closest ranks (numpy's
//!   default `linear` method, and Prometheus' `quantile_over_time`): for sorted values
//!   `v[0..n]` and `q` in `0..=1`, `r = q·(n−1)`, result `v[⌊r⌋] + (r−⌊r⌋)·(v[⌈r⌉]−v[⌊r⌋])`.
//! - Histogram buckets are cumulative counts of values `≤ le`, Prometheus-style; the
//!   implicit `+Inf` bucket is `count`.

use crate::{Error, Result};

/// A finished aggregate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Non-NaN samples.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// `sum / count`.
    pub mean: Option<f64>,
    /// Smallest.
    pub min: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// `(q, value)` for each requested quantile, in request order.
    pub quantiles: Vec<(f64, Option<f64>)>,
    /// `(le, cumulative count)` for each requested bound, ascending.
    pub buckets: Vec<(f64, u64)>,
}

/// Accumulates values into a [`Summary`].
#[derive(Debug, Clone)]
pub struct Aggregate {
    quantiles: Vec<f64>,
    bounds: Vec<f64>,
    bucket_counts: Vec<u64>,
    values: Vec<f64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    /// An empty aggregate computing `quantiles` and histogram `bounds`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a quantile outside `0..=1` or bounds that are not finite and
    /// strictly ascending.
    pub fn new(quantiles: &[f64], bounds: &[f64]) -> Result<Self> {
        if let Some(q) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(Error::Invalid(format!("quantile {q} is outside 0..=1")));
        }
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Invalid(format!(
                "bucket bounds {bounds:?} must be finite and strictly ascending"
            )));
        }
        Ok(Aggregate {
            quantiles: quantiles.to_vec(),
            bounds: bounds.to_vec(),
            bucket_counts: vec![0; bounds.len()],
            values: Vec::new(),
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        })
    }

    /// Adds one value (NaN is skipped).
    pub fn push(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if !self.quantiles.is_empty() {
            self.values.push(v);
        }
        if !self.bounds.is_empty() {
            // First bound >= v; every bound from there counts v (cumulative at finish).
            let i = self.bounds.partition_point(|b| *b < v);
            if let Some(c) = self.bucket_counts.get_mut(i) {
                *c += 1;
            }
        }
    }

    /// The summary.
    pub fn finish(mut self) -> Summary {
        let n = self.count;
        self.values.sort_unstable_by(f64::total_cmp);
        let quantiles = self
            .quantiles
            .iter()
            .map(|&q| (q, quantile_sorted(&self.values, q)))
            .collect();
        let mut acc = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.bucket_counts)
            .map(|(&le, &c)| {
                acc += c;
                (le, acc)
            })
            .collect();
        Summary {
            count: n,
            sum: self.sum,
            mean: (n > 0).then(|| self.sum / n as f64),
            min: (n > 0).then_some(self.min),
            max: (n > 0).then_some(self.max),
            quantiles,
            buckets,
        }
    }
}

/// The `q` quantile of ascending `sorted` values by linear interpolation.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    Some(a + (rank - lo as f64) * (b - a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_values_and_skips_nan() {
        let mut a = Aggregate::new(&[0.0, 0.5, 0.9, 1.0], &[1.0, 2.5, 10.0]).unwrap();
        for v in [3.0, 1.0, f64::NAN, 2.0, 4.0] {
            a.push(v);
        }
        let s = a.finish();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, 10.0);
        assert_eq!(s.mean, Some(2.5));
        assert_eq!((s.min, s.max), (Some(1.0), Some(4.0)));
        // numpy.quantile([1,2,3,4], [0, .5, .9, 1]) == [1, 2.5, 3.7, 4]
        let qs: Vec<f64> = s.quantiles.iter().map(|(_, v)| v.unwrap()).collect();
        assert_eq!(qs[0], 1.0);
        assert_eq!(qs[1], 2.5);
        assert!((qs[2] - 3.7).abs() < 1e-12);
        assert_eq!(qs[3], 4.0);
        assert_eq!(s.buckets, vec![(1.0, 1), (2.5, 2), (10.0, 4)]);
    }

    #[test]
    fn empty_aggregate_has_no_extremes() {
        let s = Aggregate::new(&[0.5], &[]).unwrap().finish();
        assert_eq!(s.count, 0);
        assert_eq!((s.mean, s.min, s.max), (None, None, None));
        assert_eq!(s.quantiles, vec![(0.5, None)]);
    }

    #[test]
    fn rejects_bad_quantiles_and_bounds() {
        assert!(Aggregate::new(&[1.5], &[]).is_err());
        assert!(Aggregate::new(&[], &[2.0, 1.0]).is_err());
        assert!(Aggregate::new(&[], &[f64::INFINITY]).is_err());
    }
}
