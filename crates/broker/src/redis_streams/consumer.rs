//! A member of a consumer group on the Redis Streams backend. The order of a poll, the
//! redistribution of dead members' work, nack and close are described in the parent
//! module.

mod claim;
mod owner;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::reply::{EntryId, Fields};
use super::{Shared, by_partition, connection_config, from_redis, millis};
use crate::{Consumer, ConsumerOptions, Delivery, Error, RecordId, Result};

pub(super) struct RedisConsumer {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    name: String,
    /// Stream key of each partition.
    keys: Vec<String>,
    /// Ownership key of each partition.
    owner_keys: Vec<String>,
    members_key: String,
    generation_key: String,
    heartbeat_key: String,
    lease_ms: u64,
    session_ms: u64,
    session: Duration,
    redistribute_every: Duration,
    /// A connection of its own for blocking waits.
    reader: ConnectionManager,
    state: tokio::sync::Mutex<PollState>,
    /// Per partition, until when this member holds it (`None`: not held). Locked across
    /// the commands that take, renew or let go of partitions, so those never overlap.
    owned: tokio::sync::Mutex<Vec<Option<Instant>>>,
    /// Nacked records, claimed back and delivered by the next poll.
    nacked: Mutex<BTreeSet<(u32, EntryId)>>,
    closed: AtomicBool,
}

struct PollState {
    /// Read but not yet returned (a read takes up to `max_records` per partition).
    buffer: VecDeque<Delivery>,
    /// Per partition being recovered (just taken), where the claiming of its pending
    /// entries goes on (exclusive; `ZERO` is the start); `None` when not recovering.
    /// New entries of a partition are read only once its recovery is done.
    recover: Vec<Option<EntryId>>,
    /// Per partition, the highest id buffered so far.
    seen: Vec<EntryId>,
    /// A read was sent and its reply not buffered yet.
    reading: bool,
    /// The group's generation at the last refresh (changes when members come or go or
    /// partitions are let go).
    generation: Option<i64>,
    next_refresh: Instant,
    /// Per partition, the `XAUTOCLAIM` cursor.
    autoclaim: Vec<EntryId>,
    next_redistribution: Instant,
}

impl PollState {
    /// Buffers deliveries (in order).
    fn push(&mut self, deliveries: Vec<Delivery>) {
        for d in &deliveries {
            if let (Some(seen), Some(id)) = (
                self.seen.get_mut(d.id.partition as usize),
                EntryId::from_position(d.id.position),
            ) {
                *seen = (*seen).max(id);
            }
        }
        self.buffer.extend(deliveries);
    }
}

fn delivery(partition: u32, id: EntryId, fields: Fields, delivery_count: u32) -> Delivery {
    Delivery {
        id: RecordId {
            partition,
            position: id.position(),
        },
        key: fields.key,
        value: fields.value,
        timestamp_ms: fields.timestamp_ms,
        delivery_count,
    }
}

impl RedisConsumer {
    pub(super) async fn join(
        shared: Arc<Shared>,
        topic: &str,
        group: &str,
        name: &str,
        partitions: u32,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let keys: Vec<String> = (0..partitions)
            .map(|p| shared.stream_key(topic, p))
            .collect();
        let reader = ConnectionManager::new_lazy_with_config(
            shared.client.clone(),
            connection_config(shared.connect_timeout, None),
        )
        .map_err(from_redis)?;
        let shortest = options.lease_timeout.min(options.session_timeout);
        let n = partitions as usize;
        let consumer = RedisConsumer {
            keys,
            owner_keys: (0..partitions)
                .map(|p| shared.owner_key(topic, group, p))
                .collect(),
            members_key: shared.members_key(topic, group),
            generation_key: shared.generation_key(topic, group),
            heartbeat_key: shared.heartbeat_key(topic, group, name),
            topic: topic.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
            lease_ms: millis(options.lease_timeout).max(1),
            session_ms: millis(options.session_timeout).max(1),
            session: options.session_timeout,
            redistribute_every: (shortest / 2).max(Duration::from_millis(10)),
            reader,
            state: tokio::sync::Mutex::new(PollState {
                buffer: VecDeque::new(),
                recover: vec![None; n],
                seen: vec![EntryId::ZERO; n],
                reading: false,
                generation: None,
                next_refresh: Instant::now(),
                autoclaim: vec![EntryId::ZERO; n],
                next_redistribution: Instant::now(),
            }),
            owned: tokio::sync::Mutex::new(vec![None; n]),
            nacked: Mutex::new(BTreeSet::new()),
            closed: AtomicBool::new(false),
            shared,
        };
        consumer.create_groups().await?;
        consumer.join_members().await?;
        Ok(consumer)
    }

