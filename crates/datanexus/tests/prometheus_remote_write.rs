//! A real agent writes to Data Nexus: Prometheus (Debian's package) scrapes itself and
//! sends the samples with `remote_write` to `POST /api/v1/write`; they become queryable,
//! with the counter type and help from the metadata Prometheus sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Server;

#[test]
fn prometheus_remote_write_samples_are_queryable() {
    if !support::tool_available("prometheus", ".ci/run installs Debian's prometheus package") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);

    let prom_dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n",
            server.http
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");

    // `up` of Prometheus' own scrape: 1 at every scrape. Wait for three of them.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut up = serde_json::Value::Null;
    let mut typed = false;
    let mut last_exposition = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let (status, body) = support::http_get(
            server.http,
            "/metrics/up?label.job=prometheus&with_timestamps=true",
        );
        if status == 200 {
            up = serde_json::from_str(&body).unwrap();
        }
        if !typed {
            let (_, exposition) = support::http_get(server.http, "/metrics");
            typed = exposition.contains("# TYPE prometheus_http_requests_total counter");
            last_exposition = exposition;
        }
        if typed && up["total"].as_u64().is_some_and(|n| n >= 3) {
            break;
        }
    }
    let _ = prom.kill();
    let _ = prom.wait();

    let total = up["total"].as_u64().unwrap_or(0);
    assert!(total >= 3, "expected 3 `up` samples, got {up}");
    for pair in up["values"].as_array().unwrap() {
        assert_eq!(pair[1], 1.0, "{up}");
    }
    assert!(
        typed,
        "no counter metadata applied; last exposition:\n{}",
        last_exposition
            .lines()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A series Prometheus exports about itself, with its own labels.
    let (status, body) = support::http_get(
        server.http,
        &format!("/metrics/prometheus_build_info/aggregate?label.instance=127.0.0.1:{port}"),
    );
    assert_eq!(status, 200, "{body}");
    let agg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(agg["count"].as_u64().unwrap() >= 1, "{agg}");
    assert_eq!(agg["max"], 1.0, "{agg}");
    assert!(server.terminate());
}
