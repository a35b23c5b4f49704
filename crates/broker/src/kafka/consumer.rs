//! A member of a Kafka consumer group ([`KafkaConsumer`]).
//!
//! # Invariants
//! - Offsets are committed only by this module, only for partitions currently assigned,
//!   and only as "one past the contiguous acknowledged prefix" of the records fetched
//!   from a partition (`enable.auto.commit=false`): an unacknowledged record is never
//!   skipped by a commit, whatever the order of acks.
//! - Commits are asynchronous; librdkafka finishes outstanding commits before it
//!   completes a rebalance or closes, so a record acknowledged before a rebalance is not
//!   delivered to the partition's next owner.
//! - Every record fetched is tracked (`State`) until it is part of the committed
//!   prefix or its partition is revoked. On revoke, its records (buffered, delivered or
//!   acknowledged-but-not-contiguous) are dropped: the next owner reads them again from
//!   the committed offset (the pipeline is idempotent); acks of them then fail with
//!   [`ErrorKind::Fenced`](crate::ErrorKind::Fenced). On assign, reading resumes at the
//!   group's committed offset (or the beginning: `auto.offset.reset=earliest`).
//!
//! # Polls, leases and liveness
//! [`Consumer::poll`] hands out, in order: records given back (nacked, or delivered
//! and unacknowledged for longer than the lease), then records fetched earlier, then
//! new records from librdkafka's queue, waiting up to `wait` (asynchronously: the
//! queue wakes the task) only when it has nothing else. Redelivery after a lease or a
//! nack is local: the partition stays with this member.
//!
//! librdkafka's background thread sends the group heartbeats; a member that neither
//! polls nor calls [`Consumer::heartbeat`] for the session timeout
//! (`max.poll.interval.ms`) leaves the group and its partitions go to the others.
//! `heartbeat` serves the queue without waiting (buffering up to
//! [`PREFETCH_LIMIT`] records).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use super::admin::blocking;
use super::{kafka_error, kafka_error_on, lock};
use crate::{Bytes, Consumer, ConsumerOptions, Delivery, Error, RecordId, Result};

mod state;

use state::State;

/// Most records `heartbeat` buffers ahead of polls.
pub const PREFETCH_LIMIT: usize = 10_000;

/// Longest wait of one poll (a bound that keeps deadlines representable).
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// How many empty looks at the queue end a drain (one may only have served an event).
const EMPTY_LOOKS: usize = 2;

/// Commits `offsets` of `topic` asynchronously.
fn commit_offsets<C: rdkafka::consumer::Consumer<GroupContext>>(
    consumer: &C,
    topic: &str,
    offsets: &[(u32, u64)],
) -> KafkaResult<()> {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, offset) in offsets {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        list.add_partition_offset(topic, partition as i32, Offset::Offset(offset))?;
    }
    consumer.commit(&list, CommitMode::Async)
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    list.elements_for_topic(topic)
        .iter()
        .filter_map(|elem| u32::try_from(elem.partition()).ok())
        .collect()
}

/// Rebalance and commit callbacks, run by librdkafka within polls.
struct GroupContext {
    topic: String,
    member: String,
    state: Arc<Mutex<State>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = partitions_of(list, &self.topic);
        let commits = lock(&self.state).revoke(&revoked);
        tracing::debug!(topic = %self.topic, member = %self.member, ?revoked, "partitions revoked");
        if !commits.is_empty()
            && !consumer.assignment_lost()
            && let Err(e) = commit_offsets(consumer, &self.topic, &commits)
        {
            tracing::warn!(error = %e, topic = %self.topic, "commit before revoke failed");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions_of(list, &self.topic);
                tracing::debug!(topic = %self.topic, member = %self.member, ?assigned, "partitions assigned");
                lock(&self.state).assign(&assigned);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, topic = %self.topic, member = %self.member, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, topic = %self.topic, member = %self.member, "offset commit failed");
            }
        }
    }
}

fn delivery_of(message: &BorrowedMessage<'_>) -> Option<Delivery> {
    let partition = u32::try_from(message.partition()).ok()?;
    let offset = u64::try_from(message.offset()).ok()?;
    Some(Delivery {
        id: RecordId::offset(partition, offset),
        key: message.key().map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        delivery_count: 0,
    })
}

