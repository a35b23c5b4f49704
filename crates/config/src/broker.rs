//! The `[broker]` section: which log backend stores topics, and its knobs.
//!
//! The section is tagged by `kind` (`embedded`, `redis` or `kafka`); a
//! missing `kind` means `embedded`, so `[broker]` with only `fsync = "never"`
//! tweaks the default backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// Backend that stores the topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BrokerConfig {
    /// The built-in segmented log under `data_dir` (default).
    Embedded(EmbeddedBrokerConfig),
    /// Redis Streams (backend in the `redis` build feature).
    Redis(RedisBrokerConfig),
    /// Apache Kafka or a Kafka-compatible broker (backend in the `kafka` build feature).
    Kafka(KafkaBrokerConfig),
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::Embedded(EmbeddedBrokerConfig::default())
    }
}

impl BrokerConfig {
    /// The `kind` tag of this backend: `embedded`, `redis` or `kafka`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis(_) => "redis",
            Self::Kafka(_) => "kafka",
        }
    }

    /// Partitions of each topic the program creates on this broker.
    pub fn partitions(&self) -> u32 {
        match self {
            Self::Embedded(e) => e.partitions,
            Self::Redis(r) => r.partitions,
            Self::Kafka(k) => k.partitions,
        }
    }

    /// The default configuration of the backend named `kind`, if known.
    pub(crate) fn default_for_kind(kind: &str) -> Option<Self> {
        match kind {
            "embedded" => Some(Self::Embedded(EmbeddedBrokerConfig::default())),
            "redis" => Some(Self::Redis(RedisBrokerConfig::default())),
            "kafka" => Some(Self::Kafka(KafkaBrokerConfig::default())),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for BrokerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let kind = match table.remove("kind") {
            None => "embedded".to_owned(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`broker.kind` must be a string, got {}",
                    other.type_str()
                )));
            }
        };
        let parsed = match kind.as_str() {
            "embedded" => table.try_into().map(Self::Embedded),
            "redis" => table.try_into().map(Self::Redis),
            "kafka" => table.try_into().map(Self::Kafka),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown broker kind `{other}`, expected one of `embedded`, `redis`, `kafka`"
                )));
            }
        };
        parsed.map_err(|err| {
            let (message, key) = crate::load::split_toml_error(&err);
            D::Error::custom(match key {
                Some(key) => format!("{message} (key `broker.{key}`, kind `{kind}`)"),
                None => format!("{message} (kind `{kind}`)"),
            })
        })
    }
}

/// When the embedded log calls `fsync` (the log's own type).
pub use datanexus_seglog::FsyncPolicy;

/// Settings of the built-in segmented log (`kind = "embedded"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// When appends are flushed to disk: `always`, `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Background flush period when `fsync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Size at which the active segment is rolled, in bytes.
    pub max_segment_bytes: u64,
    /// Partitions per topic, 1..=1024.
    pub partitions: u32,
    /// Delete closed segments older than this; unset keeps them forever.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retention_max_age: Option<Duration>,
    /// Delete the oldest closed segments once a partition exceeds this many
    /// bytes; unset means unbounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_bytes: Option<u64>,
    /// Delete closed segments that every consumer group of their topic has committed
    /// past (once `retention_consumed_min_age` has passed since they were written), so
    /// the log does not grow without bound; topics without groups keep everything.
    pub retention_delete_consumed: bool,
    /// How long consumed closed segments are kept for replay.
    #[serde(with = "humantime_serde")]
    pub retention_consumed_min_age: Duration,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(100),
            max_segment_bytes: 128 * 1024 * 1024,
            partitions: 8,
            retention_max_age: None,
            retention_max_bytes: None,
            retention_delete_consumed: true,
            retention_consumed_min_age: Duration::from_secs(3600),
        }
    }
}

/// Settings of the Redis Streams backend (`kind = "redis"`).
///
/// Consumer groups are named by the workers; their lease and session timeouts (which
/// drive heartbeats and the claiming of a dead consumer's work) are `[workers]`
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisBrokerConfig {
    /// Redis URL, `redis://` or `rediss://` (TLS), with the database and credentials:
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Prefix of every key: partition `p` of topic `t` is the stream `<prefix>:t:p`.
    pub stream_prefix: String,
    /// Approximate `MAXLEN` each stream is capped to, in entries; 0 (default) means no
    /// cap. A hard cap: entries beyond it are dropped even if a group has not consumed
    /// them. Without it, retention trims only what every group has acknowledged.
    pub maxlen: u64,
    /// Partitions (streams) per topic the server creates, 1..=1024.
    pub partitions: u32,
    /// Bound on establishing a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on one command or pipeline once connected.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// With `rediss://`: a PEM file of CA certificates to verify the server with instead
    /// of the system's trust store (a private CA). Empty: the system's.
    pub tls_ca: std::path::PathBuf,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            stream_prefix: "datanexus".to_owned(),
            maxlen: 0,
            partitions: 8,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            tls_ca: std::path::PathBuf::new(),
        }
    }
}

/// Settings of the Kafka backend (`kind = "kafka"`).
///
/// Consumer groups are named by the workers; their session timeout (a member that
/// neither polls nor heartbeats for that long leaves the group; Kafka brokers accept
/// 6 s..30 min by default) and lease timeout are `[workers]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaBrokerConfig {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub bootstrap_servers: String,
    /// Partitions for topics the server creates, 1..=1024.
    pub partitions: u32,
    /// Replication factor for topics the server creates, at least 1.
    pub replication_factor: i16,
    /// `client.id` of the Kafka clients (consumers append `-<member>`).
    pub client_id: String,
    /// Bound on one metadata, topic-creation or offset request (and on leaving a group).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bound on delivering a produced record, retries included (`message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Extra librdkafka client properties, applied to every client after the backend's
    /// own (idempotent producer, `acks = "all"`, lz4), so they override them except
    /// `group.id` and manual commits. Scalar values are stringified. The build supports
    /// TLS (`security.protocol = "ssl"` / `"sasl_ssl"`, OpenSSL) and SASL `PLAIN`,
    /// `SCRAM-SHA-256/512` and `OAUTHBEARER` (not `GSSAPI`); gzip, snappy and lz4.
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaBrokerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            partitions: 8,
            replication_factor: 1,
            client_id: "datanexus".to_owned(),
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

/// Deserializes a map of scalars, turning numbers and booleans into strings
/// so that `acks = 1` and `acks = "1"` mean the same.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(D::Error::custom(format!(
                        "property `{key}` must be a string, number or boolean, got {}",
                        other.type_str()
                    )));
                }
            };
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn redis_settings_parse_and_bad_ones_are_rejected() {
        let config = Config::from_toml_str(
            "[broker]\nkind = \"redis\"\npartitions = 4\nconnect_timeout = \"250ms\"\ncommand_timeout = \"1s\"\n",
        )
        .expect("valid");
        let BrokerConfig::Redis(redis) = config.broker else {
            panic!("expected redis, got {:?}", config.broker);
        };
        assert_eq!(redis.partitions, 4);
        assert_eq!(redis.connect_timeout, Duration::from_millis(250));
        assert_eq!(redis.command_timeout, Duration::from_secs(1));
        for (bad, key) in [
            ("partitions = 0", "broker.partitions"),
            ("partitions = 1025", "broker.partitions"),
            ("connect_timeout = \"0s\"", "broker.connect_timeout"),
            ("command_timeout = \"0s\"", "broker.command_timeout"),
        ] {
            let err = Config::from_toml_str(&format!("[broker]\nkind = \"redis\"\n{bad}\n"))
                .expect_err(bad);
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }
}
