//! What the black-box tests share: a real embedded broker and store in a tempdir, and
//! polling with a deadline instead of sleeps.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_broker::{Broker, ConsumerOptions, Delivery};
use datanexus_store::Store;
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};

/// Partitions of every test topic.
pub const PARTITIONS: u32 = 4;

pub struct Rig {
    pub _dir: tempfile::TempDir,
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn Store>,
}

pub async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(
        EmbeddedBroker::open(&dir.path().join("log"), EmbeddedOptions::default()).unwrap(),
    );
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("store"), EmbeddedStoreOptions::default()).unwrap(),
    );
    for t in ["metrics", "events", "results", "dlq"] {
        broker.ensure_topic(t, PARTITIONS).await.unwrap();
    }
    Rig {
        _dir: dir,
        broker,
        store,
    }
}

/// Polls `check` until it holds or 30 s passed; whether it held.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Total lag of `group` on `topic`.
pub async fn lag(broker: &dyn Broker, topic: &str, group: &str) -> u64 {
    broker
        .lag(topic, group)
        .await
        .unwrap()
        .iter()
        .map(|l| l.lag)
        .sum()
}

/// Every record of `topic` (read by a fresh group), once `want` of them are there.
pub async fn read_all(broker: &dyn Broker, topic: &str, want: usize) -> Vec<Delivery> {
    let reader = broker
        .subscribe(topic, "test-reader", "reader", ConsumerOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want && Instant::now() < deadline {
        got.extend(
            reader
                .poll(10_000, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    // Anything beyond `want` that is already there.
    got.extend(
        reader
            .poll(10_000, Duration::from_millis(100))
            .await
            .unwrap(),
    );
    got
}
