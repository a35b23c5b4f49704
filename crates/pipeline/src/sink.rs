//! consumer → sinker → acker for one topic.
//!
//! The consumer task polls and sends batches through a bounded channel; the sinker
//! decodes and writes them to the store, flushes by size or age, and only then passes
//! the flushed records' ids to the acker, which acknowledges them to the broker. A failed
//! flush is retried with backoff and nothing is acknowledged meanwhile (the leases may
//! expire and the records be redelivered, which the idempotent store absorbs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datanexus_broker::{Broker, Bytes, Consumer, Delivery, ProduceRecord, RecordId};
use datanexus_model::{Point, codec};
use datanexus_store::{Store, StoredEvent};
use datanexus_telemetry::{GroupLabels, Telemetry};
use tokio::sync::{mpsc, watch};

use crate::{PipelineConfig, Result};

/// Batches in flight between the consumer and the sinker.
const CHANNEL_BATCHES: usize = 4;
/// Longest wait in one poll.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Backoff bounds after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Which topic a sink drains and how its records are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// `metrics` → points.
    Metrics,
    /// `events` → raw events plus their numeric fields as points.
    Events,
}

pub(crate) struct SinkContext {
    kind: SinkKind,
    topic: String,
    dlq: String,
    consumer: Arc<dyn Consumer>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    telemetry: Arc<Telemetry>,
    labels: GroupLabels,
    config: PipelineConfig,
}

impl SinkContext {
    pub(crate) async fn new(
        kind: SinkKind,
        broker: &Arc<dyn Broker>,
        store: &Arc<dyn Store>,
        telemetry: &Arc<Telemetry>,
        config: &PipelineConfig,
    ) -> Result<Self> {
        let (topic, group) = match kind {
            SinkKind::Metrics => (&config.metrics_topic, &config.metrics_group),
            SinkKind::Events => (&config.events_topic, &config.events_group),
        };
        let id = format!("{}-{group}", config.consumer_id);
        let consumer: Arc<dyn Consumer> = Arc::from(
            broker
                .subscribe(topic, group, &id, config.consumer.clone())
                .await?,
        );
        Ok(SinkContext {
            kind,
            topic: topic.clone(),
            dlq: config.dlq_topic.clone(),
            consumer,
            broker: broker.clone(),
            store: store.clone(),
            telemetry: telemetry.clone(),
            labels: GroupLabels {
                topic: topic.clone(),
                group: group.clone(),
            },
            config: config.clone(),
        })
    }

