//! Consumer groups: ownership, leases, acks, redelivery, persistence.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::Duration;

use datanexus_seglog::{Delivery, Error, GroupOptions, Log, LogOptions};
use helpers::{open_with_topic, recs};

fn group_options(lease_s: u64, session_s: u64) -> GroupOptions {
    GroupOptions {
        lease_timeout: Duration::from_secs(lease_s),
        session_timeout: Duration::from_secs(session_s),
    }
}

fn offsets(ds: &[Delivery]) -> Vec<u64> {
    ds.iter().map(|d| d.offset).collect()
}

const NOW: Duration = Duration::ZERO;

#[tokio::test]
async fn redelivers_batch_after_lease_expiry_to_another_consumer() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 3)).await.unwrap();
    let a = log.consumer("t", "g", "a", group_options(5, 60)).unwrap();
    let b = log.consumer("t", "g", "b", group_options(5, 60)).unwrap();
    let first = a.poll(10, NOW).await.unwrap();
    assert_eq!(offsets(&first), [0, 1, 2]);
    assert!(
        first
            .iter()
            .all(|d| d.delivery_count == 1 && d.partition == 0)
    );
    assert!(
        b.poll(10, NOW).await.unwrap().is_empty(),
        "a still owns the partition"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    let again = b.poll(10, NOW).await.unwrap();
    assert_eq!(offsets(&again), [0, 1, 2]);
    assert!(again.iter().all(|d| d.delivery_count == 2));
    assert_eq!(again[0].value, first[0].value);
    assert_eq!(b.assigned_partitions(), [0]);
    b.ack(0, &[0, 1, 2]).await.unwrap();
    assert_eq!(log.committed("t", "g", 0).unwrap(), 3);
}

#[tokio::test]
async fn stale_ack_after_lease_expiry_returns_lease_expired_and_commits_nothing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 4)).await.unwrap();
    let a = log.consumer("t", "g", "a", group_options(5, 60)).unwrap();
    let b = log.consumer("t", "g", "b", group_options(5, 60)).unwrap();
    assert_eq!(a.poll(2, NOW).await.unwrap().len(), 2);
    tokio::time::advance(Duration::from_secs(6)).await;
    let err = a.ack(0, &[0, 1]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LeaseExpired {
                partition: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.committed("t", "g", 0).unwrap(), 0);
    // The records went back for redelivery to the live owner.
    let again = b.poll(10, NOW).await.unwrap();
    assert_eq!(offsets(&again), [0, 1, 2, 3]);
    assert!(a.ack(0, &[0]).await.is_err());
    assert_eq!(log.committed("t", "g", 0).unwrap(), 0);
}

#[tokio::test]
async fn ack_of_unleased_or_foreign_offsets_is_rejected_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 4)).await.unwrap();
    let a = log
        .consumer("t", "g", "a", GroupOptions::default())
        .unwrap();
    assert_eq!(a.poll(2, NOW).await.unwrap().len(), 2);
    // Offset 2 was never delivered: nothing of the call is applied.
    assert!(matches!(
        a.ack(0, &[0, 1, 2]).await,
        Err(Error::LeaseExpired { offset: 2, .. })
    ));
    assert_eq!(log.committed("t", "g", 0).unwrap(), 0);
    a.ack(0, &[1, 0]).await.unwrap();
    assert_eq!(log.committed("t", "g", 0).unwrap(), 2);
    assert!(a.ack(0, &[0]).await.is_err(), "double ack");
    assert!(matches!(
        a.ack(7, &[0]).await,
        Err(Error::UnknownPartition { partition: 7, .. })
    ));
}

#[tokio::test]
async fn committed_offset_survives_reopen_and_uncommitted_records_are_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_with_topic(dir.path(), LogOptions::default(), 1);
        log.append("t", 0, &recs("r", 10)).await.unwrap();
        let c = log
            .consumer("t", "g", "c", GroupOptions::default())
            .unwrap();
        assert_eq!(c.poll(100, NOW).await.unwrap().len(), 10);
        c.ack(0, &[0, 1, 2, 3, 4, 5, 8]).await.unwrap();
        assert_eq!(log.committed("t", "g", 0).unwrap(), 6);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.committed("t", "g", 0).unwrap(), 6);
    let c = log
        .consumer("t", "g", "c2", GroupOptions::default())
        .unwrap();
    let again = c.poll(100, NOW).await.unwrap();
    assert_eq!(offsets(&again), [6, 7, 8, 9]);
    assert!(matches!(
        log.committed("t", "nope", 0),
        Err(Error::UnknownGroup { .. })
    ));
}

#[tokio::test]
async fn two_consumers_share_partitions_balanced() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 4);
    for p in 0..4 {
        log.append("t", p, &recs(&format!("p{p}"), 2))
            .await
            .unwrap();
    }
    let a = log
        .consumer("t", "g", "a", GroupOptions::default())
        .unwrap();
    assert_eq!(a.assigned_partitions(), [0, 1, 2, 3]);
    let b = log
        .consumer("t", "g", "b", GroupOptions::default())
        .unwrap();
    assert_eq!(a.assigned_partitions(), [0, 2]);
    assert_eq!(b.assigned_partitions(), [1, 3]);
    let got_a = a.poll(100, NOW).await.unwrap();
    let got_b = b.poll(100, NOW).await.unwrap();
    let parts = |ds: &[Delivery]| {
        let mut ps: Vec<u32> = ds.iter().map(|d| d.partition).collect();
        ps.dedup();
        ps.sort_unstable();
        ps.dedup();
        ps
    };
    assert_eq!(parts(&got_a), [0, 2]);
    assert_eq!(parts(&got_b), [1, 3]);
    assert_eq!(got_a.len() + got_b.len(), 8);
    // Other groups are independent and see everything.
    let other = log
        .consumer("t", "other", "a", GroupOptions::default())
        .unwrap();
    assert_eq!(other.poll(100, NOW).await.unwrap().len(), 8);
}

