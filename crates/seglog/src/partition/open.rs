//! Opening (and recovering) a partition directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Durable, Partition, PartitionConfig, State, sync_dir};
use crate::segment::{self, Segment};
use crate::sync::SyncShared;
use crate::{Error, Result};

/// Everything a partition is opened with.
pub(crate) struct OpenArgs {
    pub(crate) topic: String,
    pub(crate) id: u32,
    pub(crate) dir: PathBuf,
    pub(crate) config: PartitionConfig,
    pub(crate) sync: Arc<SyncShared>,
    pub(crate) topic_changed: Arc<watch::Sender<u64>>,
}

impl Partition {
    /// Opens the partition in `args.dir` (creating it if missing) and recovers its segments.
    pub(crate) fn open(args: OpenArgs) -> Result<Self> {
        std::fs::create_dir_all(&args.dir).map_err(|e| Error::io("create", &args.dir, e))?;
        let (sealed, active, lost) =
            recover_segments(&args.dir, &args.topic, args.id, &args.config)?;
        let next_offset = active.next;
        let state = State {
            sealed,
            active,
            next_offset,
            dirty: false,
            queued: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            closed: false,
            failed: false,
        };
        let (durable, _) = watch::channel(Durable {
            offset: next_offset,
            failed: false,
        });
        Ok(Self {
            topic: args.topic,
            id: args.id,
            dir: args.dir,
            config: args.config,
            state: Mutex::new(state),
            sync_lock: Mutex::new(()),
            durable,
            topic_changed: args.topic_changed,
            sync: args.sync,
            lost: std::sync::atomic::AtomicU64::new(lost),
        })
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(segment::parse_file_name) {
            Some(base) => found.push((base, entry.path())),
            None => tracing::warn!(path = ?entry.path(), "ignoring unexpected file in partition"),
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);
    Ok(found)
}

/// Recovers all segments: checks every batch and truncates each segment at its first
/// invalid one. Offsets are never reused: valid batches past a corruption move to
/// segments of their own, later segments are kept, and the offsets in between are a
/// hole (see the segment module's docs). Returns the sealed segments, the active one,
/// and the number of offsets lost in holes.
fn recover_segments(
    dir: &Path,
    topic: &str,
    id: u32,
    config: &PartitionConfig,
) -> Result<(VecDeque<Segment>, Segment, u64)> {
    let files = list_segments(dir)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(files.len());
    let mut changed = false;
    let mut lost = 0u64;
    for (base, path) in files {
        if segments.iter().any(|s| s.base == base) {
            // Written by this recovery (batches salvaged from an earlier segment).
            continue;
        }
        if let Some(prev) = segments.last()
            && base < prev.next
        {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            tracing::warn!(topic, partition = id, path = ?path, truncated_bytes = bytes,
                "deleting a segment whose offsets overlap the previous one");
            remove(&path)?;
            changed = true;
            continue;
        }
        if let Some(prev) = segments.last()
            && base > prev.next
        {
            let hole = base - prev.next;
            tracing::warn!(
                topic,
                partition = id,
                from = prev.next,
                to = base,
                lost = hole,
                "offsets lost to corruption: the log continues after them"
            );
            lost += hole;
        }
        let rec = Segment::recover(path, base, config.index_interval_bytes)?;
        if let Some(reason) = &rec.reason {
            tracing::warn!(topic, partition = id, path = ?rec.segment.path,
                truncated_bytes = rec.truncated, reason = %reason,
                "truncated invalid tail of segment");
            changed = true;
        }
        let salvaged = rec.salvaged;
        segments.push(rec.segment);
        // Valid batches past the corruption: each run of them becomes a segment of its
        // own, after a hole.
        for run in salvaged {
            let prev_end = segments.last().map_or(run.base, |s| s.next);
            let hole = run.base.saturating_sub(prev_end);
            tracing::warn!(
                topic,
                partition = id,
                from = prev_end,
                to = run.base,
                lost = hole,
                kept_bytes = run.size,
                "offsets lost to corruption; the valid batches after them are kept"
            );
            lost += hole;
            segments.push(run);
            changed = true;
        }
    }
    let active = match segments.pop() {
        Some(last) => last,
        None => {
            changed = true;
            Segment::create(dir, 0)?
        }
    };
    if changed {
        sync_dir(dir)?;
    }
    Ok((segments.into(), active, lost))
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| Error::io("delete", path, e))
}
