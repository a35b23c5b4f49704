//! [`Log`]: the entry point: topics, appends, reads, groups, retention, shutdown.

pub(crate) mod topic;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::consumer::Consumer;
use crate::group::{Group, store};
use crate::partition::{Partition, PartitionConfig};
use crate::segment::codec;
use crate::sync::{SyncShared, SyncThread};
use crate::{
    Error, FsyncPolicy, GroupOptions, LogOptions, Record, Result, RetentionReport, StoredRecord,
    validate_name,
};
pub(crate) use topic::Topic;

/// Encode buffers above this capacity are not kept between appends.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

thread_local! {
    /// Reused encode buffer (encoding happens synchronously, never across an await).
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The durable log. Cheap to clone (an `Arc`); `Send + Sync`.
///
/// Dropping the last handle closes the log (see [`Log::close`]).
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

type GroupKey = (String, String);
type Topics = HashMap<String, Arc<Topic>>;
type Groups = HashMap<GroupKey, Arc<Group>>;

struct Inner {
    dir: PathBuf,
    options: LogOptions,
    topics: RwLock<Topics>,
    groups: Mutex<Groups>,
    /// Serializes topic creation, group creation and retention.
    admin: Mutex<()>,
    sync: Arc<SyncShared>,
    sync_thread: SyncThread,
    closed: Arc<AtomicBool>,
    lock_file: Mutex<Option<File>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering every topic and group found.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another open `Log` holds the directory, [`Error::Io`] on file
    /// system errors, [`Error::Corrupt`] for unreadable topic or group metadata. Corrupt
    /// segment data is not an error: it is recovered (see the crate docs).
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock_file = File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
        if lock_file.try_lock().is_err() {
            return Err(Error::Locked(dir));
        }
        let sync = Arc::new(SyncShared::default());
        let (topics, groups) = load_topics(&dir, &options, &sync)?;
        let sync_thread =
            SyncThread::start(Arc::clone(&sync), options.fsync, options.fsync_interval)?;
        Ok(Log {
            inner: Arc::new(Inner {
                dir,
                options,
                topics: RwLock::new(topics),
                groups: Mutex::new(groups),
                admin: Mutex::new(()),
                sync,
                sync_thread,
                closed: Arc::new(AtomicBool::new(false)),
                lock_file: Mutex::new(Some(lock_file)),
            }),
        })
    }

    /// The options the log was opened with.
    #[must_use]
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// Creates a topic with `partitions` partitions. Idempotent for the same count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidPartitionCount`],
    /// [`Error::PartitionCountMismatch`] if it exists with another count, [`Error::Closed`],
    /// [`Error::Io`].
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        validate_name("topic", topic)?;
        if !(1..=1024).contains(&partitions) {
            return Err(Error::InvalidPartitionCount(partitions));
        }
        self.check_open()?;
        let _admin = self.inner.admin.lock();
        if let Some(existing) = self.inner.topics.read().get(topic) {
            let existing = existing.partition_count();
            return if existing == partitions {
                Ok(())
            } else {
                Err(Error::PartitionCountMismatch {
                    topic: topic.to_owned(),
                    existing,
                    requested: partitions,
                })
            };
        }
        let dir = self.inner.dir.join(topic);
        let config = partition_config(&self.inner.options);
        let opened = Topic::open(topic, dir.clone(), partitions, &config, &self.inner.sync)?;
        for p in 0..partitions {
            crate::partition::sync_dir(&dir.join(p.to_string()))?;
        }
        Topic::write_meta(&dir, partitions)?;
        self.inner
            .topics
            .write()
            .insert(topic.to_owned(), Arc::new(opened));
        Ok(())
    }

    /// Number of partitions of `topic`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`].
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partition_count())
    }

    /// Names of all topics, sorted.
    #[must_use]
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.topics.read().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Appends a batch and returns the offset of its first record. Resolves once the batch
    /// is durable under the fsync policy (for `Always`: fsynced, possibly by an fsync shared
    /// with concurrent appends).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBatch`], [`Error::BatchTooLarge`] (over [`crate::MAX_BATCH_BYTES`]),
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], [`Error::Closed`],
    /// [`Error::PartitionFailed`] after an fsync failure, [`Error::Io`].
    pub async fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        if records.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let bytes = codec::encoded_len(records);
        if bytes > crate::MAX_BATCH_BYTES {
            return Err(Error::BatchTooLarge {
                bytes,
                max: crate::MAX_BATCH_BYTES,
            });
        }
        self.check_open()?;
        let part = Arc::clone(self.topic(topic)?.partition(partition)?);
        let (base, end) = ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let encoded = codec::encode(records, &mut buf);
            let base = part.write(&mut buf, &encoded);
            if buf.capacity() > KEEP_BUFFER_BYTES {
                *buf = Vec::new();
            }
            base.map(|b| (b, b + u64::from(encoded.count)))
        })?;
        if self.inner.options.fsync == FsyncPolicy::Always {
            part.wait_durable(end).await?;
        }
        Ok(base)
    }

    /// Reads up to `max_records` durable records of a partition from `from_offset`. Returns
    /// an empty vector at or past the end.
    ///
    /// # Errors
    ///
    /// [`Error::OffsetOutOfRange`] below [`Log::start_offset`], [`Error::UnknownTopic`],
    /// [`Error::UnknownPartition`], [`Error::Corrupt`] if data went bad after open,
    /// [`Error::Io`].
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.partition(topic, partition)?
            .read(from_offset, max_records)
    }

    /// The durable high watermark: the offset the next durable record will get.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`].
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.partition(topic, partition)?.durable().offset)
    }

    /// The first retained offset.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`].
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.partition(topic, partition)?.start_offset())
    }

    /// The partitions where recovery found corruption and lost offsets, with how many:
    /// `(topic, partition, lost offsets)`. Those offsets are never used again.
    #[must_use]
    pub fn recovery_losses(&self) -> Vec<(String, u32, u64)> {
        let topics = self.inner.topics.read();
        let mut out: Vec<(String, u32, u64)> = topics
            .iter()
            .flat_map(|(name, topic)| {
                topic.partitions.iter().filter_map(move |p| {
                    let lost = p.lost_offsets();
                    (lost > 0).then(|| (name.clone(), p.id, lost))
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Joins consumer `consumer_id` to `group` on `topic`, creating (and persisting) the group
    /// if new: a new group starts at each partition's first retained offset. A second join
    /// with an id that is already a member takes over that membership (the older handle is
    /// fenced and its leases released).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UnknownTopic`], [`Error::Closed`], [`Error::Io`].
    pub fn consumer(
        &self,
        topic: &str,
        group: &str,
        consumer_id: &str,
        options: GroupOptions,
    ) -> Result<Consumer> {
        validate_name("group", group)?;
        if consumer_id.is_empty() {
            return Err(Error::InvalidName {
                kind: "consumer",
                name: consumer_id.to_owned(),
            });
        }
        self.check_open()?;
        let group = self.group_or_create(topic, group)?;
        Ok(Consumer::join(
            group,
            consumer_id,
            options,
            Arc::clone(&self.inner.closed),
        ))
    }

    /// Creates (and persists) `group` on `topic` at offset 0 if it does not exist,
    /// without joining it: from then on retention keeps what the group has not
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UnknownTopic`], [`Error::Closed`], [`Error::Io`].
    pub fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        validate_name("group", group)?;
        self.check_open()?;
        self.group_or_create(topic, group).map(|_| ())
    }

    fn group_or_create(&self, topic: &str, group: &str) -> Result<Arc<Group>> {
        let topic = self.topic(topic)?;
        let key = (topic.name.clone(), group.to_owned());
        if let Some(g) = self.inner.groups.lock().get(&key) {
            return Ok(Arc::clone(g));
        }
        let _admin = self.inner.admin.lock();
        if let Some(g) = self.inner.groups.lock().get(&key) {
            return Ok(Arc::clone(g));
        }
        let fsync = self.inner.options.fsync != FsyncPolicy::Never;
        let created = Arc::new(Group::create(topic, group, fsync)?);
        self.inner.groups.lock().insert(key, Arc::clone(&created));
        Ok(created)
    }

    /// The committed offset (next offset to process) of `group` on a partition.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownGroup`], [`Error::UnknownPartition`].
    pub fn committed(&self, topic: &str, group: &str, partition: u32) -> Result<u64> {
        let t = self.topic(topic)?;
        let key = (topic.to_owned(), group.to_owned());
        let g = self
            .inner
            .groups
            .lock()
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::UnknownGroup {
                topic: topic.to_owned(),
                group: group.to_owned(),
            })?;
        t.partition(partition)?;
        g.committed_of(partition).ok_or(Error::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions: t.partition_count(),
        })
    }

    /// Applies the retention limits: deletes whole sealed segments (oldest first) that are
    /// too old, make their partition too large, or were consumed by every group of the
    /// topic (and last written at least `consumed_min_age` ago), never one holding an
    /// offset at or past the committed offset of any group of the topic. Blocking I/O.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be deleted.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let retention = &self.inner.options.retention;
        let mut report = RetentionReport::default();
        if retention.max_age.is_none()
            && retention.max_bytes.is_none()
            && retention.consumed_min_age.is_none()
        {
            return Ok(report);
        }
        let _admin = self.inner.admin.lock();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        let groups: Vec<Arc<Group>> = self.inner.groups.lock().values().cloned().collect();
        for topic in topics {
            let committed: Vec<Vec<u64>> = groups
                .iter()
                .filter(|g| g.topic.name == topic.name)
                .map(|g| g.committed())
                .collect();
            for (p, part) in topic.partitions.iter().enumerate() {
                let protect = committed
                    .iter()
                    .filter_map(|c| c.get(p).copied())
                    .min()
                    .unwrap_or(u64::MAX);
                // "Consumed by every group" means nothing for a topic without groups.
                let has_groups = !committed.is_empty();
                let deleted = part.apply_retention(retention, now_ms, protect, has_groups)?;
                report.segments_deleted += deleted.segments;
                report.bytes_deleted += deleted.bytes;
            }
        }
        Ok(report)
    }

    /// Fsyncs every partition now and publishes the new durable offsets. Blocking I/O.
    ///
    /// # Errors
    ///
    /// The first [`Error::Io`] met (every partition is still attempted).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync_all()
    }

    /// Syncs everything, stops the background thread and releases the directory lock.
    /// Later appends, polls and joins fail with [`Error::Closed`]. Idempotent.
    ///
    /// # Errors
    ///
    /// The first [`Error::Io`] met while syncing.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }

    /// Whether [`Log::close`] was called (later appends fail with [`Error::Closed`]).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, topic: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }
}

