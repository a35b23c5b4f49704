//! Topic record encodings: a record's value is a `datanexus.v1.PointRecord` (topic
//! `metrics`) or `datanexus.v1.EventRecord` (topic `events`) in standard protobuf binary
//! encoding; see `crates/proto/proto/datanexus/v1/records.proto`. The record key of a
//! point is [`point_key`] as 8 big-endian bytes; of an event, its `source_id` in UTF-8.

use datanexus_proto::datanexus::v1 as pb;
use prost::Message;

use crate::event::StreamEvent;
use crate::point::{FieldValue, Labels, Point};
pub use crate::series::point_key;
use crate::{Error, Event, MetricType, Result};

fn kind_to_pb(kind: MetricType) -> pb::MetricKind {
    match kind {
        MetricType::Counter => pb::MetricKind::Counter,
        MetricType::Gauge => pb::MetricKind::Gauge,
        MetricType::Histogram => pb::MetricKind::Histogram,
        MetricType::Summary => pb::MetricKind::Summary,
        MetricType::Untyped => pb::MetricKind::Untyped,
    }
}

fn kind_from_pb(kind: i32) -> MetricType {
    match pb::MetricKind::try_from(kind) {
        Ok(pb::MetricKind::Counter) => MetricType::Counter,
        Ok(pb::MetricKind::Gauge) => MetricType::Gauge,
        Ok(pb::MetricKind::Histogram) => MetricType::Histogram,
        Ok(pb::MetricKind::Summary) => MetricType::Summary,
        Ok(pb::MetricKind::Untyped) | Err(_) => MetricType::Untyped,
    }
}

/// Encodes a point as a `PointRecord`, appending to `buf`.
pub fn encode_point(p: &Point, buf: &mut Vec<u8>) {
    let rec = pb::PointRecord {
        measurement: p.measurement.clone(),
        labels: p
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                name: k.to_owned(),
                value: v.to_owned(),
            })
            .collect(),
        fields: p
            .fields
            .iter()
            .map(|(name, v)| pb::Field {
                name: name.clone(),
                value: Some(match v {
                    FieldValue::F64(f) => pb::field::Value::F64(*f),
                    FieldValue::I64(i) => pb::field::Value::I64(*i),
                    FieldValue::U64(u) => pb::field::Value::U64(*u),
                    FieldValue::Bool(b) => pb::field::Value::Bool(*b),
                    FieldValue::Str(s) => pb::field::Value::Str(s.clone()),
                }),
            })
            .collect(),
        timestamp_ns: p.timestamp_ns,
        kind: kind_to_pb(p.kind) as i32,
        help: p.help.clone(),
    };
    rec.encode(buf).unwrap_or_default();
}

