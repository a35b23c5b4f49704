//! The Redis Streams backend (feature `redis`): topics are streams on a Redis server,
//! consumer groups are Redis consumer groups.
//!
//! # Keys
//! - `<prefix>:topics`: a hash, topic → partition count (written by `ensure_topic` with
//!   `HSETNX`, so a topic's count never changes).
//! - `<prefix>:<topic>:<partition>`: one stream per partition. Each entry has the fields
//!   `v` (value), `k` (key, absent when the record has none) and `ts` (timestamp, ms).
//!   Record ids are the entry ids ([`Position::StreamId`](crate::Position::StreamId)).
//! - `<prefix>:hb:<topic>:<group>:<consumer>`: a consumer's heartbeat, set with a TTL of
//!   the session timeout (see below). A member whose key has expired is dead.
//! - `<prefix>:members:<topic>:<group>`: a set of the group's members (live or not yet
//!   pruned); `<prefix>:gen:<topic>:<group>`: the group's generation, a counter bumped
//!   whenever membership changes or a partition is let go.
//! - `<prefix>:own:<topic>:<group>:<partition>`: the partition's owner in the group (a
//!   consumer name), with a TTL of the owner's session timeout.
//!
//! Topic and group names are 1..=200 characters of `[A-Za-z0-9._-]` (as in the
//! embedded log), so keys cannot collide.
//!
//! # Produce and durability
//! A batch is one pipeline (one round trip) of
//! `XADD key [MAXLEN ~ <maxlen>] * v <value> [k <key>] ts <timestamp>`; it fails as a whole
//! if any command fails (some entries may have been added: consumers are idempotent).
//! Redis acknowledges `XADD` from memory: acknowledged records survive a Redis crash
//! only with `appendonly yes` and `appendfsync always` (or `everysec`, losing up to
//! about a second). `maxlen` (0, the default, means none) is an opt-in hard cap: `MAXLEN ~`
//! drops entries no group has consumed yet if consumers fall more than `maxlen`
//! entries behind. [`Broker::enforce_retention`]
//! trims (`XTRIM … MINID`) each stream below the oldest entry some group still needs
//! (its oldest pending entry, or the one after its last delivered); streams without
//! groups are left to `MAXLEN`, and a group created later starts at what is left.
//! [`Broker::lag`] is `lag + pending` of `XINFO GROUPS` (Redis 7).
//!
//! # Consumers and partition ownership
//! Within a group, each partition is consumed by at most one live member at a time, so
//! a member gets each partition's records in stream order (as with Kafka's group
//! assignment or the embedded log's leases); the pipeline relies on it. Redis consumer
//! groups alone would hand the entries of one stream to whichever member reads next.
//!
//! `subscribe` creates the group on every partition (`XGROUP CREATE … 0 MKSTREAM`, a new
//! group starts at the beginning), sets the heartbeat and adds the member to the
//! members set (bumping the generation). Every quarter of the session timeout (and at
//! once when a read sees the generation change), a poll refreshes membership and
//! ownership:
//! - the heartbeat is set again (a script that also re-adds the member and returns the
//!   members and generation);
//! - the live members are those whose heartbeat exists; dead ones are pruned from the
//!   set;
//! - with the live members sorted, partition `p` is assigned to member `p % n`;
//! - each partition assigned to this member is taken with `SET NX PX <session>`, or
//!   renewed if the key names this member already; each held but no longer assigned is
//!   let go (compare-and-delete, bumping the generation so its new owner takes it at
//!   once). While an assigned partition is still held by another member (which lets it
//!   go at its next refresh, or whose key expires with its session), the refresh is
//!   retried every sixteenth of the session timeout.
//!
//! [`Consumer::heartbeat`] sets the heartbeat and renews the partitions held
//! (compare-and-`PEXPIRE`: only the owner renews). Members whose views of membership
//! differ cannot both own a partition: the key has one value.
//!
//! Every group command on a partition runs in a Lua script that first checks that the
//! ownership key names this member, so that a member that lost a partition (its key
//! expired while it was stalled, say) reads and claims nothing there. A poll gathers, in
//! order:
//! 1. for each partition just taken, all its pending entries, whoever holds them (the
//!    previous owner's unacknowledged work, or this member's own after a restart under
//!    the same name), page by page (`XPENDING`, then `XCLAIM … 0` in the same script);
//!    new entries of that partition are read only once this recovery is done, so they
//!    come after the older ones. Work the previous owner was still doing is repeated
//!    (at-least-once);
//! 2. records it nacked (see below);
//! 3. every half of `min(lease, session)` timeout, the redistributor: members whose
//!    heartbeat expired are deleted from the group once they have nothing pending (a
//!    script checks again atomically), and their pending entries on partitions this
//!    member owns (normally none: the recovery took them) are claimed; then
//!    `XAUTOCLAIM` with min-idle `lease_timeout` on the partitions it owns takes back
//!    entries left unacknowledged for longer than the lease (only the owner does);
//! 4. new entries: `XREADGROUP … >` on the partitions it owns (in the read script, which
//!    also returns the generation and each stream's last id). With nothing new, it
//!    waits with `XREAD … BLOCK` after those ids on a connection of its own (which takes
//!    nothing from the group); waits are at most half a second and end at the next
//!    refresh.
//!
//! When a partition is lost (let go, taken by another member, or found owned by
//! another in a script) or taken anew, the entries of it read but not yet returned are
//! dropped: they stay pending, and whoever owns the partition delivers them. A poll
//! never returns entries of a partition it does not hold.
//!
//! Entries read beyond `max_records` (a read takes up to that many per partition) are
//! kept for the next poll. Redelivered records carry their delivery count from
//! `XPENDING`. If the reply of a read is lost (an error, or a poll dropped meanwhile),
//! the next poll recovers the partitions read from above the last id it buffered.
//!
//! `ack` is `XACK`, pipelined per partition. It never reports
//! [`ErrorKind::Fenced`](crate::ErrorKind::Fenced): Redis does not tell cheaply whether
//! an entry was claimed by another member meanwhile, so a record whose partition moved
//! may be processed twice (at-least-once; the store is idempotent).
//!
//! `nack` (on partitions it owns) re-claims the entries to this consumer with
//! `IDLE <lease>` (`XCLAIM … JUSTID`) and remembers them: the next poll claims them back
//! (min-idle the lease, so it skips those a new owner took meanwhile) and delivers them
//! again.
//!
//! `close` deletes the heartbeat, leaves the members set and lets every partition go
//! (one script, bumping the generation), so the other members take the partitions, and
//! claim their pending entries, at their next poll; the member is deleted from the group
//! right away on partitions where it has nothing pending. A consumer dropped without
//! `close` is a crash: its partitions move once its keys expire (the session timeout).
//!
//! # Connections and errors
//! The URL carries the database, the credentials and TLS (`rediss://`, rustls with the
//! `ring` provider). Commands share one multiplexed connection that reconnects by itself;
//! every call is bounded by the connect and command timeouts, and connection failures
//! and timeouts are [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).

