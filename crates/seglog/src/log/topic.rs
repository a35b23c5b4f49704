//! A topic: its directory, partitions and metadata file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::group::state::RecordSource;
use crate::partition::open::OpenArgs;
use crate::partition::{Partition, PartitionConfig, sync_dir};
use crate::sync::SyncShared;
use crate::{Error, Result, StoredRecord};

const META: &str = "topic.meta";

pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) partitions: Vec<Arc<Partition>>,
    /// Bumped whenever records become readable in any partition.
    pub(crate) changed: Arc<watch::Sender<u64>>,
}

impl Topic {
    /// The partition, or [`Error::UnknownPartition`].
    pub(crate) fn partition(&self, partition: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.clone(),
                partition,
                partitions: self.partition_count(),
            })
    }

    pub(crate) fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }

    /// Reads the partition count from `dir/topic.meta`; `None` if the topic was never
    /// completely created.
    pub(crate) fn read_meta(dir: &Path) -> Result<Option<u32>> {
        let path = dir.join(META);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let count = text
            .trim()
            .strip_prefix("partitions=")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| (1..=1024).contains(n));
        match count {
            Some(n) => Ok(Some(n)),
            None => Err(Error::Corrupt {
                path,
                position: 0,
                reason: format!("invalid topic metadata {:?}", text.trim()),
            }),
        }
    }

    /// Writes `dir/topic.meta` atomically (the last step of creating a topic).
    pub(crate) fn write_meta(dir: &Path, partitions: u32) -> Result<()> {
        let tmp = dir.join("topic.meta.tmp");
        let path = dir.join(META);
        std::fs::write(&tmp, format!("partitions={partitions}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Opens (creating missing directories) the `partitions` partitions of a topic.
    pub(crate) fn open(
        name: &str,
        dir: PathBuf,
        partitions: u32,
        config: &PartitionConfig,
        sync: &Arc<SyncShared>,
    ) -> Result<Self> {
        let changed = Arc::new(watch::channel(0u64).0);
        let partitions = (0..partitions)
            .map(|id| {
                Partition::open(OpenArgs {
                    topic: name.to_owned(),
                    id,
                    dir: dir.join(id.to_string()),
                    config: config.clone(),
                    sync: Arc::clone(sync),
                    topic_changed: Arc::clone(&changed),
                })
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            name: name.to_owned(),
            dir,
            partitions,
            changed,
        })
    }

    /// Wakes every poller of the topic (used on close).
    pub(crate) fn wake_all(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl RecordSource for Topic {
    fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<StoredRecord>> {
        self.partition(partition)?.read(from, max)
    }

    fn start_offset(&self, partition: u32) -> u64 {
        self.partitions
            .get(partition as usize)
            .map_or(0, |p| p.start_offset())
    }
}
