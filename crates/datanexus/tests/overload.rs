//! Overload with bounded memory: 200 connections send HTTP JSON batches as fast as they
//! can to a `serve` with a small in-flight byte budget. The excess is answered 429 at
//! once (not buffered), every sample of a 2xx answer is stored exactly once, and the
//! server's peak RSS stays under a bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::process::Command;

use support::{Server, http_get_json};

#[test]
fn two_hundred_connections_over_the_budget_get_429_and_memory_stays_bounded() {
    const BUDGET: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        dir.path(),
        &[],
        &[
            ("DATANEXUS_LIMITS__MAX_HTTP_BODY_BYTES", "4194304"),
            ("DATANEXUS_LIMITS__MAX_GRPC_MESSAGE_BYTES", "4194304"),
            ("DATANEXUS_LIMITS__MAX_INFLIGHT_BYTES", &BUDGET.to_string()),
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args([
            "bench",
            "--workload",
            "http-json",
            "--http-addr",
            &server.http.to_string(),
            "--clients",
            "200",
            "--batch",
            "5000",
            "--metrics",
            "2000000",
            "--series",
            "10000",
            "--duration",
            "60s",
            "--verify-timeout",
            "300s",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let acknowledged = report["acknowledged"].as_u64().unwrap();
    let errors = report["errors"].as_u64().unwrap();
    let ok = report["requests_ok"].as_u64().unwrap();
    // Overloaded: part of the requests were refused, with 429, and part accepted.
    assert!(errors > 0 && ok > 0, "{report}");
    let first = report["first_error"].as_str().unwrap_or_default();
    assert!(first.contains("429"), "{report}");
    // Every acknowledged sample is stored, exactly once (a refused batch left nothing).
    assert!(report["verify_error"].is_null(), "{report}");
    let stored = http_get_json(server.http, "/metrics/bench/aggregate");
    assert_eq!(stored["count"].as_u64(), Some(acknowledged), "{report}");
    // Memory: bodies in flight never passed the budget (the gauge is back to 0), and
    // the process stayed far below what 200 bodies of 5,000 samples would hold (without
    // the byte budget this run accepts all 400 requests, buffers them for seconds and
    // peaks at ~630 MiB; with it ~210 MiB, debug build).
    let internal = support::http_get(server.http, "/internal/metrics").1;
    assert!(
        internal.contains("datanexus_queue_depth{queue=\"inflight_bytes\"} 0"),
        "{internal}"
    );
    let peak = server.peak_rss();
    eprintln!(
        "overload: {ok} requests accepted ({acknowledged} samples), {errors} refused; peak RSS {} MiB",
        peak >> 20
    );
    assert!(peak < 400 << 20, "peak RSS {} MiB", peak >> 20);
}
