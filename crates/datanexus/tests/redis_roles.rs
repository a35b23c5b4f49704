//! Data Nexus as separate processes on a real Redis (a private `redis-server` with
//! `appendfsync always`): gateways, processors and a store sharing the work through
//! Redis Streams, results fanned out over Redis pub/sub.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use datanexus_proto::datanexus::v1::event_stream_client::EventStreamClient;
use datanexus_proto::datanexus::v1::stream_request::Kind as Req;
use datanexus_proto::datanexus::v1::stream_response::Kind as Resp;
use datanexus_proto::datanexus::v1::{Event, Hello, StreamRequest, StreamResponse};
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use support::{Redis, Server};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Short leases so that a killed processor's work moves within seconds.
const WORKER_ENV: &[(&str, &str)] = &[
    ("DATANEXUS_WORKERS__LEASE_TIMEOUT", "6s"),
    ("DATANEXUS_WORKERS__SESSION_TIMEOUT", "3s"),
];

fn start(role: &str, redis: &Redis, dir: &Path) -> Server {
    let url = redis.url();
    Server::start_env(dir, &["--role", role, "--broker", &url], WORKER_ENV)
}

/// The processes of one deployment, each with its own data directory.
struct Deployment {
    _dirs: Vec<tempfile::TempDir>,
    store: Server,
    processors: Vec<Server>,
    gateways: Vec<Server>,
}

impl Deployment {
    fn start(redis: &Redis, processors: usize, gateways: usize) -> Deployment {
        let mut dirs = Vec::new();
        let mut next = |role: &str| {
            let dir = tempfile::tempdir().unwrap();
            let server = start(role, redis, dir.path());
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
}

async fn nimbus(
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
async fn stream_client(
    url: String,
    client_id: String,
    n: i32,
    answered: Arc<AtomicU64>,
) -> BTreeMap<i32, u32> {
    let (tx, mut resp) = nimbus(&url, &client_id).await;
    let sender = tokio::spawn(async move {
        for i in 1..=n {
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
    while seen.len() < usize::try_from(n).unwrap() && Instant::now() < deadline {
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

fn assert_exactly_once(client: &str, seen: &BTreeMap<i32, u32>, n: i32) {
    let missing: Vec<i32> = (1..=n).filter(|i| !seen.contains_key(i)).collect();
    let twice: Vec<(&i32, &u32)> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{client}: {} missing (first {:?}), {} answered more than once (first {:?})",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>()
    );
}

const METRIC: &str = "redis_roles_value";
const SERIES: u64 = 1000;

/// Batch `b` of 1,000 metrics: series `0..1000` at second `T0 + b` (all distinct).
fn batch(b: u64) -> BatchMetrics {
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
fn stored(store: &Server) -> u64 {
    let (status, body) = support::http_get(store.http, &format!("/metrics/{METRIC}/aggregate"));
    if status != 200 {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["count"].as_u64().unwrap_or(0)
}

/// Waits until the store holds at least `want` samples; returns the last count.
fn wait_stored(store: &Server, want: u64, patience: Duration) -> u64 {
    let deadline = Instant::now() + patience;
    loop {
        let n = stored(store);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_processors_one_store_serve_every_client_and_metric() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = Deployment::start(&redis, 2, 2);
    const CLIENTS: usize = 10;
    const EVENTS: i32 = 5_000;
    let streams: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = d.gateways[i % 2].grpc_url();
            tokio::spawn(stream_client(
                url,
                format!("client-{i}"),
                EVENTS,
                Arc::default(),
            ))
        })
        .collect();
    // 200,000 metrics, 100 batches through each gateway, while the streams run.
    let mut senders = Vec::new();
    for (g, gateway) in d.gateways.iter().enumerate() {
        let url = gateway.grpc_url();
        senders.push(tokio::spawn(async move {
            let mut c = MetricsServiceClient::connect(url).await.unwrap();
            for b in (g as u64..200).step_by(2) {
                let ids = c.ingest_metrics(batch(b)).await.unwrap().into_inner();
                assert_eq!(ids.event_ids.len() as u64, SERIES);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    for (i, s) in streams.into_iter().enumerate() {
        let seen = s.await.unwrap();
        assert_exactly_once(&format!("client-{i}"), &seen, EVENTS);
    }
    let n = wait_stored(&d.store, 200_000, Duration::from_secs(120));
    assert_eq!(n, 200_000, "samples queryable on the store process");
    // Queries go to the store; a gateway says so.
    let (status, body) =
        support::http_get(d.gateways[0].http, &format!("/metrics/{METRIC}/aggregate"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("role `store`"), "{body}");
    for s in d.gateways.into_iter().chain(d.processors).chain([d.store]) {
        assert!(s.terminate());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_loses_and_repeats_nothing_at_the_clients() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut d = Deployment::start(&redis, 2, 1);
    const CLIENTS: usize = 8;
    const EVENTS: i32 = 5_000;
    let url = d.gateways[0].grpc_url();
    let answered = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(stream_client(
                url.clone(),
                format!("k-{i}"),
                EVENTS,
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
        assert_exactly_once(&format!("k-{i}"), &seen, EVENTS);
    }
    for s in d.gateways.into_iter().chain(d.processors).chain([d.store]) {
        assert!(s.terminate());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_unavailable_meanwhile_and_loses_nothing_acknowledged() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let d = Deployment::start(&redis, 1, 1);
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
    for s in d.gateways.into_iter().chain(d.processors).chain([d.store]) {
        assert!(s.terminate());
    }
}

/// A native acknowledged stream (`datanexus.v1.EventStream`).
struct Native {
    tx: mpsc::Sender<StreamRequest>,
    rx: Streaming<StreamResponse>,
}

impl Native {
    async fn connect(url: &str, client_id: &str, resume_after: u64) -> Native {
        let mut c = EventStreamClient::connect(url.to_owned()).await.unwrap();
        let (tx, rx) = mpsc::channel(16_384);
        let hello = Req::Hello(Hello {
            client_id: client_id.into(),
            resume_after,
        });
        tx.send(StreamRequest { kind: Some(hello) }).await.unwrap();
        let rx = c
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Native { tx, rx }
    }

    async fn send(&self, n: i32) {
        let e = Event {
            event_name: "sq".into(),
            number: n,
            correlation_id: u64::try_from(n).unwrap(),
        };
        self.tx
            .send(StreamRequest {
                kind: Some(Req::Event(e)),
            })
            .await
            .unwrap();
    }

    /// The next result (skipping `Accepted`).
    async fn result(&mut self) -> datanexus_proto::datanexus::v1::StreamResult {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), self.rx.next())
                .await
                .expect("a message within 60 s");
            match next {
                Some(Ok(StreamResponse {
                    kind: Some(Resp::Result(r)),
                })) => return r,
                Some(Ok(StreamResponse {
                    kind: Some(Resp::Error(e)),
                })) => panic!("in-band error {e:?}"),
                Some(Ok(_)) => {}
                other => panic!("stream ended: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_to_the_other_gateway_gets_missed_then_new_results() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = Deployment::start(&redis, 1, 2);
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
    for s in d.gateways.into_iter().chain(d.processors).chain([d.store]) {
        assert!(s.terminate());
    }
}
