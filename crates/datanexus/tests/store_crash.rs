//! 1,000,000 samples over 10,000 series over gRPC; the server is SIGKILLed during
//! ingestion and restarted. Clients then resend every batch that was not acknowledged
//! (what a real client does; the store is idempotent on (series, timestamp)). Afterwards
//! the total count over all series must equal exactly the number of distinct samples
//! acknowledged — nothing lost, nothing counted twice — and the aggregates of 100 random
//! series must equal references computed here from the generated values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use rand::Rng;
use support::Server;
use tokio::sync::Mutex;

const SERIES: u64 = 10_000;
const POINTS_PER_SERIES: u64 = 100;
const TOTAL: u64 = SERIES * POINTS_PER_SERIES;
const BATCH: u64 = 5_000;
const BATCHES: u64 = TOTAL / BATCH;
const CLIENTS: u64 = 4;
const NAME: &str = "store_crash_value";
const T0: i64 = 1_700_000_000;

/// Sample `n` (0..TOTAL): series `n % SERIES`, point `n / SERIES`.
fn value(series: u64, point: u64) -> f64 {
    // Deterministic, irregular, with repeats and negatives.
    let x = series
        .wrapping_mul(2_654_435_761)
        .wrapping_add(point.wrapping_mul(40_503))
        % 10_007;
    (x as f64 - 5_000.0) / 8.0
}

fn batch(b: u64) -> BatchMetrics {
    let metrics = (b * BATCH..(b + 1) * BATCH)
        .map(|n| {
            let (series, point) = (n % SERIES, n / SERIES);
            Metric {
                name: NAME.into(),
                value: value(series, point),
                r#type: "gauge".into(),
                timestamp: T0 + point as i64,
                labels: [("series".to_string(), series.to_string())].into(),
            }
        })
        .collect();
    BatchMetrics { metrics }
}

/// Sends batches `client, client + CLIENTS, …` not yet acknowledged; stops at the first
/// failure (the server was killed).
async fn send(url: String, client: u64, acked: Arc<Mutex<BTreeSet<u64>>>) {
    let Ok(c) = MetricsServiceClient::connect(url).await else {
        return;
    };
    let mut c = c.max_encoding_message_size(64 << 20);
    for b in (client..BATCHES).step_by(CLIENTS as usize) {
        if acked.lock().await.contains(&b) {
            continue;
        }
        match c.ingest_metrics(batch(b)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().event_ids.len() as u64, BATCH);
                acked.lock().await.insert(b);
            }
            Err(_) => return,
        }
    }
}

async fn http_json(server: &Server, path: &str) -> serde_json::Value {
    let addr = server.http;
    tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || support::http_get_json(addr, &path)
    })
    .await
    .unwrap()
}

/// Polls the total count until it reaches at least `want` (the sinker catches up) or
/// 120 s pass; returns the last count seen.
async fn wait_for_count(server: &Server, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut count = 0;
    let addr = server.http;
    let path = format!("/metrics/{NAME}/aggregate");
    while Instant::now() < deadline {
        let path = path.clone();
        let (status, body) = tokio::task::spawn_blocking(move || support::http_get(addr, &path))
            .await
            .unwrap();
        // 404 "unknown metric" until the replay stored the first sample (a kill before
        // the first flush leaves the store empty).
        assert!(
            status == 200 || status == 404,
            "aggregate answered {status}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        count = if status == 200 {
            v["count"].as_u64().unwrap_or(0)
        } else {
            0
        };
        if count >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    count
}

fn reference(series: u64) -> (f64, f64, f64, f64, Vec<f64>) {
    let mut vs: Vec<f64> = (0..POINTS_PER_SERIES).map(|p| value(series, p)).collect();
    vs.sort_by(f64::total_cmp);
    let sum: f64 = vs.iter().sum();
    let q = |q: f64| {
        let r = q * (vs.len() - 1) as f64;
        let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
        vs[lo] + (r - lo as f64) * (vs[hi] - vs[lo])
    };
    (
        sum,
        sum / vs.len() as f64,
        vs[0],
        vs[vs.len() - 1],
        vec![q(0.5), q(0.9), q(0.99)],
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_samples_survive_sigkill_with_exact_counts_and_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let url = server.grpc_url();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(send(url.clone(), c, acked.clone())))
        .collect();
    let kill_at = rand::rng().random_range(BATCHES / 10..BATCHES * 8 / 10) as usize;
    while acked.lock().await.len() < kill_at {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let before = acked.lock().await.len() as u64;
    eprintln!("SIGKILL after {before} of {BATCHES} batches were acknowledged");
    assert!(before < BATCHES, "the kill must land mid-ingestion");

    let server = Server::start(dir.path(), &[]);
    // Everything acknowledged before the kill is there (replayed from the log), plus at
    // most the batches that were in flight.
    // (The count only grows while the log is replayed, and never past what the log
    // holds, so the upper bound holds at any moment.)
    let count = wait_for_count(&server, before * BATCH).await;
    assert!(
        count >= before * BATCH && count <= (before + CLIENTS) * BATCH,
        "count {count} after restart, {before} batches acked"
    );

    // Clients resend what was never acknowledged; duplicates must not count twice.
    let url = server.grpc_url();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(send(url.clone(), c, acked.clone())))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(acked.lock().await.len() as u64, BATCHES);
    assert_eq!(
        wait_for_count(&server, TOTAL).await,
        TOTAL,
        "total count must equal the acknowledged samples"
    );

    let mut rng = rand::rng();
    for _ in 0..100 {
        let s = rng.random_range(0..SERIES);
        let v = http_json(
            &server,
            &format!("/metrics/{NAME}/aggregate?label.series={s}"),
        )
        .await;
        let (sum, mean, min, max, qs) = reference(s);
        assert_eq!(
            v["count"].as_u64(),
            Some(POINTS_PER_SERIES),
            "series {s}: {v}"
        );
        for (key, want) in [
            ("sum", sum),
            ("mean", mean),
            ("min", min),
            ("max", max),
            ("p50", qs[0]),
            ("p90", qs[1]),
            ("p99", qs[2]),
        ] {
            let got = v[key].as_f64().unwrap_or(f64::NAN);
            assert!(close(got, want), "series {s} {key}: got {got}, want {want}");
        }
    }
    assert!(server.terminate(), "clean shutdown");
}
