//! The samples of an HTTP ingest run and their encodings, generated before timing so
//! the load generator's own cost stays out of the measurement.
//!
//! Sample `n` (0-based, `n < total`) belongs to series `n % series` and is that
//! series' `n / series`-th point; points of one series are `interval` apart and the
//! last one is at (about) the run's start, so every system keeps them under its
//! default retention. Values are a per-series random walk in steps of 0.01 (so they
//! print with at most two decimals, like many real gauges), deterministic for a given
//! shape. Requests carry consecutive samples: a batch holds one point of many series,
//! as an agent flushing a scrape would send.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use datanexus_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use datanexus_proto::prost::Message;

/// The measurement (metric name) every HTTP ingest workload writes.
pub(crate) const METRIC: &str = "bench";

/// The shape of a run.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) total: u64,
    pub(crate) series: u64,
    pub(crate) batch: u64,
    /// Nanoseconds between two points of a series.
    pub(crate) interval_ns: i64,
    /// Timestamp of every series' first point.
    pub(crate) first_ns: i64,
    /// Value of the `run` label.
    pub(crate) run: String,
}

impl Shape {
    /// A run of `total` samples ending at `now_ns`.
    pub(crate) fn new(total: u64, series: u64, batch: u64, interval_ns: i64, now_ns: i64) -> Shape {
        let points = total.div_ceil(series.max(1));
        let span_ns = i64::try_from(points)
            .unwrap_or(i64::MAX)
            .saturating_mul(interval_ns);
        let first_ns = now_ns.saturating_sub(span_ns);
        Shape {
            total,
            series,
            batch,
            interval_ns,
            first_ns: first_ns - first_ns.rem_euclid(interval_ns.max(1)),
            run: format!("{:x}", now_ns),
        }
    }
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub(crate) series: u64,
    pub(crate) timestamp_ns: i64,
    pub(crate) value: f64,
}

/// Every sample of `shape` in order, in batches of `shape.batch`.
fn batches(shape: &Shape) -> impl Iterator<Item = Vec<Point>> + '_ {
    let mut cents: Vec<i64> = (0..shape.series)
        .map(|s| 10_000 + (splitmix(s) % 90_000) as i64)
        .collect();
    let batch = shape.batch.max(1);
    (0..shape.total.div_ceil(batch)).map(move |b| {
        let end = ((b + 1) * batch).min(shape.total);
        (b * batch..end)
            .map(|n| {
                let series = n % shape.series;
                let step = n / shape.series;
                let walk = (splitmix(n) % 201) as i64 - 100;
                let slot = usize::try_from(series).unwrap_or(usize::MAX);
                let value = match cents.get_mut(slot) {
                    Some(c) => {
                        *c = (*c + walk).max(0);
                        *c as f64 / 100.0
                    }
                    None => 0.0,
                };
                Point {
                    series,
                    timestamp_ns: shape.first_ns.saturating_add(
                        i64::try_from(step)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(shape.interval_ns),
                    ),
                    value,
                }
            })
            .collect()
    })
}

/// SplitMix64: a cheap, well-mixed hash of `n`.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A request body and the number of samples in it.
pub(crate) type Body = (Bytes, u64);

/// Line protocol, `bench,run=<run>,series=s<N> value=<v> <ns>` a line.
pub(crate) fn line_protocol(shape: &Shape) -> Vec<Body> {
    batches(shape)
        .map(|points| {
            let mut text = String::with_capacity(points.len() * 64);
            for p in &points {
                let _ = writeln!(
                    text,
                    "{METRIC},run={},series=s{} value={} {}",
                    shape.run, p.series, p.value, p.timestamp_ns
                );
            }
            (Bytes::from(text), points.len() as u64)
        })
        .collect()
}

