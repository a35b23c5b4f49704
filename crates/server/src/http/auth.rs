//! Bearer-token middleware: when tokens are configured, every request it guards needs
//! `Authorization: Bearer <token>`, else `401` with `WWW-Authenticate: Bearer`. It
//! guards every route but `GET /health` (see `http.rs`).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Rejects requests without an accepted token.
pub(crate) async fn require_bearer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let auth = state.auth();
    if !auth.is_enabled() {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.check(header) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
