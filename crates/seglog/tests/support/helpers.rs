//! Helpers shared by the integration tests (included with `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use datanexus_seglog::{Bytes, FsyncPolicy, Log, LogOptions, Record, StoredRecord};

/// A record with `value` and no key.
pub fn rec(value: &str) -> Record {
    Record {
        key: None,
        value: Bytes::copy_from_slice(value.as_bytes()),
        timestamp_ms: 1_000,
    }
}

/// `n` records `"{prefix}-{i}"`.
pub fn recs(prefix: &str, n: usize) -> Vec<Record> {
    (0..n).map(|i| rec(&format!("{prefix}-{i}"))).collect()
}

/// Values of stored records as strings.
pub fn values(records: &[StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

/// Options with the given policy and small segments.
pub fn options(fsync: FsyncPolicy, max_segment_bytes: u64) -> LogOptions {
    LogOptions {
        fsync,
        fsync_interval: std::time::Duration::from_millis(5),
        max_segment_bytes,
        index_interval_bytes: 64,
        ..LogOptions::default()
    }
}

/// Opens a log with one topic `t` of `partitions` partitions.
pub fn open_with_topic(dir: &Path, options: LogOptions, partitions: u32) -> Log {
    let log = Log::open(dir, options).expect("open log");
    log.create_topic("t", partitions).expect("create topic");
    log
}

/// Segment files of partition `p` of topic `t`, sorted.
pub fn segments(dir: &Path, p: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("t").join(p.to_string()))
        .expect("list partition")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
