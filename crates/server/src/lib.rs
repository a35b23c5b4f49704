//! The gRPC and HTTP front ends of Data Nexus: they authenticate, validate and normalise
//! what clients send into points and events, append them durably to the broker, and
//! answer only once they are durable. Backpressure is explicit: a bounded in-flight
//! budget and a concurrency limit make overload an immediate `429` /
//! `RESOURCE_EXHAUSTED`, never unbounded queueing. They also serve what the store holds:
//! REST queries and aggregates, datasets, the Prometheus exposition of the ingested
//! metrics (optionally drain-on-scrape from the broker), and the program's own metrics.
//!
//! It also serves the event streams (`nimbus.NimbusService`, `datanexus.v1.EventStream`):
//! stream events go through the pipeline like any event, and their results come back
//! through [`Sessions`], the registry of connected clients, which the pipeline's
//! forwarder routes results to (see [`AppState::sessions`]).
//!
//! [`run`] serves both APIs on listeners the caller binds (tests use port 0) until a
//! shutdown future resolves, then stops accepting and finishes in-flight requests within
//! `shutdown_timeout`; [`serve`] does the same with an [`AppState`] built beforehand
//! (to hand its [`Sessions`] to the pipeline first). [`http_app`] exposes the HTTP
//! router for `oneshot` tests.
//!
//! # Layout
//! By concept, with thin transport adapters; decoding request bodies and messages is
//! `datanexus_ingest`'s (no decoder lives here):
//! - `options.rs`: [`ServerOptions`] (built from `datanexus_config::Config`).
//! - `state.rs`: [`AppState`], shared by every handler.
//! - `error.rs`: [`Error`] and its one mapping to HTTP status and gRPC code.
//! - `auth.rs`: bearer tokens, compared in constant time (both APIs).
//! - `ingest.rs`: the one place points and events become broker records.
//! - `observe.rs`: telemetry of the front ends (ingest counts, errors by kind).
//! - `exposition.rs` + `exposition/`: pure Prometheus text rendering (format 0.0.4), and
//!   `exposition/drain.rs`, drain-on-scrape: the lazily subscribed consumer and the
//!   response body that acknowledges what it carried only once it was fully written.
//! - `streams.rs`: the request side of the client event streams, which both protocols
//!   share (the registry of streams — routing, replay, takeover, cursors — is
//!   `datanexus_results::Sessions`).
//! - `grpc.rs` + `grpc/`: tonic services, one file per protocol.
//! - `http.rs` + `http/`: axum routes, one file per endpoint family, and the layers.

mod auth;
mod budget;
mod error;
mod exposition;
mod grpc;
mod http;
mod ingest;
mod observe;
mod options;
mod state;
mod streams;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datanexus_broker::Broker;
use datanexus_results::Mailbox;
use datanexus_store::Store;
use datanexus_telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

pub use crate::error::{Error, Result};
pub use crate::http::{http_app, route_scopes};
pub use crate::options::{LOCAL_REPLY_TO, ServerOptions, TopicNames};
pub use crate::state::AppState;
pub use datanexus_results::Sessions;

/// The engines the front ends work over.
#[derive(Clone)]
pub struct Backends {
    /// Where ingested records are appended (and drained from by `GET /metrics?drain=true`).
    pub broker: Arc<dyn Broker>,
    /// Where queries, datasets and the exposition read from; `None` in a process that
    /// opened no store (its queries answer 503 naming the role that serves them).
    pub store: Option<Arc<dyn Store>>,
    /// The program's own metrics (served at `GET /internal/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// Where a reconnecting stream client's results are read back from; `None` means
    /// the store (one process). Separate gateway processes use a shared mailbox.
    pub mailbox: Option<Arc<dyn Mailbox>>,
    /// A control node's cluster store (also given as `store`): `GET /control/nodes`,
    /// its per-node state in `/ready` and `/internal/metrics`.
    pub control: Option<Arc<datanexus_store_cluster::ClusterStore>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("broker", &self.broker.name())
            .field("store", &self.store.as_ref().map_or("none", |s| s.name()))
            .finish_non_exhaustive()
    }
}

/// How often changed stream cursors are persisted.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Serves gRPC on `grpc` and HTTP on `http` until `shutdown` resolves; then stops
/// accepting, finishes in-flight requests and returns. That waits at most
/// `options.shutdown_timeout`; after that `run` returns without waiting for the
/// remaining requests (the process is expected to exit).
///
/// The topics must exist (`datanexus_pipeline::ensure_topology`).
///
/// # Errors
/// A topic does not exist, or a server fails (the other one is then shut down
/// too). Requests still running at the deadline are logged, not an error.
pub async fn run(
    grpc: TcpListener,
    http: TcpListener,
    backends: Backends,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = AppState::new(backends, options).await?;
    serve(grpc, http, state, shutdown).await
}

/// [`run`] over a state built beforehand with [`AppState::new`] (so that its
/// [`AppState::sessions`] can be given to the pipeline first). While serving, changed
/// stream cursors are persisted every second; on shutdown the event streams are closed
/// (`UNAVAILABLE`, clients reconnect and resume) and the cursors persisted once more.
///
/// # Errors
/// A server fails (the other one is then shut down too).
pub async fn serve(
    grpc: TcpListener,
    http: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop, stopped) = watch::channel(false);
    let signal = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means: stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (stop_persist, persist_stopped) = watch::channel(false);
    let persister = tokio::spawn(
        state
            .sessions()
            .persist_periodically(PERSIST_INTERVAL, persist_stopped),
    );
    let mut servers = JoinSet::new();
    servers.spawn(grpc::serve(grpc, state.clone(), signal(stopped.clone())));
    servers.spawn(http::serve(http, state.clone(), signal(stopped)));
    tracing::info!("serving gRPC and HTTP");

    let mut outcome = Ok(());
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested: finishing in-flight requests"),
        Some(joined) = servers.join_next() => {
            outcome = flatten(joined);
            tracing::error!(result = ?outcome, "a server stopped unexpectedly: shutting down the other");
        }
    }
    stop.send_replace(true);
    finish_in_flight(servers, &mut outcome, state.options().shutdown_timeout).await;
    state.leave_drain_group().await;
    stop_persist.send_replace(true);
    if let Err(e) = persister.await {
        tracing::error!(error = %e, "the cursor persister failed");
    }
    outcome
}

/// Waits for the servers to finish, at most `timeout`; keeps the first error.
async fn finish_in_flight(
    mut servers: JoinSet<Result<()>>,
    outcome: &mut Result<()>,
    timeout: Duration,
) {
    let finish = async {
        while let Some(joined) = servers.join_next().await {
            let result = flatten(joined);
            if outcome.is_ok() {
                *outcome = result;
            }
        }
    };
    if tokio::time::timeout(timeout, finish).await.is_err() {
        tracing::warn!(
            shutdown_timeout = ?timeout,
            "in-flight requests did not finish in time: dropping them"
        );
        servers.abort_all();
    }
}

fn flatten(joined: Result<Result<()>, JoinError>) -> Result<()> {
    joined.map_err(|e| Error::Internal(format!("server task failed: {e}")))?
}
