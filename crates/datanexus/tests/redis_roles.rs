//! Data Nexus as separate processes on a real Redis (a private `redis-server` with
//! `appendfsync always`): gateways, processors and a store sharing the work through
//! Redis Streams, results fanned out over Redis pub/sub.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/native.rs"]
mod native;
#[path = "common/roles.rs"]
mod roles_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;

use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use native::Native;
use roles_support::{Deployment, SERIES, batch, wait_stored};
use support::Redis;

/// Short leases so that a killed processor's work moves within seconds.
const WORKER_ENV: &[(&str, &str)] = &[
    ("DATANEXUS_WORKERS__LEASE_TIMEOUT", "6s"),
    ("DATANEXUS_WORKERS__SESSION_TIMEOUT", "3s"),
];

fn deploy(redis: &Redis, processors: usize, gateways: usize) -> Deployment {
    let url = redis.url();
    Deployment::start(&["--broker", &url], WORKER_ENV, processors, gateways)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_processors_one_store_serve_every_client_and_metric() {
    let Some(redis) = Redis::start() else {
        return;
    };
    roles_support::clients_and_metrics(deploy(&redis, 2, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_loses_and_repeats_nothing_at_the_clients() {
    let Some(redis) = Redis::start() else {
        return;
    };
    roles_support::killed_processor(deploy(&redis, 2, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_unavailable_meanwhile_and_loses_nothing_acknowledged() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let d = deploy(&redis, 1, 1);
    let url = d.gateways[0].grpc_url();
    let acked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let (acked, unavailable) = (acked.clone(), unavailable.clone());
        tokio::spawn(async move {
            let mut c = MetricsServiceClient::connect(url).await.unwrap();
            let mut b = 0;
            let mut acked_batches = Vec::new();
            while !*stop_rx.borrow() {
                let started = Instant::now();
                match c.ingest_metrics(batch(b)).await {
                    Ok(_) => {
                        acked.fetch_add(SERIES, Ordering::Relaxed);
                        acked_batches.push(b);
                        b += 1;
                    }
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                        assert!(
                            started.elapsed() < Duration::from_secs(15),
                            "an outage must be answered, not hang ({:?})",
                            started.elapsed()
                        );
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            acked_batches
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = support::http_get(d.gateways[0].http, "/ready");
    assert_eq!(status, 503, "ready while redis is down: {body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_tx.send(true).unwrap();
    let acked_batches = sender.await.unwrap();
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "no call saw UNAVAILABLE while redis was down"
    );
    let acked = acked.load(Ordering::Relaxed);
    assert!(acked > 0 && acked_batches.len() as u64 * SERIES == acked);
    // Every acknowledged metric is queryable (a batch refused while Redis went down may
    // have been written in part: at most one batch more).
    let n = wait_stored(&d.store, acked, Duration::from_secs(120));
    assert!(
        n >= acked && n <= acked + SERIES,
        "stored {n}, acknowledged {acked}"
    );
    d.terminate();
}

/// A native acknowledged stream (`datanexus.v1.EventStream`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_to_the_other_gateway_gets_missed_then_new_results() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = deploy(&redis, 1, 2);
    let (a, b) = (d.gateways[0].grpc_url(), d.gateways[1].grpc_url());
    let mut s = Native::connect(&a, "mover", 0).await;
    for i in 1..=1000 {
        s.send(i).await;
    }
    let mut got = Vec::new();
    while got.len() < 300 {
        got.push(s.result().await);
    }
    let resume_after = got.last().unwrap().seq;
    drop(s);
    // Results of the events sent through A keep arriving while the client is away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut s = Native::connect(&b, "mover", resume_after).await;
    while got.len() < 1000 {
        got.push(s.result().await);
    }
    // New events through B are answered there too.
    for i in 1001..=1100 {
        s.send(i).await;
    }
    while got.len() < 1100 {
        got.push(s.result().await);
    }
    let numbers: Vec<i32> = got.iter().map(|r| r.number).collect();
    assert_eq!(
        numbers,
        (1..=1100).collect::<Vec<_>>(),
        "every result exactly once, in order, across the move"
    );
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    d.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nimbus_client_moving_gateways_resumes_after_what_it_was_handed() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = deploy(&redis, 1, 2);
    let (a, b) = (d.gateways[0].grpc_url(), d.gateways[1].grpc_url());
    let (tx, mut resp) = roles_support::nimbus(&a, "nimbus-mover").await;
    for i in 1..=1000 {
        tx.send(datanexus_proto::nimbus::EventRequest {
            event_name: "sq".into(),
            number: i,
        })
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 300 {
        got.push(resp.next().await.unwrap().unwrap().number);
    }
    drop((tx, resp));
    // Longer than the cursor-sharing period (1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (tx, mut resp) = roles_support::nimbus(&b, "nimbus-mover").await;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), resp.next()).await;
        match next {
            Ok(Some(Ok(r))) => got.push(r.number),
            _ => break,
        }
        if got.last() == Some(&1000) {
            break;
        }
    }
    drop(tx);
    // In order, no repeats; a gap only where results were handed to the broken
    // connection (between what the client read and the cursor), and then everything.
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "repeated or out of order: {got:?}"
    );
    assert_eq!(got.last(), Some(&1000), "the rest after the move");
    let after_move: Vec<i32> = got[300..].to_vec();
    let first = after_move.first().copied().unwrap_or(1001);
    assert!(
        after_move.iter().copied().eq(first..=1000),
        "one contiguous run after the move: {after_move:?}"
    );
    d.terminate();
}
