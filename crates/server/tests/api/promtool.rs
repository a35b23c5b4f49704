//! `promtool check metrics` (parser and linter of the Prometheus project) accepts both
//! expositions: `GET /metrics` (stored and drained) and `GET /internal/metrics`.
//!
//! promtool exits 1 on a parse error and 3 on lint problems (a counter without `_total`,
//! a family without HELP, …); both fail this test. Without promtool the test fails under
//! CI (`.ci/run` installs Debian's `prometheus` package, which ships it) and is skipped
//! elsewhere.

use std::io::Write;
use std::process::{Command, Stdio};

use axum::Router;
use axum::http::StatusCode;
use datanexus_model::{MetricType, Point};

use super::queries::labels;
use super::support::{app_with, get, options, post_json, send, send_text, store_points};

const PROMTOOL: &str = "promtool";

/// Whether promtool can run; panics under CI when it cannot.
fn promtool_available() -> bool {
    let runs = Command::new(PROMTOOL)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed; .ci/run installs it (apt-get install prometheus)"
        );
        eprintln!("skipping: promtool is not installed (apt-get install prometheus)");
    }
    runs
}

/// Pipes `text` into `promtool check metrics` and asserts it exits 0.
fn check(what: &str, text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics rejected {what} ({}):\n{}{}\n--- input ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn typed(name: &str, l: &[(&str, &str)], value: f64, secs: i64, kind: MetricType) -> Point {
    Point::sample(name, labels(l), value, secs * 1_000_000_000).with_kind(kind)
}

/// Stored data with every metric type, escaping-hungry labels and help texts.
fn points() -> Vec<Point> {
    let tricky = [("path", "C:\\tmp\\\"quoted\"\nline two"), ("code", "200")];
    let mut points = vec![
        typed("http_requests_total", &tricky, 41.0, 1, MetricType::Counter),
        typed("http_requests_total", &tricky, 42.0, 2, MetricType::Counter),
        typed("jobs_done", &[("queue", "a")], 7.0, 2, MetricType::Counter),
        typed(
            "temperature_celsius",
            &[("room", "lab")],
            21.5,
            3,
            MetricType::Gauge,
        ),
        typed("free_ratio", &[], f64::NAN, 3, MetricType::Untyped),
    ];
    points[0].help = Some("Requests served.\nSecond line with a \\ backslash.".into());
    points[3].help = Some("Room temperature.".into());
    for (i, v) in [0.004, 0.3, 0.3, 7.0, 30.0].iter().enumerate() {
        let secs = 10 + i as i64;
        let l = [("handler", "/api")];
        points.push(typed(
            "request_duration_seconds",
            &l,
            *v,
            secs,
            MetricType::Histogram,
        ));
        points.push(typed(
            "response_size_bytes",
            &l,
            *v * 1e3,
            secs,
            MetricType::Summary,
        ));
    }
    points
}

async fn fetch(app: &Router, uri: &str) -> String {
    let (status, _, text) = send_text(app, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {text}");
    text
}

#[tokio::test]
async fn promtool_accepts_the_exposition_and_the_internal_metrics() {
    if !promtool_available() {
        return;
    }
    let (_dir, backends, app) = app_with(options()).await;
    store_points(backends.store.as_ref(), &points()).await;
    let body = r#"[{"metric_name":"queue_len","value":3,"type":"gauge","help":"Jobs waiting."},
                   {"metric_name":"jobs_total","value":1,"type":"counter","labels":{"q":"a\"b"}},
                   {"metric_name":"wait_seconds","value":0.2,"type":"histogram"},
                   {"metric_name":"wait_size_bytes","value":10,"type":"summary"}]"#;
    let (status, _, json) = send(&app, post_json("/metrics", body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, _, _) = send(&app, post_json("/metrics", r#"{"metric_name":"9"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let exposition = fetch(&app, "/metrics").await;
    assert!(
        exposition.contains("request_duration_seconds_bucket"),
        "{exposition}"
    );
    check("GET /metrics", &exposition);
    let drained = fetch(&app, "/metrics?drain=true").await;
    assert!(drained.contains("wait_seconds_bucket"), "{drained}");
    check("GET /metrics?drain=true", &drained);
    let internal = fetch(&app, "/internal/metrics").await;
    assert!(internal.contains("datanexus_errors_total"), "{internal}");
    check("GET /internal/metrics", &internal);
}
