//! Consumer groups: shared state of every consumer of a (topic, group) pair, and the
//! persistence of its committed offsets.
//!
//! Semantics (see `group/state.rs` for the state machine):
//!
//! - Members are identified by consumer id. A member is live while it polls or heartbeats
//!   within its `session_timeout`; a member with an expired lease is considered stuck and is
//!   evicted too (its later acks fail with [`Error::LeaseExpired`]). An evicted member that
//!   polls or heartbeats again rejoins as a new incarnation.
//! - Target ownership: member ids sorted, partition `p` goes to member `p % n`. A partition
//!   moves to its target only once its current owner is gone or has no lease on it; until
//!   then the owner gets no new records from it (it drains).
//! - Delivered records are leased per (poll, partition). Acked records advance the
//!   committed offset over the contiguous acked prefix; it is persisted before `ack`
//!   returns. Nacked or revoked records are redelivered first, in offset order.
//! - Groups are persisted when created, so retention respects them from then on.

pub(crate) mod state;
pub(crate) mod store;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::log::Topic;
use crate::{Delivery, GroupOptions, Result};
use state::{GroupState, Settle, Settled};

pub(crate) struct Group {
    pub(crate) topic: Arc<Topic>,
    pub(crate) name: String,
    path: PathBuf,
    fsync: bool,
    state: Mutex<GroupState>,
    /// Bumped when something a waiting poller may care about changed.
    pub(crate) changed: watch::Sender<u64>,
    /// Version of the committed offsets last written (serializes writers).
    persisted: Mutex<u64>,
}

impl Group {
    fn with_committed(
        topic: Arc<Topic>,
        name: &str,
        path: PathBuf,
        fsync: bool,
        committed: Vec<u64>,
    ) -> Self {
        Self {
            topic,
            name: name.to_owned(),
            path,
            fsync,
            state: Mutex::new(GroupState::new(committed)),
            changed: watch::channel(0).0,
            persisted: Mutex::new(0),
        }
    }

    /// Path of the committed-offsets file of `group` in `topic`.
    pub(crate) fn path_for(topic: &Topic, group: &str) -> PathBuf {
        topic
            .dir
            .join("groups")
            .join(format!("{group}{}", store::SUFFIX))
    }

    /// Loads a persisted group.
    pub(crate) fn load(topic: Arc<Topic>, name: &str, fsync: bool) -> Result<Self> {
        let path = Self::path_for(&topic, name);
        let committed = store::read(&path)?;
        if committed.len() != topic.partitions.len() {
            return Err(crate::Error::Corrupt {
                path,
                position: 0,
                reason: format!(
                    "{} committed offsets for a topic of {} partitions",
                    committed.len(),
                    topic.partitions.len()
                ),
            });
        }
        Ok(Self::with_committed(topic, name, path, fsync, committed))
    }

