//! Idle and slow clients do not hold the server hostage: 1,000 HTTP connections that
//! send half a request and stall (slowloris), and 50 event streams that send events but
//! never read their results (a tiny HTTP/2 window, so the server's sends block), while
//! a normal client keeps being served. The stalled streams are closed as slow clients
//! (counted), the half-sent requests are closed after the header-read timeout, and the
//! server's memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/native.rs"]
mod native;
mod support;

use std::time::{Duration, Instant};

use datanexus_proto::datanexus::v1::event_stream_client::EventStreamClient;
use datanexus_proto::datanexus::v1::stream_request::Kind as Req;
use datanexus_proto::datanexus::v1::{Event, Hello, StreamRequest};
use native::Native;
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const STALLED: usize = 50;
const EVENTS_PER_STALLED: i32 = 120;

/// A stream that sends `events` events and never reads: its HTTP/2 windows are 1 KiB,
/// so the server can send it almost nothing. Returns what keeps it open.
async fn stalled_stream(url: &str, client_id: &str, events: i32) -> impl Sized + use<> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut client = EventStreamClient::new(channel);
    let (tx, rx) = mpsc::channel(events as usize + 1);
    tx.send(StreamRequest {
        kind: Some(Req::Hello(Hello {
            client_id: client_id.into(),
            resume_after: 0,
        })),
    })
    .await
    .unwrap();
    for n in 0..events {
        tx.send(StreamRequest {
            kind: Some(Req::Event(Event {
                event_name: "sq".into(),
                number: n,
                correlation_id: n as u64,
            })),
        })
        .await
        .unwrap();
    }
    let responses = client.stream(ReceiverStream::new(rx)).await.unwrap();
    (client, tx, responses)
}

/// The slow-client closes counted by the server.
async fn slow_client_closes(server: &Server) -> f64 {
    let addr = server.http;
    let text = tokio::task::spawn_blocking(move || support::http_get(addr, "/internal/metrics").1)
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.contains("kind=\"slow_client\"") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_clients_leave_the_others_served_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        dir.path(),
        &[],
        &[
            ("DATANEXUS_STREAMS__CHANNEL_CAPACITY", "64"),
            ("DATANEXUS_STREAMS__SLOW_CLIENT_TIMEOUT", "1s"),
            ("DATANEXUS_LIMITS__HEADER_READ_TIMEOUT", "3s"),
        ],
    );
    // 1,000 connections with half a request each, kept open.
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(server.http).await.unwrap();
        s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    // Streams that never read their results.
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        stalled.push(
            stalled_stream(
                &server.grpc_url(),
                &format!("stalled-{i}"),
                EVENTS_PER_STALLED,
            )
            .await,
        );
    }

    // A normal client is served meanwhile: a metric over HTTP, results on a stream.
    let addr = server.http;
    let (status, body) = tokio::task::spawn_blocking(move || {
        support::http_post_json(
            addr,
            "/metrics",
            r#"{"metric_name": "served", "value": 1.5, "labels": {"by": "test"}}"#,
        )
    })
    .await
    .unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    let mut fine = Native::connect(&server.grpc_url(), "fine", 0).await;
    for n in 1..=20 {
        fine.send(n).await;
    }
    for _ in 1..=20 {
        let r = fine.result().await;
        fine.ack(r.seq).await;
    }

    // The stalled streams are closed as slow clients (their results stay stored for a
    // replay), not buffered without end.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut closed = 0.0;
    while Instant::now() < deadline {
        closed = slow_client_closes(&server).await;
        if closed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        closed >= 1.0,
        "no stalled stream was closed as a slow client"
    );
    let peak = server.peak_rss();
    eprintln!(
        "slow clients: 1,000 idle connections, {STALLED} stalled streams, {closed} closed as slow; peak RSS {} MiB",
        peak >> 20
    );
    assert!(peak < 400 << 20, "peak RSS {} MiB", peak >> 20);
    // The half-sent requests were closed by the server (headers not complete within
    // the header-read timeout): each socket reads its end.
    let mut ended = 0;
    for mut s in idle {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if read == Ok(true) {
            ended += 1;
        }
    }
    assert_eq!(ended, 1000, "idle connections left open by the server");
    drop(stalled);
}
