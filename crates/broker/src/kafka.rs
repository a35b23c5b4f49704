//! The Kafka backend (feature `kafka`): topics are Kafka topics, consumer groups are
//! Kafka consumer groups, over librdkafka (`rdkafka`, built from source).
//!
//! # Produce and durability
//! One idempotent producer per broker (`enable.idempotence`, `acks=all`, lz4). A batch
//! is enqueued record by record (waiting while librdkafka's queue is full) and
//! [`Broker::produce`] returns once every delivery report of the batch succeeded; the
//! ids are the offsets of the reports ([`RecordId::offset`]). A failed report fails the
//! batch (other records of it may be durable: consumers and stores are idempotent).
//! Records keep their key and timestamp (one of 0 or less becomes the time of
//! producing, as Kafka has no "no timestamp"). The partition is the caller's
//! ([`ProduceRecord::partition`]) or, without one, the jump hash of the key's xxh3
//! ([`datanexus_model::series::partition_of_bytes`], as the embedded log), so placement
//! is the same across processes and backends; without a key, round-robin. Partition
//! counts come from metadata and are cached per broker (a topic's count must not change
//! while processes run).
//!
//! # Topics
//! [`Broker::ensure_topic`] creates a missing topic (CreateTopics, with the configured
//! replication factor; brokers' own topic defaults otherwise) and fails with
//! [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when it exists with
//! another partition count. Clients never create topics implicitly
//! (`allow.auto.create.topics=false`). Names are 1..=249 characters of
//! `[A-Za-z0-9._-]`. Retention is Kafka's own (`retention.ms`, `retention.bytes` of the
//! topics): [`Broker::enforce_retention`] does nothing. Note that Kafka's retention,
//! unlike the embedded log's, does not wait for consumer groups.
//!
//! # Consumers
//! See [`consumer`]: a member of a Kafka group with manual commits of the contiguous
//! acknowledged prefix of each partition.
//!
//! # Lag
//! [`Broker::lag`] is, per partition, the log end (ListOffsets) minus the group's
//! committed offset (the low watermark when it committed nothing); see `admin::lag`
//! for brokers whose ListOffsets undercounts.
//!
//! # Client properties
//! The configured `properties` are passed to every client (producer, admin, consumers)
//! after the backend's own settings, so they override them (`compression.type`,
//! `linger.ms`, `acks`, `session.timeout.ms`…), except what correctness rests on:
//! `group.id`, `enable.auto.commit=false`, `enable.auto.offset.store=false`. The build
//! (librdkafka with zlib, snappy, lz4 and OpenSSL, no Cyrus SASL) supports
//! `security.protocol` `plaintext`, `ssl`, `sasl_plaintext` and `sasl_ssl` with
//! `sasl.mechanism` `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` and `OAUTHBEARER`
//! (not `GSSAPI`, not OIDC token fetching); compression `gzip`, `snappy`, `lz4`
//! (not `zstd`).
//!
//! # Errors
//! librdkafka errors map to [`ErrorKind`](crate::ErrorKind)s: timeouts, transport
//! failures and missing leaders or replicas are `Unavailable`; unknown topics
//! `NotFound`; bad sizes, names, partitions and properties `InvalidInput`; lost group
//! generations `Fenced`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::{
    Broker, Consumer, ConsumerOptions, Error, PartitionLag, ProduceRecord, RecordId, Result,
};

mod admin;
mod config;
pub mod consumer;
mod producer;
#[cfg(test)]
mod tests;

pub use config::KafkaOptions;
pub use consumer::KafkaConsumer;

