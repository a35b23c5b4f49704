//! The event streams (`nimbus.NimbusService`, `datanexus.v1.EventStream`) end to end:
//! a real server, the real pipeline (processor and forwarder), embedded broker and
//! store.

use std::collections::HashMap;

use datanexus_proto::datanexus::v1::{
    Event, Hello, StreamRequest, stream_request, stream_response, stream_result,
};
use datanexus_proto::nimbus::EventResponse;
use datanexus_server::ServerOptions;
use tonic::Code;

use super::stream_support::{NativeConn, NimbusConn, StreamServer, eventually};
use super::support::options;

fn last_step_error(response: &EventResponse) -> Option<&str> {
    let steps = &response.log.as_ref().expect("a trace").steps;
    let last = steps.last().expect("steps");
    last.metadata.get("error").map(String::as_str)
}

fn seq_of(response: &EventResponse) -> u64 {
    let steps = &response.log.as_ref().expect("a trace").steps;
    steps[0].metadata["seq"].parse().expect("numeric seq")
}

#[tokio::test]
async fn a_nimbus_stream_without_a_client_id_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    for client_id in [None, Some("")] {
        let Err(status) = NimbusConn::open(server.channel().await, client_id).await else {
            panic!("a stream without client_id {client_id:?} was accepted");
        };
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "missing client_id metadata");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn nimbus_answers_every_request_in_order_over_one_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    let mut conn = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    for n in 1..=20 {
        conn.send("sq", n).await;
    }
    let mut last_seq = 0;
    for n in 1..=20 {
        let r = conn.recv().await;
        assert_eq!(
            (r.event_name.as_str(), r.number, r.result),
            ("sq", n, n * n)
        );
        assert_eq!(last_step_error(&r), None);
        let methods: Vec<_> = r
            .log
            .as_ref()
            .expect("trace")
            .steps
            .iter()
            .map(|s| s.method_name.clone())
            .collect();
        assert_eq!(
            methods,
            ["gateway.receive", "processor.sq", "gateway.deliver"]
        );
        assert!(seq_of(&r) > last_seq, "seqs increase");
        last_seq = seq_of(&r);
    }
    conn.close_send();
    assert!(
        conn.next().await.expect("ok").is_none(),
        "ends once answered"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_answered_in_band_in_order_and_the_stream_stays_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    let mut conn = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    let requests = [("sq", 3), ("cube", 2), ("SQ", 100_000), ("", 5), ("sq", 4)];
    for (name, n) in requests {
        conn.send(name, n).await;
    }
    let answers: Vec<EventResponse> = futures_collect(&mut conn, requests.len()).await;
    let numbers: Vec<_> = answers.iter().map(|r| r.number).collect();
    assert_eq!(numbers, [3, 2, 100_000, 5, 4], "in request order");
    assert_eq!((answers[0].result, answers[4].result), (9, 16));
    for bad in &answers[1..4] {
        assert_eq!(bad.result, 0);
        let error = last_step_error(bad).expect("an error in the trace");
        let last = bad.log.as_ref().expect("trace").steps.last().expect("step");
        assert_eq!(last.message, error);
    }
    assert!(
        last_step_error(&answers[1])
            .expect("error")
            .contains("cube")
    );
    assert_eq!(
        last_step_error(&answers[3]),
        Some("event_name must not be empty")
    );
    conn.send("sq", 6).await;
    assert_eq!(conn.recv().await.result, 36, "the stream is still open");
    server.shutdown().await;
}

async fn futures_collect(conn: &mut NimbusConn, n: usize) -> Vec<EventResponse> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(conn.recv().await);
    }
    out
}

#[tokio::test]
async fn a_second_nimbus_stream_with_the_same_client_id_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    let mut first = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    first.send("sq", 2).await;
    assert_eq!(first.recv().await.result, 4);
    let mut second = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    let status = first.next().await.expect_err("the first stream is closed");
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.message().contains("took over"), "{status}");
    second.send("sq", 3).await;
    let r = second.recv().await;
    assert_eq!((r.number, r.result), (3, 9), "the new stream wins");
    server.shutdown().await;
    let status = second.next().await.expect_err("closed by the shutdown");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("reconnect"), "{status}");
}

