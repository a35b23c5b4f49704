//! Options of the Kafka backend, and the librdkafka configurations of its clients.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::ConsumerOptions;

/// Options of the Kafka backend.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub bootstrap_servers: String,
    /// Replication factor of the topics [`Broker::ensure_topic`](crate::Broker::ensure_topic)
    /// creates.
    pub replication_factor: i16,
    /// `client.id` of the clients (consumers append `-<consumer id>`).
    pub client_id: String,
    /// Bound on one metadata, admin (topic creation) or offset request.
    pub request_timeout: Duration,
    /// Bound on delivering a produced record, retries included (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// librdkafka properties applied after the backend's own (see [`super`]).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            replication_factor: 1,
            client_id: "datanexus".to_owned(),
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaOptions {
    /// Lists property names only: values may be credentials (`sasl.password`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("replication_factor", &self.replication_factor)
            .field("client_id", &self.client_id)
            .field("request_timeout", &self.request_timeout)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl KafkaOptions {
    /// Settings shared by every client, then the configured properties.
    fn base(&self, client_id: &str, own: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            .set("allow.auto.create.topics", "false");
        for (key, value) in own {
            config.set(*key, value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The producer: idempotent, `acks=all`, lz4.
    pub(super) fn producer_config(&self) -> ClientConfig {
        self.base(
            &self.client_id,
            &[
                ("enable.idempotence", "true".into()),
                ("acks", "all".into()),
                ("compression.type", "lz4".into()),
                ("message.timeout.ms", millis(self.delivery_timeout)),
            ],
        )
    }

    /// The admin client (topic creation, metadata).
    pub(super) fn admin_config(&self) -> ClientConfig {
        self.base(&self.client_id, &[])
    }

    /// A member `consumer` of `group`: manual commits of what was acknowledged, a new
    /// group starts at the beginning, liveness from `options`.
    pub(super) fn consumer_config(
        &self,
        group: &str,
        consumer: &str,
        options: &ConsumerOptions,
    ) -> ClientConfig {
        let session = options.session_timeout.max(Duration::from_millis(1));
        let heartbeat = (session / 3).clamp(Duration::from_millis(100), Duration::from_secs(3));
        let mut config = self.base(
            &format!("{}-{consumer}", self.client_id),
            &[
                ("auto.offset.reset", "earliest".into()),
                ("session.timeout.ms", millis(session)),
                ("max.poll.interval.ms", millis(session)),
                ("heartbeat.interval.ms", millis(heartbeat)),
                ("enable.partition.eof", "false".into()),
            ],
        );
        // What correctness rests on is not overridable.
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config
    }

    /// A client that only reads `group`'s committed offsets (for lag).
    pub(super) fn offsets_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base(&format!("{}-lag", self.client_id), &[]);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        config
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn properties_override_the_defaults_but_not_the_group_settings() {
        let options = KafkaOptions {
            properties: BTreeMap::from([
                ("compression.type".to_owned(), "zstd".to_owned()),
                ("enable.auto.commit".to_owned(), "true".to_owned()),
                ("group.id".to_owned(), "other".to_owned()),
            ]),
            ..KafkaOptions::default()
        };
        assert_eq!(
            options.producer_config().get("compression.type"),
            Some("zstd")
        );
        assert_eq!(options.producer_config().get("acks"), Some("all"));
        let consumer = options.consumer_config("g", "c1", &ConsumerOptions::default());
        assert_eq!(consumer.get("group.id"), Some("g"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("client.id"), Some("datanexus-c1"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("10000"));
        assert_eq!(consumer.get("heartbeat.interval.ms"), Some("3000"));
    }

    #[test]
    fn debug_output_hides_property_values() {
        let options = KafkaOptions {
            properties: BTreeMap::from([("sasl.password".to_owned(), "s3cret".to_owned())]),
            ..KafkaOptions::default()
        };
        let debug = format!("{options:?}");
        assert!(debug.contains("sasl.password"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
