//! The HTTP API (axum): ingest endpoints, queries, datasets, the Prometheus exposition,
//! the program's own metrics, health and readiness.
//!
//! Layers, outermost first (`GET /health` only gets the first two: liveness is never
//! authenticated, shed or timed out):
//! 0. every error response produced by an [`Error`] is counted in the telemetry
//!    (`errors{component, kind}`);
//! 1. every error response is JSON `{"error": "..."}` (also those produced by layers
//!    and routing, e.g. `405`, or `415` for an unsupported `Content-Encoding`);
//! 2. load shedding over a concurrency limit shared with gRPC
//!    (`max_concurrent_requests`): a request that finds no free slot gets `429` with
//!    `Retry-After: 1` at once instead of queueing;
//! 3. a request timeout (`request_timeout`, then `503`);
//! 4. bearer auth;
//! 5. gzip request decompression (not on `/api/v1/write`, whose bodies are snappy); the body limit (`max_http_body_bytes`, `413`) is
//!    enforced by the body extractor *after* decompression, so it caps the
//!    decompressed size too.
//!
//! # Layout
//! - `body.rs`: the body extractors (JSON content type, size limit) with our error shape.
//! - `params.rs`: the query-string extractor of the read endpoints.
//! - `metrics.rs`: `POST /metrics`. `events.rs`: `POST /ingest`.
//! - `write.rs`: `POST /write`, `POST /api/v2/write` (InfluxDB line protocol).
//! - `remote_write.rs`: `POST /api/v1/write` (Prometheus remote write 1.0, snappy;
//!   outside the gzip layer).
//! - `query.rs`: `GET /metrics/{name}`, `GET /metrics/{name}/aggregate`.
//! - `data.rs`: `GET /data`. `datasets.rs`: `GET /datasets/{list,detail,time-range}/`
//!   (the own store's, or a connection's), `GET /data/query-by-time/`.
//! - `exposition.rs`: `GET /metrics` (also `?drain=true`), `GET /internal/metrics`.
//! - `connections.rs`: `POST /db-connections/register`, `GET /db-connections/list`,
//!   `DELETE /db-connections/remove`.
//! - `exports.rs`: `POST /exports`, `GET /exports`, `GET|DELETE /exports/{id}`,
//!   `GET /exports/{id}/file`, the seed's `GET /data/export/`.
//! - `health.rs`: `GET /health`, `GET /ready`. `auth.rs`: the bearer middleware.

mod auth;
pub(crate) mod body;
mod connections;
mod control;
mod data;
mod datasets;
pub(crate) mod events;
mod exports;
mod exposition;
mod health;
pub(crate) mod metrics;
mod node;
mod params;
mod query;
mod remote_write;
mod write;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::handler::Handler;
use axum::http::{Method, Uri, header};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, post};
use datanexus_config::Scope;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, load_shed, timeout};
use tower_http::decompression::RequestDecompressionLayer;

use crate::budget;
use crate::error::json_error;
use crate::observe::count_http_errors;
use crate::{AppState, Error, Result};

/// The liveness path: outside auth and the limit layers, so probes carry no
/// credentials and an overloaded server is not mistaken for a dead one.
const HEALTH_PATH: &str = "/health";

/// One route: its method and path, the scope a token needs for it, its handler, and
/// whether its body is decompressed by the gzip layer (remote write decompresses its
/// own snappy body).
pub(crate) struct Route {
    /// The method.
    pub(crate) method: Method,
    /// The path pattern.
    pub(crate) path: &'static str,
    /// What a token must be allowed to do.
    pub(crate) scope: Scope,
    handler: MethodRouter<AppState>,
    decompress: bool,
    /// Accepts `partial=true` (a control node's answer without the nodes that did
    /// not answer).
    partial: bool,
    /// Its body takes bytes from the in-flight byte budget (the ingest routes).
    budget: bool,
}

/// The methods routes use.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Delete,
}

fn route<H, T>(verb: Verb, path: &'static str, scope: Scope, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let (method, handler) = match verb {
        Verb::Get => (Method::GET, get(handler)),
        Verb::Post => (Method::POST, post(handler)),
        Verb::Delete => (Method::DELETE, delete(handler)),
    };
    Route {
        method,
        path,
        scope,
        handler,
        decompress: true,
        partial: false,
        budget: scope == Scope::Ingest,
    }
}

