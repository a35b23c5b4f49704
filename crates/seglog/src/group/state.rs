//! The in-memory state machine of a consumer group: membership, partition ownership,
//! leases and acknowledgements. Pure logic: time comes in as arguments and records come
//! from a [`RecordSource`], so it does no I/O of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::time::Instant;

use crate::{Delivery, Error, GroupOptions, Result, StoredRecord};

/// Where a group reads records from (the topic, or a fake in unit tests).
pub(crate) trait RecordSource {
    /// Durable records of `partition` from `from`, at most `max`.
    fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<StoredRecord>>;
    /// First retained offset of `partition`.
    fn start_offset(&self, partition: u32) -> u64;
}

struct Member {
    incarnation: u64,
    last_seen: Instant,
    options: GroupOptions,
    /// Round-robin cursor over the member's partitions.
    rr: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Leased(u64),
    Pending,
    Acked,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    state: SlotState,
    deliveries: u32,
}

/// One partition as seen by the group. Offsets `committed..committed + slots.len()` have
/// been delivered at least once; `slots[i]` is the state of offset `committed + i`.
struct PartState {
    owner: Option<String>,
    target: Option<String>,
    committed: u64,
    slots: VecDeque<Slot>,
    /// How many of `slots` are [`SlotState::Pending`]: delivery skips the scan of the
    /// (possibly hundreds of thousands of) leased slots when there are none.
    pending: usize,
}

struct Lease {
    member: String,
    incarnation: u64,
    partition: u32,
    expires: Instant,
    outstanding: usize,
}

/// Whether an ack-like call acknowledges or releases records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Nack,
}

/// Result of settling records.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Settled {
    /// The committed offset advanced (needs persisting).
    pub(crate) committed_advanced: bool,
    /// Something other consumers may be waiting for changed (released records, a lease
    /// ended so ownership may move).
    pub(crate) notify: bool,
}

pub(crate) struct GroupState {
    members: BTreeMap<String, Member>,
    parts: Vec<PartState>,
    leases: HashMap<u64, Lease>,
    next_lease: u64,
    next_incarnation: u64,
    /// Bumped whenever a committed offset changes.
    pub(crate) version: u64,
}

impl GroupState {
    pub(crate) fn new(committed: Vec<u64>) -> Self {
        let parts = committed
            .into_iter()
            .map(|committed| PartState {
                owner: None,
                target: None,
                committed,
                slots: VecDeque::new(),
                pending: 0,
            })
            .collect();
        Self {
            members: BTreeMap::new(),
            parts,
            leases: HashMap::new(),
            next_lease: 1,
            next_incarnation: 1,
            version: 0,
        }
    }

