//! The gRPC API (tonic), all services on one port:
//! `data_nexus.MetricsService`, `raftmetrics.v1.MetricsService`,
//! `nimbus.NimbusService`, `datanexus.v1.EventStream`, `grpc.health.v1.Health` and
//! server reflection (`grpc.reflection.v1`).
//!
//! - Decoded messages are limited to `max_grpc_message_bytes` (default 16 MiB; tonic's
//!   own default of 4 MiB is too small for large batches); gzip requests are accepted.
//! - Bearer auth (`authorization: Bearer <token>` metadata) guards every service but
//!   health, which probes call without credentials. Off when no tokens are configured.
//! - Load shedding over the concurrency limit shared with HTTP answers
//!   `RESOURCE_EXHAUSTED` at once when all request slots are busy; each request has a
//!   deadline of `request_timeout` (`CANCELLED` when exceeded).
//! - Health reports every service `SERVING` while running and `NOT_SERVING` once
//!   shutdown begins (in-flight requests still finish).
//!
//! # Layout
//! - `data_nexus.rs`, `raftmetrics.rs`, `nimbus.rs`: one file per seed service.
//! - `event_stream.rs`: the native acknowledged event stream (what both stream
//!   protocols share is `crate::streams`).

pub(crate) mod data_nexus;
mod event_stream;
mod nimbus;
mod raftmetrics;

use std::future::Future;

use datanexus_config::Scope;
use datanexus_proto::data_nexus::metrics_service_server::MetricsServiceServer as DataNexusServer;
use datanexus_proto::datanexus::v1::event_stream_server::EventStreamServer;
use datanexus_proto::nimbus::nimbus_service_server::NimbusServiceServer;
use datanexus_proto::raftmetrics::v1::metrics_service_server::MetricsServiceServer as RaftMetricsServer;
use datanexus_telemetry::Component;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tonic_reflection::server::v1::{ReflectionService, ServerReflection, ServerReflectionServer};

use self::data_nexus::DataNexusService;
use self::event_stream::NativeStreams;
use self::nimbus::NimbusStreams;
use self::raftmetrics::RaftMetricsService;
use crate::{AppState, Error, Result};

const DATA_NEXUS: &str = <DataNexusServer<DataNexusService> as NamedService>::NAME;
const RAFTMETRICS: &str = <RaftMetricsServer<RaftMetricsService> as NamedService>::NAME;
const NIMBUS: &str = <NimbusServiceServer<NimbusStreams> as NamedService>::NAME;
const EVENT_STREAM: &str = <EventStreamServer<NativeStreams> as NamedService>::NAME;

/// Serves the gRPC services on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let options = state.options();
    let max_message = options.max_grpc_message_bytes;
    // Every service ingests (the streams append events); reflection only describes them.
    let auth = GrpcAuth(state.clone(), Some(Scope::Ingest));
    let any_token = GrpcAuth(state.clone(), None);
    let data_nexus = DataNexusServer::new(DataNexusService::new(state.clone()))
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let raftmetrics = RaftMetricsServer::new(RaftMetricsService::new(state.clone()))
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let nimbus = NimbusServiceServer::new(NimbusStreams::new(state.clone()))
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let event_stream = EventStreamServer::new(NativeStreams::new(state.clone()))
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let reflection = reflection_service()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in SERVICES {
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let limits =
        ServiceBuilder::new()
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                state.request_slots(),
            ));
    let mut builder = Server::builder();
    if let Some(files) = crate::tls::TlsFiles::load(&options.tls)? {
        builder = builder.tls_config(files.tonic())?;
    }
    builder
        .timeout(options.request_timeout)
        .layer(limits)
        .add_service(health)
        .add_service(InterceptedService::new(data_nexus, auth.clone()))
        .add_service(InterceptedService::new(raftmetrics, auth.clone()))
        .add_service(InterceptedService::new(nimbus, auth.clone()))
        .add_service(InterceptedService::new(event_stream, auth.clone()))
        .add_service(InterceptedService::new(reflection, any_token))
        .serve_with_incoming_shutdown(
            nodelay(TcpListenerStream::new(listener)),
            not_serving_after(shutdown, reporter, state.clone()),
        )
        .await?;
    Ok(())
}

/// The services served here (besides health and reflection).
const SERVICES: [&str; 4] = [DATA_NEXUS, RAFTMETRICS, NIMBUS, EVENT_STREAM];

/// Reflection over the descriptors of every message, listing the services served here.
fn reflection_service() -> Result<ServerReflectionServer<impl ServerReflection>> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(datanexus_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(DATA_NEXUS)
        .with_service_name(RAFTMETRICS)
        .with_service_name(NIMBUS)
        .with_service_name(EVENT_STREAM)
        .with_service_name(<HealthServer<HealthService> as NamedService>::NAME)
        .with_service_name(<ServerReflectionServer<ReflectionService> as NamedService>::NAME)
        .build_v1()
        .map_err(|e| Error::Internal(format!("cannot build the reflection service: {e}")))
}

/// The bearer-auth interceptor: a token with `scope` (any valid token when `None`);
/// failures are counted as `errors{component="ingest"}`.
#[derive(Clone)]
struct GrpcAuth(AppState, Option<Scope>);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let checked = self
            .0
            .auth()
            .check(header)
            .and_then(|granted| match self.1 {
                Some(scope) => granted.require(scope),
                None => Ok(()),
            });
        if let Err(e) = checked {
            self.0.count_error(Component::Ingest, &e);
            return Err(e.into());
        }
        Ok(request)
    }
}

/// Resolves with `shutdown`, after marking every service `NOT_SERVING` and closing the
/// event streams (`UNAVAILABLE`: reconnect to resume), which would otherwise keep the
/// server waiting for them until `shutdown_timeout`.
async fn not_serving_after(
    shutdown: impl Future<Output = ()>,
    reporter: HealthReporter,
    state: AppState,
) {
    shutdown.await;
    let closing = datanexus_results::StreamEnd::new(
        datanexus_results::EndCode::Unavailable,
        crate::streams::SHUTTING_DOWN,
    );
    state.sessions().close_all(&closing).await;
    for service in std::iter::once("").chain(SERVICES) {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}

/// Sets `TCP_NODELAY` on every accepted connection: without it Nagle's algorithm and
/// delayed ACKs add ~40 ms to each unary round trip (measured: 77k → 300k metrics/s).
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|conn| {
        conn.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}
