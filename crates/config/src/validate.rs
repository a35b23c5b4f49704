//! [`Config::validate`]: constraints that types alone cannot express.
//!
//! Validation is pure: it never touches the file system or the network.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::overrides::is_redis_url;
use crate::{
    BrokerConfig, Config, EmbeddedBrokerConfig, Error, GroupsConfig, KafkaBrokerConfig,
    LimitsConfig, MetricsConfig, RedisBrokerConfig, RedisConfig, Result, StoreConfig, StoreKind,
    StreamsConfig, TopicsConfig, WorkerConfig,
};

/// Allowed number of partitions per topic.
const PARTITIONS: RangeInclusive<u32> = 1..=1024;

/// Smallest accepted `broker.max_segment_bytes`.
const MIN_SEGMENT_BYTES: u64 = 1024;

/// Longest accepted topic name (Kafka's limit).
const MAX_TOPIC_NAME_BYTES: usize = 249;

impl Config {
    /// Checks every constraint and returns the first violation, naming the
    /// offending key and value. Performs no I/O.
    pub fn validate(&self) -> Result<()> {
        self.validate_listeners()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::invalid("data_dir", "must not be empty"));
        }
        for (i, entry) in self.auth.tokens.iter().enumerate() {
            // Tokens are secrets: name their position, never their value.
            let token = entry.token();
            if entry.scopes().is_empty() {
                return Err(Error::invalid(
                    format!("auth.tokens[{i}].scopes"),
                    "must name at least one of ingest, query, admin",
                ));
            }
            if token.is_empty() {
                return Err(Error::invalid(
                    format!("auth.tokens[{i}]"),
                    "must not be empty",
                ));
            }
            if token.chars().any(char::is_whitespace) {
                return Err(Error::invalid(
                    format!("auth.tokens[{i}]"),
                    "must not contain whitespace",
                ));
            }
        }
        let tls = &self.tls;
        let set = |p: &std::path::Path| !p.as_os_str().is_empty();
        if set(&tls.cert) != set(&tls.key) {
            return Err(Error::invalid(
                if set(&tls.cert) {
                    "tls.key"
                } else {
                    "tls.cert"
                },
                "tls.cert and tls.key go together: set both or neither",
            ));
        }
        if set(&tls.client_ca) && !set(&tls.cert) {
            return Err(Error::invalid(
                "tls.client_ca",
                "needs tls.cert and tls.key (client certificates are checked over TLS)",
            ));
        }
        if self.logging.level.trim().is_empty() {
            return Err(Error::invalid("logging.level", "must not be empty"));
        }
        validate_broker(&self.broker)?;
        validate_topics(&self.topics)?;
        validate_groups(&self.groups)?;
        if let Some(redis) = &self.redis {
            validate_redis(redis)?;
        }
        validate_workers(&self.workers)?;
        validate_metrics(&self.metrics)?;
        validate_store(&self.store)?;
        validate_limits(&self.limits)?;
        validate_streams(&self.streams)?;
        positive("jobs.divided_jobs", self.jobs.divided_jobs)?;
        positive("jobs.worker_num", self.jobs.worker_num)?;
        self.validate_control()?;
        positive_duration("shutdown_timeout", self.shutdown_timeout)
    }

    fn validate_control(&self) -> Result<()> {
        let control = &self.control;
        if self.role == crate::Role::Control && control.nodes.is_empty() {
            return Err(Error::invalid(
                "control.nodes",
                "role control needs at least one worker node (--nodes http://host:port,…)",
            ));
        }
        for (i, node) in control.nodes.iter().enumerate() {
            if node.starts_with("https://") {
                return Err(Error::invalid(
                    format!("control.nodes[{i}]"),
                    format!(
                        "{node:?}: https:// nodes are not supported yet (http:// on a private network)"
                    ),
                ));
            }
            let host = node
                .strip_prefix("http://")
                .map(|r| r.trim_end_matches('/'));
            if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', ' '])) {
                return Err(Error::invalid(
                    format!("control.nodes[{i}]"),
                    format!("{node:?} is not a node's base URL like http://10.0.0.2:8080"),
                ));
            }
            if control.nodes[..i]
                .iter()
                .any(|other| other.trim_end_matches('/') == node.trim_end_matches('/'))
            {
                return Err(Error::invalid(
                    format!("control.nodes[{i}]"),
                    format!("{node:?} is listed twice"),
                ));
            }
        }
        if control
            .token
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.chars().any(char::is_whitespace))
        {
            return Err(Error::invalid(
                "control.token",
                "must not be empty or contain whitespace",
            ));
        }
        positive_duration("control.timeout", control.timeout)
    }

    fn validate_listeners(&self) -> Result<()> {
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(Error::invalid(
                "http_addr",
                format!("{} is also grpc_addr; they must differ", self.http_addr),
            ));
        }
        if self.auth.tokens.is_empty() && !self.insecure {
            for (key, addr) in [("grpc_addr", self.grpc_addr), ("http_addr", self.http_addr)] {
                if !is_loopback(addr) {
                    return Err(Error::invalid(
                        key,
                        format!(
                            "binding non-loopback address {addr} without auth tokens \
                             requires --insecure"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_loopback(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(v4) => v4.ip().is_loopback(),
        SocketAddr::V6(v6) => {
            v6.ip().is_loopback() || v6.ip().to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
    }
}

fn validate_broker(broker: &BrokerConfig) -> Result<()> {
    match broker {
        BrokerConfig::Embedded(embedded) => validate_embedded(embedded),
        BrokerConfig::Redis(redis) => validate_redis_broker(redis),
        BrokerConfig::Kafka(kafka) => validate_kafka(kafka),
    }
}

fn validate_embedded(cfg: &EmbeddedBrokerConfig) -> Result<()> {
    partitions("broker.partitions", cfg.partitions)?;
    positive_duration("broker.fsync_interval", cfg.fsync_interval)?;
    if cfg.max_segment_bytes < MIN_SEGMENT_BYTES {
        return Err(Error::invalid(
            "broker.max_segment_bytes",
            format!(
                "must be at least {MIN_SEGMENT_BYTES}, got {}",
                cfg.max_segment_bytes
            ),
        ));
    }
    if let Some(age) = cfg.retention_max_age {
        positive_duration("broker.retention_max_age", age)?;
    }
    if cfg.retention_max_bytes == Some(0) {
        return Err(Error::invalid(
            "broker.retention_max_bytes",
            "must be greater than 0 (omit it for unbounded retention), got 0",
        ));
    }
    Ok(())
}

fn validate_redis_broker(cfg: &RedisBrokerConfig) -> Result<()> {
    redis_url("broker.url", &cfg.url)?;
    non_empty("broker.stream_prefix", &cfg.stream_prefix)?;
    partitions("broker.partitions", cfg.partitions)?;
    positive_duration("broker.connect_timeout", cfg.connect_timeout)?;
    positive_duration("broker.command_timeout", cfg.command_timeout)
}

fn validate_kafka(cfg: &KafkaBrokerConfig) -> Result<()> {
    if cfg
        .bootstrap_servers
        .split(',')
        .any(|server| server.trim().is_empty())
    {
        return Err(Error::invalid(
            "broker.bootstrap_servers",
            format!(
                "must be a comma-separated list of host:port, got {:?}",
                cfg.bootstrap_servers
            ),
        ));
    }
    partitions("broker.partitions", cfg.partitions)?;
    if cfg.replication_factor < 1 {
        return Err(Error::invalid(
            "broker.replication_factor",
            format!("must be at least 1, got {}", cfg.replication_factor),
        ));
    }
    for (key, value) in [
        ("broker.request_timeout", cfg.request_timeout),
        ("broker.delivery_timeout", cfg.delivery_timeout),
    ] {
        if value.is_zero() {
            return Err(Error::invalid(key, "must be greater than zero"));
        }
    }
    if cfg.properties.keys().any(|key| key.trim().is_empty()) {
        return Err(Error::invalid(
            "broker.properties",
            "property names must not be empty",
        ));
    }
    Ok(())
}

fn validate_topics(topics: &TopicsConfig) -> Result<()> {
    let named = [
        ("topics.metrics", &topics.metrics),
        ("topics.events", &topics.events),
        ("topics.results", &topics.results),
        ("topics.dlq", &topics.dlq),
    ];
    for (i, (key, name)) in named.iter().enumerate() {
        if !datanexus_seglog::is_valid_name(name, MAX_TOPIC_NAME_BYTES) {
            return Err(Error::invalid(
                *key,
                format!(
                    "must be 1..={MAX_TOPIC_NAME_BYTES} characters of [A-Za-z0-9._-], not . or .., got {name:?}"
                ),
            ));
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, other)| other == name) {
            return Err(Error::invalid(
                *key,
                format!("{name:?} is also used by `{other}`; topics must differ"),
            ));
        }
    }
    Ok(())
}

fn validate_groups(groups: &GroupsConfig) -> Result<()> {
    let named = [
        ("groups.metrics", &groups.metrics),
        ("groups.events", &groups.events),
        ("groups.processors", &groups.processors),
        ("groups.forwarder", &groups.forwarder),
        ("groups.drain", &groups.drain),
    ];
    for (key, name) in named {
        if !datanexus_seglog::is_valid_name(name, MAX_TOPIC_NAME_BYTES) {
            return Err(Error::invalid(
                key,
                format!(
                    "must be 1..={MAX_TOPIC_NAME_BYTES} characters of [A-Za-z0-9._-], not . or .., got {name:?}"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_redis(redis: &RedisConfig) -> Result<()> {
    redis_url("redis.url", &redis.url)?;
    positive("redis.pool_size", redis.pool_size)
}

fn validate_workers(w: &WorkerConfig) -> Result<()> {
    positive_duration("workers.heartbeat_interval", w.heartbeat_interval)?;
    positive_duration("workers.consumer_interval", w.consumer_interval)?;
    positive_duration("workers.redistributor_interval", w.redistributor_interval)?;
    positive_duration("workers.sinker_interval", w.sinker_interval)?;
    positive_duration("workers.acker_interval", w.acker_interval)?;
    positive("workers.batch_size", w.batch_size)?;
    for (key, timeout) in [
        ("workers.lease_timeout", w.lease_timeout),
        ("workers.session_timeout", w.session_timeout),
    ] {
        if timeout <= w.heartbeat_interval {
            return Err(Error::invalid(
                key,
                format!(
                    "must exceed workers.heartbeat_interval ({}), got {}",
                    humantime::format_duration(w.heartbeat_interval),
                    humantime::format_duration(timeout)
                ),
            ));
        }
    }
    Ok(())
}

fn validate_metrics(m: &MetricsConfig) -> Result<()> {
    let key = "metrics.histogram_buckets";
    if m.histogram_buckets.is_empty() {
        return Err(Error::invalid(key, "must not be empty"));
    }
    if let Some(bad) = m.histogram_buckets.iter().find(|b| !b.is_finite()) {
        return Err(Error::invalid(key, format!("must be finite, got {bad}")));
    }
    if let Some(pair) = m.histogram_buckets.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            key,
            format!(
                "must be strictly ascending, got {} before {}",
                pair[0], pair[1]
            ),
        ));
    }
    positive("metrics.max_labels", m.max_labels)?;
    positive("metrics.max_label_value_bytes", m.max_label_value_bytes)?;
    positive("metrics.max_name_bytes", m.max_name_bytes)
}

fn validate_limits(l: &LimitsConfig) -> Result<()> {
    positive("limits.max_http_body_bytes", l.max_http_body_bytes)?;
    positive("limits.max_grpc_message_bytes", l.max_grpc_message_bytes)?;
    positive("limits.max_batch_metrics", l.max_batch_metrics)?;
    positive("limits.max_batch_events", l.max_batch_events)?;
    positive("limits.max_inflight_records", l.max_inflight_records)?;
    for (name, limit) in [
        ("limits.max_http_body_bytes", l.max_http_body_bytes),
        ("limits.max_grpc_message_bytes", l.max_grpc_message_bytes),
    ] {
        if l.max_inflight_bytes < limit {
            return Err(Error::invalid(
                "limits.max_inflight_bytes",
                format!(
                    "must be at least {name} ({limit}), got {}",
                    l.max_inflight_bytes
                ),
            ));
        }
    }
    positive("limits.max_concurrent_requests", l.max_concurrent_requests)?;
    positive_duration("limits.request_timeout", l.request_timeout)?;
    positive_duration("limits.header_read_timeout", l.header_read_timeout)?;
    if l.max_inflight_records < l.max_batch_metrics {
        return Err(Error::invalid(
            "limits.max_inflight_records",
            format!(
                "must be at least limits.max_batch_metrics ({}), got {}",
                l.max_batch_metrics, l.max_inflight_records
            ),
        ));
    }
    if l.max_inflight_records < l.max_batch_events {
        return Err(Error::invalid(
            "limits.max_inflight_records",
            format!(
                "must be at least limits.max_batch_events ({}), got {}",
                l.max_batch_events, l.max_inflight_records
            ),
        ));
    }
    Ok(())
}

fn validate_streams(s: &StreamsConfig) -> Result<()> {
    positive("streams.channel_capacity", s.channel_capacity)?;
    positive_duration("streams.max_replay_age", s.max_replay_age)?;
    positive_duration("streams.slow_client_timeout", s.slow_client_timeout)
}

fn partitions(key: &str, n: u32) -> Result<()> {
    if PARTITIONS.contains(&n) {
        return Ok(());
    }
    Err(Error::invalid(
        key,
        format!(
            "must be in {}..={}, got {n}",
            PARTITIONS.start(),
            PARTITIONS.end()
        ),
    ))
}

fn positive<T: Default + PartialEq>(key: &str, value: T) -> Result<()> {
    if value != T::default() {
        return Ok(());
    }
    Err(Error::invalid(key, "must be greater than 0, got 0"))
}

fn positive_duration(key: &str, value: Duration) -> Result<()> {
    if value.is_zero() {
        return Err(Error::invalid(key, "must be greater than 0, got 0s"));
    }
    Ok(())
}

fn non_empty(key: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(key, "must not be empty"));
    }
    Ok(())
}

fn redis_url(key: &str, url: &str) -> Result<()> {
    if is_redis_url(url) && url.len() > "rediss://".len() {
        return Ok(());
    }
    Err(Error::invalid(
        key,
        format!("must be a redis:// or rediss:// url, got {url:?}"),
    ))
}

fn validate_store(store: &StoreConfig) -> Result<()> {
    positive("store.max_pending_rows", store.max_pending_rows)?;
    if let Some(age) = store.retention_max_age {
        positive_duration("store.retention_max_age", age)?;
    }
    positive("store.pool_size", store.pool_size)?;
    positive_duration("store.connect_timeout", store.connect_timeout)?;
    match store.kind {
        StoreKind::Embedded if !store.url.is_empty() => Err(Error::invalid(
            "store.url",
            "is only used with store.kind = \"postgres\" (or pass --store postgres://…)",
        )),
        StoreKind::Postgres if store.url.is_empty() => Err(Error::invalid(
            "store.url",
            "is required with store.kind = \"postgres\": postgres://user:password@host:port/db \
             (or set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB)",
        )),
        StoreKind::Postgres
            if !(store.url.starts_with("postgres://")
                || store.url.starts_with("postgresql://")) =>
        {
            Err(Error::invalid(
                "store.url",
                "must start with postgres:// or postgresql://",
            ))
        }
        _ => Ok(()),
    }
}