#[tokio::test]
async fn an_exhausted_ingest_budget_is_answered_in_band() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions {
        max_inflight_records: 0,
        ..options()
    };
    let server = StreamServer::start(dir.path(), options).await;
    let mut conn = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    for n in [2, 3] {
        conn.send("sq", n).await;
        let r = conn.recv().await;
        assert_eq!((r.number, r.result), (n, 0));
        let error = last_step_error(&r).expect("an error");
        assert!(error.contains("retry later"), "{error}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnecting_nimbus_client_gets_what_it_missed_in_order_then_new_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = StreamServer::start(dir.path(), options()).await;
    let mut first = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    for n in 1..=5 {
        first.send("sq", n).await;
        assert_eq!(first.recv().await.number, n);
    }
    // The results of the next five are computed while the client is away.
    server.stop_pipeline().await;
    for n in 6..=10 {
        first.send("sq", n).await;
    }
    eventually("five events durable", || async {
        server.unprocessed_events().await == 5
    })
    .await;
    drop(first);
    eventually("the server saw the client go", || async {
        !server.state().sessions().is_connected("c1").await
    })
    .await;
    server.start_pipeline().await;
    eventually("ten results stored", || async {
        server.stored_results("c1").await == 10
    })
    .await;

    let mut second = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    second.send("sq", 11).await;
    second.send("sq", 12).await;
    second.close_send();
    let mut numbers = Vec::new();
    while let Some(r) = second.next().await.expect("ok") {
        assert_eq!(r.result, r.number * r.number);
        numbers.push(r.number);
    }
    assert_eq!(
        numbers,
        (6..=12).collect::<Vec<_>>(),
        "missed, in order, once"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn nimbus_cursors_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions {
        state_dir: Some(dir.path().join("sessions")),
        ..options()
    };
    let server = StreamServer::start(dir.path(), options.clone()).await;
    let mut conn = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    for n in 1..=3 {
        conn.send("sq", n).await;
    }
    conn.close_send();
    for n in 1..=3 {
        assert_eq!(conn.recv().await.number, n);
    }
    assert!(conn.next().await.expect("ok").is_none());
    server.shutdown().await;
    assert!(dir.path().join("sessions/cursors.log").exists());

    let server = StreamServer::start(dir.path(), options).await;
    assert_eq!(
        server.state().sessions().cursors("c1").map(|c| c.0),
        Some(3)
    );
    let mut conn = NimbusConn::open(server.channel().await, Some("c1"))
        .await
        .expect("open");
    conn.send("sq", 4).await;
    conn.close_send();
    assert_eq!(conn.recv().await.number, 4, "nothing replayed twice");
    assert!(conn.next().await.expect("ok").is_none());
    server.shutdown().await;
}

fn hello(client_id: &str, resume_after: u64) -> StreamRequest {
    StreamRequest {
        kind: Some(stream_request::Kind::Hello(Hello {
            client_id: client_id.into(),
            resume_after,
        })),
    }
}

fn event(number: i32) -> StreamRequest {
    StreamRequest {
        kind: Some(stream_request::Kind::Event(Event {
            event_name: "sq".into(),
            number,
            correlation_id: u64::try_from(number).expect("positive") + 100,
        })),
    }
}

fn ack(seq: u64) -> StreamRequest {
    StreamRequest {
        kind: Some(stream_request::Kind::Ack(seq)),
    }
}

/// What a native client saw: accepted (correlation → seq) and results (seq, number,
/// result) in arrival order.
#[derive(Default)]
struct Seen {
    accepted: HashMap<u64, u64>,
    results: Vec<(u64, i32, i32)>,
}

impl Seen {
    /// Takes the next message; false at the end of the stream.
    async fn take(&mut self, conn: &mut NativeConn) -> bool {
        let Some(response) = conn.next().await.expect("ok") else {
            return false;
        };
        match response.kind.expect("a kind") {
            stream_response::Kind::Accepted(a) => {
                self.accepted.insert(a.correlation_id, a.seq);
            }
            stream_response::Kind::Result(r) => {
                let Some(stream_result::Outcome::Result(v)) = r.outcome else {
                    panic!("unexpected outcome {r:?}");
                };
                self.results.push((r.seq, r.number, v));
            }
            stream_response::Kind::Error(e) => panic!("unexpected error {e}"),
        }
        true
    }

    async fn drain(conn: &mut NativeConn) -> Seen {
        let mut seen = Seen::default();
        while seen.take(conn).await {}
        seen
    }

    fn numbers(&self) -> Vec<i32> {
        self.results.iter().map(|r| r.1).collect()
    }
}

#[tokio::test]
async fn the_native_stream_replays_exactly_the_unacknowledged_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    let mut conn = NativeConn::open(server.channel().await, hello("n1", 0)).await;
    for n in 1..=6 {
        conn.send(event(n)).await;
    }
    let mut seen = Seen::default();
    while seen.results.len() < 3 {
        assert!(seen.take(&mut conn).await, "the stream is open");
    }
    conn.send(ack(seen.results[2].0)).await;
    conn.close_send();
    while seen.take(&mut conn).await {}
    assert_eq!(seen.numbers(), [1, 2, 3, 4, 5, 6]);
    for (seq, number, value) in &seen.results {
        let correlation = u64::try_from(*number).expect("positive") + 100;
        assert_eq!(
            seen.accepted.get(&correlation),
            Some(seq),
            "Accepted tells the seq"
        );
        assert_eq!(*value, number * number);
    }

    let mut again = NativeConn::open(server.channel().await, hello("n1", 0)).await;
    again.send(event(7)).await;
    again.close_send();
    let replayed = Seen::drain(&mut again).await;
    assert_eq!(
        replayed.numbers(),
        [4, 5, 6, 7],
        "the unacknowledged once, then new"
    );
    let seqs: Vec<_> = replayed.results.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let mut resumed = NativeConn::open(server.channel().await, hello("n1", seqs[2])).await;
    resumed.close_send();
    assert_eq!(Seen::drain(&mut resumed).await.numbers(), [7]);
    server.shutdown().await;
}

#[tokio::test]
async fn the_native_stream_must_start_with_hello() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StreamServer::start(dir.path(), options()).await;
    let mut conn = NativeConn::open(server.channel().await, event(1)).await;
    let status = conn.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "the first message must be Hello");
    let mut anonymous = NativeConn::open(server.channel().await, hello("", 0)).await;
    let status = anonymous.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    server.shutdown().await;
}
