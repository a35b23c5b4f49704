//! `datanexus serve`: config → embedded broker and store → workers → gRPC and HTTP
//! servers → shutdown.
//!
//! Shutdown: the first SIGINT/SIGTERM stops accepting and drains in-flight requests
//! (bounded by `shutdown_timeout`), then the workers flush the store and acknowledge
//! what they stored, then the log is fsynced and closed and the store flushed. A second signal
//! exits at once (acknowledged data is durable already; only unacknowledged requests are
//! cut off).

use anyhow::Context;
use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_broker::{Broker, ConsumerOptions};
use datanexus_config::{BrokerConfig, Config, ConfigOverrides, FsyncPolicy, LogFormat};
use datanexus_pipeline::{Pipeline, PipelineConfig};
use datanexus_seglog::{self as seglog, LogOptions, Retention};
use datanexus_server::Backends;
use datanexus_store::Store;
use datanexus_store::embedded::{EmbeddedStore, EmbeddedStoreOptions};
use datanexus_telemetry::Telemetry;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::cli::{LogFormatArg, ServeArgs};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    crate::logging::init(&config.logging.level, config.logging.format)?;
    let telemetry = Telemetry::new();
    let broker = Arc::new(open_broker(&config)?);
    let store = Arc::new(open_store(&config).await?);
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP on {}", config.http_addr))?;
    let backends = Backends {
        broker: broker.clone(),
        store: store.clone(),
        telemetry: telemetry.clone(),
    };
    // The server state creates the topics and loads the stream cursors; its session
    // registry is where the forwarder delivers results.
    let state = datanexus_server::AppState::new(backends, (&config).into()).await?;
    let pipeline = Pipeline::start(
        broker.clone(),
        store.clone(),
        telemetry,
        pipeline_config(&config),
        Some(state.sessions()),
    )
    .await?;
    // One machine-readable line on stdout (tests and scripts read the bound ports here).
    println!(
        "datanexus listening grpc={} http={}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, data_dir = %config.data_dir.display(), "datanexus serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watch_signals(stop_tx));
    let mut stop = stop_rx.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // `serve` drains in-flight requests within shutdown_timeout after `shutdown` resolves.
    let served = datanexus_server::serve(grpc, http, state, shutdown).await;
    // Then: workers flush the store and acknowledge, the log and store are closed.
    let stopped = pipeline.stop().await;
    broker
        .stop()
        .await
        .context("cannot flush the log on shutdown")?;
    store
        .stop()
        .await
        .context("cannot flush the store on shutdown")?;
    tracing::info!("datanexus stopped");
    served?;
    stopped?;
    Ok(())
}

fn pipeline_config(config: &Config) -> PipelineConfig {
    let w = &config.workers;
    PipelineConfig {
        metrics_topic: config.topics.metrics.clone(),
        events_topic: config.topics.events.clone(),
        results_topic: config.topics.results.clone(),
        dlq_topic: config.topics.dlq.clone(),
        batch_size: w.batch_size,
        flush_interval: w.sinker_interval,
        max_pending_rows: config.store.max_pending_rows,
        heartbeat_interval: w.heartbeat_interval,
        consumer: ConsumerOptions {
            lease_timeout: w.lease_timeout,
            session_timeout: w.session_timeout,
        },
        ..PipelineConfig::default()
    }
}

async fn open_store(config: &Config) -> anyhow::Result<EmbeddedStore> {
    let dir = config.data_dir.join("store");
    let options = EmbeddedStoreOptions {
        retention_max_age: config.store.retention_max_age,
        ..Default::default()
    };
    let opened = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open(&dir, options).map_err(|e| (dir, e))
    })
    .await?;
    opened.map_err(|(dir, e)| anyhow::anyhow!("cannot open the store in {}: {e}", dir.display()))
}

fn load_config(args: ServeArgs) -> anyhow::Result<Config> {
    let file = args
        .config
        .clone()
        .or_else(|| std::env::var_os(datanexus_config::ENV_CONFIG_FILE).map(Into::into));
    let mut config = Config::load(file.as_deref(), env_vars()).context("invalid configuration")?;
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
        broker_url: None,
    };
    config
        .apply(overrides)
        .context("invalid command-line flags")?;
    Ok(config)
}

fn open_broker(config: &Config) -> anyhow::Result<EmbeddedBroker> {
    let BrokerConfig::Embedded(embedded) = &config.broker else {
        anyhow::bail!(
            "broker kind {:?} is not available in this build (only \"embedded\")",
            config.broker.kind()
        );
    };
    let fsync = match embedded.fsync {
        FsyncPolicy::Always => seglog::FsyncPolicy::Always,
        FsyncPolicy::Interval => seglog::FsyncPolicy::Interval(embedded.fsync_interval),
        FsyncPolicy::Never => seglog::FsyncPolicy::Never,
    };
    let log = LogOptions {
        fsync,
        max_segment_bytes: embedded.max_segment_bytes,
        retention: Retention {
            max_age: embedded.retention_max_age,
            max_bytes: embedded.retention_max_bytes,
        },
        ..LogOptions::default()
    };
    let dir = config.data_dir.join("log");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    EmbeddedBroker::open(&dir, EmbeddedOptions { log })
        .with_context(|| format!("cannot open the log in {}", dir.display()))
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
            tracing::info!("shutting down: draining in-flight requests (signal again to force)");
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
