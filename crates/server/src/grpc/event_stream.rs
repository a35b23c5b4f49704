//! `datanexus.v1.EventStream.Stream`: the native acknowledged event stream.
//!
//! - The first message must be `Hello{client_id, resume_after}` (else
//!   `INVALID_ARGUMENT`); the response headers come at once, the stream's first
//!   messages only after `Hello`.
//! - `Event{event_name, number, correlation_id}` is appended durably like a nimbus
//!   request, then answered with `Accepted{correlation_id, seq}`: its result will carry
//!   `seq`. A refused event (empty name, overload) is answered with
//!   `error: "correlation_id N: …"` and the stream stays open; resend it later.
//! - Results arrive as `StreamResult{seq, event_name, number, result | error}`, seqs
//!   strictly increasing. A result may arrive before the `Accepted` of its event.
//! - `ack: seq` says the client has durably handled every result up to `seq` (acks
//!   above what it was sent are capped); the server persists it.
//! - On (re)connect the client first gets every stored result with a seq above
//!   max(`resume_after`, its last ack), in order, then new ones: with acks, nothing is
//!   lost in transit (unlike nimbus, where a result written into a connection that
//!   broke is gone), and a client that deduplicates by seq handles each result once.
//! - A second stream with the same client id takes over (the older one ends with
//!   `ABORTED`); half-closing ends the stream once every event sent was answered.

