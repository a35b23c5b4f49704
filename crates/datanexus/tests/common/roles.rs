//! What the multi-process tests share, whatever the broker: a deployment of roles as
//! separate `datanexus serve` processes, stream and metric clients, and the scenarios
//! both the Redis and the Kafka tests run.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::Server;
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// The processes of one deployment, each with its own data directory.
pub struct Deployment {
    _dirs: Vec<tempfile::TempDir>,
    pub store: Server,
    pub processors: Vec<Server>,
    pub gateways: Vec<Server>,
}

impl Deployment {
    /// Starts a store, `processors` processors and `gateways` gateways with `args`
    /// (the broker and fan-out flags) and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)], processors: usize, gateways: usize) -> Self {
        let mut dirs = Vec::new();
        let mut next = |role: &str| {
            let dir = tempfile::tempdir().unwrap();
            let mut all = vec!["--role", role];
            all.extend_from_slice(args);
            let server = Server::start_env(dir.path(), &all, env);
            dirs.push(dir);
            server
        };
        let store = next("store");
        let processors = (0..processors).map(|_| next("processor")).collect();
        let gateways = (0..gateways).map(|_| next("gateway")).collect();
        Deployment {
            _dirs: dirs,
            store,
            processors,
            gateways,
        }
    }

    /// Stops every process gracefully; each must exit cleanly.
    pub fn terminate(self) {
        for s in self
            .gateways
            .into_iter()
            .chain(self.processors)
            .chain([self.store])
        {
            assert!(s.terminate());
        }
    }
}

pub async fn nimbus(
    url: &str,
    client_id: &str,
) -> (mpsc::Sender<EventRequest>, Streaming<EventResponse>) {
    let mut c = NimbusServiceClient::connect(url.to_owned()).await.unwrap();
    let (tx, rx) = mpsc::channel(16_384);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("client_id", client_id.parse().unwrap());
    let resp = c.process_event(req).await.unwrap().into_inner();
    (tx, resp)
}

/// Streams `sq(1..=n)` as `client_id`; returns how often each number was answered,
/// checking every answer is the square of its number.
pub async fn stream_client(
    url: String,
    client_id: String,
    numbers: std::ops::RangeInclusive<i32>,
    answered: Arc<AtomicU64>,
) -> BTreeMap<i32, u32> {
    let n = numbers.clone().count();
    let (tx, mut resp) = nimbus(&url, &client_id).await;
    let sender = tokio::spawn(async move {
        for i in numbers {
            tx.send(EventRequest {
                event_name: "sq".into(),
                number: i,
            })
            .await
            .unwrap();
        }
        tx
    });
    let mut seen: BTreeMap<i32, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.len() < n && Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(60), resp.next()).await;
        let Ok(Some(Ok(r))) = next else {
            panic!(
                "{client_id}: stream ended or stalled after {} answers: {next:?}",
                seen.len()
            );
        };
        assert_eq!(r.event_name, "sq", "{client_id}: {r:?}");
        assert_eq!(
            i64::from(r.result),
            i64::from(r.number) * i64::from(r.number),
            "{client_id}: {r:?}"
        );
        *seen.entry(r.number).or_default() += 1;
        answered.fetch_add(1, Ordering::Relaxed);
    }
    // Anything late (a duplicate) would arrive now.
    if let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_millis(500), resp.next()).await {
        *seen.entry(r.number).or_default() += 1;
    }
    drop(sender.await.unwrap());
    seen
}

pub fn assert_exactly_once(
    client: &str,
    seen: &BTreeMap<i32, u32>,
    numbers: std::ops::RangeInclusive<i32>,
) {
    let foreign: Vec<&i32> = seen.keys().filter(|k| !numbers.contains(k)).collect();
    let missing: Vec<i32> = numbers.filter(|i| !seen.contains_key(i)).collect();
    let twice: Vec<(&i32, &u32)> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        foreign.is_empty() && missing.is_empty() && twice.is_empty(),
        "{client}: {} answers to other clients' events (first {:?}), {} missing (first {:?}), \
         {} answered more than once (first {:?})",
        foreign.len(),
        foreign.iter().take(10).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>()
    );
}

/// The numbers client `i` sends: its own range of `events` numbers, distinct from every
/// other client's (so an answer routed to the wrong client is caught), all with
/// squares that fit an `i32`.
pub fn numbers_of(i: usize, events: i32) -> std::ops::RangeInclusive<i32> {
    let first = i32::try_from(i).unwrap() * events - 24_999;
    first..=first + events - 1
}

