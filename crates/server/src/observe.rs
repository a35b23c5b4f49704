//! Telemetry of the front ends (the families live in `datanexus_telemetry`):
//!
//! - `ingest_requests{api}`: every answered ingest request, success or not;
//!   `ingested_records{api}`: records acknowledged to clients. `api` is one of
//!   [`Api`]'s labels.
//! - `errors{component, kind}`: every error answered to a client, `kind` from the one
//!   status mapping ([`Error::kind_label`]). HTTP errors are counted once by the
//!   [`count_http_errors`] layer, whoever produced them (handler, extractor, auth or
//!   limit layer); gRPC errors are counted by the services and the auth interceptor.
//!   Components: `ingest`, `query`, `exposition`, `http` (anything else), `streams`
//!   (event streams: refused streams, `slow_client`, `replay_dropped`, `persist`).
//! - `queue_depth{queue="inflight_records"}` is kept by the ingestor.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use datanexus_telemetry::{Component, IngestLabels};

use crate::error::ErrorKindTag;
use crate::{AppState, Error, Result};

pub(crate) use datanexus_telemetry::Api;

impl AppState {
    /// Counts one answered ingest request of `api` and, when it succeeded, its records
    /// (`records` of the success value). gRPC errors are counted here; HTTP errors by
    /// [`count_http_errors`].
    pub(crate) fn observe_ingest<T>(
        &self,
        api: Api,
        outcome: Result<T>,
        records: impl FnOnce(&T) -> usize,
    ) -> Result<T> {
        let telemetry = self.telemetry();
        let labels = IngestLabels { api };
        telemetry.ingest_requests.get_or_create(&labels).inc();
        match &outcome {
            Ok(value) => {
                let n = u64::try_from(records(value)).unwrap_or(u64::MAX);
                telemetry.ingested_records.get_or_create(&labels).inc_by(n);
            }
            Err(e) if api.is_grpc() => self.count_error(Component::Ingest, e),
            Err(_) => {}
        }
        outcome
    }

    /// Counts an error of `component` by its kind.
    pub(crate) fn count_error(&self, component: Component, e: &Error) {
        self.telemetry().error(component, e.kind());
    }
}

/// The component an HTTP request belongs to, for `errors{component}`.
fn component(method: &Method, path: &str) -> Component {
    match (method, path) {
        (&Method::POST, "/metrics" | "/ingest") => Component::Ingest,
        (_, "/metrics" | "/internal/metrics") => Component::Exposition,
        (_, p) if p.starts_with("/metrics/") || p == "/data" || p.starts_with("/datasets") => {
            Component::Query
        }
        _ => Component::Http,
    }
}

/// Layer: counts every HTTP error response that an [`Error`] produced.
pub(crate) async fn count_http_errors(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let component = component(request.method(), request.uri().path());
    let response = next.run(request).await;
    if let Some(ErrorKindTag(kind)) = response.extensions().get::<ErrorKindTag>() {
        state.telemetry().error(component, *kind);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_attributed_to_components() {
        let component = |m, p| component(m, p).as_str();
        assert_eq!(component(&Method::POST, "/metrics"), "ingest");
        assert_eq!(component(&Method::POST, "/ingest"), "ingest");
        assert_eq!(component(&Method::GET, "/metrics"), "exposition");
        assert_eq!(component(&Method::GET, "/internal/metrics"), "exposition");
        assert_eq!(component(&Method::GET, "/metrics/cpu/aggregate"), "query");
        assert_eq!(component(&Method::GET, "/data"), "query");
        assert_eq!(component(&Method::GET, "/datasets/list/"), "query");
        assert_eq!(component(&Method::GET, "/nope"), "http");
    }

    #[test]
    fn api_labels_are_the_documented_ones() {
        let labels: Vec<_> = [
            Api::GrpcDataNexus,
            Api::GrpcRaftmetrics,
            Api::GrpcNimbus,
            Api::GrpcEventStream,
            Api::HttpMetrics,
            Api::HttpIngest,
        ]
        .map(Api::as_str)
        .to_vec();
        assert_eq!(
            labels,
            [
                "grpc_data_nexus",
                "grpc_raftmetrics",
                "grpc_nimbus",
                "grpc_event_stream",
                "http_metrics",
                "http_ingest"
            ]
        );
    }
}