mod admin;
mod config;
mod consumer;
mod reply;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Value};

use self::config::connection_config;
pub use self::config::{RedisOptions, redact_url, redis_client};
use crate::{
    Broker, Consumer, ConsumerOptions, Error, PartitionLag, ProduceRecord, RecordId, Result,
};

/// Largest accepted batch (values and keys), in bytes.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The Redis Streams broker.
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.shared.url)
            .field("stream_prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

/// What the broker and its consumers share.
struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    maxlen: u64,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The URL without its password.
    url: String,
    stopped: AtomicBool,
    /// Partition counts of the topics seen so far (they never change).
    topics: RwLock<HashMap<String, u32>>,
    placement: crate::Placement,
}

/// Maps a client error: connection failures, timeouts and a server that cannot take
/// writes are [`Error::Unavailable`]; anything else is internal.
fn from_redis(e: RedisError) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let unavailable = matches!(
        e.kind(),
        K::Io
            | K::AuthenticationFailed
            | K::Server(
                S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly
            )
    ) || matches!(
        e.code(),
        Some("OOM" | "LOADING" | "MISCONF" | "NOAUTH" | "WRONGPASS" | "NOREPLICAS")
    ) || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout();
    // A failed pipeline reports every command's error: keep the message short.
    let mut message = format!("redis: {e}");
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    if unavailable {
        Error::Unavailable(message)
    } else {
        Error::Internal(message)
    }
}

/// Longest error message kept from a Redis error, in bytes.
const MAX_ERROR_MESSAGE: usize = 300;

