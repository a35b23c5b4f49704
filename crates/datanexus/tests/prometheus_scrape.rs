//! A real Prometheus server (Debian's `prometheus` package) scrapes `GET /metrics` and
//! stores the samples.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Server;

#[test]
fn prometheus_scrapes_and_stores_ingested_samples() {
    if !support::tool_available("prometheus", ".ci/run installs Debian's prometheus package") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let (status, body) = support::http_post_json(
        server.http,
        "/metrics",
        r#"[{"metric_name":"scrape_test_gauge","value":42.5,"labels":{"host":"a\"b"},"type":"gauge","help":"a gauge"},
            {"metric_name":"scrape_test_requests_total","value":7,"type":"counter"}]"#,
    );
    assert_eq!(status, 200, "{body}");

    let prom_dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: datanexus\n    static_configs:\n      - targets: ['{}']\n",
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

    let prom_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    let mut stored = false;
    while Instant::now() < deadline && !stored {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect(prom_addr).is_err() {
            continue;
        }
        let (status, body) = support::http_get(prom_addr, "/api/v1/query?query=scrape_test_gauge");
        last = body.clone();
        if status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        stored = v["data"]["result"].as_array().is_some_and(|r| {
            r.iter().any(|s| {
                s["metric"]["host"] == "a\"b"
                    && s["value"][1] == "42.5"
                    && s["metric"]["job"] == "datanexus"
            })
        });
    }
    let (_, counter) =
        support::http_get(prom_addr, "/api/v1/query?query=scrape_test_requests_total");
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        stored,
        "prometheus never stored scrape_test_gauge; last answer: {last}"
    );
    assert!(counter.contains("\"7\""), "counter not stored: {counter}");
    assert!(server.terminate());
}
