//! Processor and forwarder, end to end over a real embedded broker and store: stream
//! events become results, stored first and then routed, in order per client, with
//! errors answered in-band; redelivery after a processor crash leaves duplicates that
//! the store absorbs and the seqs expose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datanexus_broker::{Broker, Bytes, ConsumerOptions, ProduceRecord};
use datanexus_model::series::partition_of_key;
use datanexus_model::{Event, StreamEvent, codec};
use datanexus_pipeline::processing::result_of;
use datanexus_pipeline::{Pipeline, PipelineConfig, Registry, ResultRouter};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_results::record::from_stored;
use datanexus_results::result_seq;
use datanexus_store::{ResultQuery, Store};
use datanexus_telemetry::Telemetry;
use prost::Message;
use serde_json::Map;

#[path = "support/rig.rs"]
mod support;

use support::{PARTITIONS, Rig, eventually, lag, read_all, rig};

/// Stands in for the server's session registry: records what it is offered and, given
/// the store, counts results offered before they were stored (the server's replay
/// relies on there being none).
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<ResultRecord>>,
    store: Option<Arc<dyn Store>>,
    routed_before_stored: AtomicUsize,
}

#[async_trait]
impl ResultRouter for Recorder {
    async fn route(&self, results: &[ResultRecord]) {
        if let Some(store) = &self.store {
            let clients: BTreeSet<&str> = results.iter().map(|r| r.client_id.as_str()).collect();
            let mut stored = BTreeSet::new();
            for client in clients {
                let page = store.results(&results_of(client)).await.unwrap();
                stored.extend(page.results.into_iter().map(|r| (r.client_id, r.seq)));
            }
            let missing = results
                .iter()
                .filter(|r| !stored.contains(&(r.client_id.clone(), result_seq(r))))
                .count();
            self.routed_before_stored
                .fetch_add(missing, Ordering::Relaxed);
        }
        self.got.lock().unwrap().extend_from_slice(results);
    }
}

impl Recorder {
    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// What it got, per client, in routing order.
    fn by_client(&self) -> BTreeMap<String, Vec<ResultRecord>> {
        let mut out: BTreeMap<String, Vec<ResultRecord>> = BTreeMap::new();
        for r in self.got.lock().unwrap().iter() {
            out.entry(r.client_id.clone()).or_default().push(r.clone());
        }
        out
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        consumer_id: "node".into(),
        flush_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(100),
        ..PipelineConfig::from_config(&datanexus_config::Config::default())
    }
}

async fn start(r: &Rig, config: PipelineConfig) -> (Pipeline, Arc<Recorder>) {
    start_with(r, config, Recorder::default()).await
}

async fn start_with(
    r: &Rig,
    config: PipelineConfig,
    recorder: Recorder,
) -> (Pipeline, Arc<Recorder>) {
    let recorder = Arc::new(recorder);
    let router: Arc<dyn ResultRouter> = recorder.clone();
    let p = Pipeline::start(
        r.broker.clone(),
        Some(r.store.clone()),
        Telemetry::new(),
        config,
        Some(router),
    )
    .await
    .unwrap();
    (p, recorder)
}

/// An event as a gateway produces it: keyed and partitioned by client id.
fn event_record(client: &str, stream: Option<(&str, i32)>, ts: i64) -> ProduceRecord {
    let mut e = Event::new(client.into(), ts, Map::new()).unwrap();
    e.stream = stream.map(|(name, number)| StreamEvent {
        event_name: name.into(),
        number,
        reply_to: "local".into(),
    });
    let mut buf = Vec::new();
    codec::encode_event(&e, &mut buf);
    ProduceRecord {
        partition: Some(partition_of_key(client, PARTITIONS)),
        key: Some(Bytes::from(client.to_owned())),
        value: Bytes::from(buf),
        timestamp_ms: 0,
    }
}

fn results_of(client: &str) -> ResultQuery {
    ResultQuery {
        client_id: client.into(),
        after_seq: 0,
        limit: 100_000,
    }
}

/// The results the store holds for `client`, by seq.
async fn stored_results(store: &dyn Store, client: &str) -> Vec<ResultRecord> {
    let page = store.results(&results_of(client)).await.unwrap();
    let mut results: Vec<_> = page.results.into_iter().map(from_stored).collect();
    results.sort_by_key(result_seq);
    results
}

