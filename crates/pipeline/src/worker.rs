//! What every worker shares: one consumer-group member ([`Member`]) with its consumer
//! task (polls into a bounded channel: a full channel stops polling), its heartbeat, its
//! acker, the dlq, retry backoff, and [`run_stage`], which wires them around a worker's
//! own stage:
//!
//! ```text
//! consume ──batches (bounded)──▶ stage ──ids of durable effects (bounded)──▶ acker
//! ```
//!
//! Stopping: the consumer stops polling and drops its sender; the stage drains what is
//! buffered, makes it durable and passes the ids on; the acker acknowledges them; then
//! the member leaves its group.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datanexus_broker::{Broker, Bytes, Consumer, Delivery, ProduceRecord, RecordId};
use datanexus_telemetry::{Component, ErrorKind, GroupLabels, Telemetry};
use tokio::sync::{mpsc, watch};

use crate::{PipelineConfig, Result};

/// Batches in flight between the consumer and the stage (and the stage and the acker).
pub(crate) const CHANNEL_BATCHES: usize = 16;
/// Longest wait in one poll.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Backoff bounds after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between retries of a failed call.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(BACKOFF_MIN)
    }

    /// Sleeps the current delay, then doubles it (up to the maximum).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }

    pub(crate) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// One member of a consumer group, with what its tasks need.
pub(crate) struct Member {
    /// The group consumer.
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Topic and group (also the telemetry labels).
    pub(crate) labels: GroupLabels,
    /// Worker name in logs and error counters (`sinker`, `processor`, `forwarder`).
    pub(crate) component: Component,
    dlq: String,
    batch_size: usize,
    heartbeat_interval: Duration,
}

impl Member {
    /// Joins `group` on `topic` as `id`.
    pub(crate) async fn join(
        component: Component,
        broker: &Arc<dyn Broker>,
        telemetry: &Arc<Telemetry>,
        config: &PipelineConfig,
        (topic, group): (&str, &str),
        id: &str,
    ) -> Result<Self> {
        let consumer: Arc<dyn Consumer> = Arc::from(
            broker
                .subscribe(topic, group, id, config.consumer.clone())
                .await?,
        );
        Ok(Member {
            consumer,
            broker: broker.clone(),
            telemetry: telemetry.clone(),
            labels: GroupLabels {
                topic: topic.to_owned(),
                group: group.to_owned(),
            },
            component,
            dlq: config.dlq_topic.clone(),
            batch_size: config.batch_size,
            heartbeat_interval: config.heartbeat_interval,
        })
    }

    pub(crate) fn topic(&self) -> &str {
        &self.labels.topic
    }

    /// Polls until stopped; a full channel pauses polling.
    async fn consume(
        self: Arc<Self>,
        out: mpsc::Sender<Vec<Delivery>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new();
        while !*stop.borrow() && !out.is_closed() {
            let polled = tokio::select! {
                r = self.consumer.poll(self.batch_size, POLL_WAIT) => r,
                () = crate::stopped(&mut stop) => break,
            };
            match polled {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    backoff.reset();
                    self.count_consumed(&batch);
                    if out.send(batch).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    self.telemetry.error(self.component, ErrorKind::Broker);
                    tracing::warn!(error = %e, topic = %self.topic(), "poll failed; backing off");
                    backoff.wait().await;
                }
            }
        }
    }

    fn count_consumed(&self, batch: &[Delivery]) {
        self.telemetry
            .consumed_records
            .get_or_create(&self.labels)
            .inc_by(batch.len() as u64);
        let again = batch.iter().filter(|d| d.delivery_count > 1).count() as u64;
        if again > 0 {
            self.telemetry
                .redelivered_records
                .get_or_create(&self.labels)
                .inc_by(again);
        }
    }

    async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.consumer.heartbeat().await {
                        tracing::debug!(error = %e, topic = %self.topic(), "heartbeat failed");
                    }
                }
                () = crate::stopped(&mut stop) => return,
            }
        }
    }

    /// Acknowledges what the stage made durable.
    async fn ack(self: Arc<Self>, mut input: mpsc::Receiver<Vec<RecordId>>) {
        while let Some(ids) = input.recv().await {
            if ids.is_empty() {
                continue;
            }
            if let Err(e) = self.consumer.ack(&ids).await {
                // Fenced: another consumer got these records and will repeat the work
                // (idempotently). Anything else: they will be redelivered.
                self.telemetry.error(Component::Acker, ErrorKind::Broker);
                tracing::warn!(error = %e, topic = %self.topic(), count = ids.len(), "ack failed; records will be redelivered");
            }
        }
    }

    /// Sends a poison record to the dlq with the reason (retrying until it is durable).
    pub(crate) async fn dead_letter(&self, d: &Delivery, reason: &str) {
        self.telemetry.error(self.component, ErrorKind::Poison);
        tracing::warn!(id = %d.id, topic = %self.topic(), reason, "undecodable record sent to the dlq");
        let body = dlq_body(&self.labels, &d.id.to_string(), reason, &d.value);
        let record = ProduceRecord {
            partition: None,
            key: Some(Bytes::from(format!("{}/{}", self.topic(), d.id))),
            value: Bytes::from(body),
            timestamp_ms: d.timestamp_ms,
        };
        let mut backoff = Backoff::new();
        while let Err(e) = self.broker.produce(&self.dlq, vec![record.clone()]).await {
            tracing::warn!(error = %e, "dlq produce failed; retrying");
            backoff.wait().await;
        }
    }
}

/// Runs a member's consumer, heartbeat and acker around `stage` until stopped, then
/// leaves the group. `stage` gets the polled batches and must send the ids of every
/// record whose effect is durable to the acker; it returns once its input is closed
/// and drained.
pub(crate) async fn run_stage<S, F>(
    member: Arc<Member>,
    stop: watch::Receiver<bool>,
    stage: S,
) -> Result<()>
where
    S: FnOnce(mpsc::Receiver<Vec<Delivery>>, mpsc::Sender<Vec<RecordId>>) -> F,
    F: Future<Output = Result<()>>,
{
    let (batches_tx, batches_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (acks_tx, acks_rx) = mpsc::channel(CHANNEL_BATCHES);
    let consumer = tokio::spawn(member.clone().consume(batches_tx, stop.clone()));
    let heartbeat = tokio::spawn(member.clone().heartbeat(stop));
    let acker = tokio::spawn(member.clone().ack(acks_rx));
    let staged = stage(batches_rx, acks_tx).await;
    let _ = consumer.await;
    let acked = acker.await;
    heartbeat.abort();
    if let Err(e) = member.consumer.close().await {
        tracing::warn!(error = %e, topic = %member.topic(), "closing the consumer failed");
    }
    staged?;
    acked.map_err(|e| crate::Error::Worker(format!("acker failed: {e}")))
}

/// The dlq record body: JSON with the source topic, the group that gave up on the record
/// (each group of a topic reports its poison once), record id, reason and the original
/// value in hex.
fn dlq_body(labels: &GroupLabels, id: &str, reason: &str, value: &[u8]) -> String {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({
        "source_topic": labels.topic,
        "group": labels.group,
        "record_id": id,
        "reason": reason,
        "value_hex": hex,
    })
    .to_string()
}