/// A member of a Kafka consumer group on one topic.
pub struct KafkaConsumer {
    id: String,
    topic: String,
    state: Arc<Mutex<State>>,
    /// `None` once closed.
    client: Mutex<Option<Arc<StreamConsumer<GroupContext>>>>,
    /// Held while reading librdkafka's queue (polls, heartbeats) and by `close`.
    reading: tokio::sync::Mutex<()>,
    lease_timeout: Duration,
    close_timeout: Duration,
    broker_closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Creates the client from `config` and subscribes to `topic` (the group join
    /// proceeds in the background).
    pub(super) fn subscribe(
        config: &ClientConfig,
        topic: &str,
        id: &str,
        options: ConsumerOptions,
        close_timeout: Duration,
        broker_closed: Arc<AtomicBool>,
    ) -> Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let context = GroupContext {
            topic: topic.to_owned(),
            member: id.to_owned(),
            state: Arc::clone(&state),
        };
        let client: StreamConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| kafka_error(&e, &format!("cannot create kafka consumer {id:?}")))?;
        client.subscribe(&[topic]).map_err(|e| {
            kafka_error_on(&e, Some(topic), &format!("cannot subscribe to {topic:?}"))
        })?;
        Ok(KafkaConsumer {
            id: id.to_owned(),
            topic: topic.to_owned(),
            state,
            client: Mutex::new(Some(Arc::new(client))),
            reading: tokio::sync::Mutex::new(()),
            lease_timeout: options.lease_timeout.max(Duration::from_millis(1)),
            close_timeout,
            broker_closed,
        })
    }

    fn client(&self) -> Result<Arc<StreamConsumer<GroupContext>>> {
        if self.broker_closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        lock(&self.client).clone().ok_or(Error::Closed)
    }

    fn take(&self, max: usize) -> Vec<Delivery> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.expire_leases(now, self.lease_timeout);
        state.take(max, now)
    }

    /// Moves up to `want` records from librdkafka's queue into the state (serving
    /// rebalances on the way), waiting until `deadline` for the first one if given.
    /// Returns the error that ended it, if any.
    async fn fetch(
        &self,
        client: &StreamConsumer<GroupContext>,
        want: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<()> {
        let mut stream = client.stream();
        let (mut accepted, mut empty_looks) = (0, 0);
        while accepted < want {
            let next = match deadline {
                Some(deadline) if accepted == 0 => {
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Ok(next) => next,
                        Err(_) => return Ok(()),
                    }
                }
                _ => match stream.next().now_or_never() {
                    Some(next) => next,
                    None if empty_looks + 1 < EMPTY_LOOKS => {
                        empty_looks += 1;
                        continue;
                    }
                    None => return Ok(()),
                },
            };
            empty_looks = 0;
            match next {
                Some(Ok(message)) => {
                    if let Some(delivery) = delivery_of(&message)
                        && lock(&self.state).accept(delivery)
                    {
                        accepted += 1;
                    }
                }
                Some(Err(e)) => self.consumption_error(&e)?,
                None => return Err(Error::Closed),
            }
        }
        Ok(())
    }

    /// librdkafka reports transient trouble on the queue; only some of it ends a poll.
    fn consumption_error(&self, e: &KafkaError) -> Result<()> {
        let context = format!("consumer {:?} of {:?}", self.id, self.topic);
        match e {
            KafkaError::MessageConsumptionFatal(_) => {
                Err(Error::Internal(format!("{context}: {e}")))
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic,
            ) => Err(kafka_error_on(e, Some(&self.topic), &context)),
            _ => {
                tracing::warn!(error = %e, topic = %self.topic, member = %self.id, "kafka consumer error");
                Ok(())
            }
        }
    }

    /// Hands `commits` to librdkafka.
    fn commit(&self, commits: &[(u32, u64)]) -> Result<()> {
        {
            let client = lock(&self.client);
            let client = client.as_ref().ok_or(Error::Closed)?;
            commit_offsets(client.as_ref(), &self.topic, commits).map_err(|e| {
                kafka_error_on(
                    &e,
                    Some(&self.topic),
                    &format!("cannot commit offsets of {:?}", self.topic),
                )
            })?;
        }
        lock(&self.state).committed(commits);
        Ok(())
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = max_records.max(1);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let _reading = self.reading.lock().await;
        let client = self.client()?;
        let mut out = self.take(max);
        if out.len() < max {
            let wait_for_first = out.is_empty().then_some(deadline);
            let fetched = self.fetch(&client, max - out.len(), wait_for_first).await;
            out.extend(self.take(max - out.len()));
            if let Err(e) = fetched {
                if out.is_empty() {
                    return Err(e);
                }
                tracing::warn!(error = %e, topic = %self.topic, member = %self.id, "kafka poll ended early");
            }
        }
        Ok(out)
    }

    async fn ack(&self, ids: &[RecordId]) -> Result<()> {
        if self.broker_closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (commits, fenced) = lock(&self.state).ack(ids);
        if !commits.is_empty() {
            self.commit(&commits)?;
        }
        match fenced.first() {
            None => Ok(()),
            Some(first) => Err(Error::Fenced(format!(
                "{} of {} records (first {first}) of {:?} are no longer assigned to consumer {:?}",
                fenced.len(),
                ids.len(),
                self.topic,
                self.id
            ))),
        }
    }

    async fn nack(&self, ids: &[RecordId]) -> Result<()> {
        self.client()?;
        lock(&self.state).nack(ids);
        Ok(())
    }

    async fn heartbeat(&self) -> Result<()> {
        let client = self.client()?;
        // A poll in progress serves the group already.
        let Ok(_reading) = self.reading.try_lock() else {
            return Ok(());
        };
        let room = PREFETCH_LIMIT.saturating_sub(lock(&self.state).queue.len());
        if room > 0 {
            self.fetch(&client, room, None).await?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let _reading = self.reading.lock().await;
        let Some(client) = lock(&self.client).take() else {
            return Ok(());
        };
        let commits = lock(&self.state).pending_commits();
        if !commits.is_empty()
            && let Err(e) = commit_offsets(client.as_ref(), &self.topic, &commits)
        {
            tracing::warn!(error = %e, topic = %self.topic, member = %self.id, "final commit failed");
        }
        // Leaving the group blocks (it finishes outstanding commits first).
        let leave = blocking(move || drop(client));
        tokio::time::timeout(self.close_timeout, leave)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "consumer {:?} did not leave the group of {:?} within {:?}",
                    self.id, self.topic, self.close_timeout
                ))
            })?
    }
}

impl Drop for KafkaConsumer {
    /// Leaves the group off the async runtime when there is one (it blocks).
    fn drop(&mut self) {
        let Some(client) = lock(&self.client).take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}
