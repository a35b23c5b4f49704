//! Typed configuration for Data Nexus.
//!
//! This crate owns the server's configuration schema ([`Config`] and its
//! sections), its default values, how it is layered from its sources, and
//! its validation. It performs no I/O besides reading the config file in
//! [`Config::load`]; it never reads the process environment itself (callers
//! pass `std::env::vars()`), which keeps tests hermetic.
//!
//! Sources are layered, later ones winning:
//!
//! 1. defaults (each section's `impl Default`),
//! 2. the TOML file (see `config/example.toml` at the workspace root),
//! 3. `DATANEXUS_*` environment variables ([`Config::load`]),
//! 4. command-line flags ([`ConfigOverrides`] applied with [`Config::apply`]).
//!
//! Parsing and validation are separate steps: deserialization checks syntax
//! and types (rejecting unknown keys), then [`Config::validate`] checks
//! cross-field constraints without touching the file system or network.
//!
//! # Layout
//!
//! - `error.rs`: [`Error`] and [`Result`].
//! - `sections.rs`: the plain sections ([`AuthConfig`], [`LoggingConfig`],
//!   [`TopicsConfig`], [`RedisConfig`], [`WorkerConfig`], [`MetricsConfig`],
//!   [`LimitsConfig`], [`StreamsConfig`]).
//! - `broker.rs`: [`BrokerConfig`] and its backends.
//! - `builder.rs`: [`ConfigBuilder`], the Rust-side functional options.
//! - `load.rs`: TOML parsing and the file/env layering.
//! - `env.rs`: mapping `DATANEXUS_*` variables onto the TOML value tree.
//! - `overrides.rs`: [`ConfigOverrides`], the CLI layer.
//! - `validate.rs`: [`Config::validate`].

mod broker;
mod builder;
mod env;
mod error;
mod load;
mod overrides;
mod sections;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::broker::{
    BrokerConfig, EmbeddedBrokerConfig, FsyncPolicy, KafkaBrokerConfig, RedisBrokerConfig,
};
pub use crate::builder::ConfigBuilder;
pub use crate::env::{ENV_CONFIG_FILE, ENV_PREFIX};
pub use crate::error::{Error, Result};
pub use crate::overrides::ConfigOverrides;
pub use crate::sections::{
    AuthConfig, ControlConfig, GroupsConfig, JobsConfig, LimitsConfig, LogFormat, LoggingConfig,
    MetricsConfig, RedisConfig, Role, Scope, ScopedToken, StoreConfig, StoreKind, StreamsConfig,
    TlsConfig, TokenConfig, TopicsConfig, WorkerConfig,
};

/// The root of the Data Nexus configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC API listens on.
    pub grpc_addr: SocketAddr,
    /// Address the HTTP API (ingest, queries, `/metrics`, health) listens on.
    pub http_addr: SocketAddr,
    /// Directory holding the embedded broker's log and other state.
    pub data_dir: PathBuf,
    /// Allow binding a non-loopback address without auth tokens.
    pub insecure: bool,
    /// What this process runs: `all`, `gateway`, `processor` or `store`.
    pub role: Role,
    /// Bearer-token authentication.
    pub auth: AuthConfig,
    /// TLS of the gRPC and HTTP servers.
    pub tls: TlsConfig,
    /// Log level and format.
    pub logging: LoggingConfig,
    /// Log backend storing the topics.
    pub broker: BrokerConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Consumer group names.
    pub groups: GroupsConfig,
    /// Optional Redis connection for pub/sub fan-out; unset disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Background worker cadence.
    pub workers: WorkerConfig,
    /// Metric ingestion limits and histogram buckets.
    pub metrics: MetricsConfig,
    /// The embedded columnar store.
    pub store: StoreConfig,
    /// Request-size, concurrency and backpressure limits.
    pub limits: LimitsConfig,
    /// Client event streams: replay and slow-client limits.
    pub streams: StreamsConfig,
    /// Export jobs: chunks, workers, retries.
    pub jobs: JobsConfig,
    /// The control node's worker nodes (`role = "control"`).
    pub control: ControlConfig,
    /// How long a graceful shutdown may take before tasks are aborted.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            data_dir: PathBuf::from("./data"),
            insecure: false,
            role: Role::All,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            logging: LoggingConfig::default(),
            broker: BrokerConfig::default(),
            topics: TopicsConfig::default(),
            groups: GroupsConfig::default(),
            redis: None,
            workers: WorkerConfig::default(),
            metrics: MetricsConfig::default(),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            streams: StreamsConfig::default(),
            jobs: JobsConfig::default(),
            control: ControlConfig::default(),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Starts a [`ConfigBuilder`] from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}
