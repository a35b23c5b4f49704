//! [`AppState`]: what every handler of both APIs shares.

use std::sync::Arc;

use datanexus_broker::Broker;
use datanexus_results::StoreMailbox;
use datanexus_store::Store;
use datanexus_telemetry::Telemetry;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::exposition::drain::Drainer;
use crate::ingest::{Ingestor, TopicTarget};
use crate::{Backends, Error, Result, ServerOptions};
use datanexus_results::Sessions;

/// Shared state of the gRPC and HTTP front ends; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn Store>>,
    control: Option<Arc<datanexus_store_cluster::ClusterStore>>,
    byte_budget: Arc<crate::budget::ByteBudget>,
    telemetry: Arc<Telemetry>,
    ingestor: Ingestor,
    drainer: Drainer,
    auth: Auth,
    sessions: Arc<Sessions>,
    /// Registered database connections (`/db-connections/…`).
    connections: datanexus_export::Connections,
    /// Export jobs (`/exports`).
    exports: datanexus_export::Exports,
    /// Metric families announced by remote write metadata.
    announced: datanexus_ingest::remote_write::AnnouncedMetadata,
    /// This gateway's id in traces (`datanexus-<pid>`).
    instance_id: String,
    options: ServerOptions,
    /// Request slots shared by both APIs (`max_concurrent_requests`).
    requests: Arc<Semaphore>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("broker", &self.inner.broker.name())
            .field(
                "store",
                &self.inner.store.as_ref().map_or("none", |s| s.name()),
            )
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Reads the partition counts of the ingest topics (which must exist:
    /// `datanexus_pipeline::ensure_topology` creates them), loads the stream cursors
    /// from `options.state_dir`, and builds the state.
    ///
    /// # Errors
    /// The broker is unreachable, a topic does not exist, or the cursor file cannot be
    /// read.
    pub async fn new(backends: Backends, options: ServerOptions) -> Result<Self> {
        let Backends {
            broker,
            store,
            telemetry,
            mailbox,
            control,
        } = backends;
        let t = &options.topics;
        let metrics = TopicTarget {
            partitions: broker.partitions(&t.metrics).await?,
            name: t.metrics.clone(),
        };
        let events = TopicTarget {
            partitions: broker.partitions(&t.events).await?,
            name: t.events.clone(),
        };
        let ingestor = Ingestor::new(
            Arc::clone(&broker),
            metrics,
            events,
            options.max_inflight_records,
            &telemetry,
        );
        let drainer = Drainer::new(Arc::clone(&broker), Arc::clone(&telemetry), &options);
        let requests = Arc::new(Semaphore::new(
            options
                .max_concurrent_requests
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let auth = Auth::new(&options.auth_tokens);
        let mailbox = match (mailbox, &store) {
            (Some(mailbox), _) => mailbox,
            (None, Some(store)) => Arc::new(StoreMailbox::new(Arc::clone(store))) as _,
            (None, None) => {
                return Err(Error::Internal(
                    "stream replays need a mailbox or a store, and none was given".to_owned(),
                ));
            }
        };
        let sessions =
            Sessions::open(mailbox, Arc::clone(&telemetry), &options.session_options()).await?;
        let connections = datanexus_export::Connections::open(options.connections_file.clone())
            .map_err(|e| Error::Internal(format!("cannot open the connection registry: {e}")))?;
        let exports = datanexus_export::Exports::new(options.exports.clone(), store.clone());
        let state = AppState {
            inner: Arc::new(Shared {
                broker,
                store,
                control,
                byte_budget: Arc::new(crate::budget::ByteBudget::new(
                    options.max_inflight_bytes,
                    &telemetry,
                )),
                telemetry,
                ingestor,
                drainer,
                auth,
                sessions,
                connections,
                exports,
                announced: datanexus_ingest::remote_write::AnnouncedMetadata::default(),
                instance_id: format!("datanexus-{}", std::process::id()),
                options,
                requests,
            }),
        };
        // Export jobs kept from before a restart: listed again, the running ones
        // resumed in the background (their databases may take a while to answer).
        let recovering = state.clone();
        tokio::spawn(async move {
            let resumed = recovering.exports().recover(recovering.connections()).await;
            if !resumed.is_empty() {
                tracing::info!(jobs = ?resumed, "export jobs resumed");
            }
        });
        Ok(state)
    }

    /// The registered database connections.
    pub(crate) fn connections(&self) -> &datanexus_export::Connections {
        &self.inner.connections
    }

    /// The export jobs.
    pub(crate) fn exports(&self) -> &datanexus_export::Exports {
        &self.inner.exports
    }

    /// Metric families announced by remote write metadata.
    pub(crate) fn remote_write_metadata(
        &self,
    ) -> &datanexus_ingest::remote_write::AnnouncedMetadata {
        &self.inner.announced
    }

    /// The options the state was built with.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Leaves the drain consumer group (if a drain scrape ever joined it), so that its
    /// unacknowledged records go back to the group at once.
    pub(crate) async fn leave_drain_group(&self) {
        self.inner.drainer.close().await;
    }

    /// The client-stream registry: the [`ResultRouter`] to give the pipeline's
    /// forwarder, so that results reach the streams of this server.
    ///
    /// [`ResultRouter`]: datanexus_results::ResultRouter
    pub fn sessions(&self) -> Arc<Sessions> {
        Arc::clone(&self.inner.sessions)
    }

    pub(crate) fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    pub(crate) fn broker(&self) -> &dyn Broker {
        self.inner.broker.as_ref()
    }

    /// The store, or [`Error::NoStore`] in a process without one.
    pub(crate) fn store(&self) -> Result<&dyn Store> {
        self.inner.store.as_deref().ok_or(Error::NoStore)
    }

    /// The byte budget of request bodies and messages.
    pub(crate) fn byte_budget(&self) -> Arc<crate::budget::ByteBudget> {
        Arc::clone(&self.inner.byte_budget)
    }

    /// The cluster store of a control node (`--role control`).
    pub(crate) fn control(&self) -> Option<&datanexus_store_cluster::ClusterStore> {
        self.inner.control.as_deref()
    }

    /// The store as a shared handle (for work that must outlive a request).
    pub(crate) fn store_arc(&self) -> Result<Arc<dyn Store>> {
        self.inner.store.clone().ok_or(Error::NoStore)
    }

    /// The store, if this process opened one.
    pub(crate) fn local_store(&self) -> Option<&dyn Store> {
        self.inner.store.as_deref()
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    pub(crate) fn ingestor(&self) -> &Ingestor {
        &self.inner.ingestor
    }

    pub(crate) fn drainer(&self) -> &Drainer {
        &self.inner.drainer
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(crate) fn request_slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inner.requests)
    }
}
