//! Prometheus remote write 1.0: a snappy-compressed `prometheus.WriteRequest` to points.
//!
//! - The body is one snappy *block* (not the framed format). Its header declares the
//!   decompressed length, which is checked against the limit before anything is
//!   allocated (`413` when larger).
//! - Each sample becomes a point named by the series' `__name__` label with the other
//!   labels as its labels and one field `value`; timestamps are milliseconds since
//!   1970 (earlier or past 2262 is refused, as on every ingest path). Every
//!   series must have a `__name__`; names and labels follow the same rules as every
//!   other ingest path (`[a-zA-Z_:][a-zA-Z0-9_:]*`, no other `__` labels), and `±Inf`
//!   values are refused like everywhere else. A series that breaks a rule is refused
//!   as a whole; the valid series of the same request are written, and the answer is
//!   then `400` naming the first refused series and the counts (Prometheus does not
//!   retry a 400, so refusing the whole request would lose every valid sample of it).
//! - Prometheus' staleness markers (the NaN with bits `0x7ff0000000000002`) are not
//!   samples: they are skipped. Any other NaN is stored.
//! - Metadata (`send_metadata`, on by default in Prometheus, sent in requests of its
//!   own every `metadata_config.send_interval`) is remembered per family name (up to
//!   100,000 families, in memory) and gives later samples of counters and gauges
//!   their type and help text. Histogram and summary families arrive as their
//!   pre-computed `_bucket`/`_sum`/`_count`/quantile series and are stored as untyped
//!   series under those names (our histogram type means raw observations).

use std::collections::HashMap;

use datanexus_model::event::{sanitize_label_name, sanitize_metric_name};
use datanexus_model::{Labels, Limits, MetricType, Point, validate};
use datanexus_proto::prometheus::metric_metadata::MetricType as PromType;
use datanexus_proto::prometheus::{MetricMetadata, TimeSeries, WriteRequest};
use datanexus_proto::prost::Message;

use crate::convert::check_batch_len;
use crate::{Error, Result};

/// The label that names the metric.
const NAME_LABEL: &str = "__name__";

/// `name` made legal by `sanitize` when it is not (UTF-8 names of Prometheus 3 and
/// OpenTelemetry, `http.server.duration`, are accepted as VictoriaMetrics does, as
/// `http_server_duration`); a legal name is kept as it is, without a copy.
fn legal_name(name: String, sanitize: fn(&str) -> String) -> String {
    let fixed = sanitize(&name);
    if fixed == name { name } else { fixed }
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// [`decode_request`] without remembered metadata, where any refused series is an
/// error (tests).
#[cfg(test)]
pub(crate) fn decode(
    body: &[u8],
    max_decompressed_bytes: usize,
    limits: &Limits,
) -> Result<Vec<Point>> {
    let decoded = decode_request(
        body,
        max_decompressed_bytes,
        limits,
        &AnnouncedMetadata::default(),
        usize::MAX,
    )?;
    match decoded.first_rejection {
        Some(e) => Err(e),
        None => Ok(decoded.points),
    }
}

/// Decompresses and decodes a remote write body into points (at most `max_batch`),
/// giving samples without metadata in their own request the type and help
/// remembered in `families`, and remembering this request's metadata there.
/// (Prometheus sends metadata in requests of their own, every
/// `metadata_config.send_interval`.) A series that breaks a rule is left out and
/// counted in [`Decoded`]; the other series' points are returned.
///
/// # Errors
/// [`Error::PayloadTooLarge`] when the declared decompressed size exceeds
/// `max_decompressed_bytes`; [`Error::Invalid`] for a broken snappy block, an
/// undecodable message, or more than `max_batch` samples.
pub fn decode_request(
    body: &[u8],
    max_decompressed_bytes: usize,
    limits: &Limits,
    families: &AnnouncedMetadata,
    max_batch: usize,
) -> Result<Decoded> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| Error::Invalid(format!("invalid snappy block: {e}")))?;
    if len > max_decompressed_bytes {
        return Err(Error::PayloadTooLarge {
            limit: max_decompressed_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Error::Invalid(format!("invalid snappy block: {e}")))?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| Error::Invalid(format!("undecodable prometheus.WriteRequest: {e}")))?;
    families.remember(&request.metadata);
    let decoded = to_points(request, limits, families);
    if !decoded.points.is_empty() {
        check_batch_len(
            decoded.points.len(),
            max_batch,
            "samples",
            "max_batch_metrics",
        )?;
    }
    Ok(decoded)
}

/// Most metric families whose metadata is remembered.
const MAX_FAMILIES: usize = 100_000;

/// Type and help of metric families, as remote write metadata announced them.
#[derive(Debug, Default)]
pub struct AnnouncedMetadata {
    known: parking_lot::RwLock<HashMap<String, (MetricType, Option<String>)>>,
}

