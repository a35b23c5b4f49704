//! The conformance suite every [`Broker`] backend must pass.
//!
//! A backend's tests invoke [`conformance_suite!`] with an async function returning a
//! fixture (kept alive for the test) and a fresh `Arc<dyn Broker>`, plus the consumer
//! options to use (backends with slow group protocols need longer timeouts). Each test
//! uses its own topic and group names, so backends over a shared server can run them in
//! parallel.
//!
//! Contract checked here (and relied on by the pipeline):
//! - `produce` returns one distinct id per record, in input order, honouring explicit
//!   partitions;
//! - a new group starts at the beginning of the topic;
//! - acknowledged records are never delivered to the group again;
//! - unacknowledged records are delivered again after the consumer closes, dies
//!   (stops polling without closing) or nacks them;
//! - consumers of one group share the work; every record reaches the group;
//! - lag falls to zero once everything is acknowledged;
//! - bad requests fail with the right [`ErrorKind`].

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    Broker, Bytes, Consumer, ConsumerOptions, Delivery, ErrorKind, ProduceRecord, RecordId,
};

/// Upper bound for waiting on redelivery or rebalances (Kafka's group join is slow).
const PATIENCE: Duration = Duration::from_secs(90);

pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn records(n: usize, partitions: u32) -> Vec<ProduceRecord> {
    (0..n)
        .map(|i| ProduceRecord {
            partition: Some(i as u32 % partitions),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Bytes::from(format!("v{i}")),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Polls until `want` distinct values were seen or patience runs out; acks if asked.
async fn drain(c: &dyn Consumer, want: usize, ack: bool) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while seen.len() < want && Instant::now() < deadline {
        let got = c.poll(1000, Duration::from_millis(500)).await.unwrap();
        if ack && !got.is_empty() {
            let ids: Vec<RecordId> = got.iter().map(|d| d.id).collect();
            c.ack(&ids).await.unwrap();
        }
        for d in got {
            seen.insert(d.value.clone());
            out.push(d);
        }
    }
    out
}

pub(crate) fn values(ds: &[Delivery]) -> BTreeSet<Bytes> {
    ds.iter().map(|d| d.value.clone()).collect()
}

pub(crate) async fn produce_returns_one_id_per_record_in_order(b: Arc<dyn Broker>) {
    let topic = unique("ids");
    b.ensure_topic(&topic, 4).await.unwrap();
    let ids = b.produce(&topic, records(100, 4)).await.unwrap();
    assert_eq!(ids.len(), 100);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        100,
        "ids must be distinct"
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            id.partition,
            i as u32 % 4,
            "record {i} must land in its explicit partition"
        );
        assert!(!id.to_string().is_empty());
    }
    // Within a partition, ids grow in production order.
    let p0: Vec<_> = ids.iter().filter(|id| id.partition == 0).collect();
    assert!(p0.windows(2).all(|w| w[0].position < w[1].position));
}

pub(crate) async fn new_group_receives_every_record_from_the_beginning(
    b: Arc<dyn Broker>,
    o: ConsumerOptions,
) {
    let topic = unique("all");
    b.ensure_topic(&topic, 3).await.unwrap();
    let produced = records(60, 3);
    let want: BTreeSet<_> = produced.iter().map(|r| r.value.clone()).collect();
    b.produce(&topic, produced).await.unwrap();
    let c = b.subscribe(&topic, &unique("g"), "c1", o).await.unwrap();
    let got = drain(c.as_ref(), 60, true).await;
    assert_eq!(values(&got), want);
    assert!(got.iter().all(|d| d.delivery_count >= 1));
    c.close().await.unwrap();
}

pub(crate) async fn acked_records_are_not_delivered_again(b: Arc<dyn Broker>, o: ConsumerOptions) {
    let topic = unique("acked");
    let group = unique("g");
    b.ensure_topic(&topic, 2).await.unwrap();
    b.produce(&topic, records(20, 2)).await.unwrap();
    let c = b.subscribe(&topic, &group, "c1", o.clone()).await.unwrap();
    assert_eq!(values(&drain(c.as_ref(), 20, true).await).len(), 20);
    c.close().await.unwrap();
    let c2 = b.subscribe(&topic, &group, "c2", o).await.unwrap();
    let again = c2.poll(100, Duration::from_secs(2)).await.unwrap();
    assert!(again.is_empty(), "acked records came back: {again:?}");
    c2.close().await.unwrap();
}

