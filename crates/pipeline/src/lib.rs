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
//! - **processor**: answers stream events (`sq`, …) from the `events` topic with
//!   results produced to the `results` topic, acknowledging events only once their
//!   results are durable; several consumers of its group run in parallel;
//! - **forwarder**: stores results (the durable mailbox offline clients are replayed
//!   from), *then* routes them to the clients' live streams through a [`ResultRouter`],
//!   and acknowledges them after the store flush, like the sinker;
//! - **heartbeat**: keeps the group membership alive while a worker is busy;
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
//! - `worker.rs`: what every worker shares: group member, consumer task, heartbeat,
//!   acker, dlq, backoff.
//! - `sink.rs`: consumer → sinker → acker for one topic; [`SinkKind`] (the forwarder is
//!   the sinker of `results`).
//! - [`processing`]: consumer → processor → acker on `events`.
//! - [`processor`] (+ `processor/`): [`Processor`], [`Registry`] and the built-ins.
//! - `housekeeping.rs`: heartbeat-independent periodic tasks (retention, lag).
//! - `error.rs`: [`Error`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datanexus_broker::{Broker, ConsumerOptions};
use datanexus_config::{Config, Role};
use datanexus_store::Store;
use datanexus_telemetry::Telemetry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod error;
mod housekeeping;
pub mod processing;
pub mod processor;
mod sink;
mod worker;

pub use datanexus_results::ResultRouter;
pub use error::{Error, Result};
pub use processor::{ProcessError, Processor, Registry};
pub use sink::SinkKind;

/// Settings of the workers.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Topic of metric points.
    pub metrics_topic: String,
    /// Topic of events.
    pub events_topic: String,
    /// Topic of results of stream events.
    pub results_topic: String,
    /// Topic of poison records.
    pub dlq_topic: String,
    /// Consumer group of the metrics sinker.
    pub metrics_group: String,
    /// Consumer group of the events sinker.
    pub events_group: String,
    /// Consumer group of the processors (on the events topic).
    pub processor_group: String,
    /// Consumer group of the forwarder (on the results topic).
    pub forwarder_group: String,
    /// Processor consumers in this process (0: none). Consumers of one group share the
    /// partitions, so the work spreads; each keeps its partitions' order.
    pub processor_concurrency: usize,
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
    /// The processors stream events can name ([`Registry::builtin`] from a config).
    pub processors: Registry,
    /// Which workers run (from the role). The forwarder routes results
    /// only when [`Pipeline::start`] gets a router; without one it stores them.
    pub workers: Workers,
}

/// Processor consumers per process that runs processors.
const PROCESSOR_CONCURRENCY: usize = 2;
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// How often lag is published.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

impl PipelineConfig {
    /// The pipeline of a process configured by `config`: topics, groups, cadences and
    /// the role's workers all come from it (so its defaults are the only defaults);
    /// the consumer id is `workers.consumer_name`, or `datanexus-<pid>` when unset.
    pub fn from_config(config: &Config) -> Self {
        let w = &config.workers;
        PipelineConfig {
            metrics_topic: config.topics.metrics.clone(),
            events_topic: config.topics.events.clone(),
            results_topic: config.topics.results.clone(),
            dlq_topic: config.topics.dlq.clone(),
            metrics_group: config.groups.metrics.clone(),
            events_group: config.groups.events.clone(),
            processor_group: config.groups.processors.clone(),
            forwarder_group: config.groups.forwarder.clone(),
            processor_concurrency: PROCESSOR_CONCURRENCY,
            consumer_id: if w.consumer_name.is_empty() {
                format!("datanexus-{}", std::process::id())
            } else {
                w.consumer_name.clone()
            },
            batch_size: w.batch_size,
            flush_interval: w.sinker_interval,
            max_pending_rows: config.store.max_pending_rows,
            heartbeat_interval: w.heartbeat_interval,
            consumer: ConsumerOptions {
                lease_timeout: w.lease_timeout,
                session_timeout: w.session_timeout,
            },
            retention_interval: RETENTION_INTERVAL,
            lag_interval: LAG_INTERVAL,
            processors: Registry::builtin(),
            workers: Workers::of(config.role),
        }
    }

    /// The (topic, group) pairs of the pipeline's consumer groups.
    fn groups(&self) -> [(&str, &str); 4] {
        [
            (&self.metrics_topic, &self.metrics_group),
            (&self.events_topic, &self.events_group),
            (&self.events_topic, &self.processor_group),
            (&self.results_topic, &self.forwarder_group),
        ]
    }
}

/// Creates what the pipeline and the front ends need on `broker`, whatever the role of
/// the process (roles start in any order): the four topics (with `partitions` each when
/// new) and every consumer group of the pipeline, so that retention keeps what each
/// group has not consumed even before its first consumer joins. The one place topics
/// and groups are created.
///
/// # Errors
/// The broker is unreachable, or a topic exists with a partition count it refuses.
pub async fn ensure_topology(
    broker: &dyn Broker,
    config: &PipelineConfig,
    partitions: u32,
) -> Result<()> {
    for topic in [
        &config.metrics_topic,
        &config.events_topic,
        &config.results_topic,
        &config.dlq_topic,
    ] {
        broker.ensure_topic(topic, partitions).await?;
    }
    for (topic, group) in config.groups() {
        broker.ensure_group(topic, group).await?;
    }
    Ok(())
}

