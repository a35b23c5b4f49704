//! `datanexus serve`: config → the role's [`Process`] (broker, store if the role has
//! one, Redis fan-out for separate gateways) → topics, server state, workers → gRPC
//! and HTTP servers → shutdown. Which role runs what: `datanexus_config::Role`.
//!
//! Shutdown: the first SIGINT/SIGTERM stops accepting and finishes in-flight requests
//! (bounded by `shutdown_timeout`), then the workers flush the store and acknowledge
//! what they stored, then the log is fsynced and closed and the store flushed. A second signal
//! exits at once (acknowledged data is durable already; only unacknowledged requests are
//! cut off).

use anyhow::Context;
use datanexus_broker::Broker;
use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_config::{
    BrokerConfig, Config, ConfigOverrides, LogFormat, Role, StoreConfig, StoreKind,
};
use datanexus_fanout::{FanoutOptions, RedisMailbox, RedisRouter};
use datanexus_pipeline::{Pipeline, PipelineConfig};
use datanexus_results::{Mailbox, ResultRouter};
use datanexus_seglog::{LogOptions, Retention};
use datanexus_server::{AppState, Backends};
use datanexus_store::Store;
use datanexus_store_cluster::{ClusterOptions, ClusterStore};
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
use datanexus_telemetry::Telemetry;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::cli::{LogFormatArg, ServeArgs};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let check_only = args.check_config;
    let config = load_config(args)?;
    let fanout = FanoutOptions::from_config(&config);
    if fanout.is_none() && !matches!(config.role, Role::All | Role::Control) {
        anyhow::bail!(
            "role `{}` needs the Redis result fan-out: set [redis] url (or use a redis broker)",
            config.role.as_str()
        );
    }
    if check_only {
        print_config_summary(&config);
        return Ok(());
    }
    crate::logging::init(&config.logging.level, config.logging.format)?;
    let process = Process::open(&config, fanout).await?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP on {}", config.http_addr))?;
    let (state, pipeline) = process.start(&config).await?;
    // One machine-readable line on stdout (tests and scripts read the bound ports here).
    println!(
        "datanexus listening grpc={} http={}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, data_dir = %config.data_dir.display(), role = config.role.as_str(), broker = process.broker.name(), "datanexus serving");
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(watch_signals(stop_tx));
    process.spawn_fanout_tasks(&config, &state, &stop);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // `serve` finishes in-flight requests within shutdown_timeout after `shutdown` resolves.
    let served = datanexus_server::serve(grpc, http, state, shutdown).await;
    // Then: workers flush the store and acknowledge, the log and store are closed.
    let stopped = pipeline.stop().await;
    process.close().await?;
    tracing::info!("datanexus stopped");
    served?;
    stopped?;
    Ok(())
}

/// What one `serve` process opened for its role: the broker, the store (roles that
/// have one), the fan-out mailbox (separate gateways), and its id.
struct Process {
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn Store>>,
    /// The control node's store (also `store`).
    control: Option<Arc<ClusterStore>>,
    fanout: Option<FanoutOptions>,
    mailbox: Option<RedisMailbox>,
    telemetry: Arc<Telemetry>,
    /// Unique per process even where every process is pid 1 (containers): a shared
    /// consumer name would let two processes share a partition.
    id: String,
}

impl Process {
    /// Opens the broker, the store if the role has one, and the fan-out mailbox.
    async fn open(config: &Config, fanout: Option<FanoutOptions>) -> anyhow::Result<Process> {
        let role = config.role;
        let telemetry = Telemetry::new();
        let broker = open_broker(config, &telemetry).await?;
        let control = if role == Role::Control {
            let options = ClusterOptions {
                nodes: config.control.nodes.clone(),
                token: config.control.token.clone(),
                timeout: config.control.timeout,
            };
            let store = ClusterStore::new(options).context("invalid [control] nodes")?;
            tracing::info!(nodes = ?config.control.nodes, "control node: series are placed on the worker nodes by jump hash");
            Some(Arc::new(store))
        } else {
            None
        };
        let store = match &control {
            Some(control) => Some(Arc::clone(control) as Arc<dyn Store>),
            None if role.opens_store() => Some(open_store(config).await?),
            None => None,
        };
        let id = format!("{}-{}-{:08x}", role.as_str(), std::process::id(), {
            use std::hash::BuildHasher;
            // RandomState is seeded from the OS's randomness.
            std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
        });
        let mailbox = match &fanout {
            Some(fanout) => Some(
                RedisMailbox::connect(fanout, &id)
                    .await
                    .context("cannot connect to Redis for the result fan-out")?,
            ),
            None => None,
        };
        Ok(Process {
            broker,
            store,
            control,
            fanout,
            mailbox,
            telemetry,
            id,
        })
    }

