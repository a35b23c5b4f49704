//! `GET /health` (liveness: the process serves requests; never behind auth) and
//! `GET /ready` (readiness: the broker and the store are reachable).

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

/// Handles `GET /ready`: 200 when the broker and the store are ready, else 503 with
/// the reason.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let broker = state.broker();
    if let Err(e) = broker.ready().await {
        tracing::warn!(error = %e, "readiness check failed (broker)");
        let reason = match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Closed => e.to_string(),
            _ => "broker failure (see server log)".to_owned(),
        };
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        );
    }
    let Some(store) = state.local_store() else {
        return Json(json!({ "status": "ready", "broker": broker.name(), "store": "none" }))
            .into_response();
    };
    if let Err(e) = store.ready().await {
        tracing::warn!(error = %e, "readiness check failed (store)");
        let reason = if e.is_retryable() || matches!(e, datanexus_store::Error::Closed) {
            e.to_string()
        } else {
            "store failure (see server log)".to_owned()
        };
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        );
    }
    if let Some(control) = state.control() {
        // Ready while nodes are down (the log holds their records): their state and
        // backlog are listed, and the node list is served here too.
        // What the control node knows, without calling the nodes (a probe must be fast).
        let nodes = crate::http::control::nodes_json(control, false).await;
        return Json(json!({
            "status": "ready",
            "broker": broker.name(),
            "store": store.name(),
            "nodes": nodes["nodes"],
        }))
        .into_response();
    }
    Json(json!({ "status": "ready", "broker": broker.name(), "store": store.name() }))
        .into_response()
}
