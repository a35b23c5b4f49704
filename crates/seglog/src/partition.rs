//! One partition: its segments, appends, reads, fsync and retention.

pub(crate) mod open;

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::segment::codec::{self, BatchHeader, Encoded};
use crate::segment::{ReadSpan, Segment};
use crate::sync::SyncShared;
use crate::{Error, FsyncPolicy, Result, StoredRecord};

/// The published durable state of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Durable high watermark: records below it are durable under the policy.
    pub(crate) offset: u64,
    /// An fsync failed: waiters must give up.
    pub(crate) failed: bool,
}

/// Settings a partition needs from the log options.
#[derive(Clone, Debug)]
pub(crate) struct PartitionConfig {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) max_segment_bytes: u64,
    pub(crate) index_interval_bytes: u32,
}

pub(crate) struct Partition {
    pub(crate) topic: String,
    pub(crate) id: u32,
    dir: PathBuf,
    config: PartitionConfig,
    state: Mutex<State>,
    /// Serializes fsyncs of this partition, so a `sync` returns only once data written
    /// before it is durable even when the sync thread is mid-fsync.
    sync_lock: Mutex<()>,
    durable: watch::Sender<Durable>,
    /// Bumped whenever new records become readable in the topic (wakes pollers).
    topic_changed: Arc<watch::Sender<u64>>,
    sync: Arc<SyncShared>,
    /// Offsets lost to corruption found at recovery (never reused).
    lost: std::sync::atomic::AtomicU64,
}

struct State {
    sealed: VecDeque<Segment>,
    active: Segment,
    /// Offset of the next record to append.
    next_offset: u64,
    /// Written data not yet fsynced.
    dirty: bool,
    /// Queued on the sync thread.
    queued: bool,
    /// Rolled segment files not yet fsynced.
    unsynced: Vec<Arc<File>>,
    /// A segment file was created or deleted since the directory was last fsynced.
    dir_dirty: bool,
    closed: bool,
    failed: bool,
}

/// What one partition's retention pass deleted.
#[derive(Debug, Default)]
pub(crate) struct Deleted {
    pub(crate) segments: usize,
    pub(crate) bytes: u64,
}

impl Partition {
    /// The durable state as currently published.
    pub(crate) fn durable(&self) -> Durable {
        *self.durable.borrow()
    }

