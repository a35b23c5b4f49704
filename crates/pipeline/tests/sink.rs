//! The sinker moves broker records into the store and acknowledges them only after a
//! flush; poison records go to the dlq.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use datanexus_broker::{Bytes, ConsumerOptions, ProduceRecord};
use datanexus_model::{Event, Labels, Point, codec};
use datanexus_pipeline::{Pipeline, PipelineConfig, Workers};
use datanexus_store::{AggregateQuery, EventQuery, Selector, Store, TimeRange};
use datanexus_telemetry::Telemetry;

#[path = "support/rig.rs"]
mod support;

use support::{eventually, lag, rig};

/// Starts the sinkers (no processor or forwarder) on the rig.
async fn start(r: &support::Rig) -> Pipeline {
    Pipeline::start(
        r.broker.clone(),
        Some(r.store.clone()),
        Telemetry::new(),
        config(),
        None,
    )
    .await
    .unwrap()
}

fn config() -> PipelineConfig {
    PipelineConfig {
        flush_interval: Duration::from_millis(100),
        consumer: ConsumerOptions {
            lease_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
        },
        workers: Workers {
            sinks: true,
            processors: false,
            forwarder: false,
        },
        ..PipelineConfig::from_config(&datanexus_config::Config::default())
    }
}

fn point_record(series: u32, ts: i64, v: f64) -> ProduceRecord {
    let labels = Labels::new([("s".to_owned(), series.to_string())]).unwrap();
    let p = Point::sample("pipe_metric", labels, v, ts);
    let mut buf = Vec::new();
    codec::encode_point(&p, &mut buf);
    ProduceRecord {
        partition: Some(series % 4),
        key: None,
        value: Bytes::from(buf),
        timestamp_ms: 0,
    }
}

async fn count(store: &dyn Store, name: &str) -> u64 {
    let q = AggregateQuery {
        selector: Selector::metric(name),
        range: TimeRange::default(),
        step_ns: None,
        quantiles: vec![],
        buckets: vec![],
    };
    store
        .aggregate(&q)
        .await
        .map(|r| r.total.count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_every_produced_point_and_acknowledges_after_flush() {
    let r = rig().await;
    let records: Vec<_> = (0..1000)
        .map(|i| point_record(i % 10, 1_000 + i64::from(i), f64::from(i)))
        .collect();
    r.broker.produce("metrics", records).await.unwrap();
    let p = start(&r).await;
    assert!(eventually(|| async { count(&*r.store, "pipe_metric").await == 1000 }).await);
    assert!(
        eventually(|| async { lag(&*r.broker, "metrics", "sinker").await == 0 }).await,
        "acked after flush"
    );
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_records_are_not_counted_twice() {
    let r = rig().await;
    let records: Vec<_> = (0..100)
        .map(|i| point_record(i % 5, 5_000 + i64::from(i), 1.0))
        .collect();
    // The same records twice: what a redelivery after a crash looks like to the store.
    r.broker.produce("metrics", records.clone()).await.unwrap();
    r.broker.produce("metrics", records).await.unwrap();
    let p = start(&r).await;
    assert!(eventually(|| async { lag(&*r.broker, "metrics", "sinker").await == 0 }).await);
    assert_eq!(count(&*r.store, "pipe_metric").await, 100);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_with_the_reason() {
    let r = rig().await;
    let poison = ProduceRecord {
        partition: Some(0),
        key: None,
        value: Bytes::from_static(&[0xff, 0xff, 0xff]),
        timestamp_ms: 0,
    };
    r.broker
        .produce("metrics", vec![poison, point_record(0, 1, 1.0)])
        .await
        .unwrap();
    let p = start(&r).await;
    assert!(
        eventually(|| async { count(&*r.store, "pipe_metric").await == 1 }).await,
        "the good record is stored"
    );
    assert!(
        eventually(|| async { lag(&*r.broker, "metrics", "sinker").await == 0 }).await,
        "the poison record does not block"
    );
    let dlq = r
        .broker
        .subscribe("dlq", "inspect", "t", ConsumerOptions::default())
        .await
        .unwrap();
    let got = dlq.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].value).unwrap();
    assert_eq!(body["source_topic"], "metrics");
    assert_eq!(body["group"], "sinker");
    assert_eq!(body["value_hex"], "ffffff");
    assert!(
        body["reason"].as_str().unwrap().contains("undecodable"),
        "{body}"
    );
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_raw_and_flattened_into_series() {
    let r = rig().await;
    let records: Vec<_> = (0..20)
        .map(|i| {
            let payload = serde_json::json!({"temperature": 20.0 + f64::from(i), "note": "x"});
            let e = Event::new(
                format!("sensor-{}", i % 2),
                1_000_000 + i64::from(i),
                payload.as_object().unwrap().clone(),
            )
            .unwrap();
            let mut buf = Vec::new();
            codec::encode_event(&e, &mut buf);
            ProduceRecord {
                partition: None,
                key: Some(Bytes::from(e.source_id.clone())),
                value: Bytes::from(buf),
                timestamp_ms: 0,
            }
        })
        .collect();
    r.broker.produce("events", records).await.unwrap();
    let p = start(&r).await;
    assert!(eventually(|| async { count(&*r.store, "temperature").await == 20 }).await);
    let page = r
        .store
        .events(&EventQuery {
            source_id: Some("sensor-1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 10);
    assert!(
        page.events
            .iter()
            .all(|e| e.source_id == "sensor-1" && e.payload["note"] == "x")
    );
    assert!(
        page.events
            .windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns),
        "oldest first"
    );
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_events_are_stored_raw_but_not_flattened_into_series() {
    let r = rig().await;
    let mut records = Vec::new();
    for (i, stream) in [
        None,
        Some(datanexus_model::StreamEvent {
            event_name: "sq".into(),
            number: 5,
            reply_to: "local".into(),
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let payload = serde_json::json!({"number": 5, "reading": 1.5});
        let mut e = Event::new(
            "client-x".into(),
            10 + i as i64,
            payload.as_object().unwrap().clone(),
        )
        .unwrap();
        e.stream = stream;
        let mut buf = Vec::new();
        codec::encode_event(&e, &mut buf);
        records.push(ProduceRecord {
            partition: Some(0),
            key: None,
            value: Bytes::from(buf),
            timestamp_ms: 0,
        });
    }
    r.broker.produce("events", records).await.unwrap();
    let p = start(&r).await;
    let stored = || async {
        let q = EventQuery {
            source_id: Some("client-x".into()),
            limit: 10,
            ..Default::default()
        };
        r.store.events(&q).await.map(|page| page.total).unwrap_or(0) == 2
    };
    assert!(eventually(stored).await, "both events are stored raw");
    assert_eq!(
        count(&*r.store, "reading").await,
        1,
        "only the POST /ingest event becomes a point"
    );
    assert_eq!(count(&*r.store, "number").await, 1);
    p.stop().await.unwrap();
}
