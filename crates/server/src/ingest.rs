//! The one place that turns validated points and events into broker records.
//!
//! - Points go to the metrics topic: partition = `jump_hash(point_key, partitions)` (set
//!   explicitly, so placement is the same on every backend and process), key = the
//!   point key as 8 big-endian bytes, value = `encode_point`.
//! - Events go to the events topic: partition = `partition_of_key(source_id)`, key =
//!   the source id, value = `encode_event`; one source's events stay in order.
//! - Backpressure: a semaphore of `max_inflight_records` permits. A request takes one
//!   permit per record with `try_acquire_many` and holds them until `produce` returns;
//!   when they are not available it fails at once with [`Error::Overloaded`] instead
//!   of queueing. The telemetry gauge `queue_depth{queue="inflight_records"}` counts
//!   the permits held.
//! - Ids are returned in input order, only after `produce` returned (the batch is
//!   durable).
//! - Stream events (`nimbus.NimbusService`, `datanexus.v1.EventStream`) are events
//!   like the others, with [`Event::stream`] set: [`Ingestor::stream_events`] returns
//!   their [`RecordId`]s, from which the result seq (event offset + 1) follows.
//!
//! All records of one request are encoded into a single buffer; each record's key and
//! value are zero-copy slices of it.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datanexus_broker::{Broker, ProduceRecord, RecordId};
use datanexus_model::codec::{encode_event, encode_point, point_key};
use datanexus_model::series::partition_of_key;
use datanexus_model::{Event, Point, jump_hash};
use datanexus_telemetry::{Queue, QueueLabels, Telemetry};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{Error, Result};

const NANOS_PER_MILLI: i64 = 1_000_000;

/// A topic and its partition count.
#[derive(Debug, Clone)]
pub(crate) struct TopicTarget {
    pub(crate) name: String,
    pub(crate) partitions: u32,
}

/// Writes points and events to the broker under a bounded in-flight budget.
pub(crate) struct Ingestor {
    broker: Arc<dyn Broker>,
    metrics: TopicTarget,
    events: TopicTarget,
    budget: Semaphore,
    max_inflight_records: usize,
    /// `queue_depth{queue="inflight_records"}`.
    inflight: Gauge,
}

/// Permits of the in-flight budget, reflected in the in-flight gauge while held.
struct Reservation<'a> {
    _permits: SemaphorePermit<'a>,
    inflight: &'a Gauge,
    records: i64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.inflight.dec_by(self.records);
    }
}

/// One record's placement and where its key and value sit in the shared buffer.
struct Slot {
    partition: u32,
    key: Range<usize>,
    value: Range<usize>,
    timestamp_ms: i64,
}

impl Ingestor {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        metrics: TopicTarget,
        events: TopicTarget,
        max_inflight_records: usize,
        telemetry: &Telemetry,
    ) -> Self {
        let permits = max_inflight_records.min(Semaphore::MAX_PERMITS);
        let inflight = telemetry
            .queue_depth
            .get_or_create(&QueueLabels {
                queue: Queue::InflightRecords,
            })
            .clone();
        Ingestor {
            broker,
            metrics,
            events,
            budget: Semaphore::new(permits),
            max_inflight_records: permits,
            inflight,
        }
    }

    /// Appends `points` to the metrics topic; returns their record ids in order.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the in-flight budget is exhausted; broker errors.
    pub(crate) async fn points(&self, points: &[Point]) -> Result<Vec<String>> {
        let _permits = self.reserve(points.len())?;
        let records = point_records(points, self.metrics.partitions);
        let ids = self
            .produce(&self.metrics.name, records, points.len())
            .await?;
        Ok(ids.iter().map(RecordId::to_string).collect())
    }

    /// Appends `events` to the events topic; returns their record ids in order.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the in-flight budget is exhausted; broker errors.
    pub(crate) async fn events(&self, events: &[Event]) -> Result<Vec<String>> {
        let ids = self.stream_events(events).await?;
        Ok(ids.iter().map(RecordId::to_string).collect())
    }

    /// Appends `events` (stream events or not) to the events topic; returns their
    /// record ids in order, once they are durable.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the in-flight budget is exhausted; broker errors.
    pub(crate) async fn stream_events(&self, events: &[Event]) -> Result<Vec<RecordId>> {
        let _permits = self.reserve(events.len())?;
        let records = event_records(events, self.events.partitions);
        self.produce(&self.events.name, records, events.len()).await
    }

    fn reserve(&self, records: usize) -> Result<Reservation<'_>> {
        let overloaded = || {
            Error::Overloaded(format!(
                "{records} records do not fit the in-flight budget of {} records",
                self.max_inflight_records
            ))
        };
        let n = u32::try_from(records).map_err(|_| overloaded())?;
        let permits = self.budget.try_acquire_many(n).map_err(|_| overloaded())?;
        let records = i64::from(n);
        self.inflight.inc_by(records);
        Ok(Reservation {
            _permits: permits,
            inflight: &self.inflight,
            records,
        })
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        expected: usize,
    ) -> Result<Vec<RecordId>> {
        let ids = self.broker.produce(topic, records).await?;
        if ids.len() != expected {
            return Err(Error::Internal(format!(
                "broker returned {} ids for {expected} records on topic {topic:?}",
                ids.len()
            )));
        }
        Ok(ids)
    }
}

