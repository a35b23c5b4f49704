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

#[path = "common/native.rs"]
mod native;
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
    eprintln!("series per worker: {held:?} of {SERIES}");
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

    // Event streams through the control node: results live, then replayed from the
    // workers (the results were placed on a worker by client id).
    let grpc = ctl.grpc_url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut stream = native::Native::connect(&grpc, "ctl-client", 0).await;
        for n in 1..=10 {
            stream.send(n).await;
        }
        let mut seqs = Vec::new();
        for _ in 0..10 {
            let r = stream.result().await;
            seqs.push(r.seq);
        }
        drop(stream);
        // Give the forwarder a flush (1 s), then replay everything after seq 0.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut again = native::Native::connect(&grpc, "ctl-client", 0).await;
        let mut replayed = Vec::new();
        for _ in 0..10 {
            replayed.push(again.result().await.seq);
        }
        seqs.sort_unstable();
        replayed.sort_unstable();
        assert_eq!(replayed, seqs);
    });

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

/// The node (index) jump hash gives series `s{i}` of `metric` among `n` nodes.
fn owner(metric: &str, series: u64, n: u32) -> usize {
    let labels =
        datanexus_model::point::Labels::new([("series".to_owned(), format!("s{series}"))]).unwrap();
    datanexus_model::jump_hash(datanexus_model::series::point_key(metric, &labels), n) as usize
}

/// The series (`series` label values) of `metric` on a worker.
fn series_held(addr: SocketAddr, metric: &str) -> Vec<String> {
    let latest = http_get_json(addr, "/internal/store/latest");
    latest
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["key"]["measurement"] == metric)
        .map(|l| {
            let labels = l["key"]["labels"].as_array().unwrap();
            assert_eq!(labels.len(), 1, "{l}");
            labels[0][1].as_str().unwrap().to_owned()
        })
        .collect()
}

fn rebalance(nodes: &[u16]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args(["control", "rebalance", "--nodes", &nodes.join(",")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rebalance failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn table_value(table: &str, name: &str) -> u64 {
    table
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {table}"))
}

#[test]
fn resizing_three_to_four_workers_moves_a_quarter_and_rebalance_puts_every_series_home() {
    const SERIES: u64 = 2_000;
    const POINTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let workers: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| worker(&dir.path().join(format!("w{i}")), *p))
        .collect();
    let ctl = control(&dir.path().join("control"), &ports[..3]);
    for from in (0..SERIES * POINTS).step_by(10_000) {
        write(ctl.http, &lines("resize", SERIES, from, from + 10_000));
    }
    wait_count(
        ctl.http,
        "resize",
        SERIES * POINTS,
        Duration::from_secs(120),
    );
    assert!(series_held(workers[3].http, "resize").is_empty());

    // Jump hash from 3 to 4 nodes moves about a quarter of the series.
    let moving = (0..SERIES)
        .filter(|s| owner("resize", *s, 3) != owner("resize", *s, 4))
        .count() as u64;
    assert!(
        (SERIES * 18 / 100..=SERIES * 32 / 100).contains(&moving),
        "{moving} of {SERIES} series change owner"
    );
    eprintln!("{moving} of {SERIES} series change owner from 3 to 4 workers");
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    let (status, body) = http_post_json(
        ctl.http,
        "/control/nodes",
        &format!(r#"{{"nodes": [{}]}}"#, urls.join(", ")),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        http_post_json(ctl.http, "/control/nodes", r#"{"nodes": ["ftp://x"]}"#).0,
        400
    );
    // New points go to the new owners; the old ones stay where they were, and every
    // answer still sees all of them.
    write(
        ctl.http,
        &lines("resize", SERIES, SERIES * POINTS, SERIES * (POINTS + 2)),
    );
    let total = SERIES * (POINTS + 2);
    wait_count(ctl.http, "resize", total, Duration::from_secs(120));
    assert!(!series_held(workers[3].http, "resize").is_empty());
    let paths = [
        "/metrics/resize/aggregate?quantiles=0.5,0.99&step=5s",
        "/metrics/resize?limit=3000&offset=2500&with_timestamps=true",
    ];
    // A moved series is on two nodes now (old points, new points): counted per node.
    let detail = http_get_json(ctl.http, "/datasets/detail/?name=resize");
    assert_eq!(detail["series"], SERIES + moving, "{detail}");
    let before: Vec<_> = paths.iter().map(|p| answer(ctl.http, p)).collect();

    let report = rebalance(&ports);
    assert_eq!(table_value(&report, "moved"), moving, "{report}");
    assert_eq!(
        table_value(&report, "samples deleted"),
        moving * POINTS,
        "{report}"
    );
    // Every series lives on exactly its owner now.
    let mut seen = std::collections::HashSet::new();
    for (i, w) in workers.iter().enumerate() {
        for s in series_held(w.http, "resize") {
            let n: u64 = s.trim_start_matches('s').parse().unwrap();
            assert_eq!(owner("resize", n, 4), i, "series {s} on worker {i}");
            assert!(seen.insert(s.clone()), "series {s} on two workers");
        }
    }
    assert_eq!(seen.len() as u64, SERIES);
    let after: Vec<_> = paths.iter().map(|p| answer(ctl.http, p)).collect();
    assert_eq!(after, before);
    assert_eq!(count(ctl.http, "resize"), Some(total));
    let detail = http_get_json(ctl.http, "/datasets/detail/?name=resize");
    assert_eq!(detail["series"], SERIES, "{detail}");
    assert_eq!(detail["samples"], total, "{detail}");
    // Nothing left to move: a second run is a no-op.
    let again = rebalance(&ports);
    assert_eq!(table_value(&again, "moved"), 0, "{again}");
}
