//! Membership and partition ownership of a consumer: the heartbeat, the live members,
//! the assignment of partitions to them, the ownership keys, and the reads fenced by
//! ownership (new entries, and the pending entries of a partition just taken). The
//! protocol is described in the parent module.

use std::time::Duration;

use redis::{Cmd, Value};
use tokio::time::Instant;

use super::{PollState, RedisConsumer, delivery};
use crate::redis_streams::reply::{self, EntryId};
use crate::redis_streams::{from_redis, millis};
use crate::{Error, Result};

/// Heartbeat and membership, atomically: refreshes the heartbeat, adds the member to the
/// members set, bumps the generation if the member is new (or was presumed dead), and
/// returns the generation and the members.
/// KEYS: heartbeat, members, generation; ARGV: member, session ms.
const BEAT: &str = r"local fresh = redis.call('EXISTS', KEYS[1]) == 0
redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 or fresh then redis.call('INCR', KEYS[3]) end
return {tonumber(redis.call('GET', KEYS[3]) or '0'), redis.call('SMEMBERS', KEYS[2])}";

/// Removes a member whose heartbeat expired from the members set (bumping the
/// generation). KEYS: members, heartbeat of the member, generation; ARGV: member.
const PRUNE: &str = r"if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[3]) return 1 end
return 0";

/// Takes a partition (`SET NX PX`) or renews it if this member holds it already: 2 when
/// taken, 1 when renewed, 0 when another member holds it.
/// KEYS: owner key; ARGV: member, session ms.
const TAKE: &str = r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0";

/// Renews a partition only if this member holds it (compare and `PEXPIRE`): 1 or 0.
/// KEYS: owner key; ARGV: member, session ms.
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// Lets a partition go if this member holds it (bumping the generation, so that the
/// member it goes to takes it at once). KEYS: owner key, generation; ARGV: member.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
return 1";

/// Leaves the group: heartbeat, membership and every partition this member holds.
/// KEYS: heartbeat, members, generation, owner keys…; ARGV: member.
const LEAVE: &str = r"redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('INCR', KEYS[3])
return 1";

