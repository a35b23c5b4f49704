//! The seed gRPC messages (after tonic decoded them) to points.
//!
//! - `data_nexus.Metric`: `type` parsed case-insensitively (empty = untyped; unknown
//!   strings are rejected); `timestamp` is Unix seconds, 0 = the receive time.
//! - `raftmetrics.v1.MetricEntry`: `timestamp` absent = the receive time;
//!   `description` becomes the family's help text; the metric type is untyped.
//!
//! A batch is all or nothing: one invalid item rejects it, naming the index and the
//! problem (`metrics[3]: invalid metric name "9x": …`).

use datanexus_model::{Limits, MetricType, Point, time};
use datanexus_proto::data_nexus::Metric;
use datanexus_proto::raftmetrics::v1::MetricEntry;

use crate::Result;
use crate::convert::{SeedSample, check_batch_len, convert_batch, unix_seconds_or};

/// One `data_nexus.Metric`; `now_ns` replaces a zero timestamp.
///
/// # Errors
/// [`crate::Error::Invalid`] naming the problem.
pub fn data_nexus_metric(m: Metric, now_ns: i64, limits: &Limits) -> Result<Point> {
    Ok(metric_to_point(m, now_ns, limits)?)
}

/// The metrics of a `data_nexus.BatchMetrics` (at most `max_batch`).
///
/// # Errors
/// [`crate::Error::Invalid`] naming the index and the problem, or the limit.
pub fn data_nexus_batch(
    metrics: Vec<Metric>,
    limits: &Limits,
    max_batch: usize,
    now_ns: i64,
) -> Result<Vec<Point>> {
    check_batch_len(metrics.len(), max_batch, "metrics", "max_batch_metrics")?;
    convert_batch(metrics, "metrics", now_ns, |m, now_ns| {
        metric_to_point(m, now_ns, limits)
    })
}

/// One `raftmetrics.v1.MetricEntry`; `now_ns` replaces an absent timestamp.
///
/// # Errors
/// [`crate::Error::Invalid`] naming the problem.
pub fn raftmetrics_entry(e: MetricEntry, now_ns: i64, limits: &Limits) -> Result<Point> {
    Ok(entry_to_point(e, now_ns, limits)?)
}

/// The entries of a `raftmetrics.v1.MetricBatch` (at most `max_batch`).
///
/// # Errors
/// [`crate::Error::Invalid`] naming the index and the problem, or the limit.
pub fn raftmetrics_batch(
    entries: Vec<MetricEntry>,
    limits: &Limits,
    max_batch: usize,
    now_ns: i64,
) -> Result<Vec<Point>> {
    check_batch_len(entries.len(), max_batch, "entries", "max_batch_metrics")?;
    convert_batch(entries, "entries", now_ns, |e, now_ns| {
        entry_to_point(e, now_ns, limits)
    })
}

fn metric_to_point(m: Metric, now_ns: i64, limits: &Limits) -> datanexus_model::Result<Point> {
    let kind = MetricType::parse_lenient(&m.r#type)?;
    let timestamp_ns = unix_seconds_or(m.timestamp, now_ns)?;
    SeedSample {
        name: m.name,
        value: m.value,
        kind,
        labels: m.labels,
        timestamp_ns,
        help: None,
    }
    .into_point(limits)
}

fn entry_to_point(e: MetricEntry, now_ns: i64, limits: &Limits) -> datanexus_model::Result<Point> {
    let timestamp_ns = match e.timestamp {
        Some(ts) => time::from_seconds_nanos(ts.seconds, ts.nanos)?,
        None => now_ns,
    };
    SeedSample {
        name: e.metric_name,
        value: e.value,
        kind: MetricType::Untyped,
        labels: e.labels,
        timestamp_ns,
        help: e.description,
    }
    .into_point(limits)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datanexus_proto::prost_types::Timestamp;

    use super::*;

    fn metric(name: &str, kind: &str, timestamp: i64) -> Metric {
        let labels = HashMap::from([("host".to_owned(), "a".to_owned())]);
        Metric {
            name: name.into(),
            value: 1.5,
            r#type: kind.into(),
            timestamp,
            labels,
        }
    }

    #[test]
    fn converts_type_timestamp_and_labels() {
        let p = metric_to_point(metric("cpu", "GAUGE", 10), 99, &Limits::default()).unwrap();
        assert_eq!(p.kind, MetricType::Gauge);
        assert_eq!(p.timestamp_ns, 10_000_000_000);
        assert_eq!(p.labels.get("host"), Some("a"));
        let now = metric_to_point(metric("cpu", "", 0), 99, &Limits::default()).unwrap();
        assert_eq!((now.kind, now.timestamp_ns), (MetricType::Untyped, 99));
    }

    #[test]
    fn rejects_unknown_types_and_negative_timestamps() {
        let e = metric_to_point(metric("cpu", "countr", 0), 0, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("\"countr\""), "{e}");
        assert!(metric_to_point(metric("cpu", "", -5), 0, &Limits::default()).is_err());
    }

    #[test]
    fn batches_are_all_or_nothing_and_bounded() {
        let limits = Limits::default();
        let batch = vec![metric("a", "", 0), metric("b", "", 0)];
        assert_eq!(data_nexus_batch(batch, &limits, 2, 1).unwrap().len(), 2);
        let batch = vec![metric("a", "", 0), metric("9b", "", 0)];
        let e = data_nexus_batch(batch, &limits, 2, 1).unwrap_err();
        assert!(e.to_string().starts_with("metrics[1]: "), "{e}");
        let e = data_nexus_batch(vec![metric("a", "", 0); 3], &limits, 2, 1).unwrap_err();
        assert!(e.to_string().contains("limit of 2"), "{e}");
    }

    fn entry(timestamp: Option<Timestamp>) -> MetricEntry {
        MetricEntry {
            metric_name: "disk_free".into(),
            value: 2.0,
            timestamp,
            labels: [("dev".to_owned(), "sda".to_owned())].into(),
            description: Some("free bytes".into()),
        }
    }

    #[test]
    fn converts_timestamp_and_description() {
        let p = entry_to_point(
            entry(Some(Timestamp {
                seconds: 2,
                nanos: 5,
            })),
            0,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.timestamp_ns, 2_000_000_005);
        assert_eq!(p.help.as_deref(), Some("free bytes"));
        assert_eq!(p.labels.get("dev"), Some("sda"));
        assert_eq!(
            entry_to_point(entry(None), 77, &Limits::default())
                .unwrap()
                .timestamp_ns,
            77
        );
    }

    #[test]
    fn rejects_out_of_range_nanos() {
        let e = entry_to_point(
            entry(Some(Timestamp {
                seconds: 1,
                nanos: -1,
            })),
            0,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nanos"), "{e}");
    }
}