#[tokio::test]
async fn poll_round_robins_across_owned_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 2);
    log.append("t", 0, &recs("p0", 5)).await.unwrap();
    log.append("t", 1, &recs("p1", 5)).await.unwrap();
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    let first = c.poll(3, NOW).await.unwrap();
    let second = c.poll(3, NOW).await.unwrap();
    assert_ne!(first[0].partition, second[0].partition);
}

#[tokio::test]
async fn partition_moves_to_a_new_member_only_after_the_owner_settles_its_in_flight_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 2)).await.unwrap();
    // "z" joins first and owns the partition; "a" sorts first so it is the target owner.
    let z = log
        .consumer("t", "g", "z", GroupOptions::default())
        .unwrap();
    assert_eq!(z.poll(10, NOW).await.unwrap().len(), 2);
    let a = log
        .consumer("t", "g", "a", GroupOptions::default())
        .unwrap();
    log.append("t", 0, &recs("s", 2)).await.unwrap();
    assert_eq!(z.assigned_partitions(), [0]);
    assert!(
        a.poll(10, NOW).await.unwrap().is_empty(),
        "z still has records in flight"
    );
    assert!(
        z.poll(10, NOW).await.unwrap().is_empty(),
        "z drains, gets nothing new"
    );
    z.ack(0, &[0, 1]).await.unwrap();
    assert!(z.assigned_partitions().is_empty());
    assert_eq!(a.assigned_partitions(), [0]);
    assert_eq!(offsets(&a.poll(10, NOW).await.unwrap()), [2, 3]);
}

#[tokio::test]
async fn dead_consumers_partitions_move_after_session_timeout() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 2);
    log.append("t", 0, &recs("p0", 2)).await.unwrap();
    log.append("t", 1, &recs("p1", 2)).await.unwrap();
    let a = log.consumer("t", "g", "a", group_options(600, 10)).unwrap();
    let b = log.consumer("t", "g", "b", group_options(600, 10)).unwrap();
    let got_a = a.poll(10, NOW).await.unwrap();
    assert!(got_a.iter().all(|d| d.partition == 0) && got_a.len() == 2);
    tokio::time::advance(Duration::from_secs(6)).await;
    b.heartbeat().unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    // a has been silent for 12 s > 10 s: b takes partition 0 and a's unacked records.
    let got_b = b.poll(10, NOW).await.unwrap();
    assert_eq!(b.assigned_partitions(), [0, 1]);
    let mut seen: Vec<(u32, u64, u32)> = got_b
        .iter()
        .map(|d| (d.partition, d.offset, d.delivery_count))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [(0, 0, 2), (0, 1, 2), (1, 0, 1), (1, 1, 1)]);
    assert!(a.ack(0, &[0]).await.is_err());
}

#[tokio::test]
async fn nack_redelivers_immediately_with_an_incremented_delivery_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 3)).await.unwrap();
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    assert_eq!(c.poll(10, NOW).await.unwrap().len(), 3);
    c.ack(0, &[0]).await.unwrap();
    c.nack(0, &[1]).await.unwrap();
    let again = c.poll(10, NOW).await.unwrap();
    assert_eq!(offsets(&again), [1]);
    assert_eq!(again[0].delivery_count, 2);
    c.ack(0, &[1, 2]).await.unwrap();
    assert_eq!(log.committed("t", "g", 0).unwrap(), 3);
}

#[tokio::test]
async fn closing_a_consumer_releases_its_leases_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    log.append("t", 0, &recs("r", 3)).await.unwrap();
    let a = log
        .consumer("t", "g", "a", GroupOptions::default())
        .unwrap();
    let b = log
        .consumer("t", "g", "b", GroupOptions::default())
        .unwrap();
    assert_eq!(a.poll(10, NOW).await.unwrap().len(), 3);
    a.close().unwrap();
    assert!(matches!(a.poll(10, NOW).await, Err(Error::Closed)));
    let got = b.poll(10, NOW).await.unwrap();
    assert_eq!(offsets(&got), [0, 1, 2]);
    assert!(got.iter().all(|d| d.delivery_count == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 2);
    // Long lease and session: only the append can end the wait early.
    let c = Arc::new(
        log.consumer("t", "g", "c", group_options(600, 600))
            .unwrap(),
    );
    let poller = {
        let c = Arc::clone(&c);
        tokio::spawn(async move { c.poll(10, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append("t", 1, &recs("late", 2)).await.unwrap();
    let got = poller.await.unwrap().unwrap();
    assert_eq!(offsets(&got), [0, 1]);
    assert_eq!(got[0].partition, 1);
}

#[tokio::test]
async fn poll_returns_empty_after_waiting_when_nothing_arrives() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_topic(dir.path(), LogOptions::default(), 1);
    let c = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    assert!(
        c.poll(10, Duration::from_secs(25))
            .await
            .unwrap()
            .is_empty()
    );
    // Waiting longer than the session timeout did not evict the polling consumer.
    assert_eq!(c.assigned_partitions(), [0]);
}
