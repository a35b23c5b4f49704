//! consumer → sinker → acker for one topic; the forwarder is the sinker of `results`.
//!
//! The consumer task polls and sends batches through a bounded channel; the sinker
//! decodes and writes them to the store, flushes by size or age, and only then passes
//! the flushed records' ids to the acker, which acknowledges them to the broker. A failed
//! write or flush is retried with backoff and nothing is acknowledged meanwhile (the
//! leases may expire and the records be redelivered, which the idempotent store absorbs).
//!
//! The **forwarder** ([`SinkKind::Results`]) writes each batch of results to the store
//! first — the durable mailbox offline clients are replayed from, visible at once — and
//! only then offers it to the [`ResultRouter`] for live delivery, so a result a client
//! missed live is always in the store by the time the server replays (the server relies
//! on this order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datanexus_broker::{Broker, Delivery, RecordId};
use datanexus_model::{Point, codec};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_store::{Store, StoredEvent, StoredResult};
use datanexus_telemetry::{Component, ErrorKind, Telemetry};
use prost::Message;
use tokio::sync::{mpsc, watch};

use crate::worker::{Backoff, Member, run_stage};
use crate::{PipelineConfig, Result};
use datanexus_results::ResultRouter;
use datanexus_results::record::to_stored;

/// Most records written to the store in one call when polled batches queue up.
const MAX_WRITE_RECORDS: usize = 20_000;

/// Which topic a sink consumes and how its records are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// `metrics` → points.
    Metrics,
    /// `events` → raw events plus their numeric fields as points.
    Events,
    /// `results` → stored results, then routed to the clients' live streams (the
    /// forwarder).
    Results,
}

impl SinkKind {
    /// The worker's name in logs and error counters.
    fn component(self) -> Component {
        match self {
            SinkKind::Metrics | SinkKind::Events => Component::Sinker,
            SinkKind::Results => Component::Forwarder,
        }
    }
}

/// What one batch decodes to.
#[derive(Default)]
struct Decoded {
    points: Vec<Point>,
    events: Vec<StoredEvent>,
    /// The results as stored (the forwarder's).
    stored: Vec<StoredResult>,
    results: Vec<ResultRecord>,
}

pub(crate) struct SinkContext {
    kind: SinkKind,
    member: Arc<Member>,
    store: Arc<dyn Store>,
    router: Option<Arc<dyn ResultRouter>>,
    telemetry: Arc<Telemetry>,
    flush_interval: Duration,
    max_pending_rows: usize,
}

impl SinkContext {
    /// Joins the sink's group. `router` is only used by [`SinkKind::Results`] (without
    /// one, results are stored but not routed).
    pub(crate) async fn new(
        kind: SinkKind,
        broker: &Arc<dyn Broker>,
        store: &Arc<dyn Store>,
        telemetry: &Arc<Telemetry>,
        config: &PipelineConfig,
        router: Option<Arc<dyn ResultRouter>>,
    ) -> Result<Self> {
        let (topic, group) = match kind {
            SinkKind::Metrics => (&config.metrics_topic, &config.metrics_group),
            SinkKind::Events => (&config.events_topic, &config.events_group),
            SinkKind::Results => (&config.results_topic, &config.forwarder_group),
        };
        let id = format!("{}-{group}", config.consumer_id);
        let member = Member::join(
            kind.component(),
            broker,
            telemetry,
            config,
            (topic, group),
            &id,
        )
        .await?;
        Ok(SinkContext {
            kind,
            member: Arc::new(member),
            store: store.clone(),
            router,
            telemetry: telemetry.clone(),
            flush_interval: config.flush_interval,
            max_pending_rows: config.max_pending_rows,
        })
    }

