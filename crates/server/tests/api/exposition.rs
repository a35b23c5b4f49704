//! `GET /metrics` (stored and drained), `GET /internal/metrics` and the telemetry the
//! front ends record.

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use datanexus_model::{MetricType, Point};
use datanexus_server::ServerOptions;
use tower::ServiceExt;

use super::queries::{labels, point};
use super::support::{app_with, get, options, post_json, send, send_text, store_points};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn typed(name: &str, l: &[(&str, &str)], value: f64, secs: i64, kind: MetricType) -> Point {
    Point::sample(name, labels(l), value, secs * 1_000_000_000).with_kind(kind)
}

/// The sample lines (no comments) of an exposition.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[tokio::test]
async fn exposition_renders_the_latest_stored_samples_and_summarised_observations() {
    let (_dir, backends, app) = app_with(options()).await;
    let mut points = vec![
        typed("requests", &[("code", "200")], 5.0, 1, MetricType::Counter),
        typed("requests", &[("code", "200")], 7.0, 2, MetricType::Counter),
        typed("temp", &[("room", "a \"b\"")], 21.5, 3, MetricType::Gauge),
    ];
    for (i, v) in [0.3, 0.7, 2.0, 20.0].iter().enumerate() {
        points.push(typed(
            "latency",
            &[("path", "/")],
            *v,
            10 + i as i64,
            MetricType::Histogram,
        ));
        points.push(typed("size", &[], *v, 10 + i as i64, MetricType::Summary));
    }
    // A series whose labels are a subset of another's: its histogram must not include
    // the other's observations.
    points.push(typed("latency", &[], 100.0, 5, MetricType::Histogram));
    store_points(backends.store.as_ref(), &points).await;

    let (status, headers, text) = send_text(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], TEXT_FORMAT);
    assert_eq!(
        samples(&text),
        [
            "latency_bucket{le=\"0.005\"} 0 5000",
            "latency_bucket{le=\"0.01\"} 0 5000",
            "latency_bucket{le=\"0.025\"} 0 5000",
            "latency_bucket{le=\"0.05\"} 0 5000",
            "latency_bucket{le=\"0.1\"} 0 5000",
            "latency_bucket{le=\"0.25\"} 0 5000",
            "latency_bucket{le=\"0.5\"} 0 5000",
            "latency_bucket{le=\"1\"} 0 5000",
            "latency_bucket{le=\"2.5\"} 0 5000",
            "latency_bucket{le=\"5\"} 0 5000",
            "latency_bucket{le=\"10\"} 0 5000",
            "latency_bucket{le=\"+Inf\"} 1 5000",
            "latency_sum 100 5000",
            "latency_count 1 5000",
            "latency_bucket{path=\"/\",le=\"0.005\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.01\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.025\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.05\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.1\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.25\"} 0 13000",
            "latency_bucket{path=\"/\",le=\"0.5\"} 1 13000",
            "latency_bucket{path=\"/\",le=\"1\"} 2 13000",
            "latency_bucket{path=\"/\",le=\"2.5\"} 3 13000",
            "latency_bucket{path=\"/\",le=\"5\"} 3 13000",
            "latency_bucket{path=\"/\",le=\"10\"} 3 13000",
            "latency_bucket{path=\"/\",le=\"+Inf\"} 4 13000",
            "latency_sum{path=\"/\"} 23 13000",
            "latency_count{path=\"/\"} 4 13000",
            "requests_total{code=\"200\"} 7 2000",
            "size{quantile=\"0.5\"} 1.35 13000",
            "size{quantile=\"0.9\"} 14.600000000000003 13000",
            "size{quantile=\"0.99\"} 19.459999999999994 13000",
            "size_sum 23 13000",
            "size_count 4 13000",
            "temp{room=\"a \\\"b\\\"\"} 21.5 3000",
        ]
    );
    for family in [
        "latency histogram",
        "requests_total counter",
        "size summary",
        "temp gauge",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {family}\n")).count(),
            1,
            "{text}"
        );
    }
    assert_eq!(text.matches("# HELP ").count(), 4, "{text}");
}

/// `GET /metrics?drain=true`, read in full.
async fn drain(app: &Router) -> String {
    let (status, headers, text) = send_text(app, get("/metrics?drain=true")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], TEXT_FORMAT);
    text
}

