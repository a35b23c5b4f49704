//! The JSON ingest bodies: one object or an array of them.
//!
//! - `POST /metrics` (RaftMetrics seed): `{"metric_name": str, "value": number}` plus
//!   optional `labels` (object of strings), `timestamp` (RFC 3339 string or Unix
//!   seconds), `type` (counter | gauge | histogram | summary | untyped) and `help`
//!   (alias `description`).
//! - `POST /ingest` (data-flow-engine seed): `{"sourceId": str, "timestamp": RFC 3339 or
//!   Unix seconds (absent = now), "payload": {object}}` (`source_id` is an alias).
//!
//! Unknown fields are rejected, so a typo (`"lables"`) is an error instead of silently
//! dropped labels. Errors carry serde's message and the path of the offending field
//! (`invalid JSON body: [2].value: invalid type: string "1", expected f64 at …`). An
//! array is all or nothing; its items without a timestamp get distinct receive times.

use std::collections::BTreeMap;

use datanexus_model::{Event, Limits, MetricType, Point};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::convert::{JsonTimestamp, SeedSample, check_batch_len, convert_batch};
use crate::{Error, Result};

/// Decoded items, and whether the body was one object (not an array).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// The items, in body order.
    pub items: Vec<T>,
    /// The body was a single object (its answer names one id).
    pub one: bool,
}

/// A `POST /metrics` body to points; an array holds at most `max_batch` metrics.
///
/// # Errors
/// [`Error::Invalid`] naming the path, index or value at fault.
pub fn metrics(
    body: &[u8],
    limits: &Limits,
    max_batch: usize,
    now_ns: i64,
) -> Result<Decoded<Point>> {
    match parse_one_or_many::<MetricBody>(body)? {
        OneOrMany::One(m) => Ok(Decoded {
            items: vec![m.into_point(now_ns, limits)?],
            one: true,
        }),
        OneOrMany::Many(items) => {
            check_batch_len(items.len(), max_batch, "metrics", "max_batch_metrics")?;
            let items = convert_batch(items, "metrics", now_ns, |m, now_ns| {
                m.into_point(now_ns, limits)
            })?;
            Ok(Decoded { items, one: false })
        }
    }
}

/// A `POST /ingest` body to events; an array holds at most `max_batch` events.
///
/// # Errors
/// [`Error::Invalid`] naming the path, index or value at fault.
pub fn events(body: &[u8], max_batch: usize, now_ns: i64) -> Result<Decoded<Event>> {
    match parse_one_or_many::<EventBody>(body)? {
        OneOrMany::One(e) => Ok(Decoded {
            items: vec![e.into_event(now_ns)?],
            one: true,
        }),
        OneOrMany::Many(items) => {
            check_batch_len(items.len(), max_batch, "events", "max_batch_events")?;
            let items = convert_batch(items, "events", now_ns, |e, now_ns| e.into_event(now_ns))?;
            Ok(Decoded { items, one: false })
        }
    }
}

/// One metric in a `POST /metrics` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricBody {
    metric_name: String,
    value: f64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    timestamp: Option<JsonTimestamp>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, alias = "description")]
    help: Option<String>,
}

impl MetricBody {
    fn into_point(self, now_ns: i64, limits: &Limits) -> datanexus_model::Result<Point> {
        let kind = match &self.kind {
            Some(k) => MetricType::parse_lenient(k)?,
            None => MetricType::Untyped,
        };
        SeedSample {
            name: self.metric_name,
            value: self.value,
            kind,
            labels: self.labels,
            timestamp_ns: self.timestamp.map_or(now_ns, |t| t.0),
            help: self.help,
        }
        .into_point(limits)
    }
}

/// One event in a `POST /ingest` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventBody {
    #[serde(alias = "source_id")]
    source_id: String,
    #[serde(default)]
    timestamp: Option<JsonTimestamp>,
    payload: Map<String, Value>,
}

impl EventBody {
    fn into_event(self, now_ns: i64) -> datanexus_model::Result<Event> {
        Event::new(
            self.source_id,
            self.timestamp.map_or(now_ns, |t| t.0),
            self.payload,
        )
    }
}

/// One JSON object, or an array of them.
#[derive(Debug)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn parse_one_or_many<T: DeserializeOwned>(bytes: &[u8]) -> Result<OneOrMany<T>> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(Error::Invalid(
            "empty request body, expected a JSON object or array".into(),
        )),
        Some(b'[') => parse(bytes).map(OneOrMany::Many),
        Some(_) => parse(bytes).map(OneOrMany::One),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::Invalid(format!("invalid JSON body: {inner}"))
        } else {
            Error::Invalid(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| Error::Invalid(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Item {
        value: f64,
    }

    #[test]
    fn parses_one_object_or_an_array() {
        assert!(matches!(
            parse_one_or_many::<Item>(br#" {"value": 1}"#),
            Ok(OneOrMany::One(Item { value: 1.0 }))
        ));
        let many = parse_one_or_many::<Item>(br#"[{"value": 1}, {"value": 2}]"#).unwrap();
        assert!(matches!(many, OneOrMany::Many(v) if v.len() == 2));
    }

    #[test]
    fn errors_name_the_path_and_the_problem() {
        let e = parse_one_or_many::<Item>(br#"[{"value": 1}, {"value": "2"}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[1].value") && e.contains("invalid type: string \"2\""),
            "{e}"
        );
        let e = parse_one_or_many::<Item>(b"{\"value\": ")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid JSON body: "), "{e}");
        let e = parse_one_or_many::<Item>(br#"{"value": 1} x"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing characters"), "{e}");
        assert!(
            parse_one_or_many::<Item>(b"  ")
                .unwrap_err()
                .to_string()
                .contains("empty request body")
        );
    }

    #[test]
    fn decodes_what_the_handlers_accept_and_rejects_the_rest() {
        let limits = Limits::default();
        let pts = metrics(
            br#"[{"metric_name":"a","value":1},{"metric_name":"b","value":2}]"#,
            &limits,
            10,
            1,
        )
        .unwrap();
        assert_eq!((pts.items.len(), pts.one), (2, false));
        let err = metrics(br#"{"metric_name":"9a","value":1}"#, &limits, 10, 1).unwrap_err();
        assert!(err.to_string().contains("9a"), "{err}");
        let one = events(br#"{"sourceId":"s","payload":{"t":1}}"#, 10, 1).unwrap();
        assert_eq!((one.items.len(), one.one), (1, true));
        let err = events(
            br#"[{"sourceId":"s","payload":{}},{"sourceId":"s","payload":{}}]"#,
            1,
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_batch_events"), "{err}");
    }
}
