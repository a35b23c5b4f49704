//! HTTP endpoints: `POST /metrics`, `POST /ingest`, `/health`, `/ready`, routing errors.

use axum::http::{StatusCode, header};
use datanexus_model::codec::{decode_event, decode_point};
use datanexus_model::{FieldValue, MetricType};

use std::sync::Arc;

use datanexus_broker::Broker;
use datanexus_server::{AppState, http_app};

use super::support::{
    Unavailable, app, backends, error_of, get, options, post, post_json, read_all, send, topology,
};

#[tokio::test]
async fn post_metric_records_it_durably_and_returns_its_id() {
    let (_dir, broker, app) = app(options()).await;
    let body = r#"{"metric_name":"cpu_usage","value":75.5,"labels":{"host":"a"},
                   "timestamp":"2025-04-11T12:00:00Z","type":"Gauge","help":"cpu in %"}"#;
    let (status, _, json) = send(&app, post_json("/metrics", body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["success"], true);
    assert_eq!(json["message"], "metric recorded");
    let id = json["id"].as_str().expect("id");

    let records = read_all(broker.as_ref(), "metrics", 1).await;
    assert_eq!(records[0].id.to_string(), id);
    let point = decode_point(&records[0].value).expect("decodes");
    assert_eq!(point.measurement, "cpu_usage");
    assert_eq!(
        point.fields,
        vec![("value".to_owned(), FieldValue::F64(75.5))]
    );
    assert_eq!(point.labels.get("host"), Some("a"));
    assert_eq!(point.timestamp_ns, 1_744_372_800_000_000_000);
    assert_eq!(point.kind, MetricType::Gauge);
    assert_eq!(point.help.as_deref(), Some("cpu in %"));
}

#[tokio::test]
async fn post_metrics_array_returns_one_distinct_id_per_metric() {
    let (_dir, _broker, app) = app(options()).await;
    let body = r#"[{"metric_name":"a","value":1},{"metric_name":"b","value":2,"timestamp":1712836800},
                   {"metric_name":"c","value":3}]"#;
    let (status, _, json) = send(&app, post_json("/metrics", body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["message"], "recorded 3 metrics");
    let ids: Vec<&str> = json["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| !id.is_empty()));
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 3, "{ids:?}");
}