/// Checks a topic or group name (they are parts of keys): the embedded log's rule.
fn validate_name(kind: &str, name: &str) -> Result<()> {
    use datanexus_seglog::{MAX_NAME_LEN, is_valid_name};
    if is_valid_name(name, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {kind} name {name:?}: 1..={MAX_NAME_LEN} characters of [A-Za-z0-9._-], not . or .."
        )))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Bound on one call: connecting (if needed) and the command.
    fn op_timeout(&self) -> Duration {
        self.connect_timeout + self.command_timeout
    }

    /// Runs `fut` within `limit`; the inner result is the server's answer.
    async fn timed<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<RedisResult<T>> {
        self.check_open()?;
        tokio::time::timeout(limit, fut).await.map_err(|_| {
            Error::Unavailable(format!(
                "redis at {} did not answer within {limit:?}",
                self.url
            ))
        })
    }

    /// One command on the shared connection, keeping the server's error for the caller.
    async fn raw<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<RedisResult<T>> {
        let mut conn = self.conn.clone();
        self.timed(self.op_timeout(), cmd.query_async(&mut conn))
            .await
    }

    /// One command on the shared connection.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.raw(cmd).await?.map_err(from_redis)
    }

    /// A pipeline (one round trip) that fails if any of its commands fails.
    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        self.run_pipeline(pipe).await
    }

    /// A pipeline whose commands may fail one by one (`pipe` must ignore errors).
    async fn pipeline_each(&self, pipe: &Pipeline) -> Result<Vec<RedisResult<Value>>> {
        self.run_pipeline(pipe).await
    }

    async fn run_pipeline<T: FromRedisValue + Default>(&self, pipe: &Pipeline) -> Result<T> {
        if pipe.is_empty() {
            return Ok(T::default());
        }
        let mut conn = self.conn.clone();
        self.timed(self.op_timeout(), pipe.query_async(&mut conn))
            .await?
            .map_err(from_redis)
    }

    /// `XGROUP CREATE <key> <group> 0 MKSTREAM` on each of `keys` (an existing group is
    /// kept).
    pub(crate) async fn create_group(&self, keys: &[String], group: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in keys {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM");
        }
        for reply in self.pipeline_each(&pipe).await? {
            match reply {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(from_redis(e)),
                _ => {}
            }
        }
        Ok(())
    }

    fn topics_key(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    fn stream_key(&self, topic: &str, partition: u32) -> String {
        format!("{}:{topic}:{partition}", self.prefix)
    }

    fn heartbeat_key(&self, topic: &str, group: &str, consumer: &str) -> String {
        format!("{}:hb:{topic}:{group}:{consumer}", self.prefix)
    }

    fn members_key(&self, topic: &str, group: &str) -> String {
        format!("{}:members:{topic}:{group}", self.prefix)
    }

    fn generation_key(&self, topic: &str, group: &str) -> String {
        format!("{}:gen:{topic}:{group}", self.prefix)
    }

    fn owner_key(&self, topic: &str, group: &str, partition: u32) -> String {
        format!("{}:own:{topic}:{group}:{partition}", self.prefix)
    }

    fn cached_partitions(&self, topic: &str) -> Option<u32> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).copied()
    }

    fn cache_partitions(&self, topic: &str, partitions: u32) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        topics.insert(topic.to_owned(), partitions);
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.check_open()?;
        if let Some(n) = self.cached_partitions(topic) {
            return Ok(n);
        }
        let stored: Option<String> = self
            .query(redis::cmd("HGET").arg(self.topics_key()).arg(topic))
            .await?;
        let stored = stored.ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let n = stored.parse().map_err(|_| {
            Error::Internal(format!(
                "topic {topic:?} has a bad partition count {stored:?} in {}",
                self.topics_key()
            ))
        })?;
        self.cache_partitions(topic, n);
        Ok(n)
    }
}