    /// Creates a new group starting at each partition's first retained offset, and persists it.
    pub(crate) fn create(topic: Arc<Topic>, name: &str, fsync: bool) -> Result<Self> {
        let path = Self::path_for(&topic, name);
        let dir = topic.dir.join("groups");
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io("create", &dir, e))?;
        let committed = topic.partitions.iter().map(|p| p.start_offset()).collect();
        let group = Self::with_committed(topic, name, path, fsync, committed);
        group.persist()?;
        Ok(group)
    }

    pub(crate) fn committed(&self) -> Vec<u64> {
        self.state.lock().committed()
    }

    pub(crate) fn committed_of(&self, partition: u32) -> Option<u64> {
        self.state.lock().committed_of(partition)
    }

    /// Writes the committed offsets if they changed since the last write (blocking I/O).
    pub(crate) fn persist(&self) -> Result<()> {
        let mut persisted = self.persisted.lock();
        let (version, committed) = {
            let st = self.state.lock();
            (st.version, st.committed())
        };
        if version < *persisted || (version == *persisted && self.path.exists()) {
            return Ok(());
        }
        store::write(&self.path, &committed, self.fsync)?;
        *persisted = version;
        Ok(())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Joins the member; returns its incarnation.
    pub(crate) fn join(&self, id: &str, options: &GroupOptions) -> u64 {
        let now = Instant::now();
        let incarnation = {
            let mut st = self.state.lock();
            st.expire(now);
            let incarnation = st.join(id, options, now);
            st.rebalance();
            incarnation
        };
        self.notify();
        incarnation
    }

    /// Keeps the member alive (rejoining it if it was evicted), applies expiries and
    /// rebalances; then runs `then` on the state. Returns the (possibly new) incarnation.
    fn maintain<T>(
        &self,
        id: &str,
        incarnation: u64,
        options: &GroupOptions,
        then: impl FnOnce(&mut GroupState, Instant) -> Result<T>,
    ) -> Result<(u64, T)> {
        let now = Instant::now();
        let mut st = self.state.lock();
        let alive = st.touch(id, incarnation, now)?;
        let mut changed = st.expire(now);
        let incarnation = if alive && st.touch(id, incarnation, now)? {
            incarnation
        } else {
            changed = true;
            st.join(id, options, now)
        };
        changed |= st.rebalance();
        let out = then(&mut st, now);
        drop(st);
        if changed {
            self.notify();
        }
        Ok((incarnation, out?))
    }

    /// Heartbeat: see [`Group::maintain`].
    pub(crate) fn heartbeat(
        &self,
        id: &str,
        incarnation: u64,
        options: &GroupOptions,
    ) -> Result<u64> {
        self.maintain(id, incarnation, options, |_, _| Ok(()))
            .map(|(i, ())| i)
    }

    /// One non-blocking poll: returns deliveries and when the state next expires by itself.
    pub(crate) fn poll_once(
        &self,
        id: &str,
        incarnation: u64,
        options: &GroupOptions,
        max: usize,
    ) -> Result<(u64, Vec<Delivery>, Option<Instant>)> {
        let topic = Arc::clone(&self.topic);
        let (incarnation, (out, wake)) = self.maintain(id, incarnation, options, |st, now| {
            let out = st.collect(id, max, &*topic, now)?;
            Ok((out, st.next_wake()))
        })?;
        Ok((incarnation, out, wake))
    }

    /// Acks or nacks records; returns whether the committed offsets need persisting.
    pub(crate) fn settle(
        &self,
        id: &str,
        incarnation: u64,
        partition: u32,
        offsets: &[u64],
        how: Settle,
    ) -> Result<bool> {
        let now = Instant::now();
        let (result, changed) = {
            let mut st = self.state.lock();
            let mut changed = st.expire(now);
            let result = st.settle(id, incarnation, partition, offsets, how);
            if result.as_ref().is_ok_and(|s| s.notify) {
                st.rebalance();
                changed = true;
            }
            (result, changed)
        };
        if changed {
            self.notify();
        }
        let settled: Settled = result.map_err(|e| match e {
            crate::Error::UnknownPartition {
                partition,
                partitions,
                ..
            } => crate::Error::UnknownPartition {
                topic: self.topic.name.clone(),
                partition,
                partitions,
            },
            other => other,
        })?;
        Ok(settled.committed_advanced)
    }

    /// Removes the member (if still this incarnation); its leases go back for redelivery.
    pub(crate) fn leave(&self, id: &str, incarnation: u64) {
        let left = {
            let mut st = self.state.lock();
            let left = st.leave(id, incarnation);
            if left {
                st.rebalance();
            }
            left
        };
        if left {
            self.notify();
        }
    }

    /// Partitions owned by the member, after applying expiries.
    pub(crate) fn owned_by(&self, id: &str) -> Vec<u32> {
        let (owned, changed) = {
            let mut st = self.state.lock();
            let changed = st.expire(Instant::now());
            if changed {
                st.rebalance();
            }
            (st.owned_by(id), changed)
        };
        if changed {
            self.notify();
        }
        owned
    }
}
