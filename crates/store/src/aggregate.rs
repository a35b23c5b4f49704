//! The one aggregate implementation every backend uses, so answers agree.
//!
//! - NaN samples are skipped by everything (they count as "no data").
//! - `sum` is exact: the correctly rounded sum of the values (Shewchuk's algorithm, as
//!   Python's `math.fsum`), so it does not depend on the order values arrive in — a sum
//!   merged from several nodes ([`Aggregate::merge`]) equals the sum over one node.
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
    sum: ExactSum,
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
            sum: ExactSum::default(),
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
        self.sum.add(v);
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

    /// Adds everything `other` accumulated (same quantiles and bounds): the result is
    /// what pushing `other`'s values into `self` would have given, in any order.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the two were made for different quantiles or bounds.
    pub fn merge(&mut self, other: Aggregate) -> Result<()> {
        if self.quantiles != other.quantiles || self.bounds != other.bounds {
            return Err(Error::Invalid(
                "aggregates of different quantiles or bounds cannot be merged".to_owned(),
            ));
        }
        self.count = self.count.saturating_add(other.count);
        self.sum.merge(&other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (c, o) in self.bucket_counts.iter_mut().zip(other.bucket_counts) {
            *c = c.saturating_add(o);
        }
        if self.values.is_empty() {
            self.values = other.values;
        } else {
            self.values.extend(other.values);
        }
        Ok(())
    }

    /// Non-NaN values pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the state to `out` (little-endian, exact for every f64): what
    /// [`Aggregate::decode`] reads back given the same quantiles and bounds.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        out.extend_from_slice(&self.sum.special.to_le_bytes());
        put_len(out, self.sum.partials.len());
        for p in &self.sum.partials {
            out.extend_from_slice(&p.to_le_bytes());
        }
        put_len(out, self.bucket_counts.len());
        for c in &self.bucket_counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        put_len(out, self.values.len());
        out.reserve(self.values.len() * 8);
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Reads a state [`Aggregate::encode`] wrote into a copy of `self` (which gives the
    /// quantiles and bounds), advancing `input`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bytes that are not such a state (or of other bounds).
    pub fn decode(&self, input: &mut &[u8]) -> Result<Aggregate> {
        let mut a = Aggregate {
            quantiles: self.quantiles.clone(),
            bounds: self.bounds.clone(),
            bucket_counts: Vec::new(),
            values: Vec::new(),
            count: take_u64(input)?,
            sum: ExactSum::default(),
            min: take_f64(input)?,
            max: take_f64(input)?,
        };
        a.sum.special = take_f64(input)?;
        let n = take_len(input, 8)?;
        a.sum.partials = (0..n).map(|_| take_f64(input)).collect::<Result<_>>()?;
        let n = take_len(input, 8)?;
        if n != self.bounds.len() {
            return Err(Error::Invalid(format!(
                "aggregate state has {n} buckets, the query {}",
                self.bounds.len()
            )));
        }
        a.bucket_counts = (0..n).map(|_| take_u64(input)).collect::<Result<_>>()?;
        let n = take_len(input, 8)?;
        a.values = (0..n).map(|_| take_f64(input)).collect::<Result<_>>()?;
        Ok(a)
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
                // Saturating: a decoded state (another node's answer) may hold anything.
                acc = u64::saturating_add(acc, c);
                (le, acc)
            })
            .collect();
        let sum = self.sum.value();
        Summary {
            count: n,
            sum,
            mean: (n > 0).then(|| sum / n as f64),
            min: (n > 0).then_some(self.min),
            max: (n > 0).then_some(self.max),
            quantiles,
            buckets,
        }
    }
}

/// An aggregate before it is finished: what one node of a cluster answers, merged
/// exactly with the others' ([`AggregateParts::merge`]) and finished once.
#[derive(Debug, Clone)]
pub struct AggregateParts {
    /// Over the whole range.
    pub total: Aggregate,
    /// Per step: bucket start (ns) → its aggregate, ascending.
    pub steps: std::collections::BTreeMap<i64, Aggregate>,
    /// Series with samples in the range.
    pub series_count: u64,
}

