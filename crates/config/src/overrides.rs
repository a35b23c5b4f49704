//! The command-line layer: [`ConfigOverrides`] applied with [`Config::apply`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{
    BrokerConfig, Config, Error, KafkaBrokerConfig, LogFormat, RedisBrokerConfig, RedisConfig,
    Result, Role, StoreKind, TokenConfig,
};

/// Values given on the command line; unset fields leave the config as is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// Replaces `grpc_addr`.
    pub grpc_addr: Option<SocketAddr>,
    /// Replaces `http_addr`.
    pub http_addr: Option<SocketAddr>,
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Replaces `auth.tokens` when non-empty (each with every scope).
    pub auth_tokens: Vec<String>,
    /// Sets `insecure` when true (a flag cannot turn it off).
    pub insecure: bool,
    /// Replaces `logging.level`.
    pub log_level: Option<String>,
    /// Replaces `logging.format`.
    pub log_format: Option<LogFormat>,
    /// Replaces the broker's address: `url` of a Redis broker,
    /// `bootstrap_servers` of a Kafka broker. With the embedded broker, a
    /// `redis://`/`rediss://` URL switches to Redis and a `kafka://host:port,...`
    /// URL switches to Kafka (with default settings otherwise).
    pub broker_url: Option<String>,
    /// `role`.
    pub role: Option<Role>,
    /// `redis.url` (creates the `[redis]` section when absent).
    pub redis_url: Option<String>,
    /// The store: `embedded`, or a `postgres://`/`postgresql://` URL (which sets
    /// `store.kind = "postgres"` and `store.url`).
    pub store: Option<String>,
    /// Replaces `tls.cert`.
    pub tls_cert: Option<PathBuf>,
    /// Replaces `tls.key`.
    pub tls_key: Option<PathBuf>,
    /// Replaces `tls.client_ca`.
    pub tls_client_ca: Option<PathBuf>,
    /// Replaces `control.nodes` when non-empty.
    pub control_nodes: Vec<String>,
}

impl fmt::Debug for ConfigOverrides {
    /// Never prints the tokens themselves, only how many there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigOverrides")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("data_dir", &self.data_dir)
            .field(
                "auth_tokens",
                &format_args!("<{} redacted>", self.auth_tokens.len()),
            )
            .field("insecure", &self.insecure)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("broker_url", &self.broker_url)
            .field("role", &self.role)
            .field("redis_url", &self.redis_url)
            .field("store", &self.store.as_deref().map(|_| "<redacted>"))
            .field("control_nodes", &self.control_nodes)
            .finish()
    }
}

impl Config {
    /// Applies command-line `overrides` on top of this config, then
    /// validates the result.
    pub fn apply(&mut self, overrides: ConfigOverrides) -> Result<()> {
        self.apply_unvalidated(overrides)?;
        self.validate()
    }

    /// Applies `overrides` without validating the result (a flag that does not parse is
    /// still an error).
    pub(crate) fn apply_unvalidated(&mut self, overrides: ConfigOverrides) -> Result<()> {
        let ConfigOverrides {
            grpc_addr,
            http_addr,
            data_dir,
            auth_tokens,
            insecure,
            log_level,
            log_format,
            broker_url,
            role,
            redis_url,
            store,
            tls_cert,
            tls_key,
            tls_client_ca,
            control_nodes,
        } = overrides;
        if !control_nodes.is_empty() {
            self.control.nodes = control_nodes;
        }
        if let Some(path) = tls_cert {
            self.tls.cert = path;
        }
        if let Some(path) = tls_key {
            self.tls.key = path;
        }
        if let Some(path) = tls_client_ca {
            self.tls.client_ca = path;
        }
        if let Some(store) = store {
            self.set_store(&store)?;
        }
        if let Some(role) = role {
            self.role = role;
        }
        if let Some(url) = redis_url {
            self.redis.get_or_insert_with(RedisConfig::default).url = url;
        }
        if let Some(addr) = grpc_addr {
            self.grpc_addr = addr;
        }
        if let Some(addr) = http_addr {
            self.http_addr = addr;
        }
        if let Some(dir) = data_dir {
            self.data_dir = dir;
        }
        if !auth_tokens.is_empty() {
            self.auth.tokens = auth_tokens.into_iter().map(TokenConfig::Plain).collect();
        }
        self.insecure |= insecure;
        if let Some(level) = log_level {
            self.logging.level = level;
        }
        if let Some(format) = log_format {
            self.logging.format = format;
        }
        if let Some(url) = broker_url {
            self.set_broker_url(url)?;
        }
        Ok(())
    }

    fn set_store(&mut self, store: &str) -> Result<()> {
        if store == "embedded" {
            self.store.kind = StoreKind::Embedded;
            self.store.url.clear();
        } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            self.store.kind = StoreKind::Postgres;
            self.store.url = store.to_owned();
        } else {
            return Err(Error::invalid(
                "store",
                "--store takes `embedded` or a postgres://user:password@host:port/db URL",
            ));
        }
        Ok(())
    }

    fn set_broker_url(&mut self, url: String) -> Result<()> {
        let kafka_servers = |url: &str| url.strip_prefix("kafka://").unwrap_or(url).to_owned();
        match &mut self.broker {
            BrokerConfig::Redis(redis) => redis.url = url,
            BrokerConfig::Kafka(kafka) => kafka.bootstrap_servers = kafka_servers(&url),
            BrokerConfig::Embedded(_) if is_redis_url(&url) => {
                self.broker = BrokerConfig::Redis(RedisBrokerConfig {
                    url,
                    ..RedisBrokerConfig::default()
                });
            }
            BrokerConfig::Embedded(_) if url.starts_with("kafka://") => {
                self.broker = BrokerConfig::Kafka(KafkaBrokerConfig {
                    bootstrap_servers: kafka_servers(&url),
                    ..KafkaBrokerConfig::default()
                });
            }
            BrokerConfig::Embedded(_) => {
                return Err(Error::invalid(
                    "broker_url",
                    format!(
                        "`{url}` cannot be used with the embedded broker; \
                         pass a redis:// or kafka:// url to switch backends"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `url` has a Redis scheme.
pub(crate) fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}
