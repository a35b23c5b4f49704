//! `POST /metrics`: the RaftMetrics seed's record call, one metric or an array.
//!
//! Body: see `datanexus_ingest::json` (`{"metric_name": str, "value": number}` plus
//! optional `labels`, `timestamp`, `type` and `help`; unknown fields are rejected).
//! Replies `200 {"success":true,"message":"metric recorded","id":…}` for one metric and
//! `200 {"success":true,"message":"recorded N metrics","ids":[…]}` for an array, once
//! durable; an array is all or nothing.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use datanexus_model::time;
use serde::Serialize;

use crate::http::body::JsonBody;
use crate::observe::Api;
use crate::{AppState, Error, Result};

#[derive(Serialize)]
struct Recorded {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
}

/// Handles `POST /metrics`.
pub(crate) async fn record(
    State(state): State<AppState>,
    body: Result<JsonBody>,
) -> Result<Response> {
    let outcome = record_points(&state, body).await;
    let (one, ids) = state.observe_ingest(Api::HttpMetrics, outcome, |(_, ids)| ids.len())?;
    let reply = if one {
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("broker returned no record id".into()))?;
        Recorded {
            success: true,
            message: "metric recorded".into(),
            id: Some(id),
            ids: None,
        }
    } else {
        Recorded {
            success: true,
            message: format!("recorded {} metrics", ids.len()),
            id: None,
            ids: Some(ids),
        }
    };
    Ok(Json(reply).into_response())
}

/// Decodes and appends the body; returns whether it was one metric, and the ids.
async fn record_points(state: &AppState, body: Result<JsonBody>) -> Result<(bool, Vec<String>)> {
    let options = state.options();
    let decoded = datanexus_ingest::endpoint::POST_METRICS(
        &body?.0,
        &options.limits,
        options.max_batch_metrics,
        time::now_ns(),
    )?;
    let ids = state.ingestor().points(&decoded.items).await?;
    Ok((decoded.one, ids))
}