/// Every guarded route, each with its scope: the only place routes are added, so a
/// route cannot exist without a scope (the README's endpoint table mirrors this list,
/// and a test walks it with tokens of every scope).
pub(crate) fn routes() -> Vec<Route> {
    use Scope::{Admin, Ingest, Query};
    use Verb::{Delete, Get, Post};
    use datanexus_store_cluster::wire;
    vec![
        route(Post, "/metrics", Ingest, metrics::record),
        partial(route(Get, "/metrics", Query, exposition::scrape)),
        partial(route(Get, "/metrics/{name}", Query, query::values)),
        partial(route(
            Get,
            "/metrics/{name}/aggregate",
            Query,
            query::aggregate,
        )),
        route(Post, "/ingest", Ingest, events::ingest),
        route(Post, "/write", Ingest, write::write),
        route(Post, "/api/v2/write", Ingest, write::write),
        Route {
            decompress: false,
            ..route(Post, "/api/v1/write", Ingest, remote_write::write)
        },
        partial(route(Get, "/data", Query, data::events)),
        partial(route(Get, "/datasets/list", Query, datasets::list)),
        partial(route(Get, "/datasets/list/", Query, datasets::list)),
        partial(route(Get, "/datasets/detail", Query, datasets::detail)),
        partial(route(Get, "/datasets/detail/", Query, datasets::detail)),
        partial(route(
            Get,
            "/datasets/time-range",
            Query,
            datasets::time_range,
        )),
        partial(route(
            Get,
            "/datasets/time-range/",
            Query,
            datasets::time_range,
        )),
        route(Get, "/internal/metrics", Query, exposition::internal),
        route(Get, "/ready", Query, health::ready),
        route(
            Post,
            "/db-connections/register",
            Admin,
            connections::register,
        ),
        route(Get, "/db-connections/list", Admin, connections::list),
        route(Delete, "/db-connections/remove", Admin, connections::remove),
        route(Get, "/data/query-by-time", Admin, datasets::query_by_time),
        route(Get, "/data/query-by-time/", Admin, datasets::query_by_time),
        route(Get, "/data/export", Admin, exports::seed_export),
        route(Get, "/data/export/", Admin, exports::seed_export),
        route(Post, "/exports", Admin, exports::start),
        route(Get, "/exports", Admin, exports::list),
        route(Get, "/exports/{id}", Admin, exports::status),
        route(Delete, "/exports/{id}", Admin, exports::cancel),
        route(Get, "/exports/{id}/file", Admin, exports::file),
        route(Get, "/control/nodes", Query, control::list),
        route(Post, "/control/nodes", Admin, control::replace),
        route(Post, wire::WRITE_PATH, Admin, node::write),
        route(Post, wire::QUERY_PATH, Admin, node::query),
        route(Post, wire::AGGREGATE_PATH, Admin, node::aggregate),
        route(Post, wire::EVENTS_PATH, Admin, node::events),
        route(Post, wire::RESULTS_PATH, Admin, node::results),
        route(Post, wire::DELETE_PATH, Admin, node::delete),
        route(Get, wire::DATASETS_PATH, Admin, node::datasets),
        route(Get, wire::LATEST_PATH, Admin, node::latest),
    ]
}

/// `route` with `partial=true` accepted (see [`control::partial_answers`]).
fn partial(route: Route) -> Route {
    Route {
        partial: true,
        ..route
    }
}

/// The method, path and scope of every guarded route (for tests and tools).
pub fn route_scopes() -> Vec<(Method, &'static str, Scope)> {
    routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.scope))
        .collect()
}

/// The HTTP application: routes and layers over `state`.
pub fn http_app(state: AppState) -> Router {
    let options = state.options();
    let timeout = options.request_timeout;
    let max_concurrent = options.max_concurrent_requests;
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| async move {
            layer_error(e, timeout, max_concurrent)
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(
            state.request_slots(),
        ))
        .timeout(timeout);
    let mut guarded = Router::new();
    for route in routes() {
        let scope = route.scope;
        let mut handler = route.handler;
        if route.budget {
            // Inside the decompression: the budget counts decompressed bytes.
            handler = handler.layer(from_fn_with_state(state.clone(), budget::budget_bodies));
        }
        if route.decompress {
            handler = handler.layer(RequestDecompressionLayer::new());
        }
        if route.partial {
            handler = handler.layer(from_fn(control::partial_answers));
        }
        let handler = handler.route_layer(from_fn(move |request, next| {
            auth::require_scope(scope, request, next)
        }));
        guarded = guarded.route(route.path, handler);
    }
    let guarded = guarded
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), auth::require_bearer))
        .layer(limits);
    Router::new()
        .route(HEALTH_PATH, get(health::health))
        .merge(guarded)
        .layer(map_response(ensure_json_error))
        .layer(from_fn_with_state(state.clone(), count_http_errors))
        .with_state(state)
}

/// Serves [`http_app`] on `listener` (over TLS when `[tls]` is set) until `shutdown`
/// resolves, then finishes the requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = state.options().tls.clone();
    let acceptor = match crate::tls::TlsFiles::load(&tls)? {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.rustls(&tls)?)),
        None => None,
    };
    let header_read_timeout = state.options().header_read_timeout;
    serve_connections(
        listener,
        acceptor,
        header_read_timeout,
        http_app(state),
        shutdown,
    )
    .await
}

/// Most time a client gets to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections (TCP_NODELAY; with `acceptor`, a TLS handshake within
/// [`HANDSHAKE_TIMEOUT`], so a client that never finishes holds nothing for long) and
/// serves each with HTTP/1.1 (headers within `header_read_timeout`, so a client that
/// trickles them or sends half a request and stalls is closed) or HTTP/2; on
/// `shutdown` it stops accepting and waits for the connections to finish their
/// requests.
async fn serve_connections(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;

    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Errors of the limit layers (load shedding, timeout) as our errors.
fn layer_error(e: BoxError, timeout: Duration, max_concurrent: usize) -> Error {
    if e.is::<load_shed::error::Overloaded>() {
        Error::Overloaded(format!("all {max_concurrent} request slots are busy"))
    } else if e.is::<timeout::error::Elapsed>() {
        Error::Timeout(timeout)
    } else {
        Error::Internal(e.to_string())
    }
}

async fn not_found(method: Method, uri: Uri) -> Error {
    Error::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Gives error responses that are not JSON yet (from routing or layers) the
/// `{"error": "..."}` shape, keeping their status and other headers (`Allow`, …).
async fn ensure_json_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = status
        .canonical_reason()
        .unwrap_or("request failed")
        .to_ascii_lowercase();
    let mut fixed = json_error(status, message);
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().append(name.clone(), value.clone());
        }
    }
    fixed
}