impl AnnouncedMetadata {
    fn remember(&self, list: &[MetricMetadata]) {
        if list.is_empty() {
            return;
        }
        let mut known = self.known.write();
        for (name, (kind, help)) in metadata(list) {
            if known.len() >= MAX_FAMILIES && !known.contains_key(name) {
                continue;
            }
            known.insert(name.to_owned(), (kind, help.map(str::to_owned)));
        }
    }

    fn get(&self, name: &str) -> Option<(MetricType, Option<String>)> {
        self.known.read().get(name).cloned()
    }
}

/// The points of a decoded request.
/// The points of a request's valid series, and the series refused.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Points of every valid series.
    pub points: Vec<Point>,
    /// How many series were refused.
    pub rejected: usize,
    /// Why the first refused series was refused.
    pub first_rejection: Option<Error>,
}

fn to_points(request: WriteRequest, limits: &Limits, families: &AnnouncedMetadata) -> Decoded {
    let samples = request.timeseries.iter().map(|s| s.samples.len()).sum();
    let mut out = Decoded {
        points: Vec::with_capacity(samples),
        ..Decoded::default()
    };
    for (index, series) in request.timeseries.into_iter().enumerate() {
        let start = out.points.len();
        if let Err(e) = series_points(index, series, limits, families, &mut out.points) {
            // All or nothing per series.
            out.points.truncate(start);
            out.rejected += 1;
            out.first_rejection.get_or_insert(e);
        }
    }
    out
}

/// Appends the points of one series, or fails on its first broken rule.
fn series_points(
    index: usize,
    series: TimeSeries,
    limits: &Limits,
    families: &AnnouncedMetadata,
    points: &mut Vec<Point>,
) -> Result<()> {
    let mut name = None;
    let mut pairs = Vec::with_capacity(series.labels.len());
    for label in series.labels {
        if label.name == NAME_LABEL {
            if name.is_some() {
                return Err(series_error(index, None, "__name__ occurs twice"));
            }
            name = Some(legal_name(label.value, sanitize_metric_name));
        } else if label.name.starts_with("__") {
            // Reserved for Prometheus' internal use (and dropped by it before sending).
            pairs.push((label.name, label.value));
        } else {
            pairs.push((legal_name(label.name, sanitize_label_name), label.value));
        }
    }
    let Some(name) = name else {
        return Err(series_error(index, None, "no __name__ label"));
    };
    let labels = Labels::new(pairs).map_err(|e| series_error(index, Some(&name), e))?;
    let (kind, help) = families
        .get(name.as_str())
        .unwrap_or((MetricType::Untyped, None));
    let mut template = Point::sample(name, labels, 0.0, 0);
    template.kind = kind;
    template.help = help;
    validate::point(&template, limits)
        .map_err(|e| series_error(index, Some(&template.measurement), e))?;
    for sample in series.samples {
        if sample.value.to_bits() == STALE_NAN_BITS {
            continue;
        }
        validate::value(&template.measurement, sample.value)
            .map_err(|e| series_error(index, Some(&template.measurement), e))?;
        let timestamp_ns = sample
            .timestamp
            .checked_mul(1_000_000)
            .filter(|ns| *ns >= 0)
            .ok_or_else(|| {
                series_error(
                    index,
                    Some(&template.measurement),
                    format!(
                        "timestamp {} ms is out of range (1970-01-01 to 2262-04-11)",
                        sample.timestamp
                    ),
                )
            })?;
        let mut point = template.clone();
        point.fields[0].1 = datanexus_model::FieldValue::F64(sample.value);
        point.timestamp_ns = timestamp_ns;
        points.push(point);
    }
    Ok(())
}

/// Family name → (type, help) for counters and gauges.
fn metadata(list: &[MetricMetadata]) -> HashMap<&str, (MetricType, Option<&str>)> {
    list.iter()
        .map(|m| {
            let kind = match PromType::try_from(m.r#type) {
                Ok(PromType::Counter) => MetricType::Counter,
                Ok(PromType::Gauge) => MetricType::Gauge,
                _ => MetricType::Untyped,
            };
            let help = (!m.help.is_empty()).then_some(m.help.as_str());
            (m.metric_family_name.as_str(), (kind, help))
        })
        .collect()
}

