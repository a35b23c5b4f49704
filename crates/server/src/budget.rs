//! The byte budget (`limits.max_inflight_bytes`): bytes of ingest request bodies and
//! batch messages held in memory at once, over every request. The per-request limits
//! bound one request; this bounds them all together, so 200 clients sending at once
//! cannot hold 200 bodies: a request that does not fit is answered 429 /
//! `RESOURCE_EXHAUSTED` at once instead of waiting (the client retries), and nothing of
//! it was acknowledged.
//!
//! - HTTP: [`budget_bodies`] wraps the body of the ingest routes (after
//!   decompression) so that each chunk takes its bytes from the budget as it arrives;
//!   they are given back when the handler has answered. A chunk that does not fit
//!   ends the body with [`OverBudget`], which `read_body` turns into a 429.
//! - gRPC: the batch calls take their message's encoded size before they are handled.
//! - `queue_depth{queue="inflight_bytes"}` shows the bytes held.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use datanexus_telemetry::{Queue, QueueLabels, Telemetry};
use hyper::body::{Frame, SizeHint};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{AppState, Error, Result};

/// The budget shared by every request.
pub(crate) struct ByteBudget {
    permits: Arc<Semaphore>,
    max: usize,
    held: Gauge,
}

/// Bytes taken from the budget, given back on drop.
pub(crate) struct BytesHeld {
    permit: OwnedSemaphorePermit,
    held: Gauge,
}

impl Drop for BytesHeld {
    fn drop(&mut self) {
        self.held
            .dec_by(i64::try_from(self.permit.num_permits()).unwrap_or(i64::MAX));
    }
}

impl BytesHeld {
    /// Adds `other`'s bytes to these.
    fn merge(&mut self, mut other: BytesHeld) {
        // Take the permits out of `other` first, so its drop gives back nothing.
        let permits = other.permit.split(other.permit.num_permits());
        if let Some(permits) = permits {
            self.permit.merge(permits);
        }
    }
}

/// The error that ends a body which does not fit the budget.
#[derive(Debug)]
pub(crate) struct OverBudget(pub(crate) String);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverBudget {}

impl ByteBudget {
    pub(crate) fn new(max: usize, telemetry: &Telemetry) -> ByteBudget {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget {
            permits: Arc::new(Semaphore::new(max)),
            max,
            held: telemetry
                .queue_depth
                .get_or_create(&QueueLabels {
                    queue: Queue::InflightBytes,
                })
                .clone(),
        }
    }

    /// Takes `n` bytes, or fails at once with [`Error::Overloaded`].
    pub(crate) fn try_reserve(&self, n: usize) -> Result<BytesHeld> {
        let over = || {
            Error::Overloaded(format!(
                "{n} more bytes do not fit the in-flight byte budget of {} bytes",
                self.max
            ))
        };
        let n32 = u32::try_from(n).map_err(|_| over())?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(n32)
            .map_err(|_| over())?;
        self.held.inc_by(i64::from(n32));
        Ok(BytesHeld {
            permit,
            held: self.held.clone(),
        })
    }
}

/// The layer of the ingest routes: their (decompressed) bodies take bytes from the
/// budget as they are read, given back once the handler answered.
pub(crate) async fn budget_bodies(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let held: Arc<Mutex<Option<BytesHeld>>> = Arc::new(Mutex::new(None));
    let budget = state.byte_budget();
    let request = request.map(|inner| {
        Body::new(Budgeted {
            inner,
            budget,
            held: Arc::clone(&held),
        })
    });
    let response = next.run(request).await;
    drop(held);
    response
}

/// A body whose data frames take bytes from the budget.
struct Budgeted {
    inner: Body,
    budget: Arc<ByteBudget>,
    held: Arc<Mutex<Option<BytesHeld>>>,
}

impl hyper::body::Body for Budgeted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match this.budget.try_reserve(data.len()) {
                Ok(taken) => {
                    let mut held = this.held.lock();
                    match held.as_mut() {
                        Some(h) => h.merge(taken),
                        None => *held = Some(taken),
                    }
                }
                Err(e) => {
                    return Poll::Ready(Some(Err(axum::Error::new(OverBudget(e.to_string())))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The budget's message when `e` (a body error) is an [`OverBudget`].
pub(crate) fn over_budget(e: &axum::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(over) = s.downcast_ref::<OverBudget>() {
            return Some(over.0.clone());
        }
        source = s.source();
    }
    None
}
