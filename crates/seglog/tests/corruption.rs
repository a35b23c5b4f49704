//! Recovery from torn, corrupt and garbage tails, and from corruption in sealed segments.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/helpers.rs"]
mod helpers;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use datanexus_seglog::{FsyncPolicy, Log, LogOptions};
use helpers::{open_with_topic, options, recs, segments, values};

/// Encoded size of the batch `assert_recovers_to` appends: header + 2 x (16 + "after-i").
const AFTER_BATCH: u64 = 32 + 2 * (16 + 7);

/// Writes 5 batches of 4 records (offsets 0..20) to partition 0 and closes the log.
/// Returns the byte size of one batch.
async fn five_batches(dir: &Path, opts: LogOptions) -> u64 {
    let log = open_with_topic(dir, opts, 1);
    for i in 0..5 {
        log.append("t", 0, &recs(&format!("b{i}"), 4))
            .await
            .unwrap();
    }
    log.close().unwrap();
    let files = segments(dir, 0);
    let size = std::fs::metadata(files.last().unwrap()).unwrap().len();
    size / 5
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segments(dir, 0).pop().unwrap()
}

/// Reopens and checks that exactly `expected` records survived, intact, and that appends
/// continue at the next offset.
async fn assert_recovers_to(dir: &Path, opts: LogOptions, expected: u64) {
    let log = Log::open(dir, opts).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), expected);
    let read = log.read("t", 0, 0, 1000).unwrap();
    assert_eq!(read.len() as u64, expected);
    let want: Vec<String> = (0..expected)
        .map(|o| format!("b{}-{}", o / 4, o % 4))
        .collect();
    assert_eq!(values(&read), want);
    assert_eq!(
        log.append("t", 0, &recs("after", 2)).await.unwrap(),
        expected
    );
    let tail = log.read("t", 0, expected, 10).unwrap();
    assert_eq!(values(&tail), ["after-0", "after-1"]);
    log.close().unwrap();
    let log = Log::open(dir, LogOptions::default()).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), expected + 2);
}

#[tokio::test]
async fn torn_tail_is_truncated_to_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    let file = OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.set_len(4 * batch + batch / 2).unwrap();
    assert_recovers_to(dir.path(), LogOptions::default(), 16).await;
    assert_eq!(
        std::fs::metadata(last_segment(dir.path())).unwrap().len(),
        4 * batch + AFTER_BATCH
    );
}

#[tokio::test]
async fn torn_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    let file = OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.set_len(4 * batch + 10).unwrap();
    assert_recovers_to(dir.path(), LogOptions::default(), 16).await;
}

#[tokio::test]
async fn flipped_byte_in_the_last_batch_drops_only_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (4 * batch + batch - 3) as usize;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    assert_recovers_to(dir.path(), LogOptions::default(), 16).await;
}

#[tokio::test]
async fn garbage_after_the_last_batch_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    five_batches(dir.path(), LogOptions::default()).await;
    let mut file = OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.write_all(b"DNB1 this is not a batch at all, just garbage bytes....")
        .unwrap();
    drop(file);
    assert_recovers_to(dir.path(), LogOptions::default(), 20).await;
}

#[tokio::test]
async fn zero_filled_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    let file = OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.set_len(5 * batch + 8192).unwrap();
    drop(file);
    assert_recovers_to(dir.path(), LogOptions::default(), 20).await;
    assert_eq!(
        std::fs::metadata(last_segment(dir.path())).unwrap().len(),
        5 * batch + AFTER_BATCH
    );
}

