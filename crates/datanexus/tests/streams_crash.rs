//! `datanexus serve` is SIGKILLed while 5 clients stream on the native acknowledged
//! protocol; after restart and reconnect, every event the server accepted gets its
//! result, in order, each exactly once after the client's acknowledged position.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datanexus_proto::datanexus::v1::event_stream_client::EventStreamClient;
use datanexus_proto::datanexus::v1::stream_request::Kind as Req;
use datanexus_proto::datanexus::v1::stream_response::Kind as Resp;
use datanexus_proto::datanexus::v1::stream_result::Outcome;
use datanexus_proto::datanexus::v1::{Event, Hello, StreamRequest};
use rand::Rng;
use support::Server;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const CLIENTS: usize = 5;
const EVENTS: i32 = 3_000;

#[derive(Default)]
struct Client {
    /// correlation (= number) → seq, for every Accepted.
    accepted: BTreeMap<i32, u64>,
    /// seq → number, every result received.
    results: BTreeMap<u64, i32>,
    /// Highest seq acknowledged to the server.
    acked: u64,
}

/// One connection: sends `numbers`, records Accepted and results, acks every result
/// right away; returns when the stream ends (server killed) or `until` says so.
async fn session(
    url: String,
    id: usize,
    numbers: Vec<i32>,
    state: Arc<Mutex<Client>>,
    until: fn(&Client) -> bool,
) {
    let Ok(mut c) = EventStreamClient::connect(url).await else {
        return;
    };
    let (tx, rx) = mpsc::channel(16_384);
    let resume_after = state.lock().await.acked;
    let hello = Req::Hello(Hello {
        client_id: format!("crash-{id}"),
        resume_after,
    });
    tx.send(StreamRequest { kind: Some(hello) }).await.unwrap();
    let Ok(resp) = c.stream(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut resp = resp.into_inner();
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move {
            for n in numbers {
                let e = Event {
                    event_name: "sq".into(),
                    number: n,
                    correlation_id: n as u64,
                };
                if tx
                    .send(StreamRequest {
                        kind: Some(Req::Event(e)),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let mut last_seq_this_connection = 0;
    while !until(&*state.lock().await) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(120), resp.next()).await
        else {
            break;
        };
        let mut st = state.lock().await;
        match msg.kind {
            Some(Resp::Accepted(a)) => {
                st.accepted.insert(a.correlation_id as i32, a.seq);
            }
            Some(Resp::Result(r)) => {
                assert!(
                    r.seq > resume_after,
                    "crash-{id}: replayed seq {} at or below resume point {resume_after}",
                    r.seq
                );
                assert!(
                    r.seq > last_seq_this_connection,
                    "crash-{id}: duplicate or out-of-order seq {}",
                    r.seq
                );
                last_seq_this_connection = r.seq;
                assert!(matches!(r.outcome, Some(Outcome::Result(v)) if v == r.number * r.number));
                st.results.insert(r.seq, r.number);
                st.acked = st.acked.max(r.seq);
                let _ = tx.try_send(StreamRequest {
                    kind: Some(Req::Ack(r.seq)),
                });
            }
            Some(Resp::Error(e)) => panic!("crash-{id}: error {e}"),
            None => {}
        }
    }
    sender.abort();
}

fn all_accepted_answered(c: &Client) -> bool {
    c.accepted.values().all(|seq| c.results.contains_key(seq))
}

fn never(_: &Client) -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_gets_its_result_after_sigkill_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let states: Vec<_> = (0..CLIENTS)
        .map(|_| Arc::new(Mutex::new(Client::default())))
        .collect();
    let url = server.grpc_url();
    let tasks: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(id, st)| {
            tokio::spawn(session(
                url.clone(),
                id,
                (1..=EVENTS).collect(),
                st.clone(),
                never,
            ))
        })
        .collect();
    let target = rand::rng().random_range(1_000..(CLIENTS * EVENTS as usize * 3 / 4));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut accepted = 0;
        for s in &states {
            accepted += s.lock().await.accepted.len();
        }
        if accepted >= target || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let accepted_before: usize = {
        let mut n = 0;
        for s in &states {
            n += s.lock().await.accepted.len();
        }
        n
    };
    eprintln!("SIGKILL with {accepted_before} events accepted");

    let server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    // Reconnect and send nothing new: every accepted event must get its result.
    let tasks: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(id, st)| {
            tokio::spawn(session(
                url.clone(),
                id,
                Vec::new(),
                st.clone(),
                all_accepted_answered,
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for (id, st) in states.iter().enumerate() {
        let st = st.lock().await;
        for (n, seq) in &st.accepted {
            assert_eq!(
                st.results.get(seq),
                Some(n),
                "crash-{id}: accepted event {n} (seq {seq}) has no result"
            );
        }
        let numbers: BTreeSet<i32> = st.results.values().copied().collect();
        assert_eq!(
            numbers.len(),
            st.results.len(),
            "crash-{id}: one result per event"
        );
    }
    assert!(server.terminate());
}
