//! Database connections (the large-dataset-delivery seed's paths), scope `admin`:
//!
//! - `POST /db-connections/register` with `{"connection_id", "db_type": "influx" |
//!   "postgres" | "datanexus", "url", "token", "org", "database", "username",
//!   "password"}` → `201` and the connection as listed, once its database answered
//!   with the credentials (`400` with the cause when it does not, `409` when the id is
//!   taken);
//! - `GET /db-connections/list` → `{"connections": [connection, …]}` sorted by id,
//!   without secrets (`has_password`, `has_token` say whether there are);
//! - `DELETE /db-connections/remove?connection_id=X` → `{"removed": connection}`
//!   (`404` when unknown).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use datanexus_export::{ConnectionInfo, ConnectionSpec};
use serde_json::{Value, json};

use crate::http::body::JsonBody;
use crate::http::params::Params;
use crate::{AppState, Error, Result};

/// How long registering waits for the database to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles `POST /db-connections/register`.
pub(crate) async fn register(
    State(state): State<AppState>,
    body: Result<JsonBody>,
) -> Result<(StatusCode, Json<ConnectionInfo>)> {
    let body = body?;
    let spec: ConnectionSpec = serde_json::from_slice(&body.0)
        .map_err(|e| Error::Invalid(format!("invalid connection: {e}")))?;
    let store = state.local_store();
    let info = state
        .connections()
        .register(spec, |spec| async move {
            datanexus_export::ping(&spec, store, PING_TIMEOUT).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Handles `GET /db-connections/list`.
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    params?.finish()?;
    let connections = state.connections().list().await;
    Ok(Json(json!({ "connections": connections })))
}

/// Handles `DELETE /db-connections/remove`.
pub(crate) async fn remove(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let mut params = params?;
    let id = params
        .string("connection_id")?
        .ok_or_else(|| Error::Invalid("missing parameter connection_id".to_owned()))?;
    params.finish()?;
    let removed = state.connections().remove(&id).await?;
    Ok(Json(json!({ "removed": removed })))
}
