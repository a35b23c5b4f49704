//! The processor worker: consumer → processor → acker on the `events` topic.
//!
//! For each polled batch, in delivery order: undecodable records go to the dlq; events
//! without a stream request (`POST /ingest` events, which the event sinker stores) are
//! skipped; every stream event gets a `ResultRecord` — the processor's answer, or an
//! in-band error for an unknown event name or a failed processor. All results of the
//! batch are produced to the `results` topic in one call, keyed and partitioned by client
//! id, and only once that produce returned (durable) is the batch acknowledged.
//!
//! Per-client order holds end to end: a client's events live in one `events` partition,
//! a partition has one consumer of the group at a time, each consumer handles its batches
//! one after the other, and a client's results all go to one `results` partition. A
//! consumer that dies after producing but before acknowledging leaves duplicates in
//! `results`; they carry the same seq (see `datanexus_results::record`), the store keeps each
//! once, and clients drop seqs they have already seen.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datanexus_broker::{Broker, Bytes, Delivery, ErrorKind, ProduceRecord, RecordId};
use datanexus_model::series::partition_of_key;
use datanexus_model::{Event, codec};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_telemetry::{Component, Telemetry};
use prost::Message;
use tokio::sync::{mpsc, watch};

use crate::processor::Registry;
use crate::worker::{Backoff, Member, run_stage};
use crate::{Error, PipelineConfig, Result};
use datanexus_results::event_position;

/// The result of the stream event `event` delivered as `id`, or `None` for an event
/// without a stream request.
pub fn result_of(
    registry: &Registry,
    id: RecordId,
    event: &Event,
    processor_id: &str,
    processed_ns: i64,
) -> Option<ResultRecord> {
    let stream = event.stream.as_ref()?;
    let (event_partition, event_offset) = event_position(id);
    Some(ResultRecord {
        client_id: event.source_id.clone(),
        event_partition,
        event_offset,
        event_name: stream.event_name.clone(),
        number: stream.number,
        outcome: Some(registry.outcome(&stream.event_name, stream.number)),
        received_ns: event.timestamp_ns,
        processed_ns,
        processor_id: processor_id.to_owned(),
        reply_to: stream.reply_to.clone(),
    })
}

/// What a batch yields: result records to produce, and poison records (index in the
/// batch, reason).
#[derive(Default)]
struct Answers {
    records: Vec<ProduceRecord>,
    poison: Vec<(usize, String)>,
}

/// One processor consumer of the group.
pub(crate) struct ProcessorWorker {
    member: Arc<Member>,
    registry: Arc<Registry>,
    results_topic: String,
    results_partitions: u32,
}

impl ProcessorWorker {
    /// Joins the processor group as consumer number `index` of this process.
    pub(crate) async fn new(
        index: usize,
        broker: &Arc<dyn Broker>,
        telemetry: &Arc<Telemetry>,
        config: &PipelineConfig,
        registry: Arc<Registry>,
    ) -> Result<Self> {
        let results_partitions = broker.partitions(&config.results_topic).await?;
        let group = &config.processor_group;
        let id = format!("{}-{group}-{index}", config.consumer_id);
        let topics = (config.events_topic.as_str(), group.as_str());
        let member =
            Member::join(Component::Processor, broker, telemetry, config, topics, &id).await?;
        Ok(ProcessorWorker {
            member: Arc::new(member),
            registry,
            results_topic: config.results_topic.clone(),
            results_partitions,
        })
    }

    pub(crate) async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let member = self.member.clone();
        run_stage(member, stop, |batches, acks| self.process(batches, acks)).await
    }

    /// Answers batches one after the other; acks each once its results are durable.
    async fn process(
        self,
        mut input: mpsc::Receiver<Vec<Delivery>>,
        acks: mpsc::Sender<Vec<RecordId>>,
    ) -> Result<()> {
        while let Some(batch) = input.recv().await {
            let (batch, answers) = self.answer(batch).await?;
            for (i, reason) in &answers.poison {
                if let Some(d) = batch.get(*i) {
                    self.member.dead_letter(d, reason).await;
                }
            }
            if !answers.records.is_empty() {
                self.produce(answers.records).await?;
            }
            let _ = acks.send(batch.iter().map(|d| d.id).collect()).await;
        }
        Ok(())
    }

    /// Runs the processors off the async threads (a processor may be CPU-heavy).
    async fn answer(&self, batch: Vec<Delivery>) -> Result<(Vec<Delivery>, Answers)> {
        let registry = self.registry.clone();
        let processor_id = self.member.consumer.id().to_owned();
        let partitions = self.results_partitions;
        tokio::task::spawn_blocking(move || {
            let answers = answer_batch(&registry, &processor_id, partitions, &batch);
            (batch, answers)
        })
        .await
        .map_err(|e| Error::Worker(format!("processor task failed: {e}")))
    }

    /// Produces one batch of results, retrying until it is durable (or the broker is
    /// stopped: then the events stay unacknowledged and will be processed again).
    async fn produce(&self, records: Vec<ProduceRecord>) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            let produced = self
                .member
                .broker
                .produce(&self.results_topic, records.clone())
                .await;
            match produced {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Closed => return Err(e.into()),
                Err(e) => {
                    self.member
                        .telemetry
                        .error(Component::Processor, datanexus_telemetry::ErrorKind::Broker);
                    tracing::warn!(error = %e, topic = %self.results_topic, count = records.len(), "results produce failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}

/// Decodes and answers every record of a batch, in delivery order.
fn answer_batch(
    registry: &Registry,
    processor_id: &str,
    results_partitions: u32,
    batch: &[Delivery],
) -> Answers {
    let mut answers = Answers::default();
    let now_ns = now_ns();
    for (i, d) in batch.iter().enumerate() {
        let event = match codec::decode_event(&d.value) {
            Ok(e) => e,
            Err(e) => {
                answers.poison.push((i, e.to_string()));
                continue;
            }
        };
        let Some(result) = result_of(registry, d.id, &event, processor_id, now_ns) else {
            continue;
        };
        answers.records.push(ProduceRecord {
            partition: Some(partition_of_key(&result.client_id, results_partitions)),
            key: Some(Bytes::from(result.client_id.clone())),
            value: Bytes::from(result.encode_to_vec()),
            timestamp_ms: now_ns / 1_000_000,
        });
    }
    answers
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
