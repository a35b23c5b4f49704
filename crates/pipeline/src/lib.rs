//! The workers of Data Nexus, over the [`Broker`] and [`Store`] traits so that the same
//! code runs on every backend. Names follow the Data Nexus seed:
//!
//! - **consumer**: polls a topic as a member of a consumer group and hands batches on
//!   through a bounded channel (a full channel stops polling: backpressure, not memory);
//! - **sinker**: decodes records, writes them to the store, and flushes by size
//!   (`max_pending_rows`) or age (`flush_interval`); undecodable records go to the `dlq`
//!   topic with the reason;
//! - **acker**: acknowledges records to the broker only after the flush that made their
//!   effect durable — at-least-once; the store is idempotent, so redelivery after a crash
//!   never double-counts;
//! - **heartbeat**: keeps the group membership alive while the sinker is busy;
//! - **retention**: applies store and broker retention periodically; the broker never
//!   drops what a group has not committed, so nothing unstored is lost;
//! - **lag**: publishes per-group lag to the program's own metrics.
//!
//! On start nothing special is needed to recover: everything a group had not
//! acknowledged is delivered again (this is how the embedded store's head is rebuilt
//! from the log).
//!
//! # Layout
//! - this file: [`Pipeline`] (start/stop) and [`PipelineConfig`].
//! - `sink.rs`: consumer → sinker → acker for one topic; [`SinkKind`].
//! - `housekeeping.rs`: heartbeat-independent periodic tasks (retention, lag).
//! - `error.rs`: [`Error`].

use std::sync::Arc;
use std::time::Duration;

use datanexus_broker::{Broker, ConsumerOptions};
use datanexus_store::Store;
use datanexus_telemetry::Telemetry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod error;
mod housekeeping;
mod sink;

pub use error::{Error, Result};
pub use sink::SinkKind;

/// Settings of the workers.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Topic of metric points.
    pub metrics_topic: String,
    /// Topic of events.
    pub events_topic: String,
    /// Topic of poison records.
    pub dlq_topic: String,
    /// Consumer group of the metrics sinker.
    pub metrics_group: String,
    /// Consumer group of the events sinker.
    pub events_group: String,
    /// This process' consumer id prefix (unique per process).
    pub consumer_id: String,
    /// Most records per poll.
    pub batch_size: usize,
    /// Flush the store at least this often while data is pending.
    pub flush_interval: Duration,
    /// Flush as soon as this many rows are pending.
    pub max_pending_rows: usize,
    /// How often the consumer heartbeats while busy.
    pub heartbeat_interval: Duration,
    /// Lease and session timeouts of the group consumers.
    pub consumer: ConsumerOptions,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How often lag is published.
    pub lag_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            metrics_topic: "metrics".into(),
            events_topic: "events".into(),
            dlq_topic: "dlq".into(),
            metrics_group: "sinker".into(),
            events_group: "event-sinker".into(),
            consumer_id: format!("datanexus-{}", std::process::id()),
            batch_size: 10_000,
            flush_interval: Duration::from_secs(1),
            max_pending_rows: 500_000,
            heartbeat_interval: Duration::from_secs(1),
            consumer: ConsumerOptions::default(),
            retention_interval: Duration::from_secs(60),
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The running workers.
#[derive(Debug)]
pub struct Pipeline {
    stop: watch::Sender<bool>,
    sinks: Vec<JoinHandle<Result<()>>>,
    housekeeping: JoinHandle<()>,
}

impl Pipeline {
    /// Joins the groups and starts every worker.
    ///
    /// # Errors
    /// If a consumer cannot join its group.
    pub async fn start(
        broker: Arc<dyn Broker>,
        store: Arc<dyn Store>,
        telemetry: Arc<Telemetry>,
        config: PipelineConfig,
    ) -> Result<Pipeline> {
        let (stop, stop_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        for kind in [SinkKind::Metrics, SinkKind::Events] {
            let ctx = sink::SinkContext::new(kind, &broker, &store, &telemetry, &config).await?;
            sinks.push(tokio::spawn(ctx.run(stop_rx.clone())));
        }
        let housekeeping =
            tokio::spawn(housekeeping::run(broker, store, telemetry, config, stop_rx));
        Ok(Pipeline {
            stop,
            sinks,
            housekeeping,
        })
    }

    /// Stops polling, flushes what is pending, acknowledges it, and waits for every
    /// worker.
    ///
    /// # Errors
    /// The first worker failure (its unacknowledged records will be redelivered).
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for handle in self.sinks {
            let outcome = handle
                .await
                .map_err(|e| Error::Worker(format!("sink task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = %e, "worker stopped with an error");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        let _ = self.housekeeping.await;
        first
    }
}
