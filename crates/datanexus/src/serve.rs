//! `datanexus serve`: config → embedded broker → gRPC and HTTP servers → shutdown.
//!
//! Shutdown: the first SIGINT/SIGTERM stops accepting and drains in-flight requests
//! (bounded by `shutdown_timeout`), then the log is fsynced and closed. A second signal
//! exits at once (acknowledged data is durable already; only unacknowledged requests are
//! cut off).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use datanexus_broker::Broker;
use datanexus_broker::embedded::{EmbeddedBroker, EmbeddedOptions};
use datanexus_config::{BrokerConfig, Config, ConfigOverrides, FsyncPolicy, LogFormat};
use datanexus_seglog::{self as seglog, LogOptions, Retention};
use tokio::net::TcpListener;

use crate::cli::{LogFormatArg, ServeArgs};

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    crate::logging::init(&config.logging.level, config.logging.format)?;
    let broker = Arc::new(open_broker(&config)?);
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP on {}", config.http_addr))?;
    // One machine-readable line on stdout (tests and scripts read the bound ports here).
    println!(
        "datanexus listening grpc={} http={}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, data_dir = %config.data_dir.display(), "datanexus serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watch_signals(stop_tx));
    let retention = tokio::spawn(retention_loop(broker.clone(), stop_rx.clone()));
    let mut stop = stop_rx.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let dyn_broker: Arc<dyn Broker> = broker.clone();
    let server = datanexus_server::run(grpc, http, dyn_broker, (&config).into(), shutdown);
    let mut stopped = stop_rx.clone();
    let result = tokio::select! {
        r = server => r.map_err(anyhow::Error::from),
        () = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(config.shutdown_timeout).await;
        } => {
            tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not drain in time");
            Ok(())
        }
    };
    retention.abort();
    broker
        .stop()
        .await
        .context("cannot flush the log on shutdown")?;
    tracing::info!("datanexus stopped");
    result
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

async fn retention_loop(broker: Arc<EmbeddedBroker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETENTION_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = broker.enforce_retention().await {
            tracing::warn!(error = %e, "retention failed");
        }
    }
}

/// The process environment, skipping variables that are not valid Unicode (which
/// `std::env::vars` would panic on).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}
