//! [`ConfigBuilder`]: the Rust-side equivalent of the seed's functional
//! options, for embedding the server and for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{
    BrokerConfig, Config, LimitsConfig, LoggingConfig, MetricsConfig, RedisConfig, Result,
    StreamsConfig, TokenConfig, TopicsConfig, WorkerConfig,
};

/// Builds a [`Config`] from the defaults; [`build`](Self::build) validates.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Sets the gRPC listen address.
    pub fn grpc_addr(mut self, addr: SocketAddr) -> Self {
        self.config.grpc_addr = addr;
        self
    }

    /// Sets the HTTP listen address.
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.config.http_addr = addr;
        self
    }

    /// Enables Redis pub/sub fan-out with this connection.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.config.redis = Some(redis);
        self
    }

    /// Sets the logging section.
    pub fn logging(mut self, logging: LoggingConfig) -> Self {
        self.config.logging = logging;
        self
    }

    /// Sets the worker section.
    pub fn workers(mut self, workers: WorkerConfig) -> Self {
        self.config.workers = workers;
        self
    }

    /// Sets the metrics section.
    pub fn metrics(mut self, metrics: MetricsConfig) -> Self {
        self.config.metrics = metrics;
        self
    }

    /// Sets the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// Replaces the accepted bearer tokens.
    pub fn auth_tokens<I, S>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<TokenConfig>,
    {
        self.config.auth.tokens = tokens.into_iter().map(Into::into).collect();
        self
    }

    /// Allows non-loopback addresses without auth tokens.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.config.insecure = insecure;
        self
    }

    /// Sets the broker backend.
    pub fn broker(mut self, broker: BrokerConfig) -> Self {
        self.config.broker = broker;
        self
    }

    /// Sets the topic names.
    pub fn topics(mut self, topics: TopicsConfig) -> Self {
        self.config.topics = topics;
        self
    }

    /// Sets the limits section.
    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.config.limits = limits;
        self
    }

    /// Sets the client event stream section.
    pub fn streams(mut self, streams: StreamsConfig) -> Self {
        self.config.streams = streams;
        self
    }

    /// Sets the graceful shutdown deadline.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<Config> {
        self.config.validate()?;
        Ok(self.config)
    }
}