    /// Creates the topics and groups, builds the server state (which loads the stream
    /// cursors) and starts the role's workers, routing results to this process's
    /// streams or through Redis.
    async fn start(&self, config: &Config) -> anyhow::Result<(AppState, Pipeline)> {
        let mut pipeline_config = PipelineConfig::from_config(config);
        if config.workers.consumer_name.is_empty() {
            pipeline_config.consumer_id = self.id.clone();
        }
        // Topics and every group of the pipeline exist before any consumer joins (roles
        // start in any order): retention then keeps what each has not consumed.
        datanexus_pipeline::ensure_topology(
            self.broker.as_ref(),
            &pipeline_config,
            config.broker.partitions(),
        )
        .await
        .context("cannot create the topics and consumer groups")?;
        let mut options: datanexus_server::ServerOptions = config.into();
        if let Some(gateway) = &self.mailbox {
            options.reply_to = gateway.channel().to_owned();
        }
        let backends = Backends {
            broker: Arc::clone(&self.broker),
            store: self.store.clone(),
            telemetry: Arc::clone(&self.telemetry),
            mailbox: self
                .mailbox
                .clone()
                .map(|m| Arc::new(m) as Arc<dyn Mailbox>),
            control: self.control.clone(),
        };
        let state = AppState::new(backends, options).await?;
        let router: Arc<dyn ResultRouter> = match &self.fanout {
            Some(fanout) => Arc::new(
                RedisRouter::connect(fanout)
                    .await
                    .context("cannot connect to Redis for the result fan-out")?,
            ),
            None => state.sessions(),
        };
        let pipeline = Pipeline::start(
            Arc::clone(&self.broker),
            self.store.clone(),
            Arc::clone(&self.telemetry),
            pipeline_config,
            Some(router),
        )
        .await?;
        Ok((state, pipeline))
    }

    /// With separate gateways: renews this process's client claims in Redis and
    /// subscribes to its result channel, until `stop`.
    fn spawn_fanout_tasks(
        &self,
        config: &Config,
        state: &AppState,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(gateway) = &self.mailbox else {
            return;
        };
        // Homes expire `max_replay_age` after they were set: renew them well before.
        let renew = (config.streams.max_replay_age / 4).min(std::time::Duration::from_secs(60));
        tokio::spawn(
            state.sessions().renew_claims_periodically(
                renew.max(std::time::Duration::from_secs(1)),
                stop.clone(),
            ),
        );
        let sessions = state.sessions();
        let catch_up = sessions.clone();
        tokio::spawn(datanexus_fanout::subscribe(
            gateway.client().clone(),
            gateway.channel().to_owned(),
            sessions,
            move || {
                let sessions = catch_up.clone();
                async move {
                    if let Err(e) = sessions.catch_up().await {
                        tracing::warn!(error = %e, "connected clients could not catch up from their mailboxes");
                    }
                }
            },
            stop.clone(),
        ));
    }

    /// Fsyncs and closes the log, then flushes and stops the store.
    async fn close(&self) -> anyhow::Result<()> {
        self.broker
            .stop()
            .await
            .context("cannot flush the log on shutdown")?;
        if let Some(store) = &self.store {
            store
                .stop()
                .await
                .context("cannot flush the store on shutdown")?;
        }
        Ok(())
    }
}

/// `serve --check-config`: what the validated configuration would run (no secrets).
fn print_config_summary(config: &Config) {
    println!(
        "configuration is valid: role={} broker={} store={} grpc={} http={} data_dir={} auth_tokens={}",
        config.role.as_str(),
        config.broker.kind(),
        config.store.kind.as_str(),
        config.grpc_addr,
        config.http_addr,
        config.data_dir.display(),
        config.auth.tokens.len()
    );
}

/// Opens the store named by `[store] kind`.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.store.kind {
        StoreKind::Embedded => open_embedded_store(config).await,
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => {
            use datanexus_store_postgres::{PostgresOptions, PostgresStore};
            let options = PostgresOptions {
                pool_size: config.store.pool_size,
                connect_timeout: config.store.connect_timeout,
                retention_max_age: config.store.retention_max_age,
                ..PostgresOptions::new(&config.store.url)
            };
            let store = PostgresStore::open(options)
                .await
                .context("cannot open the postgres store")?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres => anyhow::bail!(
            "store kind \"postgres\" is not available in this build (build with --features postgres)"
        ),
    }
}

async fn open_embedded_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let dir = config.data_dir.join("store");
    let options = EmbeddedStoreOptions {
        retention_max_age: config.store.retention_max_age,
        ..Default::default()
    };
    let opened = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open(&dir, options).map_err(|e| (dir, e))
    })
    .await?;
    let store = opened
        .map_err(|(dir, e)| anyhow::anyhow!("cannot open the store in {}: {e}", dir.display()))?;
    Ok(Arc::new(store))
}

