//! Drain-on-scrape (`GET /metrics?drain=true`, the Data Nexus seed's semantics) without
//! losing undelivered data.
//!
//! - The first drain scrape subscribes to the metrics topic as consumer group
//!   `drain_group` (consumer id `exposition-<pid>`); the consumer is kept for later
//!   scrapes and leaves the group when the server stops.
//! - A scrape polls what is available, at most [`MAX_DRAIN_RECORDS`] records, waiting at
//!   most [`FIRST_POLL_WAIT`] when nothing is.
//! - The polled records are acknowledged only once the response body was fully written
//!   (the body stream is polled past its last chunk: every byte was handed to the
//!   connection). A body dropped earlier (client gone, connection reset) gives them back
//!   at once (`nack`), so the next drain scrape renders them again. So does a body that
//!   is not finished within `request_timeout` (a client that stopped reading), so that it
//!   cannot hold the drain forever.
//! - One drain scrape at a time: a second concurrent one is refused with `429`.
//! - Records that do not decode as points can never be rendered: they are acknowledged
//!   with the others, logged and counted (`errors{component="exposition",
//!   kind="invalid_input"}`).
//!
//! Delivery stays at-least-once: a sample may be rendered twice (e.g. when the lease
//! expired meanwhile and the acknowledgement is refused), never lost.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use datanexus_broker::{Broker, Consumer, ConsumerOptions, RecordId};
use datanexus_model::Point;
use datanexus_model::codec::decode_point;
use datanexus_telemetry::{Component, ErrorKind, Telemetry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{Error, Result, ServerOptions};

/// Most records one drain scrape renders.
pub(crate) const MAX_DRAIN_RECORDS: usize = 100_000;

/// How long a drain scrape waits for records when none are available.
pub(crate) const FIRST_POLL_WAIT: Duration = Duration::from_millis(100);

/// Size of the body chunks of a drain response.
const CHUNK_BYTES: usize = 64 * 1024;

/// The drain consumer (subscribed lazily) and the one-scrape-at-a-time permit.
pub(crate) struct Drainer {
    broker: Arc<dyn Broker>,
    telemetry: Arc<Telemetry>,
    topic: String,
    group: String,
    consumer_options: ConsumerOptions,
    body_timeout: Duration,
    consumer: tokio::sync::Mutex<Option<Arc<dyn Consumer>>>,
    exclusive: Arc<Semaphore>,
}

/// The points of one drain scrape and the lease on their records.
pub(crate) struct Drained {
    pub(crate) points: Vec<Point>,
    pub(crate) lease: DrainLease,
}

/// Records polled by a drain scrape, not yet settled. Dropping it unsettled gives them
/// back (`nack`, in a spawned task) and only then frees the drain for the next scrape.
pub(crate) struct DrainLease {
    consumer: Arc<dyn Consumer>,
    ids: Vec<RecordId>,
    exclusive: Option<OwnedSemaphorePermit>,
}

impl Drainer {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        telemetry: Arc<Telemetry>,
        options: &ServerOptions,
    ) -> Self {
        // The lease must outlive the longest body we wait for, or acks would be refused.
        let lease = options.request_timeout + Duration::from_secs(30);
        Drainer {
            broker,
            telemetry,
            topic: options.topics.metrics.clone(),
            group: options.drain_group.clone(),
            consumer_options: ConsumerOptions {
                lease_timeout: lease,
                session_timeout: lease,
            },
            body_timeout: options.request_timeout,
            consumer: tokio::sync::Mutex::new(None),
            exclusive: Arc::new(Semaphore::new(1)),
        }
    }

    /// Polls what is available for the drain group.
    ///
    /// # Errors
    /// [`Error::Overloaded`] while another drain scrape runs; broker errors (what was
    /// polled is then given back).
    pub(crate) async fn drain(&self) -> Result<Drained> {
        let exclusive = Arc::clone(&self.exclusive)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded("another drain scrape is in progress".into()))?;
        let consumer = self.consumer().await?;
        let mut lease = DrainLease {
            consumer: Arc::clone(&consumer),
            ids: Vec::new(),
            exclusive: Some(exclusive),
        };
        let mut points = Vec::new();
        let mut wait = FIRST_POLL_WAIT;
        while lease.ids.len() < MAX_DRAIN_RECORDS {
            let max = MAX_DRAIN_RECORDS - lease.ids.len();
            let batch = match consumer.poll(max, wait).await {
                Ok(batch) => batch,
                Err(e) => {
                    // Resubscribe next time, in case this consumer is fenced or closed.
                    *self.consumer.lock().await = None;
                    return Err(e.into());
                }
            };
            if batch.is_empty() {
                break;
            }
            wait = Duration::ZERO;
            for delivery in batch {
                lease.ids.push(delivery.id);
                match decode_point(&delivery.value) {
                    Ok(point) => points.push(point),
                    Err(e) => {
                        tracing::warn!(record = %delivery.id, error = %e, "drained record is not a point: skipping it");
                        self.telemetry
                            .error(Component::Exposition, ErrorKind::InvalidInput);
                    }
                }
            }
        }
        Ok(Drained { points, lease })
    }

    async fn consumer(&self) -> Result<Arc<dyn Consumer>> {
        let mut slot = self.consumer.lock().await;
        if let Some(consumer) = slot.as_ref() {
            return Ok(Arc::clone(consumer));
        }
        let id = format!("exposition-{}", std::process::id());
        let consumer: Arc<dyn Consumer> = Arc::from(
            self.broker
                .subscribe(&self.topic, &self.group, &id, self.consumer_options.clone())
                .await?,
        );
        *slot = Some(Arc::clone(&consumer));
        Ok(consumer)
    }

    /// Leaves the group, if a drain scrape joined it.
    pub(crate) async fn close(&self) {
        if let Some(consumer) = self.consumer.lock().await.take()
            && let Err(e) = consumer.close().await
        {
            tracing::warn!(error = %e, "could not leave the drain consumer group");
        }
    }

    /// A response body carrying `text` that acknowledges `lease` once it was fully
    /// written, and gives it back if it is dropped earlier or not finished in time.
    pub(crate) fn body(&self, text: String, lease: DrainLease) -> Body {
        let shared = Arc::new(Mutex::new(Some(lease)));
        let (done, finished) = oneshot::channel::<()>();
        tokio::spawn(watchdog(Arc::clone(&shared), finished, self.body_timeout));
        let state = BodyState {
            text: Bytes::from(text),
            pos: 0,
            lease: shared,
            telemetry: Arc::clone(&self.telemetry),
            _done: done,
        };
        Body::from_stream(futures::stream::unfold(state, next_chunk))
    }
}