fn series_error(index: usize, name: Option<&str>, e: impl std::fmt::Display) -> Error {
    match name {
        Some(name) => Error::Invalid(format!("timeseries {index} ({name}): {e}")),
        None => Error::Invalid(format!("timeseries {index}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use datanexus_model::FieldValue;
    use datanexus_proto::prometheus::{Label, Sample, TimeSeries};

    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(labels: Vec<Label>, samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    fn body(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    fn decode_request(request: &WriteRequest) -> Result<Vec<Point>> {
        decode(&body(request), 1 << 20, &Limits::default())
    }

    #[test]
    fn samples_become_points_with_labels_types_and_help() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    vec![
                        label("job", "a"),
                        label(NAME_LABEL, "up"),
                        label("instance", "x:1"),
                    ],
                    &[(1.0, 1_700_000_000_000), (0.0, 1_700_000_015_000)],
                ),
                series(
                    vec![label(NAME_LABEL, "http_requests_total")],
                    &[(7.0, 1_700_000_000_123)],
                ),
            ],
            metadata: vec![MetricMetadata {
                r#type: PromType::Counter as i32,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
        };
        let points = decode_request(&request).unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].measurement, "up");
        assert_eq!(
            points[0].labels.iter().collect::<Vec<_>>(),
            [("instance", "x:1"), ("job", "a")]
        );
        assert_eq!(points[1].timestamp_ns, 1_700_000_015_000_000_000);
        assert_eq!(
            points[1].fields,
            [("value".to_owned(), FieldValue::F64(0.0))]
        );
        assert_eq!(points[0].kind, MetricType::Untyped);
        assert_eq!(points[2].kind, MetricType::Counter);
        assert_eq!(points[2].help.as_deref(), Some("Requests."));
        assert_eq!(points[2].timestamp_ns, 1_700_000_000_123_000_000);
    }

    #[test]
    fn staleness_markers_are_skipped_and_other_nans_kept() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let request = WriteRequest {
            timeseries: vec![series(
                vec![label(NAME_LABEL, "g")],
                &[(1.0, 1), (stale, 2), (f64::NAN, 3)],
            )],
            metadata: vec![],
        };
        let points = decode_request(&request).unwrap();
        let times: Vec<i64> = points.iter().map(|p| p.timestamp_ns).collect();
        assert_eq!(times, [1_000_000, 3_000_000]);
    }

    #[test]
    fn names_prometheus_does_not_allow_are_mapped_not_refused() {
        let points = decode_request(&WriteRequest {
            timeseries: vec![
                series(
                    vec![
                        label(NAME_LABEL, "http.server.duration"),
                        label("http.method", "GET"),
                        label("9zone", "a"),
                    ],
                    &[(1.5, 1)],
                ),
                series(vec![label(NAME_LABEL, "9lives")], &[(2.0, 1)]),
            ],
            metadata: vec![],
        })
        .unwrap();
        assert_eq!(points[0].measurement, "http_server_duration");
        let labels: Vec<_> = points[0].labels.iter().collect();
        assert_eq!(labels, [("_9zone", "a"), ("http_method", "GET")]);
        assert_eq!(points[1].measurement, "_9lives");
    }

    #[test]
    fn each_broken_rule_names_the_series() {
        let cases: Vec<(TimeSeries, &str)> = vec![
            (
                series(vec![label("job", "a")], &[(1.0, 1)]),
                "timeseries 0: no __name__ label",
            ),
            (
                series(vec![label(NAME_LABEL, "a"), label(NAME_LABEL, "b")], &[]),
                "__name__ occurs twice",
            ),
            (
                series(
                    vec![label(NAME_LABEL, "m"), label("__meta_x", "1")],
                    &[(1.0, 1)],
                ),
                "reserved",
            ),
            (
                series(
                    vec![label(NAME_LABEL, "m"), label("a", "1"), label("a", "2")],
                    &[],
                ),
                "timeseries 0 (m)",
            ),
            (
                series(vec![label(NAME_LABEL, "m")], &[(f64::INFINITY, 1)]),
                "not finite",
            ),
            (
                series(vec![label(NAME_LABEL, "m")], &[(1.0, i64::MAX)]),
                "out of range",
            ),
            (
                series(vec![label(NAME_LABEL, "m")], &[(1.0, -1)]),
                "out of range",
            ),
        ];
        for (s, want) in cases {
            let err = decode_request(&WriteRequest {
                timeseries: vec![s],
                metadata: vec![],
            })
            .unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
    }

    #[test]
    fn broken_bodies_are_invalid_and_oversized_ones_refused_before_decompression() {
        let limits = Limits::default();
        let err = decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20, &limits).unwrap_err();
        assert!(err.to_string().contains("invalid snappy block"), "{err}");
        // A valid snappy block that is not a WriteRequest.
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 8]).unwrap();
        let err = decode(&junk, 1 << 20, &limits).unwrap_err();
        assert!(err.to_string().contains("undecodable"), "{err}");
        // The header claims 1 GiB: refused from the header alone.
        let mut bomb = Vec::new();
        let mut n: u64 = 1 << 30;
        while n >= 0x80 {
            bomb.push((n as u8) | 0x80);
            n >>= 7;
        }
        bomb.push(n as u8);
        bomb.extend_from_slice(&[0; 16]);
        let err = decode(&bomb, 1 << 20, &limits).unwrap_err();
        assert!(
            matches!(err, Error::PayloadTooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
        assert!(
            decode(&body(&WriteRequest::default()), 1 << 20, &limits)
                .unwrap()
                .is_empty()
        );
    }
}
