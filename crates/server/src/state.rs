//! [`AppState`]: what every handler of both APIs shares.

use std::sync::Arc;

use datanexus_broker::Broker;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::ingest::{Ingestor, TopicTarget};
use crate::{Result, ServerOptions};

/// Shared state of the gRPC and HTTP front ends; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    broker: Arc<dyn Broker>,
    ingestor: Ingestor,
    auth: Auth,
    options: ServerOptions,
    /// Request slots shared by both APIs (`max_concurrent_requests`).
    requests: Arc<Semaphore>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("broker", &self.inner.broker.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Ensures the topics exist (`partitions` each, when created) and builds the state.
    ///
    /// # Errors
    /// The broker is unreachable, or a topic exists with a partition count it refuses.
    pub async fn new(broker: Arc<dyn Broker>, options: ServerOptions) -> Result<Self> {
        let t = &options.topics;
        for topic in [&t.metrics, &t.events, &t.results, &t.dlq] {
            broker.ensure_topic(topic, options.partitions).await?;
        }
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
        );
        let requests = Arc::new(Semaphore::new(
            options
                .max_concurrent_requests
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let auth = Auth::new(&options.auth_tokens);
        Ok(AppState {
            inner: Arc::new(Shared {
                broker,
                ingestor,
                auth,
                options,
                requests,
            }),
        })
    }

    /// The options the state was built with.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    pub(crate) fn broker(&self) -> &dyn Broker {
        self.inner.broker.as_ref()
    }

    pub(crate) fn ingestor(&self) -> &Ingestor {
        &self.inner.ingestor
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(crate) fn request_slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inner.requests)
    }
}
