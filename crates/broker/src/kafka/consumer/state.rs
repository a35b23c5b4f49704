//! What a member tracks of its partitions: fetched records, deliveries, leases, and the
//! contiguous acknowledged prefix to commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{Delivery, Position, RecordId};

/// Longest time between two looks for expired leases.
const MAX_LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A record fetched from a partition and not yet part of its committed prefix.
#[derive(Debug)]
struct Tracked {
    /// The record; `delivery_count` is how often it was handed out.
    delivery: Delivery,
    acked: bool,
    /// When it was handed out, while it is out and unacknowledged.
    out_since: Option<Instant>,
}

/// An assigned partition.
#[derive(Debug, Default)]
struct Partition {
    /// Tracked records by offset.
    records: BTreeMap<u64, Tracked>,
    /// One past the contiguous acknowledged prefix, once something was acknowledged.
    commit: Option<u64>,
    /// `commit` has not been handed to librdkafka yet.
    commit_pending: bool,
}

/// What the member holds, shared with the rebalance callbacks.
#[derive(Debug, Default)]
pub(super) struct State {
    partitions: HashMap<u32, Partition>,
    /// Records to hand out: given back ones at the front, fetched ones at the back.
    pub(super) queue: VecDeque<RecordId>,
    next_lease_check: Option<Instant>,
}

fn offset_of(id: &RecordId) -> Option<u64> {
    match id.position {
        Position::Offset(offset) => Some(offset),
        Position::StreamId { .. } => None,
    }
}

impl State {
    pub(super) fn assign(&mut self, partitions: &[u32]) {
        for &p in partitions {
            self.partitions.entry(p).or_default();
        }
    }

    /// Forgets the partitions; returns their commits not yet handed to librdkafka.
    pub(super) fn revoke(&mut self, partitions: &[u32]) -> Vec<(u32, u64)> {
        let mut commits = Vec::new();
        for p in partitions {
            if let Some(Partition {
                commit: Some(offset),
                commit_pending: true,
                ..
            }) = self.partitions.remove(p)
            {
                commits.push((*p, offset));
            }
        }
        self.queue.retain(|id| !partitions.contains(&id.partition));
        commits
    }

    /// Tracks a fetched record; false if it is not for an assigned partition or already
    /// tracked or committed.
    pub(super) fn accept(&mut self, delivery: Delivery) -> bool {
        let id = delivery.id;
        let (Some(offset), Some(partition)) =
            (offset_of(&id), self.partitions.get_mut(&id.partition))
        else {
            return false;
        };
        if partition.commit.is_some_and(|c| offset < c) || partition.records.contains_key(&offset) {
            return false;
        }
        partition.records.insert(
            offset,
            Tracked {
                delivery,
                acked: false,
                out_since: None,
            },
        );
        self.queue.push_back(id);
        true
    }

