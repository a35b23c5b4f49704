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

use datanexus_proto::datanexus::v1::event_stream_server::EventStream;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_proto::datanexus::v1::{
    Accepted, Event as EventRequest, Hello, StreamRequest, StreamResponse, StreamResult,
    stream_request, stream_response, stream_result,
};
use datanexus_results::result_seq;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::end_status;
use crate::observe::Api;
use crate::streams::{Refusal, RequestSide, Step, StreamProtocol, check_client_id, stream_event};
use crate::{AppState, Error};
use datanexus_results::{Client, Protocol, Rejection, Reply};
use datanexus_telemetry::Component;

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
        state.count_error(Component::Streams, &e);
        Status::from(e)
    };
    let hello = hello(&mut requests).await?.map_err(fail)?;
    let client_id = check_client_id(Some(&hello.client_id), "Hello.client_id must not be empty")
        .map_err(|e| fail(e.into()))?;
    let protocol = Protocol::Native {
        resume_after: hello.resume_after,
    };
    let outbound = state
        .sessions()
        .attach(&client_id, protocol)
        .await
        .map_err(|e| fail(e.into()))?;
    let side = RequestSide {
        protocol: Native {
            state: state.clone(),
            client: outbound.client(),
            client_id: client_id.clone(),
        },
        tx: outbound.sender(),
        state,
        client_id,
        last_seq: 0,
    };
    tokio::spawn(side.drive(requests));
    let responses = outbound.into_stream(stream_response);
    Ok(responses.map_err(end_status).boxed())
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

/// The native half of a stream's request side: events are answered with `Accepted`,
/// refusals at once with an error naming the correlation id, acknowledgements are
/// recorded on the spot.
struct Native {
    state: AppState,
    client: std::sync::Arc<Client>,
    client_id: String,
}

impl StreamProtocol for Native {
    type Message = StreamRequest;
    type Request = EventRequest;
    const API: Api = Api::GrpcEventStream;

    fn step(&mut self, request: StreamRequest, received_ns: i64) -> Step<EventRequest> {
        match request.kind {
            Some(stream_request::Kind::Event(e)) => match stream_event(
                &self.client_id,
                &e.event_name,
                e.number,
                received_ns,
                &self.state.options().reply_to,
            ) {
                Ok(event) => Step::Append(event, e),
                Err(err) => Step::Refuse(Refusal::Request(e, err.into())),
            },
            Some(stream_request::Kind::Ack(seq)) => {
                self.state.sessions().ack(&self.client, seq);
                Step::Done
            }
            Some(stream_request::Kind::Hello(_)) => {
                Step::Refuse(Refusal::Message("Hello must be sent only once".to_owned()))
            }
            None => Step::Refuse(Refusal::Message("empty request".to_owned())),
        }
    }

    fn accepted(&self, requests: Vec<EventRequest>, seqs: &[u64]) -> Vec<Reply> {
        requests
            .iter()
            .zip(seqs)
            .map(|(e, &seq)| Reply::Accepted {
                correlation_id: e.correlation_id,
                seq,
            })
            .collect()
    }

    fn refused(
        &self,
        refusal: Refusal<EventRequest>,
        _received_ns: i64,
        _last_seq: u64,
    ) -> Rejection {
        match refusal {
            Refusal::Request(e, err) => rejection(refusal_message(&e, &err)),
            Refusal::Message(message) => rejection(message),
        }
    }
}

fn refusal_message(e: &EventRequest, err: &Error) -> String {
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
