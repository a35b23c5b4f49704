//! Stream requests (`nimbus.EventRequest`, `datanexus.v1.Event`, after tonic decoded
//! them): the client id of a stream and the event a request becomes.

use datanexus_model::event::MAX_SOURCE_ID_BYTES;
use datanexus_model::{Event, StreamEvent};
use serde_json::json;

use crate::{Error, Result};

/// Longest accepted `event_name`, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 256;

/// Checks a client id (from metadata or `Hello`).
///
/// # Errors
/// [`Error::Invalid`] when it is missing, empty or too long.
pub fn check_client_id(client_id: Option<&str>, missing: &str) -> Result<String> {
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
pub fn stream_event(
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
