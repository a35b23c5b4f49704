//! Event streams end to end against `datanexus serve`: nimbus.NimbusService (the seed's
//! protocol) and the native acknowledged datanexus.v1.EventStream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/native.rs"]
mod native;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use datanexus_proto::datanexus::v1::stream_response::Kind as Resp;
use datanexus_proto::datanexus::v1::stream_result::Outcome;
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use native::Native;
use support::Server;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A nimbus stream: a sender of requests and the response stream.
async fn nimbus(
    url: &str,
    client_id: &str,
) -> (mpsc::Sender<EventRequest>, Streaming<EventResponse>) {
    let mut c = NimbusServiceClient::connect(url.to_owned()).await.unwrap();
    let (tx, rx) = mpsc::channel(16_384);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("client_id", client_id.parse().unwrap());
    let resp = c.process_event(req).await.unwrap().into_inner();
    (tx, resp)
}

/// `a-b, c-d, …` of sorted numbers.
fn ranges(numbers: &[i32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(", ")
}

fn sq(n: i32) -> EventRequest {
    EventRequest {
        event_name: "sq".into(),
        number: n,
    }
}

async fn next(resp: &mut Streaming<EventResponse>) -> EventResponse {
    tokio::time::timeout(Duration::from_secs(120), resp.next())
        .await
        .expect("a response within 120 s")
        .expect("stream still open")
        .expect("not an error status")
}

async fn one_client(url: String, id: usize, n: i32) {
    let (tx, mut resp) = nimbus(&url, &format!("client-{id}")).await;
    let sender = tokio::spawn(async move {
        for i in 1..=n {
            tx.send(sq(i)).await.unwrap();
        }
        tx
    });
    for i in 1..=n {
        let r = next(&mut resp).await;
        assert_eq!(
            (r.event_name.as_str(), r.number),
            ("sq", i),
            "client-{id}: response {i} out of order"
        );
        assert_eq!(
            i64::from(r.result),
            i64::from(i) * i64::from(i),
            "client-{id}: sq({i})"
        );
    }
    drop(sender.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_each_get_exactly_their_own_results_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    let clients: Vec<_> = (0..20)
        .map(|id| tokio::spawn(one_client(url.clone(), id, 10_000)))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_answered_in_band_and_the_stream_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (tx, mut resp) = nimbus(&server.grpc_url(), "errs").await;
    for r in [
        sq(46341),
        EventRequest {
            event_name: "cube".into(),
            number: 2,
        },
        sq(-3),
    ] {
        tx.send(r).await.unwrap();
    }
    let overflow = next(&mut resp).await;
    let err = |r: &EventResponse| {
        r.log
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .rev()
            .find_map(|s| s.metadata.get("error").cloned())
    };
    assert!(err(&overflow).unwrap().contains("overflow"), "{overflow:?}");
    let unknown = next(&mut resp).await;
    assert!(
        err(&unknown).unwrap().contains("unknown event name"),
        "{unknown:?}"
    );
    let ok = next(&mut resp).await;
    assert_eq!((ok.number, ok.result, err(&ok)), (-3, 9, None));
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_client_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = NimbusServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let status = c
        .process_event(tokio_stream::iter(vec![sq(1)]))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("client_id"),
        "{}",
        status.message()
    );
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nimbus_client_reconnecting_gets_missed_results_in_order_then_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    // More events than the old stream can hold in flight (its result buffer,
    // `streams.channel_capacity` = 1,024, plus the HTTP/2 window of responses), so that
    // results are still waiting when it breaks however fast the pipeline produced them
    // (with 1,000, a fast pipeline could hand every result to the broken stream) — yet
    // few enough that all the requests (~12 bytes each) fit the request stream's 64 KiB
    // HTTP/2 window and reach the server before the client disconnects (with 5,000,
    // those beyond ~4,100 were still in the client, never sent, so never answered).
    const OLD: i32 = 3_000;
    let (tx, mut resp) = nimbus(&url, "roamer").await;
    for i in 1..=OLD {
        tx.send(sq(i)).await.unwrap();
    }
    let mut got: Vec<i32> = Vec::new();
    for _ in 0..500 {
        got.push(next(&mut resp).await.number);
    }
    // Every event accepted (appended to the log) before the disconnect: the seed
    // protocol has no acks, so an event the server had not read yet when the stream
    // broke would be lost with it (a busy machine reads them late).
    let accepted = format!("datanexus_ingested_records_total{{api=\"grpc_nimbus\"}} {OLD}\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !support::http_get(server.http, "/internal/metrics")
        .1
        .contains(&accepted)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never accepted all {OLD} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((tx, resp)); // disconnect after a sixth of the responses
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (tx, mut resp) = nimbus(&url, "roamer").await;
    for i in OLD + 1..=OLD + 100 {
        tx.send(sq(i)).await.unwrap();
    }
    loop {
        let r = next(&mut resp).await;
        assert_eq!(r.result, r.number * r.number);
        got.push(r.number);
        if r.number == OLD + 100 {
            break;
        }
    }
    // In order, no duplicates; the seed protocol has no client ack, so results written
    // into the old stream just before it broke may be missing (in transit) — but never
    // anything after them, and every new result arrives.
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated: {got:?}"
    );
    let missing: Vec<i32> = (1..=OLD + 100).filter(|n| !got.contains(n)).collect();
    if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
        assert!(
            *first > 500 && *last < OLD && missing.len() == (*last - *first + 1) as usize,
            "gap {:?}..={:?} ({} results): {}",
            first,
            last,
            missing.len(),
            ranges(&missing)
        );
    }
    eprintln!(
        "reconnect: {} results lost in transit on the old stream",
        missing.len()
    );
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_stream_replays_exactly_the_unacknowledged_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    let mut s = Native::connect(&url, "native", 0).await;
    for i in 1..=1000 {
        s.send(i).await;
    }
    let (mut accepted, mut results) = (BTreeMap::new(), Vec::new());
    while results.len() < 500 {
        match s.next().await.expect("open") {
            Resp::Accepted(a) => {
                accepted.insert(a.correlation_id, a.seq);
            }
            Resp::Result(r) => results.push(r),
            Resp::Error(e) => panic!("error {e}"),
        }
    }
    let acked = results[499].seq;
    s.ack(acked).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s); // disconnect after half the results, reconnect 2 s later
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut s = Native::connect(&url, "native", acked).await;
    let mut replayed = Vec::new();
    while replayed.len() < 500 {
        if let Some(Resp::Result(r)) = s.next().await {
            replayed.push(r);
        }
    }
    let numbers: Vec<i32> = results.iter().chain(&replayed).map(|r| r.number).collect();
    assert_eq!(
        numbers,
        (1..=1000).collect::<Vec<_>>(),
        "every result exactly once, in order"
    );
    assert!(replayed.iter().all(|r| r.seq > acked
        && matches!(r.outcome, Some(Outcome::Result(v)) if v == r.number * r.number)));
    assert!(replayed.windows(2).all(|w| w[0].seq < w[1].seq));
    for r in results.iter().chain(&replayed) {
        if let Some(seq) = accepted.get(&(r.number as u64)) {
            assert_eq!(*seq, r.seq, "Accepted.seq matches the result's seq");
        }
    }
    assert!(server.terminate());
}