/// Offsets of the records read from partition 0 of `t`, from 0.
fn offsets(log: &Log) -> Vec<u64> {
    log.read("t", 0, 0, 1000)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect()
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_keeps_later_segments_and_never_reuses_offsets() {
    let dir = tempfile::tempdir().unwrap();
    // Each batch of 4 records is 112 bytes: two batches per segment.
    let opts = options(FsyncPolicy::Always, 230);
    five_batches(dir.path(), opts.clone()).await;
    let files = segments(dir.path(), 0);
    assert!(files.len() >= 3, "{files:?}");
    // Corrupt the second batch of the first segment (offsets 4..8).
    let first = &files[0];
    let mut bytes = std::fs::read(first).unwrap();
    let len = bytes.len();
    bytes[len - 10] ^= 0xff;
    std::fs::write(first, bytes).unwrap();
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    // Only the corrupt batch is lost; the offsets after it keep their records, and the
    // next append gets a new offset.
    assert_eq!(log.end_offset("t", 0).unwrap(), 20);
    let want: Vec<u64> = (0..4).chain(8..20).collect();
    assert_eq!(offsets(&log), want);
    assert_eq!(log.recovery_losses(), [("t".to_owned(), 0, 4)]);
    // A consumer committed at 6 (inside the hole) continues at 8.
    assert_eq!(log.read("t", 0, 6, 10).unwrap()[0].offset, 8);
    assert_eq!(log.append("t", 0, &recs("after", 1)).await.unwrap(), 20);
    log.close().unwrap();
    let log = Log::open(dir.path(), opts).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 21);
    assert_eq!(offsets(&log).len(), 17);
}

#[tokio::test]
async fn corruption_in_the_middle_of_a_segment_keeps_the_valid_batches_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // A flipped byte in the second batch (offsets 4..8) of the only segment.
    bytes[(batch + batch / 2) as usize] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 20);
    let want: Vec<u64> = (0..4).chain(8..20).collect();
    assert_eq!(offsets(&log), want);
    let read = log.read("t", 0, 8, 1).unwrap();
    assert_eq!(values(&read), ["b2-0"]);
    assert_eq!(log.recovery_losses(), [("t".to_owned(), 0, 4)]);
    assert_eq!(log.append("t", 0, &recs("after", 1)).await.unwrap(), 20);
}

#[tokio::test]
async fn a_lost_tail_a_group_committed_past_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let batch = five_batches(dir.path(), LogOptions::default()).await;
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let consumer = log
            .consumer(
                "t",
                "g",
                "c1",
                datanexus_seglog::GroupOptions {
                    lease_timeout: std::time::Duration::from_secs(30),
                    session_timeout: std::time::Duration::from_secs(10),
                },
            )
            .unwrap();
        let got = consumer.poll(100, std::time::Duration::ZERO).await.unwrap();
        let all: Vec<u64> = got.iter().map(|d| d.offset).collect();
        consumer.ack(0, &all).await.unwrap();
        assert_eq!(log.committed("t", "g", 0).unwrap(), 20);
        log.close().unwrap();
    }
    // The last three batches are zeroed: nothing to salvage.
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip((2 * batch) as usize) {
        *b = 0;
    }
    std::fs::write(&path, bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(offsets(&log), (0..8).collect::<Vec<_>>());
    assert_eq!(
        log.end_offset("t", 0).unwrap(),
        20,
        "not 8: the group is at 20"
    );
    assert_eq!(log.recovery_losses(), [("t".to_owned(), 0, 12)]);
    assert_eq!(log.append("t", 0, &recs("after", 1)).await.unwrap(), 20);
}

#[tokio::test]
async fn bad_magic_at_the_start_of_the_only_segment_loses_only_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    five_batches(dir.path(), LogOptions::default()).await;
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'X';
    std::fs::write(&path, bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    // The first batch (offsets 0..4) is gone; the four after it are kept, offsets unchanged.
    assert_eq!(offsets(&log), (4..20).collect::<Vec<_>>());
    assert_eq!(log.end_offset("t", 0).unwrap(), 20);
    assert_eq!(log.recovery_losses(), [("t".to_owned(), 0, 4)]);
    assert_eq!(log.append("t", 0, &recs("after", 1)).await.unwrap(), 20);
}
