//! Events: `source_id`, timestamp and a JSON object payload (the data-flow-engine seed's
//! `POST /ingest` body). Events are stored raw and flattened: each numeric payload field
//! becomes a point whose measurement is the field name (made Prometheus-legal by
//! replacing illegal characters with `_`) with the label `source_id`.

use serde_json::{Map, Value};

use crate::point::{FieldValue, Labels, Point, VALUE_FIELD};
use crate::{Error, MetricType, Result};

/// Most payload fields of one event considered for flattening into series (so one
/// request cannot create unbounded series); the raw event keeps all of them.
pub const MAX_FLATTENED_FIELDS: usize = 64;

/// Longest accepted `source_id`, in bytes.
pub const MAX_SOURCE_ID_BYTES: usize = 256;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Who sent it (sensor, client); also the partitioning key.
    pub source_id: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The JSON object payload.
    pub payload: Map<String, Value>,
    /// Set for events from an event stream: what to process and where the result goes.
    pub stream: Option<StreamEvent>,
}

/// The processing request of a stream event (`nimbus.EventRequest` and the native
/// stream's `Event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// Processor name (case-insensitive), e.g. `sq`.
    pub event_name: String,
    /// Its argument.
    pub number: i32,
    /// Where the result goes: the receiving gateway's channel.
    pub reply_to: String,
}

impl Event {
    /// Builds a validated event.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] for an empty or too long `source_id`.
    pub fn new(source_id: String, timestamp_ns: i64, payload: Map<String, Value>) -> Result<Self> {
        if source_id.is_empty() {
            return Err(Error::InvalidEvent("sourceId must not be empty".into()));
        }
        if source_id.len() > MAX_SOURCE_ID_BYTES {
            return Err(Error::InvalidEvent(format!(
                "sourceId is {} bytes, the limit is {MAX_SOURCE_ID_BYTES}",
                source_id.len()
            )));
        }
        Ok(Event {
            source_id,
            timestamp_ns,
            payload,
            stream: None,
        })
    }

    /// The numeric payload fields as points (booleans and strings are not flattened).
    pub fn numeric_points(&self) -> Vec<Point> {
        let labels =
            Labels::new([("source_id".to_owned(), self.source_id.clone())]).unwrap_or_default();
        self.payload
            .iter()
            .take(MAX_FLATTENED_FIELDS)
            .filter_map(|(name, v)| {
                let n = v.as_f64().filter(|f| f.is_finite())?;
                Some(Point {
                    measurement: sanitize_metric_name(name),
                    labels: labels.clone(),
                    fields: vec![(VALUE_FIELD.to_owned(), FieldValue::F64(n))],
                    timestamp_ns: self.timestamp_ns,
                    kind: MetricType::Gauge,
                    help: None,
                })
            })
            .collect()
    }
}

/// Makes `name` a legal Prometheus metric name: illegal characters become `_`, and a
/// leading digit (or an empty name) gets a `_` prefix.
pub fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Makes `name` a legal Prometheus label name: characters other than ASCII letters,
/// digits and `_` become `_`, a leading digit (or an empty name) gets a `_` prefix, and
/// the reserved `__` prefix loses underscores until one is left.
pub fn sanitize_label_name(name: &str) -> String {
    sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` with the characters `allowed` rejects as `_`, no leading digit, no reserved
/// `__` prefix (names starting with `__` are for Prometheus' internal use), at most 256
/// bytes.
fn sanitize(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if out.is_empty() || out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    while out.starts_with("__") {
        out.remove(0);
    }
    out.truncate(256);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_made_legal() {
        assert_eq!(sanitize_label_name("tag key"), "tag_key");
        assert_eq!(sanitize_label_name("host-name"), "host_name");
        assert_eq!(sanitize_label_name("a:b.c"), "a_b_c");
        assert_eq!(sanitize_label_name("9x"), "_9x");
        assert_eq!(sanitize_label_name("__name__"), "_name__");
        assert_eq!(sanitize_label_name("Zürich"), "Z_rich");
        for name in ["tag key", "9x", "__name__", "", "é"] {
            crate::validate::label_name(&sanitize_label_name(name), &crate::Limits::default())
                .unwrap();
        }
    }

    #[test]
    fn flattens_numeric_payload_fields_into_points() {
        let payload = serde_json::json!({"temperature": 23.5, "humidity": 45, "label": "x", "ok": true, "cpu.load-1": 0.5});
        let e = Event::new("sensor-1".into(), 7, payload.as_object().unwrap().clone()).unwrap();
        let mut pts = e.numeric_points();
        pts.sort_by(|a, b| a.measurement.cmp(&b.measurement));
        let names: Vec<_> = pts.iter().map(|p| p.measurement.as_str()).collect();
        assert_eq!(names, ["cpu_load_1", "humidity", "temperature"]);
        assert_eq!(pts[2].fields[0].1, FieldValue::F64(23.5));
        assert_eq!(pts[2].labels.get("source_id"), Some("sensor-1"));
        assert_eq!(pts[2].timestamp_ns, 7);
    }

    #[test]
    fn rejects_empty_source_id() {
        assert!(Event::new(String::new(), 0, Map::new()).is_err());
        assert!(Event::new("x".repeat(257), 0, Map::new()).is_err());
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_metric_name("9x"), "_9x");
        assert_eq!(sanitize_metric_name(""), "_");
        assert_eq!(sanitize_metric_name("a b/c"), "a_b_c");
        assert_eq!(sanitize_metric_name("__name__"), "_name__");
        assert_eq!(
            crate::validate::metric_name(&sanitize_metric_name("__x"), &crate::Limits::default()),
            Ok(())
        );
    }
}
