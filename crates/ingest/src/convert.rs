//! Conversions shared by the protocol handlers: a plain metric sample to a validated
//! [`Point`], batch checks with per-item error prefixes, and timestamps.
//!
//! Timestamp units, per protocol: `data_nexus.Metric.timestamp` is Unix seconds (0 =
//! now); `raftmetrics.v1.MetricEntry.timestamp` is a protobuf `Timestamp` (absent = now);
//! HTTP accepts an RFC 3339 string or a number of Unix seconds (fractions allowed;
//! absent = now).

use std::fmt;

use datanexus_model::point::VALUE_FIELD;
use datanexus_model::{FieldValue, Labels, Limits, MetricType, Point, time, validate};
use serde::de::{self, Deserializer, Visitor};

use crate::{Error, Result};

/// A plain metric sample as the seed protocols send it.
pub(crate) struct SeedSample<L> {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) kind: MetricType,
    pub(crate) labels: L,
    pub(crate) timestamp_ns: i64,
    pub(crate) help: Option<String>,
}

impl<L: IntoIterator<Item = (String, String)>> SeedSample<L> {
    /// Validates the sample (name, value, labels) and makes it a one-field point.
    ///
    /// # Errors
    /// The first broken rule, naming the offending name or value.
    pub(crate) fn into_point(self, limits: &Limits) -> datanexus_model::Result<Point> {
        validate::metric_name(&self.name, limits)?;
        validate::value(&self.name, self.value)?;
        let labels = Labels::new(self.labels)?;
        validate::labels(&labels, limits)?;
        Ok(Point {
            measurement: self.name,
            labels,
            fields: vec![(VALUE_FIELD.to_owned(), FieldValue::F64(self.value))],
            timestamp_ns: self.timestamp_ns,
            kind: self.kind,
            help: self.help.filter(|h| !h.is_empty()),
        })
    }
}

/// Checks a batch is neither empty nor larger than `max` items.
///
/// # Errors
/// [`Error::Invalid`] naming the count and the limit.
pub(crate) fn check_batch_len(len: usize, max: usize, what: &str, limit: &str) -> Result<()> {
    if len == 0 {
        return Err(Error::Invalid(format!(
            "empty batch: at least one of {what} is required"
        )));
    }
    if len > max {
        return Err(Error::Invalid(format!(
            "batch of {len} {what} exceeds the limit of {max} ({limit})"
        )));
    }
    Ok(())
}

/// Converts every item, passing each the receive time to use when it has no timestamp
/// of its own: `now_ns + index`, so that items of one request without timestamps stay
/// distinct samples (the store keeps one sample per series and nanosecond). The first
/// failure rejects the batch with an error prefixed by `what[index]: `.
///
/// # Errors
/// [`Error::Invalid`] for the first item that does not convert.
pub(crate) fn convert_batch<T, U>(
    items: Vec<T>,
    what: &str,
    now_ns: i64,
    mut convert: impl FnMut(T, i64) -> datanexus_model::Result<U>,
) -> Result<Vec<U>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let default_ns = now_ns.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
            convert(item, default_ns).map_err(|e| Error::Invalid(format!("{what}[{i}]: {e}")))
        })
        .collect()
}

/// `data_nexus` seconds to nanoseconds; 0 means `now_ns`.
///
/// # Errors
/// Negative or out-of-range seconds.
pub(crate) fn unix_seconds_or(secs: i64, now_ns: i64) -> datanexus_model::Result<i64> {
    if secs == 0 {
        Ok(now_ns)
    } else {
        time::from_unix_seconds(secs)
    }
}

/// A timestamp in a JSON body: an RFC 3339 string or Unix seconds, as nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonTimestamp(pub i64);

impl<'de> serde::Deserialize<'de> for JsonTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = JsonTimestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 string or a number of Unix seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<JsonTimestamp, E> {
        time::parse(v).map(JsonTimestamp).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<JsonTimestamp, E> {
        time::from_unix_seconds(v)
            .map(JsonTimestamp)
            .map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<JsonTimestamp, E> {
        let secs = i64::try_from(v).unwrap_or(i64::MAX);
        time::from_unix_seconds(secs)
            .map(JsonTimestamp)
            .map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<JsonTimestamp, E> {
        time::from_unix_seconds_f64(v)
            .map(JsonTimestamp)
            .map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        name: &str,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> SeedSample<Vec<(String, String)>> {
        SeedSample {
            name: name.into(),
            value,
            kind: MetricType::Counter,
            labels,
            timestamp_ns: 7,
            help: Some(String::new()),
        }
    }

    #[test]
    fn valid_sample_becomes_a_one_field_point_with_sorted_labels() {
        let labels = vec![("b".into(), "2".into()), ("a".into(), "1".into())];
        let p = sample("requests_total", 3.0, labels)
            .into_point(&Limits::default())
            .unwrap();
        assert_eq!(p.fields, vec![("value".to_owned(), FieldValue::F64(3.0))]);
        assert_eq!(
            p.labels.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "2")]
        );
        assert_eq!(
            (p.kind, p.timestamp_ns, p.help),
            (MetricType::Counter, 7, None)
        );
    }

    #[test]
    fn invalid_samples_name_the_offender() {
        let e = sample("9x", 1.0, vec![])
            .into_point(&Limits::default())
            .unwrap_err();
        assert!(e.to_string().contains("\"9x\""), "{e}");
        let e = sample("x", f64::INFINITY, vec![])
            .into_point(&Limits::default())
            .unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
        let e = sample("x", 1.0, vec![("__bad".into(), "v".into())])
            .into_point(&Limits::default())
            .unwrap_err();
        assert!(e.to_string().contains("\"__bad\""), "{e}");
    }

    #[test]
    fn batch_errors_carry_the_index() {
        let e = convert_batch(vec![1, 2, 3], "metrics", 0, |n, _| {
            if n == 3 {
                Err(datanexus_model::Error::UnknownMetricType("x".into()))
            } else {
                Ok(n)
            }
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("metrics[2]: unknown metric type"),
            "{e}"
        );
        assert!(
            check_batch_len(0, 5, "metrics", "max_batch_metrics")
                .unwrap_err()
                .to_string()
                .contains("empty batch")
        );
        let e = check_batch_len(6, 5, "metrics", "max_batch_metrics")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit of 5"), "{e}");
    }

    #[test]
    fn items_without_timestamps_get_distinct_receive_times() {
        let times = convert_batch(vec!['a', 'b', 'c'], "metrics", 1_000, |_, ns| Ok(ns)).unwrap();
        assert_eq!(times, vec![1_000, 1_001, 1_002]);
    }

    #[test]
    fn json_timestamps_accept_rfc3339_and_unix_seconds() {
        let parse = |s: &str| serde_json::from_str::<JsonTimestamp>(s).map(|t| t.0);
        assert_eq!(parse("\"1970-01-01T00:00:02Z\"").unwrap(), 2_000_000_000);
        assert_eq!(parse("3").unwrap(), 3_000_000_000);
        assert_eq!(parse("1.5").unwrap(), 1_500_000_000);
        let e = parse("\"yesterday\"").unwrap_err().to_string();
        assert!(e.contains("\"yesterday\""), "{e}");
        assert!(parse("-1").is_err());
        assert!(parse("true").is_err());
        assert_eq!(unix_seconds_or(0, 42), Ok(42));
    }
}
