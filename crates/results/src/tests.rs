//! The registry over a real embedded store: routing, replay, takeover, slow clients,
//! in-band replies in order, cursors.

use std::time::Duration;

use std::sync::Arc;

use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_store::Store;
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
use datanexus_telemetry::Telemetry;
use futures::{Stream, StreamExt};
use tempfile::TempDir;

use crate::record::{result_seq, to_stored};
use crate::{
    EndCode, Mailbox, Outgoing, Protocol, Rejection, Reply, ResultRouter, SessionOptions, Sessions,
    StoreMailbox, StreamEnd,
};

const WAIT: Duration = Duration::from_secs(10);

/// The configuration's defaults (`[streams]`), cursors in memory.
fn defaults() -> SessionOptions {
    SessionOptions {
        state_dir: None,
        max_replay_results: 100_000,
        max_replay_age: Duration::from_secs(7 * 24 * 3600),
        channel_capacity: 1024,
        slow_client_timeout: Duration::from_secs(5),
    }
}

fn result(client: &str, offset: u64) -> ResultRecord {
    let n = i32::try_from(offset).unwrap();
    ResultRecord {
        client_id: client.into(),
        event_partition: 0,
        event_offset: offset,
        event_name: "sq".into(),
        number: n,
        outcome: Some(Outcome::Result(n * n)),
        received_ns: 1,
        processed_ns: datanexus_model::time::now_ns() + i64::try_from(offset).unwrap(),
        processor_id: "p".into(),
        reply_to: "local".into(),
    }
}

struct Fixture {
    _dir: TempDir,
    store: Arc<dyn Store>,
    telemetry: Arc<Telemetry>,
    sessions: Arc<Sessions>,
}

async fn fixture(options: SessionOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("store"), EmbeddedStoreOptions::default()).unwrap(),
    );
    let telemetry = Telemetry::new();
    let sessions = Sessions::open(mailbox(&store), Arc::clone(&telemetry), &options)
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        telemetry,
        sessions,
    }
}

impl Fixture {
    /// What the forwarder does: store first, then route.
    async fn forward(&self, results: &[ResultRecord]) {
        let stored: Vec<_> = results.iter().map(to_stored).collect();
        self.store.write_results(&stored).await.unwrap();
        self.sessions.route(results).await;
    }

    async fn stream(
        &self,
        client: &str,
        protocol: Protocol,
    ) -> impl Stream<Item = Result<Reply, StreamEnd>> + Unpin + use<> {
        let outbound = self.sessions.attach(client, protocol).await.unwrap();
        Box::pin(outbound.into_stream(|reply| reply))
    }

    fn errors(&self, kind: &str) -> u64 {
        let kind = datanexus_telemetry::ErrorKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind)
            .expect("a known error kind");
        self.telemetry
            .errors_counted(datanexus_telemetry::Component::Streams, kind)
    }
}

async fn next(
    stream: &mut (impl Stream<Item = Result<Reply, StreamEnd>> + Unpin),
) -> Result<Reply, StreamEnd> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a reply in time")
        .expect("the stream is open")
}

async fn next_seq(stream: &mut (impl Stream<Item = Result<Reply, StreamEnd>> + Unpin)) -> u64 {
    match next(stream).await {
        Ok(Reply::Result(r)) => result_seq(&r),
        other => panic!("expected a result, got {other:?}"),
    }
}

fn mailbox(store: &Arc<dyn Store>) -> Arc<dyn Mailbox> {
    Arc::new(StoreMailbox::new(Arc::clone(store)))
}

#[tokio::test]
async fn routed_results_reach_the_attached_stream_once_and_in_order() {
    let f = fixture(defaults()).await;
    let mut stream = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&[result("c1", 0), result("c1", 1), result("other", 2)])
        .await;
    f.forward(&[result("c1", 1), result("c1", 2)]).await;
    assert_eq!(next_seq(&mut stream).await, 1);
    assert_eq!(next_seq(&mut stream).await, 2);
    assert_eq!(next_seq(&mut stream).await, 3);
    assert_eq!(f.sessions.cursors("c1"), Some((3, 0)));
    assert_eq!(f.sessions.cursors("other"), None);
}

