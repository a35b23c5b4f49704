//! Retention by age, by size, and of what every consumer group has consumed.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/helpers.rs"]
mod helpers;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datanexus_seglog::{Error, FsyncPolicy, GroupOptions, Log, Record, Retention};
use helpers::{open_with_topic, options, rec, segments};

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 4 records of 4-byte values: 112 bytes encoded.
fn batch(timestamp_ms: i64) -> Vec<Record> {
    (0..4)
        .map(|i| Record {
            timestamp_ms,
            ..rec(&format!("v{i:03}"))
        })
        .collect()
}

/// One batch per segment (112-byte batches, 120-byte segments).
fn open(dir: &Path, retention: Retention) -> Log {
    let mut opts = options(FsyncPolicy::Always, 120);
    opts.retention = retention;
    open_with_topic(dir, opts, 1)
}

async fn append_batches(log: &Log, old: usize, new: usize) {
    for _ in 0..old {
        log.append("t", 0, &batch(now_ms() - 2 * HOUR_MS))
            .await
            .unwrap();
    }
    for _ in 0..new {
        log.append("t", 0, &batch(now_ms())).await.unwrap();
    }
}

fn by_age() -> Retention {
    Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
        consumed_min_age: None,
    }
}

#[tokio::test]
async fn age_retention_deletes_old_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), by_age());
    append_batches(&log, 3, 2).await;
    assert_eq!(segments(dir.path(), 0).len(), 5);
    let report = log.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(report.bytes_deleted, 3 * 112);
    assert_eq!(segments(dir.path(), 0).len(), 2);
    assert_eq!(log.start_offset("t", 0).unwrap(), 12);
    assert!(matches!(
        log.read("t", 0, 0, 10),
        Err(Error::OffsetOutOfRange {
            offset: 0,
            start: 12
        })
    ));
    assert_eq!(log.read("t", 0, 12, 100).unwrap().len(), 8);
    // Idempotent, and the state survives a reopen.
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    log.close().unwrap();
    let log = open(dir.path(), by_age());
    assert_eq!(log.start_offset("t", 0).unwrap(), 12);
    assert_eq!(log.append("t", 0, &batch(now_ms())).await.unwrap(), 20);
}

#[tokio::test]
async fn the_active_segment_is_never_deleted_even_when_old() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), by_age());
    append_batches(&log, 2, 0).await;
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 1);
    assert_eq!(log.start_offset("t", 0).unwrap(), 4);
    assert_eq!(log.read("t", 0, 4, 10).unwrap().len(), 4);
}

#[tokio::test]
async fn age_retention_never_deletes_past_a_groups_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), by_age());
    append_batches(&log, 4, 1).await;
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    let got = c.poll(6, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 6);
    c.ack(0, &[0, 1, 2, 3, 4, 5]).await.unwrap();
    // Segment [0, 4) is fully committed; [4, 8) holds offsets >= 6.
    let report = log.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.start_offset("t", 0).unwrap(), 4);
    // The group still gets everything it has not committed.
    c.close().unwrap();
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    assert_eq!(c.poll(100, Duration::ZERO).await.unwrap()[0].offset, 6);
}

#[tokio::test]
async fn a_persisted_group_protects_its_segments_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), by_age());
        append_batches(&log, 3, 1).await;
        let c = log
            .consumer("t", "idle", "c", GroupOptions::default())
            .unwrap();
        c.close().unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path(), by_age());
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    assert_eq!(log.start_offset("t", 0).unwrap(), 0);
}

#[tokio::test]
async fn size_retention_deletes_oldest_sealed_segments_until_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age: None,
        max_bytes: Some(300),
        consumed_min_age: None,
    };
    let log = open(dir.path(), retention);
    append_batches(&log, 0, 5).await;
    // 5 x 112 = 560 bytes: dropping 3 segments leaves 224 <= 300.
    let report = log.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(log.start_offset("t", 0).unwrap(), 12);
    assert_eq!(log.end_offset("t", 0).unwrap(), 20);
}

