//! The decoders of untrusted request bodies, as the handlers run them, exposed for the
//! fuzz targets in `fuzz/` (and any tool that wants to validate a body offline).

use datanexus_model::lineproto::{self, Precision};
use datanexus_model::{Event, Limits, Point, time};
use datanexus_proto::data_nexus::BatchMetrics;
use datanexus_proto::prost::Message;

use crate::convert::convert_batch;
use crate::grpc::data_nexus::metric_to_point;
use crate::http::body::{OneOrMany, parse_one_or_many};
use crate::http::events::EventBody;
use crate::http::metrics::MetricBody;
use crate::{Error, Result};

/// A `POST /metrics` JSON body to points.
///
/// # Errors
/// [`Error::Invalid`] naming the field or value at fault.
pub fn metrics_json(body: &[u8], limits: &Limits) -> Result<Vec<Point>> {
    let now_ns = time::now_ns();
    match parse_one_or_many::<MetricBody>(body)? {
        OneOrMany::One(m) => Ok(vec![m.into_point(now_ns, limits)?]),
        OneOrMany::Many(items) => convert_batch(items, "metrics", now_ns, |m, now_ns| {
            m.into_point(now_ns, limits)
        }),
    }
}

/// A `POST /ingest` JSON body to events.
///
/// # Errors
/// [`Error::Invalid`] naming the field or value at fault.
pub fn events_json(body: &[u8]) -> Result<Vec<Event>> {
    let now_ns = time::now_ns();
    match parse_one_or_many::<EventBody>(body)? {
        OneOrMany::One(e) => Ok(vec![e.into_event(now_ns)?]),
        OneOrMany::Many(items) => {
            convert_batch(items, "events", now_ns, |e, now_ns| e.into_event(now_ns))
        }
    }
}

/// A `POST /write` (InfluxDB line protocol) body to points, one per line; lines
/// without a timestamp get the receive time.
///
/// # Errors
/// [`Error::Invalid`] naming the first bad line (`line 3: ...`).
pub fn line_protocol(body: &[u8], precision: Precision, limits: &Limits) -> Result<Vec<Point>> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let valid = body.get(..e.valid_up_to()).unwrap_or_default();
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        Error::Invalid(format!("line {line}: not valid UTF-8"))
    })?;
    lineproto::parse(text, precision, time::now_ns(), limits)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// A `POST /api/v1/write` body (snappy-compressed `prometheus.WriteRequest`) to points,
/// one per sample; the declared decompressed size is checked against
/// `max_decompressed_bytes` before decompressing.
///
/// # Errors
/// [`Error::PayloadTooLarge`] for a body that would decompress past the limit;
/// [`Error::Invalid`] for a broken body or the first series at fault.
pub fn remote_write(
    body: &[u8],
    max_decompressed_bytes: usize,
    limits: &Limits,
) -> Result<Vec<Point>> {
    crate::remote_write::decode(body, max_decompressed_bytes, limits)
}

/// An encoded `data_nexus.BatchMetrics` message to points.
///
/// # Errors
/// [`Error::Invalid`] for undecodable bytes or an invalid metric.
pub fn data_nexus_batch(bytes: &[u8], limits: &Limits) -> Result<Vec<Point>> {
    let batch = BatchMetrics::decode(bytes)
        .map_err(|e| Error::Invalid(format!("undecodable BatchMetrics: {e}")))?;
    let now_ns = time::now_ns();
    convert_batch(batch.metrics, "metrics", now_ns, |m, now_ns| {
        metric_to_point(m, now_ns, limits)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_handlers_accept_and_rejects_the_rest() {
        let limits = Limits::default();
        let pts = metrics_json(
            br#"[{"metric_name":"a","value":1},{"metric_name":"b","value":2}]"#,
            &limits,
        )
        .unwrap();
        assert_eq!(pts.len(), 2);
        let err = metrics_json(br#"{"metric_name":"9a","value":1}"#, &limits).unwrap_err();
        assert!(err.to_string().contains("9a"), "{err}");
        assert_eq!(
            events_json(br#"{"sourceId":"s","payload":{"t":1}}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(data_nexus_batch(&[0xff, 0xff], &limits).is_err());
        let pts = line_protocol(
            b"cpu,host=a value=1 5\nmem v=2i",
            Precision::Seconds,
            &limits,
        )
        .unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].timestamp_ns, 5_000_000_000);
        let err = line_protocol(b"a v=1\nb v=\xff", Precision::Nanoseconds, &limits).unwrap_err();
        assert_eq!(err.to_string(), "line 2: not valid UTF-8");
        let batch = BatchMetrics {
            metrics: vec![datanexus_proto::data_nexus::Metric {
                name: "m".into(),
                ..Default::default()
            }],
        };
        assert_eq!(
            data_nexus_batch(&batch.encode_to_vec(), &limits)
                .unwrap()
                .len(),
            1
        );
    }
}
