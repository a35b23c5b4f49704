//! Topics, metadata, lag and readiness. librdkafka's metadata and offset calls block,
//! so they run on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::{Inner, kafka_error, kafka_error_on, lock};
use crate::{Error, PartitionLag, Result};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// How often `ensure_topic` looks for a topic it created in the metadata.
const METADATA_RETRY: Duration = Duration::from_millis(100);

/// Runs a blocking librdkafka call on the blocking pool.
pub(super) async fn blocking<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::Internal(format!("kafka client task failed: {e}")))
}

/// Checks a topic name as Kafka does: 1..=249 characters of `[A-Za-z0-9._-]`, not `.`
/// or `..`.
pub(super) fn validate_topic(topic: &str) -> Result<()> {
    if datanexus_seglog::is_valid_name(topic, MAX_TOPIC_LEN) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid topic name {topic:?}: 1..={MAX_TOPIC_LEN} characters of [A-Za-z0-9._-]"
        )))
    }
}

/// The partition count of `topic` from the cluster's metadata, `None` if it does not
/// exist (yet).
async fn fetch_partitions(inner: &Arc<Inner>, topic: &str) -> Result<Option<u32>> {
    validate_topic(topic)?;
    let client = Arc::clone(inner);
    let name = topic.to_owned();
    let timeout = inner.options.request_timeout;
    let metadata = blocking(move || client.admin.inner().fetch_metadata(Some(&name), timeout))
        .await?
        .map_err(|e| {
            kafka_error_on(
                &e,
                Some(topic),
                &format!("cannot fetch metadata of {topic:?}"),
            )
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None if found.partitions().is_empty() => Ok(None),
        None => Ok(Some(
            u32::try_from(found.partitions().len()).unwrap_or(u32::MAX),
        )),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            Ok(None)
        }
        Some(code) => Err(kafka_error_on(
            &KafkaError::MetadataFetch(code),
            Some(topic),
            &format!("metadata of {topic:?}"),
        )),
    }
}

/// The partition count of `topic` (cached once seen).
///
/// # Errors
/// [`Error::UnknownTopic`] when it does not exist; metadata failures.
pub(super) async fn partitions(inner: &Arc<Inner>, topic: &str) -> Result<u32> {
    if let Some(&count) = lock(&inner.partitions).get(topic) {
        return Ok(count);
    }
    match fetch_partitions(inner, topic).await? {
        Some(count) => {
            lock(&inner.partitions).insert(topic.to_owned(), count);
            Ok(count)
        }
        None => Err(Error::UnknownTopic(topic.to_owned())),
    }
}

fn same_count(topic: &str, existing: u32, wanted: u32) -> Result<()> {
    if existing == wanted {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "topic {topic:?} has {existing} partitions, not {wanted}"
        )))
    }
}

/// Creates `topic` with `wanted` partitions unless it exists; fails if it exists with
/// another count.
pub(super) async fn ensure_topic(inner: &Arc<Inner>, topic: &str, wanted: u32) -> Result<()> {
    validate_topic(topic)?;
    let count = i32::try_from(wanted)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::Invalid(format!("partition count {wanted} out of range")))?;
    match partitions(inner, topic).await {
        Ok(existing) => return same_count(topic, existing, wanted),
        Err(Error::UnknownTopic(_)) => {}
        Err(e) => return Err(e),
    }
    let timeout = inner.options.request_timeout;
    let replication = TopicReplication::Fixed(i32::from(inner.options.replication_factor));
    let new = NewTopic::new(topic, count, replication);
    let admin_options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = inner
        .admin
        .create_topics([&new], &admin_options)
        .await
        .map_err(|e| kafka_error_on(&e, Some(topic), &format!("cannot create topic {topic:?}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(kafka_error_on(
                    &KafkaError::AdminOp(code),
                    Some(topic),
                    &format!("cannot create topic {name:?} with {wanted} partitions"),
                ));
            }
        }
    }
    // Creation is asynchronous in Kafka: wait until the metadata shows the topic.
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(existing) = fetch_partitions(inner, topic).await? {
            lock(&inner.partitions).insert(topic.to_owned(), existing);
            return same_count(topic, existing, wanted);
        }
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "topic {topic:?} was created but is not in the metadata after {timeout:?}"
            )));
        }
        tokio::time::sleep(METADATA_RETRY).await;
    }
}

/// The client reading `group`'s committed offsets (created once per group).
fn offset_reader(inner: &Inner, group: &str) -> Result<Arc<BaseConsumer>> {
    let mut readers = lock(&inner.offset_readers);
    if let Some(reader) = readers.get(group) {
        return Ok(Arc::clone(reader));
    }
    let reader: BaseConsumer =
        inner.options.offsets_config(group).create().map_err(|e| {
            kafka_error(&e, &format!("cannot create an offset reader of {group:?}"))
        })?;
    let reader = Arc::new(reader);
    readers.insert(group.to_owned(), Arc::clone(&reader));
    Ok(reader)
}

/// Per partition, the log end minus the group's committed offset (or the low
/// watermark where it committed nothing, as a new group starts at the beginning).
///
/// The log end is the high watermark (ListOffsets), or the end this process's producer
/// saw in delivery reports if that is further: some Kafka-compatible brokers (tansu
/// 0.6) answer ListOffsets with one past the base offset of the last record batch.
pub(super) async fn lag(inner: &Arc<Inner>, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
    let count = partitions(inner, topic).await?;
    let reader = offset_reader(inner, group)?;
    let produced_ends = lock(&inner.produced_ends)
        .get(topic)
        .cloned()
        .unwrap_or_default();
    let timeout = inner.options.request_timeout;
    let name = topic.to_owned();
    let lags = blocking(move || -> Result<Vec<PartitionLag>, KafkaError> {
        let mut wanted = TopicPartitionList::new();
        for partition in 0..count {
            wanted.add_partition(&name, partition as i32);
        }
        let committed = reader.committed_offsets(wanted, timeout)?;
        let mut lags = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let (low, high) = reader.fetch_watermarks(&name, partition as i32, timeout)?;
            let produced_end = produced_ends.get(partition as usize).copied().unwrap_or(0);
            let high = high.max(i64::try_from(produced_end).unwrap_or(i64::MAX));
            let committed = committed
                .find_partition(&name, partition as i32)
                .and_then(|elem| match elem.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let from = committed.unwrap_or(low).max(low);
            lags.push(PartitionLag {
                partition,
                lag: u64::try_from(high - from).unwrap_or(0),
            });
        }
        Ok(lags)
    })
    .await?;
    lags.map_err(|e| {
        kafka_error_on(
            &e,
            Some(topic),
            &format!("cannot read the lag of group {group:?} on {topic:?}"),
        )
    })
}

/// Fetches the cluster's metadata: some broker answers.
pub(super) async fn ready(inner: &Arc<Inner>) -> Result<()> {
    let client = Arc::clone(inner);
    let timeout = inner.options.request_timeout;
    let brokers = blocking(move || {
        client
            .admin
            .inner()
            .fetch_metadata(None, timeout)
            .map(|metadata| metadata.brokers().len())
    })
    .await?
    .map_err(|e| {
        kafka_error(
            &e,
            &format!(
                "kafka at {} is unreachable",
                inner.options.bootstrap_servers
            ),
        )
    })?;
    if brokers == 0 {
        return Err(Error::Unavailable(format!(
            "kafka at {} lists no brokers",
            inner.options.bootstrap_servers
        )));
    }
    Ok(())
}