use datanexus_model::time;
use datanexus_pipeline::results::result_seq;
use datanexus_proto::datanexus::v1::event_stream_server::EventStream;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_proto::datanexus::v1::{
    Accepted, Event as EventRequest, Hello, StreamRequest, StreamResponse, StreamResult,
    stream_request, stream_response, stream_result,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::streams::{self, append, check_client_id, stream_event};
use crate::observe::Api;
use crate::sessions::{Client, Outgoing, Protocol, Rejection, Reply};
use crate::{AppState, Error};

type Responses = BoxStream<'static, Result<StreamResponse, Status>>;

/// The `datanexus.v1.EventStream` implementation.
#[derive(Debug, Clone)]
pub(crate) struct NativeStreams {
    state: AppState,
}

impl NativeStreams {
    pub(crate) fn new(state: AppState) -> Self {
        NativeStreams { state }
    }
}

#[tonic::async_trait]
impl EventStream for NativeStreams {
    type StreamStream = Responses;

    async fn stream(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let state = self.state.clone();
        let requests = request.into_inner();
        let opened = futures::stream::once(open(state, requests));
        let responses = opened.flat_map(|opened| match opened {
            Ok(responses) => responses,
            Err(status) => futures::stream::once(async move { Err(status) }).boxed(),
        });
        Ok(Response::new(responses.boxed()))
    }
}

/// Reads `Hello`, attaches the stream and starts its request side.
async fn open(
    state: AppState,
    mut requests: Streaming<StreamRequest>,
) -> Result<Responses, Status> {
    let fail = |e: Error| {
        state.count_error("streams", &e);
        Status::from(e)
    };
    let hello = hello(&mut requests).await?.map_err(fail)?;
    let client_id = check_client_id(Some(&hello.client_id), "Hello.client_id must not be empty")
        .map_err(fail)?;
    let protocol = Protocol::Native {
        resume_after: hello.resume_after,
    };
    let outbound = state
        .sessions()
        .attach(&client_id, protocol)
        .await
        .map_err(fail)?;
    let inbound = Inbound {
        client: outbound.client(),
        tx: outbound.sender(),
        state,
        client_id,
        last_seq: 0,
    };
    tokio::spawn(streams::drive(inbound, requests));
    Ok(outbound.into_stream(stream_response).boxed())
}

async fn hello(requests: &mut Streaming<StreamRequest>) -> Result<Result<Hello, Error>, Status> {
    Ok(match requests.message().await? {
        Some(StreamRequest {
            kind: Some(stream_request::Kind::Hello(hello)),
        }) => Ok(hello),
        Some(_) => Err(Error::Invalid("the first message must be Hello".into())),
        None => Err(Error::Invalid("the stream ended before Hello".into())),
    })
}

/// The request side of one stream.
struct Inbound {
    state: AppState,
    client: std::sync::Arc<Client>,
    client_id: String,
    tx: mpsc::Sender<Outgoing>,
    last_seq: u64,
}

impl streams::Inbound<StreamRequest> for Inbound {
    fn tx(&self) -> &mpsc::Sender<Outgoing> {
        &self.tx
    }

    fn client_id(&self) -> &str {
        &self.client_id
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Handles one batch in order; false when the stream is over.
    async fn handle(&mut self, batch: Vec<StreamRequest>) -> bool {
        let received_ns = time::now_ns();
        let mut run = Vec::new();
        for request in batch {
            let refusal = match request.kind {
                Some(stream_request::Kind::Event(e)) => {
                    match stream_event(
                        &self.client_id,
                        &e.event_name,
                        e.number,
                        received_ns,
                        &self.state.options().reply_to,
                    ) {
                        Ok(event) => {
                            run.push((event, e));
                            continue;
                        }
                        Err(err) => refusal(&e, &err),
                    }
                }
                Some(stream_request::Kind::Ack(seq)) => {
                    self.state.sessions().ack(&self.client, seq);
                    continue;
                }
                Some(stream_request::Kind::Hello(_)) => "Hello must be sent only once".to_owned(),
                None => "empty request".to_owned(),
            };
            if !self.append(std::mem::take(&mut run)).await || !self.refuse(refusal).await {
                return false;
            }
        }
        self.append(run).await
    }
}

impl Inbound {
    async fn append(&mut self, run: Vec<(datanexus_model::Event, EventRequest)>) -> bool {
        if run.is_empty() {
            return true;
        }
        let (events, requests): (Vec<_>, Vec<_>) = run.into_iter().unzip();
        let replies: Vec<Reply> = match append(&self.state, Api::GrpcEventStream, &events).await {
            Ok(seqs) => {
                self.last_seq = seqs.last().copied().unwrap_or(self.last_seq);
                let accepted = requests.iter().zip(seqs);
                accepted
                    .map(|(e, seq)| Reply::Accepted {
                        correlation_id: e.correlation_id,
                        seq,
                    })
                    .collect()
            }
            Err(err @ Error::Overloaded(_)) => requests
                .iter()
                .map(|e| Reply::Rejected(rejection(refusal(e, &err))))
                .collect(),
            Err(err) => {
                let _ = self.tx.send(Outgoing::Abort(err.into())).await;
                return false;
            }
        };
        for reply in replies {
            if self.tx.send(Outgoing::Reply(reply)).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn refuse(&self, message: String) -> bool {
        let reply = Outgoing::Reply(Reply::Rejected(rejection(message)));
        self.tx.send(reply).await.is_ok()
    }
}

fn refusal(e: &EventRequest, err: &Error) -> String {
    format!(
        "correlation_id {}: {}",
        e.correlation_id,
        err.public_message()
    )
}

/// An in-band error, sent at once (native clients match it by correlation id).
fn rejection(message: String) -> Rejection {
    Rejection {
        after_seq: 0,
        event_name: String::new(),
        number: 0,
        correlation_id: 0,
        message,
        received_ns: 0,
    }
}

fn stream_response(reply: Reply) -> StreamResponse {
    let kind = match reply {
        Reply::Result(r) => {
            let outcome = match r.outcome.clone() {
                Some(Outcome::Result(v)) => stream_result::Outcome::Result(v),
                Some(Outcome::Error(e)) => stream_result::Outcome::Error(e),
                None => stream_result::Outcome::Error("no outcome".into()),
            };
            stream_response::Kind::Result(StreamResult {
                seq: result_seq(&r),
                event_name: r.event_name,
                number: r.number,
                outcome: Some(outcome),
            })
        }
        Reply::Accepted {
            correlation_id,
            seq,
        } => stream_response::Kind::Accepted(Accepted {
            correlation_id,
            seq,
        }),
        Reply::Rejected(r) => stream_response::Kind::Error(r.message),
    };
    StreamResponse { kind: Some(kind) }
}