pub(crate) async fn unacked_records_are_redelivered_after_close(
    b: Arc<dyn Broker>,
    o: ConsumerOptions,
) {
    let topic = unique("close");
    let group = unique("g");
    b.ensure_topic(&topic, 2).await.unwrap();
    let produced = records(10, 2);
    let want: BTreeSet<_> = produced.iter().map(|r| r.value.clone()).collect();
    b.produce(&topic, produced).await.unwrap();
    let c = b.subscribe(&topic, &group, "c1", o.clone()).await.unwrap();
    assert_eq!(values(&drain(c.as_ref(), 10, false).await), want);
    c.close().await.unwrap();
    let c2 = b.subscribe(&topic, &group, "c2", o).await.unwrap();
    assert_eq!(values(&drain(c2.as_ref(), 10, true).await), want);
    c2.close().await.unwrap();
}

pub(crate) async fn unacked_records_are_redelivered_after_consumer_dies(
    b: Arc<dyn Broker>,
    o: ConsumerOptions,
) {
    let topic = unique("dies");
    let group = unique("g");
    b.ensure_topic(&topic, 2).await.unwrap();
    let produced = records(10, 2);
    let want: BTreeSet<_> = produced.iter().map(|r| r.value.clone()).collect();
    b.produce(&topic, produced).await.unwrap();
    let survivor = b
        .subscribe(&topic, &group, "survivor", o.clone())
        .await
        .unwrap();
    let doomed = b.subscribe(&topic, &group, "doomed", o).await.unwrap();
    // Both poll; the doomed one never acks and then goes silent (no close: a crash).
    let mut got = drain(doomed.as_ref(), 1, false).await;
    got.extend(
        survivor
            .poll(100, Duration::from_millis(200))
            .await
            .unwrap(),
    );
    assert!(
        !got.is_empty(),
        "the doomed consumer must have received work before dying"
    );
    std::mem::forget(doomed);
    // The survivor must end up with every record, acking as it goes.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    while seen != want && Instant::now() < deadline {
        let batch = survivor
            .poll(100, Duration::from_millis(500))
            .await
            .unwrap();
        if !batch.is_empty() {
            survivor
                .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
                .await
                .unwrap();
        }
        seen.extend(batch.into_iter().map(|d| d.value));
    }
    assert_eq!(
        seen, want,
        "the dead consumer's records must be redelivered to the survivor"
    );
    survivor.close().await.unwrap();
}

/// A group created with `ensure_group` before any of its consumers joined keeps every
/// record through retention, even once another group acknowledged them all.
pub(crate) async fn an_ensured_group_keeps_records_through_retention(
    b: Arc<dyn Broker>,
    o: ConsumerOptions,
) {
    let topic = unique("ensure");
    b.ensure_topic(&topic, 2).await.unwrap();
    b.ensure_group(&topic, "late").await.unwrap();
    b.produce(&topic, records(20, 2)).await.unwrap();
    let early = b.subscribe(&topic, "early", "e1", o.clone()).await.unwrap();
    assert_eq!(values(&drain(early.as_ref(), 20, true).await).len(), 20);
    early.close().await.unwrap();
    b.enforce_retention().await.unwrap();
    let late = b.subscribe(&topic, "late", "l1", o).await.unwrap();
    let got = values(&drain(late.as_ref(), 20, true).await);
    assert_eq!(got.len(), 20, "the late group lost records to retention");
    late.close().await.unwrap();
}

