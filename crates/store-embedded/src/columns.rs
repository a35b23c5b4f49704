//! Sorted per-series sample columns: the head's buffers and the unit of every merge.

use datanexus_store::{Sample, TimeRange};

/// Samples of one series as two parallel columns, ascending by timestamp, timestamps
/// unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Columns {
    /// Nanoseconds since the Unix epoch, strictly ascending.
    pub(crate) ts: Vec<i64>,
    /// One value per timestamp.
    pub(crate) values: Vec<f64>,
}

impl Columns {
    /// Number of samples.
    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether there are no samples.
    pub(crate) fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Inserts or replaces the sample at `ts`; returns whether it was new.
    ///
    /// Appending in time order is O(1); an out-of-order or repeated timestamp costs a
    /// binary search (and a shift for an insert).
    pub(crate) fn upsert(&mut self, ts: i64, value: f64) -> bool {
        if self.ts.last().is_none_or(|&last| ts > last) {
            self.ts.push(ts);
            self.values.push(value);
            return true;
        }
        match self.ts.binary_search(&ts) {
            Ok(i) => {
                if let Some(v) = self.values.get_mut(i) {
                    *v = value;
                }
                false
            }
            Err(i) => {
                self.ts.insert(i, ts);
                self.values.insert(i, value);
                true
            }
        }
    }

    /// Appends a run whose timestamps are ascending and all greater than ours (the
    /// shape of data read back from one file).
    pub(crate) fn extend_sorted(&mut self, ts: &[i64], values: &[f64]) {
        self.ts.extend_from_slice(ts);
        self.values.extend_from_slice(values);
    }

    /// Index range of the samples inside `range`.
    pub(crate) fn bounds(&self, range: &TimeRange) -> std::ops::Range<usize> {
        slice_bounds(&self.ts, range)
    }

    /// A copy of the samples inside `range`.
    pub(crate) fn slice(&self, range: &TimeRange) -> Columns {
        let r = self.bounds(range);
        Columns {
            ts: self.ts.get(r.clone()).unwrap_or_default().to_vec(),
            values: self.values.get(r).unwrap_or_default().to_vec(),
        }
    }

    /// Drops samples at or before `up_to_ns`; returns how many.
    pub(crate) fn drop_through(&mut self, up_to_ns: i64) -> usize {
        match up_to_ns.checked_add(1) {
            Some(cutoff) => self.drop_before(cutoff),
            None => {
                let n = self.ts.len();
                self.ts.clear();
                self.values.clear();
                n
            }
        }
    }

    /// Drops samples older than `cutoff_ns`; returns how many.
    pub(crate) fn drop_before(&mut self, cutoff_ns: i64) -> usize {
        let n = self.ts.partition_point(|&t| t < cutoff_ns);
        self.ts.drain(..n);
        self.values.drain(..n);
        n
    }

    /// The sample with the greatest timestamp.
    pub(crate) fn last(&self) -> Option<Sample> {
        Some(Sample {
            timestamp_ns: *self.ts.last()?,
            value: *self.values.last()?,
        })
    }

    /// The sample at index `i`.
    pub(crate) fn get(&self, i: usize) -> Option<Sample> {
        Some(Sample {
            timestamp_ns: *self.ts.get(i)?,
            value: *self.values.get(i)?,
        })
    }

    /// Merges `older` and `newer`: on equal timestamps the newer value wins.
    pub(crate) fn merge(older: Columns, newer: Columns) -> Columns {
        if older.is_empty() {
            return newer;
        }
        if newer.is_empty() {
            return older;
        }
        let mut out = Columns {
            ts: Vec::with_capacity(older.len() + newer.len()),
            values: Vec::with_capacity(older.len() + newer.len()),
        };
        let (mut a, mut b) = (
            older.ts.iter().zip(&older.values).peekable(),
            newer.ts.iter().zip(&newer.values).peekable(),
        );
        loop {
            let take = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (Some((ta, _)), Some((tb, _))) if ta < tb => a.next(),
                (Some((ta, _)), Some((tb, _))) if ta > tb => b.next(),
                (Some(_), Some(_)) => {
                    a.next();
                    b.next()
                }
            };
            if let Some((&t, &v)) = take {
                out.ts.push(t);
                out.values.push(v);
            }
        }
        out
    }

    /// Merges layers given oldest first; newer layers win on equal timestamps.
    pub(crate) fn merge_layers(layers: Vec<Columns>) -> Columns {
        let mut it = layers.into_iter().filter(|c| !c.is_empty());
        let first = it.next().unwrap_or_default();
        it.fold(first, Columns::merge)
    }
}

/// Index range of the ascending `ts` inside `range`.
pub(crate) fn slice_bounds(ts: &[i64], range: &TimeRange) -> std::ops::Range<usize> {
    let lo = range.start_ns.map_or(0, |s| ts.partition_point(|&t| t < s));
    let hi = range
        .end_ns
        .map_or(ts.len(), |e| ts.partition_point(|&t| t <= e));
    lo..hi.max(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(pairs: &[(i64, f64)]) -> Columns {
        let mut c = Columns::default();
        for &(t, v) in pairs {
            c.upsert(t, v);
        }
        c
    }

    #[test]
    fn upsert_keeps_timestamps_sorted_and_unique() {
        let c = cols(&[(5, 1.0), (1, 2.0), (3, 3.0), (5, 4.0)]);
        assert_eq!(c.ts, vec![1, 3, 5]);
        assert_eq!(c.values, vec![2.0, 3.0, 4.0]);
    }

    #[test]
    fn merge_prefers_the_newer_layer_on_equal_timestamps() {
        let older = cols(&[(1, 1.0), (2, 2.0), (4, 4.0)]);
        let newer = cols(&[(2, 20.0), (3, 30.0)]);
        let m = Columns::merge_layers(vec![older, Columns::default(), newer]);
        assert_eq!(m.ts, vec![1, 2, 3, 4]);
        assert_eq!(m.values, vec![1.0, 20.0, 30.0, 4.0]);
    }

    #[test]
    fn bounds_are_inclusive_at_both_ends() {
        let c = cols(&[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
        let r = TimeRange {
            start_ns: Some(2),
            end_ns: Some(3),
        };
        assert_eq!(c.bounds(&r), 1..3);
        assert_eq!(
            c.bounds(&TimeRange {
                start_ns: Some(5),
                end_ns: Some(1)
            }),
            4..4
        );
        assert_eq!(c.slice(&TimeRange::default()), c);
    }
}
