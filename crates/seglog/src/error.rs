//! The error type of the crate.

use std::io;
use std::path::PathBuf;

/// Result alias used by every fallible function of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a file or directory failed.
    #[error("i/o error while trying to {op} {path:?}: {source}")]
    Io {
        /// What was being done (`"open"`, `"fsync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("unknown partition {partition} of topic {topic:?} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// The consumer group has never been created on the topic.
    #[error("unknown group {group:?} on topic {topic:?}")]
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A topic, group or consumer name is not valid: topic and group names are 1..=200
    /// characters of `[A-Za-z0-9._-]` other than `.` and `..`; consumer ids are non-empty.
    #[error("invalid {kind} name {name:?}")]
    InvalidName {
        /// `"topic"`, `"group"` or `"consumer"`.
        kind: &'static str,
        /// The offending name.
        name: String,
    },
    /// The partition count is outside `1..=1024`.
    #[error("invalid partition count {0}: expected 1..=1024")]
    InvalidPartitionCount(u32),
    /// The topic exists with another partition count.
    #[error("topic {topic:?} already exists with {existing} partitions, not {requested}")]
    PartitionCountMismatch {
        /// The topic.
        topic: String,
        /// Its partition count on disk.
        existing: u32,
        /// The count that was asked for.
        requested: u32,
    },
    /// `append` was called with no records.
    #[error("empty batch: append needs at least one record")]
    EmptyBatch,
    /// The encoded batch exceeds the maximum batch size.
    #[error("batch of {bytes} encoded bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The offset is before the first retained offset.
    #[error("offset {offset} is out of range: the partition starts at {start}")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: u64,
        /// The first retained offset.
        start: u64,
    },
    /// The records are not (any more) leased to this consumer: its lease expired, it was
    /// evicted, or the records were acknowledged or released already.
    #[error(
        "lease expired: offset {offset} of partition {partition} is not leased to consumer {consumer:?}"
    )]
    LeaseExpired {
        /// The consumer that tried to ack or nack.
        consumer: String,
        /// The partition.
        partition: u32,
        /// The first offending offset.
        offset: u64,
    },
    /// Another handle joined the group with the same consumer id and took over its membership.
    #[error("consumer {0:?} was fenced: another handle joined the group with the same id")]
    Fenced(String),
    /// Data on disk failed validation while being read.
    #[error("corrupt data in {path:?} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position of the bad data.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier fsync of the partition failed; the partition refuses further writes.
    #[error("partition {partition} of topic {topic:?} failed an earlier fsync and refuses writes")]
    PartitionFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The data directory is locked by another open `Log`.
    #[error("data directory {0:?} is locked by another open log")]
    Locked(PathBuf),
    /// The log (or the consumer) was closed.
    #[error("the log or consumer is closed")]
    Closed,
}

impl Error {
    /// Whether retrying the same call later may succeed.
    ///
    /// I/O errors are retryable (the disk may recover); validation errors, lease expiry
    /// and a closed log are not: they need the caller to change what it does.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Locked(_))
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
