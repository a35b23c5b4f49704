//! The control node over worker nodes, with real processes: `serve --role control
//! --nodes …` in front of ordinary `serve` workers.
//!
//! - 300,000 samples over 3,000 series through the control node: each of 3 workers
//!   holds 25–42 % of the series, and the control node's answers (count, sum, min, max,
//!   mean, p50, p99, per-step buckets, raw pages, events) equal a single-node `serve`
//!   given the same data, exactly; a worker that is down makes queries 503 naming it,
//!   or a partial answer with `partial=true`; an unknown metric is a 404.
//! - A worker SIGKILLed during ingest and restarted 10 s later: every write to the
//!   control node succeeds, and afterwards every sample is stored exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Server, free_port, http_get, http_get_json, http_post_json};

const T0: i64 = 1_700_000_000_000_000_000;

/// A worker on a fixed HTTP port (so it can be restarted where the control node
/// expects it).
fn worker(dir: &Path, port: u16) -> Server {
    Server::start_at(dir, &format!("127.0.0.1:{port}"), &[], &[])
}

fn control(dir: &Path, workers: &[u16]) -> Server {
    let nodes: Vec<String> = workers
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    Server::start(dir, &["--role", "control", "--nodes", &nodes.join(",")])
}

/// Line protocol of samples `from..to` of `series` series: sample `n` is series
/// `n % series`, point `n / series`, with an irregular value.
fn lines(metric: &str, series: u64, from: u64, to: u64) -> String {
    let mut out = String::new();
    for n in from..to {
        let (s, p) = (n % series, n / series);
        let x = s
            .wrapping_mul(2_654_435_761)
            .wrapping_add(p.wrapping_mul(40_503))
            % 10_007;
        let v = (x as f64 - 5_000.0) / 8.0 + 0.1;
        out.push_str(&format!(
            "{metric},series=s{s} value={v} {}\n",
            T0 + (p as i64) * 1_000_000_000
        ));
    }
    out
}

fn write(addr: SocketAddr, body: &str) {
    let (status, answer) = http_post_json(addr, "/write", body);
    assert_eq!(status, 204, "POST /write to {addr}: {answer}");
}

fn count(addr: SocketAddr, metric: &str) -> Option<u64> {
    let (status, body) = http_get(addr, &format!("/metrics/{metric}/aggregate"));
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["count"].as_u64()
}

fn wait_count(addr: SocketAddr, metric: &str, want: u64, patience: Duration) {
    let deadline = Instant::now() + patience;
    let mut last = None;
    while Instant::now() < deadline {
        last = count(addr, metric);
        if last == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{addr}: count of {metric} is {last:?} after {patience:?}, want {want}");
}

/// Series of `metric` the worker's store holds.
fn series_on(addr: SocketAddr, metric: &str) -> u64 {
    let datasets = http_get_json(addr, "/internal/store/datasets");
    datasets
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["measurement"] == metric)
        .map(|d| d["series_count"].as_u64().unwrap())
        .sum()
}

/// The answer without the field that says when it was computed.
fn answer(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut v = http_get_json(addr, path);
    if let Some(o) = v.as_object_mut() {
        // Step timestamps are bucket starts (data) and stay.
        o.remove("timestamp");
    }
    v
}