/// New entries of the partitions this member owns, checked on the server: for each
/// (owner key, stream) pair, `XREADGROUP … >` if the owner key names this member (else
/// nil), with the id of the stream's last entry when nothing was new. First comes the
/// generation. KEYS: generation, then owner key and stream per partition;
/// ARGV: member, group, count.
const READ: &str = r"local out = {tonumber(redis.call('GET', KEYS[1]) or '0')}
for i = 2, #KEYS, 2 do
  local got = false
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[i + 1], '>')
    local entries = {}
    if r then entries = r[1][2] end
    local tail = '0-0'
    if #entries == 0 then
      local last = redis.call('XREVRANGE', KEYS[i + 1], '+', '-', 'COUNT', 1)
      if #last > 0 then tail = last[1][1] end
    end
    got = {entries, tail}
  end
  out[#out + 1] = got
end
return out";

/// One page of the pending entries of a partition (whoever holds them) claimed by its
/// owner: nil if this member does not own it, else {listed, last listed id, claimed
/// entries}. KEYS: owner key, stream; ARGV: member, group, start, count.
const RECOVER: &str = r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local page = redis.call('XPENDING', KEYS[2], ARGV[2], ARGV[3], '+', ARGV[4])
if #page == 0 then return {0, '0-0', {}} end
local ids = {}
for i, row in ipairs(page) do ids[i] = row[1] end
return {#page, ids[#ids], redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, unpack(ids))}";

/// Runs a stream command only if this member owns the partition (nil otherwise):
/// `ARGV[2] KEYS[2] ARGV[3…]`. KEYS: owner key, stream; ARGV: member, command, args….
const AS_OWNER: &str = r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
return redis.call(ARGV[2], KEYS[2], unpack(ARGV, 3))";

/// The longest a poll blocks between checks of the group's generation.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// `EVAL <script> <#keys> <keys…>`; arguments follow.
fn eval<K: redis::ToRedisArgs>(script: &str, keys: &[K]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    cmd
}

/// A script's integer answer.
fn code(what: &str, value: &Value) -> Result<i64> {
    reply::int(value)
        .ok_or_else(|| Error::Internal(format!("unexpected redis reply to the {what} script")))
}

impl RedisConsumer {
    fn beat_cmd(&self) -> Cmd {
        let mut cmd = eval(
            BEAT,
            &[&self.heartbeat_key, &self.members_key, &self.generation_key],
        );
        cmd.arg(&self.name).arg(self.session_ms);
        cmd
    }

    /// `AS_OWNER` for `command` on partition `p`; its arguments follow.
    pub(super) fn as_owner(&self, p: u32, command: &str) -> Cmd {
        let mut cmd = eval(
            AS_OWNER,
            &[&self.owner_keys[p as usize], &self.keys[p as usize]],
        );
        cmd.arg(&self.name).arg(command);
        cmd
    }

    /// Refreshes the heartbeat and joins the members (on subscribe).
    pub(super) async fn join_members(&self) -> Result<()> {
        self.shared.query::<Value>(&self.beat_cmd()).await.map(drop)
    }

    /// Per partition, whether this member holds it now.
    pub(super) async fn held(&self) -> Vec<bool> {
        let now = Instant::now();
        self.owned
            .lock()
            .await
            .iter()
            .map(|until| until.is_some_and(|t| t > now))
            .collect()
    }

    /// Heartbeat, membership and ownership: lists the live members, takes (or renews)
    /// the partitions assigned to this member and lets the others go. Partitions taken
    /// start with the recovery of their pending entries; buffered entries of partitions
    /// taken or lost are dropped (they stay pending, so whoever owns the partition
    /// delivers them).
    pub(super) async fn refresh(&self, st: &mut PollState) -> Result<()> {
        let mut owned = self.owned.lock().await;
        self.check_open()?;
        let sent = Instant::now();
        let (generation, members) =
            reply::membership(&self.shared.query::<Value>(&self.beat_cmd()).await?)?;
        let mut others: Vec<String> = members.into_iter().filter(|m| *m != self.name).collect();
        others.sort();
        others.dedup();
        let mut live = vec![self.name.clone()];
        let mut dead = Vec::new();
        if !others.is_empty() {
            let mut pipe = redis::pipe();
            for m in &others {
                pipe.cmd("EXISTS")
                    .arg(self.shared.heartbeat_key(&self.topic, &self.group, m));
            }
            let exists = self.shared.pipeline(&pipe).await?;
            for (m, e) in others.into_iter().zip(&exists) {
                if reply::int(e).unwrap_or(1) > 0 {
                    live.push(m);
                } else {
                    dead.push(m);
                }
            }
        }
        live.sort();
        let me = live.iter().position(|m| *m == self.name).unwrap_or(0);
        let n = live.len();
        let mut pipe = redis::pipe();
        for m in &dead {
            pipe.add_command({
                let mut cmd = eval(
                    PRUNE,
                    &[
                        self.members_key.clone(),
                        self.shared.heartbeat_key(&self.topic, &self.group, m),
                        self.generation_key.clone(),
                    ],
                );
                cmd.arg(m);
                cmd
            })
            .ignore();
        }
        let mut asked = Vec::new();
        for p in 0..self.keys.len() {
            let assigned = p % n == me;
            if assigned {
                let mut cmd = eval(TAKE, &[&self.owner_keys[p]]);
                cmd.arg(&self.name).arg(self.session_ms);
                pipe.add_command(cmd);
            } else if owned[p].is_some() {
                let mut cmd = eval(RELEASE, &[&self.owner_keys[p], &self.generation_key]);
                cmd.arg(&self.name);
                pipe.add_command(cmd);
            } else {
                continue;
            }
            asked.push((p, assigned));
        }
        let replies = self.shared.pipeline(&pipe).await?;
        if replies.len() != asked.len() {
            return Err(Error::Internal(format!(
                "{} replies to {} ownership scripts",
                replies.len(),
                asked.len()
            )));
        }
        let until = sent + self.session;
        let mut waiting = false;
        let (mut taken, mut lost) = (Vec::new(), Vec::new());
        for ((p, assigned), r) in asked.into_iter().zip(&replies) {
            let held = owned[p].is_some();
            if !assigned {
                owned[p] = None;
                lost.push(p);
                continue;
            }
            match code("take", r)? {
                1 if held => owned[p] = Some(until),
                1 | 2 => {
                    owned[p] = Some(until);
                    taken.push(p);
                }
                _ => {
                    owned[p] = None;
                    waiting = true;
                    if held {
                        lost.push(p);
                    }
                }
            }
        }
        drop(owned);
        for &p in &lost {
            self.forget(st, p as u32);
        }
        for &p in &taken {
            self.forget(st, p as u32);
            st.recover[p] = Some(EntryId::ZERO);
        }
        if !taken.is_empty() || !lost.is_empty() {
            tracing::info!(topic = %self.topic, group = %self.group, member = %self.name, members = n, ?taken, ?lost, "partition ownership changed");
        }
        st.generation = Some(generation);
        let every = if waiting {
            self.session / 16
        } else {
            self.session / 4
        };
        st.next_refresh = sent + every.max(Duration::from_millis(1));
        Ok(())
    }

    /// Drops what this member buffered or remembered of partition `p` (taken anew or
    /// lost): its entries stay pending, and its owner delivers them.
    fn forget(&self, st: &mut PollState, p: u32) {
        let before = st.buffer.len();
        st.buffer.retain(|d| d.id.partition != p);
        if st.buffer.len() < before {
            tracing::debug!(topic = %self.topic, group = %self.group, partition = p, dropped = before - st.buffer.len(), "dropped buffered entries of a partition");
        }
        if let Some(r) = st.recover.get_mut(p as usize) {
            *r = None;
        }
        if let Some(c) = st.autoclaim.get_mut(p as usize) {
            *c = EntryId::ZERO;
        }
        self.nacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(q, _)| *q != p);
    }

    /// Marks partitions as lost (their fenced command found another owner).
    pub(super) async fn lost(&self, st: &mut PollState, parts: &[u32]) {
        if parts.is_empty() {
            return;
        }
        {
            let mut owned = self.owned.lock().await;
            for &p in parts {
                if let Some(o) = owned.get_mut(p as usize) {
                    *o = None;
                }
            }
        }
        for &p in parts {
            self.forget(st, p);
        }
        tracing::info!(topic = %self.topic, group = %self.group, member = %self.name, lost = ?parts, "partition ownership lost");
    }

    /// Heartbeat and renewal of the partitions held (without rebalancing).
    pub(super) async fn renew(&self) -> Result<()> {
        let mut owned = self.owned.lock().await;
        self.check_open()?;
        let sent = Instant::now();
        let mut pipe = redis::pipe();
        pipe.add_command(self.beat_cmd()).ignore();
        let held: Vec<usize> = (0..owned.len()).filter(|&p| owned[p].is_some()).collect();
        for &p in &held {
            let mut cmd = eval(RENEW, &[&self.owner_keys[p]]);
            cmd.arg(&self.name).arg(self.session_ms);
            pipe.add_command(cmd);
        }
        let replies = self.shared.pipeline(&pipe).await?;
        for (p, r) in held.into_iter().zip(&replies) {
            owned[p] = (code("renew", r)? == 1).then_some(sent + self.session);
        }
        Ok(())
    }

    /// Leaves the group at once: heartbeat, membership and ownership.
    pub(super) async fn leave(&self) -> Result<()> {
        let mut owned = self.owned.lock().await;
        let mut keys = vec![
            self.heartbeat_key.as_str(),
            self.members_key.as_str(),
            self.generation_key.as_str(),
        ];
        keys.extend(self.owner_keys.iter().map(String::as_str));
        let mut cmd = eval(LEAVE, &keys);
        cmd.arg(&self.name);
        self.shared.query::<()>(&cmd).await?;
        owned.iter_mut().for_each(|o| *o = None);
        Ok(())
    }

    /// The pending entries of partitions being recovered (just taken), a page each,
    /// claimed to this member and delivered in id order. A partition's recovery ends
    /// with a short page.
    pub(super) async fn recover(
        &self,
        st: &mut PollState,
        held: &[bool],
        room: usize,
    ) -> Result<()> {
        let parts: Vec<(u32, EntryId)> = st
            .recover
            .iter()
            .enumerate()
            .filter(|(p, _)| held.get(*p).copied().unwrap_or(false))
            .filter_map(|(p, r)| r.map(|r| (p as u32, r)))
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let page = room.clamp(1, super::claim::PENDING_PAGE);
        let mut pipe = redis::pipe();
        for (p, start) in &parts {
            let start = if *start == EntryId::ZERO {
                "-".to_owned()
            } else {
                format!("({start}")
            };
            let mut cmd = eval(
                RECOVER,
                &[&self.owner_keys[*p as usize], &self.keys[*p as usize]],
            );
            cmd.arg(&self.name).arg(&self.group).arg(start).arg(page);
            pipe.add_command(cmd);
        }
        let replies = self.shared.pipeline(&pipe).await?;
        let mut found = Vec::new();
        let mut lost = Vec::new();
        for ((p, _), r) in parts.into_iter().zip(&replies) {
            match reply::recovered(r)? {
                None => lost.push(p),
                Some((listed, last, entries)) => {
                    st.recover[p as usize] = (listed >= page).then_some(last);
                    if !entries.is_empty() {
                        tracing::info!(topic = %self.topic, group = %self.group, member = %self.name, partition = p, entries = entries.len(), "claimed the pending entries of a partition taken");
                    }
                    found.extend(entries.into_iter().map(|e| (p, e)));
                }
            }
        }
        let got = self.redelivered(found).await?;
        st.push(got);
        self.lost(st, &lost).await;
        Ok(())
    }

    /// New entries of the partitions held and not being recovered, read on the server
    /// only if this member owns them. Returns the partitions that had nothing new, with
    /// their last entry id (what to wait on).
    pub(super) async fn read_new(
        &self,
        st: &mut PollState,
        held: &[bool],
        count: usize,
    ) -> Result<Vec<(u32, EntryId)>> {
        let parts: Vec<u32> = (0..self.keys.len() as u32)
            .filter(|&p| {
                held.get(p as usize).copied().unwrap_or(false) && st.recover[p as usize].is_none()
            })
            .collect();
        let mut keys = vec![self.generation_key.as_str()];
        for &p in &parts {
            keys.push(&self.owner_keys[p as usize]);
            keys.push(&self.keys[p as usize]);
        }
        let mut cmd = eval(READ, &keys);
        cmd.arg(&self.name).arg(&self.group).arg(count.max(1));
        // Until the reply is in the buffer: if it never gets there (an error, or a poll
        // dropped meanwhile), the entries read stay pending and the next poll recovers
        // them (see `resume`).
        st.reading = !parts.is_empty();
        let (generation, results) = reply::fenced_read(&self.shared.query::<Value>(&cmd).await?)?;
        if results.len() != parts.len() {
            return Err(Error::Internal(format!(
                "the read script answered for {} partitions of {}",
                results.len(),
                parts.len()
            )));
        }
        let mut fresh = Vec::new();
        let mut idle = Vec::new();
        let mut lost = Vec::new();
        for (p, result) in parts.into_iter().zip(results) {
            match result {
                None => lost.push(p),
                Some((entries, tail)) => {
                    if entries.is_empty() {
                        idle.push((p, tail));
                    }
                    fresh.extend(
                        entries
                            .into_iter()
                            .filter_map(|e| e.fields.map(|f| delivery(p, e.id, f, 1))),
                    );
                }
            }
        }
        st.push(fresh);
        st.reading = false;
        if st.generation != Some(generation) {
            // Members joined or left, or partitions were let go: rebalance now.
            st.next_refresh = Instant::now();
        }
        self.lost(st, &lost).await;
        Ok(idle)
    }

    /// After a read whose reply was lost: the entries it took are pending to this
    /// member above the last id it buffered of each partition, so those partitions
    /// recover from there.
    pub(super) fn resume(&self, st: &mut PollState) {
        st.reading = false;
        for p in 0..st.recover.len() {
            if st.recover[p].is_none() {
                st.recover[p] = Some(st.seen[p]);
            }
        }
    }

    /// Waits up to `block` (bounded by [`MAX_WAIT`]) for an entry after `idle`'s ids
    /// (`XREAD … BLOCK`, which takes nothing from the group), or just sleeps when this
    /// member reads no partition.
    pub(super) async fn wait_new(&self, idle: &[(u32, EntryId)], block: Duration) -> Result<()> {
        let block = block.min(MAX_WAIT);
        let ms = millis(block);
        if idle.is_empty() || ms == 0 {
            // `BLOCK 0` would wait for ever.
            tokio::time::sleep(block).await;
            return Ok(());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1).arg("BLOCK").arg(ms).arg("STREAMS");
        for (p, _) in idle {
            cmd.arg(&self.keys[*p as usize]);
        }
        for (_, id) in idle {
            cmd.arg(id.to_string());
        }
        let mut conn = self.reader.clone();
        let limit = block + self.shared.op_timeout();
        self.shared
            .timed(limit, cmd.query_async::<Value>(&mut conn))
            .await?
            .map_err(from_redis)
            .map(drop)
    }
}