#[tokio::test]
async fn size_retention_keeps_the_active_segment_and_respects_groups() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age: None,
        max_bytes: Some(0),
        consumed_min_age: None,
    };
    let log = open(dir.path(), retention);
    append_batches(&log, 0, 4).await;
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    let got = c.poll(8, Duration::ZERO).await.unwrap();
    let offsets: Vec<u64> = got.iter().map(|d| d.offset).collect();
    c.ack(0, &offsets).await.unwrap();
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 2);
    assert_eq!(log.start_offset("t", 0).unwrap(), 8);
    c.ack(0, &[]).await.unwrap();
    let rest = c.poll(100, Duration::ZERO).await.unwrap();
    let offsets: Vec<u64> = rest.iter().map(|d| d.offset).collect();
    c.ack(0, &offsets).await.unwrap();
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 1);
    assert_eq!(segments(dir.path(), 0).len(), 1, "the active segment stays");
    assert_eq!(log.start_offset("t", 0).unwrap(), 12);
}

/// Consumed-retention only: delete what every group committed, at once.
fn consumed() -> Retention {
    Retention {
        consumed_min_age: Some(Duration::ZERO),
        ..Retention::default()
    }
}

/// Polls and commits everything `group` can read now.
async fn consume_all(log: &Log, group: &str) {
    let c = log
        .consumer("t", group, group, GroupOptions::default())
        .unwrap();
    loop {
        let got = c.poll(100, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        let offsets: Vec<u64> = got.iter().map(|d| d.offset).collect();
        c.ack(0, &offsets).await.unwrap();
    }
    c.ack(0, &[]).await.unwrap();
}

#[tokio::test]
async fn consumed_segments_go_once_every_group_committed_and_a_stopped_group_pins_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), consumed());
        log.ensure_group("t", "fast").unwrap();
        log.ensure_group("t", "stopped").unwrap();
        append_batches(&log, 0, 4).await;
        let before = segments(dir.path(), 0).len();
        assert!(before >= 4, "{before} segments");
        consume_all(&log, "fast").await;
        // The stopped group has committed nothing: it pins every segment.
        assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
        assert_eq!(segments(dir.path(), 0).len(), before);
        consume_all(&log, "stopped").await;
        let deleted = log.enforce_retention().unwrap().segments_deleted;
        assert_eq!(
            deleted,
            before - 1,
            "every sealed segment, not the active one"
        );
        assert_eq!(segments(dir.path(), 0).len(), 1);
        assert_eq!(log.start_offset("t", 0).unwrap(), 12);
        log.close().unwrap();
    }
    // After a restart: offsets go on where they were, and the rule still holds.
    let log = open(dir.path(), consumed());
    assert_eq!(log.start_offset("t", 0).unwrap(), 12);
    append_batches(&log, 0, 3).await;
    consume_all(&log, "fast").await;
    // Only the segment both had committed before the restart (sealed by the new
    // appends) goes; the new ones wait for the stopped group.
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 1);
    assert_eq!(log.start_offset("t", 0).unwrap(), 16);
    consume_all(&log, "stopped").await;
    assert!(log.enforce_retention().unwrap().segments_deleted > 0);
    assert_eq!(segments(dir.path(), 0).len(), 1);
    let c = log
        .consumer("t", "late", "late", GroupOptions::default())
        .unwrap();
    let got = c.poll(100, Duration::ZERO).await.unwrap();
    assert!(
        got.iter().all(|d| d.offset >= 24),
        "only retained records are served"
    );
}

#[tokio::test]
async fn consumed_segments_stay_for_the_replay_window_and_on_topics_without_groups() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        Retention {
            consumed_min_age: Some(Duration::from_secs(3600)),
            ..Retention::default()
        },
    );
    log.ensure_group("t", "g").unwrap();
    append_batches(&log, 0, 4).await;
    consume_all(&log, "g").await;
    // Consumed, but written less than an hour ago.
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);

    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), consumed());
    append_batches(&log, 0, 4).await;
    // No group on the topic: nothing counts as consumed (the dlq has none).
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
}