/// Records of `points` for a topic of `partitions` partitions.
fn point_records(points: &[Point], partitions: u32) -> Vec<ProduceRecord> {
    encode_all(points, |p, buf| {
        let key = point_key(&p.measurement, &p.labels);
        buf.extend_from_slice(&key.to_be_bytes());
        let key_end = buf.len();
        encode_point(p, buf);
        (jump_hash(key, partitions), key_end, p.timestamp_ns)
    })
}

/// Records of `events` for a topic of `partitions` partitions.
fn event_records(events: &[Event], partitions: u32) -> Vec<ProduceRecord> {
    encode_all(events, |e, buf| {
        buf.extend_from_slice(e.source_id.as_bytes());
        let key_end = buf.len();
        encode_event(e, buf);
        (
            partition_of_key(&e.source_id, partitions),
            key_end,
            e.timestamp_ns,
        )
    })
}

/// Encodes every item into one buffer with `encode` (which appends the key, then the
/// value, and returns the partition, the end of the key and the timestamp in ns), then
/// slices the buffer into records.
fn encode_all<T>(
    items: &[T],
    mut encode: impl FnMut(&T, &mut Vec<u8>) -> (u32, usize, i64),
) -> Vec<ProduceRecord> {
    let mut buf = Vec::with_capacity(items.len() * 96);
    let slots: Vec<Slot> = items
        .iter()
        .map(|item| {
            let start = buf.len();
            let (partition, key_end, timestamp_ns) = encode(item, &mut buf);
            Slot {
                partition,
                key: start..key_end,
                value: key_end..buf.len(),
                timestamp_ms: timestamp_ns.div_euclid(NANOS_PER_MILLI),
            }
        })
        .collect();
    let buf = Bytes::from(buf);
    slots
        .into_iter()
        .map(|s| ProduceRecord {
            partition: Some(s.partition),
            key: Some(buf.slice(s.key)),
            value: buf.slice(s.value),
            timestamp_ms: s.timestamp_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datanexus_model::codec::{decode_event, decode_point};
    use datanexus_model::{Labels, MetricType};

    use super::*;

    fn point(name: &str, host: &str, value: f64) -> Point {
        let labels = Labels::new([("host".to_owned(), host.to_owned())]).unwrap();
        Point::sample(name, labels, value, 1_700_000_000_123_456_789).with_kind(MetricType::Gauge)
    }

    #[test]
    fn point_records_are_keyed_partitioned_and_decodable() {
        let points = [point("cpu", "a", 1.0), point("mem", "b", 2.5)];
        let records = point_records(&points, 8);
        assert_eq!(records.len(), 2);
        for (record, p) in records.iter().zip(&points) {
            let key = point_key(&p.measurement, &p.labels);
            assert_eq!(record.key.as_deref(), Some(&key.to_be_bytes()[..]));
            assert_eq!(record.partition, Some(jump_hash(key, 8)));
            assert_eq!(record.timestamp_ms, 1_700_000_000_123);
            assert_eq!(&decode_point(&record.value).unwrap(), p);
        }
    }

    #[tokio::test]
    async fn records_holding_the_budget_are_shown_as_queue_depth() {
        let dir = tempfile::tempdir().unwrap();
        let broker = datanexus_broker::embedded::EmbeddedBroker::open(
            dir.path(),
            datanexus_broker::embedded::EmbeddedOptions::default(),
        )
        .unwrap();
        let target = |name: &str| TopicTarget {
            name: name.into(),
            partitions: 1,
        };
        let telemetry = Telemetry::new();
        let ingestor = Ingestor::new(
            Arc::new(broker),
            target("metrics"),
            target("events"),
            10,
            &telemetry,
        );
        let depth = || {
            telemetry
                .queue_depth
                .get_or_create(&QueueLabels {
                    queue: Queue::InflightRecords,
                })
                .get()
        };
        let first = ingestor.reserve(3).unwrap();
        let second = ingestor.reserve(7).unwrap();
        assert_eq!(depth(), 10);
        assert!(matches!(ingestor.reserve(1), Err(Error::Overloaded(_))));
        drop(first);
        assert_eq!(depth(), 7);
        drop(second);
        assert_eq!(depth(), 0);
    }

    #[test]
    fn event_records_round_trip() {
        let payload = serde_json::json!({"t": 1.5}).as_object().cloned().unwrap();
        let events = [Event::new("sensor-1".into(), 5_000_000, payload).unwrap()];
        let records = event_records(&events, 4);
        assert_eq!(records[0].partition, Some(partition_of_key("sensor-1", 4)));
        assert_eq!(records[0].key.as_deref(), Some(&b"sensor-1"[..]));
        assert_eq!(records[0].timestamp_ms, 5);
        assert_eq!(decode_event(&records[0].value).unwrap(), events[0]);
    }
}