impl DrainLease {
    /// Number of records polled.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Acknowledges the records (they will not be drained again).
    async fn ack(mut self) -> datanexus_broker::Result<()> {
        let ids = std::mem::take(&mut self.ids);
        if ids.is_empty() {
            return Ok(());
        }
        self.consumer.ack(&ids).await
    }
}

impl Drop for DrainLease {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let exclusive = self.exclusive.take();
        if ids.is_empty() {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the leases expire and the records are redelivered.
        };
        runtime.spawn(async move {
            if let Err(e) = consumer.nack(&ids).await {
                tracing::warn!(error = %e, records = ids.len(), "could not give drained records back: they are redelivered when their lease expires");
            }
            drop(exclusive);
        });
    }
}

type SharedLease = Arc<Mutex<Option<DrainLease>>>;

fn take(lease: &SharedLease) -> Option<DrainLease> {
    lease.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Gives the records back if the body is not finished within `timeout`.
async fn watchdog(lease: SharedLease, finished: oneshot::Receiver<()>, timeout: Duration) {
    tokio::select! {
        _ = finished => {}
        () = tokio::time::sleep(timeout) => {
            if take(&lease).is_some() {
                tracing::warn!(?timeout, "drain response not written in time: its records are given back");
            }
        }
    }
}

struct BodyState {
    text: Bytes,
    pos: usize,
    lease: SharedLease,
    telemetry: Arc<Telemetry>,
    /// Dropped with the body: stops the watchdog.
    _done: oneshot::Sender<()>,
}

impl Drop for BodyState {
    /// An unfinished body gives its records back (the lease's `Drop` nacks them).
    fn drop(&mut self) {
        drop(take(&self.lease));
    }
}

async fn next_chunk(mut state: BodyState) -> Option<(Result<Bytes>, BodyState)> {
    if state.pos < state.text.len() {
        let end = (state.pos + CHUNK_BYTES).min(state.text.len());
        let chunk = state.text.slice(state.pos..end);
        state.pos = end;
        return Some((Ok(chunk), state));
    }
    // Polled past the last chunk: the whole body was handed to the connection.
    let Some(lease) = take(&state.lease) else {
        return None; // Given back by the watchdog: the records will be drained again.
    };
    let records = lease.len();
    if let Err(e) = lease.ack().await {
        tracing::warn!(error = %e, records, "could not acknowledge drained records: they may be drained again");
        let kind = Error::from(e).kind();
        state.telemetry.error(Component::Exposition, kind);
    }
    None
}
