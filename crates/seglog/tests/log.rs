//! Appends, reads, offsets, rolling, validation and reopening.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::Duration;

use datanexus_seglog::{Error, FsyncPolicy, Log, LogOptions};
use helpers::{open_with_topic, options, rec, recs, segments, values};

#[tokio::test]
async fn appends_get_dense_offsets_per_partition_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 2);
    assert_eq!(log.append("t", 0, &recs("a", 3)).await.unwrap(), 0);
    assert_eq!(log.append("t", 0, &recs("b", 2)).await.unwrap(), 3);
    assert_eq!(log.append("t", 1, &recs("c", 1)).await.unwrap(), 0);
    assert_eq!(log.end_offset("t", 0).unwrap(), 5);
    assert_eq!(log.end_offset("t", 1).unwrap(), 1);
    let read = log.read("t", 0, 2, 10).unwrap();
    assert_eq!(values(&read), ["a-2", "b-0", "b-1"]);
    assert_eq!(read.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(log.read("t", 0, 0, 2).unwrap().len(), 2);
    assert!(log.read("t", 0, 5, 10).unwrap().is_empty());
    assert!(log.read("t", 0, 99, 10).unwrap().is_empty());
}

#[tokio::test]
async fn keys_and_timestamps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    let mut r = rec("v");
    r.key = Some(datanexus_seglog::Bytes::from_static(b"key"));
    r.timestamp_ms = -42;
    log.append("t", 0, &[r.clone(), rec("w")]).await.unwrap();
    let read = log.read("t", 0, 0, 10).unwrap();
    assert_eq!(read[0].key, r.key);
    assert_eq!(read[0].timestamp_ms, -42);
    assert_eq!(read[1].key, None);
}

#[tokio::test]
async fn create_topic_validates_names_counts_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("metrics.cpu_v1-x", 3).unwrap();
    log.create_topic("metrics.cpu_v1-x", 3).unwrap();
    assert!(matches!(
        log.create_topic("metrics.cpu_v1-x", 4),
        Err(Error::PartitionCountMismatch {
            existing: 3,
            requested: 4,
            ..
        })
    ));
    for bad in ["", ".", "..", "a/b", "sp ace", &"x".repeat(201)] {
        assert!(
            matches!(log.create_topic(bad, 1), Err(Error::InvalidName { .. })),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        log.create_topic("ok", 0),
        Err(Error::InvalidPartitionCount(0))
    ));
    assert!(matches!(
        log.create_topic("ok", 1025),
        Err(Error::InvalidPartitionCount(1025))
    ));
    assert_eq!(log.partitions("metrics.cpu_v1-x").unwrap(), 3);
    assert!(matches!(log.partitions("nope"), Err(Error::UnknownTopic(t)) if t == "nope"));
}

#[tokio::test]
async fn append_rejects_empty_oversized_and_unknown_targets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    assert!(matches!(
        log.append("t", 0, &[]).await,
        Err(Error::EmptyBatch)
    ));
    let mut big = rec("");
    big.value = vec![0u8; 64 << 20].into();
    assert!(matches!(
        log.append("t", 0, &[big]).await,
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(matches!(
        log.append("x", 0, &[rec("a")]).await,
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        log.append("t", 1, &[rec("a")]).await,
        Err(Error::UnknownPartition {
            partition: 1,
            partitions: 1,
            ..
        })
    ));
    assert_eq!(log.end_offset("t", 0).unwrap(), 0);
}

#[tokio::test]
async fn segments_roll_and_reads_span_them_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(FsyncPolicy::Always, 300);
    let log = open_with_topic(dir.path(), opts.clone(), 1);
    for i in 0..20 {
        log.append("t", 0, &recs(&format!("b{i}"), 3))
            .await
            .unwrap();
    }
    assert!(segments(dir.path(), 0).len() > 5);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), opts).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 60);
    let all = log.read("t", 0, 0, 1000).unwrap();
    assert_eq!(all.len(), 60);
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
    for from in [0u64, 1, 17, 31, 58, 59] {
        let part = log.read("t", 0, from, 5).unwrap();
        assert_eq!(part[0].offset, from);
        assert_eq!(part, all[from as usize..(from as usize + 5).min(60)]);
    }
    assert_eq!(log.append("t", 0, &recs("z", 1)).await.unwrap(), 60);
}

#[tokio::test]
async fn closed_log_refuses_appends_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Locked(_))
    ));
    log.append("t", 0, &[rec("a")]).await.unwrap();
    log.close().unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append("t", 0, &[rec("b")]).await,
        Err(Error::Closed)
    ));
    let again = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&again.read("t", 0, 0, 10).unwrap()), ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_under_always_all_become_durable_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 3);
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut bases = Vec::new();
            for i in 0..20 {
                let p = (task + i) % 3;
                let base = log
                    .append("t", p, &recs(&format!("{task}-{i}"), 5))
                    .await
                    .unwrap();
                // Resolved means durable means readable.
                assert!(log.end_offset("t", p).unwrap() >= base + 5);
                bases.push((p, base));
            }
            bases
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap().len() * 5;
    }
    let stored: u64 = (0..3).map(|p| log.end_offset("t", p).unwrap()).sum();
    assert_eq!(stored as usize, total);
}

#[tokio::test]
async fn never_makes_writes_readable_at_once_interval_after_the_next_fsync() {
    for policy in [FsyncPolicy::Interval, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open_with_topic(dir.path(), options(policy, 1 << 20), 1));
        log.append("t", 0, &recs("a", 4)).await.unwrap();
        if policy == FsyncPolicy::Never {
            assert_eq!(log.end_offset("t", 0).unwrap(), 4);
        } else {
            // Acknowledged at once, but readers only see what an fsync made durable, so
            // nothing a consumer commits can vanish in an OS crash.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while log.end_offset("t", 0).unwrap() < 4 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(log.end_offset("t", 0).unwrap(), 4);
        }
        log.sync().unwrap();
        log.close().unwrap();
        let again = Log::open(dir.path(), options(policy, 1 << 20)).unwrap();
        assert_eq!(again.read("t", 0, 0, 10).unwrap().len(), 4);
    }
}
