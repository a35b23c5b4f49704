//! The worker node's side of a control node (`--role control`): its store API over
//! HTTP, `/internal/store/*` (paths and formats in `datanexus_store_cluster::wire`).
//! Every `serve` process with a store answers them; the control node is their only
//! intended caller, with a token of scope `admin` (they write and read the store
//! directly, past the log and any client's view).
//!
//! - `POST /internal/store/write`: a write batch → written, then the store flushed →
//!   `204` once durable (the control node acknowledges its log only then).
//! - `POST /internal/store/delete` (admin): the control node's rebalance deletes a
//!   series' samples up to a time once their new owner holds them.
//! - `POST /internal/store/query|aggregate|events|results` with the store's query as
//!   JSON, `GET /internal/store/datasets|latest` → the store's answer (an aggregate as
//!   its exact unfinished state, so the control node can merge nodes exactly).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datanexus_store::{AggregateQuery, EventQuery, ResultQuery, SeriesQuery};
use datanexus_store_cluster::rebalance::{DeleteAnswer, DeleteRequest};
use datanexus_store_cluster::wire::{self, Batch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::body::read_body;
use crate::{AppState, Error, Result};

/// Largest write batch accepted: the control node starts a new batch before one would
/// pass `MAX_BATCH_BYTES`, so only a batch of one record larger than that is bigger —
/// up to the largest record an ingest API takes (64 MiB leaves room for raised limits).
const MAX_BATCH_BODY: usize = 64 << 20;

/// Handles `POST /internal/store/write`. The write and the flush run in a task of
/// their own: a control node that gives up (its timeout) or a dropped connection must
/// not cancel a flush half-way.
pub(crate) async fn write(State(state): State<AppState>, request: Request) -> Result<Response> {
    let store = state.store_arc()?;
    let body = read_body(request, MAX_BATCH_BODY).await?;
    let batch = Batch::decode(&body).map_err(|e| Error::Invalid(e.to_string()))?;
    let written = tokio::spawn(async move {
        if !batch.results.is_empty() {
            store.write_results(&batch.results).await?;
        }
        if !batch.events.is_empty() {
            store.write_events(&batch.events).await?;
        }
        if !batch.points.is_empty() {
            store.write_points(&batch.points).await?;
        }
        store.flush().await
    });
    written
        .await
        .map_err(|e| Error::Internal(format!("store write task: {e}")))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Handles `POST /internal/store/query`.
pub(crate) async fn query(State(state): State<AppState>, request: Request) -> Result<Response> {
    let q: SeriesQuery = json_query(&state, request).await?;
    json(&state.store()?.query(&q).await?)
}

/// Handles `POST /internal/store/aggregate`.
pub(crate) async fn aggregate(State(state): State<AppState>, request: Request) -> Result<Response> {
    let q: AggregateQuery = json_query(&state, request).await?;
    let parts = state.store()?.aggregate_parts(&q).await?;
    let mut response = Body::from(parts.encode()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::PARTS_CONTENT_TYPE),
    );
    Ok(response)
}

/// Handles `POST /internal/store/events`.
pub(crate) async fn events(State(state): State<AppState>, request: Request) -> Result<Response> {
    let q: EventQuery = json_query(&state, request).await?;
    json(&state.store()?.events(&q).await?)
}

/// Handles `POST /internal/store/results`.
pub(crate) async fn results(State(state): State<AppState>, request: Request) -> Result<Response> {
    let q: ResultQuery = json_query(&state, request).await?;
    json(&state.store()?.results(&q).await?)
}

/// Handles `POST /internal/store/delete` (admin): deletes the samples of the series up
/// to a time, durably (the control node's rebalance, after the owner holds them).
pub(crate) async fn delete(State(state): State<AppState>, request: Request) -> Result<Response> {
    let q: DeleteRequest = json_query(&state, request).await?;
    let store = state.store_arc()?;
    let series = q.series.clone();
    // In a task of its own, like a write: never cancelled half-way.
    let deleted = tokio::spawn(async move { store.delete_series(&series).await })
        .await
        .map_err(|e| Error::Internal(format!("store delete task: {e}")))??;
    tracing::info!(
        series = q.series.len(),
        deleted,
        "series deleted (rebalance)"
    );
    json(&DeleteAnswer { deleted })
}

/// Handles `GET /internal/store/datasets`.
pub(crate) async fn datasets(State(state): State<AppState>) -> Result<Response> {
    json(&state.store()?.datasets().await?)
}

/// Handles `GET /internal/store/latest`.
pub(crate) async fn latest(State(state): State<AppState>) -> Result<Response> {
    json(&state.store()?.latest().await?)
}

async fn json_query<Q: DeserializeOwned>(state: &AppState, request: Request) -> Result<Q> {
    let body = read_body(request, state.options().max_http_body_bytes).await?;
    serde_json::from_slice(&body).map_err(|e| Error::Invalid(format!("invalid store query: {e}")))
}

fn json<T: Serialize>(value: &T) -> Result<Response> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Internal(format!("cannot encode a store answer: {e}")))?;
    let mut response = Body::from(bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
