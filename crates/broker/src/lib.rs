//! The `Broker` trait of Data Nexus — durable, partitioned topics with consumer groups —
//! and its backends.
//!
//! The same pipeline code runs over every backend, so the trait is shaped for all of
//! them: it is batch-first (`produce` takes a batch and returns once the batch is
//! durable), record ids are opaque ([`RecordId`]: an offset for the embedded log and
//! Kafka, a stream entry id for Redis Streams), acknowledgement is per record (Redis
//! acks entries; Kafka and the embedded log commit the contiguous acknowledged prefix of
//! each partition), and redelivery of a dead consumer's work (lease expiry, `XAUTOCLAIM`,
//! group rebalance) happens inside [`Consumer::poll`].
//!
//! # Layout
//! - [`Broker`], [`Consumer`]: the traits; [`ProduceRecord`], [`Delivery`], [`RecordId`].
//! - [`embedded`]: the backend over the embedded durable log (`datanexus-seglog`).
//! - `redis_streams` (feature `redis`): the backend over Redis Streams and consumer
//!   groups, with heartbeats and claims for the work of dead consumers.
//! - `kafka` (feature `kafka`): the backend over Kafka (librdkafka), an idempotent
//!   producer and consumer groups committing the acknowledged prefix.
//! - [`error`]: [`Error`] with its [`ErrorKind`].
//! - `conformance` (tests only): the suite every backend must pass.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
pub use bytes::Bytes;

pub mod embedded;
pub mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod redis_streams;

#[cfg(test)]
mod conformance;
#[cfg(any(
    all(test, any(feature = "redis", feature = "kafka")),
    feature = "testkit"
))]
pub mod testkit;

pub use error::{Error, ErrorKind, Result};

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceRecord {
    /// The partition; `None` lets the broker pick by jump hash of the key's xxh3 (or
    /// round-robin without a key). Callers that need stable placement across processes
    /// and backends set it explicitly.
    pub partition: Option<u32>,
    /// Optional key (carried to consumers).
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Where records without an explicit partition go, the same on every backend: the
/// caller's partition (checked), else the jump hash of the key's xxh3 (so a key lands
/// on the same partition whichever backend or process produces it), else round-robin.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    round_robin: std::sync::atomic::AtomicU32,
}

impl Placement {
    /// The partition of `record` in a topic of `partitions` (at least 1).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an explicit partition out of range.
    pub(crate) fn pick(&self, record: &ProduceRecord, partitions: u32) -> Result<u32> {
        match (record.partition, &record.key) {
            (Some(p), _) if p < partitions => Ok(p),
            (Some(p), _) => Err(Error::Invalid(format!(
                "partition {p} out of range (topic has {partitions})"
            ))),
            (None, Some(key)) => Ok(datanexus_model::series::partition_of_bytes(key, partitions)),
            (None, None) => Ok(self
                .round_robin
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % partitions.max(1)),
        }
    }
}

/// Where a record sits in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Position {
    /// A dense per-partition offset (embedded log, Kafka).
    Offset(u64),
    /// A Redis stream entry id `ms-seq`.
    StreamId {
        /// Milliseconds part.
        ms: u64,
        /// Sequence part.
        seq: u64,
    },
}

/// The id of a durable record: unique within a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// Partition.
    pub partition: u32,
    /// Position within the partition.
    pub position: Position,
}

impl RecordId {
    /// An offset-based id.
    pub fn offset(partition: u32, offset: u64) -> Self {
        RecordId {
            partition,
            position: Position::Offset(offset),
        }
    }
}

impl fmt::Display for RecordId {
    /// `p{partition}-{offset}` or `p{partition}-{ms}-{seq}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Offset(o) => write!(f, "p{}-{o}", self.partition),
            Position::StreamId { ms, seq } => write!(f, "p{}-{ms}-{seq}", self.partition),
        }
    }
}

/// A record delivered to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id (what to ack).
    pub id: RecordId,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its payload.
    pub value: Bytes,
    /// Milliseconds since the Unix epoch, as produced.
    pub timestamp_ms: i64,
    /// 1 on first delivery, more when redelivered.
    pub delivery_count: u32,
}

/// Options of a group consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// How long a delivered record may stay unacknowledged before it is redelivered.
    pub lease_timeout: Duration,
    /// How long a consumer may go without polling or heartbeating before it is
    /// considered dead and its work handed to others.
    pub session_timeout: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            lease_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// Consumer-group progress on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition.
    pub partition: u32,
    /// Records produced and durable but not yet committed by the group.
    pub lag: u64,
}

/// A durable, partitioned log of topics with consumer groups.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The backend's name (`embedded`, `redis`, `kafka`).
    fn name(&self) -> &'static str;

    /// Creates `topic` with `partitions` partitions if missing.
    ///
    /// # Errors
    /// If it exists with another partition count, or the backend is unreachable.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()>;

    /// The partition count of `topic`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown topic.
    async fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends a batch and returns once all of it is durable, with one id per record in
    /// input order. If it fails, none of the batch may be assumed durable (but some of
    /// it may be: producers retry, consumers and stores are idempotent).
    ///
    /// # Errors
    /// Unknown topic or partition, empty or oversized batch, backend unavailable.
    async fn produce(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<RecordId>>;

    /// Joins consumer group `group` on `topic` as `consumer`.
    ///
    /// # Errors
    /// Unknown topic, backend unavailable.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>>;

    /// Creates consumer group `group` on `topic`, positioned at the beginning, if it
    /// does not exist, without joining it. Retention keeps what a group has not
    /// consumed only once the group exists, so processes create every group of the
    /// pipeline at start-up, before any of its consumers may have joined. The default
    /// does nothing (backends whose retention does not follow groups: Kafka).
    ///
    /// # Errors
    /// Unknown topic, backend unavailable.
    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        let _ = (topic, group);
        Ok(())
    }

    /// Per-partition lag of `group` on `topic`.
    ///
    /// # Errors
    /// Unknown topic, backend unavailable.
    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>>;

    /// Checks the backend is reachable and writable (for `/ready`).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when it is not.
    async fn ready(&self) -> Result<()>;

    /// Applies retention (never dropping what a group has not committed).
    ///
    /// # Errors
    /// I/O or backend errors.
    async fn enforce_retention(&self) -> Result<()>;

    /// Flushes and stops; later calls fail with [`ErrorKind::Closed`].
    ///
    /// # Errors
    /// If the final flush fails.
    async fn stop(&self) -> Result<()>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// This consumer's id within its group.
    fn id(&self) -> &str;

    /// Next records for this consumer: redelivered ones (its own unacknowledged, or a
    /// dead member's) first, then new ones; waits up to `wait` when there are none.
    ///
    /// # Errors
    /// Backend unavailable, consumer closed.
    async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Marks records done: they will not be delivered to the group again.
    ///
    /// # Errors
    /// [`ErrorKind::Fenced`] if the records were handed to another consumer meanwhile
    /// (their lease expired): the work may be repeated by that consumer.
    async fn ack(&self, ids: &[RecordId]) -> Result<()>;

    /// Gives records back for redelivery now.
    ///
    /// # Errors
    /// Backend unavailable.
    async fn nack(&self, ids: &[RecordId]) -> Result<()>;

    /// Tells the group this consumer is alive (when processing takes long).
    ///
    /// # Errors
    /// Backend unavailable.
    async fn heartbeat(&self) -> Result<()>;

    /// Leaves the group; unacknowledged records go to other members.
    ///
    /// # Errors
    /// Backend unavailable.
    async fn close(&self) -> Result<()>;
}
