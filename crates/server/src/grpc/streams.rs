//! What the two event-stream protocols share: the client id, turning a request into a
//! stream event, reading requests in batches, and appending events durably.

use datanexus_model::event::MAX_SOURCE_ID_BYTES;
use datanexus_model::{Event, StreamEvent};
use futures::FutureExt;
use serde_json::json;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::observe::Api;
use crate::sessions::{Outgoing, event_seq};
use crate::{AppState, Error, Result};

/// Longest accepted `event_name`, in bytes.
const MAX_EVENT_NAME_BYTES: usize = 256;

/// Most requests read from a stream and appended in one broker call.
const MAX_BATCH: usize = 512;

/// Shown to clients whose streams are closed by a shutdown.
pub(crate) const SHUTTING_DOWN: &str = "server shutting down; reconnect to resume";

/// Checks a client id (from metadata or `Hello`).
///
/// # Errors
/// [`Error::Invalid`] when it is missing, empty or too long.
pub(super) fn check_client_id(client_id: Option<&str>, missing: &str) -> Result<String> {
    match client_id {
        None | Some("") => Err(Error::Invalid(missing.to_owned())),
        Some(id) if id.len() > MAX_SOURCE_ID_BYTES => Err(Error::Invalid(format!(
            "client_id is {} bytes, the limit is {MAX_SOURCE_ID_BYTES}",
            id.len()
        ))),
        Some(id) => Ok(id.to_owned()),
    }
}

/// The event a stream request becomes: source = the client, payload
/// `{"event_name", "number"}`, processed by the pipeline's processor `event_name`.
///
/// # Errors
/// [`Error::Invalid`] for an empty or too long event name.
pub(super) fn stream_event(
    client_id: &str,
    event_name: &str,
    number: i32,
    received_ns: i64,
    reply_to: &str,
) -> Result<Event> {
    if event_name.is_empty() {
        return Err(Error::Invalid("event_name must not be empty".into()));
    }
    if event_name.len() > MAX_EVENT_NAME_BYTES {
        return Err(Error::Invalid(format!(
            "event_name is {} bytes, the limit is {MAX_EVENT_NAME_BYTES}",
            event_name.len()
        )));
    }
    let payload = json!({ "event_name": event_name, "number": number });
    let payload = payload.as_object().cloned().unwrap_or_default();
    let mut event = Event::new(client_id.to_owned(), received_ns, payload)?;
    event.stream = Some(StreamEvent {
        event_name: event_name.to_owned(),
        number,
        reply_to: reply_to.to_owned(),
    });
    Ok(event)
}

/// The next requests: waits for one, then takes those already received (up to
/// [`MAX_BATCH`]). `None` once the client half-closed.
///
/// # Errors
/// The request stream failed (the client went away or sent garbage).
pub(super) async fn next_batch<T>(
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

/// The request side of a stream, per protocol.
pub(super) trait Inbound<T>: Send + 'static {
    /// The response side's sender (closed once the response stream is dropped).
    fn tx(&self) -> &mpsc::Sender<Outgoing>;
    /// The client, for logs.
    fn client_id(&self) -> &str;
    /// The seq of the last event appended (0: none).
    fn last_seq(&self) -> u64;
    /// Handles one batch in order; false when the stream is over.
    fn handle(&mut self, batch: Vec<T>) -> impl Future<Output = bool> + Send;
}

/// Reads requests in batches until the client half-closes — then tells the response
/// side the seq of the last event, so it can end once that is answered — or either side
/// goes away.
pub(super) async fn drive<T: Send + 'static>(
    mut inbound: impl Inbound<T>,
    mut requests: Streaming<T>,
) {
    loop {
        let batch = tokio::select! {
            batch = next_batch(&mut requests) => batch,
            // The response side ended: stop reading, so the call can finish.
            () = inbound.tx().closed() => return,
        };
        match batch {
            Ok(Some(batch)) => {
                if !inbound.handle(batch).await {
                    return;
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(client_id = %inbound.client_id(), %status, "request stream failed");
                return;
            }
        }
    }
    let finished = Outgoing::Finished {
        last_seq: inbound.last_seq(),
    };
    let _ = inbound.tx().send(finished).await;
}

/// Appends stream events durably; returns the seqs their results will carry.
///
/// # Errors
/// [`Error::Overloaded`] (retry later) and broker failures.
pub(super) async fn append(state: &AppState, api: Api, events: &[Event]) -> Result<Vec<u64>> {
    let outcome = state.ingestor().stream_events(events).await;
    let ids = state.observe_ingest(api, outcome, Vec::len)?;
    Ok(ids.iter().map(event_seq).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_and_long_client_ids_are_rejected() {
        let missing = "missing client_id metadata";
        for id in [None, Some("")] {
            let e = check_client_id(id, missing).unwrap_err();
            assert_eq!(e.to_string(), missing);
        }
        let long = "x".repeat(MAX_SOURCE_ID_BYTES + 1);
        assert!(check_client_id(Some(&long), missing).is_err());
        assert_eq!(check_client_id(Some("c1"), missing).unwrap(), "c1");
    }

    #[test]
    fn requests_become_stream_events_for_the_pipeline() {
        let e = stream_event("c1", "sq", 7, 42, "gw-a").unwrap();
        assert_eq!(e.source_id, "c1");
        assert_eq!(e.timestamp_ns, 42);
        assert_eq!(e.payload["event_name"], "sq");
        assert_eq!(e.payload["number"], 7);
        let stream = e.stream.unwrap();
        assert_eq!(
            (
                stream.event_name.as_str(),
                stream.number,
                stream.reply_to.as_str()
            ),
            ("sq", 7, "gw-a")
        );
        let empty = stream_event("c1", "", 7, 42, "gw-a").unwrap_err();
        assert_eq!(empty.to_string(), "event_name must not be empty");
    }
}