    pub(crate) fn committed(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.committed).collect()
    }

    pub(crate) fn committed_of(&self, partition: u32) -> Option<u64> {
        self.parts.get(partition as usize).map(|p| p.committed)
    }

    /// Adds a member (replacing any member with the same id) and returns its incarnation.
    pub(crate) fn join(&mut self, id: &str, options: &GroupOptions, now: Instant) -> u64 {
        self.evict(id);
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let member = Member {
            incarnation,
            last_seen: now,
            options: options.clone(),
            rr: 0,
        };
        self.members.insert(id.to_owned(), member);
        incarnation
    }

    /// Records that the member is alive. `Ok(false)` if it is not a member any more (it
    /// was evicted and must rejoin); [`Error::Fenced`] if another handle took its id.
    pub(crate) fn touch(&mut self, id: &str, incarnation: u64, now: Instant) -> Result<bool> {
        match self.members.get_mut(id) {
            Some(m) if m.incarnation == incarnation => {
                m.last_seen = now;
                Ok(true)
            }
            Some(_) => Err(Error::Fenced(id.to_owned())),
            None => Ok(false),
        }
    }

    /// Removes the member if it still is this incarnation; returns whether it was.
    pub(crate) fn leave(&mut self, id: &str, incarnation: u64) -> bool {
        let current = self
            .members
            .get(id)
            .is_some_and(|m| m.incarnation == incarnation);
        if current {
            self.evict(id);
        }
        current
    }

    /// Evicts members whose session or any lease expired; returns whether any was.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut doomed: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.expires <= now)
            .map(|l| l.member.clone())
            .collect();
        doomed.extend(
            self.members
                .iter()
                .filter(|(_, m)| m.last_seen + m.options.session_timeout <= now)
                .map(|(id, _)| id.clone()),
        );
        doomed.sort_unstable();
        doomed.dedup();
        for id in &doomed {
            tracing::info!(consumer = %id, "evicting consumer: session or lease expired");
            self.evict(id);
        }
        !doomed.is_empty()
    }

    /// Removes a member: its leases are revoked (records become pending redelivery) and its
    /// partitions lose their owner.
    fn evict(&mut self, id: &str) {
        if self.members.remove(id).is_none() {
            return;
        }
        let revoked: Vec<(u64, u32)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.member == id)
            .map(|(lid, l)| (*lid, l.partition))
            .collect();
        for (lid, partition) in revoked {
            self.leases.remove(&lid);
            if let Some(part) = self.parts.get_mut(partition as usize) {
                for slot in &mut part.slots {
                    if slot.state == SlotState::Leased(lid) {
                        slot.state = SlotState::Pending;
                        part.pending += 1;
                    }
                }
            }
        }
        for part in &mut self.parts {
            if part.owner.as_deref() == Some(id) {
                part.owner = None;
            }
        }
    }

    /// Recomputes the target owner of every partition (sorted member ids, round-robin) and
    /// moves partitions whose current owner is gone or has nothing in flight on them.
    /// Returns whether any ownership changed.
    pub(crate) fn rebalance(&mut self) -> bool {
        let ids: Vec<&String> = self.members.keys().collect();
        let mut changed = false;
        for (p, part) in self.parts.iter_mut().enumerate() {
            let target = match ids.len() {
                0 => None,
                n => ids.get(p % n).map(|s| (*s).clone()),
            };
            let movable = match &part.owner {
                None => true,
                Some(owner) if Some(owner) == target.as_ref() => false,
                Some(owner) => !self
                    .leases
                    .values()
                    .any(|l| l.partition as usize == p && &l.member == owner),
            };
            if movable && part.owner != target {
                part.owner.clone_from(&target);
                changed = true;
            }
            part.target = target;
        }
        changed
    }

    /// Partitions currently owned by the member.
    pub(crate) fn owned_by(&self, id: &str) -> Vec<u32> {
        (0u32..)
            .zip(&self.parts)
            .filter(|(_, p)| p.owner.as_deref() == Some(id))
            .map(|(i, _)| i)
            .collect()
    }

    /// When the state next changes by itself (a lease or a session expires).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let leases = self.leases.values().map(|l| l.expires);
        let sessions = self
            .members
            .values()
            .map(|m| m.last_seen + m.options.session_timeout);
        leases.chain(sessions).min()
    }

    /// Delivers up to `max` records to the member from the partitions it owns (and is the
    /// target owner of), round-robin across them, redeliveries first, and leases them.
    pub(crate) fn collect(
        &mut self,
        id: &str,
        max: usize,
        source: &dyn RecordSource,
        now: Instant,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let Some(member) = self.members.get_mut(id) else {
            return Ok(out);
        };
        let (incarnation, expires, rr) = (
            member.incarnation,
            now + member.options.lease_timeout,
            member.rr,
        );
        member.rr = rr.wrapping_add(1);
        let owned: Vec<u32> = (0u32..)
            .zip(&self.parts)
            .filter(|(_, p)| p.owner.as_deref() == Some(id) && p.target.as_deref() == Some(id))
            .map(|(i, _)| i)
            .collect();
        let n = owned.len();
        for k in 0..n {
            let Some(&p) = owned.get((rr + k) % n) else {
                break;
            };
            if out.len() >= max {
                break;
            }
            let lid = self.next_lease;
            let delivered = self.deliver(p, lid, max - out.len(), source, &mut out)?;
            if delivered > 0 {
                self.next_lease += 1;
                let lease = Lease {
                    member: id.to_owned(),
                    incarnation,
                    partition: p,
                    expires,
                    outstanding: delivered,
                };
                self.leases.insert(lid, lease);
            }
        }
        Ok(out)
    }

    /// Delivers pending then new records of one partition under lease `lid`.
    fn deliver(
        &mut self,
        p: u32,
        lid: u64,
        max: usize,
        source: &dyn RecordSource,
        out: &mut Vec<Delivery>,
    ) -> Result<usize> {
        let Some(part) = self.parts.get_mut(p as usize) else {
            return Ok(0);
        };
        let start = source.start_offset(p);
        if part.slots.is_empty() && part.committed < start {
            tracing::warn!(
                partition = p,
                committed = part.committed,
                start,
                "committed offset is below the first retained offset; skipping ahead"
            );
            part.committed = start;
            self.version += 1;
        }
        let before = out.len();
        let mut i = 0usize;
        while part.pending > 0 && i < part.slots.len() && out.len() - before < max {
            let run = part
                .slots
                .range(i..)
                .take(max - (out.len() - before))
                .take_while(|s| s.state == SlotState::Pending)
                .count();
            if run == 0 {
                i += 1;
                continue;
            }
            let records = source.read(p, part.committed + i as u64, run)?;
            for r in records {
                let idx = r.offset.checked_sub(part.committed).map(|x| x as usize);
                if let Some(slot) = idx
                    .filter(|&x| x < i + run)
                    .and_then(|x| part.slots.get_mut(x))
                {
                    if slot.state == SlotState::Pending {
                        part.pending = part.pending.saturating_sub(1);
                    }
                    slot.state = SlotState::Leased(lid);
                    slot.deliveries += 1;
                    out.push(delivery(p, r, slot.deliveries));
                }
            }
            i += run;
        }
        let remaining = max - (out.len() - before);
        if remaining > 0 {
            let from = part.committed + part.slots.len() as u64;
            for r in source.read(p, from, remaining)? {
                part.slots.push_back(Slot {
                    state: SlotState::Leased(lid),
                    deliveries: 1,
                });
                out.push(delivery(p, r, 1));
            }
        }
        debug_assert_eq!(part.pending, pending_slots(part), "pending count drifted");
        Ok(out.len() - before)
    }

    /// Acks or nacks `offsets` of `partition` for the member. Nothing changes unless every
    /// offset is currently leased to this member incarnation ([`Error::LeaseExpired`]).
    pub(crate) fn settle(
        &mut self,
        id: &str,
        incarnation: u64,
        partition: u32,
        offsets: &[u64],
        how: Settle,
    ) -> Result<Settled> {
        let mut offsets = offsets.to_vec();
        offsets.sort_unstable();
        offsets.dedup();
        let Some(part) = self.parts.get_mut(partition as usize) else {
            return Err(Error::UnknownPartition {
                topic: String::new(),
                partition,
                partitions: u32::try_from(self.parts.len()).unwrap_or(u32::MAX),
            });
        };
        let found = leased_to(part, &self.leases, id, incarnation, partition, &offsets)?;
        let leases = &mut self.leases;
        let mut settled = Settled::default();
        for (idx, lid) in found {
            if let Some(slot) = part.slots.get_mut(idx) {
                let was_pending = slot.state == SlotState::Pending;
                slot.state = match how {
                    Settle::Ack => SlotState::Acked,
                    Settle::Nack => SlotState::Pending,
                };
                match (was_pending, slot.state == SlotState::Pending) {
                    (false, true) => part.pending += 1,
                    (true, false) => part.pending = part.pending.saturating_sub(1),
                    _ => {}
                }
            }
            if let Some(lease) = leases.get_mut(&lid) {
                lease.outstanding = lease.outstanding.saturating_sub(1);
                if lease.outstanding == 0 {
                    leases.remove(&lid);
                    settled.notify = true;
                }
            }
        }
        settled.notify |= how == Settle::Nack && !offsets.is_empty();
        while part
            .slots
            .front()
            .is_some_and(|s| s.state == SlotState::Acked)
        {
            part.slots.pop_front();
            part.committed += 1;
            settled.committed_advanced = true;
        }
        if settled.committed_advanced {
            self.version += 1;
        }
        debug_assert_eq!(part.pending, pending_slots(part), "pending count drifted");
        Ok(settled)
    }
}