/// Waits until the processors and the forwarder have acknowledged everything.
async fn drained(broker: &dyn Broker) -> bool {
    eventually(|| async {
        lag(broker, "events", "processor").await == 0
            && lag(broker, "results", "forwarder").await == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sq_answers_are_correct_stored_before_routed_and_errors_are_answered_in_band() {
    let r = rig().await;
    let mut asks: Vec<(&str, i32)> = (-300..=300).map(|n| ("sq", n * 97)).collect();
    asks.extend([
        ("sq", 0),
        ("SQ", 12),
        ("sq", 46_340),
        ("sq", -46_340),
        ("sq", 46_341),
        ("sq", i32::MIN),
        ("sq", i32::MAX),
        ("cube", 3),
    ]);
    let records = asks
        .iter()
        .enumerate()
        .map(|(i, &ask)| event_record("calc", Some(ask), 1_000 + i as i64))
        .collect();
    r.broker.produce("events", records).await.unwrap();
    let checking = Recorder {
        store: Some(r.store.clone()),
        ..Recorder::default()
    };
    let (p, recorder) = start_with(&r, config(), checking).await;
    assert!(eventually(|| async { recorder.len() == asks.len() }).await);
    assert_eq!(recorder.routed_before_stored.load(Ordering::Relaxed), 0);
    let got = recorder.by_client().remove("calc").unwrap();
    for (i, ((name, n), res)) in asks.iter().zip(&got).enumerate() {
        let want = match (*name, n.checked_mul(*n)) {
            ("cube", _) => Outcome::Error("unknown event name \"cube\" (known: sq)".into()),
            (_, Some(sq)) => Outcome::Result(sq),
            (_, None) => Outcome::Error(format!("sq({n}) overflows int32")),
        };
        assert_eq!(res.outcome, Some(want), "{name}({n})");
        assert_eq!((res.event_name.as_str(), res.number), (*name, *n));
        assert_eq!(res.client_id, "calc");
        assert_eq!(res.reply_to, "local");
        assert_eq!(res.received_ns, 1_000 + i as i64);
        assert_eq!(res.event_partition, partition_of_key("calc", PARTITIONS));
        assert!(res.processor_id.starts_with("node-processor-"), "{res:?}");
        assert!(res.processed_ns > 0);
    }
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_results_once_and_in_order_and_the_store_keeps_them() {
    const PER_CLIENT: i32 = 2_000;
    let r = rig().await;
    let clients = ["alice", "bob", "carol"];
    let (p, recorder) = start(&r, config()).await;
    // Interleaved, in several produce calls, while the workers already run.
    for chunk in 0..4 {
        let records = (chunk * PER_CLIENT / 4..(chunk + 1) * PER_CLIENT / 4)
            .flat_map(|n| {
                clients
                    .iter()
                    .map(move |c| event_record(c, Some(("sq", n)), i64::from(n)))
            })
            .collect();
        r.broker.produce("events", records).await.unwrap();
    }
    let total = clients.len() * PER_CLIENT as usize;
    assert!(eventually(|| async { recorder.len() >= total }).await);
    assert!(drained(&*r.broker).await);
    assert_eq!(recorder.len(), total, "each result routed exactly once");
    let routed = recorder.by_client();
    for client in clients {
        let got = &routed[client];
        assert!(
            got.windows(2)
                .all(|w| result_seq(&w[0]) < result_seq(&w[1])),
            "{client}'s seqs strictly increase"
        );
        let numbers: Vec<i32> = got.iter().map(|r| r.number).collect();
        assert_eq!(numbers, (0..PER_CLIENT).collect::<Vec<_>>(), "{client}");
        assert!(
            got.iter()
                .all(|r| r.outcome == Some(Outcome::Result(r.number * r.number)))
        );
        let stored = stored_results(&*r.store, client).await;
        let routed_as_stored: Vec<_> = got
            .iter()
            .map(|r| ResultRecord {
                reply_to: String::new(),
                ..r.clone()
            })
            .collect();
        assert_eq!(stored, routed_as_stored, "{client}'s stored results");
    }
    p.stop().await.unwrap();
}

/// Client-side dedupe: drop every result whose seq is not above the last one seen.
fn dedupe(results: &[ResultRecord]) -> Vec<u64> {
    let mut last = 0;
    let mut seqs = Vec::new();
    for r in results {
        if result_seq(r) > last {
            last = result_seq(r);
            seqs.push(last);
        }
    }
    seqs
}

/// A processor consumer polls a batch, produces its results, and dies (no ack, no close,
/// no heartbeat); returns how many results it produced.
async fn crash_a_processor_after_it_produced(broker: &dyn Broker) -> usize {
    let short = ConsumerOptions {
        lease_timeout: Duration::from_secs(1),
        session_timeout: Duration::from_millis(500),
    };
    let zombie = broker
        .subscribe("events", "processor", "zombie", short)
        .await
        .unwrap();
    let batch = zombie.poll(100, Duration::from_secs(5)).await.unwrap();
    assert!(!batch.is_empty());
    let registry = Registry::builtin();
    let results: Vec<ProduceRecord> = batch
        .iter()
        .map(|d| {
            let e = codec::decode_event(&d.value).unwrap();
            let res = result_of(&registry, d.id, &e, "zombie", 1).unwrap();
            ProduceRecord {
                partition: Some(partition_of_key(&res.client_id, PARTITIONS)),
                key: None,
                value: Bytes::from(res.encode_to_vec()),
                timestamp_ms: 0,
            }
        })
        .collect();
    let count = results.len();
    broker.produce("results", results).await.unwrap();
    std::mem::forget(zombie);
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_processors_batch_is_processed_again_and_deduplicated() {
    let r = rig().await;
    let clients = ["dora", "eve"];
    let records = (0..300)
        .flat_map(|n| clients.map(|c| event_record(c, Some(("sq", n)), 0)))
        .collect();
    r.broker.produce("events", records).await.unwrap();
    let zombie_count = crash_a_processor_after_it_produced(&*r.broker).await;

    let config = PipelineConfig {
        consumer: ConsumerOptions {
            lease_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(2),
        },
        ..config()
    };
    let (p, recorder) = start(&r, config).await;
    let total = 2 * 300;
    assert!(eventually(|| async { recorder.len() >= total + zombie_count }).await);
    assert!(drained(&*r.broker).await);
    p.stop().await.unwrap();

    let on_topic = read_all(&*r.broker, "results", total + zombie_count).await;
    assert_eq!(
        on_topic.len(),
        total + zombie_count,
        "the results topic holds duplicates"
    );
    let routed = recorder.by_client();
    for client in clients {
        let got = &routed[client];
        let distinct: BTreeSet<u64> = got.iter().map(result_seq).collect();
        assert_eq!(distinct.len(), 300);
        assert_eq!(
            dedupe(got),
            distinct.iter().copied().collect::<Vec<_>>(),
            "{client}: after dropping seen seqs, every result once and in order"
        );
        let stored = stored_results(&*r.store, client).await;
        assert_eq!(
            stored.len(),
            300,
            "{client}: the store holds each result once"
        );
        assert!(
            stored
                .iter()
                .all(|s| s.processor_id.starts_with("node-processor-")),
            "{client}: the crashed processor's batch was processed by another consumer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_events_get_no_results_and_poison_goes_to_the_dlq() {
    let r = rig().await;
    let mut records: Vec<_> = (0..10).map(|i| event_record("sensor", None, i)).collect();
    records.push(ProduceRecord {
        partition: Some(0),
        key: None,
        value: Bytes::from_static(&[0xff, 0xff]),
        timestamp_ms: 0,
    });
    records.push(event_record("sensor", Some(("sq", 9)), 11));
    r.broker.produce("events", records).await.unwrap();
    let poison_result = ProduceRecord {
        partition: Some(1),
        key: None,
        value: Bytes::from_static(&[0xff, 0xff]),
        timestamp_ms: 0,
    };
    r.broker
        .produce("results", vec![poison_result])
        .await
        .unwrap();
    let (p, recorder) = start(&r, config()).await;
    assert!(eventually(|| async { recorder.len() == 1 }).await);
    assert!(drained(&*r.broker).await);
    let got = recorder.by_client().remove("sensor").unwrap();
    assert_eq!(got.len(), 1, "only the stream event is answered");
    assert_eq!(got[0].outcome, Some(Outcome::Result(81)));
    // The event sinker reports the poison event too, each group once.
    let dlq = read_all(&*r.broker, "dlq", 3).await;
    let mut reports: Vec<(String, String)> = dlq
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
            assert_eq!(body["value_hex"], "ffff");
            assert!(!body["reason"].as_str().unwrap().is_empty());
            let field = |k: &str| body[k].as_str().unwrap().to_owned();
            (field("source_topic"), field("group"))
        })
        .collect();
    reports.sort();
    let want = [
        ("events", "event-sinker"),
        ("events", "processor"),
        ("results", "forwarder"),
    ]
    .map(|(t, g)| (t.to_owned(), g.to_owned()));
    assert_eq!(reports, want);
    p.stop().await.unwrap();
}