/// `GET /metrics?drain=true`, retried while the previous drain is still settling.
async fn drain_when_free(app: &Router) -> String {
    for _ in 0..1000 {
        let (status, _, text) = send_text(app, get("/metrics?drain=true")).await;
        if status != StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(status, StatusCode::OK, "{text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the drain stayed busy");
}

async fn ingest(app: &Router, body: &str) {
    let (status, _, json) = send(app, post_json("/metrics", body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn drained_samples_are_not_returned_by_the_next_drain() {
    let (_dir, _backends, app) = app_with(options()).await;
    ingest(
        &app,
        r#"[{"metric_name":"queue_len","value":3,"timestamp":10,"type":"gauge","help":"jobs waiting"},
            {"metric_name":"queue_len","value":4,"timestamp":20,"type":"gauge"},
            {"metric_name":"jobs","value":1,"labels":{"q":"a"},"timestamp":20,"type":"counter"}]"#,
    )
    .await;
    let first = drain(&app).await;
    assert!(first.contains("# HELP queue_len jobs waiting\n"), "{first}");
    assert_eq!(
        samples(&first),
        [
            "jobs_total{q=\"a\"} 1 20000",
            "queue_len 3 10000",
            "queue_len 4 20000"
        ]
    );

    assert_eq!(drain_when_free(&app).await, "");
    ingest(
        &app,
        r#"{"metric_name":"queue_len","value":5,"timestamp":30}"#,
    )
    .await;
    assert_eq!(samples(&drain_when_free(&app).await), ["queue_len 5 30000"]);
}

#[tokio::test]
async fn a_drain_whose_body_is_dropped_unread_returns_the_same_samples_next_time() {
    let (_dir, _backends, app) = app_with(options()).await;
    ingest(
        &app,
        r#"{"metric_name":"queue_len","value":3,"timestamp":10}"#,
    )
    .await;

    let response = app
        .clone()
        .oneshot(get("/metrics?drain=true"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);

    let again = drain_when_free(&app).await;
    assert_eq!(samples(&again), ["queue_len 3 10000"]);
    assert_eq!(drain_when_free(&app).await, "");
}

#[tokio::test]
async fn a_drain_body_left_unread_past_the_request_timeout_gives_its_records_back() {
    let short = ServerOptions {
        request_timeout: Duration::from_secs(1),
        ..options()
    };
    let (_dir, _backends, app) = app_with(short).await;
    ingest(
        &app,
        r#"{"metric_name":"queue_len","value":3,"timestamp":10}"#,
    )
    .await;
    let stalled = app
        .clone()
        .oneshot(get("/metrics?drain=true"))
        .await
        .expect("infallible");
    assert_eq!(stalled.status(), StatusCode::OK);

    // While the first body is still held unread, its records come back.
    assert_eq!(samples(&drain_when_free(&app).await), ["queue_len 3 10000"]);
    let late = axum::body::to_bytes(stalled.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(
        samples(std::str::from_utf8(&late).expect("utf-8")),
        ["queue_len 3 10000"]
    );
    assert_eq!(drain_when_free(&app).await, "");
}

#[tokio::test]
async fn a_second_concurrent_drain_is_refused_with_429() {
    let (_dir, _backends, app) = app_with(options()).await;
    ingest(
        &app,
        r#"{"metric_name":"queue_len","value":3,"timestamp":10}"#,
    )
    .await;
    let held = app
        .clone()
        .oneshot(get("/metrics?drain=true"))
        .await
        .expect("infallible");
    assert_eq!(held.status(), StatusCode::OK);

    let (status, headers, json) = send(&app, get("/metrics?drain=true")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let body = axum::body::to_bytes(held.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(
        samples(std::str::from_utf8(&body).expect("utf-8")),
        ["queue_len 3 10000"]
    );
}

#[tokio::test]
async fn internal_metrics_count_ingest_requests_records_errors_and_in_flight_records() {
    let (_dir, backends, app) = app_with(options()).await;
    ingest(
        &app,
        r#"[{"metric_name":"a","value":1},{"metric_name":"b","value":2}]"#,
    )
    .await;
    let (status, _, _) = send(
        &app,
        post_json("/metrics", r#"{"metric_name":"9x","value":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, post_json("/metrics", "{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let event = r#"{"sourceId":"s1","payload":{"t":1}}"#;
    let (status, _, _) = send(&app, post_json("/ingest", event)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = send(&app, get("/metrics/unknown")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    store_points(backends.store.as_ref(), &[point("cpu", &[], 1.0, 1)]).await;

    let (status, headers, text) = send_text(&app, get("/internal/metrics")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], TEXT_FORMAT);
    for line in [
        "datanexus_ingest_requests_total{api=\"http_metrics\"} 3",
        "datanexus_ingested_records_total{api=\"http_metrics\"} 2",
        "datanexus_ingest_requests_total{api=\"http_ingest\"} 1",
        "datanexus_ingested_records_total{api=\"http_ingest\"} 1",
        "datanexus_errors_total{component=\"ingest\",kind=\"invalid_input\"} 2",
        "datanexus_errors_total{component=\"query\",kind=\"not_found\"} 1",
        "datanexus_queue_depth{queue=\"inflight_records\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
