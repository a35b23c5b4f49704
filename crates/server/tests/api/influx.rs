//! `POST /write` and `POST /api/v2/write`: InfluxDB line protocol over a real embedded
//! broker.

use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use datanexus_broker::{Broker, ConsumerOptions};
use datanexus_model::codec::decode_point;
use datanexus_model::{FieldValue, Point};
use datanexus_server::ServerOptions;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::support::{app, error_of, options, post, read_all, send, send_text};

/// Posts `body` as line protocol and expects `204` with an empty body.
async fn write_ok(app: &Router, path: &str, body: &str) {
    let (status, _, text) = send_text(app, post(path, "text/plain", body.to_owned())).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert!(text.is_empty(), "{text}");
}

/// The points on the metrics topic, sorted by measurement.
async fn points(broker: &dyn Broker, expected: usize) -> Vec<Point> {
    let mut points: Vec<Point> = read_all(broker, "metrics", expected)
        .await
        .iter()
        .map(|d| decode_point(&d.value).expect("decodes"))
        .collect();
    points.sort_by(|a, b| a.measurement.cmp(&b.measurement));
    points
}

/// Asserts that the metrics topic holds no record.
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

#[tokio::test]
async fn write_answers_204_once_points_with_tags_fields_and_timestamps_are_durable() {
    let (_dir, broker, app) = app(options()).await;
    let body = "# from telegraf\n\
                cpu,host=a,region=eu value=1.5,idle=2i,up=true 1700000000000000001\r\n\
                \n\
                mem,host=b used=7u,state=\"ok \\\"fine\\\"\" 1700000000000000002\n";
    write_ok(&app, "/write?db=telegraf&rp=autogen", body).await;

    let written = points(broker.as_ref(), 2).await;
    let cpu = &written[0];
    assert_eq!(cpu.measurement, "cpu");
    assert_eq!(
        cpu.labels.iter().collect::<Vec<_>>(),
        vec![("host", "a"), ("region", "eu")]
    );
    assert_eq!(
        cpu.fields,
        vec![
            ("value".to_owned(), FieldValue::F64(1.5)),
            ("idle".to_owned(), FieldValue::I64(2)),
            ("up".to_owned(), FieldValue::Bool(true)),
        ]
    );
    assert_eq!(cpu.timestamp_ns, 1_700_000_000_000_000_001);
    let mem = &written[1];
    assert_eq!(mem.labels.get("host"), Some("b"));
    assert_eq!(
        mem.fields,
        vec![
            ("used".to_owned(), FieldValue::U64(7)),
            ("state".to_owned(), FieldValue::Str("ok \"fine\"".into())),
        ]
    );
    assert_eq!(mem.timestamp_ns, 1_700_000_000_000_000_002);
}

#[tokio::test]
async fn v2_write_scales_timestamps_by_the_precision_parameter() {
    let (_dir, broker, app) = app(options()).await;
    write_ok(
        &app,
        "/api/v2/write?org=o&bucket=b&precision=s",
        "a v=1 1700000000\nb v=2 5",
    )
    .await;
    let written = points(broker.as_ref(), 2).await;
    assert_eq!(written[0].timestamp_ns, 1_700_000_000_000_000_000);
    assert_eq!(written[1].timestamp_ns, 5_000_000_000);

    let (status, _, json) = send(&app, post("/write?precision=h", "text/plain", "a v=1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(error_of(&json).contains("precision=\"h\""), "{json}");
}

#[tokio::test]
async fn a_bad_line_is_400_naming_its_number_and_nothing_is_written() {
    let (_dir, broker, app) = app(options()).await;
    let body = "a v=1\n# comment\nb v=oops\nc v=3\n";
    let (status, _, json) = send(&app, post("/write", "text/plain", body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let message = error_of(&json);
    assert!(message.starts_with("line 3: "), "{json}");
    assert!(message.contains("\"oops\""), "{json}");
    assert_nothing_written(broker.as_ref()).await;
}

#[tokio::test]
async fn an_empty_body_is_204_and_writes_nothing() {
    let (_dir, broker, app) = app(options()).await;
    write_ok(&app, "/write", "").await;
    write_ok(&app, "/api/v2/write", "\n# only comments\n\n").await;
    assert_nothing_written(broker.as_ref()).await;
}

#[tokio::test]
async fn more_lines_than_max_batch_metrics_is_400_naming_the_limit() {
    let (_dir, broker, app) = app(ServerOptions {
        max_batch_metrics: 2,
        ..options()
    })
    .await;
    let (status, _, json) = send(&app, post("/write", "text/plain", "a v=1\nb v=2\nc v=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(error_of(&json).contains("max_batch_metrics"), "{json}");
    assert_nothing_written(broker.as_ref()).await;
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let (_dir, broker, app) = app(options()).await;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(b"cpu,host=z value=42 1000\n")
        .expect("gzip");
    let request = Request::post("/api/v2/write?bucket=b")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(encoder.finish().expect("gzip")))
        .expect("request");
    let (status, _, text) = send_text(&app, request).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let written = points(broker.as_ref(), 1).await;
    assert_eq!(written[0].labels.get("host"), Some("z"));
    assert_eq!(written[0].fields[0].1, FieldValue::F64(42.0));
    assert_eq!(written[0].timestamp_ns, 1000);
}