pub const METRIC: &str = "roles_value";
pub const SERIES: u64 = 1000;

/// Batch `b` of 1,000 metrics: series `0..1000` at second `T0 + b` (all distinct).
pub fn batch(b: u64) -> BatchMetrics {
    BatchMetrics {
        metrics: (0..SERIES)
            .map(|s| Metric {
                name: METRIC.into(),
                value: (s + b) as f64,
                r#type: "gauge".into(),
                timestamp: 1_700_000_000 + i64::try_from(b).unwrap(),
                labels: [("series".to_string(), s.to_string())].into(),
            })
            .collect(),
    }
}

/// The stored sample count of [`METRIC`] on the store process (0 when unknown yet).
pub fn stored(store: &Server) -> u64 {
    let (status, body) =
        crate::support::http_get(store.http, &format!("/metrics/{METRIC}/aggregate"));
    if status != 200 {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["count"].as_u64().unwrap_or(0)
}

/// Waits until the store holds at least `want` samples; returns the last count.
pub fn wait_stored(store: &Server, want: u64, patience: Duration) -> u64 {
    let deadline = Instant::now() + patience;
    loop {
        let n = stored(store);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends batches `0..200` of [`batch`] (200,000 metrics), alternating over the two
/// `gateways`, each acknowledged with one id per metric; await the tasks.
pub fn send_metrics(gateways: &[Server]) -> Vec<tokio::task::JoinHandle<()>> {
    gateways
        .iter()
        .take(2)
        .enumerate()
        .map(|(g, gateway)| {
            let url = gateway.grpc_url();
            tokio::spawn(async move {
                let mut c = MetricsServiceClient::connect(url).await.unwrap();
                for b in (g as u64..200).step_by(2) {
                    let ids = c.ingest_metrics(batch(b)).await.unwrap().into_inner();
                    assert_eq!(ids.event_ids.len() as u64, SERIES);
                }
            })
        })
        .collect()
}

/// 10 clients spread over both gateways stream 5,000 `sq` each and get exactly their own
/// answers; 200,000 metrics through both gateways are all queryable on the store.
pub async fn clients_and_metrics(d: Deployment) {
    const CLIENTS: usize = 10;
    const EVENTS: i32 = 5_000;
    let streams: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = d.gateways[i % 2].grpc_url();
            tokio::spawn(stream_client(
                url,
                format!("client-{i}"),
                numbers_of(i, EVENTS),
                Arc::default(),
            ))
        })
        .collect();
    // 200,000 metrics, 100 batches through each gateway, while the streams run.
    let senders = send_metrics(&d.gateways);
    for s in senders {
        s.await.unwrap();
    }
    for (i, s) in streams.into_iter().enumerate() {
        let seen = s.await.unwrap();
        assert_exactly_once(&format!("client-{i}"), &seen, numbers_of(i, EVENTS));
    }
    let n = wait_stored(&d.store, 200_000, Duration::from_secs(120));
    assert_eq!(n, 200_000, "samples queryable on the store process");
    // Queries go to the store; a gateway says so.
    let (status, body) =
        crate::support::http_get(d.gateways[0].http, &format!("/metrics/{METRIC}/aggregate"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("role `store`"), "{body}");
    d.terminate();
}

/// One of two processors is SIGKILLed once a fifth of the answers arrived; its work moves
/// to the other and no client misses an answer or gets one twice.
pub async fn killed_processor(mut d: Deployment) {
    const CLIENTS: usize = 8;
    const EVENTS: i32 = 5_000;
    let url = d.gateways[0].grpc_url();
    let answered = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(stream_client(
                url.clone(),
                format!("k-{i}"),
                numbers_of(i, EVENTS),
                answered.clone(),
            ))
        })
        .collect();
    // Kill one processor mid-load: once a fifth of the answers arrived.
    let total = (CLIENTS as u64) * EVENTS as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < total / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_kill = answered.load(Ordering::Relaxed);
    assert!(at_kill < total, "the load ended before the kill");
    d.processors.remove(0).kill9();
    for (i, s) in streams.into_iter().enumerate() {
        let seen = s.await.unwrap();
        assert_exactly_once(&format!("k-{i}"), &seen, numbers_of(i, EVENTS));
    }
    d.terminate();
}
