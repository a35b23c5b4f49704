//! `nimbus.NimbusService.ProcessEvent` (wire-compatible with the NimbusGRPC seed).
//!
//! - The client id is the request metadata `client_id` (missing or empty:
//!   `INVALID_ARGUMENT` "missing client_id metadata"); bearer auth as everywhere.
//! - Each `EventRequest{event_name, number}` becomes an event on the `events` topic
//!   (source = the client, `reply_to` = this process's `ServerOptions::reply_to`); the pipeline's processor answers it
//!   and the result comes back on this stream as `EventResponse{event_name, number,
//!   result, log}`. Every request is answered, in request order, on a stream that stays
//!   open: an unknown event name or an overflow is answered with `result` 0 and the
//!   error as the last trace step's message and `metadata["error"]` (the seed dropped
//!   unknown names and wrapped on overflow). So are requests the gateway refuses itself:
//!   an empty event name, or an overload of the broker's in-flight budget ("server
//!   overloaded…; retry later": resend that request).
//! - `log.steps` is the trace: `gateway.receive`, `processor.<event_name>`,
//!   `gateway.deliver`, each with `metadata["seq"]`, the result's per-client sequence.
//! - A second stream with the same client id takes over: the older one is closed with
//!   `ABORTED`; the new one gets every result the older one did not hand to the
//!   transport (the seed lost the new stream instead).
//! - Results that arrive while the client is disconnected are kept in the store and
//!   replayed, in order and without duplicates, when it reconnects. The protocol has no
//!   acknowledgements: a result already written into a connection that then broke is
//!   not sent again (use `datanexus.v1.EventStream` for exactly-once delivery), and
//!   after a crash of the server a client may see a few results twice.
//! - When the client half-closes, the stream ends (`OK`) once every request was
//!   answered. A broker failure ends it with its status (e.g. `UNAVAILABLE`).

use std::collections::HashMap;

use datanexus_model::time;
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_proto::nimbus::nimbus_service_server::NimbusService;
use datanexus_proto::nimbus::{EventRequest, EventResponse, LogEntry, TraceStep};
use datanexus_proto::prost_types::Timestamp;
use datanexus_results::result_seq;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::end_status;
use crate::observe::Api;
use crate::streams::{Refusal, RequestSide, Step, StreamProtocol, check_client_id, stream_event};
use crate::{AppState, Error};
use datanexus_results::{Protocol, Rejection, Reply};
use datanexus_telemetry::Component;