    /// Hands out up to `max` records from the queue.
    pub(super) fn take(&mut self, max: usize, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let tracked = offset_of(&id).and_then(|offset| {
                self.partitions
                    .get_mut(&id.partition)?
                    .records
                    .get_mut(&offset)
            });
            if let Some(t) = tracked.filter(|t| !t.acked && t.out_since.is_none()) {
                t.out_since = Some(now);
                t.delivery.delivery_count += 1;
                out.push(t.delivery.clone());
            }
        }
        out
    }

    /// Puts records given back at the front of the queue, in offset order.
    fn give_back(&mut self, mut ids: Vec<RecordId>) {
        ids.sort();
        for id in ids.into_iter().rev() {
            self.queue.push_front(id);
        }
    }

    /// Gives back records out for longer than `lease` (checked every quarter lease).
    pub(super) fn expire_leases(&mut self, now: Instant, lease: Duration) {
        if self.next_lease_check.is_some_and(|at| now < at) {
            return;
        }
        self.next_lease_check = Some(now + (lease / 4).min(MAX_LEASE_CHECK_INTERVAL));
        let mut expired = Vec::new();
        for partition in self.partitions.values_mut() {
            for t in partition.records.values_mut() {
                if !t.acked
                    && t.out_since
                        .is_some_and(|since| now.duration_since(since) >= lease)
                {
                    t.out_since = None;
                    expired.push(t.delivery.id);
                }
            }
        }
        self.give_back(expired);
    }

    /// Marks records acknowledged; returns the commits that advanced and the ids that
    /// are no longer this member's.
    pub(super) fn ack(&mut self, ids: &[RecordId]) -> (Vec<(u32, u64)>, Vec<RecordId>) {
        let mut touched = BTreeSet::new();
        let mut fenced = Vec::new();
        for id in ids {
            let partition = self.partitions.get_mut(&id.partition);
            let (Some(offset), Some(partition)) = (offset_of(id), partition) else {
                fenced.push(*id);
                continue;
            };
            if let Some(t) = partition.records.get_mut(&offset) {
                t.acked = true;
                t.out_since = None;
                touched.insert(id.partition);
            } else if partition.commit.is_none_or(|c| offset >= c) {
                // Not fetched (again) since a rebalance: not this member's to ack.
                fenced.push(*id);
            }
        }
        let mut commits = Vec::new();
        for p in touched {
            let Some(partition) = self.partitions.get_mut(&p) else {
                continue;
            };
            let mut last = None;
            while let Some(entry) = partition.records.first_entry() {
                if !entry.get().acked {
                    break;
                }
                last = Some(*entry.key());
                entry.remove();
            }
            if let Some(last) = last {
                partition.commit = Some(last + 1);
                partition.commit_pending = true;
                commits.push((p, last + 1));
            }
        }
        (commits, fenced)
    }

    /// Gives back records still out (others are ignored).
    pub(super) fn nack(&mut self, ids: &[RecordId]) {
        let mut back = Vec::new();
        for id in ids {
            let tracked = offset_of(id).and_then(|offset| {
                self.partitions
                    .get_mut(&id.partition)?
                    .records
                    .get_mut(&offset)
            });
            if let Some(t) = tracked.filter(|t| !t.acked && t.out_since.is_some()) {
                t.out_since = None;
                back.push(*id);
            }
        }
        self.give_back(back);
    }

    pub(super) fn pending_commits(&self) -> Vec<(u32, u64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.commit_pending)
            .filter_map(|(&id, p)| Some((id, p.commit?)))
            .collect()
    }

    pub(super) fn committed(&mut self, commits: &[(u32, u64)]) {
        for (p, offset) in commits {
            if let Some(partition) = self.partitions.get_mut(p)
                && partition.commit == Some(*offset)
            {
                partition.commit_pending = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Bytes;

    fn delivery(partition: u32, offset: u64) -> Delivery {
        Delivery {
            id: RecordId::offset(partition, offset),
            key: None,
            value: Bytes::from(format!("{partition}-{offset}")),
            timestamp_ms: 0,
            delivery_count: 0,
        }
    }

    fn state_with(partition: u32, offsets: std::ops::Range<u64>) -> State {
        let mut state = State::default();
        state.assign(&[partition]);
        for offset in offsets {
            assert!(state.accept(delivery(partition, offset)));
        }
        state
    }

    #[test]
    fn only_the_contiguous_acknowledged_prefix_is_committed() {
        let mut state = state_with(0, 10..15);
        let out = state.take(10, Instant::now());
        assert_eq!(out.len(), 5);
        let (commits, fenced) = state.ack(&[RecordId::offset(0, 11), RecordId::offset(0, 12)]);
        assert!(commits.is_empty() && fenced.is_empty());
        let (commits, _) = state.ack(&[RecordId::offset(0, 10)]);
        assert_eq!(commits, vec![(0, 13)]);
        let (commits, _) = state.ack(&[RecordId::offset(0, 14), RecordId::offset(0, 13)]);
        assert_eq!(commits, vec![(0, 15)]);
        // Acking again what is committed is fine; a revoked partition's records are not.
        let (commits, fenced) = state.ack(&[RecordId::offset(0, 12)]);
        assert!(commits.is_empty() && fenced.is_empty());
        state.revoke(&[0]);
        let (_, fenced) = state.ack(&[RecordId::offset(0, 15)]);
        assert_eq!(fenced, vec![RecordId::offset(0, 15)]);
    }

    #[test]
    fn nacked_and_expired_records_come_back_first_with_a_higher_count() {
        let mut state = state_with(1, 0..4);
        let start = Instant::now();
        let first = state.take(2, start);
        assert_eq!(
            first.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
            [1, 1]
        );
        state.nack(&[first[1].id]);
        let again = state.take(1, start);
        assert_eq!(again[0].id, first[1].id);
        assert_eq!(again[0].delivery_count, 2);
        // Record 0 is still out: its lease expires.
        let later = start + Duration::from_secs(5);
        state.expire_leases(later, Duration::from_secs(1));
        let next = state.take(10, later);
        let ids: Vec<_> = next.iter().map(|d| d.id).collect();
        assert_eq!(
            ids,
            [0, 1, 2, 3].map(|o| RecordId::offset(1, o)),
            "expired records first, in offset order, then fresh ones"
        );
    }

    #[test]
    fn revoke_drops_buffered_records_and_returns_pending_commits() {
        let mut state = state_with(2, 0..3);
        state.assign(&[3]);
        assert!(state.accept(delivery(3, 7)));
        state.take(1, Instant::now());
        let (commits, _) = state.ack(&[RecordId::offset(2, 0)]);
        assert_eq!(commits, vec![(2, 1)]);
        assert_eq!(state.revoke(&[2]), vec![(2, 1)]);
        let rest = state.take(10, Instant::now());
        assert_eq!(
            rest.iter().map(|d| d.id).collect::<Vec<_>>(),
            [RecordId::offset(3, 7)]
        );
        assert!(
            !state.accept(delivery(2, 1)),
            "a revoked partition takes no records"
        );
    }
}