#[tokio::test]
async fn a_reconnecting_client_gets_the_stored_results_above_its_cursor() {
    let f = fixture(defaults()).await;
    let mut first = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&[result("c1", 0), result("c1", 1)]).await;
    assert_eq!(next_seq(&mut first).await, 1);
    assert!(f.sessions.is_connected("c1").await);
    drop(first);
    f.forward(&[result("c1", 2), result("c1", 3)]).await;
    let mut second = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&[result("c1", 3), result("c1", 4)]).await;
    for seq in [2, 3, 4, 5] {
        assert_eq!(next_seq(&mut second).await, seq);
    }
}

#[tokio::test]
async fn replay_keeps_only_the_newest_results_and_counts_the_rest() {
    let options = SessionOptions {
        max_replay_results: 2,
        ..defaults()
    };
    let f = fixture(options).await;
    f.forward(&(0..5).map(|o| result("c1", o)).collect::<Vec<_>>())
        .await;
    let mut stream = f.stream("c1", Protocol::Nimbus).await;
    assert_eq!(next_seq(&mut stream).await, 4);
    assert_eq!(next_seq(&mut stream).await, 5);
    assert_eq!(f.errors("replay_dropped"), 3);
}

#[tokio::test]
async fn replay_leaves_out_results_older_than_the_age_limit_and_counts_them() {
    let options = SessionOptions {
        max_replay_age: Duration::from_secs(3600),
        ..defaults()
    };
    let f = fixture(options).await;
    let mut old = result("c1", 0);
    old.processed_ns -= 2 * 3600 * 1_000_000_000;
    f.forward(&[old, result("c1", 1)]).await;
    let mut stream = f.stream("c1", Protocol::Nimbus).await;
    assert_eq!(
        next_seq(&mut stream).await,
        2,
        "the two-hour-old result is not replayed"
    );
    assert_eq!(f.errors("replay_dropped"), 1);
}

#[tokio::test]
async fn a_second_stream_takes_over_and_the_first_is_aborted() {
    let f = fixture(defaults()).await;
    let mut first = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&[result("c1", 0)]).await;
    let mut second = f.stream("c1", Protocol::Nimbus).await;
    let status = next(&mut first).await.unwrap_err();
    assert_eq!(status.code, EndCode::Aborted);
    assert!(status.message.contains("took over"), "{status}");
    // The first stream never handed seq 1 over, so the second one gets it.
    assert_eq!(next_seq(&mut second).await, 1);
    f.forward(&[result("c1", 1)]).await;
    assert_eq!(next_seq(&mut second).await, 2);
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_resumes_from_the_store() {
    let options = SessionOptions {
        channel_capacity: 1,
        slow_client_timeout: Duration::from_millis(1),
        ..defaults()
    };
    let f = fixture(options).await;
    let mut slow = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&(0..3).map(|o| result("c1", o)).collect::<Vec<_>>())
        .await;
    let status = next(&mut slow).await.unwrap_err();
    assert_eq!(status.code, EndCode::ResourceExhausted);
    assert_eq!(f.errors("slow_client"), 1);
    let mut again = f.stream("c1", Protocol::Nimbus).await;
    for seq in 1..=3 {
        assert_eq!(next_seq(&mut again).await, seq);
    }
}

#[tokio::test]
async fn a_rejection_waits_for_the_results_of_earlier_requests() {
    let f = fixture(defaults()).await;
    let outbound = f.sessions.attach("c1", Protocol::Nimbus).await.unwrap();
    let tx = outbound.sender();
    let mut stream = Box::pin(outbound.into_stream(|reply| reply));
    let rejection = Rejection {
        after_seq: 2,
        event_name: String::new(),
        number: 0,
        correlation_id: 0,
        message: "event_name must not be empty".into(),
        received_ns: 0,
    };
    tx.send(Outgoing::Reply(Reply::Rejected(rejection)))
        .await
        .unwrap();
    tx.send(Outgoing::Finished { last_seq: 3 }).await.unwrap();
    f.forward(&[result("c1", 0), result("c1", 1), result("c1", 2)])
        .await;
    assert_eq!(next_seq(&mut stream).await, 1);
    assert_eq!(next_seq(&mut stream).await, 2);
    assert!(matches!(next(&mut stream).await, Ok(Reply::Rejected(_))));
    assert_eq!(next_seq(&mut stream).await, 3);
    let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(
        end.is_none(),
        "the stream ends once everything was answered"
    );
}