/// `POST /metrics` JSON arrays; timestamps as Unix seconds (fractional when needed).
pub(crate) fn json(shape: &Shape) -> Vec<Body> {
    batches(shape)
        .map(|points| {
            let mut text = String::with_capacity(points.len() * 110 + 2);
            text.push('[');
            for (i, p) in points.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                let secs = p.timestamp_ns.div_euclid(1_000_000_000);
                let nanos = p.timestamp_ns.rem_euclid(1_000_000_000);
                let _ = write!(
                    text,
                    r#"{{"metric_name":"{METRIC}","type":"gauge","value":{:?},"labels":{{"run":"{}","series":"s{}"}},"timestamp":{secs}"#,
                    p.value, shape.run, p.series
                );
                if nanos != 0 {
                    let _ = write!(text, ".{nanos:09}");
                }
                text.push('}');
            }
            text.push(']');
            (Bytes::from(text), points.len() as u64)
        })
        .collect()
}

/// Prometheus remote write: a snappy-compressed (block format) `WriteRequest` a
/// request, one `TimeSeries` per series in the batch, labels sorted by name.
///
/// # Errors
/// Snappy compression failed (not expected).
pub(crate) fn remote_write(shape: &Shape) -> anyhow::Result<Vec<Body>> {
    let mut encoder = snap::raw::Encoder::new();
    batches(shape)
        .map(|points| {
            let mut by_series: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
            for p in &points {
                by_series.entry(p.series).or_default().push(Sample {
                    value: p.value,
                    timestamp: p.timestamp_ns.div_euclid(1_000_000),
                });
            }
            let timeseries = by_series
                .into_iter()
                .map(|(series, samples)| TimeSeries {
                    labels: vec![
                        label("__name__", METRIC),
                        label("run", &shape.run),
                        label("series", &format!("s{series}")),
                    ],
                    samples,
                })
                .collect();
            let request = WriteRequest {
                timeseries,
                metadata: Vec::new(),
            };
            let compressed = encoder.compress_vec(&request.encode_to_vec())?;
            Ok((Bytes::from(compressed), points.len() as u64))
        })
        .collect()
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape::new(7, 3, 4, 10_000_000_000, 1_700_000_005_000_000_000)
    }

    #[test]
    fn samples_cycle_through_series_and_step_by_the_interval() {
        let s = shape();
        let all: Vec<Point> = batches(&s).flatten().collect();
        assert_eq!(all.len(), 7);
        assert_eq!(batches(&s).count(), 2);
        assert_eq!(all[4].series, 1);
        assert_eq!(all[4].timestamp_ns - all[1].timestamp_ns, 10_000_000_000);
        assert_eq!(s.first_ns % 10_000_000_000, 0);
        assert!(
            all.iter()
                .all(|p| p.timestamp_ns <= 1_700_000_005_000_000_000)
        );
        let again: Vec<Point> = batches(&s).flatten().collect();
        assert_eq!(all, again, "deterministic");
    }

    #[test]
    fn line_protocol_parses_back_to_the_same_points() {
        let s = shape();
        let bodies = line_protocol(&s);
        assert_eq!(bodies.iter().map(|(_, n)| n).sum::<u64>(), 7);
        let text = std::str::from_utf8(&bodies[0].0).unwrap();
        let points = datanexus_model::lineproto::parse(
            text,
            datanexus_model::lineproto::Precision::Nanoseconds,
            0,
            &datanexus_model::Limits::default(),
        )
        .unwrap();
        assert_eq!(points.len(), 4);
        assert_eq!(points[0].timestamp_ns, s.first_ns);
        assert!(text.starts_with(&format!("bench,run={},series=s0 value=", s.run)));
    }

    #[test]
    fn json_batches_are_arrays_of_metric_objects() {
        let bodies = json(&shape());
        let v: serde_json::Value = serde_json::from_slice(&bodies[1].0).unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["metric_name"], "bench");
        assert_eq!(items[0]["labels"]["series"], "s1");
        assert!(items[0]["timestamp"].is_i64());
        assert!(items[0]["value"].is_f64());
    }

    #[test]
    fn remote_write_is_snappy_block_protobuf_with_sorted_labels() {
        let bodies = remote_write(&shape()).unwrap();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&bodies[0].0)
            .unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 3);
        let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
        assert_eq!(samples, 4);
        let names: Vec<&str> = request.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["__name__", "run", "series"]);
        assert_eq!(
            request.timeseries[0].samples[0].timestamp,
            shape().first_ns / 1_000_000
        );
    }
}
