//! `POST /api/v1/write`: Prometheus remote write 1.0 over a real embedded broker.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use datanexus_broker::{Broker, ConsumerOptions};
use datanexus_model::codec::decode_point;
use datanexus_model::{FieldValue, MetricType, Point};
use datanexus_proto::prometheus::metric_metadata::MetricType as PromType;
use datanexus_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use datanexus_proto::prost::Message;
use datanexus_server::{AppState, ServerOptions, http_app};

use super::support::{
    TOKEN, Unavailable, app, backends, bearer, error_of, options, read_all, send, send_text,
    topology, with_auth,
};

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(name: &str, labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    let mut all = vec![label("__name__", name)];
    all.extend(labels.iter().map(|(k, v)| label(k, v)));
    TimeSeries {
        labels: all,
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
    }
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(bytes)
        .expect("compress")
}

/// A request as Prometheus sends it.
fn remote_write(body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/write")
        .header(header::CONTENT_ENCODING, "snappy")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(Body::from(body))
        .expect("request")
}

fn encoded(request: &WriteRequest) -> Vec<u8> {
    snappy(&request.encode_to_vec())
}

async fn assert_nothing_written(broker: &dyn Broker) {
    let consumer = broker
        .subscribe("metrics", "empty-check", "c1", ConsumerOptions::default())
        .await
        .expect("subscribe");
    let batch = consumer
        .poll(10, Duration::from_millis(300))
        .await
        .expect("poll");
    assert!(batch.is_empty(), "{} records written", batch.len());
}

async fn points(broker: &dyn Broker, expected: usize) -> Vec<Point> {
    let mut points: Vec<Point> = read_all(broker, "metrics", expected)
        .await
        .iter()
        .map(|d| decode_point(&d.value).expect("decodes"))
        .collect();
    points.sort_by(|a, b| {
        (a.measurement.as_str(), a.timestamp_ns).cmp(&(b.measurement.as_str(), b.timestamp_ns))
    });
    points
}