const SERVICE_NAME: &str = "datanexus";
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The `nimbus.NimbusService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct NimbusStreams {
    state: AppState,
}

impl NimbusStreams {
    pub(crate) fn new(state: AppState) -> Self {
        NimbusStreams { state }
    }

    fn fail(&self, e: Error) -> Status {
        self.state.count_error(Component::Streams, &e);
        e.into()
    }
}

#[tonic::async_trait]
impl NimbusService for NimbusStreams {
    type ProcessEventStream = BoxStream<'static, Result<EventResponse, Status>>;

    async fn process_event(
        &self,
        request: Request<Streaming<EventRequest>>,
    ) -> Result<Response<Self::ProcessEventStream>, Status> {
        let client_id = request
            .metadata()
            .get("client_id")
            .map(|v| v.to_str().unwrap_or_default());
        let client_id = check_client_id(client_id, "missing client_id metadata")
            .map_err(|e| self.fail(e.into()))?;
        let outbound = self
            .state
            .sessions()
            .attach(&client_id, Protocol::Nimbus)
            .await
            .map_err(|e| self.fail(e.into()))?;
        let requests = RequestSide {
            protocol: Nimbus {
                client_id: client_id.clone(),
                reply_to: self.state.options().reply_to.clone(),
            },
            state: self.state.clone(),
            client_id,
            tx: outbound.sender(),
            last_seq: 0,
        };
        tokio::spawn(requests.drive(request.into_inner()));
        let instance = self.state.instance_id().to_owned();
        let responses = outbound.into_stream(move |reply| response(reply, &instance));
        Ok(Response::new(responses.map_err(end_status).boxed()))
    }
}

/// The nimbus half of a stream's request side: every request is an event; refusals
/// are answered like results (after the result of the last appended event), and
/// accepted requests get no reply of their own.
struct Nimbus {
    client_id: String,
    reply_to: String,
}

impl StreamProtocol for Nimbus {
    type Message = EventRequest;
    type Request = EventRequest;
    const API: Api = Api::GrpcNimbus;

    fn step(&mut self, request: EventRequest, received_ns: i64) -> Step<EventRequest> {
        match stream_event(
            &self.client_id,
            &request.event_name,
            request.number,
            received_ns,
            &self.reply_to,
        ) {
            Ok(event) => Step::Append(event, request),
            Err(e) => Step::Refuse(Refusal::Request(request, e.into())),
        }
    }

    fn accepted(&self, _requests: Vec<EventRequest>, _seqs: &[u64]) -> Vec<Reply> {
        Vec::new()
    }

    fn refused(
        &self,
        refusal: Refusal<EventRequest>,
        received_ns: i64,
        last_seq: u64,
    ) -> Rejection {
        let (event_name, number, message) = match refusal {
            Refusal::Request(request, e) => {
                (request.event_name, request.number, e.public_message())
            }
            Refusal::Message(message) => (String::new(), 0, message),
        };
        Rejection {
            after_seq: last_seq,
            event_name,
            number,
            correlation_id: 0,
            message,
            received_ns,
        }
    }
}

/// The `EventResponse` of a reply (nimbus has no `Accepted`; it never gets one).
fn response(reply: Reply, instance: &str) -> EventResponse {
    match reply {
        Reply::Result(r) => result_response(r, instance),
        Reply::Rejected(r) => rejected_response(r, instance),
        Reply::Accepted { seq, .. } => EventResponse {
            log: Some(LogEntry {
                steps: vec![step(
                    instance,
                    "gateway.receive",
                    time::now_ns(),
                    "event accepted".into(),
                    seq_metadata(seq),
                )],
            }),
            ..EventResponse::default()
        },
    }
}

fn result_response(r: ResultRecord, instance: &str) -> EventResponse {
    let seq = result_seq(&r);
    let processor = if r.event_name.is_empty() {
        "processor".to_owned()
    } else {
        format!("processor.{}", r.event_name.to_lowercase())
    };
    let (result, processed, delivered, mut last) = match &r.outcome {
        Some(Outcome::Result(v)) => (
            *v,
            format!("{}({}) = {v}", r.event_name, r.number),
            "result delivered".to_owned(),
            seq_metadata(seq),
        ),
        Some(Outcome::Error(e)) => (0, e.clone(), e.clone(), error_metadata(seq, e)),
        None => {
            let e = "no outcome".to_owned();
            (0, e.clone(), e.clone(), error_metadata(seq, &e))
        }
    };
    let processed_metadata = last.clone();
    last.insert("client_id".into(), r.client_id.clone());
    let steps = vec![
        step(
            instance,
            "gateway.receive",
            r.received_ns,
            "event received".into(),
            seq_metadata(seq),
        ),
        TraceStep {
            instance_id: r.processor_id.clone(),
            ..step(
                instance,
                &processor,
                r.processed_ns,
                processed,
                processed_metadata,
            )
        },
        step(instance, "gateway.deliver", time::now_ns(), delivered, last),
    ];
    EventResponse {
        event_name: r.event_name,
        number: r.number,
        result,
        log: Some(LogEntry { steps }),
    }
}

fn rejected_response(r: Rejection, instance: &str) -> EventResponse {
    let metadata = HashMap::from([
        ("error".to_owned(), r.message.clone()),
        ("refused_by".to_owned(), "gateway".to_owned()),
    ]);
    let received = "event received".to_owned();
    let steps = vec![
        step(
            instance,
            "gateway.receive",
            r.received_ns,
            received,
            HashMap::new(),
        ),
        step(
            instance,
            "gateway.deliver",
            time::now_ns(),
            r.message,
            metadata,
        ),
    ];
    EventResponse {
        event_name: r.event_name,
        number: r.number,
        result: 0,
        log: Some(LogEntry { steps }),
    }
}

fn step(
    instance: &str,
    method: &str,
    at_ns: i64,
    message: String,
    metadata: HashMap<String, String>,
) -> TraceStep {
    TraceStep {
        timestamp: Some(Timestamp {
            seconds: at_ns.div_euclid(NANOS_PER_SECOND),
            nanos: i32::try_from(at_ns.rem_euclid(NANOS_PER_SECOND)).unwrap_or_default(),
        }),
        service_name: SERVICE_NAME.to_owned(),
        instance_id: instance.to_owned(),
        method_name: method.to_owned(),
        message,
        metadata,
    }
}

fn seq_metadata(seq: u64) -> HashMap<String, String> {
    HashMap::from([("seq".to_owned(), seq.to_string())])
}

fn error_metadata(seq: u64, error: &str) -> HashMap<String, String> {
    let mut metadata = seq_metadata(seq);
    metadata.insert("error".into(), error.to_owned());
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> ResultRecord {
        ResultRecord {
            client_id: "c1".into(),
            event_partition: 1,
            event_offset: 9,
            event_name: "sq".into(),
            number: 4,
            outcome: Some(outcome),
            received_ns: 1_500_000_000,
            processed_ns: 2_000_000_001,
            processor_id: "proc-1".into(),
            reply_to: "local".into(),
        }
    }

    #[test]
    fn a_result_becomes_a_response_with_a_three_step_trace() {
        let r = result_response(result(Outcome::Result(16)), "gw-1");
        assert_eq!((r.event_name.as_str(), r.number, r.result), ("sq", 4, 16));
        let steps = r.log.unwrap().steps;
        let methods: Vec<_> = steps.iter().map(|s| s.method_name.as_str()).collect();
        assert_eq!(
            methods,
            ["gateway.receive", "processor.sq", "gateway.deliver"]
        );
        assert!(steps.iter().all(|s| s.metadata["seq"] == "10"));
        assert!(steps.iter().all(|s| s.service_name == SERVICE_NAME));
        assert_eq!(steps[1].instance_id, "proc-1");
        let ts = steps[1].timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (2, 1));
        assert!(!steps[2].metadata.contains_key("error"));
    }

    #[test]
    fn an_error_outcome_has_result_zero_and_the_error_last() {
        let r = result_response(result(Outcome::Error("integer overflow".into())), "gw");
        assert_eq!(r.result, 0);
        let steps = r.log.unwrap().steps;
        let last = steps.last().unwrap();
        assert_eq!(last.message, "integer overflow");
        assert_eq!(last.metadata["error"], "integer overflow");
    }

    #[test]
    fn a_refused_request_is_answered_with_the_error_last() {
        let rejection = Rejection {
            after_seq: 0,
            event_name: String::new(),
            number: 3,
            correlation_id: 0,
            message: "event_name must not be empty".into(),
            received_ns: 5,
        };
        let r = rejected_response(rejection, "gw");
        assert_eq!((r.number, r.result), (3, 0));
        let last = r.log.unwrap().steps.pop().unwrap();
        assert_eq!(last.metadata["error"], "event_name must not be empty");
        assert_eq!(last.message, "event_name must not be empty");
    }
}