impl RedisBroker {
    /// Creates the broker. It connects on first use (and reconnects by itself), so this
    /// fails only on a malformed URL; call [`Broker::ready`] to check the server.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a bad URL or
    /// prefix.
    pub async fn open(options: RedisOptions) -> Result<Self> {
        if options.stream_prefix.is_empty() {
            return Err(Error::Invalid("empty redis stream prefix".into()));
        }
        let url = redact_url(&options.url);
        let client = config::redis_client(&options.url, options.tls_ca.as_deref())
            .map_err(|e| Error::Invalid(format!("redis at {url}: {e}")))?;
        let config = connection_config(options.connect_timeout, Some(options.command_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| Error::Invalid(format!("bad redis url {url}: {e}")))?;
        tracing::info!(%url, prefix = %options.stream_prefix, maxlen = options.maxlen, "redis streams broker");
        Ok(RedisBroker {
            shared: Arc::new(Shared {
                client,
                conn,
                prefix: options.stream_prefix,
                maxlen: options.maxlen,
                connect_timeout: options.connect_timeout,
                command_timeout: options.command_timeout,
                url,
                stopped: AtomicBool::new(false),
                topics: RwLock::new(HashMap::new()),
                placement: crate::Placement::default(),
            }),
        })
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        validate_name("group", group)?;
        let s = &self.shared;
        let partitions = s.partitions(topic).await?;
        let keys: Vec<String> = (0..partitions).map(|p| s.stream_key(topic, p)).collect();
        s.create_group(&keys, group).await
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        validate_name("topic", topic)?;
        if !(1..=1024).contains(&partitions) {
            return Err(Error::Invalid(format!(
                "partition count {partitions} out of range 1..=1024"
            )));
        }
        let s = &self.shared;
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX")
            .arg(s.topics_key())
            .arg(topic)
            .arg(partitions)
            .ignore()
            .cmd("HGET")
            .arg(s.topics_key())
            .arg(topic);
        s.check_open()?;
        let reply = s.pipeline(&pipe).await?;
        let existing = reply.first().and_then(reply::int);
        match existing {
            Some(n) if n == i64::from(partitions) => {
                s.cache_partitions(topic, partitions);
                Ok(())
            }
            Some(n) => Err(Error::Invalid(format!(
                "topic {topic:?} exists with {n} partitions, not {partitions}"
            ))),
            None => Err(Error::Internal(format!(
                "topic {topic:?} has no partition count after HSETNX"
            ))),
        }
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.shared.partitions(topic).await
    }

    async fn produce(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<RecordId>> {
        if records.is_empty() {
            return Err(Error::Invalid("empty batch".into()));
        }
        let bytes: usize = records
            .iter()
            .map(|r| r.value.len() + r.key.as_ref().map_or(0, |k| k.len()))
            .sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::Invalid(format!(
                "batch of {bytes} bytes exceeds {MAX_BATCH_BYTES}"
            )));
        }
        let s = &self.shared;
        let partitions = s.partitions(topic).await?;
        let mut placed = Vec::with_capacity(records.len());
        let mut pipe = redis::pipe();
        for record in &records {
            let p = s.placement.pick(record, partitions)?;
            let xadd = pipe.cmd("XADD").arg(s.stream_key(topic, p));
            if s.maxlen > 0 {
                xadd.arg("MAXLEN").arg("~").arg(s.maxlen);
            }
            xadd.arg("*").arg("v").arg(&record.value[..]);
            if let Some(key) = &record.key {
                xadd.arg("k").arg(&key[..]);
            }
            xadd.arg("ts").arg(record.timestamp_ms);
            placed.push(p);
        }
        let replies = s.pipeline(&pipe).await?;
        if replies.len() != placed.len() {
            return Err(Error::Internal(format!(
                "{} replies to {} XADDs",
                replies.len(),
                placed.len()
            )));
        }
        placed
            .into_iter()
            .zip(&replies)
            .map(|(partition, reply)| {
                Ok(RecordId {
                    partition,
                    position: reply::entry_id("XADD", reply)?.position(),
                })
            })
            .collect()
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        validate_name("group", group)?;
        if consumer.is_empty() || consumer.len() > 200 {
            return Err(Error::Invalid(format!(
                "invalid consumer name {consumer:?}: 1..=200 bytes"
            )));
        }
        if options.lease_timeout.as_millis() == 0 || options.session_timeout.as_millis() == 0 {
            return Err(Error::Invalid(
                "lease and session timeouts must be at least 1 ms".into(),
            ));
        }
        let partitions = self.shared.partitions(topic).await?;
        let consumer = consumer::RedisConsumer::join(
            self.shared.clone(),
            topic,
            group,
            consumer,
            partitions,
            options,
        )
        .await?;
        Ok(Box::new(consumer))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        admin::lag(&self.shared, topic, group).await
    }

    async fn ready(&self) -> Result<()> {
        let s = &self.shared;
        let _: String = s.query(&redis::cmd("PING")).await?;
        let mut set = redis::cmd("SET");
        set.arg(format!("{}:ready", s.prefix))
            .arg(1)
            .arg("PX")
            .arg(60_000);
        s.query::<()>(&set).await
    }

    async fn enforce_retention(&self) -> Result<()> {
        admin::enforce_retention(&self.shared).await
    }

    async fn stop(&self) -> Result<()> {
        // Nothing is buffered here: every produce returned after Redis answered.
        self.shared.stopped.store(true, Ordering::Release);
        Ok(())
    }
}

/// Groups ids by partition (in first-seen order), rejecting foreign or out-of-range ids.
fn by_partition(ids: &[RecordId], partitions: u32) -> Result<Vec<(u32, Vec<reply::EntryId>)>> {
    let mut out: Vec<(u32, Vec<reply::EntryId>)> = Vec::new();
    for id in ids {
        let entry = reply::EntryId::from_position(id.position)
            .filter(|_| id.partition < partitions)
            .ok_or_else(|| Error::Invalid(format!("record id {id} is not an id of this topic")))?;
        match out.iter_mut().find(|(p, _)| *p == id.partition) {
            Some((_, v)) => v.push(entry),
            None => out.push((id.partition, vec![entry])),
        }
    }
    Ok(out)
}