#[tokio::test]
async fn native_clients_resume_after_their_acknowledged_results() {
    let f = fixture(defaults()).await;
    let native = Protocol::Native { resume_after: 0 };
    let outbound = f.sessions.attach("c1", native).await.unwrap();
    let client = outbound.client();
    let mut stream = Box::pin(outbound.into_stream(|reply| reply));
    f.forward(&(0..4).map(|o| result("c1", o)).collect::<Vec<_>>())
        .await;
    for seq in 1..=4 {
        assert_eq!(next_seq(&mut stream).await, seq);
    }
    f.sessions.ack(&client, 2);
    assert_eq!(f.sessions.cursors("c1"), Some((4, 2)));
    drop(stream);

    let mut resumed = f.stream("c1", native).await;
    assert_eq!(
        next_seq(&mut resumed).await,
        3,
        "unacknowledged results again"
    );
    assert_eq!(next_seq(&mut resumed).await, 4);
    f.sessions.ack(&client, 99);
    assert_eq!(f.sessions.cursors("c1"), Some((4, 4)), "acks are capped");
    drop(resumed);

    let mut caught_up = f.stream("c1", native).await;
    f.forward(&[result("c1", 4)]).await;
    assert_eq!(next_seq(&mut caught_up).await, 5);
}

#[tokio::test]
async fn cursors_are_persisted_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let options = SessionOptions {
        state_dir: Some(dir.path().join("sessions")),
        ..defaults()
    };
    let f = fixture(options.clone()).await;
    let mut stream = f.stream("c1", Protocol::Nimbus).await;
    f.forward(&[result("c1", 0), result("c1", 1)]).await;
    assert_eq!(next_seq(&mut stream).await, 1);
    assert_eq!(next_seq(&mut stream).await, 2);
    f.sessions.persist().await.unwrap();
    let reopened = Sessions::open(mailbox(&f.store), Telemetry::new(), &options)
        .await
        .unwrap();
    assert_eq!(reopened.cursors("c1"), Some((2, 0)));
}

#[tokio::test]
async fn clients_unseen_for_the_replay_age_are_forgotten_with_their_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let options = SessionOptions {
        state_dir: Some(dir.path().join("sessions")),
        max_replay_age: Duration::from_millis(300),
        ..defaults()
    };
    let f = fixture(options.clone()).await;
    let mut gone = f.stream("gone", Protocol::Nimbus).await;
    f.forward(&[result("gone", 0)]).await;
    assert_eq!(next_seq(&mut gone).await, 1);
    drop(gone);
    let _here = f.stream("here", Protocol::Nimbus).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while f.sessions.is_connected("gone").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never detached"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.sessions.persist().await.unwrap();
    assert_eq!(
        f.sessions.cursors("gone"),
        Some((1, 0)),
        "seen just now: kept"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    f.sessions.persist().await.unwrap();
    assert_eq!(
        f.sessions.cursors("gone"),
        None,
        "unseen for the replay age"
    );
    assert!(f.sessions.cursors("here").is_some(), "attached: kept");
    assert_eq!(f.sessions.client_count(), 1);
    // Forgotten in the journal too.
    let reopened = Sessions::open(mailbox(&f.store), Telemetry::new(), &options)
        .await
        .unwrap();
    assert_eq!(reopened.cursors("gone"), None);
    assert!(reopened.cursors("here").is_some());
}

#[tokio::test]
async fn a_client_disconnected_as_slow_counts_as_seen_when_it_was_disconnected() {
    let options = SessionOptions {
        max_replay_age: Duration::from_millis(300),
        channel_capacity: 1,
        slow_client_timeout: Duration::from_millis(1),
        ..defaults()
    };
    let f = fixture(options).await;
    let slow = f.stream("c1", Protocol::Nimbus).await;
    // Attached for longer than the replay age, then cut off for reading too slowly.
    tokio::time::sleep(Duration::from_millis(400)).await;
    f.forward(&(0..5).map(|o| result("c1", o)).collect::<Vec<_>>())
        .await;
    assert!(!f.sessions.is_connected("c1").await, "disconnected as slow");
    f.sessions.persist().await.unwrap();
    assert!(
        f.sessions.cursors("c1").is_some(),
        "seen when it was disconnected, not when it attached"
    );
    drop(slow);
}
