//! `produce`: placement, enqueueing and delivery reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{Inner, admin, kafka_error_on, lock};
use crate::{Error, ProduceRecord, RecordId, Result};

/// How long to wait before enqueueing again when librdkafka's queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(10);

/// The partition of `record` in a topic of `partitions` ([`crate::Placement`]), as
/// librdkafka's type.
fn pick_partition(inner: &Inner, record: &ProduceRecord, partitions: u32) -> Result<i32> {
    let partition = inner.placement.pick(record, partitions)?;
    i32::try_from(partition).map_err(|_| Error::Invalid(format!("partition {partition} too large")))
}

/// Hands one record to librdkafka, waiting (until `deadline`) while its queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    record: &ProduceRecord,
    partition: i32,
    deadline: Instant,
) -> Result<DeliveryFuture> {
    loop {
        let mut message = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(&record.value[..]);
        if let Some(key) = &record.key {
            message = message.key(&key[..]);
        }
        // librdkafka stamps records without a timestamp (or 0) with the current time.
        if record.timestamp_ms > 0 {
            message = message.timestamp(record.timestamp_ms);
        }
        let queue_full = match producer.send_result(message) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => true,
            Err((e, _)) => {
                return Err(kafka_error_on(
                    &e,
                    Some(topic),
                    &format!("cannot produce to {topic:?} partition {partition}"),
                ));
            }
        };
        if queue_full && Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "the kafka producer queue stayed full (producing to {topic:?})"
            )));
        }
        tokio::time::sleep(QUEUE_FULL_RETRY).await;
    }
}

/// Produces `records` to `topic`; returns once every delivery report succeeded.
pub(super) async fn produce(
    inner: &Arc<Inner>,
    topic: &str,
    records: Vec<ProduceRecord>,
) -> Result<Vec<RecordId>> {
    if records.is_empty() {
        return Err(Error::Invalid("empty batch".into()));
    }
    let partitions = admin::partitions(inner, topic).await?;
    let placed = records
        .iter()
        .map(|record| pick_partition(inner, record, partitions))
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + inner.options.delivery_timeout;
    let mut deliveries = Vec::with_capacity(records.len());
    for (record, &partition) in records.iter().zip(&placed) {
        deliveries.push(enqueue(&inner.producer, topic, record, partition, deadline).await?);
    }
    let reports = deliveries.into_iter().map(|delivery| async move {
        let report = delivery.await.map_err(|_| Error::Closed)?;
        let delivered = report.map_err(|(e, _)| {
            kafka_error_on(&e, Some(topic), &format!("delivery to {topic:?} failed"))
        })?;
        let partition = u32::try_from(delivered.partition).ok();
        let offset = u64::try_from(delivered.offset).ok();
        match (partition, offset) {
            (Some(partition), Some(offset)) => Ok(RecordId::offset(partition, offset)),
            _ => Err(Error::Internal(format!(
                "delivery report to {topic:?} without an offset (partition {}, offset {}): \
                 is `acks` 0?",
                delivered.partition, delivered.offset
            ))),
        }
    });
    let ids = try_join_all(reports).await?;
    remember_ends(inner, topic, partitions, &ids);
    Ok(ids)
}

/// Records one past the highest offset delivered per partition.
fn remember_ends(inner: &Inner, topic: &str, partitions: u32, ids: &[RecordId]) {
    let mut ends = lock(&inner.produced_ends);
    let ends = ends
        .entry(topic.to_owned())
        .or_insert_with(|| vec![0; partitions as usize]);
    for id in ids {
        if let (Some(end), crate::Position::Offset(offset)) =
            (ends.get_mut(id.partition as usize), id.position)
        {
            *end = (*end).max(offset + 1);
        }
    }
}