/// The first bytes of an encoded [`AggregateParts`] (and its version).
const PARTS_MAGIC: &[u8; 4] = b"DNA1";

impl AggregateParts {
    /// Nothing yet, for `quantiles` and histogram `bounds`.
    ///
    /// # Errors
    /// As [`Aggregate::new`].
    pub fn new(quantiles: &[f64], bounds: &[f64]) -> Result<Self> {
        Ok(AggregateParts {
            total: Aggregate::new(quantiles, bounds)?,
            steps: std::collections::BTreeMap::new(),
            series_count: 0,
        })
    }

    /// Adds `other`'s values and series (series on several nodes count once per node).
    ///
    /// # Errors
    /// As [`Aggregate::merge`].
    pub fn merge(&mut self, other: AggregateParts) -> Result<()> {
        self.total.merge(other.total)?;
        for (bucket, agg) in other.steps {
            match self.steps.entry(bucket) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(agg)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(agg);
                }
            }
        }
        self.series_count = self.series_count.saturating_add(other.series_count);
        Ok(())
    }

    /// The result: steps without a non-NaN sample are omitted.
    pub fn finish(self) -> crate::AggregateResult {
        crate::AggregateResult {
            total: self.total.finish(),
            steps: self
                .steps
                .into_iter()
                .filter(|(_, a)| a.count > 0)
                .map(|(b, a)| (b, a.finish()))
                .collect(),
            series_count: self.series_count,
        }
    }

    /// The parts as bytes (the cluster's wire format; exact for every f64).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.total.values.len() * 16);
        out.extend_from_slice(PARTS_MAGIC);
        out.extend_from_slice(&self.series_count.to_le_bytes());
        self.total.encode(&mut out);
        put_len(&mut out, self.steps.len());
        for (bucket, agg) in &self.steps {
            out.extend_from_slice(&bucket.to_le_bytes());
            agg.encode(&mut out);
        }
        out
    }

    /// Reads what [`AggregateParts::encode`] wrote for a query of `quantiles` and
    /// `bounds`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for other bytes.
    pub fn decode(mut input: &[u8], quantiles: &[f64], bounds: &[f64]) -> Result<Self> {
        let template = Aggregate::new(quantiles, bounds)?;
        let input = &mut input;
        if input.get(..4) != Some(PARTS_MAGIC.as_slice()) {
            return Err(Error::Invalid("not an aggregate state".to_owned()));
        }
        *input = &input[4..];
        let series_count = take_u64(input)?;
        let total = template.decode(input)?;
        let n = take_len(input, 16)?;
        let mut steps = std::collections::BTreeMap::new();
        let mut previous = None;
        for _ in 0..n {
            let bucket = take_u64(input)? as i64;
            // Strictly ascending, as encoded: a repeated step would silently replace one.
            if previous.is_some_and(|p| bucket <= p) {
                return Err(Error::Invalid(
                    "aggregate state steps out of order".to_owned(),
                ));
            }
            previous = Some(bucket);
            steps.insert(bucket, template.decode(input)?);
        }
        if !input.is_empty() {
            return Err(Error::Invalid(
                "trailing bytes after an aggregate state".to_owned(),
            ));
        }
        Ok(AggregateParts {
            total,
            steps,
            series_count,
        })
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn take_u64(input: &mut &[u8]) -> Result<u64> {
    let Some((head, rest)) = input.split_first_chunk::<8>() else {
        return Err(Error::Invalid("aggregate state ends early".to_owned()));
    };
    *input = rest;
    Ok(u64::from_le_bytes(*head))
}

fn take_f64(input: &mut &[u8]) -> Result<f64> {
    take_u64(input).map(f64::from_bits)
}

/// A count of items of `size` bytes each, checked against what is left (so a bad
/// count cannot make a huge allocation).
fn take_len(input: &mut &[u8], size: usize) -> Result<usize> {
    let n = take_u64(input)?;
    if n > (input.len() / size) as u64 {
        return Err(Error::Invalid("aggregate state ends early".to_owned()));
    }
    Ok(n as usize)
}

/// An exact running sum of floats: non-overlapping partials whose sum is the exact sum
/// of what was added (Shewchuk, "Adaptive Precision Floating-Point Arithmetic", as
/// Python's `math.fsum`), rounded once at the end. Infinities (and a finite sum that
/// overflows) are kept apart and win, as plain addition would give.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactSum {
    partials: Vec<f64>,
    /// The sum of the infinite terms (0 when there is none; NaN for +inf and -inf).
    special: f64,
}