#[tokio::test]
async fn metrics_of_one_request_without_timestamps_stay_distinct_samples() {
    let (_dir, broker, app) = app(options()).await;
    let body = r#"[{"metric_name":"dup","value":1},{"metric_name":"dup","value":2},
                   {"metric_name":"dup","value":3}]"#;
    let (status, _, json) = send(&app, post_json("/metrics", body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let stamps: std::collections::BTreeSet<i64> = read_all(broker.as_ref(), "metrics", 3)
        .await
        .iter()
        .map(|d| decode_point(&d.value).expect("point").timestamp_ns)
        .collect();
    assert_eq!(
        stamps.len(),
        3,
        "one sample each, not one overwriting the others: {stamps:?}"
    );
}

#[tokio::test]
async fn malformed_metric_bodies_are_400_naming_the_problem() {
    let (_dir, _broker, app) = app(options()).await;
    let cases = [
        (r#"{"metric_name": "cpu", "value": "#, "invalid JSON body"),
        (
            r#"{"metric_name":"cpu","value":"75.5"}"#,
            "value: invalid type: string \"75.5\"",
        ),
        (
            r#"{"metric_name":"9cpu","value":1}"#,
            "invalid metric name \"9cpu\"",
        ),
        (
            r#"{"metric_name":"cpu","value":1,"timestamp":"yesterday"}"#,
            "invalid timestamp \"yesterday\"",
        ),
        (
            r#"{"metric_name":"cpu","value":1,"type":"countr"}"#,
            "unknown metric type \"countr\"",
        ),
        (
            r#"{"metric_name":"cpu","value":1,"lables":{}}"#,
            "unknown field `lables`",
        ),
        (r#"{"value":1}"#, "missing field `metric_name`"),
        (
            r#"[{"metric_name":"ok","value":1},{"metric_name":"bad-name","value":1}]"#,
            "metrics[1]: invalid metric name",
        ),
        ("[]", "empty batch"),
    ];
    for (body, expected) in cases {
        let (status, _, json) = send(&app, post_json("/metrics", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {json}");
        assert!(
            error_of(&json).contains(expected),
            "{body} -> {json}, expected {expected:?}"
        );
    }
}

#[tokio::test]
async fn ingest_accepts_one_event_or_an_array() {
    let (_dir, broker, app) = app(options()).await;
    let one = r#"{"sourceId":"sensor-123","timestamp":"2025-04-11T12:00:00Z","payload":{"temperature":23.5}}"#;
    let (status, _, json) = send(&app, post_json("/ingest", one)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 1);
    let many = r#"[{"sourceId":"s1","payload":{"x":1}},{"sourceId":"s2","timestamp":1712836800,"payload":{}}]"#;
    let (status, _, json) = send(&app, post_json("/ingest", many)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 2);
    assert_eq!(json["ids"].as_array().map(Vec::len), Some(2));

    let records = read_all(broker.as_ref(), "events", 3).await;
    let mut events: Vec<_> = records
        .iter()
        .map(|r| decode_event(&r.value).expect("decodes"))
        .collect();
    events.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    assert_eq!(events[2].source_id, "sensor-123");
    assert_eq!(events[2].timestamp_ns, 1_744_372_800_000_000_000);
    assert_eq!(events[2].payload["temperature"], 23.5);
}

#[tokio::test]
async fn invalid_events_are_400() {
    let (_dir, _broker, app) = app(options()).await;
    let cases = [
        (
            r#"{"sourceId":"s","payload":[1]}"#,
            "payload: invalid type: sequence",
        ),
        (
            r#"{"sourceId":"","payload":{}}"#,
            "sourceId must not be empty",
        ),
        (r#"{"payload":{}}"#, "missing field `sourceId`"),
        (
            r#"[{"sourceId":"a","payload":{}},{"sourceId":"b","timestamp":"noon","payload":{}}]"#,
            "[1].timestamp",
        ),
    ];
    for (body, expected) in cases {
        let (status, _, json) = send(&app, post_json("/ingest", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {json}");
        assert!(
            error_of(&json).contains(expected),
            "{body} -> {json}, expected {expected:?}"
        );
    }
}

#[tokio::test]
async fn health_and_ready_report_ok() {
    let (_dir, _broker, app) = app(options()).await;
    let (status, _, json) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["message"], "datanexus is operational");
    let (status, _, json) = send(&app, get("/ready")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "ready");
}

#[tokio::test]
async fn ready_is_503_with_the_reason_when_the_broker_is_unavailable() {
    let (_dir, mut backends) = backends();
    topology(backends.broker.as_ref(), &options()).await;
    let unavailable: Arc<dyn Broker> = Arc::new(Unavailable(backends.broker));
    backends.broker = unavailable;
    let app = http_app(AppState::new(backends, options()).await.expect("state"));
    let (status, _, json) = send(&app, get("/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(
        error_of(&json),
        "not ready: broker unavailable: disk detached"
    );
    let (status, _, json) = send(
        &app,
        post_json("/metrics", r#"{"metric_name":"m","value":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(error_of(&json), "broker unavailable: disk detached");
}

#[tokio::test]
async fn ingest_after_the_broker_stopped_is_503() {
    let (_dir, broker, app) = app(options()).await;
    broker.stop().await.expect("stop");
    let (status, _, json) = send(
        &app,
        post_json("/metrics", r#"{"metric_name":"m","value":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
}

#[tokio::test]
async fn routing_and_media_type_errors_are_json() {
    let (_dir, _broker, app) = app(options()).await;
    let (status, _, json) = send(&app, get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&json), "no route for GET /nope");
    let (status, headers, json) = send(&app, get("/ingest")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&json), "method not allowed");
    assert!(headers.contains_key(header::ALLOW), "{headers:?}");
    let (status, _, json) = send(&app, post("/metrics", "text/plain", "cpu 1")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(error_of(&json).contains("\"text/plain\""), "{json}");
}