    pub(crate) async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let member = self.member.clone();
        run_stage(member, stop, |batches, acks| self.sink(batches, acks)).await
    }

    /// Writes batches, flushes by size or age, hands flushed ids to the acker.
    async fn sink(
        self,
        input: mpsc::Receiver<Vec<Delivery>>,
        acks: mpsc::Sender<Vec<RecordId>>,
    ) -> Result<()> {
        // Decoding runs in its own task, so the next batch is decoded while the store
        // writes the previous one (writes stay one at a time, in order).
        let (decoded_tx, mut decoded) = mpsc::channel(1);
        let decoder = tokio::spawn(decode_batches(
            self.kind,
            self.member.clone(),
            input,
            decoded_tx,
        ));
        let mut pending: Vec<RecordId> = Vec::new();
        let mut pending_rows = 0usize;
        let mut oldest: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.flush_interval.min(Duration::from_millis(250)));
        loop {
            tokio::select! {
                batch = decoded.recv() => match batch {
                    Some((ids, batch)) => {
                        pending_rows += self.write(&batch).await;
                        pending.extend(ids);
                        oldest.get_or_insert_with(Instant::now);
                        if pending_rows >= self.max_pending_rows {
                            self.flush_and_ack(&mut pending, &acks).await;
                            (pending_rows, oldest) = (0, None);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if oldest.is_some_and(|t| t.elapsed() >= self.flush_interval) {
                        self.flush_and_ack(&mut pending, &acks).await;
                        (pending_rows, oldest) = (0, None);
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.flush_and_ack(&mut pending, &acks).await;
        }
        decoder
            .await
            .map_err(|e| crate::Error::Worker(format!("{} decoder: {e}", self.kind.component())))
    }

    /// Writes one decoded batch (retrying store failures), then routes its results;
    /// returns rows written.
    async fn write(&self, decoded: &Decoded) -> usize {
        let rows = decoded.points.len() + decoded.events.len() + decoded.stored.len();
        self.store_write(decoded).await;
        if let Some(router) = self.router.as_ref().filter(|_| !decoded.results.is_empty()) {
            router.route(&decoded.results).await;
        }
        rows
    }

    /// Writes results, events then points, retrying with backoff until the store
    /// accepts them.
    async fn store_write(&self, decoded: &Decoded) {
        let mut backoff = Backoff::new();
        loop {
            let result = async {
                if !decoded.stored.is_empty() {
                    self.store.write_results(&decoded.stored).await?;
                }
                if !decoded.events.is_empty() {
                    self.store.write_events(&decoded.events).await?;
                }
                if !decoded.points.is_empty() {
                    self.store.write_points(&decoded.points).await?;
                }
                Ok::<_, datanexus_store::Error>(())
            }
            .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.telemetry
                        .error(self.kind.component(), ErrorKind::Store);
                    tracing::warn!(error = %e, topic = %self.member.topic(), "store write failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn flush_and_ack(&self, pending: &mut Vec<RecordId>, acks: &mpsc::Sender<Vec<RecordId>>) {
        let mut backoff = Backoff::new();
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
                    self.telemetry
                        .error(self.kind.component(), ErrorKind::Flush);
                    tracing::warn!(error = %e, topic = %self.member.topic(), "store flush failed; retrying");
                    backoff.wait().await;
                }
            }
        }
        let _ = acks.send(std::mem::take(pending)).await;
    }
}

/// Coalesces the batches that queued up (fewer, larger writes) and decodes them, until
/// the input closes.
async fn decode_batches(
    kind: SinkKind,
    member: Arc<Member>,
    mut input: mpsc::Receiver<Vec<Delivery>>,
    out: mpsc::Sender<(Vec<RecordId>, Decoded)>,
) {
    while let Some(mut batch) = input.recv().await {
        while batch.len() < MAX_WRITE_RECORDS {
            let Ok(more) = input.try_recv() else { break };
            batch.extend(more);
        }
        let decoded = decode(kind, &member, &batch).await;
        let ids = batch.iter().map(|d| d.id).collect();
        if out.send((ids, decoded)).await.is_err() {
            return;
        }
    }
}

/// Decodes a batch; undecodable records go to the dlq.
async fn decode(kind: SinkKind, member: &Member, batch: &[Delivery]) -> Decoded {
    let mut out = Decoded::default();
    for d in batch {
        let decoded = match kind {
            SinkKind::Metrics => codec::decode_point(&d.value)
                .map(|p| out.points.push(p))
                .map_err(|e| e.to_string()),
            SinkKind::Events => codec::decode_event(&d.value)
                .map(|e| {
                    // POST /ingest events become series too; stream events (a
                    // processor request) are only stored raw.
                    if e.stream.is_none() {
                        out.points.extend(e.numeric_points());
                    }
                    out.events.push(StoredEvent {
                        id: d.id.to_string(),
                        source_id: e.source_id,
                        timestamp_ns: e.timestamp_ns,
                        payload: e.payload,
                    });
                })
                .map_err(|e| e.to_string()),
            SinkKind::Results => decode_result(&d.value).map(|r| {
                out.stored.push(to_stored(&r));
                out.results.push(r);
            }),
        };
        if let Err(reason) = decoded {
            member.dead_letter(d, &reason).await;
        }
    }
    out
}

/// Decodes a `ResultRecord`; one without a client id is undecodable too (it could
/// never be routed nor replayed).
fn decode_result(bytes: &[u8]) -> std::result::Result<ResultRecord, String> {
    let r = ResultRecord::decode(bytes).map_err(|e| format!("undecodable result record: {e}"))?;
    if r.client_id.is_empty() {
        return Err("undecodable result record: empty client_id".into());
    }
    Ok(r)
}