/// The Kafka broker.
#[derive(Clone)]
pub struct KafkaBroker {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Partition counts of the topics seen.
    partitions: Mutex<HashMap<String, u32>>,
    /// Per topic and partition, one past the highest offset this producer got a
    /// delivery report for (see [`admin::lag`]).
    produced_ends: Mutex<HashMap<String, Vec<u64>>>,
    /// Clients reading groups' committed offsets (for lag), by group.
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    placement: crate::Placement,
    /// Shared with the consumers, which answer `Closed` once the broker stopped.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl KafkaBroker {
    /// Creates the producer and admin clients. No I/O: they connect on first use (see
    /// [`Broker::ready`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for zero timeouts and
    /// properties librdkafka rejects (unknown names, bad values, features not in this
    /// build).
    pub fn open(options: KafkaOptions) -> Result<Self> {
        for (name, timeout) in [
            ("request_timeout", options.request_timeout),
            ("delivery_timeout", options.delivery_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::Invalid(format!("kafka {name} must be positive")));
            }
        }
        let producer: FutureProducer = options
            .producer_config()
            .create()
            .map_err(|e| kafka_error(&e, "cannot create the kafka producer"))?;
        let admin: AdminClient<DefaultClientContext> = options
            .admin_config()
            .create()
            .map_err(|e| kafka_error(&e, "cannot create the kafka admin client"))?;
        Ok(KafkaBroker {
            inner: Arc::new(Inner {
                options,
                producer,
                admin,
                partitions: Mutex::default(),
                produced_ends: Mutex::default(),
                offset_readers: Mutex::default(),
                placement: crate::Placement::default(),
                closed: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.check_open()?;
        admin::ensure_topic(&self.inner, topic, partitions).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.check_open()?;
        admin::partitions(&self.inner, topic).await
    }

    async fn produce(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<RecordId>> {
        self.check_open()?;
        producer::produce(&self.inner, topic, records).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        admin::partitions(&self.inner, topic).await?;
        let config = self
            .inner
            .options
            .consumer_config(group, consumer, &options);
        let consumer = KafkaConsumer::subscribe(
            &config,
            topic,
            consumer,
            options,
            self.inner.options.request_timeout,
            Arc::clone(&self.inner.closed),
        )?;
        Ok(Box::new(consumer))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.check_open()?;
        admin::lag(&self.inner, topic, group).await
    }

    async fn ready(&self) -> Result<()> {
        self.check_open()?;
        admin::ready(&self.inner).await
    }

    /// Kafka applies the topics' own retention (`retention.ms`, `retention.bytes`).
    async fn enforce_retention(&self) -> Result<()> {
        self.check_open()
    }

    async fn stop(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let timeout = inner.options.delivery_timeout;
        let readers: Vec<_> = lock(&inner.offset_readers).drain().collect();
        tokio::task::spawn_blocking(move || {
            drop(readers);
            rdkafka::producer::Producer::flush(&inner.producer, timeout)
        })
        .await
        .map_err(|e| Error::Internal(format!("kafka flush task failed: {e}")))?
        .map_err(|e| kafka_error(&e, "cannot flush the kafka producer"))
    }
}

impl Drop for Inner {
    /// Destroying librdkafka clients blocks (the producer flushes, readers leave):
    /// done off the async runtime when there is one.
    fn drop(&mut self) {
        let readers: Vec<_> = lock(&self.offset_readers).drain().collect();
        if readers.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(readers));
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Maps a librdkafka error to this crate's, with `context` (lowercase, naming the
/// offending value) in front.
pub(crate) fn kafka_error(e: &KafkaError, context: &str) -> Error {
    kafka_error_on(e, None, context)
}

/// [`kafka_error`] of a request about `topic` (named by `NotFound` errors).
pub(crate) fn kafka_error_on(e: &KafkaError, topic: Option<&str>, context: &str) -> Error {
    use RDKafkaErrorCode as C;
    let message = format!("{context}: {e}");
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    let Some(code) = code else {
        return match e {
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => Error::Invalid(message),
            KafkaError::Canceled => Error::Closed,
            _ => Error::Internal(message),
        };
    };
    match code {
        C::UnknownTopicOrPartition | C::UnknownTopic => match topic {
            Some(topic) => Error::UnknownTopic(topic.to_owned()),
            None => Error::Internal(message),
        },
        C::UnknownPartition
        | C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidArgument
        | C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::InvalidRequest
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::PolicyViolation
        | C::UnsupportedCompressionType => Error::Invalid(message),
        C::IllegalGeneration
        | C::UnknownMemberId
        | C::RebalanceInProgress
        | C::FencedInstanceId
        | C::AssignmentLost
        | C::Fenced
        | C::ProducerFenced
        | C::StaleMemberEpoch
        | C::FencedMemberEpoch => Error::Fenced(message),
        C::MessageTimedOut
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::TimedOutQueue
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::QueueFull
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NetworkException
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::CoordinatorNotAvailable
        | C::CoordinatorLoadInProgress
        | C::NotCoordinator
        | C::WaitingForCoordinator
        | C::KafkaStorageError
        | C::ThrottlingQuotaExceeded
        | C::Retry
        | C::InProgress
        | C::PurgeQueue
        | C::PurgeInflight
        | C::Authentication
        | C::SSL
        | C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::RebootstrapRequired => Error::Unavailable(message),
        _ => Error::Internal(message),
    }
}