impl ExactSum {
    /// Adds `x` (NaN makes the sum NaN).
    pub fn add(&mut self, mut x: f64) {
        if !x.is_finite() {
            self.special += x;
            return;
        }
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        if x.is_finite() {
            self.partials.push(x);
        } else {
            // The finite terms overflowed: the sum is that infinity.
            self.special += x;
        }
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &ExactSum) {
        for p in &other.partials {
            self.add(*p);
        }
        self.special += other.special;
    }

    /// The correctly rounded sum.
    pub fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special;
        }
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even when the remaining partials push past the halfway point.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

/// [`AggregateParts`] from the raw samples of `q`, read by [`crate::Store::query`] a
/// page at a time (for backends without their own pass).
pub(crate) async fn parts_from_samples<S: crate::Store + ?Sized>(
    store: &S,
    q: &crate::AggregateQuery,
) -> Result<AggregateParts> {
    /// Samples per page.
    const PAGE: usize = 100_000;
    if let Some(step) = q.step_ns.filter(|s| *s <= 0) {
        return Err(Error::Invalid(format!("step {step} ns must be positive")));
    }
    let mut parts = AggregateParts::new(&q.quantiles, &q.buckets)?;
    let template = parts.total.clone();
    let mut series = std::collections::BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = store
            .query(&crate::SeriesQuery {
                selector: q.selector.clone(),
                range: q.range,
                limit: PAGE,
                offset,
            })
            .await?;
        for (i, sample) in &page.samples {
            if let Some(key) = page.series.get(*i) {
                series.insert(key.clone());
            }
            parts.total.push(sample.value);
            if let Some(step) = q.step_ns {
                let bucket = sample.timestamp_ns.div_euclid(step).saturating_mul(step);
                parts
                    .steps
                    .entry(bucket)
                    .or_insert_with(|| template.clone())
                    .push(sample.value);
            }
        }
        offset += page.samples.len();
        if page.samples.len() < PAGE || offset as u64 >= page.total {
            break;
        }
    }
    parts.series_count = series.len() as u64;
    Ok(parts)
}

