//! The embedded durable log of Data Nexus.
//!
//! This crate owns everything that Data Nexus keeps on local disk for its embedded broker:
//! topics split into partitions, each partition an append-only sequence of segment files
//! holding CRC-framed record batches; the fsync policy (with group commit for
//! [`FsyncPolicy::Always`]); crash recovery (a torn tail is truncated, a corrupt batch is
//! never served, valid batches after it are kept and offsets are never reused — see
//! `segment.rs`); consumer groups with leases, redelivery and committed offsets persisted on disk;
//! and retention by age and size.
//!
//! Readers (both [`Log::read`] and [`Consumer::poll`]) only ever see records below the
//! *durable high watermark* ([`Log::end_offset`]): under `Always` that is data that has been
//! fsynced, so nothing a reader saw can vanish in a crash.
//!
//! # Layout
//!
//! On disk, under the data directory given to [`Log::open`]:
//!
//! ```text
//! <dir>/LOCK                              advisory lock, one open Log per directory
//! <dir>/<topic>/topic.meta                "partitions=N" (written atomically, last)
//! <dir>/<topic>/<partition>/<base>.log    segments, <base> = first offset, 20 digits
//! <dir>/<topic>/groups/<group>.offsets    committed offsets of a consumer group
//! ```
//!
//! In the source:
//!
//! - [`error`]: the [`Error`] type.
//! - `segment`: the on-disk batch format (`segment/codec.rs`), segment files, the sparse
//!   index and recovery scanning.
//! - `partition`: one partition: appends, reads, rolling, fsync, retention.
//! - `sync`: the background fsync thread (group commit / interval flushing).
//! - `log`: [`Log`]: topics, the public entry points.
//! - `group`: consumer-group state (membership, ownership, leases, acks), with
//!   `group/store.rs` persisting committed offsets.
//! - `consumer`: [`Consumer`], the async poll/ack/nack API over a group.
//!
//! # Time
//!
//! Lease and session expiry use [`tokio::time::Instant`], so tests can drive them with
//! `tokio::time::pause()`/`advance()`. The fsync thread uses real time.

pub mod error;

mod consumer;
mod group;
mod log;
mod partition;
mod segment;
mod sync;

use std::time::Duration;

pub use bytes::Bytes;
pub use consumer::Consumer;
pub use error::{Error, Result};
pub use log::Log;

/// Decodes the longest prefix of valid, contiguous batches in `bytes` (the contents of a
/// segment file): returns their records and the length of that prefix. Never panics on
/// any input; it is the decoder recovery trusts, exposed for fuzzing and tools.
#[must_use]
pub fn decode_segment_bytes(bytes: &Bytes) -> (Vec<StoredRecord>, usize) {
    segment::codec::decode_prefix(bytes)
}

/// Largest encoded batch accepted by [`Log::append`] (64 MiB).
pub const MAX_BATCH_BYTES: u64 = segment::codec::MAX_BATCH_BYTES as u64;

/// When appended data is fsynced, and so when an append resolves.
/// The one definition: the configuration's `broker.fsync` is this type (`always`,
/// `interval`, `never`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every append resolves only once its batch is fsynced; concurrent appends (to any
    /// partition) share fsyncs (group commit).
    #[default]
    Always,
    /// Appends resolve once written to the page cache; a background thread fsyncs dirty
    /// partitions every [`LogOptions::fsync_interval`]. Consumers and reads see records
    /// only after that fsync, so committed offsets never run ahead of what survives an
    /// OS crash.
    Interval,
    /// Appends resolve once written; fsync only happens on [`Log::sync`] / [`Log::close`].
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "interval" => Ok(Self::Interval),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown fsync policy `{other}`, expected `always`, `interval` or `never`"
            )),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Interval => "interval",
            Self::Never => "never",
        })
    }
}

/// Options of a [`Log`].
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// How often dirty partitions are fsynced under [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
    /// A segment rolls when a batch would make it larger than this (a single batch larger
    /// than this still goes in a segment on its own).
    pub max_segment_bytes: u64,
    /// Bytes between two entries of a segment's sparse offset index.
    pub index_interval_bytes: u32,
    /// Retention applied by [`Log::enforce_retention`].
    pub retention: Retention,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(100),
            max_segment_bytes: 128 << 20,
            index_interval_bytes: 4096,
            retention: Retention::default(),
        }
    }
}

/// Retention limits; `None` means unlimited. Whatever the limits, a segment holding an
/// offset some consumer group of its topic has not committed is never deleted.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Sealed segments whose newest record timestamp is older than this are deleted.
    pub max_age: Option<Duration>,
    /// Oldest sealed segments are deleted while a partition is larger than this.
    pub max_bytes: Option<u64>,
    /// Sealed segments that every consumer group of their topic has committed past are
    /// deleted once they were last written at least this long ago (a replay window);
    /// `None` keeps consumed segments. Topics without any group keep everything.
    pub consumed_min_age: Option<Duration>,
}

/// A record to append.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Optional key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Timestamp in milliseconds since the Unix epoch (used by age retention).
    pub timestamp_ms: i64,
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// Offset within the partition.
    pub offset: u64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Options of a consumer in a group.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// How long delivered records stay leased to a consumer before they are redelivered
    /// (and the consumer, considered stuck, is evicted from the group).
    pub lease_timeout: Duration,
    /// A consumer that neither polls nor heartbeats for this long is considered dead.
    pub session_timeout: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            lease_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// A record delivered to a consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record.
    pub offset: u64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// 1 on first delivery, incremented on each redelivery.
    pub delivery_count: u32,
}

/// What [`Log::enforce_retention`] deleted.
#[derive(Clone, Debug, Default)]
pub struct RetentionReport {
    /// Number of segment files deleted.
    pub segments_deleted: usize,
    /// Their total size.
    pub bytes_deleted: u64,
}

/// Longest topic, group or consumer name of the log.
pub const MAX_NAME_LEN: usize = 200;

/// Whether `name` is a legal topic, group or consumer name: 1..=`max_len` characters of
/// `[A-Za-z0-9._-]`, and not `.` or `..` (Kafka's rule for topics; here they are also
/// directory and file names). The one name rule of every broker backend.
pub fn is_valid_name(name: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// Checks a topic, group or consumer name ([`is_valid_name`] with [`MAX_NAME_LEN`]).
pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    if is_valid_name(name, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}