#[test]
fn control_node_spreads_series_and_answers_as_one_node() {
    const SERIES: u64 = 3_000;
    const TOTAL: u64 = 300_000;
    const BATCH: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let workers: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| worker(&dir.path().join(format!("w{i}")), *p))
        .collect();
    let single = Server::start(&dir.path().join("single"), &[]);
    let ctl = control(&dir.path().join("control"), &ports);

    for from in (0..TOTAL).step_by(BATCH as usize) {
        let body = lines("spread", SERIES, from, from + BATCH);
        write(ctl.http, &body);
        write(single.http, &body);
    }
    for (i, source) in ["a", "b", "c", "d"].iter().enumerate() {
        for n in 0..25 {
            let event = format!(
                r#"{{"sourceId": "{source}", "timestamp": "2024-01-01T00:00:{:02}Z", "payload": {{"n": {}}}}}"#,
                n,
                i * 100 + n
            );
            for addr in [ctl.http, single.http] {
                let (status, body) = http_post_json(addr, "/ingest", &event);
                assert!(status == 200 || status == 202, "{status} {body}");
            }
        }
    }
    wait_count(ctl.http, "spread", TOTAL, Duration::from_secs(120));
    wait_count(single.http, "spread", TOTAL, Duration::from_secs(120));

    // Placement: every series on exactly one worker, each holding 25–42 %.
    let held: Vec<u64> = workers
        .iter()
        .map(|w| series_on(w.http, "spread"))
        .collect();
    assert_eq!(held.iter().sum::<u64>(), SERIES, "{held:?}");
    for h in &held {
        assert!(
            (SERIES * 25 / 100..=SERIES * 42 / 100).contains(h),
            "a worker holds {h} of {SERIES} series: {held:?}"
        );
    }

    // The same answers as one node, exactly (sums are exact, quantiles over all values).
    for path in [
        "/metrics/spread/aggregate?quantiles=0.5,0.99,0,1",
        "/metrics/spread/aggregate?quantiles=0.25&step=7s",
        "/metrics/spread/aggregate?label.series=s17",
        "/metrics/spread?limit=500&offset=1234&with_timestamps=true",
        "/metrics/spread?limit=1000&label.series=s2999",
        "/data?limit=30&offset=10",
        "/data?source_id=c",
        "/datasets/detail/?name=spread",
        "/datasets/time-range/?name=spread",
        "/metrics/n/aggregate?label.source_id=b&quantiles=0.5",
    ] {
        assert_eq!(answer(ctl.http, path), answer(single.http, path), "{path}");
    }
    let mean = answer(ctl.http, "/metrics/spread/aggregate");
    assert_eq!(mean["count"], TOTAL);
    // The exposition lists every series once.
    let (status, text) = http_get(ctl.http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("spread{")).count() as u64,
        SERIES
    );

    // 404 when no node knows the metric (the seed answered 500).
    let (status, body) = http_get(ctl.http, "/metrics/nothing_here/aggregate");
    assert_eq!(status, 404, "{body}");

    // The node list with each node's series.
    let nodes = http_get_json(ctl.http, "/control/nodes");
    let listed: Vec<u64> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["state"], "up", "{n}");
            assert_eq!(n["backlog"], 0, "{n}");
            n["series"].as_u64().unwrap()
        })
        .collect();
    // (Each node's series of every measurement: `spread` and the events' `n`.)
    assert_eq!(listed.iter().sum::<u64>(), SERIES + 4, "{nodes}");

    // A worker down: 503 naming it, or the others' answer with partial=true.
    let mut workers = workers;
    workers.remove(1).kill9();
    let down = format!("http://127.0.0.1:{}", ports[1]);
    let (status, body) = http_get(ctl.http, "/metrics/spread/aggregate");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&down), "{body}");
    let partial = http_get_json(ctl.http, "/metrics/spread/aggregate?partial=true");
    assert_eq!(partial["partial"], serde_json::json!([down]));
    let others = partial["count"].as_u64().unwrap();
    assert!(others < TOTAL && others > TOTAL / 2, "{partial}");
    // Ingest still works (the control node's log keeps the records for the node).
    write(ctl.http, &lines("spread", SERIES, TOTAL, TOTAL + 3_000));
}

#[test]
fn a_worker_killed_during_ingest_loses_nothing() {
    const SERIES: u64 = 1_000;
    const BATCH: u64 = 2_000;
    const BATCHES: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("w{i}"))).collect();
    let mut workers: Vec<Option<Server>> = ports
        .iter()
        .zip(&dirs)
        .map(|(p, d)| Some(worker(d, *p)))
        .collect();
    let ctl = control(&dir.path().join("control"), &ports);
    let addr = ctl.http;
    let writer = std::thread::spawn(move || {
        for b in 0..BATCHES {
            // Every write is acknowledged, whatever the workers do.
            write(addr, &lines("killed", SERIES, b * BATCH, (b + 1) * BATCH));
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    workers[2].take().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(10));
    let backlog = http_get_json(ctl.http, "/ready");
    let node = backlog["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["url"] == format!("http://127.0.0.1:{}", ports[2]))
        .unwrap()
        .clone();
    assert_eq!(node["state"], "down", "{backlog}");
    workers[2] = Some(worker(&dirs[2], ports[2]));
    writer.join().unwrap();
    wait_count(
        ctl.http,
        "killed",
        BATCHES * BATCH,
        Duration::from_secs(120),
    );
    // Exactly once: the workers' counts add up to the total (no sample on two nodes).
    let per_worker: Vec<u64> = workers
        .iter()
        .map(|w| count(w.as_ref().unwrap().http, "killed").unwrap_or(0))
        .collect();
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        BATCHES * BATCH,
        "{per_worker:?}"
    );
    let metrics = http_get(ctl.http, "/internal/metrics").1;
    assert!(
        metrics.contains(&format!(
            "datanexus_control_node_backlog{{node=\"http://127.0.0.1:{}\"}} 0",
            ports[2]
        )),
        "{metrics}"
    );
}