/// The `q` quantile of ascending `sorted` values by linear interpolation.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    if lo == hi {
        // An exact rank is that value (also for infinities, where `0 · ∞` is NaN).
        return Some(a);
    }
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
    fn sums_are_exact_in_any_order() {
        let values = [1e100, 1.0, -1e100, 1e-3, 0.1, 0.2, 0.3, -0.6, 3.5e15, 7.0];
        let mut forward = ExactSum::default();
        values.iter().for_each(|v| forward.add(*v));
        let mut backward = ExactSum::default();
        values.iter().rev().for_each(|v| backward.add(*v));
        // The exact sum is 3.5e15 + 8.001 + (0.1 + 0.2 + 0.3 - 0.6 in binary).
        assert_eq!(forward.value(), backward.value());
        assert_eq!(forward.value(), 3_500_000_000_000_008.0);
        let mut halves = ExactSum::default();
        values[..4].iter().for_each(|v| halves.add(*v));
        let mut rest = ExactSum::default();
        values[4..].iter().for_each(|v| rest.add(*v));
        halves.merge(&rest);
        assert_eq!(halves.value(), forward.value());
        // Python: math.fsum([0.1] * 10) == 1.0, sum() gives 0.9999999999999999.
        let mut tenths = ExactSum::default();
        (0..10).for_each(|_| tenths.add(0.1));
        assert_eq!(tenths.value(), 1.0);
        let mut inf = ExactSum::default();
        [1.0, f64::INFINITY, 2.0].iter().for_each(|v| inf.add(*v));
        assert_eq!(inf.value(), f64::INFINITY);
        inf.add(f64::NEG_INFINITY);
        assert!(inf.value().is_nan());
        let mut overflow = ExactSum::default();
        [f64::MAX, f64::MAX].iter().for_each(|v| overflow.add(*v));
        assert_eq!(overflow.value(), f64::INFINITY);
        assert_eq!(ExactSum::default().value(), 0.0);
    }

    #[test]
    fn parts_merge_to_the_aggregate_of_all_values_and_survive_encoding() {
        let (qs, bounds) = ([0.0, 0.5, 0.99], [1.0, 50.0]);
        let values: Vec<f64> = (0..1000)
            .map(|i| (f64::from(i) * 0.37).sin() * 100.0)
            .collect();
        let mut whole = AggregateParts::new(&qs, &bounds).unwrap();
        let mut parts: Vec<AggregateParts> = (0..3)
            .map(|_| AggregateParts::new(&qs, &bounds).unwrap())
            .collect();
        for (i, v) in values.iter().enumerate() {
            let step = (i as i64 / 100) * 100;
            for p in [&mut whole, &mut parts[i % 3]] {
                p.total.push(*v);
                p.steps
                    .entry(step)
                    .or_insert_with(|| Aggregate::new(&qs, &bounds).unwrap())
                    .push(*v);
            }
        }
        parts[0].total.push(f64::NEG_INFINITY);
        whole.total.push(f64::NEG_INFINITY);
        let mut merged = AggregateParts::new(&qs, &bounds).unwrap();
        for p in parts {
            let bytes = p.encode();
            merged
                .merge(AggregateParts::decode(&bytes, &qs, &bounds).unwrap())
                .unwrap();
        }
        assert_eq!(merged.finish(), whole.finish());
        let bytes = AggregateParts::new(&qs, &bounds).unwrap().encode();
        assert!(AggregateParts::decode(&bytes, &qs, &[]).is_err());
        assert!(AggregateParts::decode(&bytes[..bytes.len() - 1], &qs, &bounds).is_err());
        assert!(AggregateParts::decode(b"DNA1\xff\xff", &qs, &bounds).is_err());
    }

    /// Found by the `cluster_wire` fuzz target: a state that lists a step twice (or out
    /// of order) is refused, not decoded with one of the two silently dropped.
    #[test]
    fn decoded_states_with_repeated_steps_are_refused() {
        let (qs, bounds) = ([0.5], [1.0]);
        let mut state = AggregateParts::new(&qs, &bounds).unwrap();
        for step in [10, 20] {
            let mut a = Aggregate::new(&qs, &bounds).unwrap();
            a.push(1.0);
            state.steps.insert(step, a);
        }
        let bytes = state.encode();
        assert!(AggregateParts::decode(&bytes, &qs, &bounds).is_ok());
        // The second step's bucket start (after the total) rewritten to the first's.
        let mut repeated = bytes.clone();
        let first = (10i64).to_le_bytes();
        let second = (20i64).to_le_bytes();
        let at = repeated
            .windows(8)
            .rposition(|w| w == second)
            .expect("the second step's start");
        repeated[at..at + 8].copy_from_slice(&first);
        let e = AggregateParts::decode(&repeated, &qs, &bounds).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
    }

    /// Found by the `cluster_wire` fuzz target: a state with bucket counts near
    /// `u64::MAX` (a broken or hostile node's answer) overflowed when finished.
    #[test]
    fn decoded_states_with_huge_counts_finish_and_merge_without_overflow() {
        let (qs, bounds) = ([0.5], [1.0, 2.0]);
        let mut state = AggregateParts::new(&qs, &bounds).unwrap();
        state.total.count = u64::MAX;
        state.total.bucket_counts = vec![u64::MAX, u64::MAX];
        state.series_count = u64::MAX;
        let bytes = state.encode();
        let mut merged = AggregateParts::decode(&bytes, &qs, &bounds).unwrap();
        merged
            .merge(AggregateParts::decode(&bytes, &qs, &bounds).unwrap())
            .unwrap();
        let done = merged.finish();
        assert_eq!(done.total.count, u64::MAX);
        assert_eq!(done.total.buckets, vec![(1.0, u64::MAX), (2.0, u64::MAX)]);
        assert_eq!(done.series_count, u64::MAX);
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
