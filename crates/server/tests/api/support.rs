//! Fixtures: an embedded broker and an embedded store in a tempdir, a running server,
//! HTTP request helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_broker::{Broker, ConsumerOptions, Delivery};
use datanexus_server::{AppState, Backends, ServerOptions, http_app};
use datanexus_store::Store;
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
use datanexus_telemetry::Telemetry;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub(super) const TOKEN: &str = "test-token-1";

/// The configuration's defaults, cursors in memory (topics get 2 partitions, see
/// [`topology`]).
pub(super) fn options() -> ServerOptions {
    ServerOptions {
        state_dir: None,
        connections_file: None,
        exports: datanexus_export::ExportOptions::default(),
        ..ServerOptions::from(&datanexus_config::Config::default())
    }
}

/// Creates the topics (2 partitions each) and groups of `options`, as `serve` does
/// before the server starts.
pub(super) async fn topology(broker: &dyn Broker, options: &ServerOptions) {
    let mut config =
        datanexus_pipeline::PipelineConfig::from_config(&datanexus_config::Config::default());
    let topics = &options.topics;
    config.metrics_topic = topics.metrics.clone();
    config.events_topic = topics.events.clone();
    config.results_topic = topics.results.clone();
    config.dlq_topic = topics.dlq.clone();
    datanexus_pipeline::ensure_topology(broker, &config, 2)
        .await
        .expect("topics and groups");
}

pub(super) fn with_auth(options: ServerOptions) -> ServerOptions {
    ServerOptions {
        auth_tokens: vec!["other-token".into(), TOKEN.into()],
        ..options
    }
}

/// An embedded broker and an embedded store in a fresh tempdir (kept alive by the
/// returned guard), and a fresh telemetry registry.
pub(super) fn backends() -> (TempDir, Backends) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::open(&dir.path().join("broker"), EmbeddedOptions::default())
        .expect("open embedded broker");
    let store = EmbeddedStore::open(&dir.path().join("store"), EmbeddedStoreOptions::default())
        .expect("open embedded store");
    let backends = Backends {
        broker: Arc::new(broker),
        store: Some(Arc::new(store)),
        telemetry: Telemetry::new(),
        mailbox: None,
        control: None,
    };
    (dir, backends)
}

/// The HTTP app over fresh backends.
pub(super) async fn app(options: ServerOptions) -> (TempDir, Arc<dyn Broker>, Router) {
    let (dir, backends, app) = app_with(options).await;
    (dir, backends.broker, app)
}

/// The HTTP app over fresh backends, with the backends.
pub(super) async fn app_with(options: ServerOptions) -> (TempDir, Backends, Router) {
    let (dir, backends) = backends();
    topology(backends.broker.as_ref(), &options).await;
    let state = AppState::new(backends.clone(), options)
        .await
        .expect("state");
    (dir, backends, http_app(state))
}

/// Writes `points` to the store directly (the pipeline is not under test here).
pub(super) async fn store_points(
    store: Option<&Arc<dyn Store>>,
    points: &[datanexus_model::Point],
) {
    let store = store.expect("the test server has a store");
    store.write_points(points).await.expect("write points");
}

/// Every record of `topic`, read back through a consumer group.
pub(super) async fn read_all(broker: &dyn Broker, topic: &str, expected: usize) -> Vec<Delivery> {
    let consumer = broker
        .subscribe(topic, "test-reader", "c1", ConsumerOptions::default())
        .await
        .expect("subscribe");
    let mut out = Vec::new();
    while out.len() < expected {
        let batch = consumer
            .poll(expected, std::time::Duration::from_secs(5))
            .await
            .expect("poll");
        assert!(
            !batch.is_empty(),
            "only {} of {expected} records in {topic}",
            out.len()
        );
        out.extend(batch);
    }
    out
}

/// A server started with [`datanexus_server::run`] on port 0.
pub(super) struct Running {
    pub(super) grpc_url: String,
    pub(super) http_addr: SocketAddr,
    pub(super) broker: Arc<dyn Broker>,
    pub(super) telemetry: Arc<Telemetry>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<datanexus_server::Result<()>>,
    _dir: TempDir,
}

impl Running {
    pub(super) async fn start(options: ServerOptions) -> Running {
        let (dir, backends) = backends();
        topology(backends.broker.as_ref(), &options).await;
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_url = format!("http://{}", grpc.local_addr().expect("addr"));
        let http_addr = http.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(datanexus_server::run(
            grpc,
            http,
            backends.clone(),
            options,
            shutdown,
        ));
        Running {
            grpc_url,
            http_addr,
            broker: backends.broker,
            telemetry: backends.telemetry,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub(super) async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.grpc_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// Resolves the shutdown future and waits for `run` to return.
    pub(super) async fn shutdown(mut self) -> datanexus_server::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).expect("server still running");
        }
        (&mut self.task).await.expect("server task")
    }
}

pub(super) fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request")
}

pub(super) fn post_json(path: &str, json: &str) -> Request<Body> {
    post(path, "application/json", json.to_owned())
}

pub(super) fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

pub(super) fn bearer(mut request: Request<Body>, token: &str) -> Request<Body> {
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Sends `request` and returns the status, headers and the body as text.
pub(super) async fn send_text(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8 body");
    (parts.status, parts.headers, text)
}

/// Sends `request` and returns the status, headers and JSON body.
pub(super) async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} body is not JSON ({e}): {:?}",
            parts.status,
            String::from_utf8_lossy(&bytes)
        )
    });
    (parts.status, parts.headers, json)
}

/// The `error` message of an error body.
pub(super) fn error_of(json: &serde_json::Value) -> &str {
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {json}"))
}

/// A broker whose backend is unreachable: topic management works (so the state can be
/// built), `ready` and `produce` fail with `Unavailable`.
pub(super) struct Unavailable(pub(super) Arc<dyn Broker>);

#[async_trait::async_trait]
impl Broker for Unavailable {
    fn name(&self) -> &'static str {
        "unavailable"
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> datanexus_broker::Result<()> {
        self.0.ensure_topic(topic, partitions).await
    }

    async fn partitions(&self, topic: &str) -> datanexus_broker::Result<u32> {
        self.0.partitions(topic).await
    }

    async fn produce(
        &self,
        _topic: &str,
        _records: Vec<datanexus_broker::ProduceRecord>,
    ) -> datanexus_broker::Result<Vec<datanexus_broker::RecordId>> {
        Err(datanexus_broker::Error::Unavailable("disk detached".into()))
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        options: ConsumerOptions,
    ) -> datanexus_broker::Result<Box<dyn datanexus_broker::Consumer>> {
        self.0.subscribe(topic, group, consumer, options).await
    }

    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> datanexus_broker::Result<Vec<datanexus_broker::PartitionLag>> {
        self.0.lag(topic, group).await
    }

    async fn ready(&self) -> datanexus_broker::Result<()> {
        Err(datanexus_broker::Error::Unavailable("disk detached".into()))
    }

    async fn enforce_retention(&self) -> datanexus_broker::Result<()> {
        self.0.enforce_retention().await
    }

    async fn stop(&self) -> datanexus_broker::Result<()> {
        self.0.stop().await
    }
}
