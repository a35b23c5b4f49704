//! Read endpoints over a real embedded store: `GET /metrics/{name}`,
//! `GET /metrics/{name}/aggregate`, `GET /data`, `GET /datasets/…`.

use axum::http::StatusCode;
use datanexus_model::{FieldValue, Labels, MetricType, Point};
use datanexus_store::StoredEvent;
use serde_json::json;

use super::support::{
    TOKEN, app_with, bearer, error_of, get, options, send, store_points, with_auth,
};

const SEC: i64 = 1_000_000_000;

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .expect("labels")
}

pub(super) fn point(name: &str, l: &[(&str, &str)], value: f64, secs: i64) -> Point {
    Point::sample(name, labels(l), value, secs * SEC).with_kind(MetricType::Gauge)
}

#[tokio::test]
async fn metric_values_come_back_in_time_order_paged_with_the_total() {
    let (_dir, backends, app) = app_with(options()).await;
    let mut points: Vec<Point> = (1..=5)
        .rev()
        .map(|i| point("cpu", &[("host", "a")], i as f64 * 10.0, i))
        .collect();
    points.push(point("cpu", &[("host", "b")], 99.0, 3));
    store_points(backends.store.as_ref(), &points).await;

    let (status, _, json) = send(&app, get("/metrics/cpu?label.host=a&limit=2&offset=1")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json,
        json!({"metric_name": "cpu", "values": [20.0, 30.0],
               "timestamp": "1970-01-01T00:00:03Z", "total": 5})
    );
    let (_, _, all) = send(&app, get("/metrics/cpu")).await;
    assert_eq!(all["total"], 6);
    assert_eq!(all["values"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn metric_values_with_timestamps_are_rfc3339_pairs_within_an_inclusive_range() {
    let (_dir, backends, app) = app_with(options()).await;
    let points: Vec<Point> = (1..=5).map(|i| point("mem", &[], i as f64, i)).collect();
    store_points(backends.store.as_ref(), &points).await;

    let uri = "/metrics/mem?start=1970-01-01T00:00:02Z&end=4&with_timestamps=true";
    let (status, _, json) = send(&app, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json["values"],
        json!([
            ["1970-01-01T00:00:02Z", 2.0],
            ["1970-01-01T00:00:03Z", 3.0],
            ["1970-01-01T00:00:04Z", 4.0]
        ])
    );
    assert_eq!(json["total"], 3);
}

#[tokio::test]
async fn other_fields_are_selected_with_the_field_parameter() {
    let (_dir, backends, app) = app_with(options()).await;
    let p = Point {
        fields: vec![
            ("free".into(), FieldValue::I64(7)),
            ("value".into(), FieldValue::F64(1.0)),
        ],
        ..point("disk", &[("dev", "sda")], 0.0, 1)
    };
    store_points(backends.store.as_ref(), &[p]).await;
    let (status, _, json) = send(&app, get("/metrics/disk?field=free")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["values"], json!([7.0]));
}

#[tokio::test]
async fn unknown_metrics_are_404_and_bad_parameters_are_400_naming_them() {
    let (_dir, backends, app) = app_with(options()).await;
    store_points(backends.store.as_ref(), &[point("cpu", &[], 1.0, 1)]).await;

    let (status, _, json) = send(&app, get("/metrics/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert!(error_of(&json).contains("\"nope\""), "{json}");
    let (status, _, json) = send(&app, get("/metrics/nope/aggregate")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");

    let cases = [
        ("/metrics/cpu?start=yesterday", "start=\"yesterday\""),
        ("/metrics/cpu?limit=100001", "limit=\"100001\""),
        ("/metrics/cpu?offset=x", "offset=\"x\""),
        (
            "/metrics/cpu?with_timestamps=maybe",
            "with_timestamps=\"maybe\"",
        ),
        ("/metrics/cpu?lables.host=a", "lables.host=\"a\""),
        ("/metrics/cpu?start=5&end=1", "is after end"),
        ("/metrics/cpu/aggregate?step=soon", "step=\"soon\""),
        ("/metrics/cpu/aggregate?quantiles=2", "quantiles=\"2\""),
        ("/data?limit=10001", "limit=\"10001\""),
        ("/data?end_time=tomorrow", "end_time=\"tomorrow\""),
        ("/datasets/detail/", "missing parameter name"),
    ];
    for (uri, needle) in cases {
        let (status, _, json) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {json}");
        assert!(error_of(&json).contains(needle), "{uri}: {json}");
    }
}

#[tokio::test]
async fn aggregates_report_the_summary_extra_quantiles_and_steps() {
    let (_dir, backends, app) = app_with(options()).await;
    let points: Vec<Point> = [(0, 1.0), (10, 2.0), (60, 3.0), (70, f64::NAN), (75, 4.0)]
        .iter()
        .map(|(secs, v)| point("load", &[("host", "a")], *v, *secs))
        .collect();
    store_points(backends.store.as_ref(), &points).await;

    let (status, _, json) = send(
        &app,
        get("/metrics/load/aggregate?label.host=a&quantiles=0.95&step=1m"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["metric_name"], "load");
    assert_eq!(
        (json["count"].clone(), json["sum"].clone()),
        (json!(4), json!(10.0))
    );
    assert_eq!(
        (
            json["mean"].clone(),
            json["min"].clone(),
            json["max"].clone()
        ),
        (json!(2.5), json!(1.0), json!(4.0))
    );
    assert_eq!(json["p50"], 2.5);
    let p95 = json["quantiles"]["0.95"].as_f64().expect("p95");
    assert!((p95 - 3.85).abs() < 1e-9, "{json}");
    assert!(json["timestamp"].is_string(), "{json}");
    let steps = json["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{json}");
    assert_eq!(steps[0]["timestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(
        (steps[0]["count"].clone(), steps[0]["sum"].clone()),
        (json!(2), json!(3.0))
    );
    assert_eq!(steps[1]["timestamp"], "1970-01-01T00:01:00Z");
    assert_eq!(
        (steps[1]["count"].clone(), steps[1]["max"].clone()),
        (json!(2), json!(4.0))
    );

    let (_, _, empty) = send(&app, get("/metrics/load/aggregate?start=1000")).await;
    assert_eq!(empty["count"], 0, "{empty}");
    assert_eq!(empty["mean"], json!(null), "{empty}");
    assert_eq!(empty["p99"], json!(null), "{empty}");
    assert!(empty.get("steps").is_none(), "{empty}");
}

fn event(id: &str, source: &str, secs: i64, t: f64) -> StoredEvent {
    StoredEvent {
        id: id.into(),
        source_id: source.into(),
        timestamp_ns: secs * SEC,
        payload: json!({"temperature": t})
            .as_object()
            .cloned()
            .expect("object"),
    }
}

#[tokio::test]
async fn data_returns_stored_events_oldest_first_paged() {
    let (_dir, backends, app) = app_with(options()).await;
    let events = [
        event("p0-2", "s1", 30, 3.0),
        event("p0-0", "s1", 10, 1.0),
        event("p0-1", "s1", 20, 2.0),
        event("p1-0", "s2", 15, 9.0),
    ];
    backends
        .store
        .as_ref()
        .expect("the test server has a store")
        .write_events(&events)
        .await
        .expect("write events");

    let (status, _, json) = send(&app, get("/data?source_id=s1&limit=2&offset=1")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json,
        json!({"total": 3, "limit": 2, "offset": 1, "data": [
            {"id": "p0-1", "sourceId": "s1", "timestamp": "1970-01-01T00:00:20Z",
             "payload": {"temperature": 2.0}},
            {"id": "p0-2", "sourceId": "s1", "timestamp": "1970-01-01T00:00:30Z",
             "payload": {"temperature": 3.0}}
        ]})
    );
    let (_, _, ranged) = send(&app, get("/data?start_time=15&end_time=20")).await;
    let ids: Vec<&str> = ranged["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["p1-0", "p0-1"]);
    assert_eq!(ranged["limit"], 100);
}

#[tokio::test]
async fn datasets_are_listed_detailed_and_ranged_with_or_without_trailing_slash() {
    let (_dir, backends, app) = app_with(options()).await;
    let mut cpu = point("cpu", &[("host", "a")], 1.0, 60);
    cpu.help = Some("cpu in %".into());
    let points = [
        cpu,
        point("cpu", &[("host", "b")], 2.0, 120),
        point("mem", &[], 3.0, 5),
    ];
    store_points(backends.store.as_ref(), &points).await;

    for uri in ["/datasets/list/", "/datasets/list"] {
        let (status, _, json) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        let names: Vec<&str> = json["datasets"]
            .as_array()
            .expect("datasets")
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        assert_eq!(names, ["cpu", "mem"], "{uri}");
    }
    let (status, _, detail) = send(&app, get("/datasets/detail?name=cpu")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        detail,
        json!({"name": "cpu", "type": "gauge", "help": "cpu in %", "fields": ["value"],
               "labels": ["host"], "series": 2, "samples": 2,
               "first": "1970-01-01T00:01:00Z", "last": "1970-01-01T00:02:00Z"})
    );
    let (status, _, range) = send(&app, get("/datasets/time-range/?name=cpu")).await;
    assert_eq!(status, StatusCode::OK, "{range}");
    assert_eq!(
        range,
        json!({"name": "cpu", "first": "1970-01-01T00:01:00Z", "last": "1970-01-01T00:02:00Z"})
    );
    let (status, _, json) = send(&app, get("/datasets/time-range?name=disk")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert!(error_of(&json).contains("\"disk\""), "{json}");
}

#[tokio::test]
async fn read_endpoints_require_a_bearer_token_when_configured() {
    let (_dir, backends, app) = app_with(with_auth(options())).await;
    store_points(backends.store.as_ref(), &[point("cpu", &[], 1.0, 1)]).await;
    for uri in [
        "/metrics/cpu",
        "/metrics",
        "/data",
        "/datasets/list/",
        "/internal/metrics",
    ] {
        let (status, _, json) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {json}");
    }
    let (status, _, json) = send(&app, bearer(get("/metrics/cpu"), TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}