fn load_config(args: ServeArgs) -> anyhow::Result<Config> {
    let file = args
        .config
        .clone()
        .or_else(|| std::env::var_os(datanexus_config::ENV_CONFIG_FILE).map(Into::into));
    let overrides = ConfigOverrides {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        data_dir: args.data_dir,
        auth_tokens: args.auth_tokens,
        insecure: args.insecure,
        log_level: args.log_level,
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
        broker_url: args.broker,
        role: args.role,
        redis_url: args.redis,
        store: match args.store.as_deref() {
            Some("postgres") => Some(
                StoreConfig::url_from_seed_vars(
                    env_vars()
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .context(
                    "--store postgres builds the URL from POSTGRES_HOST (or POSTGRES_DB), \
                     POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD: none is set",
                )?,
            ),
            _ => args.store,
        },
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        control_nodes: args.nodes,
    };
    // Flags complete the file and environment before anything is validated.
    Config::load_with_overrides(file.as_deref(), env_vars(), overrides)
        .context("invalid configuration")
}

/// Opens the backend named by `[broker] kind`.
async fn open_broker(config: &Config, telemetry: &Telemetry) -> anyhow::Result<Arc<dyn Broker>> {
    let embedded = match &config.broker {
        BrokerConfig::Embedded(embedded) => embedded,
        #[cfg(feature = "redis")]
        BrokerConfig::Redis(redis) => {
            use datanexus_broker::redis_streams::{RedisBroker, RedisOptions, redact_url};
            let options = RedisOptions {
                url: redis.url.clone(),
                stream_prefix: redis.stream_prefix.clone(),
                maxlen: redis.maxlen,
                connect_timeout: redis.connect_timeout,
                command_timeout: redis.command_timeout,
                tls_ca: (!redis.tls_ca.as_os_str().is_empty()).then(|| redis.tls_ca.clone()),
            };
            let broker = RedisBroker::open(options)
                .await
                .with_context(|| format!("cannot use redis at {}", redact_url(&redis.url)))?;
            broker
                .ready()
                .await
                .with_context(|| format!("redis at {} is not ready", redact_url(&redis.url)))?;
            return Ok(Arc::new(broker));
        }
        #[cfg(feature = "kafka")]
        BrokerConfig::Kafka(kafka) => {
            use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};
            let servers = &kafka.bootstrap_servers;
            let options = KafkaOptions {
                bootstrap_servers: servers.clone(),
                replication_factor: kafka.replication_factor,
                client_id: kafka.client_id.clone(),
                request_timeout: kafka.request_timeout,
                delivery_timeout: kafka.delivery_timeout,
                properties: kafka.properties.clone(),
            };
            let broker = KafkaBroker::open(options)
                .with_context(|| format!("cannot use kafka at {servers}"))?;
            broker
                .ready()
                .await
                .with_context(|| format!("kafka at {servers} is not ready"))?;
            return Ok(Arc::new(broker));
        }
        #[cfg(not(all(feature = "redis", feature = "kafka")))]
        other => anyhow::bail!(
            "broker kind {:?} is not available in this build (only \"embedded\"{}{})",
            other.kind(),
            if cfg!(feature = "redis") {
                ", \"redis\""
            } else {
                ""
            },
            if cfg!(feature = "kafka") {
                ", \"kafka\""
            } else {
                ""
            }
        ),
    };
    let log = LogOptions {
        fsync: embedded.fsync,
        fsync_interval: embedded.fsync_interval,
        max_segment_bytes: embedded.max_segment_bytes,
        retention: Retention {
            max_age: embedded.retention_max_age,
            max_bytes: embedded.retention_max_bytes,
            consumed_min_age: embedded
                .retention_delete_consumed
                .then_some(embedded.retention_consumed_min_age),
        },
        ..LogOptions::default()
    };
    let dir = config.data_dir.join("log");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let broker = EmbeddedBroker::open(&dir, EmbeddedOptions { log })
        .with_context(|| format!("cannot open the log in {}", dir.display()))?;
    // Corruption recovery found (each hole is logged by the log itself): a metric too.
    for (topic, partition, lost) in broker.log().recovery_losses() {
        telemetry.log_lost_offsets(&topic, partition, lost);
    }
    Ok(Arc::new(broker))
}

async fn watch_signals(stop: tokio::sync::watch::Sender<bool>) {
    let mut count = 0;
    loop {
        let got = wait_for_signal().await;
        if !got {
            return;
        }
        count += 1;
        if count == 1 {
            tracing::info!("shutting down: finishing in-flight requests (signal again to force)");
            let _ = stop.send(true);
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

/// Waits for SIGINT or SIGTERM; false if signals cannot be watched.
async fn wait_for_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return false;
    };
    tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => true,
    }
}

/// The process environment, skipping variables that are not valid Unicode (which
/// `std::env::vars` would panic on).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}
