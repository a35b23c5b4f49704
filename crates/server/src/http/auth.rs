//! Bearer-token middleware: when tokens are configured, every request it guards needs
//! `Authorization: Bearer <token>`, else `401` with `WWW-Authenticate: Bearer`; what the
//! token may do is handed to the route's scope check ([`require_scope`]), which
//! answers `403` for a valid token without the route's scope. It guards every route but
//! `GET /health` (see `http.rs`, where each route names its scope).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datanexus_config::Scope;

use crate::AppState;
use crate::auth::Granted;

/// Rejects requests without an accepted token; passes on what the token may do.
pub(crate) async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match state.auth().check(header) {
        Ok(granted) => {
            request.extensions_mut().insert(granted);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Rejects requests whose token lacks `scope` (a route layer, after
/// [`require_bearer`]; a request that did not pass it has no scope at all).
pub(crate) async fn require_scope(scope: Scope, request: Request, next: Next) -> Response {
    let granted = request
        .extensions()
        .get::<Granted>()
        .copied()
        .unwrap_or(Granted::NONE);
    match granted.require(scope) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
