//! HTTP limits: body size (also after gzip decompression), auth, backpressure,
//! concurrency and timeout.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use datanexus_server::ServerOptions;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use tower::ServiceExt;

use super::support::{TOKEN, app, bearer, error_of, get, options, post_json, send, with_auth};

const METRIC: &str = r#"{"metric_name":"cpu","value":1}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn gzip_request(path: &str, compressed: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(compressed))
        .expect("request")
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let (_dir, _broker, app) = app(ServerOptions {
        max_http_body_bytes: 1024,
        ..options()
    })
    .await;
    let big = format!(
        r#"{{"metric_name":"cpu","value":1,"help":"{}"}}"#,
        "x".repeat(2000)
    );
    let (status, _, json) = send(&app, post_json("/metrics", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(error_of(&json).contains("1024 bytes"), "{json}");
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_and_bombs_are_413() {
    let (_dir, _broker, app) = app(ServerOptions {
        max_http_body_bytes: 64 * 1024,
        ..options()
    })
    .await;
    let (status, _, json) = send(&app, gzip_request("/metrics", gzip(METRIC.as_bytes()))).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // 4 MiB of whitespace compresses to a few KiB: small on the wire, far over the limit.
    let mut bomb_plain = vec![b' '; 4 << 20];
    bomb_plain.extend_from_slice(METRIC.as_bytes());
    let bomb = gzip(&bomb_plain);
    assert!(
        bomb.len() < 64 * 1024,
        "the bomb itself must fit the limit ({} bytes)",
        bomb.len()
    );
    let (status, _, json) = send(&app, gzip_request("/metrics", bomb)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");

    let (status, _, json) = send(&app, gzip_request("/metrics", b"not gzip at all".to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
}

#[tokio::test]
async fn auth_requires_an_accepted_bearer_token_except_for_health() {
    let (_dir, _broker, app) = app(with_auth(options())).await;
    let (status, headers, json) = send(&app, post_json("/metrics", METRIC)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(error_of(&json).contains("missing bearer token"), "{json}");

    let (status, _, json) = send(&app, bearer(post_json("/metrics", METRIC), "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&json), "invalid bearer token");

    let (status, _, json) = send(&app, bearer(post_json("/metrics", METRIC), TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let (status, _, _) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&app, get("/ready")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_batch_over_the_inflight_budget_is_429_with_retry_after() {
    let (_dir, _broker, app) = app(ServerOptions {
        max_inflight_records: 1,
        ..options()
    })
    .await;
    let two = r#"[{"metric_name":"a","value":1},{"metric_name":"b","value":2}]"#;
    let (status, headers, json) = send(&app, post_json("/metrics", two)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(error_of(&json).contains("in-flight budget of 1"), "{json}");
    // The budget is released: a request that fits still succeeds.
    let (status, _, json) = send(&app, post_json("/metrics", METRIC)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

/// A request whose body never finishes holds its request slot.
fn stalled_request() -> (tokio::sync::mpsc::Sender<Bytes>, Request<Body>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    (
        tx,
        post_json("/metrics", "").map(|_| Body::from_stream(stream)),
    )
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_with_429() {
    let (_dir, _broker, app) = app(ServerOptions {
        max_concurrent_requests: 1,
        ..options()
    })
    .await;
    let (tx, request) = stalled_request();
    let mut first = Box::pin(app.clone().oneshot(request));
    assert!(
        futures::poll!(&mut first).is_pending(),
        "the stalled request holds the only slot"
    );

    let (status, headers, json) = send(&app, get("/ready")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(
        error_of(&json).contains("all 1 request slots are busy"),
        "{json}"
    );
    let (status, _, _) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK, "liveness is never shed");

    tx.send(Bytes::from_static(METRIC.as_bytes()))
        .await
        .expect("send body");
    drop(tx);
    let response = first.await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _, _) = send(&app, get("/ready")).await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn a_request_past_the_timeout_is_503() {
    let timeout = Duration::from_secs(5);
    let (_dir, _broker, app) = app(ServerOptions {
        request_timeout: timeout,
        ..options()
    })
    .await;
    let (_tx, request) = stalled_request();
    tokio::time::pause();
    let (status, _, json) = send(&app, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(error_of(&json).contains("timed out after 5s"), "{json}");
}