    /// Offsets lost to corruption found when the partition was opened.
    pub(crate) fn lost_offsets(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the next append use an offset at least `offset` (a consumer group committed
    /// up to it, so the offsets below it existed even if recovery lost them): the active
    /// segment is sealed and a new one starts at `offset`; the offsets skipped count as
    /// lost. Used when the log opens, before anything is appended.
    ///
    /// # Errors
    /// The new segment cannot be created.
    pub(crate) fn skip_to(&self, offset: u64) -> Result<()> {
        let mut st = self.state.lock();
        if offset <= st.next_offset {
            return Ok(());
        }
        let hole = offset - st.next_offset;
        tracing::warn!(topic = %self.topic, partition = self.id, from = st.next_offset,
            to = offset, lost = hole,
            "a consumer group committed past the recovered data: offsets lost to corruption, the log continues after them");
        let segment = Segment::create(&self.dir, offset)?;
        let old = std::mem::replace(&mut st.active, segment);
        if old.size == 0 {
            std::fs::remove_file(&old.path).map_err(|e| Error::io("delete", &old.path, e))?;
        } else {
            st.sealed.push_back(old);
        }
        st.next_offset = offset;
        sync_dir(&self.dir)?;
        self.durable.send_replace(Durable {
            offset,
            failed: false,
        });
        self.lost
            .fetch_add(hole, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// First retained offset.
    pub(crate) fn start_offset(&self) -> u64 {
        let st = self.state.lock();
        st.sealed.front().map_or(st.active.base, |s| s.base)
    }

    /// Writes an encoded batch (one `write`, under the partition lock) and returns its base
    /// offset. Does not wait for durability: see [`Partition::wait_durable`].
    pub(crate) fn write(self: &Arc<Self>, buf: &mut [u8], encoded: &Encoded) -> Result<u64> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if st.failed {
            return Err(self.failed_error());
        }
        let len = buf.len() as u64;
        if st.active.size > 0 && st.active.size + len > self.config.max_segment_bytes {
            self.roll(&mut st)?;
        }
        let base = st.next_offset;
        codec::seal(buf, encoded, base);
        let position = st.active.size;
        if let Err(e) = st.active.file.write_all_at(buf, position) {
            // Drop whatever part of the batch reached the file; if even that fails the
            // file's tail is unknown, so refuse further writes (recovery will clean up).
            if st.active.file.set_len(position).is_err() {
                st.failed = true;
            }
            return Err(Error::io("write", &st.active.path, e));
        }
        let header = BatchHeader {
            crc: 0,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            base_offset: base,
            count: encoded.count,
            max_timestamp_ms: encoded.max_timestamp_ms,
        };
        st.active
            .push_batch(&header, position, self.config.index_interval_bytes);
        st.next_offset = header.next_offset();
        st.dirty = true;
        match self.config.fsync {
            FsyncPolicy::Always | FsyncPolicy::Interval => {
                if !st.queued {
                    st.queued = true;
                    self.sync.enqueue(Arc::clone(self));
                }
            }
            FsyncPolicy::Never => {}
        }
        // Readers see a record once it is durable under the policy: under `Interval`
        // only after the background fsync (the append itself is acknowledged at once),
        // so a consumer can never commit past what an OS crash could take away.
        if matches!(self.config.fsync, FsyncPolicy::Never) {
            self.publish(st.next_offset);
        }
        Ok(base)
    }

    fn roll(&self, st: &mut State) -> Result<()> {
        let segment = Segment::create(&self.dir, st.next_offset)?;
        let old = std::mem::replace(&mut st.active, segment);
        st.unsynced.push(Arc::clone(&old.file));
        st.sealed.push_back(old);
        st.dir_dirty = true;
        Ok(())
    }

    /// Waits until records below `end` are durable.
    pub(crate) async fn wait_durable(&self, end: u64) -> Result<()> {
        let mut rx = self.durable.subscribe();
        let state = rx
            .wait_for(|d| d.offset >= end || d.failed)
            .await
            .map(|d| *d)
            .map_err(|_| Error::Closed)?;
        if state.offset >= end {
            Ok(())
        } else {
            Err(self.failed_error())
        }
    }

    fn failed_error(&self) -> Error {
        Error::PartitionFailed {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    fn publish(&self, offset: u64) {
        let advanced = self.durable.send_if_modified(|d| {
            let advance = offset > d.offset;
            if advance {
                d.offset = offset;
            }
            advance
        });
        if advanced {
            self.topic_changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Fsyncs everything written so far and publishes the new durable offset.
    pub(crate) fn sync_now(&self) -> Result<()> {
        let _serial = self.sync_lock.lock();
        let (files, offset, dir_dirty) = {
            let mut st = self.state.lock();
            st.queued = false;
            if !st.dirty && !st.dir_dirty && st.unsynced.is_empty() {
                return Ok(());
            }
            st.dirty = false;
            let mut files = std::mem::take(&mut st.unsynced);
            files.push(Arc::clone(&st.active.file));
            let dir_dirty = std::mem::replace(&mut st.dir_dirty, false);
            (files, st.next_offset, dir_dirty)
        };
        let mut result = files
            .iter()
            .try_for_each(|f| f.sync_data())
            .map_err(|e| Error::io("fsync", &self.dir, e));
        if result.is_ok() && dir_dirty {
            result = sync_dir(&self.dir);
        }
        match &result {
            Ok(()) => self.publish(offset),
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.id, error = %e,
                    "fsync failed; the partition refuses further writes");
                self.state.lock().failed = true;
                self.durable.send_modify(|d| d.failed = true);
            }
        }
        result
    }

    /// Refuses further writes (used by `Log::close`).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
    }

    /// Reads durable records from `from`, at most `max`.
    pub(crate) fn read(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>> {
        let until = self.durable().offset;
        let (start, spans) = {
            let st = self.state.lock();
            let start = st.sealed.front().map_or(st.active.base, |s| s.base);
            let spans: Vec<ReadSpan> = st
                .sealed
                .iter()
                .chain(std::iter::once(&st.active))
                .filter(|s| s.next > from && s.base < until)
                .map(|s| ReadSpan {
                    file: Arc::clone(&s.file),
                    path: s.path.clone(),
                    position: s.position_for(from),
                    end: s.size,
                })
                .collect();
            (start, spans)
        };
        if from < start {
            return Err(Error::OffsetOutOfRange {
                offset: from,
                start,
            });
        }
        let mut out = Vec::new();
        for span in spans {
            if out.len() >= max {
                break;
            }
            span.read(from, until, max, &mut out)?;
        }
        Ok(out)
    }

    /// Deletes the oldest sealed segments allowed by the retention limits, never one holding
    /// an offset `>= protect_from`; consumed segments only where the topic `has_groups`.
    pub(crate) fn apply_retention(
        &self,
        retention: &crate::Retention,
        now_ms: i64,
        protect_from: u64,
        has_groups: bool,
    ) -> Result<Deleted> {
        let removed = {
            let mut st = self.state.lock();
            let mut total: u64 = st.sealed.iter().map(|s| s.size).sum::<u64>() + st.active.size;
            let mut removed = Vec::new();
            while let Some(front) = st.sealed.front() {
                let too_old = retention.max_age.is_some_and(|age| {
                    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                    front.max_timestamp_ms < now_ms.saturating_sub(age_ms)
                });
                let too_big = retention.max_bytes.is_some_and(|max| total > max);
                if front.next > protect_from {
                    break;
                }
                // Every group committed past it: delete once its replay window passed.
                let consumed = has_groups
                    && retention
                        .consumed_min_age
                        .is_some_and(|min_age| written_before(&front.path, min_age));
                if !(too_old || too_big || consumed) {
                    break;
                }
                total -= front.size;
                removed.extend(st.sealed.pop_front());
            }
            removed
        };
        let mut deleted = Deleted::default();
        for segment in &removed {
            std::fs::remove_file(&segment.path)
                .map_err(|e| Error::io("delete", &segment.path, e))?;
            tracing::info!(path = ?segment.path, bytes = segment.size, "retention deleted segment");
            deleted.segments += 1;
            deleted.bytes += segment.size;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}

/// Whether the file at `path` was last modified at least `age` ago (a file whose time
/// cannot be read counts as recent: it is kept).
fn written_before(path: &Path, age: std::time::Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed >= age)
}

/// Fsyncs a directory (makes file creations, renames and deletions in it durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}
