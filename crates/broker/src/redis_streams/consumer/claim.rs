//! Redelivery for a consumer: delivery counts of claimed entries, nacked records, the
//! work of dead members (heartbeat expired) and entries past their lease
//! (`XAUTOCLAIM`), and the deletion of dead members. Claims are fenced: they run only on
//! partitions this member owns (see `owner`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use redis::Script;

use super::{PollState, RedisConsumer, delivery};
use crate::Delivery;
use crate::Result;
use crate::redis_streams::from_redis;
use crate::redis_streams::reply::{self, Entry, EntryId};

/// Deletes a member from the group if its heartbeat is gone and it has nothing pending,
/// atomically: a member deleted with pending entries would leave them unclaimable.
/// KEYS: stream, heartbeat; ARGV: group, member.
static DELETE_IF_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -2 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])",
    )
});

/// Page size when listing pending entries, and most ids claimed by one command.
pub(super) const PENDING_PAGE: usize = 1000;

impl RedisConsumer {
    /// Deliveries of entries this member just claimed or re-read: their delivery counts
    /// come from `XPENDING`; deleted (trimmed) ones are acknowledged and dropped.
    pub(super) async fn redelivered(&self, found: Vec<(u32, Entry)>) -> Result<Vec<Delivery>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let mut live = Vec::new();
        for (p, entry) in found {
            let key = &self.keys[p as usize];
            let id = entry.id.to_string();
            match entry.fields {
                None => {
                    pipe.cmd("XACK").arg(key).arg(&self.group).arg(&id).ignore();
                }
                Some(fields) => {
                    pipe.cmd("XPENDING")
                        .arg(key)
                        .arg(&self.group)
                        .arg(&id)
                        .arg(&id)
                        .arg(1);
                    live.push((p, entry.id, fields));
                }
            }
        }
        let counts = self.shared.pipeline(&pipe).await?;
        let mut out = Vec::with_capacity(live.len());
        for (i, (p, id, fields)) in live.into_iter().enumerate() {
            let count = match counts.get(i) {
                Some(v) => reply::pending(v)?.first().map_or(1, |(_, c)| *c),
                None => 1,
            };
            out.push(delivery(p, id, fields, count.max(1)));
        }
        Ok(out)
    }

    /// Claims back the nacked records still idle since the nack (min-idle the lease), on
    /// the partitions in `settled` (owned, not being recovered); the others are left to
    /// the recovery or to their new owner.
    pub(super) async fn claim_nacked(&self, settled: &[bool]) -> Result<Vec<Delivery>> {
        let nacked = std::mem::take(&mut *self.nacked.lock().unwrap_or_else(|e| e.into_inner()));
        if nacked.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_part: Vec<(u32, Vec<EntryId>)> = Vec::new();
        for (p, id) in nacked
            .into_iter()
            .filter(|(p, _)| settled.get(*p as usize).copied().unwrap_or(false))
        {
            match by_part.last_mut() {
                Some((q, ids)) if *q == p => ids.push(id),
                _ => by_part.push((p, vec![id])),
            }
        }
        self.claim(&by_part, self.lease_ms).await
    }

    /// `XCLAIM <key> <group> <me> <min_idle> <ids…>` per partition owned, then
    /// delivered.
    async fn claim(&self, ids: &[(u32, Vec<EntryId>)], min_idle_ms: u64) -> Result<Vec<Delivery>> {
        let mut pipe = redis::pipe();
        let mut parts = Vec::new();
        for (p, ids) in ids.iter() {
            for chunk in ids.chunks(PENDING_PAGE) {
                let mut xclaim = self.as_owner(*p, "XCLAIM");
                xclaim.arg(&self.group).arg(&self.name).arg(min_idle_ms);
                for id in chunk {
                    xclaim.arg(id.to_string());
                }
                pipe.add_command(xclaim);
                parts.push(*p);
            }
        }
        let replies = self.shared.pipeline(&pipe).await?;
        let mut found = Vec::new();
        for (p, reply) in parts.into_iter().zip(&replies) {
            // Nil: not the owner (any more).
            found.extend(reply::entries("XCLAIM", reply)?.into_iter().map(|e| (p, e)));
        }
        self.redelivered(found).await
    }

    /// Takes the pending entries of members whose heartbeat expired on the partitions in
    /// `settled` (owned, not being recovered: normally there are none, the recovery took
    /// them), and deletes dead members with nothing pending.
    pub(super) async fn claim_from_dead(
        &self,
        room: usize,
        settled: &[bool],
    ) -> Result<Vec<Delivery>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in &self.keys {
            pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(&self.group);
        }
        let mut members = Vec::new();
        for (p, reply) in self
            .shared
            .pipeline_each(&pipe)
            .await?
            .into_iter()
            .enumerate()
        {
            let infos = reply::consumers(&reply.map_err(from_redis)?)?;
            members.extend(
                infos
                    .into_iter()
                    .filter(|c| c.name != self.name)
                    .map(|c| (p as u32, c)),
            );
        }
        let names: BTreeSet<&str> = members.iter().map(|(_, c)| c.name.as_str()).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut exists = redis::pipe();
        for name in &names {
            exists
                .cmd("EXISTS")
                .arg(self.shared.heartbeat_key(&self.topic, &self.group, name));
        }
        let alive: BTreeSet<&str> = names
            .iter()
            .zip(self.shared.pipeline(&exists).await?)
            .filter(|(_, e)| reply::int(e).unwrap_or(1) > 0)
            .map(|(n, _)| *n)
            .collect();
        let dead: Vec<&(u32, reply::ConsumerInfo)> = members
            .iter()
            .filter(|(_, c)| !alive.contains(c.name.as_str()))
            .collect();
        let mut list = redis::pipe();
        let mut listed = Vec::new();
        for (p, member) in dead
            .iter()
            .filter(|(p, c)| c.pending > 0 && settled.get(*p as usize).copied().unwrap_or(false))
        {
            list.cmd("XPENDING")
                .arg(&self.keys[*p as usize])
                .arg(&self.group)
                .arg("-")
                .arg("+")
                .arg(room)
                .arg(&member.name);
            listed.push(*p);
            tracing::info!(topic = %self.topic, group = %self.group, member = %member.name, partition = p, pending = member.pending, "claiming the work of a dead consumer");
        }
        let mut ids = Vec::new();
        for (p, reply) in listed.into_iter().zip(self.shared.pipeline(&list).await?) {
            ids.push((
                p,
                reply::pending(&reply)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            ));
        }
        let claimed = self.claim(&ids, (self.session_ms / 2).max(1)).await?;
        for (p, member) in dead.iter().filter(|(_, c)| c.pending == 0) {
            self.delete_if_dead(*p, &member.name).await;
        }
        Ok(claimed)
    }

    /// Removes `member` from the group on partition `p` if it is dead and idle; a
    /// failure is only logged (the next redistribution tries again).
    pub(super) async fn delete_if_dead(&self, p: u32, member: &str) {
        let mut script = DELETE_IF_DEAD.prepare_invoke();
        script
            .key(&self.keys[p as usize])
            .key(self.shared.heartbeat_key(&self.topic, &self.group, member))
            .arg(&self.group)
            .arg(member);
        let mut conn = self.shared.conn.clone();
        match self
            .shared
            .timed(
                self.shared.op_timeout(),
                script.invoke_async::<i64>(&mut conn),
            )
            .await
        {
            Ok(Ok(1)) => {
                tracing::debug!(topic = %self.topic, group = %self.group, %member, partition = p, "deleted a dead consumer");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(%member, error = %e, "cannot delete a dead consumer"),
            Err(e) => tracing::warn!(%member, error = %e, "cannot delete a dead consumer"),
        }
    }

    /// `XAUTOCLAIM` of entries unacknowledged for longer than the lease, on the
    /// partitions in `settled` (owned, not being recovered): the owner takes them back.
    pub(super) async fn autoclaim(
        &self,
        st: &mut PollState,
        room: usize,
        settled: &[bool],
    ) -> Result<Vec<Delivery>> {
        let mut pipe = redis::pipe();
        let mut parts = Vec::new();
        for (p, cursor) in st.autoclaim.iter().enumerate() {
            if !settled.get(p).copied().unwrap_or(false) {
                continue;
            }
            let mut cmd = self.as_owner(p as u32, "XAUTOCLAIM");
            cmd.arg(&self.group)
                .arg(&self.name)
                .arg(self.lease_ms)
                .arg(cursor.to_string())
                .arg("COUNT")
                .arg(room.clamp(1, PENDING_PAGE));
            pipe.add_command(cmd);
            parts.push(p);
        }
        let replies = self.shared.pipeline(&pipe).await?;
        let mut found = Vec::new();
        for (p, reply) in parts.into_iter().zip(&replies) {
            if matches!(reply, redis::Value::Nil) {
                continue; // not the owner (any more)
            }
            let (next, entries) = reply::autoclaim(reply)?;
            if let Some(cursor) = st.autoclaim.get_mut(p) {
                *cursor = next;
            }
            found.extend(entries.into_iter().map(|e| (p as u32, e)));
        }
        self.redelivered(found).await
    }

    /// Marks entries of partitions this member owns idle for `idle_ms`
    /// (`XCLAIM … 0 … IDLE … JUSTID`), so that claims with that min-idle take them.
    pub(super) async fn release(&self, ids: &[(u32, Vec<EntryId>)], idle_ms: u64) -> Result<()> {
        let mut pipe = redis::pipe();
        for (p, ids) in ids.iter() {
            for chunk in ids.chunks(PENDING_PAGE) {
                let mut xclaim = self.as_owner(*p, "XCLAIM");
                xclaim.arg(&self.group).arg(&self.name).arg(0);
                for id in chunk {
                    xclaim.arg(id.to_string());
                }
                xclaim.arg("IDLE").arg(idle_ms).arg("JUSTID");
                pipe.add_command(xclaim).ignore();
            }
        }
        self.shared.pipeline(&pipe).await.map(drop)
    }

    /// Every entry pending on this member, by partition.
    pub(super) async fn own_pending(&self) -> Result<Vec<(u32, Vec<EntryId>)>> {
        let mut out: Vec<(u32, Vec<EntryId>)> = (0..self.keys.len() as u32)
            .map(|p| (p, Vec::new()))
            .collect();
        let mut cursors: Vec<(u32, String)> = (0..self.keys.len() as u32)
            .map(|p| (p, "-".to_owned()))
            .collect();
        while !cursors.is_empty() {
            let mut pipe = redis::pipe();
            for (p, start) in &cursors {
                pipe.cmd("XPENDING")
                    .arg(&self.keys[*p as usize])
                    .arg(&self.group)
                    .arg(start)
                    .arg("+")
                    .arg(PENDING_PAGE)
                    .arg(&self.name);
            }
            let replies = self.shared.pipeline(&pipe).await?;
            let mut next = Vec::new();
            for ((p, _), reply) in cursors.iter().zip(&replies) {
                let page = reply::pending(reply)?;
                if let (Some((last, _)), true) = (page.last(), page.len() >= PENDING_PAGE) {
                    next.push((*p, format!("({last}")));
                }
                out[*p as usize]
                    .1
                    .extend(page.into_iter().map(|(id, _)| id));
            }
            cursors = next;
        }
        Ok(out)
    }
}
