//! `POST /ingest`: the data-flow-engine seed's event ingestion, one event or an array.
//!
//! Body: see `datanexus_ingest::json` (`{"sourceId": str, "timestamp": RFC 3339 or
//! Unix seconds (absent = now), "payload": {object}}`; unknown fields are rejected). Replies `202 {"accepted": n, "ids": […]}` once durable; an
//! array is all or nothing. Events are keyed by source id, so one source stays ordered.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use datanexus_model::time;
use serde::Serialize;

use crate::http::body::JsonBody;
use crate::observe::Api;
use crate::{AppState, Result};

#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    accepted: usize,
    ids: Vec<String>,
}

/// Handles `POST /ingest`.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    body: Result<JsonBody>,
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

async fn append_events(state: &AppState, body: Result<JsonBody>) -> Result<Vec<String>> {
    let decoded = datanexus_ingest::endpoint::POST_INGEST(
        &body?.0,
        state.options().max_batch_events,
        time::now_ns(),
    )?;
    state.ingestor().events(&decoded.items).await
}