impl Inner {
    fn sync_all(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut first_error = None;
        for part in topics.iter().flat_map(|t| t.partitions.iter()) {
            if let Err(e) = part.sync_now() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for part in topics.iter().flat_map(|t| t.partitions.iter()) {
            part.close();
        }
        self.sync_thread.stop();
        let result = self.sync_all();
        for topic in &topics {
            topic.wake_all();
        }
        for group in self.groups.lock().values() {
            group.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        if let Some(lock) = self.lock_file.lock().take() {
            let _ = lock.unlock();
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, dir = ?self.dir, "closing the log on drop failed");
        }
    }
}

fn partition_config(options: &LogOptions) -> PartitionConfig {
    PartitionConfig {
        fsync: options.fsync,
        max_segment_bytes: options.max_segment_bytes.max(1),
        index_interval_bytes: options.index_interval_bytes,
    }
}

/// Opens every complete topic under `dir` and the groups persisted for them.
fn load_topics(
    dir: &Path,
    options: &LogOptions,
    sync: &Arc<SyncShared>,
) -> Result<(Topics, Groups)> {
    let config = partition_config(options);
    let fsync = options.fsync != FsyncPolicy::Never;
    let mut topics = HashMap::new();
    let mut groups = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if !path.is_dir() || validate_name("topic", &name).is_err() {
            continue;
        }
        let Some(count) = Topic::read_meta(&path)? else {
            tracing::warn!(path = ?path, "ignoring topic directory without topic.meta");
            continue;
        };
        let topic = Arc::new(Topic::open(&name, path, count, &config, sync)?);
        for group in list_groups(&topic)? {
            let loaded = Group::load(Arc::clone(&topic), &group, fsync)?;
            // A group may have committed past what recovery kept (corruption): never
            // hand those offsets out again.
            for (partition, committed) in topic.partitions.iter().zip(loaded.committed()) {
                partition.skip_to(committed)?;
            }
            groups.insert((name.clone(), group), Arc::new(loaded));
        }
        topics.insert(name, topic);
    }
    Ok((topics, groups))
}

/// Names of the groups persisted for `topic`.
fn list_groups(topic: &Topic) -> Result<Vec<String>> {
    let dir = topic.dir.join("groups");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(store::SUFFIX))
        else {
            continue;
        };
        if validate_name("group", name).is_ok() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
