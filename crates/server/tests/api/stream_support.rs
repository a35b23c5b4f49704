//! Fixtures of the event-stream tests: a server started with [`serve`] and the real
//! pipeline (processor + forwarder routing to the server's sessions) over an embedded
//! broker and store in a directory that survives restarts; nimbus and native clients.
//!
//! [`serve`]: datanexus_server::serve

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datanexus_broker::Broker;
use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_pipeline::{Pipeline, PipelineConfig};
use datanexus_proto::datanexus::v1::event_stream_client::EventStreamClient;
use datanexus_proto::datanexus::v1::{StreamRequest, StreamResponse};
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use datanexus_server::{AppState, Backends, ServerOptions};
use datanexus_store::Store;
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
use datanexus_telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// How long a test waits for anything before it fails.
pub(super) const DEADLINE: Duration = Duration::from_secs(30);

/// Waits for `condition` (polled every 20 ms), at most [`DEADLINE`].
pub(super) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server and the pipeline over backends in a directory.
pub(super) struct StreamServer {
    pub(super) broker: Arc<dyn Broker>,
    pub(super) store: Arc<dyn Store>,
    telemetry: Arc<Telemetry>,
    state: AppState,
    grpc_url: String,
    pipeline: Option<Pipeline>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<datanexus_server::Result<()>>,
}

impl StreamServer {
    pub(super) async fn start(dir: &Path, options: ServerOptions) -> StreamServer {
        let broker: Arc<dyn Broker> = Arc::new(
            EmbeddedBroker::open(&dir.join("broker"), EmbeddedOptions::default()).expect("broker"),
        );
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(&dir.join("store"), EmbeddedStoreOptions::default())
                .expect("store"),
        );
        let telemetry = Telemetry::new();
        let backends = Backends {
            broker: Arc::clone(&broker),
            store: Some(Arc::clone(&store)),
            telemetry: Arc::clone(&telemetry),
            mailbox: None,
            control: None,
        };
        super::support::topology(broker.as_ref(), &options).await;
        let state = AppState::new(backends, options).await.expect("state");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_url = format!("http://{}", grpc.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(datanexus_server::serve(grpc, http, state.clone(), shutdown));
        let mut server = StreamServer {
            broker,
            store,
            telemetry,
            state,
            grpc_url,
            pipeline: None,
            stop: Some(stop),
            task,
        };
        server.start_pipeline().await;
        server
    }

    pub(super) async fn start_pipeline(&mut self) {
        let topics = &self.state.options().topics;
        let config = PipelineConfig {
            metrics_topic: topics.metrics.clone(),
            events_topic: topics.events.clone(),
            results_topic: topics.results.clone(),
            dlq_topic: topics.dlq.clone(),
            processor_concurrency: 1,
            consumer_id: "stream-tests".into(),
            flush_interval: Duration::from_millis(50),
            ..PipelineConfig::from_config(&datanexus_config::Config::default())
        };
        let pipeline = Pipeline::start(
            Arc::clone(&self.broker),
            Some(Arc::clone(&self.store)),
            Arc::clone(&self.telemetry),
            config,
            Some(self.state.sessions()),
        )
        .await
        .expect("pipeline");
        self.pipeline = Some(pipeline);
    }

    pub(super) async fn stop_pipeline(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop().await.expect("pipeline stops cleanly");
        }
    }

    pub(super) fn state(&self) -> &AppState {
        &self.state
    }

    pub(super) async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.grpc_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// Records of the events topic not yet processed.
    pub(super) async fn unprocessed_events(&self) -> u64 {
        let lag = self.broker.lag("events", "processor").await.expect("lag");
        lag.iter().map(|p| p.lag).sum()
    }

    /// Results stored for `client`.
    pub(super) async fn stored_results(&self, client: &str) -> usize {
        let query = datanexus_store::ResultQuery {
            client_id: client.into(),
            after_seq: 0,
            limit: usize::MAX,
        };
        let page = self.store.results(&query).await.expect("results");
        page.results.len()
    }

    /// Stops the server, then the pipeline, the broker and the store.
    pub(super) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("clean shutdown");
        self.stop_pipeline().await;
        self.broker.stop().await.expect("broker stops");
        self.store.stop().await.expect("store stops");
    }
}

/// A nimbus `ProcessEvent` stream.
pub(super) struct NimbusConn {
    tx: Option<mpsc::Sender<EventRequest>>,
    responses: Streaming<EventResponse>,
}

impl NimbusConn {
    /// Opens a stream; `client_id` `None` sends no metadata.
    pub(super) async fn open(channel: Channel, client_id: Option<&str>) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(64);
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Some(id) = client_id {
            request
                .metadata_mut()
                .insert("client_id", id.parse().expect("ascii client id"));
        }
        let responses = NimbusServiceClient::new(channel)
            .process_event(request)
            .await?
            .into_inner();
        Ok(NimbusConn {
            tx: Some(tx),
            responses,
        })
    }

    pub(super) async fn send(&self, event_name: &str, number: i32) {
        let request = EventRequest {
            event_name: event_name.into(),
            number,
        };
        let tx = self.tx.as_ref().expect("not half-closed");
        tx.send(request).await.expect("request stream open");
    }

    /// Half-closes the request side.
    pub(super) fn close_send(&mut self) {
        self.tx = None;
    }

    /// The next message: a response, the end (`None`) or the final status.
    pub(super) async fn next(&mut self) -> Result<Option<EventResponse>, Status> {
        tokio::time::timeout(DEADLINE, self.responses.message())
            .await
            .expect("a response in time")
    }

    pub(super) async fn recv(&mut self) -> EventResponse {
        self.next()
            .await
            .expect("stream ok")
            .expect("stream still open")
    }
}

/// A native `EventStream.Stream`.
pub(super) struct NativeConn {
    tx: Option<mpsc::Sender<StreamRequest>>,
    responses: Streaming<StreamResponse>,
}

impl NativeConn {
    /// Opens a stream and sends `first`.
    pub(super) async fn open(channel: Channel, first: StreamRequest) -> Self {
        let (tx, rx) = mpsc::channel(64);
        tx.send(first).await.expect("queue the first message");
        let responses = EventStreamClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        NativeConn {
            tx: Some(tx),
            responses,
        }
    }

    pub(super) async fn send(&self, request: StreamRequest) {
        let tx = self.tx.as_ref().expect("not half-closed");
        tx.send(request).await.expect("request stream open");
    }

    pub(super) fn close_send(&mut self) {
        self.tx = None;
    }

    pub(super) async fn next(&mut self) -> Result<Option<StreamResponse>, Status> {
        tokio::time::timeout(DEADLINE, self.responses.message())
            .await
            .expect("a response in time")
    }
}