/// Which workers a process runs (its role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    /// The sinkers of the metrics and events topics (into the store).
    pub sinks: bool,
    /// The processors (events → results).
    pub processors: bool,
    /// The forwarder (results → store, then routed to the clients' streams).
    pub forwarder: bool,
}

impl Workers {
    /// The workers of `role`.
    pub fn of(role: Role) -> Workers {
        match role {
            Role::All | Role::Control => Workers::ALL,
            Role::Gateway => Workers::NONE,
            Role::Processor => Workers::PROCESSORS,
            Role::Store => Workers::STORE,
        }
    }

    /// Every worker (one process does everything).
    pub const ALL: Workers = Workers {
        sinks: true,
        processors: true,
        forwarder: true,
    };
    /// The workers of a `store` role: sinkers and forwarder (whatever writes the store).
    pub const STORE: Workers = Workers {
        sinks: true,
        processors: false,
        forwarder: true,
    };
    /// The workers of a `processor` role.
    pub const PROCESSORS: Workers = Workers {
        sinks: false,
        processors: true,
        forwarder: false,
    };
    /// No worker (a `gateway` role).
    pub const NONE: Workers = Workers {
        sinks: false,
        processors: false,
        forwarder: false,
    };
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The running workers.
#[derive(Debug)]
pub struct Pipeline {
    stop: watch::Sender<bool>,
    workers: Vec<(&'static str, JoinHandle<Result<()>>)>,
    housekeeping: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// Joins the groups and starts every worker: the metrics and events sinkers, and,
    /// with a `router`, the processors (`processor_concurrency` of them) and the
    /// forwarder that stores results and then hands them to it. Without a router
    /// neither runs (the processors need no router; a processor-only role can be split
    /// off later without changing them).
    ///
    /// Topics must exist; with a router, the results topic too.
    ///
    /// # Errors
    /// If a consumer cannot join its group or the results topic is unknown, or
    /// [`Error::NoStore`] when sinkers or the forwarder are asked for without a `store`;
    /// the workers already started are stopped first.
    pub async fn start(
        broker: Arc<dyn Broker>,
        store: Option<Arc<dyn Store>>,
        telemetry: Arc<Telemetry>,
        config: PipelineConfig,
        router: Option<Arc<dyn ResultRouter>>,
    ) -> Result<Pipeline> {
        let (stop, _) = watch::channel(false);
        let mut pipeline = Pipeline {
            stop,
            workers: Vec::new(),
            housekeeping: None,
        };
        let with_results = config.workers.processors || config.workers.forwarder;
        if let Err(e) = pipeline
            .spawn_workers(&broker, &store, &telemetry, &config, router)
            .await
        {
            let _ = pipeline.stop().await;
            return Err(e);
        }
        let groups = lag_groups(&config, with_results);
        let stop_rx = pipeline.stop.subscribe();
        pipeline.housekeeping = Some(tokio::spawn(housekeeping::run(
            broker, store, telemetry, config, groups, stop_rx,
        )));
        Ok(pipeline)
    }

    async fn spawn_workers(
        &mut self,
        broker: &Arc<dyn Broker>,
        store: &Option<Arc<dyn Store>>,
        telemetry: &Arc<Telemetry>,
        config: &PipelineConfig,
        router: Option<Arc<dyn ResultRouter>>,
    ) -> Result<()> {
        let workers = config.workers;
        let store = || store.as_ref().ok_or(Error::NoStore);
        if workers.sinks {
            let store = store()?;
            for kind in [SinkKind::Metrics, SinkKind::Events] {
                let ctx =
                    sink::SinkContext::new(kind, broker, store, telemetry, config, None).await?;
                self.spawn("sinker", ctx.run(self.stop.subscribe()));
            }
        }
        let registry = Arc::new(config.processors.clone());
        let processors = if workers.processors {
            config.processor_concurrency
        } else {
            0
        };
        for index in 0..processors {
            let worker = processing::ProcessorWorker::new(
                index,
                broker,
                telemetry,
                config,
                registry.clone(),
            )
            .await?;
            self.spawn("processor", worker.run(self.stop.subscribe()));
        }
        if workers.forwarder {
            let store = store()?;
            let forwarder = SinkKind::Results;
            let ctx =
                sink::SinkContext::new(forwarder, broker, store, telemetry, config, router).await?;
            self.spawn("forwarder", ctx.run(self.stop.subscribe()));
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        self.workers.push((name, tokio::spawn(task)));
    }

    /// Stops polling, flushes what is pending, acknowledges it, leaves the groups, and
    /// waits for every worker.
    ///
    /// # Errors
    /// The first worker failure (its unacknowledged records will be redelivered).
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for (name, handle) in self.workers {
            let outcome = handle
                .await
                .map_err(|e| Error::Worker(format!("{name} task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = %e, worker = name, "worker stopped with an error");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        if let Some(housekeeping) = self.housekeeping {
            let _ = housekeeping.await;
        }
        first
    }
}

/// The (topic, group) pairs whose lag is published.
fn lag_groups(config: &PipelineConfig, with_results: bool) -> Vec<(String, String)> {
    let mut groups = vec![
        (config.metrics_topic.clone(), config.metrics_group.clone()),
        (config.events_topic.clone(), config.events_group.clone()),
    ];
    if with_results {
        groups.push((config.events_topic.clone(), config.processor_group.clone()));
        groups.push((config.results_topic.clone(), config.forwarder_group.clone()));
    }
    groups
}