/// Decodes a `PointRecord`.
///
/// # Errors
/// [`Error::Decode`] for bytes that are not a well-formed point record.
pub fn decode_point(bytes: &[u8]) -> Result<Point> {
    let rec = pb::PointRecord::decode(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    let labels = Labels::new(rec.labels.into_iter().map(|l| (l.name, l.value)))?;
    let fields = rec
        .fields
        .into_iter()
        .map(|f| {
            let v = match f.value {
                Some(pb::field::Value::F64(x)) => FieldValue::F64(x),
                Some(pb::field::Value::I64(x)) => FieldValue::I64(x),
                Some(pb::field::Value::U64(x)) => FieldValue::U64(x),
                Some(pb::field::Value::Bool(x)) => FieldValue::Bool(x),
                Some(pb::field::Value::Str(x)) => FieldValue::Str(x),
                None => return Err(Error::Decode(format!("field {:?} has no value", f.name))),
            };
            Ok((f.name, v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Point {
        measurement: rec.measurement,
        labels,
        fields,
        timestamp_ns: rec.timestamp_ns,
        kind: kind_from_pb(rec.kind),
        help: rec.help,
    })
}

/// Encodes an event as an `EventRecord`, appending to `buf`.
pub fn encode_event(e: &Event, buf: &mut Vec<u8>) {
    let rec = pb::EventRecord {
        source_id: e.source_id.clone(),
        timestamp_ns: e.timestamp_ns,
        payload_json: serde_json::Value::Object(e.payload.clone()).to_string(),
        event_name: e
            .stream
            .as_ref()
            .map(|s| s.event_name.clone())
            .unwrap_or_default(),
        number: e.stream.as_ref().map_or(0, |s| s.number),
        reply_to: e
            .stream
            .as_ref()
            .map(|s| s.reply_to.clone())
            .unwrap_or_default(),
    };
    rec.encode(buf).unwrap_or_default();
}

/// Decodes an `EventRecord`.
///
/// # Errors
/// [`Error::Decode`] for malformed bytes or a payload that is not a JSON object.
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    let rec = pb::EventRecord::decode(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    let payload = match serde_json::from_str(&rec.payload_json) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err(Error::Decode("event payload is not a JSON object".into())),
        Err(e) => return Err(Error::Decode(format!("event payload: {e}"))),
    };
    let stream = (!rec.event_name.is_empty()).then_some(StreamEvent {
        event_name: rec.event_name,
        number: rec.number,
        reply_to: rec.reply_to,
    });
    Ok(Event {
        source_id: rec.source_id,
        timestamp_ns: rec.timestamp_ns,
        payload,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn field_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>()
                .prop_filter("nan != nan", |f| !f.is_nan())
                .prop_map(FieldValue::F64),
            any::<i64>().prop_map(FieldValue::I64),
            any::<u64>().prop_map(FieldValue::U64),
            any::<bool>().prop_map(FieldValue::Bool),
            ".{0,20}".prop_map(FieldValue::Str),
        ]
    }

    fn point() -> impl Strategy<Value = Point> {
        (
            "[a-z_][a-z0-9_]{0,20}",
            proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", ".{0,12}", 0..6),
            proptest::collection::btree_map("[a-z]{1,8}", field_value(), 1..4),
            any::<i64>(),
            prop_oneof![
                Just(MetricType::Counter),
                Just(MetricType::Gauge),
                Just(MetricType::Untyped),
                Just(MetricType::Histogram)
            ],
            proptest::option::of(".{0,30}"),
        )
            .prop_map(|(m, labels, fields, ts, kind, help)| Point {
                measurement: m,
                labels: Labels::new(labels).unwrap(),
                fields: fields.into_iter().collect(),
                timestamp_ns: ts,
                kind,
                help,
            })
    }

    proptest! {
        #[test]
        fn point_records_round_trip(p in point()) {
            let mut buf = Vec::new();
            encode_point(&p, &mut buf);
            prop_assert_eq!(decode_point(&buf).unwrap(), p);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_point(&bytes);
            let _ = decode_event(&bytes);
        }
    }

    #[test]
    fn event_records_round_trip() {
        let payload = serde_json::json!({"t": 1.5, "s": "x", "n": {"a": [1, 2]}});
        let mut e = Event::new("src".into(), 42, payload.as_object().unwrap().clone()).unwrap();
        let mut buf = Vec::new();
        encode_event(&e, &mut buf);
        assert_eq!(decode_event(&buf).unwrap(), e);
        e.stream = Some(StreamEvent {
            event_name: "sq".into(),
            number: -7,
            reply_to: "local".into(),
        });
        buf.clear();
        encode_event(&e, &mut buf);
        assert_eq!(decode_event(&buf).unwrap(), e);
    }

    #[test]
    fn point_key_ignores_fields_but_not_labels() {
        let a = Labels::new([("h".into(), "1".into())]).unwrap();
        let b = Labels::new([("h".into(), "2".into())]).unwrap();
        assert_ne!(point_key("m", &a), point_key("m", &b));
        assert_eq!(point_key("m", &a), point_key("m", &a.clone()));
    }
}
