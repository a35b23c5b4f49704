//! A member of a consumer group on the Redis Streams backend. The order of a poll, the
//! redistribution of dead members' work, nack and close are described in the parent
//! module.

mod claim;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::reply::{self, Entry, EntryId, Fields};
use super::{Shared, by_partition, connection_config, from_redis, millis};
use crate::{Consumer, ConsumerOptions, Delivery, Error, RecordId, Result};

pub(super) struct RedisConsumer {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    name: String,
    /// Stream key of each partition.
    keys: Vec<String>,
    partition_of: HashMap<Vec<u8>, u32>,
    heartbeat_key: String,
    lease_ms: u64,
    session_ms: u64,
    session: Duration,
    redistribute_every: Duration,
    /// A connection of its own for blocking reads.
    reader: ConnectionManager,
    state: tokio::sync::Mutex<PollState>,
    /// Nacked records, claimed back and delivered by the next poll.
    nacked: Mutex<BTreeSet<(u32, EntryId)>>,
    last_heartbeat: Mutex<Option<Instant>>,
    closed: AtomicBool,
}

struct PollState {
    /// Read but not yet returned (a read takes up to `max_records` per partition).
    buffer: VecDeque<Delivery>,
    /// Per partition, where re-reading this member's own pending entries goes on;
    /// `None` once done.
    own: Vec<Option<EntryId>>,
    /// Per partition, the `XAUTOCLAIM` cursor.
    autoclaim: Vec<EntryId>,
    next_redistribution: Instant,
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
        let consumer = RedisConsumer {
            partition_of: (0..partitions)
                .map(|p| (keys[p as usize].clone().into_bytes(), p))
                .collect(),
            keys,
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
                own: vec![Some(EntryId::ZERO); partitions as usize],
                autoclaim: vec![EntryId::ZERO; partitions as usize],
                next_redistribution: Instant::now(),
            }),
            nacked: Mutex::new(BTreeSet::new()),
            last_heartbeat: Mutex::new(None),
            closed: AtomicBool::new(false),
            shared,
        };
        consumer.create_groups().await?;
        consumer.beat().await?;
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
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in &self.keys {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM");
        }
        for reply in self.shared.pipeline_each(&pipe).await? {
            match reply {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(from_redis(e)),
                _ => {}
            }
        }
        Ok(())
    }

    async fn beat(&self) -> Result<()> {
        let mut set = redis::cmd("SET");
        set.arg(&self.heartbeat_key)
            .arg(1)
            .arg("PX")
            .arg(self.session_ms);
        self.shared.query::<()>(&set).await?;
        *self
            .last_heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Refreshes the heartbeat when a quarter of the session has passed.
    async fn keep_alive(&self) -> Result<()> {
        let last = *self
            .last_heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= self.session / 4) {
            self.beat().await?;
        }
        Ok(())
    }

    async fn poll_into(
        &self,
        st: &mut PollState,
        max_records: usize,
        deadline: Instant,
    ) -> Result<()> {
        loop {
            self.keep_alive().await?;
            self.redeliver(st, max_records).await?;
            if st.buffer.len() < max_records {
                let block = if st.buffer.is_empty() {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.session / 3)
                } else {
                    Duration::ZERO
                };
                let fresh = self.read_new(max_records - st.buffer.len(), block).await?;
                st.buffer.extend(fresh);
            }
            if !st.buffer.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Own pending entries, nacked ones and (when due) dead members' and expired ones.
    async fn redeliver(&self, st: &mut PollState, max_records: usize) -> Result<()> {
        if st.own.iter().any(Option::is_some) && st.buffer.len() < max_records {
            let got = self.read_own(st, max_records - st.buffer.len()).await?;
            st.buffer.extend(got);
        }
        if st.buffer.len() < max_records {
            let got = self.claim_nacked().await?;
            st.buffer.extend(got);
        }
        let now = Instant::now();
        if now >= st.next_redistribution && st.buffer.len() < max_records {
            st.next_redistribution = now + self.redistribute_every;
            let got = self.claim_from_dead(max_records - st.buffer.len()).await?;
            st.buffer.extend(got);
            if st.buffer.len() < max_records {
                let got = self.autoclaim(st, max_records - st.buffer.len()).await?;
                st.buffer.extend(got);
            }
        }
        Ok(())
    }

    /// `XREADGROUP … [BLOCK <ms>] STREAMS <keys> <ids>` for the partitions in `parts`.
    fn read_cmd(&self, count: usize, block_ms: u64, parts: &[(u32, String)]) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count.max(1));
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS");
        for (p, _) in parts {
            cmd.arg(&self.keys[*p as usize]);
        }
        for (_, id) in parts {
            cmd.arg(id);
        }
        cmd
    }

    /// Entries of a read reply, by partition.
    fn by_stream(&self, reply: &Value) -> Result<Vec<(u32, Vec<Entry>)>> {
        reply::read(reply)?
            .into_iter()
            .map(|(key, entries)| {
                let p = self.partition_of.get(&key).copied().ok_or_else(|| {
                    Error::Internal(format!(
                        "XREADGROUP answered for unknown stream {:?}",
                        String::from_utf8_lossy(&key)
                    ))
                })?;
                Ok((p, entries))
            })
            .collect()
    }

    /// Re-reads this member's own pending entries (`XREADGROUP … 0`), page by page
    /// (after a restart under the same name).
    async fn read_own(&self, st: &mut PollState, count: usize) -> Result<Vec<Delivery>> {
        let parts: Vec<(u32, String)> = st
            .own
            .iter()
            .enumerate()
            .filter_map(|(p, c)| c.map(|c| (p as u32, c.to_string())))
            .collect();
        let reply: Value = self.shared.query(&self.read_cmd(count, 0, &parts)).await?;
        let mut streams = self.by_stream(&reply)?;
        let mut found = Vec::new();
        for (p, _) in &parts {
            let entries = streams
                .iter_mut()
                .find(|(q, _)| q == p)
                .map(|(_, e)| std::mem::take(e))
                .unwrap_or_default();
            // A short page is the last. While a page is full the buffer is too, so no
            // other read adds entries behind the cursor before it is done.
            st.own[*p as usize] = entries
                .last()
                .map(|e| e.id)
                .filter(|_| entries.len() >= count.max(1));
            found.extend(entries.into_iter().map(|e| (*p, e)));
        }
        self.redelivered(found).await
    }

    /// New entries (`>`), blocking up to `block` when there are none.
    async fn read_new(&self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let parts: Vec<(u32, String)> = (0..self.keys.len() as u32)
            .map(|p| (p, ">".to_owned()))
            .collect();
        let cmd = self.read_cmd(count, millis(block), &parts);
        let mut conn = self.reader.clone();
        let limit = block + self.shared.op_timeout();
        let reply: Value = self
            .shared
            .timed(limit, cmd.query_async(&mut conn))
            .await?
            .map_err(from_redis)?;
        let mut out = Vec::new();
        for (p, entries) in self.by_stream(&reply)? {
            for entry in entries {
                if let Some(fields) = entry.fields {
                    out.push(delivery(p, entry.id, fields, 1));
                }
            }
        }
        Ok(out)
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
        let groups = by_partition(ids, self.keys.len() as u32)?;
        self.release(&groups, self.lease_ms).await?;
        let mut nacked = self.nacked.lock().unwrap_or_else(|e| e.into_inner());
        for (p, ids) in groups {
            nacked.extend(ids.into_iter().map(|id| (p, id)));
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<()> {
        self.check_open()?;
        self.beat().await
    }

    async fn close(&self) -> Result<()> {
        self.shared.check_open()?;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared
            .query::<()>(redis::cmd("DEL").arg(&self.heartbeat_key))
            .await?;
        let pending = self.own_pending().await?;
        self.release(&pending, self.lease_ms.max(self.session_ms))
            .await?;
        for (p, ids) in &pending {
            if ids.is_empty() {
                self.delete_if_dead(*p, &self.name).await;
            }
        }
        Ok(())
    }
}