#[tokio::test]
async fn samples_are_durable_with_labels_timestamps_and_metadata_when_204_answers() {
    let (_dir, broker, app) = app(options()).await;
    let request = WriteRequest {
        timeseries: vec![
            series(
                "up",
                &[("job", "node"), ("instance", "h:9100")],
                &[(1.0, 1_700_000_000_000), (0.0, 1_700_000_015_000)],
            ),
            series(
                "http_requests_total",
                &[("code", "200")],
                &[(1027.0, 1_700_000_000_500)],
            ),
            // A staleness marker only: nothing to store for this series.
            series("gone", &[], &[(f64::from_bits(0x7ff0_0000_0000_0002), 1)]),
        ],
        metadata: vec![MetricMetadata {
            r#type: PromType::Counter as i32,
            metric_family_name: "http_requests_total".into(),
            help: "Total requests.".into(),
            unit: String::new(),
        }],
    };
    let (status, _, text) = send_text(&app, remote_write(encoded(&request))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert!(text.is_empty(), "{text}");

    let written = points(broker.as_ref(), 3).await;
    assert_eq!(written.len(), 3);
    let counter = &written[0];
    assert_eq!(counter.measurement, "http_requests_total");
    assert_eq!(counter.kind, MetricType::Counter);
    assert_eq!(counter.help.as_deref(), Some("Total requests."));
    assert_eq!(counter.labels.get("code"), Some("200"));
    assert_eq!(counter.timestamp_ns, 1_700_000_000_500_000_000);
    assert_eq!(counter.fields[0].1, FieldValue::F64(1027.0));
    assert_eq!(written[1].measurement, "up");
    assert_eq!(written[1].labels.get("instance"), Some("h:9100"));
    assert_eq!(written[1].labels.get("__name__"), None);
    assert_eq!(written[1].timestamp_ns, 1_700_000_000_000_000_000);
    assert_eq!(written[2].fields[0].1, FieldValue::F64(0.0));
    assert_eq!(written[2].timestamp_ns, 1_700_000_015_000_000_000);
}

#[tokio::test]
async fn metadata_sent_in_its_own_request_types_later_samples() {
    let (_dir, broker, app) = app(options()).await;
    let metadata_only = WriteRequest {
        timeseries: vec![],
        metadata: vec![MetricMetadata {
            r#type: PromType::Gauge as i32,
            metric_family_name: "temperature".into(),
            help: "Degrees.".into(),
            unit: String::new(),
        }],
    };
    let (status, _, text) = send_text(&app, remote_write(encoded(&metadata_only))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let samples = WriteRequest {
        timeseries: vec![series("temperature", &[], &[(21.5, 1_700_000_000_000)])],
        metadata: vec![],
    };
    let (status, _, text) = send_text(&app, remote_write(encoded(&samples))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let written = points(broker.as_ref(), 1).await;
    assert_eq!(written[0].kind, MetricType::Gauge);
    assert_eq!(written[0].help.as_deref(), Some("Degrees."));
}

#[tokio::test]
async fn a_bad_series_is_refused_alone_and_the_others_are_written() {
    let (_dir, broker, app) = app(options()).await;
    let request = WriteRequest {
        timeseries: vec![
            series("good_one", &[], &[(1.0, 1_000)]),
            series("bad", &[], &[(f64::INFINITY, 1_000)]),
            series("good_two", &[], &[(2.0, 1_000), (3.0, 2_000)]),
            // (A name like `9bad` is mapped to `_9bad` now, as VictoriaMetrics accepts
            // it; a label given twice is still refused.)
            series("dup_label", &[("a", "1"), ("a", "2")], &[(1.0, 1_000)]),
        ],
        metadata: vec![],
    };
    let (status, _, json) = send(&app, remote_write(encoded(&request))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let message = error_of(&json);
    assert!(
        message.starts_with("2 series refused, first: timeseries 1 (bad)")
            && message.contains("the 3 samples of the other series were written"),
        "{message}"
    );
    let written = points(broker.as_ref(), 3).await;
    let names: Vec<&str> = written.iter().map(|p| p.measurement.as_str()).collect();
    assert_eq!(names, ["good_one", "good_two", "good_two"]);
}

#[tokio::test]
async fn every_error_case_has_its_status_and_writes_nothing() {
    let (_dir, broker, app) = app(ServerOptions {
        max_http_body_bytes: 4096,
        max_batch_metrics: 3,
        ..options()
    })
    .await;
    let one = |s: TimeSeries| {
        encoded(&WriteRequest {
            timeseries: vec![s],
            metadata: vec![],
        })
    };
    // A declared decompressed length of 1 GiB in the snappy header.
    let mut bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04];
    bomb.extend_from_slice(&[0; 64]);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            remote_write(b"not snappy at all \xff\xff\xff\xff\xff".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid snappy block",
        ),
        (
            remote_write(snappy(b"\xff\xff\xff")),
            StatusCode::BAD_REQUEST,
            "undecodable prometheus.WriteRequest",
        ),
        (
            remote_write(one(TimeSeries {
                labels: vec![label("job", "x")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
            })),
            StatusCode::BAD_REQUEST,
            "timeseries 0: no __name__ label",
        ),
        (
            remote_write(one(series("m1", &[("a", "1"), ("a", "2")], &[(1.0, 1)]))),
            StatusCode::BAD_REQUEST,
            "timeseries 0 (m1)",
        ),
        (
            remote_write(one(series("m", &[("__meta", "x")], &[(1.0, 1)]))),
            StatusCode::BAD_REQUEST,
            "reserved",
        ),
        (
            remote_write(one(series("m", &[], &[(f64::NEG_INFINITY, 1)]))),
            StatusCode::BAD_REQUEST,
            "inf",
        ),
        (
            remote_write(one(series(
                "m",
                &[],
                &[(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4)],
            ))),
            StatusCode::BAD_REQUEST,
            "max_batch_metrics",
        ),
        (
            remote_write(bomb),
            StatusCode::PAYLOAD_TOO_LARGE,
            "4096 bytes",
        ),
        (
            remote_write(vec![0; 5000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "4096 bytes",
        ),
        (
            Request::post("/api/v1/write")
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(one(series("m", &[], &[(1.0, 1)]))))
                .expect("request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-encoding",
        ),
        (
            Request::post("/api/v1/write")
                .header(header::CONTENT_ENCODING, "snappy")
                .header(
                    header::CONTENT_TYPE,
                    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                )
                .body(Body::from(one(series("m", &[], &[(1.0, 1)]))))
                .expect("request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "remote write 1.0",
        ),
    ];
    for (request, want_status, want_message) in cases {
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, want_status, "{json}");
        assert!(
            error_of(&json)
                .to_lowercase()
                .contains(&want_message.to_lowercase()),
            "{json} should mention {want_message}"
        );
    }
    assert_nothing_written(broker.as_ref()).await;
}

#[tokio::test]
async fn an_empty_request_is_204_and_the_endpoint_requires_the_token_when_configured() {
    let (_dir, broker, app) = app(with_auth(options())).await;
    let empty = encoded(&WriteRequest::default());
    let (status, _, json) = send(&app, remote_write(empty.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    let (status, _, text) = send_text(&app, bearer(remote_write(empty), TOKEN)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_nothing_written(broker.as_ref()).await;
}

#[tokio::test]
async fn an_unavailable_broker_is_503_so_prometheus_retries() {
    let (_dir, mut backends) = backends();
    topology(backends.broker.as_ref(), &options()).await;
    let unavailable: Arc<dyn Broker> = Arc::new(Unavailable(backends.broker));
    backends.broker = unavailable;
    let app: Router = http_app(AppState::new(backends, options()).await.expect("state"));
    let body = encoded(&WriteRequest {
        timeseries: vec![series("m", &[], &[(1.0, 1)])],
        metadata: vec![],
    });
    let (status, _, json) = send(&app, remote_write(body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
}