    fn check_open(&self) -> Result<()> {
        self.shared.check_open()?;
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// `XGROUP CREATE <key> <group> 0 MKSTREAM` on every partition (an existing group
    /// is kept).
    async fn create_groups(&self) -> Result<()> {
        self.shared.create_group(&self.keys, &self.group).await
    }

    async fn poll_into(
        &self,
        st: &mut PollState,
        max_records: usize,
        deadline: Instant,
    ) -> Result<()> {
        loop {
            self.check_open()?;
            if st.reading {
                self.resume(st);
            }
            if Instant::now() >= st.next_refresh {
                self.refresh(st).await?;
            }
            let held = self.held().await;
            self.redeliver(st, &held, max_records).await?;
            let mut idle = Vec::new();
            if st.buffer.len() < max_records {
                idle = self
                    .read_new(st, &held, max_records - st.buffer.len())
                    .await?;
            }
            let now = Instant::now();
            if !st.buffer.is_empty() || now >= deadline {
                return Ok(());
            }
            let recovering = st.recover.iter().zip(&held).any(|(r, h)| r.is_some() && *h);
            if recovering || now >= st.next_refresh {
                continue;
            }
            let block = deadline.min(st.next_refresh).saturating_duration_since(now);
            self.wait_new(&idle, block).await?;
        }
    }

    /// Pending entries of partitions just taken, nacked ones and (when due) dead
    /// members' and expired ones, all on partitions this member owns.
    async fn redeliver(&self, st: &mut PollState, held: &[bool], max_records: usize) -> Result<()> {
        if st.buffer.len() < max_records {
            self.recover(st, held, max_records - st.buffer.len())
                .await?;
        }
        // Partitions being recovered get their pending entries from the recovery.
        let settled: Vec<bool> = held
            .iter()
            .zip(&st.recover)
            .map(|(h, r)| *h && r.is_none())
            .collect();
        if st.buffer.len() < max_records {
            let got = self.claim_nacked(&settled).await?;
            st.push(got);
        }
        let now = Instant::now();
        if now >= st.next_redistribution && st.buffer.len() < max_records {
            st.next_redistribution = now + self.redistribute_every;
            let got = self
                .claim_from_dead(max_records - st.buffer.len(), &settled)
                .await?;
            st.push(got);
            if st.buffer.len() < max_records {
                let got = self
                    .autoclaim(st, max_records - st.buffer.len(), &settled)
                    .await?;
                st.push(got);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    fn id(&self) -> &str {
        &self.name
    }

    async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.check_open()?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock().await;
        match self.poll_into(&mut st, max_records, deadline).await {
            Ok(()) => {}
            // The stream or group was deleted behind our back: create it again (from
            // the start of what is left) and let the next poll read.
            Err(Error::Internal(m)) if m.contains("NOGROUP") => {
                tracing::warn!(topic = %self.topic, group = %self.group, "consumer group missing, creating it again");
                self.create_groups().await?;
            }
            Err(e) => return Err(e),
        }
        // Entries of partitions lost meanwhile are not delivered (they stay pending and
        // their new owner delivers them).
        let held = self.held().await;
        st.buffer
            .retain(|d| held.get(d.id.partition as usize).copied().unwrap_or(false));
        let n = st.buffer.len().min(max_records);
        Ok(st.buffer.drain(..n).collect())
    }

    async fn ack(&self, ids: &[RecordId]) -> Result<()> {
        self.check_open()?;
        let groups = by_partition(ids, self.keys.len() as u32)?;
        {
            let mut nacked = self.nacked.lock().unwrap_or_else(|e| e.into_inner());
            for (p, ids) in &groups {
                for id in ids {
                    nacked.remove(&(*p, *id));
                }
            }
        }
        let mut pipe = redis::pipe();
        for (p, ids) in &groups {
            let xack = pipe
                .cmd("XACK")
                .arg(&self.keys[*p as usize])
                .arg(&self.group);
            for id in ids {
                xack.arg(id.to_string());
            }
            xack.ignore();
        }
        self.shared.pipeline(&pipe).await.map(drop)
    }

    async fn nack(&self, ids: &[RecordId]) -> Result<()> {
        self.check_open()?;
        // Records of partitions this member no longer owns are left to their owner.
        let held = self.held().await;
        let groups: Vec<_> = by_partition(ids, self.keys.len() as u32)?
            .into_iter()
            .filter(|(p, _)| held.get(*p as usize).copied().unwrap_or(false))
            .collect();
        self.release(&groups, self.lease_ms).await?;
        let mut nacked = self.nacked.lock().unwrap_or_else(|e| e.into_inner());
        for (p, ids) in groups {
            nacked.extend(ids.into_iter().map(|id| (p, id)));
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<()> {
        self.check_open()?;
        self.renew().await
    }

    async fn close(&self) -> Result<()> {
        self.shared.check_open()?;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Whoever the partitions go to claims their pending entries when taking them.
        self.leave().await?;
        let pending = self.own_pending().await?;
        for (p, ids) in &pending {
            if ids.is_empty() {
                self.delete_if_dead(*p, &self.name).await;
            }
        }
        Ok(())
    }
}
