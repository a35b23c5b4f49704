//! `GET /health` (liveness: the process serves requests; never behind auth) and
//! `GET /ready` (readiness: the broker is reachable and writable).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datanexus_broker::ErrorKind;
use serde_json::json;

use crate::AppState;
use crate::error::json_error;

/// Handles `GET /health`.
pub(crate) async fn health() -> Response {
    Json(json!({ "status": "healthy", "message": "datanexus is operational" })).into_response()
}

/// Handles `GET /ready`: 200 when the broker is ready, else 503 with the reason.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let broker = state.broker();
    match broker.ready().await {
        Ok(()) => Json(json!({ "status": "ready", "broker": broker.name() })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let reason = match e.kind() {
                ErrorKind::Unavailable | ErrorKind::Closed => e.to_string(),
                _ => "broker failure (see server log)".to_owned(),
            };
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            )
        }
    }
}