pub(crate) async fn nacked_records_are_redelivered(b: Arc<dyn Broker>, o: ConsumerOptions) {
    let topic = unique("nack");
    b.ensure_topic(&topic, 1).await.unwrap();
    b.produce(&topic, records(5, 1)).await.unwrap();
    let c = b.subscribe(&topic, &unique("g"), "c1", o).await.unwrap();
    let first = drain(c.as_ref(), 5, false).await;
    c.nack(&first.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let again = drain(c.as_ref(), 5, true).await;
    assert_eq!(values(&again), values(&first));
    c.close().await.unwrap();
}

pub(crate) async fn consumers_of_one_group_share_the_work(b: Arc<dyn Broker>, o: ConsumerOptions) {
    let topic = unique("share");
    let group = unique("g");
    b.ensure_topic(&topic, 8).await.unwrap();
    let a = b.subscribe(&topic, &group, "a", o.clone()).await.unwrap();
    let c = b.subscribe(&topic, &group, "b", o).await.unwrap();
    // Let both join before anything is produced.
    let _ = a.poll(1, Duration::from_millis(300)).await.unwrap();
    let _ = c.poll(1, Duration::from_millis(300)).await.unwrap();
    let produced = records(400, 8);
    let want: BTreeSet<_> = produced.iter().map(|r| r.value.clone()).collect();
    b.produce(&topic, produced).await.unwrap();
    let (mut by_a, mut by_b) = (BTreeSet::new(), BTreeSet::new());
    let deadline = Instant::now() + PATIENCE;
    while by_a.len() + by_b.len() < 400 && Instant::now() < deadline {
        for (consumer, seen) in [(&a, &mut by_a), (&c, &mut by_b)] {
            let batch = consumer.poll(20, Duration::from_millis(100)).await.unwrap();
            if !batch.is_empty() {
                consumer
                    .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
            seen.extend(batch.into_iter().map(|d| d.value));
        }
    }
    assert!(
        by_a.is_disjoint(&by_b),
        "acked work must not be delivered twice"
    );
    assert_eq!(by_a.union(&by_b).cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "both consumers must get work: a={} b={}",
        by_a.len(),
        by_b.len()
    );
    a.close().await.unwrap();
    c.close().await.unwrap();
}

pub(crate) async fn lag_falls_to_zero_once_everything_is_acked(
    b: Arc<dyn Broker>,
    o: ConsumerOptions,
) {
    let topic = unique("lag");
    let group = unique("g");
    b.ensure_topic(&topic, 2).await.unwrap();
    b.produce(&topic, records(10, 2)).await.unwrap();
    let c = b.subscribe(&topic, &group, "c1", o).await.unwrap();
    let before: u64 = b
        .lag(&topic, &group)
        .await
        .unwrap()
        .iter()
        .map(|l| l.lag)
        .sum();
    assert_eq!(before, 10);
    drain(c.as_ref(), 10, true).await;
    let deadline = Instant::now() + PATIENCE;
    let mut after = u64::MAX;
    while after != 0 && Instant::now() < deadline {
        after = b
            .lag(&topic, &group)
            .await
            .unwrap()
            .iter()
            .map(|l| l.lag)
            .sum();
        if after != 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(after, 0);
    c.close().await.unwrap();
}

pub(crate) async fn bad_requests_fail_with_the_right_kind(b: Arc<dyn Broker>) {
    let topic = unique("bad");
    let err = b.produce(&topic, records(1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    b.ensure_topic(&topic, 2).await.unwrap();
    b.ensure_topic(&topic, 2).await.unwrap();
    assert_eq!(b.partitions(&topic).await.unwrap(), 2);
    let err = b.produce(&topic, Vec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let mut bad = records(1, 1);
    bad[0].partition = Some(2);
    let err = b.produce(&topic, bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    b.ready().await.unwrap();
}

/// What a backend's `open` returns: the fixture and broker, or (for a backend over an
/// external server that is not available outside CI) `None` to skip the test.
pub(crate) trait Opened {
    type Fixture;
    fn opened(self) -> Option<(Self::Fixture, Arc<dyn Broker>)>;
}

impl<F> Opened for (F, Arc<dyn Broker>) {
    type Fixture = F;
    fn opened(self) -> Option<(F, Arc<dyn Broker>)> {
        Some(self)
    }
}

impl<F> Opened for Option<(F, Arc<dyn Broker>)> {
    type Fixture = F;
    fn opened(self) -> Option<(F, Arc<dyn Broker>)> {
        self
    }
}

/// Generates one `#[tokio::test]` per conformance check for a backend.
///
/// `$open` is an async fn returning `(fixture, Arc<dyn Broker>)`, or an `Option` of it
/// where `None` skips the test (see [`Opened`]); `$opts` an expression giving the
/// [`ConsumerOptions`] to use.
macro_rules! conformance_suite {
    ($open:ident, $opts:expr) => {
        mod conformance {
            use super::*;
            use $crate::conformance as c;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_fixture, broker)) = c::Opened::opened($open().await) else {
                            return;
                        };
                        c::$name(broker).await;
                    }
                };
                ($name:ident, opts) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_fixture, broker)) = c::Opened::opened($open().await) else {
                            return;
                        };
                        c::$name(broker, $opts).await;
                    }
                };
            }

            check!(produce_returns_one_id_per_record_in_order);
            check!(bad_requests_fail_with_the_right_kind);
            check!(new_group_receives_every_record_from_the_beginning, opts);
            check!(acked_records_are_not_delivered_again, opts);
            check!(unacked_records_are_redelivered_after_close, opts);
            check!(unacked_records_are_redelivered_after_consumer_dies, opts);
            check!(nacked_records_are_redelivered, opts);
            check!(an_ensured_group_keeps_records_through_retention, opts);
            check!(consumers_of_one_group_share_the_work, opts);
            check!(lag_falls_to_zero_once_everything_is_acked, opts);
        }
    };
}
pub(crate) use conformance_suite;
