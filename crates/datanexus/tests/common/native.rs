//! A client of the native acknowledged stream (`datanexus.v1.EventStream`) for the
//! black-box tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use datanexus_proto::datanexus::v1::event_stream_client::EventStreamClient;
use datanexus_proto::datanexus::v1::stream_request::Kind as Req;
use datanexus_proto::datanexus::v1::stream_response::Kind as Resp;
use datanexus_proto::datanexus::v1::{Event, Hello, StreamRequest, StreamResponse, StreamResult};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A native acknowledged stream.
pub struct Native {
    tx: mpsc::Sender<StreamRequest>,
    rx: Streaming<StreamResponse>,
}

impl Native {
    pub async fn connect(url: &str, client_id: &str, resume_after: u64) -> Native {
        let mut c = EventStreamClient::connect(url.to_owned()).await.unwrap();
        let (tx, rx) = mpsc::channel(16_384);
        let hello = Req::Hello(Hello {
            client_id: client_id.into(),
            resume_after,
        });
        tx.send(StreamRequest { kind: Some(hello) }).await.unwrap();
        let rx = c
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Native { tx, rx }
    }

    pub async fn send(&self, n: i32) {
        let e = Event {
            event_name: "sq".into(),
            number: n,
            correlation_id: n as u64,
        };
        self.tx
            .send(StreamRequest {
                kind: Some(Req::Event(e)),
            })
            .await
            .unwrap();
    }

    pub async fn ack(&self, seq: u64) {
        self.tx
            .send(StreamRequest {
                kind: Some(Req::Ack(seq)),
            })
            .await
            .unwrap();
    }

    /// The next message, `None` once the stream ended or failed.
    pub async fn next(&mut self) -> Option<Resp> {
        match tokio::time::timeout(Duration::from_secs(120), self.rx.next())
            .await
            .expect("a message within 120 s")
        {
            Some(Ok(m)) => m.kind,
            _ => None,
        }
    }

    /// The next result (skipping `Accepted`); panics on an in-band error or an ended
    /// stream.
    pub async fn result(&mut self) -> StreamResult {
        loop {
            match self.next().await {
                Some(Resp::Result(r)) => return r,
                Some(Resp::Error(e)) => panic!("in-band error {e:?}"),
                Some(Resp::Accepted(_)) => {}
                None => panic!("stream ended"),
            }
        }
    }
}