    pub(crate) async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let this = Arc::new(self);
        let (batches_tx, batches_rx) = mpsc::channel(CHANNEL_BATCHES);
        let (acks_tx, acks_rx) = mpsc::channel(CHANNEL_BATCHES);
        let consumer = tokio::spawn(this.clone().consume(batches_tx, stop.clone()));
        let heartbeat = tokio::spawn(this.clone().heartbeat(stop));
        let acker = tokio::spawn(this.clone().ack(acks_rx));
        let sunk = this.clone().sink(batches_rx, acks_tx).await;
        let _ = consumer.await;
        let acked = acker.await;
        heartbeat.abort();
        if let Err(e) = this.consumer.close().await {
            tracing::warn!(error = %e, topic = %this.topic, "closing the consumer failed");
        }
        sunk?;
        acked.map_err(|e| crate::Error::Worker(format!("acker failed: {e}")))
    }

    /// Polls until stopped; a full channel pauses polling.
    async fn consume(
        self: Arc<Self>,
        out: mpsc::Sender<Vec<Delivery>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_MIN;
        while !*stop.borrow() {
            let polled = tokio::select! {
                r = self.consumer.poll(self.config.batch_size, POLL_WAIT) => r,
                () = crate::stopped(&mut stop) => break,
            };
            match polled {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    backoff = BACKOFF_MIN;
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
                    if out.send(batch).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    self.telemetry.error("consumer", "broker");
                    tracing::warn!(error = %e, topic = %self.topic, "poll failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.consumer.heartbeat().await {
                        tracing::debug!(error = %e, topic = %self.topic, "heartbeat failed");
                    }
                }
                () = crate::stopped(&mut stop) => return,
            }
        }
    }

    /// Writes batches, flushes by size or age, hands flushed ids to the acker.
    async fn sink(
        self: Arc<Self>,
        mut input: mpsc::Receiver<Vec<Delivery>>,
        acks: mpsc::Sender<Vec<RecordId>>,
    ) -> Result<()> {
        let mut pending: Vec<RecordId> = Vec::new();
        let mut pending_rows = 0usize;
        let mut oldest: Option<Instant> = None;
        let mut tick =
            tokio::time::interval(self.config.flush_interval.min(Duration::from_millis(250)));
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        pending_rows += self.write(&batch).await;
                        pending.extend(batch.iter().map(|d| d.id));
                        oldest.get_or_insert_with(Instant::now);
                        if pending_rows >= self.config.max_pending_rows {
                            self.flush_and_ack(&mut pending, &acks).await;
                            (pending_rows, oldest) = (0, None);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if oldest.is_some_and(|t| t.elapsed() >= self.config.flush_interval) {
                        self.flush_and_ack(&mut pending, &acks).await;
                        (pending_rows, oldest) = (0, None);
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.flush_and_ack(&mut pending, &acks).await;
        }
        Ok(())
    }

    /// Decodes and writes one batch (retrying store failures); returns rows written.
    async fn write(&self, batch: &[Delivery]) -> usize {
        let mut points: Vec<Point> = Vec::with_capacity(batch.len());
        let mut events: Vec<StoredEvent> = Vec::new();
        for d in batch {
            let decoded = match self.kind {
                SinkKind::Metrics => codec::decode_point(&d.value).map(|p| points.push(p)),
                SinkKind::Events => codec::decode_event(&d.value).map(|e| {
                    points.extend(e.numeric_points());
                    events.push(StoredEvent {
                        id: d.id.to_string(),
                        source_id: e.source_id,
                        timestamp_ns: e.timestamp_ns,
                        payload: e.payload,
                    });
                }),
            };
            if let Err(e) = decoded {
                self.dead_letter(d, &e.to_string()).await;
            }
        }
        let rows = points.len() + events.len();
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = async {
                if !events.is_empty() {
                    self.store.write_events(&events).await?;
                }
                if !points.is_empty() {
                    self.store.write_points(&points).await?;
                }
                Ok::<_, datanexus_store::Error>(())
            }
            .await;
            match result {
                Ok(()) => return rows,
                Err(e) => {
                    self.telemetry.error("sinker", "store");
                    tracing::warn!(error = %e, topic = %self.topic, "store write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Sends a poison record to the dlq with the reason (retrying until it is durable).
    async fn dead_letter(&self, d: &Delivery, reason: &str) {
        self.telemetry.error("sinker", "poison");
        tracing::warn!(id = %d.id, topic = %self.topic, reason, "undecodable record sent to the dlq");
        let body = dlq_body(&self.topic, &d.id.to_string(), reason, &d.value);
        let record = ProduceRecord {
            partition: None,
            key: Some(Bytes::from(format!("{}/{}", self.topic, d.id))),
            value: Bytes::from(body),
            timestamp_ms: d.timestamp_ms,
        };
        let mut backoff = BACKOFF_MIN;
        while let Err(e) = self.broker.produce(&self.dlq, vec![record.clone()]).await {
            tracing::warn!(error = %e, "dlq produce failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn flush_and_ack(&self, pending: &mut Vec<RecordId>, acks: &mpsc::Sender<Vec<RecordId>>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            match self.store.flush().await {
                Ok(report) => {
                    self.telemetry
                        .flush_duration_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.telemetry.flushed_rows.inc_by(report.rows);
                    break;
                }
                Err(e) => {
                    self.telemetry.error("sinker", "flush");
                    tracing::warn!(error = %e, topic = %self.topic, "store flush failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let _ = acks.send(std::mem::take(pending)).await;
    }

    async fn ack(self: Arc<Self>, mut input: mpsc::Receiver<Vec<RecordId>>) {
        while let Some(ids) = input.recv().await {
            if let Err(e) = self.consumer.ack(&ids).await {
                // Fenced: another consumer got these records and will store them again
                // (idempotently). Anything else: they will be redelivered.
                self.telemetry.error("acker", "broker");
                tracing::warn!(error = %e, topic = %self.topic, count = ids.len(), "ack failed; records will be redelivered");
            }
        }
    }
}

/// The dlq record body: JSON with the source topic, record id, reason and the original
/// value in hex.
fn dlq_body(topic: &str, id: &str, reason: &str, value: &[u8]) -> String {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"source_topic": topic, "record_id": id, "reason": reason, "value_hex": hex})
        .to_string()
}
