//! [`Consumer`]: one member of a consumer group.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::group::Group;
use crate::group::state::Settle;
use crate::{Delivery, Error, GroupOptions, Result};

/// A member of a consumer group. `Send + Sync`; share it through an `Arc`.
///
/// Dropping it leaves the group (like [`Consumer::close`]).
pub struct Consumer {
    group: Arc<Group>,
    id: String,
    options: GroupOptions,
    /// Current membership incarnation (changes when the consumer rejoins after eviction).
    incarnation: AtomicU64,
    closed: AtomicBool,
    log_closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.group.topic.name)
            .field("group", &self.group.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn join(
        group: Arc<Group>,
        id: &str,
        options: GroupOptions,
        log_closed: Arc<AtomicBool>,
    ) -> Self {
        let incarnation = group.join(id, &options);
        Self {
            group,
            id: id.to_owned(),
            options,
            incarnation: AtomicU64::new(incarnation),
            closed: AtomicBool::new(false),
            log_closed,
        }
    }

    /// The consumer id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.log_closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Delivers up to `max_records` records from the partitions this consumer owns,
    /// waiting up to `wait` for some to become available; an empty vector means none did.
    /// Delivered records are leased to this consumer until acked, nacked, or the lease
    /// times out. Polling also keeps the consumer's session alive.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Fenced`] if another handle took this consumer id,
    /// read errors ([`Error::Io`], [`Error::Corrupt`]).
    pub async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let mut topic_rx = self.group.topic.changed.subscribe();
        let mut group_rx = self.group.changed.subscribe();
        loop {
            self.check_open()?;
            topic_rx.borrow_and_update();
            group_rx.borrow_and_update();
            let incarnation = self.incarnation.load(Ordering::Acquire);
            let (incarnation, out, wake) =
                self.group
                    .poll_once(&self.id, incarnation, &self.options, max_records)?;
            self.incarnation.store(incarnation, Ordering::Release);
            let now = Instant::now();
            if !out.is_empty() || max_records == 0 || now >= deadline {
                return Ok(out);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                changed = topic_rx.changed() => {
                    if changed.is_err() { tokio::time::sleep_until(until).await }
                }
                changed = group_rx.changed() => {
                    if changed.is_err() { tokio::time::sleep_until(until).await }
                }
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Acknowledges records: they are done. The group's committed offset for the partition
    /// advances over the contiguous acked prefix and is persisted (under the log's fsync
    /// policy) before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseExpired`] (and nothing is acked) if any offset is not currently leased
    /// to this consumer; [`Error::UnknownPartition`]; [`Error::Closed`]; [`Error::Io`] if
    /// persisting fails.
    pub async fn ack(&self, partition: u32, offsets: &[u64]) -> Result<()> {
        self.check_open()?;
        let incarnation = self.incarnation.load(Ordering::Acquire);
        let advanced = self
            .group
            .settle(&self.id, incarnation, partition, offsets, Settle::Ack)?;
        if !advanced {
            return Ok(());
        }
        let group = Arc::clone(&self.group);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || group.persist())
                .await
                .map_err(|e| {
                    Error::io("persist committed offsets of", "", std::io::Error::other(e))
                })?,
            Err(_) => group.persist(),
        }
    }

    /// Releases leased records for immediate redelivery (with an incremented
    /// `delivery_count`).
    ///
    /// # Errors
    ///
    /// As [`Consumer::ack`].
    pub async fn nack(&self, partition: u32, offsets: &[u64]) -> Result<()> {
        self.check_open()?;
        let incarnation = self.incarnation.load(Ordering::Acquire);
        self.group
            .settle(&self.id, incarnation, partition, offsets, Settle::Nack)?;
        Ok(())
    }

    /// Keeps the session alive without polling (rejoins if the consumer was evicted).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Fenced`].
    pub fn heartbeat(&self) -> Result<()> {
        self.check_open()?;
        let incarnation = self.incarnation.load(Ordering::Acquire);
        let incarnation = self.group.heartbeat(&self.id, incarnation, &self.options)?;
        self.incarnation.store(incarnation, Ordering::Release);
        Ok(())
    }

    /// Partitions currently owned by this consumer.
    #[must_use]
    pub fn assigned_partitions(&self) -> Vec<u32> {
        self.group.owned_by(&self.id)
    }

    /// Leaves the group: owned partitions go to other members and unacked leases are
    /// released for redelivery. Later calls fail with [`Error::Closed`]. Idempotent.
    ///
    /// # Errors
    ///
    /// None today; fallible for future persistence of membership.
    pub fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.group
                .leave(&self.id, self.incarnation.load(Ordering::Acquire));
        }
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
