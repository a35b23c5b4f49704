//! 100,000 metrics in batches of 1,000 from 4 concurrent gRPC clients; the server is
//! SIGKILLed at a random moment. After a restart, the log must hold every metric of every
//! acknowledged batch, at the id it was acknowledged with, with no duplicates and no
//! corrupt records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datanexus_model::codec::decode_point;
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use datanexus_seglog::{Log, LogOptions};
use rand::Rng;
use support::Server;
use tokio::sync::Mutex;

const CLIENTS: u64 = 4;
const BATCHES_PER_CLIENT: u64 = 25;
const BATCH: u64 = 1_000;

fn batch(client: u64, n: u64) -> BatchMetrics {
    let metrics = (0..BATCH)
        .map(|i| {
            let seq = (client * BATCHES_PER_CLIENT + n) * BATCH + i;
            Metric {
                name: "crash_test_value".into(),
                value: seq as f64,
                r#type: "gauge".into(),
                timestamp: 1_700_000_000 + seq as i64,
                labels: [
                    ("client".to_string(), client.to_string()),
                    ("seq".to_string(), seq.to_string()),
                ]
                .into(),
            }
        })
        .collect();
    BatchMetrics { metrics }
}

/// Sends this client's batches until the server dies; returns acknowledged (seq → id).
async fn client(url: String, client: u64, acked: Arc<Mutex<HashMap<u64, String>>>) {
    let Ok(mut c) = MetricsServiceClient::connect(url).await else {
        return;
    };
    for n in 0..BATCHES_PER_CLIENT {
        let b = batch(client, n);
        let seqs: Vec<u64> = b.metrics.iter().map(|m| m.value as u64).collect();
        match c.ingest_metrics(b).await {
            Ok(resp) => {
                let ids = resp.into_inner().event_ids;
                assert_eq!(ids.len(), seqs.len(), "one id per metric");
                let mut acked = acked.lock().await;
                for (seq, id) in seqs.into_iter().zip(ids) {
                    assert!(!id.is_empty());
                    acked.insert(seq, id);
                }
            }
            Err(_) => return, // the server was killed
        }
    }
}

fn parse_id(id: &str) -> (u32, u64) {
    let rest = id.strip_prefix('p').expect("id starts with p");
    let (p, o) = rest.split_once('-').expect("p{partition}-{offset}");
    (p.parse().unwrap(), o.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_metric_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(url.clone(), c, acked.clone())))
        .collect();
    // Kill at a random moment during ingestion: once a random share of the metrics was
    // acknowledged (independent of how fast this machine is), plus a random few ms.
    let target = rand::rng().random_range(5_000..90_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().await.len() < target && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..20))).await;
    server.kill9();
    for t in tasks {
        t.await.expect("client task");
    }
    let acked = Arc::try_unwrap(acked).unwrap().into_inner();
    eprintln!(
        "killed at target {target} with {} metrics acknowledged",
        acked.len()
    );
    assert!(
        acked.len() < (CLIENTS * BATCHES_PER_CLIENT * BATCH) as usize,
        "the kill must land mid-ingestion"
    );

    // Restart (recovery runs), check it serves, then stop it cleanly and read the log.
    let server = Server::start(dir.path(), &[]);
    let mut c = MetricsServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let after = c
        .ingest_metrics(batch(CLIENTS, 0))
        .await
        .expect("ingest after restart")
        .into_inner();
    assert_eq!(after.event_ids.len(), BATCH as usize);
    assert!(server.terminate(), "clean shutdown");

    let log = Log::open(dir.path().join("log"), LogOptions::default()).unwrap();
    let mut found: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    for p in 0..log.partitions("metrics").unwrap() {
        let mut next = 0;
        loop {
            let recs = log.read("metrics", p, next, 10_000).unwrap();
            let Some(last) = recs.last() else { break };
            next = last.offset + 1;
            for r in recs {
                let point = decode_point(&r.value).expect("no corrupt record");
                let seq: u64 = point.labels.get("seq").unwrap().parse().unwrap();
                assert!(
                    found.insert(seq, (p, r.offset)).is_none(),
                    "metric {seq} stored twice"
                );
            }
        }
    }
    for (seq, id) in &acked {
        let at = found
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged metric {seq} ({id}) is missing"));
        assert_eq!(
            *at,
            parse_id(id),
            "metric {seq} is not at the id it was acknowledged with"
        );
    }
    // Everything found was sent by a client (no invented records).
    let sent_max = (CLIENTS + 1) * BATCHES_PER_CLIENT * BATCH;
    assert!(found.keys().all(|s| *s < sent_max));
    assert!(found.len() >= acked.len() + BATCH as usize);
}
