//! The request side of the client event streams, which both protocols share: the
//! client id, turning a request into a stream event, and [`RequestSide`] (reading
//! requests in batches, appending events durably through the ingestor, answering
//! refusals in order); each protocol supplies a [`StreamProtocol`]. The response side
//! — the registry of streams, replay, cursors — is `datanexus_results::Sessions`.

use datanexus_model::{Event, time};
use futures::FutureExt;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::observe::Api;
use crate::{AppState, Error, Result};
use datanexus_results::{Outgoing, Rejection, Reply, event_seq};

/// Most requests read from a stream and appended in one broker call.
const MAX_BATCH: usize = 512;

/// Shown to clients whose streams are closed by a shutdown.
pub(crate) const SHUTTING_DOWN: &str = "server shutting down; reconnect to resume";

pub(crate) use datanexus_ingest::stream::{check_client_id, stream_event};

/// The next requests: waits for one, then takes those already received (up to
/// [`MAX_BATCH`]). `None` once the client half-closed.
///
/// # Errors
/// The request stream failed (the client went away or sent garbage).
pub(crate) async fn next_batch<T>(
    requests: &mut Streaming<T>,
) -> Result<Option<Vec<T>>, tonic::Status> {
    let Some(first) = requests.message().await? else {
        return Ok(None);
    };
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        // `message` keeps its progress in the stream, so dropping it is safe.
        match requests.message().now_or_never() {
            Some(Ok(Some(next))) => batch.push(next),
            _ => break,
        }
    }
    Ok(Some(batch))
}

/// What one request of a stream asks the shared flow for.
pub(crate) enum Step<R> {
    /// Append this event; `R` is kept to answer the request once appended.
    Append(Event, R),
    /// Refuse in-band, in request order (after the events before it were appended).
    Refuse(Refusal<R>),
    /// Nothing to append or answer (handled on the spot, e.g. an acknowledgement).
    Done,
}

/// Why a request is refused.
pub(crate) enum Refusal<R> {
    /// The request could not be accepted (invalid, or the broker is overloaded).
    Request(R, Error),
    /// A protocol error not tied to an event (e.g. a second `Hello`).
    Message(String),
}

/// What differs between the two event-stream protocols on the request side: how a
/// request becomes a [`Step`] and how acceptances and refusals are answered. The flow
/// (runs of events appended in one broker call, refusals answered in order, overload
/// answered per request, broker failures ending the stream) is [`RequestSide`]'s.
pub(crate) trait StreamProtocol: Send + 'static {
    /// A message of the request stream.
    type Message: Send + 'static;
    /// What is kept of an appended request to answer it.
    type Request: Send + 'static;
    /// The API label of the appends.
    const API: Api;

    /// What `message`, received at `received_ns`, asks for.
    fn step(&mut self, message: Self::Message, received_ns: i64) -> Step<Self::Request>;

    /// The replies to the `requests` that were appended with `seqs` (one each).
    fn accepted(&self, requests: Vec<Self::Request>, seqs: &[u64]) -> Vec<Reply>;

    /// The in-band answer to a refusal; `last_seq` is the seq of the last event
    /// appended on the stream (the answer comes after its result).
    fn refused(
        &self,
        refusal: Refusal<Self::Request>,
        received_ns: i64,
        last_seq: u64,
    ) -> Rejection;
}

/// The request side of one stream: reads requests in batches, appends their events and
/// answers refusals in-band, in request order.
pub(crate) struct RequestSide<P> {
    pub(crate) protocol: P,
    pub(crate) state: AppState,
    pub(crate) client_id: String,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    /// The seq of the last event appended (0: none).
    pub(crate) last_seq: u64,
}

impl<P: StreamProtocol> RequestSide<P> {
    /// Reads requests in batches until the client half-closes — then tells the response
    /// side the seq of the last event, so it can end once that is answered — or either
    /// side goes away.
    pub(crate) async fn drive(mut self, mut requests: Streaming<P::Message>) {
        loop {
            let batch = tokio::select! {
                batch = next_batch(&mut requests) => batch,
                // The response side ended: stop reading, so the call can finish.
                () = self.tx.closed() => return,
            };
            match batch {
                Ok(Some(batch)) => {
                    if !self.handle(batch).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(client_id = %self.client_id, %status, "request stream failed");
                    return;
                }
            }
        }
        let finished = Outgoing::Finished {
            last_seq: self.last_seq,
        };
        let _ = self.tx.send(finished).await;
    }

    /// Handles one batch in order: runs of events are appended in one call; false when
    /// the stream is over.
    async fn handle(&mut self, batch: Vec<P::Message>) -> bool {
        let received_ns = time::now_ns();
        let mut run = Vec::new();
        for message in batch {
            match self.protocol.step(message, received_ns) {
                Step::Append(event, request) => run.push((event, request)),
                Step::Done => {}
                Step::Refuse(refusal) => {
                    if !self.append(std::mem::take(&mut run), received_ns).await
                        || !self.refuse(refusal, received_ns).await
                    {
                        return false;
                    }
                }
            }
        }
        self.append(run, received_ns).await
    }

    /// Appends a run of events and answers them; an overload refuses each of them
    /// in-band (the client resends), any other failure ends the stream with its status.
    async fn append(&mut self, run: Vec<(Event, P::Request)>, received_ns: i64) -> bool {
        if run.is_empty() {
            return true;
        }
        let (events, requests): (Vec<_>, Vec<_>) = run.into_iter().unzip();
        match append(&self.state, P::API, &events).await {
            Ok(seqs) => {
                self.last_seq = seqs.last().copied().unwrap_or(self.last_seq);
                for reply in self.protocol.accepted(requests, &seqs) {
                    if self.tx.send(Outgoing::Reply(reply)).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Err(Error::Overloaded(why)) => {
                for request in requests {
                    let refusal = Refusal::Request(request, Error::Overloaded(why.clone()));
                    if !self.refuse(refusal, received_ns).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                let _ = self.tx.send(Outgoing::Abort(e.stream_end())).await;
                false
            }
        }
    }

    async fn refuse(&self, refusal: Refusal<P::Request>, received_ns: i64) -> bool {
        let rejection = self.protocol.refused(refusal, received_ns, self.last_seq);
        let reply = Outgoing::Reply(Reply::Rejected(rejection));
        self.tx.send(reply).await.is_ok()
    }
}

/// Appends stream events durably; returns the seqs their results will carry.
///
/// # Errors
/// [`Error::Overloaded`] (retry later) and broker failures.
pub(crate) async fn append(state: &AppState, api: Api, events: &[Event]) -> Result<Vec<u64>> {
    let outcome = state.ingestor().stream_events(events).await;
    let ids = state.observe_ingest(api, outcome, Vec::len)?;
    Ok(ids.iter().map(event_seq).collect())
}
