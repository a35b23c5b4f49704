//! `POST /ingest`: the data-flow-engine seed's event ingestion, one event or an array.
//!
//! Body: `{"sourceId": str, "timestamp": RFC 3339 or Unix seconds (absent = now),
//! "payload": {object}}` (`source_id` is accepted as an alias of `sourceId`; unknown
//! fields are rejected). Replies `202 {"accepted": n, "ids": […]}` once durable; an
//! array is all or nothing. Events are keyed by source id, so one source stays ordered.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use datanexus_model::{Event, time};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::convert::{JsonTimestamp, check_batch_len, convert_batch};
use crate::http::body::OneOrMany;
use crate::observe::Api;
use crate::{AppState, Result};

/// One event in a `POST /ingest` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct EventBody {
    #[serde(alias = "source_id")]
    source_id: String,
    #[serde(default)]
    timestamp: Option<JsonTimestamp>,
    payload: Map<String, Value>,
}

impl EventBody {
    pub(crate) fn into_event(self, now_ns: i64) -> datanexus_model::Result<Event> {
        Event::new(
            self.source_id,
            self.timestamp.map_or(now_ns, |t| t.0),
            self.payload,
        )
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    accepted: usize,
    ids: Vec<String>,
}

/// Handles `POST /ingest`.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    body: Result<OneOrMany<EventBody>>,
) -> Result<(StatusCode, Json<Accepted>)> {
    let outcome = append_events(&state, body).await;
    let ids = state.observe_ingest(Api::HttpIngest, outcome, Vec::len)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: ids.len(),
            ids,
        }),
    ))
}

async fn append_events(
    state: &AppState,
    body: Result<OneOrMany<EventBody>>,
) -> Result<Vec<String>> {
    let now_ns = time::now_ns();
    let events = match body? {
        OneOrMany::One(e) => vec![e.into_event(now_ns)?],
        OneOrMany::Many(items) => {
            check_batch_len(items.len(), state.options().max_batch_events, "events")?;
            convert_batch(items, "events", now_ns, |e, now_ns| e.into_event(now_ns))?
        }
    };
    state.ingestor().events(&events).await
}