/// Counts the pending slots of a partition (what `PartState::pending` must equal).
fn pending_slots(part: &PartState) -> usize {
    part.slots
        .iter()
        .filter(|s| s.state == SlotState::Pending)
        .count()
}

/// Slot index and lease of each offset, or [`Error::LeaseExpired`] for the first offset
/// not currently leased to this member incarnation.
fn leased_to(
    part: &PartState,
    leases: &HashMap<u64, Lease>,
    id: &str,
    incarnation: u64,
    partition: u32,
    offsets: &[u64],
) -> Result<Vec<(usize, u64)>> {
    let lease_of = |offset: u64| {
        let idx = usize::try_from(offset.checked_sub(part.committed)?).ok()?;
        match part.slots.get(idx)?.state {
            SlotState::Leased(lid) => leases
                .get(&lid)
                .filter(|l| l.member == id && l.incarnation == incarnation)
                .map(|_| (idx, lid)),
            _ => None,
        }
    };
    offsets
        .iter()
        .map(|&offset| {
            lease_of(offset).ok_or_else(|| Error::LeaseExpired {
                consumer: id.to_owned(),
                partition,
                offset,
            })
        })
        .collect()
}

fn delivery(partition: u32, r: StoredRecord, delivery_count: u32) -> Delivery {
    Delivery {
        partition,
        offset: r.offset,
        key: r.key,
        value: r.value,
        timestamp_ms: r.timestamp_ms,
        delivery_count,
    }
}
